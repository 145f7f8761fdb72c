//! `cargo xtask …`: the project's automation. Not implemented yet.

fn main() -> std::process::ExitCode {
    eprintln!("xtask: not implemented yet");
    std::process::ExitCode::FAILURE
}
