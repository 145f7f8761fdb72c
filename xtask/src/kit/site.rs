//! [`TestSite`]: a site with its own directories and a real `<site>.fpm`
//! container, as the integration tests, the benches and the soak make one;
//! the temp dirs they live in, and the sweep of what dead runs left behind.

use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Once;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use fleet_core::{Layout, Site, rundir};

use crate::Error;
use crate::error::{Cmd, chain, or_panic, run};
use crate::wait::wait_until;

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

/// Writes [`SCRIPTS`] into `docroot` (a site's, or one several sites share).
pub fn write_scripts(docroot: &Path) -> Result<(), Error> {
    for (name, body) in SCRIPTS {
        let path = docroot.join(name);
        std::fs::write(&path, body).map_err(Error::io("write", &path))?;
    }
    Ok(())
}

/// The exact body `hello.php` answers for `site`.
pub fn hello_line(site: &str) -> String {
    format!("hello from {site}\n")
}

/// The exact body `big.php?mb=N` answers (N MiB, deterministic).
pub fn big_body(mb: usize) -> Vec<u8> {
    (0..mb * 1024)
        .flat_map(|i| format!("{:.<1023}\n", format!("{i:08}")).into_bytes())
        .collect()
}

/// A test site: unique valid name `t<pid>-<n>.fleet.test`, its own temp
/// [`Layout`] (run/state/sites dirs under one temp dir in [`temp_base`]), a docroot
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

/// Options for [`TestSite::with_options`] and [`TestSite::try_with_options`].
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
    /// The `<kind>` in the temp dir's name `fleet-it-<pid>-<kind>-…`
    /// (default `site`): which run made it (`soak`, `bench`, …).
    pub temp_kind: Option<String>,
    /// The site's name (validated); default `t<pid>-<n>.fleet.test`.
    pub name: Option<String>,
    /// More files for the docroot besides [`SCRIPTS`]: (file name, content).
    pub scripts: Vec<(String, String)>,
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

    pub fn fpm_children(mut self, n: u32) -> Self {
        self.fpm_children = Some(n);
        self
    }

    pub fn docker_args<I: IntoIterator<Item = S>, S: Into<String>>(mut self, args: I) -> Self {
        self.docker_args.extend(args.into_iter().map(Into::into));
        self
    }

    /// A writable `/srv/data` (see [`SiteOptions::data_dir`]).
    pub fn data_dir(mut self) -> Self {
        self.data_dir = true;
        self
    }
}

impl TestSite {
    /// A new site with default [`SiteOptions`] and a created (stopped)
    /// container; panics with the reason if it cannot be made. Needs Docker
    /// and php-fpm (in the tests, `require!(Docker, PhpFpm)` first).
    // No `Default`: making a site creates a container and directories.
    #[allow(clippy::new_without_default)]
    pub fn new() -> TestSite {
        Self::with_options(SiteOptions::default())
    }

    /// [`TestSite::with_options`], then [`TestSite::start`]ed.
    pub fn started(options: SiteOptions) -> TestSite {
        let site = Self::with_options(options);
        site.start();
        site
    }

    /// Like [`TestSite::new`] with php-fpm worker count / extra docker args;
    /// panics with the reason if the site cannot be made.
    pub fn with_options(options: SiteOptions) -> TestSite {
        Self::try_with_options(options).unwrap_or_else(|e| panic!("test site: {}", chain(&e)))
    }

    /// Like [`TestSite::with_options`], returning why the site cannot be
    /// made instead of panicking (the benches and the soak).
    pub fn try_with_options(options: SiteOptions) -> Result<TestSite, Error> {
        reap_leftovers();
        let image = crate::image::ensure_image_info()?.tag;
        let name = options.name.clone().unwrap_or_else(|| {
            static N: AtomicUsize = AtomicUsize::new(0);
            let n = N.fetch_add(1, Ordering::SeqCst);
            format!("t{}-{n}.fleet.test", std::process::id())
        });
        let site = Site::new(&name).map_err(|e| Error::failed(format!("site name {name}"), e))?;
        let kind = options.temp_kind.as_deref().unwrap_or("site");
        let tmp = try_temp_dir_in(&temp_base(), kind)?;
        let run_tmp = options
            .run_dir_in
            .as_deref()
            .map(|base| try_temp_dir_in(base, "run"))
            .transpose()?;
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
            crate::kit::mkdir(dir)?;
        }
        write_scripts(&docroot)?;
        for (file, body) in &options.scripts {
            let path = docroot.join(file);
            std::fs::write(&path, body).map_err(Error::io("write", path))?;
        }
        // Built before the tmpfs is mounted and the container made, so a
        // failure from here on is cleaned up by Drop.
        let this = TestSite {
            container: site.container(),
            site,
            layout,
            image,
            docroot,
            run_tmp,
            tmp,
        };
        // As in production: the runtime directory is a size-limited tmpfs
        // of its own (what the socket unit's `fleet-renew --mount-only`
        // does), mounted before the container first starts.
        if nix::unistd::geteuid().is_root() {
            let what = || format!("mount the runtime tmpfs of {}", this.site);
            let prepared = rundir::prepare(&this.layout, &this.site, rundir::Limits::default())
                .map_err(|e| Error::failed(what(), e))?;
            if prepared != rundir::Prepared::Mounted {
                return Err(Error::failed(what(), format!("{prepared:?}, not mounted")));
            }
        }
        this.create(&options)?;
        Ok(this)
    }

    fn create(&self, options: &SiteOptions) -> Result<(), Error> {
        use crate::image::{ACCESS_LOG_ENV, CHILDREN_ENV, STATUS_PATH_ENV};
        // The site's name and the `-e` settings of its php-fpm pool.
        let o = options;
        let env: Vec<String> = [
            Some(format!("FLEET_SITE={}", self.site)),
            o.fpm_children.map(|n| format!("{CHILDREN_ENV}={n}")),
            o.no_access_log
                .then(|| format!("{ACCESS_LOG_ENV}=/dev/null")),
            o.no_status_page
                .then(|| format!("{STATUS_PATH_ENV}={STATUS_DISABLED_PATH}")),
        ]
        .into_iter()
        .flatten()
        .collect();
        let mut extra = Vec::new();
        if o.data_dir {
            let volume = format!("{}:/srv/data", self.data_dir().display());
            extra.extend(["-v".to_owned(), volume]);
        }
        extra.extend_from_slice(&o.docker_args);
        crate::image::create_site_container(&crate::image::SiteContainer {
            name: &self.container,
            image: &self.image,
            run_dir: &self.layout.site_dir(&self.site),
            docroot: &self.docroot,
            docroot_inside: crate::image::CONTAINER_DOCROOT,
            labels: &crate::image::test_labels(),
            env: &env,
            extra: &extra,
        })
    }

    pub fn site(&self) -> &Site {
        &self.site
    }

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
        let l = &self.layout;
        [
            ("FLEET_RUN_DIR", &l.run_dir),
            ("FLEET_STATE_DIR", &l.state_dir),
            ("FLEET_SITES_DIR", &l.sites_dir),
        ]
        .map(|(k, v)| (k.to_owned(), v.display().to_string()))
        .to_vec()
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
        let name = COUNT_LOG.rsplit('/').next().unwrap_or(COUNT_LOG);
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
        or_panic(self.try_write_conf(timeout))
    }

    /// Like [`TestSite::write_conf`], returning the error (benches, demo).
    pub fn try_write_conf(&self, timeout: &str) -> Result<PathBuf, Error> {
        self.write_conf_text(&format!(
            "# Amount of time to pause the container after: {timeout}\n"
        ))
    }

    /// Write `<sites_dir>/<site>.conf` for tiered sleep: line 1 pauses
    /// after `pause`, line 2 (`# Amount of time to stop the container
    /// after: <stop>`) stops after `stop`.
    pub fn write_conf_tiered(&self, pause: &str, stop: &str) -> PathBuf {
        or_panic(self.write_conf_text(&format!(
            "# Amount of time to pause the container after: {pause}\n\
             # Amount of time to stop the container after: {stop}\n"
        )))
    }

    fn write_conf_text(&self, text: &str) -> Result<PathBuf, Error> {
        let path = self.layout.conf_file(&self.site);
        std::fs::write(&path, text).map_err(Error::io("write site conf", &path))?;
        Ok(path)
    }

    /// `docker start` and wait (≤ 20 s) until php-fpm.sock accepts; panics
    /// with the reason (naming the socket and the container's state) and the
    /// container's logs, which say why php-fpm did not come up, otherwise.
    pub fn start(&self) {
        if let Err(e) = self.try_start() {
            panic!("{}; logs:\n{}", chain(&e), self.logs());
        }
    }

    /// Like [`TestSite::start`], returning why the site did not come up.
    pub fn try_start(&self) -> Result<(), Error> {
        run("docker", &["start", &self.container])?;
        let (socket, timeout) = (self.fpm_socket(), Duration::from_secs(20));
        if wait_until(timeout, || UnixStream::connect(&socket).is_ok()) {
            return Ok(());
        }
        let state = self.state();
        let what = format!("{} of {}", socket.display(), self.container);
        let why = format!("did not accept within {timeout:?}; container state {state}");
        Err(Error::failed(what, why))
    }

    // Test-style controls: a failed stop, pause, unpause or kill panics
    // with the error (a failed test).
    #[track_caller]
    pub fn stop(&self) {
        or_panic(run("docker", &["stop", "-t", "5", &self.container]));
    }

    #[track_caller]
    pub fn pause(&self) {
        or_panic(run("docker", &["pause", &self.container]));
    }

    #[track_caller]
    pub fn unpause(&self) {
        or_panic(run("docker", &["unpause", &self.container]));
    }

    #[track_caller]
    pub fn kill(&self) {
        or_panic(run("docker", &["kill", &self.container]));
    }

    /// `docker inspect` status: `created`, `running`, `paused`, `exited`, …
    /// (`"missing"` when the container does not exist).
    pub fn state(&self) -> String {
        self.inspect("{{.State.Status}}")
            .unwrap_or_else(|_| "missing".to_owned())
    }

    /// `docker logs` (stdout and stderr together; php-fpm logs to stderr,
    /// one `fpm-access <METHOD> <URI> status=… duration_ms=…` line per request
    /// unless [`SiteOptions::access_log`] is off). When docker cannot be run,
    /// a line saying so: the logs are mostly read to explain a failure.
    pub fn logs(&self) -> String {
        // Both streams, so the whole output, not `error::run` (stdout only).
        // An error names the command line.
        match Cmd::new("docker").args(["logs", &self.container]).output() {
            Ok(out) => String::from_utf8_lossy(&[out.stdout, out.stderr].concat()).into_owned(),
            Err(e) => format!("({})\n", chain(&e)),
        }
    }

    /// The `fpm-access` lines of [`TestSite::logs`].
    pub fn access_lines(&self) -> Vec<String> {
        self.logs()
            .lines()
            .filter(|l| l.starts_with("fpm-access "))
            .map(str::to_string)
            .collect()
    }

    /// `docker inspect` `State.StartedAt`: which run of the container this is.
    pub fn started_at(&self) -> String {
        or_panic(self.inspect("{{.State.StartedAt}}"))
    }

    /// `docker inspect --format <format>` of the container, trimmed.
    fn inspect(&self, format: &str) -> Result<String, Error> {
        let out = run("docker", &["inspect", "--format", format, &self.container])?;
        Ok(out.trim().to_owned())
    }
}

impl Drop for TestSite {
    fn drop(&mut self) {
        let removed = run("docker", &["rm", "-f", "-v", &self.container]);
        if let Err(e) = removed.map_err(|e| chain(&e))
            && !e.contains("No such container")
        {
            eprintln!("TestSite drop: {e}");
        }
        for dir in std::iter::once(&self.tmp).chain(&self.run_tmp) {
            umount_under(dir.path());
        }
        // The temp dir removes itself after this (field drop).
    }
}

/// Prefix of every temp dir the kit makes (in /tmp or /run):
/// `fleet-it-<pid>-<kind>-XXXXXX`, so a later run can tell a dead run's.
pub const TEMP_PREFIX: &str = "fleet-it-";

/// A new temp dir `<temp_base>/fleet-it-<pid>-<kind>-XXXXXX`, mode 0755 (nginx
/// workers and containers must traverse it). Removed on drop; if the
/// process dies without dropping it, [`reap_leftovers`] removes it in a
/// later run (the pid in the name is gone). Panics with the reason.
pub fn temp_dir(kind: &str) -> tempfile::TempDir {
    or_panic(try_temp_dir_in(&temp_base(), kind))
}

/// Where [`temp_dir`] makes its dirs: `/tmp`, or `$FLEET_KIT_TMPDIR` (the
/// first-run test points it at a shared mount so that the mounts a demo in a
/// private mount namespace makes there reach Docker). The sweep looks in
/// `/tmp` and `/run` only: such a base must lie in a swept kit dir.
pub fn temp_base() -> PathBuf {
    std::env::var_os("FLEET_KIT_TMPDIR").map_or_else(|| PathBuf::from("/tmp"), PathBuf::from)
}

/// Like [`temp_dir`], in `base` (`/tmp` or `/run`, which
/// [`reap_leftovers`] also sweeps), returning the error.
pub fn try_temp_dir_in(base: &Path, kind: &str) -> Result<tempfile::TempDir, Error> {
    let dir = tempfile::Builder::new()
        .prefix(&format!("{TEMP_PREFIX}{}-{kind}-", std::process::id()))
        .tempdir_in(base)
        .map_err(Error::io("create temp dir in", base))?;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
        .map_err(Error::io("chmod", dir.path()))?;
    Ok(dir)
}

/// Unmounts (lazily) every mount at or below `dir`, deepest first, so the
/// directory can be removed.
pub fn umount_under(dir: &Path) {
    let mut points = mount_points_of(None);
    points.retain(|p| p.starts_with(dir));
    points.sort_by_key(|p| std::cmp::Reverse(p.as_os_str().len()));
    for p in points {
        let _ = nix::mount::umount2(&p, nix::mount::MntFlags::MNT_DETACH);
    }
}

/// Every mount point of this mount namespace; with `source`, only those
/// whose mount source is `source`.
fn mount_points_of(source: Option<&str>) -> Vec<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    parse_mount_points(&info, source)
}

/// [`mount_points_of`] on the text of a mountinfo file.
fn parse_mount_points(info: &str, source: Option<&str>) -> Vec<PathBuf> {
    info.lines()
        // Fields: id parent dev root point options [optional…] - fstype source super.
        .filter(|l| {
            source.is_none_or(|s| {
                l.split_once(" - ")
                    .and_then(|(_, rest)| rest.split(' ').nth(1))
                    == Some(s)
            })
        })
        .filter_map(|l| l.split(' ').nth(4))
        // mountinfo escapes space, tab, newline and backslash as octal.
        .map(|p| PathBuf::from(p.replace("\\040", " ")))
        .collect()
}

/// The image tag, built once per process (panics with the reason otherwise).
pub fn image() -> String {
    let t = std::time::Instant::now();
    let image = or_panic(crate::image::ensure_image_info());
    if !image.cached {
        eprintln!("built image {} in {:.1?}", image.tag, t.elapsed());
    }
    image.tag
}

/// Something a test, bench or soak run left behind when its process died.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Leftover {
    /// A `fleet.test=1` container whose `fleet.test.pid` is gone.
    Container(String),
    /// A `/tmp` or `/run` `fleet-it-<pid>-…` dir of a dead pid.
    Dir(PathBuf),
    /// A site runtime tmpfs (`fleet-rundir`) below such a dir.
    Mount(PathBuf),
}

impl std::fmt::Display for Leftover {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Leftover::Container(name) => write!(f, "container {name}"),
            Leftover::Dir(path) => write!(f, "dir {}", path.display()),
            Leftover::Mount(path) => write!(f, "mount {}", path.display()),
        }
    }
}

/// Whether `pid` (a decimal string) names a live process.
fn alive(pid: &str) -> bool {
    pid.trim()
        .parse::<u32>()
        .is_ok_and(|pid| Path::new(&format!("/proc/{pid}")).exists())
}

/// The pid in a `fleet-it-<pid>-…` path component, if `name` is one.
fn temp_pid(name: &str) -> Option<&str> {
    name.strip_prefix(TEMP_PREFIX)
        .and_then(|rest| rest.split('-').next())
        .filter(|pid| pid.parse::<u32>().is_ok())
}

/// Whether `name` is a `fleet-it-<pid>-…` name of a process that is gone.
pub fn of_dead_run(name: &str) -> bool {
    temp_pid(name).is_some_and(|pid| !alive(pid))
}

/// What dead runs left: `fleet.test=1` containers whose `fleet.test.pid` is
/// not a live process, `/tmp` and `/run` `fleet-it-<pid>-…` dirs of dead
/// pids and runtime tmpfs mounts below them (runs of live processes on this
/// machine are not counted). Errors when Docker cannot list containers.
pub fn find_leftovers() -> Result<Vec<Leftover>, Error> {
    let format = "{{.Names}}\t{{.Label \"fleet.test.pid\"}}";
    let label = "label=fleet.test=1";
    let args = ["ps", "-a", "--filter", label, "--format", format];
    let listing = run("docker", &args)?;
    let mut left: Vec<Leftover> = listing
        .lines()
        .filter_map(|l| l.split_once('\t'))
        .filter(|(_, pid)| !alive(pid))
        .map(|(name, _)| Leftover::Container(name.to_owned()))
        .collect();
    let entries = ["/tmp", "/run"].map(std::fs::read_dir);
    for entry in entries.into_iter().flatten().flatten().flatten() {
        if of_dead_run(&entry.file_name().to_string_lossy()) {
            left.push(Leftover::Dir(entry.path()));
        }
    }
    // Sites' runtime tmpfs (fleet-renew --mount-only's source name) go with
    // their runs too.
    for point in mount_points_of(Some(rundir::MOUNT_SOURCE)) {
        let pid = point.iter().find_map(|c| temp_pid(c.to_str()?));
        if pid.is_some_and(|pid| !alive(pid)) {
            left.push(Leftover::Mount(point));
        }
    }
    Ok(left)
}

/// Once per process: [`reap_leftovers_now`] (an earlier run was killed).
/// Only warns when Docker cannot list containers: making the site's own
/// container then fails with the reason.
pub fn reap_leftovers() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if let Err(e) = try_reap_leftovers() {
            eprintln!("leftover sweep: {}", chain(&e));
        }
    });
}

/// Remove every [`find_leftovers`] container and dir (unmounting what is
/// mounted below it first); returns the container names and dir paths
/// removed. Panics when Docker cannot list containers.
pub fn reap_leftovers_now() -> Vec<String> {
    try_reap_leftovers().unwrap_or_else(|e| panic!("leftovers: {}", chain(&e)))
}

/// [`reap_leftovers_now`], returning the error.
fn try_reap_leftovers() -> Result<Vec<String>, Error> {
    let mut removed = Vec::new();
    for leftover in find_leftovers()? {
        match leftover {
            Leftover::Container(name) => {
                eprintln!("removing leftover test container {name} (its process is gone)");
                if run("docker", &["rm", "-f", "-v", &name]).is_ok() {
                    removed.push(name);
                }
            }
            Leftover::Dir(path) => {
                umount_under(&path);
                if std::fs::remove_dir_all(&path).is_ok() {
                    let path = path.display().to_string();
                    eprintln!("removed leftover test dir {path} (its process is gone)");
                    removed.push(path);
                }
            }
            // Below a dir of the same dead run: unmounted with it.
            Leftover::Mount(_) => {}
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temp_pid_reads_the_pid_of_a_kit_dir_name() {
        assert_eq!(temp_pid("fleet-it-123-site-AbC"), Some("123"));
        assert_eq!(temp_pid("fleet-it-leftover-9"), None);
        assert_eq!(temp_pid("other-123-site"), None);
    }

    #[test]
    fn mount_points_filter_by_source_and_unescape() {
        let info = "\
36 25 0:32 / /tmp/fleet-it-7-site-x/run/a\\040b rw,nosuid - tmpfs fleet-rundir rw,size=1024k
37 25 0:33 / /run/user/0 rw shared:1 - tmpfs tmpfs rw
";
        assert_eq!(
            parse_mount_points(info, Some(rundir::MOUNT_SOURCE)),
            vec![PathBuf::from("/tmp/fleet-it-7-site-x/run/a b")]
        );
        assert_eq!(parse_mount_points(info, None).len(), 2);
    }

    #[test]
    fn leftovers_name_what_they_are() {
        assert_eq!(
            Leftover::Container("t1-0.fleet.test.fpm".into()).to_string(),
            "container t1-0.fleet.test.fpm"
        );
        assert_eq!(
            Leftover::Dir("/tmp/fleet-it-1-site-x".into()).to_string(),
            "dir /tmp/fleet-it-1-site-x"
        );
    }
}
