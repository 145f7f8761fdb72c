//! fleet-waker: see `ARCHITECTURE.md`. Not implemented yet.

fn main() -> std::process::ExitCode {
    fleet_core::logging::init();
    eprintln!("fleet-waker: not implemented yet");
    std::process::ExitCode::from(fleet_core::exit::SOFTWARE)
}
