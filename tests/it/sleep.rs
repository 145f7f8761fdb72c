//! Issue 14: putting a site to sleep must never lose a request.
//!
//! Every test runs the shipped nginx snippets ([`Stack`]: nginx → php-fpm's
//! socket or the waker under socket activation → a real php-fpm container)
//! with the real `fleet-reaper` acting during the traffic:
//!
//! * `load_<mode>_<action>`: one minute of wrk, GETs and POSTs to
//!   `count.php` in bursts with quiet gaps longer than the site's 1 s
//!   timeout, while the reaper runs every second: no error answer, every
//!   answered POST ran exactly once, no request ran twice, and the reaper
//!   really put the site to sleep (and the traffic woke it) again and again.
//! * A busy direct-mode site on a stock pool (no access log, so its
//!   container's log says nothing) is never stopped; idle, it is.
//! * Direct mode and `--action pause`: a request to the paused site is
//!   answered through the waker at once, and php-fpm's socket is back for
//!   the next one.
//! * Tiered sleep (conf line 2): paused after line 1's time, stopped after
//!   line 2's, and a request wakes it from either.

use std::collections::BTreeMap;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use serde_json::Value;
use xtask::kit::nginx::Mode;

use crate::support::assert::output_text;
use crate::support::reaper::{self, ReaperExt as _, Run};
use crate::support::site::fingerprint;
use crate::support::{
    Lazy, SiteOptions, Stack, TestSite, http, note, require, temp_dir, wait_until,
};

/// nginx's `fastcgi_read_timeout`, which the shipped snippets leave at its
/// default: a request that hangs (e.g. in a paused php-fpm's backlog) is
/// answered 504 after this.
const FRONT_END_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a test waits for an answer: past the front end's own timeout.
const PAST_FRONT_END: Duration = Duration::from_secs(FRONT_END_TIMEOUT.as_secs() + 5);

// ---------------------------------------------------------------------------
// The reaper, once a second
// ---------------------------------------------------------------------------

/// `fleet-reaper --format json <args>` for one site's layout, started once
/// every second (on a fixed tick; a pass that overruns its second delays
/// the next) by a thread, until [`Reaping::finish`] or drop.
struct Reaping {
    site: String,
    stop: Arc<AtomicBool>,
    /// Each pass: when it started, and what it printed.
    passes: Arc<Mutex<Vec<(SystemTime, Run)>>>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// When the first pass started (the passes' grid).
    since: SystemTime,
}

impl Reaping {
    fn start(site: &TestSite, args: &[&str]) -> Reaping {
        // No systemd units here to heal; skip the look.
        let reaper = reaper::over(site).arg("--no-heal").args(args);
        let stop = Arc::new(AtomicBool::new(false));
        let passes = Arc::new(Mutex::new(Vec::new()));
        let (origin, since) = (Instant::now(), SystemTime::now());
        let thread = {
            let (stop, passes) = (Arc::clone(&stop), Arc::clone(&passes));
            std::thread::spawn(move || {
                let mut tick = origin;
                while !stop.load(Ordering::SeqCst) {
                    let at = SystemTime::now();
                    let run = reaper.run().expect("run fleet-reaper");
                    passes.lock().expect("passes lock").push((at, run));
                    tick += Duration::from_secs(1);
                    let until_tick = tick.saturating_duration_since(Instant::now());
                    wait_until(until_tick, || stop.load(Ordering::SeqCst));
                    tick = tick.max(Instant::now());
                }
            })
        };
        Reaping {
            site: site.name().to_owned(),
            stop,
            passes,
            thread: Mutex::new(Some(thread)),
            since,
        }
    }

    /// The passes whose plan put the site to sleep (`stopped`, `paused`):
    /// when, and the action.
    fn sleeps(&self) -> Vec<(SystemTime, String)> {
        self.passes
            .lock()
            .expect("passes lock")
            .iter()
            .filter_map(|(started, run)| {
                let e = run.entry(&self.site).ok()?;
                let a = e["action"].as_str()?.to_owned();
                // When the reaper examined the site (just before acting),
                // from its own plan; the pass's start otherwise.
                let at = e["examined_at"].as_f64().map_or(*started, |t| {
                    SystemTime::UNIX_EPOCH + Duration::from_secs_f64(t)
                });
                matches!(a.as_str(), "stopped" | "paused").then_some((at, a))
            })
            .collect()
    }

    /// Stops the thread after its pass under way (a panic in it fails the
    /// test, unless the test is failing already).
    fn finish(&self) {
        self.stop.store(true, Ordering::SeqCst);
        // Taken out first: the lock is not held while joining or panicking.
        let thread = self.thread.lock().expect("thread lock").take();
        if let Some(t) = thread
            && t.join().is_err()
            && !std::thread::panicking()
        {
            panic!("the reaper thread panicked");
        }
    }

    /// Every pass in one line (seconds since the start, exit code, verdict,
    /// action, reason, error); the full output of passes that did not exit 0.
    fn report(&self) -> String {
        let passes = self.passes.lock().expect("passes lock");
        let mut out = format!("--- fleet-reaper, {} passes:\n", passes.len());
        for (at, run) in passes.iter() {
            let t = at.duration_since(self.since).unwrap_or_default();
            // None when the output is not a plan, e.g. a usage error.
            let e = run.entry(&self.site).unwrap_or(Value::Null);
            out.push_str(&format!(
                "{:6.2}s exit {:?} in {:.0} ms: {} {} {} {}\n",
                t.as_secs_f64(),
                run.code,
                run.elapsed.as_secs_f64() * 1e3,
                e["verdict"],
                e["action"],
                e["reason"],
                e["error"]
            ));
            if run.code != Some(0) {
                out.push_str(&format!("    stdout: {}\n", run.stdout.trim()));
            }
            if !run.stderr.trim().is_empty() {
                out.push_str(&format!("    stderr: {}\n", run.stderr.trim()));
            }
        }
        out
    }
}

impl Drop for Reaping {
    fn drop(&mut self) {
        self.finish();
    }
}

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// `GET /hello.php` through nginx given `within` to answer: (status and
/// body, or the error; the time to the end of the answer).
fn timed_hello(s: &Stack, within: Duration) -> (std::io::Result<(u16, String)>, Duration) {
    let t = Instant::now();
    let r = http::request(s.nginx.port(), "GET", "/hello.php", None, within);
    (r.map(|r| (r.status, r.text())), t.elapsed())
}

/// `GET /hello.php` answered right before the front end's own timeout
/// gives up: the time it took. Else panics with `what`, the answer,
/// `context()` and the stack's diagnostics.
fn hello_in_time(s: &Stack, what: &str, context: impl FnOnce() -> String) -> Duration {
    let (answer, took) = timed_hello(s, PAST_FRONT_END);
    let right = matches!(&answer, Ok((200, text)) if *text == s.site.hello_line());
    assert!(
        right && took < FRONT_END_TIMEOUT,
        "{what}: {answer:?} after {took:?} (the front end gives up after \
         {FRONT_END_TIMEOUT:?})\n{}\n{}",
        context(),
        s.diagnostics()
    );
    took
}

// ---------------------------------------------------------------------------
// a) load
// ---------------------------------------------------------------------------

/// How long wrk runs.
const LOAD: Duration = Duration::from_secs(60);
/// wrk threads = connections: one connection per thread, so each
/// thread's Lua state (its burst schedule, its ids) is one connection's.
const LOAD_CONNECTIONS: usize = 2;
/// Times the reaper must have put the site to sleep (and traffic woken
/// it) for the run to prove anything.
const MIN_SLEEPS: usize = 5;

/// The traffic's rhythm, the same for every connection: bursts (requests
/// back to back, `(start, end)` in milliseconds from the reaper's first
/// pass, passes every 1000 ms) and quiet gaps of about 1 to 3 s. Each gap
/// ends at a different moment around the first pass that can find the
/// site idle for its 1 s timeout: from 250 ms before it (the site stays
/// awake) to 750 ms after (asleep, or going to sleep), sweeping that
/// second in steps of 370 ms, so that over a minute bursts start in every
/// phase of a sleep under way, its decision and its stop included. The
/// burst lengths come from a fixed seed: every run has the same rhythm.
fn rhythm(total: Duration) -> Vec<(u64, u64)> {
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = |lo: u64, hi: u64| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        lo + x % (hi - lo)
    };
    let mut out = Vec::new();
    // wrk starts a moment after the first pass.
    let mut start = 300;
    // Past wrk's end, so that no connection is ever told to wait out a
    // long last delay (wrk counts a wait longer than --timeout as one).
    for i in 0.. {
        if start >= total.as_millis() as u64 + 10_000 {
            break;
        }
        let end = start + next(400, 1200);
        out.push((start, end));
        let first_idle_pass = (end + 1000).div_ceil(1000) * 1000;
        start = first_idle_pass + (i * 370) % 1000 - 250;
    }
    out
}

/// The wrk script: each thread alternates POST and GET to `count.php`,
/// each with an id `<thread>-<n>` (header `X-Req-Id`, and a POST's body),
/// and sends only inside the [`rhythm`]'s bursts (`delay()`). It writes
/// `sent <id> <METHOD> <ms since t0>` for each request and `got <status>
/// <body on one line>` for each answer to `<dir>/requests-<thread>` (one
/// connection per thread: an answer is the previous request's), and the
/// main thread prints wrk's error counts as one `fleet-wrk …` line.
fn wrk_script(dir: &Path, t0_ms: u128, rhythm: &[(u64, u64)]) -> String {
    let windows: Vec<String> = rhythm.iter().map(|(a, b)| format!("{{{a},{b}}}")).collect();
    format!(
        r#"local ffi = require("ffi")
ffi.cdef[[
typedef struct {{ long tv_sec; long tv_usec; }} fleet_timeval;
int gettimeofday(fleet_timeval *tv, void *tz);
]]
local tv = ffi.new("fleet_timeval")
local function now_ms()
  ffi.C.gettimeofday(tv, nil)
  return tonumber(tv.tv_sec) * 1000 + math.floor(tonumber(tv.tv_usec) / 1000)
end
local T0 = {t0_ms}
local WINDOWS = {{{windows}}}
local DIR = "{dir}"
local next_tid = 0

function setup(thread)
  thread:set("tid", next_tid)
  next_tid = next_tid + 1
end

local n = 0
local out = nil

-- wrk calls the first thread's request() once more, right after its
-- init(), only to check the request it builds; that one is never sent.
local checking = false

function init(args)
  out = io.open(DIR .. "/requests-" .. tid, "w")
  checking = (tid == 0)
end

function delay()
  -- Threads a little apart inside a burst.
  local now = now_ms() - T0 - tid * 90
  for _, w in ipairs(WINDOWS) do
    if now < w[2] then
      if now >= w[1] then return 0 end
      return w[1] - now
    end
  end
  return 1000
end

function request()
  if checking then
    checking = false
    return wrk.format("GET", "/count.php", {{["X-Req-Id"] = "check"}}, nil)
  end
  n = n + 1
  local id = tid .. "-" .. n
  local method = "GET"
  local req
  if (n + tid) % 2 == 0 then
    method = "POST"
    req = wrk.format("POST", "/count.php", {{["X-Req-Id"] = id, ["Content-Type"] = "text/plain"}}, id)
  else
    req = wrk.format("GET", "/count.php?id=" .. id, {{["X-Req-Id"] = id}}, nil)
  end
  out:write("sent ", id, " ", method, " ", now_ms() - T0, "\n")
  out:flush()
  return req
end

function response(status, headers, body)
  local line = (body or ""):gsub("[\r\n]+", " ")
  out:write("got ", status, " ", line, "\n")
  out:flush()
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("fleet-wrk requests=%d connect=%d read=%d write=%d status=%d timeout=%d\n",
    summary.requests, e.connect, e.read, e.write, e.status, e.timeout))
end
"#,
        windows = windows.join(","),
        dir = dir.display(),
    )
}

/// wrk's `fleet-wrk key=value …` line, as a map.
fn wrk_counts(stdout: &str) -> BTreeMap<String, u64> {
    let line = stdout.lines().find_map(|l| l.strip_prefix("fleet-wrk "));
    line.unwrap_or_default()
        .split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .filter_map(|(k, v)| Some((k.to_owned(), v.parse().ok()?)))
        .collect()
}

/// One request wrk sent, and its answer if one came.
#[derive(Debug)]
struct Sent {
    id: String,
    method: String,
    /// Milliseconds after the reaper's first pass.
    at_ms: u64,
    /// Status and body (on one line).
    answer: Option<(u16, String)>,
}

impl Sent {
    fn ok(&self) -> bool {
        self.answer.as_ref().is_some_and(|(status, body)| {
            *status == 200 && body.trim() == format!("{} {}", self.id, self.method)
        })
    }
}

/// The requests of every wrk thread, from their `requests-<thread>` files.
fn requests_sent(dir: &Path) -> Vec<Sent> {
    let mut out: Vec<Sent> = Vec::new();
    for t in 0..LOAD_CONNECTIONS {
        let text = std::fs::read_to_string(dir.join(format!("requests-{t}"))).unwrap_or_default();
        let first = out.len();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("sent ") {
                let mut w = rest.split_whitespace();
                out.push(Sent {
                    id: w.next().unwrap_or_default().to_owned(),
                    method: w.next().unwrap_or_default().to_owned(),
                    at_ms: w.next().and_then(|v| v.parse().ok()).unwrap_or(0),
                    answer: None,
                });
            } else if let Some(rest) = line.strip_prefix("got ") {
                let (status, body) = rest.split_once(' ').unwrap_or((rest, ""));
                // One connection per thread: the answer is the last request's.
                if let Some(last) = out[first..].last_mut().filter(|s| s.answer.is_none()) {
                    last.answer = Some((status.parse().unwrap_or(0), body.to_owned()));
                }
            }
        }
    }
    out
}

/// Longest a request may take here: an answer later than this counts as
/// wrk's timeout error, and a request unanswered at the end that was sent
/// this long before is a hang (wrk counts neither by itself: it drops
/// requests still open when its duration ends).
const ANSWER_WITHIN: Duration = Duration::from_secs(10);

/// The load test of `mode`, the reaper putting the idle site to sleep
/// with `--action <action>` (`stop` or `pause`).
fn load(mode: Mode, action: &str) {
    require!(Docker, PhpFpm, Nginx, SocketActivate, Root, Wrk);
    let s = Stack::with_site(
        mode,
        TestSite::with_options(SiteOptions::default().data_dir()),
    );
    s.site.write_conf("1s");
    // Awake before the load (a cold start is not what is measured here).
    s.hello("first request");

    let dir = temp_dir("wrk");
    let reaping = Reaping::start(&s.site, &["--action", action]);
    let t0 = reaping.since;
    let t0_ms = t0
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("after 1970")
        .as_millis();
    let script = dir.path().join("load.lua");
    std::fs::write(&script, wrk_script(dir.path(), t0_ms, &rhythm(LOAD)))
        .expect("write wrk script");
    let n = LOAD_CONNECTIONS.to_string();
    let wrk = xtask::error::Cmd::new("wrk")
        .args(["-t", &n, "-c", &n, "--timeout"])
        .arg(format!("{}s", ANSWER_WITHIN.as_secs()))
        .arg("-d")
        .arg(format!("{}s", LOAD.as_secs()))
        .arg("-s")
        .arg(&script)
        .arg(format!("http://127.0.0.1:{}/", s.nginx.port()));
    let out = xtask::error::or_panic(wrk.output());
    let ended_ms = t0.elapsed().unwrap_or_default().as_millis() as u64;
    reaping.finish();
    let wrk_out = output_text(&out);
    let counts = wrk_counts(&wrk_out);
    let sent = requests_sent(dir.path());
    // Still served after the run.
    let (last, _) = timed_hello(&s, Duration::from_secs(10));

    let executed = s.site.count_lines();
    let mut runs: BTreeMap<&str, usize> = BTreeMap::new();
    for l in &executed {
        let id = l.split_whitespace().next().unwrap_or_default();
        *runs.entry(id).or_default() += 1;
    }
    let ok: Vec<&Sent> = sent.iter().filter(|r| r.ok()).collect();
    let bad: Vec<&Sent> = sent
        .iter()
        .filter(|r| r.answer.is_some() && !r.ok())
        .collect();
    let hung: Vec<&Sent> = sent
        .iter()
        .filter(|r| {
            r.answer.is_none()
                && ended_ms.saturating_sub(r.at_ms) > ANSWER_WITHIN.as_millis() as u64
        })
        .collect();
    let posts: Vec<&Sent> = ok.iter().copied().filter(|r| r.method == "POST").collect();
    let posts_not_once: Vec<(&str, usize)> = posts
        .iter()
        .map(|r| (r.id.as_str(), runs.get(r.id.as_str()).copied().unwrap_or(0)))
        .filter(|(_, n)| *n != 1)
        .collect();
    let twice: Vec<(&str, usize)> = runs.into_iter().filter(|(_, n)| *n > 1).collect();
    let sleeps = reaping.sleeps();
    // The waker's own count of the wakes that started or unpaused the
    // container (Docker's event history is too short for a whole suite).
    let wakes = s.activity().map_or(0, |a| a.wakes);
    let count = |key: &str| counts.get(key).copied().unwrap_or(0);
    let errors: u64 = ["connect", "read", "write", "timeout"]
        .map(count)
        .iter()
        .sum();

    let summary = format!(
        "{mode:?} mode, --action {action}: wrk {counts:?}; {} requests sent, {} answered right \
         ({} POSTs), {} wrong answers, {} hung; {} executions in count.log; the reaper put the \
         site to sleep {} times, the waker woke it {wakes} times",
        sent.len(),
        ok.len(),
        posts.len(),
        bad.len(),
        hung.len(),
        executed.len(),
        sleeps.len(),
    );
    note(&summary);
    let show = |v: &[&Sent]| format!("\n{:#?}", &v[..v.len().min(10)]);
    let mut failures = Vec::new();
    if counts.is_empty() {
        failures.push(format!("wrk printed no summary line (exit {})", out.status));
    }
    if count("status") > 0 || !bad.is_empty() {
        failures.push(format!(
            "{} wrong answers (wrk counted {} non-2xx):{}",
            bad.len(),
            count("status"),
            show(&bad)
        ));
    }
    if errors > 0 {
        failures.push(format!(
            "{errors} socket errors or answers slower than {ANSWER_WITHIN:?} (connect/read/write/timeout)"
        ));
    }
    if !hung.is_empty() {
        failures.push(format!(
            "{} requests never answered (sent more than {ANSWER_WITHIN:?} before wrk ended at \
             {:.2} s):{}",
            hung.len(),
            ended_ms as f64 / 1e3,
            show(&hung)
        ));
    }
    for (what, v) in [
        ("answered POSTs did not run exactly once", &posts_not_once),
        ("requests ran more than once", &twice),
    ] {
        if !v.is_empty() {
            let first = &v[..v.len().min(20)];
            failures.push(format!("{} {what} (id, runs): {first:?}", v.len()));
        }
    }
    if ok.len() < 50 || posts.is_empty() {
        failures.push(format!(
            "too little traffic to prove anything: {} answered right, {} POSTs",
            ok.len(),
            posts.len()
        ));
    }
    if sleeps.len() < MIN_SLEEPS || wakes < MIN_SLEEPS as u64 {
        failures.push(format!(
            "the reaper must put the site to sleep and traffic wake it at least {MIN_SLEEPS} \
             times: {} sleeps, {wakes} wakes",
            sleeps.len()
        ));
    }
    if !matches!(&last, Ok((200, text)) if *text == s.site.hello_line()) {
        failures.push(format!("request after the run (10 s to answer): {last:?}"));
    }
    assert!(
        failures.is_empty(),
        "{summary}\nFAILED:\n  {}\n--- wrk:\n{wrk_out}\n{}\n{}",
        failures.join("\n  "),
        reaping.report(),
        s.diagnostics()
    );
}

#[test]
fn load_direct_stop() {
    load(Mode::Direct, "stop");
}

#[test]
fn load_direct_pause() {
    load(Mode::Direct, "pause");
}

#[test]
fn load_proxy_stop() {
    load(Mode::Proxy, "stop");
}

#[test]
fn load_proxy_pause() {
    load(Mode::Proxy, "pause");
}

// ---------------------------------------------------------------------------
// b) a busy site on a stock pool
// ---------------------------------------------------------------------------

#[test]
fn direct_stock_pool_busy_site_is_never_stopped_then_idle_is() {
    require!(Docker, PhpFpm, Nginx, SocketActivate, Root);
    // A stock pool: no access log, so the container's log shows no request.
    let s = Stack::with_site(
        Mode::Direct,
        TestSite::with_options(SiteOptions::default().access_log(false)),
    );
    s.site.write_conf("2s");
    s.hello("cold request");
    s.hello("warm request");
    assert!(
        s.site.access_lines().is_empty(),
        "a stock pool logs no request:\n{}",
        s.site.logs()
    );
    let awake = fingerprint(&s.site);
    assert!(awake.starts_with("running "), "{awake}");
    let reaping = Reaping::start(&s.site, &["--action", "stop"]);
    let why = Lazy(|| format!("{}\n{}", reaping.report(), s.diagnostics()));

    // Busy: one request a second, straight to php-fpm (direct mode's warm
    // path), for three times the timeout.
    let busy_since = Instant::now();
    let mut tick = busy_since;
    for sent in 0..6 {
        assert_eq!(
            fingerprint(&s.site),
            awake,
            "request {sent}: a busy site was put to sleep\n{why}"
        );
        s.hello(&format!("busy request {sent}"));
        tick += Duration::from_secs(1);
        std::thread::sleep(tick.saturating_duration_since(Instant::now()));
    }
    let busy = busy_since.elapsed();
    let interruptions = reaping.sleeps();
    assert!(
        interruptions.is_empty() && fingerprint(&s.site) == awake,
        "the busy site was stopped or paused ({} times):\n{why}",
        interruptions.len()
    );

    // Idle now: stopped within a few passes after the timeout.
    let idle_since = Instant::now();
    let stopped = wait_until(Duration::from_secs(2 + 6), || s.site.state() == "exited");
    reaping.finish();
    assert!(
        stopped && reaping.sleeps().iter().any(|(_, a)| a == "stopped"),
        "idle for {:?}, still {}:\n{why}",
        idle_since.elapsed(),
        s.site.state()
    );
    note!(
        "6 requests over {busy:.1?} kept a stock-pool site awake; idle, it was stopped after {:?}",
        idle_since.elapsed()
    );
}

// ---------------------------------------------------------------------------
// c) direct mode, paused
// ---------------------------------------------------------------------------

/// A paused site in direct mode is answered through the waker by an
/// unpause: the same container run (not a stop and start), php-fpm's socket
/// put back, and later requests straight to php-fpm again. How fast is a
/// benchmark's question (`cargo xtask bench sleep`, BENCHMARKS.md: the
/// 100 ms target); here each round's time and the waker's own share of it
/// are printed, so a slow CI run says where its time went.
#[test]
fn direct_pause_is_answered_through_the_waker_by_an_unpause() {
    require!(Docker, PhpFpm, Nginx, SocketActivate, Root);
    let s = Stack::new(Mode::Direct);
    let diag = Lazy(|| s.diagnostics());
    s.site.write_conf("1s");
    let pause = reaper::over(&s.site).args(["--no-heal", "--action", "pause"]);
    s.hello("cold request");
    let mut times = Vec::new();
    let mut log = String::new();
    for round in 0..5 {
        // Passes once a second until the reaper paused the site (the
        // timeout is 1 s since the last request).
        let paused = pause.passes(Duration::from_secs(20), Duration::from_secs(1), |run| {
            log.push_str(&format!("round {round}: {run}\n"));
            Ok(s.site.state() == "paused")
        });
        paused.unwrap_or_else(|e| {
            panic!(
                "round {round}: the reaper never paused the site: {}\n{log}\n{diag}",
                xtask::error::chain(&e)
            )
        });

        let fallbacks = s.fallbacks();
        let run_before = fingerprint(&s.site);
        let wakes_before = s.activity().map_or(0, |a| a.wakes);
        let what = format!("round {round}: from a paused site");
        let took = hello_in_time(&s, &what, || log.clone());
        assert!(
            s.fallbacks() > fallbacks,
            "round {round}: nginx did not fall back to the waker\n{diag}"
        );
        // An unpause: the run the reaper paused goes on, and the waker
        // counted one wake for it.
        assert_eq!(
            fingerprint(&s.site),
            run_before.replace("paused", "running"),
            "round {round}: not an unpause of the paused run\n{diag}"
        );
        let after = s.activity_until(format!("round {round}: no wake counted"), |a| {
            a.wakes > wakes_before
        });
        assert_eq!(
            after.wakes,
            wakes_before + 1,
            "round {round}: the waker did not count one wake\n{diag}"
        );
        times.push((took, after.last_wake_ms));

        // php-fpm's socket is back: the next request goes straight to
        // php-fpm, not through the waker.
        let fpm = s.site.fpm_socket();
        assert!(
            wait_until(Duration::from_secs(5), || UnixStream::connect(&fpm).is_ok()),
            "round {round}: php-fpm.sock does not accept after the wake\n{diag}"
        );
        s.activity_until(
            format!("round {round}: the waker's request never ended"),
            |a| a.open == 0,
        );
        let fallbacks = s.fallbacks();
        s.hello(&format!("round {round}: the request after the wake"));
        assert_eq!(
            s.fallbacks(),
            fallbacks,
            "round {round}: the request after the wake fell back to the waker\n{diag}"
        );
    }
    let mut answered: Vec<Duration> = times.iter().map(|(t, _)| *t).collect();
    answered.sort();
    let med = answered[answered.len() / 2];
    note!(
        "direct mode, paused: answered in {med:?} (median of 5); per round (answered, the \
         waker's unpause-to-accepting ms): {times:?}"
    );
}

// ---------------------------------------------------------------------------
// d) tiered sleep
// ---------------------------------------------------------------------------

#[test]
fn tiered_sleep_pauses_then_stops_and_wakes_from_both() {
    require!(Docker, PhpFpm, Nginx, SocketActivate, Root);
    let s = Stack::new(Mode::Direct);
    s.site.write_conf_tiered("2s", "5s");
    let reaping = Reaping::start(&s.site, &["--action", "pause"]);
    let check = |ok: bool, what: String| {
        assert!(ok, "{what}\n{}\n{}", reaping.report(), s.diagnostics());
    };
    let reaches = |state: &str, within: u64, what: &str| {
        let ok = wait_until(Duration::from_secs(within), || s.site.state() == state);
        check(ok, format!("{what}: {}", s.site.state()));
    };

    // Awake, then idle: paused after ≥ 2 s, stopped after ≥ 5 s (measured
    // from before the last request was sent: its end is later still).
    let sent = SystemTime::now();
    s.hello("cold request");
    // The container's new state shows before the pass that made it ends
    // and its plan is read: wait for that plan (bounded).
    let acted_after = |what: &str, secs: u64| {
        let first = || {
            let mut sleeps = reaping.sleeps().into_iter();
            sleeps.find_map(|(t, a)| (a == what && t >= sent).then_some(t))
        };
        wait_until(Duration::from_secs(10), || first().is_some());
        let at = first();
        let late = at.is_some_and(|t| t >= sent + Duration::from_secs(secs));
        check(late, format!("{what} too early: {at:?}"));
    };
    reaches("paused", 2 + 5, "not paused");
    acted_after("paused", 2);
    let line_2 = "paused but never stopped (line 2 of the conf: stop after 5 s)";
    reaches("exited", 5 + 5, line_2);
    acted_after("stopped", 5);

    // A request wakes it from stopped; idle again until paused, one wakes
    // it from paused.
    let wake = |from: &str| {
        let took = hello_in_time(&s, &format!("from {from}"), || reaping.report());
        assert_eq!(s.site.state(), "running", "woken from {from}");
        took
    };
    let took = wake("stopped");
    reaches("paused", 2 + 5, "not paused again");
    let took_paused = wake("paused");
    reaping.finish();
    note!(
        "tiered: paused then stopped; woken from stopped in {took:?}, from paused in {took_paused:?}"
    );
}

/// A site paused by hand (or by an older reaper) has php-fpm's socket in
/// place, where direct-mode connections wait in the frozen backlog: tiered
/// sleep never stops it (a stop would cut them) and says why; unpaused, the
/// next passes drain it and stop it.
#[test]
fn a_site_paused_in_place_is_not_stopped_until_unpaused() {
    require!(Docker, PhpFpm, Root);
    let site = TestSite::new();
    site.write_conf_tiered("1s", "1s");
    site.start();
    site.pause();
    let fpm = site.fpm_socket();
    let entry = reaper::over(&site).reap_until(&site, "skipped", Duration::from_secs(15));
    let reason = entry["reason"].as_str().unwrap_or_default().to_owned();
    assert!(
        reason.contains("socket in place"),
        "the skip names why: {entry}"
    );
    assert_eq!(site.state(), "paused", "not stopped: {entry}");
    assert!(fpm.exists(), "php-fpm's socket left where it was");
    site.unpause();
    let entry = reaper::over(&site).reap_until(&site, "stopped", Duration::from_secs(20));
    assert_eq!(site.state(), "exited", "{entry}");
    note!("paused in place: skipped ({reason}); unpaused: stopped");
}
