//! fleet-reaper runs, written once for the tests, the sleep bench and the
//! demo: a [`Reaper`] command line over a layout, run to its end into a
//! [`Run`] (exit code, output, time, the JSON plan), or pass after pass as
//! its timer would run them until one does what is waited for
//! ([`Reaper::until`], [`Reaper::passes`]).

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use fleet_core::Layout;
use serde_json::Value;

use crate::Error;
use crate::error::Cmd;
use crate::kit::process::Launch;

/// A `fleet-reaper` command line (argv, never a shell), with `NO_COLOR=1`.
#[derive(Debug, Clone)]
pub struct Reaper(Cmd);

impl Reaper {
    /// `program` (a fleet-reaper binary) with no arguments yet.
    pub fn new(program: impl Into<PathBuf>) -> Reaper {
        Reaper(Cmd::new(program.into()).env("NO_COLOR", "1"))
    }

    /// `program --run-dir … --sites-dir … --state-dir …` of `layout`: the
    /// site's own directories, so the reaper reads php-fpm's status page
    /// and drains before acting, as in production.
    pub fn over(program: impl Into<PathBuf>, layout: &Layout) -> Reaper {
        Reaper::new(program)
            .arg("--run-dir")
            .arg(&layout.run_dir)
            .dirs(&layout.sites_dir, &layout.state_dir)
    }

    /// `--sites-dir <sites> --state-dir <state>`.
    pub fn dirs(self, sites: &Path, state: &Path) -> Reaper {
        self.arg("--sites-dir")
            .arg(sites)
            .arg("--state-dir")
            .arg(state)
    }

    /// `--format json`: the plan on stdout, for [`Run::json`].
    pub fn json(self) -> Reaper {
        self.args(["--format", "json"])
    }

    pub fn arg(self, arg: impl AsRef<OsStr>) -> Reaper {
        Reaper(self.0.arg(arg))
    }

    pub fn args<I: IntoIterator<Item = S>, S: AsRef<OsStr>>(self, args: I) -> Reaper {
        Reaper(self.0.args(args))
    }

    /// Set one environment variable (on top of ours).
    pub fn env(self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Reaper {
        Reaper(self.0.env(key, value))
    }

    /// The command line, for messages.
    pub fn line(&self) -> String {
        self.0.line()
    }

    /// The same command as a [`Launch`], to run it in the background (and
    /// signal it mid-pass).
    pub fn launch(&self) -> Launch {
        Launch::from(self.0.clone())
    }

    /// One pass to its end, whatever its exit status.
    pub fn run(&self) -> Result<Run, Error> {
        let started = Instant::now();
        let out = self.0.output()?;
        Ok(Run {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            elapsed: started.elapsed(),
        })
    }

    /// Passes `step` apart (through [`crate::wait::poll`]), as a timer
    /// would run them, until `done` says so of one; returns that pass.
    /// `done` failing stops at once with its error; `within` passing
    /// without it, an error naming the last pass.
    pub fn passes(
        &self,
        within: Duration,
        step: Duration,
        mut done: impl FnMut(&Run) -> Result<bool, Error>,
    ) -> Result<Run, Error> {
        let mut last = None;
        let finished = crate::wait::poll(within, step, step, || {
            let judged = self.run().and_then(|run| Ok((done(&run)?, run)));
            // A failing `done` stops as one that says so.
            let stop = judged.as_ref().map_or(true, |(ok, _)| *ok);
            last = Some(judged);
            stop
        });
        match last.transpose()? {
            Some((_, run)) if finished => Ok(run),
            run => {
                let last = run.map_or_else(|| "none".to_owned(), |(_, r)| r.to_string());
                let why = format!("no pass did it within {within:?}; last: {last}");
                Err(Error::failed(self.line(), why))
            }
        }
    }

    /// [`Reaper::passes`] 200 ms apart until the plan's entry of `site`
    /// says `action` (`"paused"`, `"stopped"`, `"skipped"` …); returns
    /// that entry. php-fpm's counter dates traffic at the pass that sees
    /// it, so the pass that acts comes one timeout after the first pass
    /// that saw the last request. Needs [`Reaper::json`].
    pub fn until(&self, site: &str, action: &str, within: Duration) -> Result<Value, Error> {
        let run = self.passes(within, Duration::from_millis(200), |run| {
            Ok(run.entry(site)?["action"] == action)
        })?;
        run.entry(site)
    }
}

/// The entry of `site` (a site's name, or a conf file's for a file that
/// names none) in a JSON plan.
pub fn plan_entry<'a>(plan: &'a Value, site: &str) -> Option<&'a Value> {
    plan["sites"].as_array()?.iter().find(|e| e["site"] == site)
}

/// One finished fleet-reaper pass.
#[derive(Debug, Clone)]
pub struct Run {
    /// Its exit code (none when a signal ended it).
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    /// How long it ran.
    pub elapsed: Duration,
}

impl Run {
    /// Its stdout as the JSON plan (of a [`Reaper::json`] run).
    pub fn json(&self) -> Result<Value, Error> {
        serde_json::from_str(&self.stdout)
            .map_err(|e| Error::failed("fleet-reaper's plan", format!("not JSON ({e}): {self}")))
    }

    /// The plan's entry of `site` (a site's name, or a conf file's for a
    /// file that names none).
    pub fn entry(&self, site: &str) -> Result<Value, Error> {
        let why = || format!("no entry for {site}: {self}");
        let entry = plan_entry(&self.json()?, site).cloned();
        entry.ok_or_else(|| Error::failed("fleet-reaper's plan", why()))
    }
}

/// `exit <code> in <time>`, then its stdout and stderr: for messages.
impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {:?} in {:?}\n{}{}",
            self.code, self.elapsed, self.stdout, self.stderr
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stand-in for fleet-reaper: `sh` printing a plan whose site `a`
    /// says `none` on the first pass and `paused` from the second on.
    fn fake(dir: &Path) -> Reaper {
        let script = r#"n=$(cat "$0/n" 2>/dev/null || echo 0); n=$((n+1)); echo $n > "$0/n"
            [ $n -ge 2 ] && a=paused || a=none
            printf '{"sites":[{"site":"a","action":"%s"}]}' $a"#;
        Reaper::new("sh").args([OsStr::new("-c"), OsStr::new(script), dir.as_os_str()])
    }

    #[test]
    fn until_runs_passes_until_the_entry_says_the_action() {
        let dir = tempfile::tempdir().expect("tempdir");
        let r = fake(dir.path());
        let entry = r
            .until("a", "paused", Duration::from_secs(10))
            .expect("paused");
        assert_eq!(entry["action"], "paused");
        let run = r.run().expect("a pass");
        assert_eq!(run.code, Some(0));
        assert!(run.entry("b").is_err(), "no entry for b: {run}");
        let late = r.until("a", "stopped", Duration::from_millis(300));
        assert!(
            late.is_err_and(|e| e.to_string().contains("no pass did it")),
            "never stopped"
        );
    }
}
