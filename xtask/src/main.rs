//! `cargo xtask …`: the project's automation.
//!
//! * `cargo xtask test [cargo test args…]` — the one test command: Debian
//!   packages, `docker info`, the php-fpm image, fmt, clippy, build, tests.
//! * `cargo xtask image` — build (or find cached) the php-fpm image, print its tag.
//! * `cargo xtask demo [--port N] [--once] [--no-build]` — the demo (see `xtask::demo`).
//! * `cargo xtask dist [--debug] [--no-build] [--out DIR] [--verify]` — see `xtask::dist`.
//! * `cargo xtask install [--prefix P] [--destdir D]` — see `xtask::install`.
//! * `cargo xtask bench` — not implemented yet.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use xtask::{deps, image};

mod fuzz;
mod proc;
mod soak;

mod bench {
    pub mod fleet;
    pub mod reaper;
    pub mod waker;
}

/// sysexits: usage error.
const EX_USAGE: u8 = 64;
/// sysexits: a needed service or package is unavailable.
const EX_UNAVAILABLE: u8 = 69;

const USAGE: &str = "usage: cargo xtask <command>

commands:
  test [args…]   install missing Debian packages (as root), check docker, build the
                 php-fpm image, then cargo fmt --check, clippy -D warnings, build and
                 test the whole workspace; args go to `cargo test`
  image          build (or reuse the cached) php-fpm test image and print its tag
  demo [--port N] [--once] [--no-build]
                 as root: one demo site end to end (nginx → fleet-waker → php-fpm
                 container), cold/warm timings, reaped, woken again; removes
                 everything it made on exit or Ctrl-C
  dist [--debug] [--no-build] [--out DIR] [--verify]
                 release binaries, units, man pages, completions and
                 fleet_<version>_<arch>.deb in target/dist; --verify (root)
                 installs, checks and removes the .deb on this machine
  install [--prefix /usr/local] [--destdir D] [--debug] [--no-build]
                 build and install binaries, units, man pages, completions
  bench waker [rounds] [--baseline BIN]
                 fleet-waker benchmark (warm wrk ratios, cold overhead, RSS); Markdown on stdout;
                 --baseline: also another fleet-waker binary (e.g. the previous release
                 build) in the same warm rounds, with its own ratio to direct
  bench fleet [N]
                 a crawler's sweep: N (default 300) sleeping sites with socket-activated
                 wakers behind one nginx, one request to each at once; Markdown on stdout
  bench reaper   one fleet-reaper pass vs the old serial `docker logs --since` loop
                 (200 light containers, 10 MiB of old log each); Markdown on stdout
  soak [--requests N]
                 N (default 1,000,000) requests nginx → fleet-waker → php-fpm: non-2xx,
                 waker RSS growth, descriptors; Markdown on stdout (not part of test)
  fuzz <conf|site|listen_env> [--seconds N]
                 run one cargo-fuzz target for N s (default 600); nightly + cargo-fuzz";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((command, rest)) = args.split_first() else {
        eprintln!("{USAGE}");
        return ExitCode::from(EX_USAGE);
    };
    match command.as_str() {
        "test" => test(rest),
        "image" => match build_image() {
            Ok(tag) => {
                println!("{tag}");
                ExitCode::SUCCESS
            }
            Err(code) => code,
        },
        "demo" => {
            // The same package step as `test`: on a fresh Debian machine, as
            // root, the demo installs what it needs; as another user it
            // names it. A usage error is the demo's own to report first.
            if xtask::demo::parse_args(rest).is_ok()
                && let Err(code) = ensure_packages()
            {
                return code;
            }
            xtask::demo::main(rest)
        }
        "dist" => xtask::dist::main(rest),
        "install" => xtask::install::main(rest),
        "bench" if rest.first().map(String::as_str) == Some("waker") => {
            let mut rounds = 5;
            let mut baseline = None;
            let mut args = rest[1..].iter();
            while let Some(a) = args.next() {
                match a.as_str() {
                    "--baseline" => match args.next() {
                        Some(p) => baseline = Some(PathBuf::from(p)),
                        None => {
                            eprintln!(
                                "xtask bench waker: --baseline needs a fleet-waker binary\n\n{USAGE}"
                            );
                            return ExitCode::from(EX_USAGE);
                        }
                    },
                    n => match n.parse() {
                        Ok(n) => rounds = n,
                        Err(_) => {
                            eprintln!(
                                "xtask bench waker: {n:?} is not a number of rounds\n\n{USAGE}"
                            );
                            return ExitCode::from(EX_USAGE);
                        }
                    },
                }
            }
            match bench::waker::bench(&repo_root(), rounds, baseline.as_deref()) {
                Ok(report) => {
                    println!("{report}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("xtask bench waker: {e}");
                    ExitCode::from(EX_UNAVAILABLE)
                }
            }
        }
        "bench" if rest.first().is_some_and(|a| a == "reaper") => bench_reaper(),
        "bench" if rest.first().is_some_and(|a| a == "fleet") => {
            let n = match rest.get(1).map(|n| n.parse::<usize>()) {
                None => 300,
                Some(Ok(n)) if n > 0 => n,
                Some(_) => {
                    eprintln!("xtask bench fleet: N must be a positive number\n\n{USAGE}");
                    return ExitCode::from(EX_USAGE);
                }
            };
            match bench::fleet::bench(&repo_root(), n) {
                Ok(report) => {
                    println!("{report}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("xtask bench fleet: {e}");
                    ExitCode::from(EX_UNAVAILABLE)
                }
            }
        }
        "soak" => match soak::parse_args(rest).and_then(|n| soak::soak(&repo_root(), n)) {
            Ok((report, passed)) => {
                println!("{report}");
                if passed {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::FAILURE
                }
            }
            Err(e) => {
                eprintln!("xtask soak: {e}");
                ExitCode::from(EX_UNAVAILABLE)
            }
        },
        "fuzz" => match fuzz::parse_args(rest) {
            Ok((target, seconds)) => match fuzz::run(&repo_root(), &target, seconds) {
                Ok(outcome) => {
                    println!("fuzz {target}: {}", outcome.done.unwrap_or_default());
                    for s in outcome.stats {
                        println!("  {s}");
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("xtask fuzz: {e}");
                    ExitCode::FAILURE
                }
            },
            Err(e) => {
                eprintln!("xtask fuzz: {e}\n\n{USAGE}");
                ExitCode::from(EX_USAGE)
            }
        },
        "bench" => {
            eprintln!(
                "xtask bench: name what to benchmark: `bench waker` or `bench reaper`\n\n{USAGE}"
            );
            ExitCode::from(EX_USAGE)
        }
        "help" | "-h" | "--help" => {
            println!("{USAGE}");
            ExitCode::SUCCESS
        }
        other => {
            eprintln!("xtask: unknown command {other:?}\n\n{USAGE}");
            ExitCode::from(EX_USAGE)
        }
    }
}

fn repo_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string())
}

fn secs(d: Duration) -> String {
    format!("{:.1}s", d.as_secs_f64())
}

/// Run one step (an argv, never a shell), printing it and its duration.
fn step(name: &str, program: &str, args: &[&str], env: &[(&str, &str)]) -> Result<(), ExitCode> {
    eprintln!("==> {name}: {program} {}", args.join(" "));
    let start = Instant::now();
    let status = Command::new(program)
        .args(args)
        .envs(env.iter().copied())
        .current_dir(repo_root())
        .stdin(Stdio::null())
        .status();
    let took = secs(start.elapsed());
    match status {
        Ok(s) if s.success() => {
            eprintln!("==> {name}: ok in {took}");
            Ok(())
        }
        Ok(s) => {
            eprintln!("==> {name}: FAILED ({s}) after {took}");
            Err(ExitCode::FAILURE)
        }
        Err(e) => {
            eprintln!("==> {name}: cannot run {program}: {e}");
            Err(ExitCode::from(EX_UNAVAILABLE))
        }
    }
}

/// Test counts summed over every `test result:` line.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
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

/// `cargo test …`, its output passed through line by line and its summary
/// lines counted.
fn test_step(cargo: &str, args: &[&str]) -> Result<Counts, ExitCode> {
    use std::io::{BufRead, BufReader, Write};
    eprintln!("==> test: {cargo} {}", args.join(" "));
    let start = Instant::now();
    let mut child = match Command::new(cargo)
        .args(args)
        .current_dir(repo_root())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("==> test: cannot run {cargo}: {e}");
            return Err(ExitCode::from(EX_UNAVAILABLE));
        }
    };
    let mut counts = Counts::default();
    if let Some(out) = child.stdout.take() {
        let stdout = std::io::stdout();
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            add_counts(&line, &mut counts);
            let mut lock = stdout.lock();
            let _ = writeln!(lock, "{line}");
        }
    }
    let took = secs(start.elapsed());
    match child.wait() {
        Ok(s) if s.success() => {
            eprintln!(
                "==> test: ok in {took} ({} passed, {} failed, {} ignored)",
                counts.passed, counts.failed, counts.ignored
            );
            Ok(counts)
        }
        Ok(s) => {
            eprintln!("==> test: FAILED ({s}) after {took}");
            Err(ExitCode::FAILURE)
        }
        Err(e) => {
            eprintln!("==> test: cannot wait for {cargo}: {e}");
            Err(ExitCode::from(EX_UNAVAILABLE))
        }
    }
}

fn test(cargo_test_args: &[String]) -> ExitCode {
    let total = Instant::now();
    eprintln!(
        "==> cargo xtask test (CI={})",
        std::env::var("CI").unwrap_or_else(|_| "unset".into())
    );
    let result = (|| {
        ensure_packages()?;
        check_docker()?;
        build_image()?;
        let cargo = cargo();
        step("fmt", &cargo, &["fmt", "--all", "--check"], &[])?;
        step(
            "clippy",
            &cargo,
            &[
                "clippy",
                "--workspace",
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ],
            &[],
        )?;
        step("build", &cargo, &["build", "--workspace"], &[])?;
        let mut args = vec!["test", "--workspace"];
        args.extend(cargo_test_args.iter().map(String::as_str));
        let counts = test_step(&cargo, &args)?;
        check_leftovers()?;
        check_package()?;
        Ok(counts)
    })();
    match result {
        Ok(counts) => {
            eprintln!("==> all steps passed in {}", secs(total.elapsed()));
            // The plain closing line CI systems read: the sum over every
            // test binary (the last `test result:` line cargo prints is
            // often an empty doc-test run).
            println!(
                "tests: {} passed, {} failed, {} skipped",
                counts.passed, counts.failed, counts.ignored
            );
            ExitCode::SUCCESS
        }
        Err(code) => {
            eprintln!("==> stopped after {}", secs(total.elapsed()));
            code
        }
    }
}

fn ensure_packages() -> Result<(), ExitCode> {
    let start = Instant::now();
    let missing = deps::missing();
    if missing.is_empty() {
        eprintln!(
            "==> packages: {} installed ({})",
            deps::PACKAGES.join(" "),
            secs(start.elapsed())
        );
        return Ok(());
    }
    let is_root = effective_uid_is_root();
    let has_apt = Path::new("/usr/bin/apt-get").exists();
    if !is_root || !has_apt {
        eprintln!(
            "==> packages: missing {}; install them with:\n    sudo apt-get install -y --no-install-recommends {}",
            missing.join(" "),
            missing.join(" ")
        );
        return Err(ExitCode::from(EX_UNAVAILABLE));
    }
    let env = [("DEBIAN_FRONTEND", "noninteractive")];
    step("apt-get update", "apt-get", &["update"], &env)?;
    let mut args = vec!["install", "-y", "--no-install-recommends"];
    args.extend(missing.iter().copied());
    step("apt-get install", "apt-get", &args, &env)?;
    let still = deps::missing();
    if !still.is_empty() {
        eprintln!(
            "==> packages: still missing after apt-get install: {}",
            still.join(" ")
        );
        return Err(ExitCode::from(EX_UNAVAILABLE));
    }
    Ok(())
}

/// Effective uid 0? Read from /proc to avoid pulling a dependency for one call.
fn effective_uid_is_root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|status| {
        status
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|ids| ids.split_whitespace().nth(1).map(|euid| euid == "0"))
            .unwrap_or(false)
    })
}

fn check_docker() -> Result<(), ExitCode> {
    let start = Instant::now();
    let out = Command::new("docker")
        .args(["info", "--format", "{{.ServerVersion}}"])
        .stdin(Stdio::null())
        .output();
    match out {
        Ok(out) if out.status.success() => {
            eprintln!(
                "==> docker: engine {} ({})",
                String::from_utf8_lossy(&out.stdout).trim(),
                secs(start.elapsed())
            );
            Ok(())
        }
        Ok(out) => {
            eprintln!(
                "==> docker: `docker info` failed: {}\n    is the Docker engine running, and is DOCKER_HOST ({}) right?",
                String::from_utf8_lossy(&out.stderr).trim(),
                std::env::var("DOCKER_HOST").unwrap_or_else(|_| "unset".into())
            );
            Err(ExitCode::from(EX_UNAVAILABLE))
        }
        Err(e) => {
            eprintln!("==> docker: cannot run `docker`: {e} (install the Docker CLI and engine)");
            Err(ExitCode::from(EX_UNAVAILABLE))
        }
    }
}

/// After the tests: no `fleet.test=1` container, no `/tmp/fleet-it-<pid>-…`
/// or `/run/fleet-it-<pid>-…` dir and no runtime tmpfs below one may remain whose test process is gone (tests of other, still running
/// processes on this machine are not counted).
fn check_leftovers() -> Result<(), ExitCode> {
    let alive = |pid: &str| {
        pid.parse::<u32>()
            .is_ok_and(|pid| Path::new(&format!("/proc/{pid}")).exists())
    };
    let out = Command::new("docker")
        .args([
            "ps",
            "-a",
            "--filter",
            "label=fleet.test=1",
            "--format",
            "{{.Names}}\t{{.Label \"fleet.test.pid\"}}",
        ])
        .stdin(Stdio::null())
        .output();
    let listing = match out {
        Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout).into_owned(),
        _ => {
            eprintln!("==> leftovers: cannot list test containers");
            return Err(ExitCode::FAILURE);
        }
    };
    let mut left: Vec<String> = listing
        .lines()
        .filter_map(|l| l.split_once('\t'))
        .filter(|(_, pid)| !alive(pid.trim()))
        .map(|(name, _)| format!("container {name}"))
        .collect();
    for base in ["/tmp", "/run"] {
        let Ok(entries) = std::fs::read_dir(base) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let pid = name
                .strip_prefix("fleet-it-")
                .and_then(|rest| rest.split('-').next())
                .filter(|pid| pid.parse::<u32>().is_ok());
            if pid.is_some_and(|pid| !alive(pid)) {
                left.push(format!("dir {base}/{name}"));
            }
        }
    }
    // Test sites' runtime tmpfs mounts (fleet-renew --mount-only's source
    // name) must be gone with their test processes too.
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    for point in mounts
        .lines()
        .filter(|l| l.contains(" fleet-rundir "))
        .filter_map(|l| l.split(' ').nth(4))
    {
        let pid = point
            .split('/')
            .find_map(|c| c.strip_prefix("fleet-it-"))
            .and_then(|rest| rest.split('-').next());
        if pid.is_some_and(|pid| !alive(pid)) {
            left.push(format!("mount {point}"));
        }
    }
    if left.is_empty() {
        eprintln!("==> leftovers: none (docker ps -a and /tmp clean of finished test runs)");
        Ok(())
    } else {
        eprintln!(
            "==> leftovers: FAILED, tests left behind:\n    {}",
            left.join("\n    ")
        );
        Err(ExitCode::FAILURE)
    }
}

/// The Debian package, built from the debug binaries (seconds, unlike a
/// release build), installed with `dpkg -i`, checked, removed with
/// `dpkg -r` and checked gone: `cargo xtask dist --debug --no-build --verify`.
/// Needs root and dpkg; skipped with a reason otherwise (failing under CI).
fn check_package() -> Result<(), ExitCode> {
    let ci = std::env::var("CI").is_ok_and(|v| v == "true");
    let why_not = if !effective_uid_is_root() {
        Some("needs root")
    } else if !Path::new("/usr/bin/dpkg").exists() {
        Some("needs dpkg")
    } else {
        None
    };
    if let Some(why) = why_not {
        eprintln!("==> package: SKIP dpkg -i/-r check ({why})");
        return if ci { Err(ExitCode::FAILURE) } else { Ok(()) };
    }
    let xtask = std::env::current_exe().map_err(|_| ExitCode::FAILURE)?;
    let out = repo_root().join("target/dist-check");
    let out = out.to_string_lossy();
    step(
        "package (debug .deb: dpkg -i, check, dpkg -r, check)",
        &xtask.to_string_lossy(),
        &["dist", "--debug", "--no-build", "--out", &out, "--verify"],
        &[],
    )
}

fn build_image() -> Result<String, ExitCode> {
    let start = Instant::now();
    match image::ensure_image_info() {
        Ok(img) => {
            eprintln!(
                "==> image: {} {} in {}",
                img.tag,
                if img.cached {
                    "cached (import skipped)"
                } else {
                    "built and imported"
                },
                secs(start.elapsed())
            );
            Ok(img.tag)
        }
        Err(e) => {
            let mut msg = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                msg.push_str(": ");
                msg.push_str(&s.to_string());
                source = s.source();
            }
            eprintln!("==> image: {msg}");
            Err(ExitCode::from(EX_UNAVAILABLE))
        }
    }
}

/// `cargo xtask bench reaper`: see `bench/reaper.rs`.
fn bench_reaper() -> ExitCode {
    if let Err(code) = step(
        "build fleet-reaper",
        &cargo(),
        &["build", "--release", "-p", "fleet-reaper"],
        &[],
    ) {
        return code;
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target"));
    // Benchmarks time release builds, as shipped.
    match bench::reaper::run(&target.join("release").join("fleet-reaper")) {
        Ok(report) => {
            println!("{report}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("xtask bench reaper: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_sum_libtest_summaries() {
        let mut c = Counts::default();
        add_counts(
            "test result: ok. 66 passed; 0 failed; 2 ignored; 0 measured; 0 filtered out; finished in 1.52s",
            &mut c,
        );
        add_counts(
            "test result: FAILED. 3 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out",
            &mut c,
        );
        add_counts("running 4 tests", &mut c);
        assert_eq!(
            c,
            Counts {
                passed: 69,
                failed: 1,
                ignored: 2
            }
        );
    }
}
