//! [`TestSite`]: a site with its own directories and a real `<site>.fpm` container.

use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Once;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use fleet_core::{Layout, Site};

use super::{docker, docker_ok, wait_until};

/// PHP scripts put into every test site's docroot (`/srv/www` in the container).
pub const SCRIPTS: &[(&str, &str)] = &[
    (
        "hello.php",
        "<?php\nheader('Content-Type: text/plain');\necho 'hello from ', getenv('FLEET_SITE'), \"\\n\";\n",
    ),
    (
        "echo.php",
        "<?php\nheader('Content-Type: application/octet-stream');\nheader('X-Method: ' . $_SERVER['REQUEST_METHOD']);\necho file_get_contents('php://input');\n",
    ),
    (
        "sleep.php",
        "<?php\nheader('Content-Type: text/plain');\n$s = (float)($_GET['s'] ?? 1);\nusleep((int)($s * 1000000));\necho 'slept ', $s, \"\\n\";\n",
    ),
    (
        "big.php",
        "<?php\nheader('Content-Type: application/octet-stream');\n$mb = (int)($_GET['mb'] ?? 1);\nfor ($i = 0; $i < $mb * 1024; $i++) { echo str_pad(sprintf('%08d', $i), 1023, '.'), \"\\n\"; }\n",
    ),
    // Sleeps 200 ms, then appends "<id> <METHOD>\n" to COUNT_LOG (the id
    // from the X-Req-Id header; a POST's body must be that id too, else
    // 400) and answers the same line: each execution leaves exactly one line
    // (one short O_APPEND write, atomic), so a test can tell lost requests
    // from requests run twice. Needs `SiteOptions::data_dir`.
    (
        "count.php",
        "<?php\nheader('Content-Type: text/plain');\nusleep(200000);\n$id = $_SERVER['HTTP_X_REQ_ID'] ?? '';\n$m = $_SERVER['REQUEST_METHOD'];\nif ($id === '' || ($m === 'POST' && file_get_contents('php://input') !== $id)) { http_response_code(400); echo \"bad id\\n\"; exit; }\n$line = $id . ' ' . $m . \"\\n\";\nif (file_put_contents('/srv/data/count.log', $line, FILE_APPEND) !== strlen($line)) { http_response_code(500); echo \"cannot append\\n\"; exit; }\necho $line;\n",
    ),
    (
        "log.php",
        "<?php\nheader('Content-Type: text/plain');\n$kb = (int)($_GET['kb'] ?? 1);\n$f = fopen('php://stderr', 'w');\nfor ($i = 0; $i < $kb; $i++) { fwrite($f, str_pad(sprintf('log line %08d ', $i), 1023, 'x') . \"\\n\"); }\nfclose($f);\necho 'logged ', $kb, \" KiB\\n\";\n",
    ),
];

/// Where `count.php` appends, inside the container (see [`SiteOptions::data_dir`]).
pub const COUNT_LOG: &str = "/srv/data/count.log";

/// The exact body `hello.php` answers for `site`.
pub fn hello_line(site: &str) -> String {
    format!("hello from {site}\n")
}

/// The exact body `big.php?mb=N` answers (N MiB, deterministic).
pub fn big_body(mb: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(mb << 20);
    for i in 0..mb * 1024 {
        let mut line = format!("{i:08}");
        while line.len() < 1023 {
            line.push('.');
        }
        line.push('\n');
        out.extend_from_slice(line.as_bytes());
    }
    out
}

/// A test site: unique valid name `t<pid>-<n>.fleet.test`, its own temp
/// [`Layout`] (run/state/sites dirs under one temp dir in /tmp), a docroot
/// with [`SCRIPTS`], and a created (not started) container `<site>.fpm` from
/// the php-fpm image: `--network none`, runtime dir at `/run/php`, docroot
/// read-only at `/srv/www`, labels `fleet.test=1`, `fleet.test.pid=<pid>`.
///
/// Drop removes the container (`docker rm -f`) and the directories, also
/// when the test panics.
#[derive(Debug)]
pub struct TestSite {
    site: Site,
    layout: Layout,
    container: String,
    image: String,
    docroot: PathBuf,
    // Last: dropped after the container is gone.
    run_tmp: Option<tempfile::TempDir>,
    tmp: tempfile::TempDir,
}

/// Options for [`TestSite::with_options`].
#[derive(Debug, Clone, Default)]
pub struct SiteOptions {
    /// php-fpm workers (`FLEET_FPM_CHILDREN`); image default 4.
    pub fpm_children: Option<u32>,
    /// Extra `docker create` arguments (before the image).
    pub docker_args: Vec<String>,
    /// Put the run directory in a temp dir under this directory (e.g.
    /// `/run`, to measure what a tenant can do to it) instead of /tmp.
    pub run_dir_in: Option<PathBuf>,
    /// A stock pool's access log: none (see [`SiteOptions::access_log`]).
    pub no_access_log: bool,
    /// No status page at `/status` (see [`SiteOptions::status_page`]).
    pub no_status_page: bool,
    /// Mount a writable `<temp dir>/data` at `/srv/data` (the docroot is
    /// read-only): where `count.php` appends ([`TestSite::count_lines`]).
    pub data_dir: bool,
}

/// What the pool's status path is when [`SiteOptions::status_page`] is
/// off: asking `/status` then gets php-fpm's 404.
pub const STATUS_DISABLED_PATH: &str = "/status-disabled";

impl SiteOptions {
    /// php-fpm's access log: on (the image's default) writes one
    /// `fpm-access` line per request to `docker logs`; off
    /// (`FLEET_FPM_ACCESS_LOG=/dev/null`) is a stock pool, which logs none.
    pub fn access_log(mut self, on: bool) -> Self {
        self.no_access_log = !on;
        self
    }

    /// The pool's status page at `/status`: on (the image's default), or
    /// off (`FLEET_FPM_STATUS_PATH=/status-disabled`).
    pub fn status_page(mut self, on: bool) -> Self {
        self.no_status_page = !on;
        self
    }

    /// `-e` settings of the container's php-fpm pool.
    fn fpm_env(&self) -> Vec<String> {
        use xtask::image::{ACCESS_LOG_ENV, CHILDREN_ENV, STATUS_PATH_ENV};
        let mut env = Vec::new();
        if let Some(n) = self.fpm_children {
            env.push(format!("{CHILDREN_ENV}={n}"));
        }
        if self.no_access_log {
            env.push(format!("{ACCESS_LOG_ENV}=/dev/null"));
        }
        if self.no_status_page {
            env.push(format!("{STATUS_PATH_ENV}={STATUS_DISABLED_PATH}"));
        }
        env
    }
}

impl TestSite {
    /// A new site with a created (stopped) container. Needs Docker and php-fpm
    /// (`require!(Docker, PhpFpm)` first).
    pub fn new() -> TestSite {
        Self::with_options(SiteOptions::default())
    }

    /// Like [`TestSite::new`] with php-fpm worker count / extra docker args.
    pub fn with_options(options: SiteOptions) -> TestSite {
        reap_leftovers();
        let image = image();
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::SeqCst);
        let pid = std::process::id();
        let site =
            Site::new(&format!("t{pid}-{n}.fleet.test")).expect("generated site name is valid");
        let tmp = super::temp_dir("site");
        let run_tmp = options
            .run_dir_in
            .as_deref()
            .map(|base| super::temp_dir_in(base, "run"));
        let layout = Layout {
            run_dir: run_tmp.as_ref().unwrap_or(&tmp).path().join("run"),
            state_dir: tmp.path().join("state"),
            sites_dir: tmp.path().join("sites"),
        };
        let docroot = tmp.path().join("www");
        for dir in [
            &layout.run_dir,
            &layout.state_dir,
            &layout.sites_dir,
            &layout.site_dir(&site),
            &docroot,
            &tmp.path().join("data"),
        ] {
            std::fs::create_dir_all(dir).expect("create test dir");
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))
                .expect("chmod test dir");
        }
        for (name, body) in SCRIPTS {
            std::fs::write(docroot.join(name), body).expect("write PHP script");
        }
        // As in production: the runtime directory is a size-limited tmpfs
        // of its own (what the socket unit's `fleet-renew --mount-only`
        // does), mounted before the container first starts.
        if nix::unistd::geteuid().is_root() {
            let prepared =
                fleet_core::rundir::prepare(&layout, &site, fleet_core::rundir::Limits::default())
                    .expect("mount the site's runtime tmpfs");
            assert_eq!(prepared, fleet_core::rundir::Prepared::Mounted);
        }
        let container = site.container();
        let this = TestSite {
            site,
            layout,
            container,
            image,
            docroot,
            run_tmp,
            tmp,
        };
        this.create(&options);
        this
    }

    fn create(&self, options: &SiteOptions) {
        let labels = xtask::image::test_labels();
        let mut env = options.fpm_env();
        env.push(format!("FLEET_SITE={}", self.site));
        let mut extra = Vec::new();
        if options.data_dir {
            extra.extend([
                "-v".to_owned(),
                format!("{}:/srv/data", self.data_dir().display()),
            ]);
        }
        extra.extend(options.docker_args.iter().cloned());
        xtask::image::create_site_container(&xtask::image::SiteContainer {
            name: &self.container,
            image: &self.image,
            run_dir: &self.layout.site_dir(&self.site),
            docroot: &self.docroot,
            docroot_inside: xtask::image::CONTAINER_DOCROOT,
            labels: &labels,
            env: &env,
            extra: &extra,
        })
        .unwrap_or_else(|e| panic!("{}", xtask::error::chain(&e)));
    }

    /// The site.
    pub fn site(&self) -> &Site {
        &self.site
    }

    /// The site's name.
    pub fn name(&self) -> &str {
        self.site.as_str()
    }

    /// This site's own layout (temp run/state/sites dirs).
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// Environment for fleet binaries so they use this layout:
    /// `FLEET_RUN_DIR`, `FLEET_STATE_DIR`, `FLEET_SITES_DIR`.
    pub fn layout_env(&self) -> Vec<(String, String)> {
        vec![
            (
                "FLEET_RUN_DIR".into(),
                self.layout.run_dir.display().to_string(),
            ),
            (
                "FLEET_STATE_DIR".into(),
                self.layout.state_dir.display().to_string(),
            ),
            (
                "FLEET_SITES_DIR".into(),
                self.layout.sites_dir.display().to_string(),
            ),
        ]
    }

    /// Container name `<site>.fpm`.
    pub fn container(&self) -> &str {
        &self.container
    }

    /// The image tag the container was created from.
    pub fn image(&self) -> &str {
        &self.image
    }

    /// The host docroot (mounted read-only at `/srv/www`); add scripts here.
    pub fn docroot(&self) -> &Path {
        &self.docroot
    }

    /// The host side of `/srv/data` (mounted with [`SiteOptions::data_dir`]).
    pub fn data_dir(&self) -> PathBuf {
        self.tmp.path().join("data")
    }

    /// The lines `count.php` appended so far (`<id> <METHOD>`), see [`COUNT_LOG`].
    pub fn count_lines(&self) -> Vec<String> {
        let name = Path::new(COUNT_LOG)
            .file_name()
            .expect("COUNT_LOG has a file name");
        std::fs::read_to_string(self.data_dir().join(name))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// The temp directory holding everything of this site.
    pub fn temp_dir(&self) -> &Path {
        self.tmp.path()
    }

    /// The exact body `hello.php` answers for this site.
    pub fn hello_line(&self) -> String {
        hello_line(self.name())
    }

    /// One FastCGI request straight to this site's php-fpm.sock.
    pub fn fcgi(&self, req: &super::FcgiRequest) -> std::io::Result<super::FcgiResponse> {
        super::fastcgi::request(&self.fpm_socket(), req)
    }

    /// `<run_dir>/<site>/php-fpm.sock`.
    pub fn fpm_socket(&self) -> PathBuf {
        self.layout.fpm_socket(&self.site)
    }

    /// `<run_dir>/<site>/vhost-waker.sock`.
    pub fn waker_socket(&self) -> PathBuf {
        self.layout.waker_socket(&self.site)
    }

    /// `<state_dir>/<site>.state`.
    pub fn state_file(&self) -> PathBuf {
        self.layout.state_file(&self.site)
    }

    /// Write `<sites_dir>/<site>.conf` for the reaper, line 1:
    /// `# Amount of time to pause the container after: <timeout>` (e.g. `"20m"`).
    pub fn write_conf(&self, timeout: &str) -> PathBuf {
        let path = self.layout.conf_file(&self.site);
        std::fs::write(
            &path,
            format!("# Amount of time to pause the container after: {timeout}\n"),
        )
        .expect("write site conf");
        path
    }

    /// Write `<sites_dir>/<site>.conf` for tiered sleep: line 1 pauses
    /// after `pause`, line 2 (`# Amount of time to stop the container
    /// after: <stop>`) stops after `stop`.
    pub fn write_conf_tiered(&self, pause: &str, stop: &str) -> PathBuf {
        let path = self.layout.conf_file(&self.site);
        std::fs::write(
            &path,
            format!(
                "# Amount of time to pause the container after: {pause}\n\
                 # Amount of time to stop the container after: {stop}\n"
            ),
        )
        .expect("write site conf");
        path
    }

    /// `docker start` and wait (≤ 20 s) until php-fpm.sock accepts.
    pub fn start(&self) {
        docker_ok(&["start", &self.container]);
        self.wait_ready(Duration::from_secs(20));
    }

    /// Wait until php-fpm.sock accepts a connection; panic after `timeout`.
    pub fn wait_ready(&self, timeout: Duration) {
        let socket = self.fpm_socket();
        assert!(
            wait_until(timeout, || UnixStream::connect(&socket).is_ok()),
            "{} did not accept within {timeout:?}; state {}; logs:\n{}",
            socket.display(),
            self.state(),
            self.logs()
        );
    }

    /// `docker stop -t 5`.
    pub fn stop(&self) {
        docker_ok(&["stop", "-t", "5", &self.container]);
    }

    /// `docker pause`.
    pub fn pause(&self) {
        docker_ok(&["pause", &self.container]);
    }

    /// `docker unpause`.
    pub fn unpause(&self) {
        docker_ok(&["unpause", &self.container]);
    }

    /// `docker kill` (SIGKILL).
    pub fn kill(&self) {
        docker_ok(&["kill", &self.container]);
    }

    /// `docker inspect` status: `created`, `running`, `paused`, `exited`, …
    /// (`"missing"` when the container does not exist).
    pub fn state(&self) -> String {
        let out = docker(&["inspect", "--format", "{{.State.Status}}", &self.container]);
        if out.status.success() {
            String::from_utf8_lossy(&out.stdout).trim().to_string()
        } else {
            "missing".to_string()
        }
    }

    /// `docker inspect` `State.StartedAt`: which run of the container this is.
    pub fn started_at(&self) -> String {
        super::docker_ok(&[
            "inspect",
            "--format",
            "{{.State.StartedAt}}",
            &self.container,
        ])
        .trim()
        .to_owned()
    }

    /// Times of the container's Docker `event` events (`start`, `pause`,
    /// `unpause`, `kill`, `die`, …) from `since` until now.
    pub fn event_times(
        &self,
        event: &str,
        since: std::time::SystemTime,
    ) -> Vec<std::time::SystemTime> {
        let c = format!("container={}", self.container);
        let e = format!("event={event}");
        super::docker_events(
            since,
            std::time::SystemTime::now(),
            &["type=container", &c, &e],
        )
        .iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok()?["timeNano"].as_u64())
        .map(|n| std::time::SystemTime::UNIX_EPOCH + Duration::from_nanos(n))
        .collect()
    }

    /// `docker logs` (stdout and stderr together; php-fpm logs to stderr,
    /// one `fpm-access <METHOD> <URI> status=… duration_ms=…` line per request
    /// unless [`SiteOptions::access_log`] is off).
    pub fn logs(&self) -> String {
        let out = docker(&["logs", &self.container]);
        let mut s = String::from_utf8_lossy(&out.stdout).into_owned();
        s.push_str(&String::from_utf8_lossy(&out.stderr));
        s
    }

    /// The `fpm-access` lines of [`TestSite::logs`].
    pub fn access_lines(&self) -> Vec<String> {
        self.logs()
            .lines()
            .filter(|l| l.starts_with("fpm-access "))
            .map(str::to_string)
            .collect()
    }
}

impl Drop for TestSite {
    fn drop(&mut self) {
        let out = docker(&["rm", "-f", "-v", &self.container]);
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            if !err.contains("No such container") {
                eprintln!(
                    "TestSite drop: docker rm -f {} failed: {err}",
                    self.container
                );
            }
        }
        umount_under(self.tmp.path());
        if let Some(run) = &self.run_tmp {
            umount_under(run.path());
        }
        // The temp dir removes itself after this (field drop).
    }
}

/// Unmounts (lazily) every mount at or below `dir`, deepest first, so the
/// directory can be removed.
pub fn umount_under(dir: &Path) {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return;
    };
    let mut points: Vec<PathBuf> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        // mountinfo escapes space, tab, newline and backslash as octal.
        .map(|p| PathBuf::from(p.replace("\\040", " ")))
        .filter(|p| p.starts_with(dir))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.as_os_str().len()));
    for p in points {
        let _ = nix::mount::umount2(&p, nix::mount::MntFlags::MNT_DETACH);
    }
}

/// The image tag, built once per process (panics with the reason otherwise).
pub fn image() -> String {
    let t = std::time::Instant::now();
    match xtask::image::ensure_image_info() {
        Ok(image) => {
            if !image.cached {
                eprintln!("built image {} in {:.1?}", image.tag, t.elapsed());
            }
            image.tag
        }
        Err(e) => panic!("php-fpm image: {e}"),
    }
}

/// Once per process: remove leftover `fleet.test=1` containers whose
/// `fleet.test.pid` is not a live process (an earlier test run was killed),
/// and `/tmp/fleet-it-<pid>-…` dirs of dead pids.
pub fn reap_leftovers() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        reap_leftovers_now();
    });
}

/// Remove every `fleet.test=1` container whose `fleet.test.pid` is not a
/// live process and every `/tmp/fleet-it-<pid>-…` dir of a dead pid;
/// returns the container names and dir paths removed.
pub fn reap_leftovers_now() -> Vec<String> {
    let mut removed = Vec::new();
    {
        let list = docker_ok(&[
            "ps",
            "-a",
            "--filter",
            "label=fleet.test=1",
            "--format",
            "{{.Names}}\t{{.Label \"fleet.test.pid\"}}",
        ]);
        for line in list.lines() {
            let Some((name, pid)) = line.split_once('\t') else {
                continue;
            };
            let alive = pid
                .trim()
                .parse::<u32>()
                .is_ok_and(|pid| Path::new(&format!("/proc/{pid}")).exists());
            if !alive {
                eprintln!("removing leftover test container {name} (pid {pid} is gone)");
                if docker(&["rm", "-f", "-v", name]).status.success() {
                    removed.push(name.to_string());
                }
            }
        }
    }
    // Temp dirs /tmp/fleet-it-<pid>-… (and /run/…) of dead test processes.
    for entry in ["/tmp", "/run"]
        .into_iter()
        .filter_map(|base| std::fs::read_dir(base).ok())
        .flatten()
        .flatten()
    {
        {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(rest) = name.strip_prefix(super::TEMP_PREFIX) else {
                continue;
            };
            let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
                continue;
            };
            if !Path::new(&format!("/proc/{pid}")).exists() && {
                umount_under(&entry.path());
                std::fs::remove_dir_all(entry.path()).is_ok()
            } {
                let path = entry.path();
                eprintln!(
                    "removed leftover test dir {} (pid {pid} is gone)",
                    path.display()
                );
                removed.push(path.display().to_string());
            }
        }
    }
    removed
}
