//! `cargo xtask bench reaper`: one full reaper pass against the old script's
//! serial `docker logs --since` loop, on the same sites in the same run.
//!
//! Setup: `SITES` light containers (`/bin/dash` + coreutils from the host,
//! imported as `fleet-bench-light:<hash>`), each of which writes `OLD_LOG`
//! bytes of log at start and then stays quiet; `RECENT` of them print a line
//! every second after that. Once the quiet ones' log is older than the
//! timeout (and every container older than it, so none is "young"):
//!
//! * **fleet-reaper**: `fleet-reaper --dry-run --proxy-only --format table` over all
//!   sites (process start, listing, conf parsing, inspect, state file, log
//!   check, verdicts; dry run so that the timing is the decision, not
//!   Docker's stop, which both approaches pay alike). Best of `RUNS`.
//! * **old loop**: for each site in turn, `docker logs --since <cutoff>
//!   <container>`, output read to the end, as `pause-on-demand-containers.sh`
//!   did. One run.
//!
//! Both must find exactly the `RECENT` sites active. Prints a Markdown
//! section for BENCHMARKS.md. Containers are labelled `fleet.bench=reaper`
//! and removed at the end (and leftovers at the start).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::proc::{parallel, rm_containers};
use xtask::Error;
use xtask::error::{Cmd, run};
use xtask::kit::reaper::Reaper;
use xtask::wait::poll;

/// Sites in the benchmark.
pub const SITES: usize = 200;
/// Sites that keep logging (one line a second).
pub const RECENT: usize = 5;
/// Bytes of old log per site.
pub const OLD_LOG: usize = 10 << 20;
/// Idle timeout in every conf file.
pub const TIMEOUT_SECS: u64 = 5;
/// Reaper passes timed (the best is reported).
pub const RUNS: usize = 3;

const LABEL: &str = "fleet.bench=reaper";
const REPOSITORY: &str = "fleet-bench-light";
const BINARIES: &[&str] = &[
    "/bin/dash",
    "/usr/bin/yes",
    "/usr/bin/head",
    "/usr/bin/sleep",
];

type Result<T> = std::result::Result<T, Error>;

/// Runs the benchmark on a release fleet-reaper built in `root`. Returns
/// the Markdown report.
pub fn bench() -> Result<String> {
    xtask::kit::build("release", &["fleet-reaper"])?;
    remove_containers()?;
    let report = measure(&xtask::kit::release_bin("fleet-reaper"));
    let cleanup = remove_containers();
    // A measurement's error wins over a cleanup's.
    let report = report?;
    cleanup?;
    Ok(report)
}

fn measure(reaper: &Path) -> Result<String> {
    let image = ensure_image()?;
    // The kit's temp dir: removed on drop, swept by a later run if this
    // one dies.
    let tmp = xtask::kit::site::try_temp_dir_in(Path::new("/tmp"), "bench-reaper")?;
    let [sites_dir, state_dir] = ["sites", "state"].map(|d| tmp.path().join(d));
    for d in [&sites_dir, &state_dir] {
        xtask::kit::mkdir(d)?;
    }
    let names: Vec<String> = (0..SITES)
        .map(|i| format!("s{i:03}.bench.fleet.test"))
        .collect();
    let text = format!("# Amount of time to pause the container after: {TIMEOUT_SECS}s\n");
    for name in &names {
        let conf = sites_dir.join(format!("{name}.conf"));
        std::fs::write(&conf, &text).map_err(Error::io("write", &conf))?;
    }

    eprintln!(
        "==> starting {SITES} containers, {} MiB of log each",
        OLD_LOG >> 20
    );
    let t = Instant::now();
    let line = "x".repeat(99);
    let old = format!("yes {line} | head -c {OLD_LOG}; echo; echo old-log-done");
    let recent_tail = "while :; do echo tick; sleep 1; done";
    let quiet_tail = "exec sleep 2147483647";
    parallel(SITES, 8, |i| {
        let tail = if i < RECENT { recent_tail } else { quiet_tail };
        let script = format!("{old}; {tail}");
        Cmd::new("docker")
            .args(["run", "-d", "--label", LABEL, "--network", "none", "--name"])
            .arg(format!("{}.fpm", names[i]))
            .args([image.as_str(), "/bin/dash", "-c", &script])
            .stdout()
            .map(drop)
    })?;
    eprintln!(
        "    started in {:.1}s; waiting for the logs to be written",
        t.elapsed().as_secs_f64()
    );
    parallel(SITES, 8, |i| {
        let c = format!("{}.fpm", names[i]);
        let written =
            |out: &str| out.contains("old-log-done") || (i < RECENT && out.contains("tick"));
        // The last lines, until written or `docker logs` fails.
        let mut out = Ok(String::new());
        let (first, max) = (Duration::from_millis(50), Duration::from_secs(1));
        poll(Duration::from_secs(300), first, max, || {
            out = run("docker", &["logs", "--tail", "2", &c]);
            out.as_deref().map_or(true, written)
        });
        if written(&out?) {
            Ok(())
        } else {
            let why = "log not written after 300s";
            Err(Error::failed(format!("docker logs {c}"), why))
        }
    })?;
    let written = SystemTime::now();
    eprintln!("    logs written after {:.1}s", t.elapsed().as_secs_f64());
    // Every quiet site's last line must be older than the timeout: let it pass.
    std::thread::sleep(Duration::from_secs(TIMEOUT_SECS + 1));

    let expected: BTreeSet<String> = names[..RECENT].iter().cloned().collect();
    let measured_after = written.elapsed().unwrap_or_default();

    // fleet-reaper, best of RUNS.
    let mut reaper_times = Vec::new();
    for run in 0..RUNS {
        let pass = Reaper::new(reaper)
            .dirs(&sites_dir, &state_dir)
            // The light containers have no php-fpm status page: without
            // --proxy-only every quiet site is `no-signal`, never idle. The
            // old loop, too, decided on the logs alone.
            .args(["--dry-run", "--proxy-only", "--format", "table"])
            .env("RUST_LOG", "warn")
            .run()?;
        let (stdout, elapsed) = (pass.stdout, pass.elapsed);
        let active = verdicts(&stdout, "active-logs");
        let idle = verdicts(&stdout, "idle");
        if pass.code != Some(0) || active != expected || idle.len() != SITES - RECENT {
            let (code, stderr) = (pass.code, pass.stderr);
            let (active, idle) = (active.len(), idle.len());
            let why = format!(
                "exit {code:?}, {active} active (expected {RECENT}), {idle} idle:\n{stdout}{stderr}"
            );
            return Err(Error::failed(format!("fleet-reaper run {run}"), why));
        }
        eprintln!(
            "    fleet-reaper pass {}: {:.3}s",
            run + 1,
            elapsed.as_secs_f64()
        );
        reaper_times.push(elapsed);
    }
    let reaper_best = reaper_times.iter().min().copied().unwrap_or_default();

    // The old script's serial loop.
    eprintln!("==> serial `docker logs --since` loop over {SITES} sites");
    let cutoff = SystemTime::now() - Duration::from_secs(TIMEOUT_SECS);
    let since = cutoff
        .duration_since(UNIX_EPOCH)
        .map_err(|e| Error::failed("the --since cutoff", e))?
        .as_secs()
        .to_string();
    let t = Instant::now();
    let mut loop_active = BTreeSet::new();
    let mut loop_bytes = 0usize;
    for name in &names {
        let c = format!("{name}.fpm");
        let bytes = run("docker", &["logs", "--since", &since, &c])?.len();
        loop_bytes += bytes;
        if bytes > 0 {
            loop_active.insert(name.clone());
        }
    }
    let loop_time = t.elapsed();
    eprintln!("    serial loop: {:.3}s", loop_time.as_secs_f64());
    if loop_active != expected {
        let n = loop_active.len();
        let why = format!("found {n} active sites, expected {RECENT}: {loop_active:?}");
        return Err(Error::failed("the serial loop", why));
    }
    let ratio = loop_time.as_secs_f64() / reaper_best.as_secs_f64().max(1e-9);

    let version = "{{.Server.Version}} (API {{.Server.APIVersion}})";
    let docker = run("docker", &["version", "--format", version])?;
    let times: Vec<String> = reaper_times
        .iter()
        .map(|d| format!("{:.3}", d.as_secs_f64()))
        .collect();
    let under = if reaper_best < Duration::from_secs(2) {
        "under"
    } else {
        "NOT under"
    };
    Ok(format!(
        "## reaper: one pass vs the old serial `docker logs --since` loop\n\n\
         {SITES} running light containers (`{image}`), each with {} MiB of log older than the \
         {TIMEOUT_SECS}s timeout, {RECENT} of them logging a line every second. Docker {}, \
         json-file logs (daemon default max-size 10m), release build. The reaper passes ran {:.0}s after \
         the logs were written, the loop right after them.\n\n\
         | what | time | verdicts |\n|---|---|---|\n\
         | `fleet-reaper --dry-run` (whole process, --jobs 16), best of {RUNS} ({}) | **{:.3} s** | {RECENT} active-logs, {} idle |\n\
         | serial `docker logs --since` per site (old script) | {:.3} s | {} active ({loop_bytes} bytes read in all) |\n\
         \n**{ratio:.1}× faster** than the serial loop (target ≥ 10×); pass {under} 2 s (target < 2 s).\n",
        OLD_LOG >> 20,
        docker.trim(),
        measured_after.as_secs_f64(),
        times.join(", "),
        reaper_best.as_secs_f64(),
        SITES - RECENT,
        loop_time.as_secs_f64(),
        loop_active.len(),
    ))
}

/// The sites whose VERDICT column in the reaper's table is `verdict`.
fn verdicts(table: &str, verdict: &str) -> BTreeSet<String> {
    let mut lines = table.lines();
    let Some(col) = lines.next().and_then(|header| header.find("VERDICT")) else {
        return BTreeSet::new();
    };
    lines
        .filter(|l| {
            l.get(col..)
                .is_some_and(|rest| rest.split_whitespace().next() == Some(verdict))
        })
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .collect()
}

fn remove_containers() -> Result<()> {
    let filter = format!("label={LABEL}");
    let ids = run("docker", &["ps", "-aq", "--filter", &filter])?;
    rm_containers(&ids.split_whitespace().collect::<Vec<_>>())
}

/// The light image: the host's dash, yes, head and sleep with their
/// libraries, as a deterministic tar; tag `fleet-bench-light:<sha256-16>`.
fn ensure_image() -> Result<String> {
    let mut files: Vec<(PathBuf, u32, Vec<u8>)> = Vec::new();
    let mut libs = BTreeSet::new();
    for bin in BINARIES {
        libs.extend(xtask::image::needed_libraries(Path::new(bin))?);
        let name = Path::new(bin)
            .file_name()
            .ok_or_else(|| Error::failed(*bin, "has no file name"))?;
        let data = std::fs::read(bin).map_err(Error::io("read", bin))?;
        files.push((Path::new("bin").join(name), 0o755, data));
    }
    for lib in libs {
        let data = std::fs::read(&lib).map_err(Error::io("read", &lib))?;
        files.push((lib, 0o755, data));
    }
    let tar = xtask::image::files_tar(&files)?;
    xtask::image::ensure_tar_image(REPOSITORY, &tar, &[]).map(|image| image.tag)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_verdicts_from_the_table() {
        let table = "\
SITE     STATE    LAST ACTIVITY  TIMEOUT  VERDICT      ACTION      REASON
a.test   running  0.5s ago       5.0s     active-logs  none        container logged output
b.test   running  -              5.0s     idle         would-stop  no connection and no log output for 5.0s
2 sites, 0 stopped, 0 errors, dry run in 0.1s
";
        assert_eq!(
            verdicts(table, "active-logs"),
            BTreeSet::from(["a.test".to_owned()])
        );
        assert_eq!(
            verdicts(table, "idle"),
            BTreeSet::from(["b.test".to_owned()])
        );
        assert!(verdicts("", "idle").is_empty());
    }
}
