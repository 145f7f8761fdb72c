//! The verdict for one site: pure, from what the pass has read.

use std::time::{Duration, SystemTime};

use crate::docker::ContainerState;
use crate::state::Activity;

/// What the waker's state file said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StateInput {
    /// No state file: no waker has served the site since boot.
    Missing,
    /// The file parsed.
    Read(Activity),
    /// The file exists but cannot be read or parsed (the error text).
    Unreadable(String),
}

/// What the log check found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogInput {
    /// Not asked (yet).
    NotChecked,
    /// Docker answered.
    Checked {
        /// Some line was logged at or after the cutoff.
        after_cutoff: bool,
        /// The timestamp of the line read, if any.
        line_at: Option<SystemTime>,
    },
    /// Docker could not give the log (the error text).
    Failed(String),
}

/// What php-fpm's status page said this pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FpmInput {
    /// Not asked: the container is not running.
    NotChecked,
    /// The page answered. The reaper's own request is not counted.
    Read {
        /// Requests being served.
        busy: u64,
        /// Connections waiting in php-fpm's accept queue.
        queued: u64,
        /// No earlier reading of this container run was kept: when its
        /// traffic came is unknown, so it is dated now.
        first: bool,
    },
    /// No status page (the reason): in direct mode nginx's requests then
    /// leave no trace the reaper can see.
    Unavailable(String),
}

/// Everything [`decide`] looks at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inputs {
    pub now: SystemTime,
    /// The site's idle timeout (its conf file).
    pub timeout: Duration,
    pub container: ContainerState,
    /// When Docker last started the container.
    pub started_at: Option<SystemTime>,
    pub state: StateInput,
    /// Whether the process named by the state file's `pid` is alive; `None`
    /// when there is no pid or it cannot be told.
    pub waker_alive: Option<bool>,
    pub log: LogInput,
    pub fpm: FpmInput,
    /// The last time php-fpm's accepted-connections counter was seen to
    /// grow by more than the reaper's own requests (kept across passes).
    pub fpm_traffic: Option<SystemTime>,
    /// The second timeout of tiered sleep: paused first, stopped after
    /// this long idle.
    pub stop_after: Option<Duration>,
    /// nginx talks only to the waker (`--proxy-only`): without a status
    /// page the waker's state is a complete signal.
    pub proxy_only: bool,
}

impl Inputs {
    /// The cutoff of the log check: `now - timeout`.
    pub fn cutoff(&self) -> SystemTime {
        self.now
            .checked_sub(self.timeout)
            .unwrap_or(SystemTime::UNIX_EPOCH)
    }

    /// The latest activity known from the waker, php-fpm's counter and the
    /// log.
    pub fn last_activity(&self) -> Option<SystemTime> {
        let waker = match &self.state {
            StateInput::Read(a) => a.last_activity(),
            _ => None,
        };
        let log = match &self.log {
            LogInput::Checked { line_at, .. } => *line_at,
            _ => None,
        };
        [waker, log, self.fpm_traffic].into_iter().flatten().max()
    }

    /// How long the site has been quiet: since its last activity or its
    /// start, whichever is later. `None` when neither is known.
    fn idle_for(&self) -> Option<Duration> {
        let since = [self.last_activity(), self.started_at]
            .into_iter()
            .flatten()
            .max()?;
        Some(self.now.duration_since(since).unwrap_or_default())
    }

    /// Whether an idle site is stopped rather than paused: always from
    /// paused; with a second timeout, once idle that long; otherwise what
    /// `--action` says (`configured_stop`).
    pub fn stop_not_pause(&self, configured_stop: bool) -> bool {
        if self.container == ContainerState::Paused {
            return true;
        }
        match self.stop_after {
            None => configured_stop,
            Some(s) => self.idle_for().is_some_and(|d| d >= s),
        }
    }
}

/// The reaper's verdict on a site.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    /// The container is not running: nothing to do.
    NotRunning,
    /// Requests are in flight through the waker (for an older waker:
    /// connections are open).
    Busy,
    /// The waker saw a connection within the timeout.
    ActiveWaker,
    /// The container logged something within the timeout.
    ActiveLogs,
    /// php-fpm accepted connections (not the reaper's) within the timeout.
    ActiveFpm,
    /// Running with no status page: in direct mode its traffic cannot be
    /// seen, so it is never put to sleep.
    NoSignal,
    /// The container started less than the timeout ago.
    Young,
    /// No activity for the timeout: stop (or pause) it.
    Idle,
    /// Something could not be read; never acted on.
    Unknown,
}

impl Verdict {
    /// The word used in the plan output.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::NotRunning => "not-running",
            Verdict::Busy => "busy",
            Verdict::ActiveWaker => "active-waker",
            Verdict::ActiveLogs => "active-logs",
            Verdict::ActiveFpm => "active-fpm",
            Verdict::NoSignal => "no-signal",
            Verdict::Young => "young",
            Verdict::Idle => "idle",
            Verdict::Unknown => "unknown",
        }
    }
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A verdict and the human reason for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub verdict: Verdict,
    pub reason: String,
}

fn decision(verdict: Verdict, reason: String) -> Decision {
    Decision { verdict, reason }
}

/// A duration for people: tenths of a second below a minute, whole seconds
/// above.
pub fn human(d: Duration) -> String {
    if d < Duration::from_secs(60) {
        format!("{:.1}s", d.as_secs_f64())
    } else {
        humantime::format_duration(Duration::from_secs(d.as_secs())).to_string()
    }
}

/// How long ago `t` was, for people ("3.2s ago", "in the future").
pub fn ago(now: SystemTime, t: SystemTime) -> String {
    match now.duration_since(t) {
        Ok(d) => format!("{} ago", human(d)),
        Err(_) => "in the future".to_owned(),
    }
}

/// Within the timeout: less than `timeout` ago, or in the future (a clock
/// step; counted as recent, which is the safe side).
fn within(now: SystemTime, t: SystemTime, timeout: Duration) -> bool {
    match now.duration_since(t) {
        Ok(d) => d < timeout,
        Err(_) => true,
    }
}

/// "2 requests in flight" (a waker that counts requests) or "2 connections
/// open" (an older waker, whose `open` counted connections).
fn in_flight(a: &Activity) -> String {
    let s = if a.open == 1 { "" } else { "s" };
    if a.connections.is_some() {
        format!("{} request{s} in flight", a.open)
    } else {
        format!("{} connection{s} open", a.open)
    }
}

/// The verdict when it does not need the log check; `None` when it does.
/// The order is the fail-safe one: anything unreadable or active wins over
/// idleness, and the (only costly) log check comes last.
pub fn decide_without_logs(i: &Inputs) -> Option<Decision> {
    let timeout = human(i.timeout);
    if i.container == ContainerState::Paused
        && let Some(stop_after) = i.stop_after
    {
        return Some(decide_paused(i, stop_after));
    }
    if i.container != ContainerState::Running {
        return Some(decision(
            Verdict::NotRunning,
            format!("container is {}: nothing to do", i.container),
        ));
    }
    match &i.state {
        StateInput::Unreadable(e) => {
            return Some(decision(
                Verdict::Unknown,
                format!("waker state unreadable, so never stopped: {e}"),
            ));
        }
        StateInput::Read(a) => {
            let waker_gone = i.waker_alive == Some(false);
            if a.open > 0 && !waker_gone {
                return Some(decision(
                    Verdict::Busy,
                    format!("{} through the waker", in_flight(a)),
                ));
            }
            if let Some(t) = a.last_activity() {
                if within(i.now, t, i.timeout) {
                    let what = if a.connections.is_some() {
                        "a request"
                    } else {
                        "a connection"
                    };
                    return Some(decision(
                        Verdict::ActiveWaker,
                        format!(
                            "waker served {what} {}, within the timeout of {timeout}",
                            ago(i.now, t)
                        ),
                    ));
                }
            }
        }
        StateInput::Missing => {}
    }
    if let FpmInput::Read { busy, queued, .. } = i.fpm
        && (busy > 0 || queued > 0)
    {
        let s = if busy == 1 { "" } else { "s" };
        return Some(decision(
            Verdict::Busy,
            format!("php-fpm is serving {busy} request{s}, {queued} queued"),
        ));
    }
    if let Some(t) = i.fpm_traffic
        && within(i.now, t, i.timeout)
    {
        let reason = if matches!(i.fpm, FpmInput::Read { first: true, .. }) {
            "first reading of php-fpm's connection counter: when its connections came is \
             unknown, so they count as now"
                .to_owned()
        } else {
            format!(
                "php-fpm accepted connections {}, within the timeout of {timeout}",
                ago(i.now, t)
            )
        };
        return Some(decision(Verdict::ActiveFpm, reason));
    }
    match i.started_at {
        None => Some(decision(
            Verdict::Unknown,
            "container is running but Docker gives no start time".to_owned(),
        )),
        Some(s) if within(i.now, s, i.timeout) => Some(decision(
            Verdict::Young,
            format!(
                "container started {}, less than the timeout of {timeout}",
                ago(i.now, s)
            ),
        )),
        // php-fpm's counter saw every connection it accepted: no log check
        // (an access log would also hold the reaper's own status requests).
        Some(_) if matches!(i.fpm, FpmInput::Read { .. }) => Some(decision(
            Verdict::Idle,
            idle_reason(
                i,
                &format!("no request and no connection to php-fpm for {timeout}"),
            ),
        )),
        Some(_) => None,
    }
}

/// The idle reason, with what the waker's state adds to it.
fn idle_reason(i: &Inputs, head: &str) -> String {
    let mut reason = head.to_owned();
    if let StateInput::Read(Activity {
        connections: Some(n @ 1..),
        ..
    }) = &i.state
    {
        // Pooled by the front end; the waker reconnects (and so wakes the
        // site) when one carries the next request.
        let s = if *n == 1 { "" } else { "s" };
        reason.push_str(&format!(
            " ({n} idle connection{s} kept open by the front end)"
        ));
    }
    if let (StateInput::Read(a), Some(false)) = (&i.state, i.waker_alive) {
        if a.open > 0 {
            let pid = a.pid.map_or_else(String::new, |p| format!(" {p}"));
            reason.push_str(&format!(
                " (state file says {}, but its waker{pid} is gone)",
                in_flight(a)
            ));
        }
    }
    reason
}

/// A paused site under tiered sleep: stopped once idle for `stop_after`.
fn decide_paused(i: &Inputs, stop_after: Duration) -> Decision {
    if let StateInput::Read(a) = &i.state
        && a.open > 0
        && i.waker_alive != Some(false)
    {
        return decision(
            Verdict::Busy,
            format!("paused, and {} through the waker", in_flight(a)),
        );
    }
    if let StateInput::Unreadable(e) = &i.state {
        return decision(
            Verdict::Unknown,
            format!("waker state unreadable, so never stopped: {e}"),
        );
    }
    match i.idle_for() {
        Some(d) if d >= stop_after => decision(
            Verdict::Idle,
            format!(
                "paused and idle for {}, at least the stop timeout of {}",
                human(d),
                human(stop_after)
            ),
        ),
        Some(d) => decision(
            Verdict::NotRunning,
            format!(
                "paused, idle for {}; stopped after {}",
                human(d),
                human(stop_after)
            ),
        ),
        None => decision(
            Verdict::Unknown,
            "paused, but neither its last activity nor its start time is known".to_owned(),
        ),
    }
}

/// True when [`decide`] needs the log check to give a verdict.
pub fn needs_log_check(i: &Inputs) -> bool {
    decide_without_logs(i).is_none()
}

/// The verdict on a site, with its reason. Pure.
pub fn decide(i: &Inputs) -> Decision {
    if let Some(d) = decide_without_logs(i) {
        return d;
    }
    let timeout = human(i.timeout);
    match &i.log {
        LogInput::NotChecked => decision(
            Verdict::Unknown,
            "container log not checked, so never stopped".to_owned(),
        ),
        LogInput::Failed(e) => decision(
            Verdict::Unknown,
            format!("container log unreadable, so never stopped: {e}"),
        ),
        LogInput::Checked {
            after_cutoff: true,
            line_at,
        } => {
            let when =
                line_at.map_or_else(|| "at an unreadable time".to_owned(), |t| ago(i.now, t));
            decision(
                Verdict::ActiveLogs,
                format!("container logged output {when}, within the timeout of {timeout}"),
            )
        }
        LogInput::Checked {
            after_cutoff: false,
            ..
        } if !i.proxy_only => {
            let why = match &i.fpm {
                FpmInput::Unavailable(e) => e.as_str(),
                _ => "not asked",
            };
            decision(
                Verdict::NoSignal,
                format!(
                    "no request through the waker and no log output for {timeout}, but php-fpm's \
                     status page gives nothing ({why}): in direct mode nginx's requests would go \
                     unseen, so never put to sleep. Fix: add `pm.status_path = /status` to the \
                     pool (or run with --proxy-only when nginx only talks to the waker)"
                ),
            )
        }
        LogInput::Checked {
            after_cutoff: false,
            ..
        } => decision(
            Verdict::Idle,
            idle_reason(i, &format!("no request and no log output for {timeout}")),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    const NOW: u64 = 1_795_462_970;

    fn t(secs_before_now: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(NOW - secs_before_now)
    }

    fn idle_inputs() -> Inputs {
        Inputs {
            now: t(0),
            timeout: Duration::from_secs(1200),
            container: ContainerState::Running,
            started_at: Some(t(86_400)),
            state: StateInput::Read(Activity {
                pid: Some(10),
                open: 0,
                connections: None,
                last_start: Some(t(3600)),
                last_end: Some(t(3599)),
                ..Activity::default()
            }),
            waker_alive: Some(true),
            log: LogInput::Checked {
                after_cutoff: false,
                line_at: None,
            },
            // The log path: no status page, nginx only through the waker.
            fpm: FpmInput::Unavailable("no status page".into()),
            fpm_traffic: None,
            stop_after: None,
            proxy_only: true,
        }
    }

    fn verdict(i: &Inputs) -> Verdict {
        decide(i).verdict
    }

    #[test]
    fn idle_when_nothing_happened() {
        let i = idle_inputs();
        assert!(needs_log_check(&i));
        let d = decide(&i);
        assert_eq!(d.verdict, Verdict::Idle, "{d:?}");
        assert!(d.reason.contains("20m"), "{}", d.reason);
        assert_eq!(i.cutoff(), t(1200));
        assert_eq!(i.last_activity(), Some(t(3599)));
        // No state file at all is not a reason to keep it.
        let i = Inputs {
            state: StateInput::Missing,
            waker_alive: None,
            ..idle_inputs()
        };
        assert_eq!(verdict(&i), Verdict::Idle);
    }

    #[test]
    fn not_running_wins() {
        for st in [
            ContainerState::Exited,
            ContainerState::Paused,
            ContainerState::Created,
            ContainerState::Restarting,
            ContainerState::Dead,
            ContainerState::Removing,
            ContainerState::Stopping,
            ContainerState::Unknown,
        ] {
            let i = Inputs {
                container: st,
                state: StateInput::Unreadable("x".into()),
                ..idle_inputs()
            };
            let d = decide(&i);
            assert_eq!(d.verdict, Verdict::NotRunning, "{st}");
            assert!(d.reason.contains(st.as_str()), "{}", d.reason);
            assert!(!needs_log_check(&i));
        }
    }

    #[test]
    fn unreadable_state_is_unknown_never_idle() {
        let i = Inputs {
            state: StateInput::Unreadable("state file /x is a symlink".into()),
            ..idle_inputs()
        };
        let d = decide(&i);
        assert_eq!(d.verdict, Verdict::Unknown);
        assert!(d.reason.contains("symlink"), "{}", d.reason);
        assert!(!needs_log_check(&i));
    }

    #[test]
    fn busy_while_connections_are_open() {
        let mut i = idle_inputs();
        i.state = StateInput::Read(Activity {
            pid: Some(10),
            open: 2,
            connections: None,
            // Even a connection that started long ago and is still open.
            last_start: Some(t(7200)),
            last_end: None,
            ..Activity::default()
        });
        let d = decide(&i);
        assert_eq!(d.verdict, Verdict::Busy);
        assert!(d.reason.contains("2 connections"), "{}", d.reason);
        // Waker liveness unknown: still busy (fail safe).
        i.waker_alive = None;
        assert_eq!(verdict(&i), Verdict::Busy);
        // The waker that wrote the file is gone: its count is stale (its
        // sockets died with it), so the site is judged on the rest.
        i.waker_alive = Some(false);
        let d = decide(&i);
        assert_eq!(d.verdict, Verdict::Idle);
        assert!(d.reason.contains("gone"), "{}", d.reason);
    }

    /// A waker that counts requests: requests in flight are busy, idle
    /// connections pooled by the front end are not.
    #[test]
    fn requests_not_pooled_connections_keep_a_site_busy() {
        let mut i = idle_inputs();
        i.state = StateInput::Read(Activity {
            pid: Some(10),
            open: 1,
            connections: Some(8),
            last_start: Some(t(7200)),
            last_end: Some(t(7300)),
            ..Activity::default()
        });
        let d = decide(&i);
        assert_eq!(d.verdict, Verdict::Busy);
        assert!(d.reason.contains("1 request in flight"), "{}", d.reason);
        i.state = StateInput::Read(Activity {
            pid: Some(10),
            open: 0,
            connections: Some(8),
            last_start: Some(t(3600)),
            last_end: Some(t(3599)),
            ..Activity::default()
        });
        let d = decide(&i);
        assert_eq!(d.verdict, Verdict::Idle, "{d:?}");
        assert!(
            d.reason
                .contains("8 idle connections kept open by the front end"),
            "{}",
            d.reason
        );
        i.state = StateInput::Read(Activity {
            pid: Some(10),
            open: 0,
            connections: Some(1),
            last_start: Some(t(100)),
            last_end: Some(t(99)),
            ..Activity::default()
        });
        let d = decide(&i);
        assert_eq!(d.verdict, Verdict::ActiveWaker);
        assert!(d.reason.contains("served a request"), "{}", d.reason);
    }

    #[test]
    fn active_waker_within_the_timeout() {
        let mut i = idle_inputs();
        i.state = StateInput::Read(Activity {
            pid: None,
            open: 0,
            connections: None,
            last_start: Some(t(1300)),
            last_end: Some(t(1199)),
            ..Activity::default()
        });
        let d = decide(&i);
        assert_eq!(d.verdict, Verdict::ActiveWaker);
        assert!(d.reason.contains("19m 59s ago"), "{}", d.reason);
        assert!(!needs_log_check(&i));
        // Exactly the timeout ago is no longer within it.
        i.state = StateInput::Read(Activity {
            pid: None,
            open: 0,
            connections: None,
            last_start: Some(t(1200)),
            last_end: None,
            ..Activity::default()
        });
        assert_eq!(verdict(&i), Verdict::Idle);
        // A time in the future (clock stepped back) counts as active.
        i.state = StateInput::Read(Activity {
            pid: None,
            open: 0,
            connections: None,
            last_start: Some(i.now + Duration::from_secs(5)),
            last_end: None,
            ..Activity::default()
        });
        let d = decide(&i);
        assert_eq!(d.verdict, Verdict::ActiveWaker);
        assert!(d.reason.contains("future"), "{}", d.reason);
    }

    #[test]
    fn young_containers_are_left_alone() {
        let mut i = idle_inputs();
        i.state = StateInput::Missing;
        i.started_at = Some(t(10));
        let d = decide(&i);
        assert_eq!(d.verdict, Verdict::Young);
        assert!(d.reason.contains("10.0s ago"), "{}", d.reason);
        assert!(!needs_log_check(&i), "young needs no log check");
        i.started_at = None;
        assert_eq!(verdict(&i), Verdict::Unknown);
        i.started_at = Some(i.now + Duration::from_secs(1));
        assert_eq!(verdict(&i), Verdict::Young);
    }

    #[test]
    fn active_logs() {
        let mut i = idle_inputs();
        i.log = LogInput::Checked {
            after_cutoff: true,
            line_at: Some(t(3)),
        };
        let d = decide(&i);
        assert_eq!(d.verdict, Verdict::ActiveLogs);
        assert!(d.reason.contains("3.0s ago"), "{}", d.reason);
        assert_eq!(i.last_activity(), Some(t(3)));
        i.log = LogInput::Checked {
            after_cutoff: true,
            line_at: None,
        };
        assert_eq!(verdict(&i), Verdict::ActiveLogs);
    }

    #[test]
    fn log_problems_are_unknown() {
        let mut i = idle_inputs();
        i.log = LogInput::Failed("Docker could not read the logs".into());
        let d = decide(&i);
        assert_eq!(d.verdict, Verdict::Unknown);
        assert!(d.reason.contains("could not read"), "{}", d.reason);
        i.log = LogInput::NotChecked;
        assert_eq!(verdict(&i), Verdict::Unknown);
    }

    #[test]
    fn every_verdict_has_a_reason() {
        let cases = [
            Inputs {
                container: ContainerState::Exited,
                ..idle_inputs()
            },
            Inputs {
                state: StateInput::Unreadable("e".into()),
                ..idle_inputs()
            },
            idle_inputs(),
        ];
        for i in cases {
            assert!(!decide(&i).reason.is_empty());
        }
    }

    #[test]
    fn formats_durations() {
        assert_eq!(human(Duration::from_millis(1234)), "1.2s");
        assert_eq!(human(Duration::from_secs(90)), "1m 30s");
        assert_eq!(human(Duration::from_millis(5_400_500)), "1h 30m");
        assert_eq!(ago(t(5), t(7)), "2.0s ago");
        assert_eq!(ago(t(7), t(5)), "in the future");
    }

    #[test]
    fn php_fpm_status_is_a_signal_of_its_own() {
        let mut i = idle_inputs();
        i.fpm = FpmInput::Read {
            busy: 2,
            queued: 1,
            first: false,
        };
        let d = decide(&i);
        assert_eq!(d.verdict, Verdict::Busy);
        assert!(d.reason.contains("2 requests, 1 queued"), "{}", d.reason);
        i.fpm = FpmInput::Read {
            busy: 0,
            queued: 0,
            first: false,
        };
        i.fpm_traffic = Some(t(30));
        let d = decide(&i);
        assert_eq!(d.verdict, Verdict::ActiveFpm);
        assert!(d.reason.contains("30.0s ago"), "{}", d.reason);
        i.fpm_traffic = Some(t(1200));
        assert!(!needs_log_check(&i), "the counter is the signal");
        let d = decide(&i);
        assert_eq!(d.verdict, Verdict::Idle);
        assert!(
            d.reason.contains("no connection to php-fpm"),
            "{}",
            d.reason
        );
        assert_eq!(i.last_activity(), Some(t(1200)));
    }

    #[test]
    fn no_status_page_is_no_signal_unless_proxy_only() {
        let mut i = idle_inputs();
        i.proxy_only = false;
        i.fpm = FpmInput::Unavailable("404 File not found.".into());
        let d = decide(&i);
        assert_eq!(d.verdict, Verdict::NoSignal);
        assert!(
            d.reason.contains("pm.status_path"),
            "names the fix: {}",
            d.reason
        );
        assert!(d.reason.contains("404"), "{}", d.reason);
        // Logs still count as activity.
        i.log = LogInput::Checked {
            after_cutoff: true,
            line_at: Some(t(5)),
        };
        assert_eq!(verdict(&i), Verdict::ActiveLogs);
        i.log = LogInput::Checked {
            after_cutoff: false,
            line_at: None,
        };
        i.proxy_only = true;
        assert_eq!(verdict(&i), Verdict::Idle);
    }

    #[test]
    fn tiered_sleep_pauses_then_stops() {
        let mut i = idle_inputs();
        i.timeout = Duration::from_secs(60);
        i.stop_after = Some(Duration::from_secs(7200));
        // Idle an hour: past the timeout, not past the stop timeout.
        assert_eq!(verdict(&i), Verdict::Idle);
        assert!(
            !i.stop_not_pause(true),
            "paused first, whatever --action says"
        );
        i.container = ContainerState::Paused;
        let d = decide(&i);
        assert_eq!(d.verdict, Verdict::NotRunning, "{}", d.reason);
        assert!(d.reason.contains("stopped after 2h"), "{}", d.reason);
        i.now = t(0) + Duration::from_secs(3700);
        assert_eq!(verdict(&i), Verdict::Idle);
        assert!(i.stop_not_pause(false));
        // A request through the waker to a paused site is a wake under way.
        i.state = StateInput::Read(Activity {
            open: 1,
            ..Activity::default()
        });
        assert_eq!(verdict(&i), Verdict::Busy);
        // Without a second timeout a paused site is left alone.
        i.stop_after = None;
        assert_eq!(verdict(&i), Verdict::NotRunning);
        // Running and idle past the stop timeout: straight to a stop.
        let mut r = idle_inputs();
        r.stop_after = Some(Duration::from_secs(1800));
        assert!(r.stop_not_pause(false));
    }
}
