//! `cargo xtask …`: the project's automation, as thin glue over cargo,
//! Docker, dpkg and the modules below. `cargo xtask help` lists the
//! commands; the command line is `Cli` (clap derive). Usage errors exit 64,
//! missing prerequisites 69, failed steps 1 (`xtask::Error`).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use xtask::error::{EX_USAGE, chain};
use xtask::{Error, deps, image};

mod fuzz;
mod proc;
mod soak;

mod bench {
    pub mod fleet;
    pub mod reaper;
    pub mod sleep;
    pub mod waker;
}

/// The project's automation.
#[derive(Debug, Parser)]
#[command(name = "xtask", bin_name = "cargo xtask")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Install missing Debian packages (as root), check docker, build the
    /// php-fpm image, then cargo fmt --check, clippy -D warnings, doc -D
    /// warnings, build and test the whole workspace; ARGS go to `cargo test`
    #[command(disable_help_flag = true)]
    Test {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Build (or reuse the cached) php-fpm test image and print its tag
    Image,
    /// As root: one demo site end to end (nginx → fleet-waker → php-fpm
    /// container), cold/warm timings, reaped, woken again; removes
    /// everything it made on exit or Ctrl-C
    Demo(xtask::demo::DemoArgs),
    /// Release binaries, units, man pages, completions and
    /// fleet_<version>_<arch>.deb in target/dist; --verify (root) installs,
    /// checks and removes the .deb on this machine
    Dist(xtask::dist::DistArgs),
    /// Build and install binaries, units, man pages, completions
    Install(xtask::install::InstallArgs),
    /// Benchmarks of release builds; Markdown on stdout
    #[command(subcommand)]
    Bench(Bench),
    /// N requests nginx → fleet-waker → php-fpm: non-2xx, waker RSS growth,
    /// descriptors; Markdown on stdout (not part of test)
    Soak(soak::SoakArgs),
    /// Run one cargo-fuzz target for N s; nightly + cargo-fuzz
    Fuzz(fuzz::FuzzArgs),
}

#[derive(Debug, Subcommand)]
enum Bench {
    /// fleet-waker: warm wrk ratios, cold overhead, RSS
    Waker {
        /// Warm rounds.
        #[arg(default_value_t = 5)]
        rounds: usize,
        /// Also another fleet-waker binary (e.g. the previous release
        /// build) in the same warm rounds, with its own ratio to direct.
        #[arg(long, value_name = "BIN")]
        baseline: Option<PathBuf>,
    },
    /// A crawler's sweep: N sleeping sites with socket-activated wakers
    /// behind one nginx, one request to each at once
    Fleet {
        /// Sites.
        #[arg(default_value_t = 300, value_parser = positive)]
        n: usize,
    },
    /// One fleet-reaper pass vs the old serial `docker logs --since` loop
    /// (200 light containers, 10 MiB of old log each)
    Reaper,
    /// One site awake, paused and stopped: the container's memory and the
    /// first byte through nginx and a socket-activated waker
    Sleep {
        /// Rounds (each measures all three states).
        #[arg(long, value_name = "N", default_value_t = 10, value_parser = positive)]
        rounds: usize,
    },
}

/// clap value parser: a number > 0.
fn positive(s: &str) -> Result<usize, Error> {
    match s.parse() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(Error::failed(format!("{s:?}"), "needs a positive number")),
    }
}

/// The command of `argv` (program name first). `test`'s arguments are
/// taken verbatim: clap would swallow a leading `--`, which `cargo test`
/// needs (`cargo xtask test -- --nocapture`).
fn parse(argv: &[String]) -> Result<Cmd, clap::Error> {
    Ok(match Cli::try_parse_from(argv)?.command {
        Cmd::Test { .. } => Cmd::Test {
            args: argv[2..].to_vec(),
        },
        other => other,
    })
}

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().collect();
    let command = match parse(&argv) {
        Ok(command) => command,
        Err(e) => {
            let _ = e.print();
            // --help and --version are answers, not errors.
            return if e.use_stderr() {
                ExitCode::from(EX_USAGE)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    // The command's name, for error messages (parsed: no option comes
    // before it, and `bench` takes a second word).
    let words = if argv.get(1).is_some_and(|w| w == "bench") {
        3
    } else {
        2
    };
    let name = argv.get(1..words).map(|w| w.join(" ")).unwrap_or_default();
    match run(command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask {name}: {}", chain(&e));
            ExitCode::from(e.exit_code())
        }
    }
}

fn run(command: Cmd) -> Result<(), Error> {
    match command {
        Cmd::Test { args } => test(&args),
        Cmd::Image => build_image().map(|tag| println!("{tag}")),
        Cmd::Demo(args) => {
            // The same package step as `test` (a usage error was clap's,
            // before this): on a fresh Debian machine, as root, the demo
            // installs what it needs; as another user it names it.
            deps::ensure_packages()?;
            xtask::demo::main(&args)
        }
        Cmd::Dist(args) => xtask::dist::main(&args),
        Cmd::Install(args) => xtask::install::main(&args),
        Cmd::Bench(which) => match which {
            Bench::Waker { rounds, baseline } => bench::waker::bench(rounds, baseline.as_deref()),
            Bench::Fleet { n } => bench::fleet::bench(n),
            Bench::Reaper => bench::reaper::bench(),
            Bench::Sleep { rounds } => bench::sleep::bench(rounds),
        }
        .map(|report| println!("{report}")),
        Cmd::Soak(args) => soak::soak(args.requests),
        Cmd::Fuzz(args) => fuzz::run(&xtask::kit::repo_root(), &args.target, args.seconds),
    }
}

fn secs(d: Duration) -> String {
    format!("{:.1}s", d.as_secs_f64())
}

/// Run one step (an argv, never a shell), printing it and its duration:
/// its stderr passes through, each line of its stdout is handed to
/// `on_line` (`cargo test`'s summaries are counted) and printed.
fn step(
    name: &str,
    program: &str,
    args: &[&str],
    mut on_line: impl FnMut(&str),
) -> Result<(), Error> {
    use std::io::Write as _;
    eprintln!("==> {name}: {program} {}", args.join(" "));
    let start = Instant::now();
    let stdout = std::io::stdout();
    let status = xtask::error::Cmd::new(program)
        .args(args)
        .dir(xtask::kit::repo_root())
        .each_line(xtask::error::Stream::Stdout, |line| {
            on_line(line);
            let _ = writeln!(stdout.lock(), "{line}");
        })
        .map_err(|e| match e {
            Error::Unavailable { why, .. } => Error::unavailable(name, why),
            e => e,
        })?;
    let took = secs(start.elapsed());
    if !status.success() {
        return Err(Error::failed(name, format!("{status} after {took}")));
    }
    eprintln!("==> {name}: ok in {took}");
    Ok(())
}

/// Test counts summed over every `test result:` line.
#[derive(Debug, Default, Clone, Copy)]
struct Counts {
    passed: u64,
    failed: u64,
    ignored: u64,
}

/// Adds the counts of one libtest summary line
/// (`test result: ok. 5 passed; 0 failed; 1 ignored; …`), if it is one.
fn add_counts(line: &str, counts: &mut Counts) {
    let Some(rest) = line.trim().strip_prefix("test result: ") else {
        return;
    };
    for part in rest.split(';') {
        let mut words = part.split_whitespace().rev();
        let (Some(kind), Some(n)) = (words.next(), words.next()) else {
            continue;
        };
        let Ok(n) = n.parse::<u64>() else { continue };
        match kind {
            "passed" => counts.passed += n,
            "failed" => counts.failed += n,
            "ignored" => counts.ignored += n,
            _ => {}
        }
    }
}

fn test(cargo_test_args: &[String]) -> Result<(), Error> {
    let total = Instant::now();
    eprintln!(
        "==> cargo xtask test (CI={})",
        std::env::var("CI").unwrap_or_else(|_| "unset".into())
    );
    let counts = (|| {
        deps::ensure_packages()?;
        let start = Instant::now();
        let version = deps::docker_version().map_err(|e| Error::unavailable("docker", e))?;
        eprintln!("==> docker: engine {version} ({})", secs(start.elapsed()));
        build_image()?;
        let cargo = xtask::kit::cargo();
        // Broken or ambiguous doc links fail in `doc`, not on docs.rs. Through
        // --config, not RUSTDOCFLAGS, so the step is one argv like the others.
        for (name, line) in [
            ("fmt", "fmt --all --check"),
            ("clippy", "clippy --workspace --all-targets -- -D warnings"),
            (
                "doc",
                r#"doc --workspace --no-deps --config build.rustdocflags=["-D","warnings"]"#,
            ),
            ("build", "build --workspace"),
        ] {
            let args: Vec<&str> = line.split(' ').collect();
            step(name, &cargo, &args, |_| {})?;
        }
        let mut args = vec!["test", "--workspace"];
        args.extend(cargo_test_args.iter().map(String::as_str));
        let mut counts = Counts::default();
        step("test", &cargo, &args, |line| add_counts(line, &mut counts))?;
        check_leftovers()?;
        check_package()?;
        Ok(counts)
    })()
    .inspect_err(|_| eprintln!("==> stopped after {}", secs(total.elapsed())))?;
    eprintln!("==> all steps passed in {}", secs(total.elapsed()));
    // The plain closing line CI systems read: the sum over every
    // test binary (the last `test result:` line cargo prints is
    // often an empty doc-test run).
    println!(
        "tests: {} passed, {} failed, {} skipped",
        counts.passed, counts.failed, counts.ignored
    );
    Ok(())
}

/// After the tests: nothing a finished test process left behind may remain
/// (the kit's [`xtask::kit::site::find_leftovers`]: containers, temp dirs,
/// runtime tmpfs; those of still running processes are not counted).
fn check_leftovers() -> Result<(), Error> {
    let left =
        xtask::kit::site::find_leftovers().map_err(|e| Error::failed("leftovers", chain(&e)))?;
    if left.is_empty() {
        eprintln!("==> leftovers: none (docker ps -a and /tmp clean of finished test runs)");
        return Ok(());
    }
    let left: Vec<String> = left.iter().map(ToString::to_string).collect();
    let why = format!("tests left behind:\n    {}", left.join("\n    "));
    Err(Error::failed("leftovers", why))
}

/// The Debian package, built from the debug binaries (seconds, unlike a
/// release build), installed with `dpkg -i`, checked, removed with
/// `dpkg -r` and checked gone: `cargo xtask dist --debug --no-build --verify`.
/// Needs root and dpkg; skipped with a reason otherwise (failing under CI).
fn check_package() -> Result<(), Error> {
    let why_not = if !nix::unistd::geteuid().is_root() {
        Some("needs root")
    } else if !Path::new("/usr/bin/dpkg").exists() {
        Some("needs dpkg")
    } else {
        None
    };
    if let Some(why) = why_not {
        eprintln!("==> package: SKIP dpkg -i/-r check ({why})");
        return if xtask::kit::in_ci() {
            Err(Error::failed("package", format!("{why} under CI")))
        } else {
            Ok(())
        };
    }
    let xtask = std::env::current_exe().map_err(|e| Error::failed("package", e))?;
    let out = xtask::kit::repo_root().join("target/dist-check");
    let out = out.to_string_lossy();
    step(
        "package (debug .deb: dpkg -i, check, dpkg -r, check)",
        &xtask.to_string_lossy(),
        &["dist", "--debug", "--no-build", "--out", &out, "--verify"],
        |_| {},
    )
}

fn build_image() -> Result<String, Error> {
    let start = Instant::now();
    let img = image::ensure_image_info()?;
    let how = if img.cached {
        "cached (import skipped)"
    } else {
        "built and imported"
    };
    eprintln!("==> image: {} {how} in {}", img.tag, secs(start.elapsed()));
    Ok(img.tag)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `cargo xtask <args>`, the words of `args` split at spaces.
    fn parse(args: &str) -> Result<Cmd, clap::Error> {
        let argv: Vec<String> = std::iter::once("xtask")
            .chain(args.split_whitespace())
            .map(String::from)
            .collect();
        super::parse(&argv)
    }

    #[test]
    fn command_line_is_valid() {
        use clap::CommandFactory as _;
        Cli::command().debug_assert();
    }

    #[test]
    fn test_passes_every_trailing_arg_to_cargo_test() {
        for args in [
            "-p fleet-core",
            "-- --nocapture",
            "-p fleet-tests --test it -- demo:: --test-threads=1",
            "--help",
            "",
        ] {
            match parse(&format!("test {args}")) {
                Ok(Cmd::Test { args: got }) => {
                    assert_eq!(got, args.split_whitespace().collect::<Vec<_>>())
                }
                other => panic!("{args:?}: {other:?}"),
            }
        }
    }

    /// Each command line parses into the command written next to it (its
    /// `Debug` form: every field, defaults included).
    #[test]
    fn arguments_parse_with_their_defaults() {
        for (args, want) in [
            (
                "demo",
                "Demo(DemoArgs { port: 8080, once: false, no_build: false })",
            ),
            (
                "demo --once --port=81 --no-build",
                "Demo(DemoArgs { port: 81, once: true, no_build: true })",
            ),
            (
                "dist --debug --no-build --out /tmp/d --verify",
                r#"Dist(DistArgs { debug: true, no_build: true, out: Some("/tmp/d"), verify: true, version: None })"#,
            ),
            (
                "install",
                r#"Install(InstallArgs { prefix: "/usr/local", destdir: None, debug: false, no_build: false })"#,
            ),
            (
                "install --prefix /opt/fleet --destdir=/tmp/s --debug --no-build",
                r#"Install(InstallArgs { prefix: "/opt/fleet", destdir: Some("/tmp/s"), debug: true, no_build: true })"#,
            ),
            ("bench waker", "Bench(Waker { rounds: 5, baseline: None })"),
            (
                "bench waker 3 --baseline /old/fleet-waker",
                r#"Bench(Waker { rounds: 3, baseline: Some("/old/fleet-waker") })"#,
            ),
            ("bench fleet", "Bench(Fleet { n: 300 })"),
            ("bench fleet 20", "Bench(Fleet { n: 20 })"),
            ("bench reaper", "Bench(Reaper)"),
            ("bench sleep", "Bench(Sleep { rounds: 10 })"),
            ("bench sleep --rounds 3", "Bench(Sleep { rounds: 3 })"),
            ("soak", "Soak(SoakArgs { requests: 1000000 })"),
            (
                "soak --requests 100_000",
                "Soak(SoakArgs { requests: 100000 })",
            ),
            (
                "fuzz conf",
                r#"Fuzz(FuzzArgs { target: "conf", seconds: 600 })"#,
            ),
            (
                "fuzz site --seconds 30",
                r#"Fuzz(FuzzArgs { target: "site", seconds: 30 })"#,
            ),
            ("image", "Image"),
        ] {
            let got = parse(args).unwrap_or_else(|e| panic!("{args:?}: {e}"));
            assert_eq!(format!("{got:?}"), want, "{args:?}");
        }
    }

    #[test]
    fn usage_errors_are_errors_and_help_is_not() {
        for bad in [
            "",
            "nope",
            "bench",
            "bench waker many",
            "bench waker --baseline",
            "bench fleet 0",
            "bench sleep --rounds 0",
            "bench sleep 3",
            "demo --port",
            "demo --port 0",
            "demo --port 70000",
            "demo --port nope",
            "demo --bogus",
            "dist --out",
            "dist --what",
            "install --prefix relative",
            "install --prefix",
            "soak --requests 5",
            "soak --bogus",
            "fuzz",
            "fuzz nope",
            "fuzz conf --seconds 0",
            "fuzz conf --seconds",
        ] {
            let e = parse(bad).expect_err(&format!("{bad:?} is a usage error"));
            assert!(e.use_stderr(), "{bad:?}: {e}");
        }
        for help in ["--help", "help", "help dist", "demo --help"] {
            let e = parse(help).expect_err("help is clap's early exit");
            assert!(!e.use_stderr(), "{help:?}: {e}");
        }
    }

    #[test]
    fn counts_sum_libtest_summaries() {
        let mut c = Counts::default();
        for line in [
            "test result: ok. 66 passed; 0 failed; 2 ignored; 0 measured; 0 filtered out; finished in 1.52s",
            "test result: FAILED. 3 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out",
            "running 4 tests",
        ] {
            add_counts(line, &mut c);
        }
        assert_eq!((c.passed, c.failed, c.ignored), (69, 1, 2));
    }
}
