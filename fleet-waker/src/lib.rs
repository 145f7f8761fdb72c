//! fleet-waker as a library: only its command line, for man pages and shell
//! completions (`cargo xtask dist`). The program is `src/main.rs`.

pub mod cli;

/// fleet-waker's clap command (name, version, flags and help as `--help` shows them).
pub fn command() -> clap::Command {
    <cli::Args as clap::CommandFactory>::command()
}
