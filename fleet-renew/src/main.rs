//! fleet-renew: see `ARCHITECTURE.md`. Not implemented yet.

fn main() -> std::process::ExitCode {
    fleet_core::logging::init();
    eprintln!("fleet-renew: not implemented yet");
    std::process::ExitCode::from(fleet_core::exit::SOFTWARE)
}
