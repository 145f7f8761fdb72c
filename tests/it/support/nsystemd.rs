//! A real systemd booted as PID 1 inside private PID and mount namespaces.
//!
//! The host's systemd is not PID 1 here (and must never be touched), so the
//! unit tests boot their own: `unshare(CLONE_NEWNS)` in the child, tmpfs over
//! `/run`, `/tmp` and `/var/tmp` (systemd's boot would otherwise clean the
//! host's), bind mounts of what the units need (Docker's socket, the test's
//! runtime and state directories, the directory of the built binaries), then
//! `unshare --pid --fork --mount-proc /lib/systemd/systemd --system
//! --unit=fleet-test.target`. The target is the test's own and pulls in
//! nothing, so systemd starts only the units a test asks for. `/etc` and
//! `/var` are always copy-on-write overlays: a unit with default
//! dependencies pulls in `sysinit.target`, whose journald, utmp and tmpfiles
//! would otherwise write the host's `/var/log/journal`, `/var/log/wtmp`, ….
//!
//! Everything lives in namespaces: killing PID 1 of the PID namespace (on
//! drop) kills every process in it, and the mounts vanish with the mount
//! namespace, so nothing is left behind on the host. systemd is not given a
//! cgroup namespace, so it takes the cgroup it starts in as its root: each
//! boot starts in cgroups of its own below the test process's, one per
//! hierarchy ([`boot_cgroups`]), removed on drop. (Started in the test's
//! cgroup, which is the host's root here, systemds booted side by side would
//! share `/init.scope` and `/system.slice`, units would leave the test's
//! memory limit, and every boot left its empty cgroups behind.)

use std::ffi::{CStr, CString};
use std::fs::File;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::{TestSite, bin};

/// The boot target: pulls in nothing.
/// systemd's console output, in the namespace's temp dir.
const LOG: &str = "systemd.log";
const TARGET: &str = "fleet-test.target";

/// The private tmpfs mounts: (target, options).
const TMPFS: [(&CStr, &CStr); 3] = [
    (c"/run", c"mode=0755"),
    (c"/tmp", c"mode=1777"),
    (c"/var/tmp", c"mode=1777"),
];

/// What to bind into the namespace: `host` (a file or directory outside the
/// private tmpfs mounts) appears at `inside`.
#[derive(Debug, Clone)]
pub struct Bind {
    pub host: PathBuf,
    pub inside: PathBuf,
}

impl Bind {
    pub fn new(host: impl Into<PathBuf>, inside: impl Into<PathBuf>) -> Bind {
        Bind {
            host: host.into(),
            inside: inside.into(),
        }
    }
}

/// A booted systemd; killed with everything in its namespaces on drop.
#[derive(Debug)]
pub struct NsSystemd {
    unshare: Child,
    /// systemd's PID as the host sees it.
    pid: i32,
    /// The boot's own cgroups ([`boot_cgroups`]), removed on drop.
    cgroups: Vec<PathBuf>,
    /// systemd's log, the boot target and the upper layers of
    /// [`NsSystemd::boot_private`]'s overlays; removed after the namespace is
    /// gone (field order: after the Drop impl's kill).
    dir: tempfile::TempDir,
}

/// Precomputed C strings for the child (no allocation after fork).
struct ChildPlan {
    /// The `cgroup.procs` files the child moves itself into first.
    cgroup_procs: Vec<CString>,
    /// (target, options) of each overlayfs mount.
    overlays: Vec<(CString, CString)>,
    dirs: Vec<CString>,
    binds: Vec<BindPlan>,
}

struct BindPlan {
    host: CString,
    fd: libc::c_int,
    proc_path: CString,
    target: CString,
    is_dir: bool,
}

/// Where the child parks its O_PATH descriptors (far above anything a test
/// process has open).
const FIRST_BIND_FD: libc::c_int = 900;

fn cstr(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).expect("path without NUL")
}

/// Every ancestor of `p` below one of the tmpfs roots, shallowest first.
fn ancestors_to_make(p: &Path, out: &mut Vec<CString>) {
    let below_root = p.ancestors().skip(1).filter(|a| a.as_os_str().len() > 1);
    let chain: Vec<&Path> = below_root.collect();
    out.extend(chain.into_iter().rev().map(cstr));
}

/// overlayfs's mount options for a copy-on-write `dir` whose upper and work
/// layers are made in `scratch`: what is written to `dir` lands there.
pub fn overlay_options(dir: &Path, scratch: &Path) -> String {
    let upper = scratch.join("upper");
    let work = scratch.join("work");
    std::fs::create_dir_all(&upper).expect("overlay upper dir");
    std::fs::create_dir_all(&work).expect("overlay work dir");
    let options = format!(
        "lowerdir={},upperdir={},workdir={}",
        dir.display(),
        upper.display(),
        work.display()
    );
    // overlayfs splits its options at ',' and lower layers at ':'.
    assert!(
        !options[9..].contains([':']) && options.matches(',').count() == 2,
        "overlay paths must not contain ',' or ':': {options}"
    );
    options
}

impl NsSystemd {
    /// Boots systemd with `binds` in place, and `/etc`, `/var` and every
    /// directory of `private` (e.g. `/usr`) covered inside the namespace by an
    /// overlayfs whose upper layer is a host temp dir: what is written there
    /// (a `dpkg -i`, `systemctl enable` links) stays in the namespace and is
    /// gone with it, while the host's directories are read as they are.
    /// Panics (with systemd's log) if it does not reach a running state
    /// within 30 s.
    pub fn boot_private(binds: &[Bind], private: &[&Path]) -> NsSystemd {
        let dir = super::temp_dir("nsd");
        let log = dir.path().join(LOG);
        // The boot target is bound in like any file.
        let target = dir.path().join(TARGET);
        std::fs::write(&target, "[Unit]\nDescription=fleet test target\n").expect("write target");
        let target = Bind::new(target, Path::new("/run/systemd/system").join(TARGET));
        let always = [Path::new("/etc"), Path::new("/var")];
        let overlays = always.iter().chain(private).enumerate().map(|(i, lower)| {
            let options = overlay_options(lower, &dir.path().join(i.to_string()));
            (cstr(lower), CString::new(options).expect("no NUL"))
        });
        let cgroups = boot_cgroups(&dir);
        let mut plan = ChildPlan {
            cgroup_procs: cgroups
                .iter()
                .map(|c| cstr(&c.join("cgroup.procs")))
                .collect(),
            binds: Vec::new(),
            overlays: overlays.collect(),
            dirs: Vec::new(),
        };
        for (i, b) in binds.iter().chain([&target]).enumerate() {
            // The child opens each host path (O_PATH) after entering its
            // mount namespace but before the tmpfs mounts hide it, parks the
            // fd at a fixed number, and binds from /proc/self/fd/N. (An fd
            // opened in the parent refers to a mount of the parent's
            // namespace, which mount(2) refuses with EINVAL.)
            assert!(
                b.host.exists(),
                "bind source {} is missing",
                b.host.display()
            );
            let fd = FIRST_BIND_FD + i as libc::c_int;
            ancestors_to_make(&b.inside, &mut plan.dirs);
            plan.binds.push(BindPlan {
                host: cstr(&b.host),
                fd,
                proc_path: CString::new(format!("/proc/self/fd/{fd}")).expect("no NUL"),
                target: cstr(&b.inside),
                is_dir: b.host.is_dir(),
            });
        }

        let out = File::create(&log).expect("log file");
        let err = out.try_clone().expect("dup log");
        let mut cmd = Command::new("unshare");
        cmd.args([
            "--pid",
            "--fork",
            // With the parent-death signal below: a test process killed
            // before its drop takes the whole namespace with it.
            "--kill-child",
            "--mount-proc",
            "--",
            "/lib/systemd/systemd",
            "--system",
            &format!("--unit={TARGET}"),
            "--log-target=console",
            "--log-color=no",
        ])
        .env("container", "fleet-test")
        .env("SYSTEMD_LOG_LEVEL", "info")
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err);
        // SAFETY: the closure runs in the forked child before exec. It only
        // calls async-signal-safe libc functions (prctl, open, write, unshare,
        // mount, mkdir, mknod, dup2, close) on C strings prepared before the fork, and allocates
        // nothing, so it cannot deadlock on a lock held by another thread of
        // the (multi-threaded) test process.
        unsafe {
            cmd.pre_exec(move || child_setup(&plan));
        }
        let unshare = cmd.spawn().expect("spawn unshare (util-linux)");
        drop(cmd);

        // systemd is unshare's only child.
        let children = format!("/proc/{}/task/{}/children", unshare.id(), unshare.id());
        let mut pid = None;
        super::wait_until(Duration::from_secs(10), || {
            pid = std::fs::read_to_string(&children)
                .ok()
                .and_then(|s| s.split_whitespace().next()?.parse().ok());
            pid.is_some()
        });
        let Some(pid) = pid else {
            // Nothing owns the namespace yet: end it before the temp dir goes.
            let mut unshare = unshare;
            let _ = unshare.kill();
            let _ = unshare.wait();
            remove_cgroups(&cgroups);
            let log = std::fs::read_to_string(&log).unwrap_or_default();
            panic!("systemd did not start; log:\n{log}")
        };
        let ns = NsSystemd {
            unshare,
            pid,
            cgroups,
            dir,
        };
        ns.wait_running();
        // systemd is PID 1 of a PID namespace of its own, where the
        // containers' processes are invisible (SO_PEERCRED gives pid 0), so
        // the waker's cgroup check of php-fpm's listener cannot work here;
        // its file checks still run. On a host the default check applies.
        ns.write_unit(
            "fleet-waker@.service.d/peer-check.conf",
            "[Service]\nEnvironment=FLEET_WAKER_PEER_CHECK=socket\n",
        );
        ns
    }

    fn wait_running(&self) {
        let mut state = String::new();
        let up = xtask::wait::poll(
            Duration::from_secs(30),
            Duration::from_millis(5),
            Duration::from_millis(100),
            || {
                let out = self.systemctl(&["is-system-running"]);
                state = String::from_utf8_lossy(&out.stdout).trim().to_owned();
                state == "running" || state == "degraded"
            },
        );
        assert!(
            up,
            "systemd in the namespace is {state:?} after 30 s; log:\n{}",
            self.log_text()
        );
    }

    /// The boot's own cgroups, one per hierarchy, systemd's root in each.
    pub fn cgroups(&self) -> &[PathBuf] {
        &self.cgroups
    }

    /// What systemd printed.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self.dir.path().join(LOG)).unwrap_or_default()
    }

    /// A command that runs `program` inside the namespaces.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.arg("-t")
            .arg(self.pid.to_string())
            .args(["-m", "-p", "--"])
            .arg(program)
            .stdin(Stdio::null());
        cmd
    }

    /// Runs `program args` inside the namespaces and returns its output.
    pub fn run(&self, program: &str, args: &[&str]) -> Output {
        self.command(program)
            .args(args)
            .output()
            .expect("run nsenter")
    }

    /// `systemd-analyze security`'s overall exposure level of `unit`, noted,
    /// and asserted at most `max` (the issues' target is 2.5).
    pub fn assert_exposure(&self, unit: &str, max: f64) {
        let out = self.run("systemd-analyze", &["security", "--no-pager", unit]);
        let security = String::from_utf8_lossy(&out.stdout).into_owned();
        let exposure: f64 = security
            .lines()
            .find_map(|l| l.split("Overall exposure level for ").nth(1))
            .and_then(|rest| rest.split(": ").nth(1))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no exposure level in:\n{security}"));
        super::note!("systemd-analyze security {unit}: exposure {exposure}");
        assert!(exposure <= max, "exposure {exposure} > {max}:\n{security}");
    }

    /// `systemctl args` inside the namespaces.
    pub fn systemctl(&self, args: &[&str]) -> Output {
        self.run("systemctl", args)
    }

    /// `systemctl args`, panicking with its output and systemd's log if it fails.
    pub fn systemctl_ok(&self, args: &[&str]) -> String {
        let out = self.systemctl(args);
        let text = super::assert::output_text(&out);
        assert!(out.status.success(), "systemctl {args:?} failed: {text}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Property `prop` of `unit` (`systemctl show -p <prop> --value`).
    pub fn show(&self, unit: &str, prop: &str) -> String {
        let value = self.systemctl_ok(&["show", "-p", prop, "--value", unit]);
        value.trim().to_string()
    }

    /// A path inside the namespace's mount view, reachable from the host
    /// through `/proc/<pid>/root`.
    pub fn path(&self, inside: &Path) -> PathBuf {
        let rel = inside.strip_prefix("/").unwrap_or(inside);
        PathBuf::from(format!("/proc/{}/root", self.pid)).join(rel)
    }

    /// Writes a unit file (or drop-in, with `name` like `x.service.d/y.conf`)
    /// into `/run/systemd/system` inside the namespace.
    pub fn write_unit(&self, name: &str, content: &str) {
        let path = self.path(Path::new("/run/systemd/system")).join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("unit dir");
        }
        std::fs::write(&path, content).expect("write unit");
    }

    /// Removes a unit file or drop-in written by [`NsSystemd::write_unit`].
    pub fn remove_unit(&self, name: &str) {
        let path = self.path(Path::new("/run/systemd/system")).join(name);
        std::fs::remove_file(&path).expect("remove unit");
    }
}

impl Drop for NsSystemd {
    fn drop(&mut self) {
        // SIGKILL to PID 1 of a PID namespace kills every process in it.
        // Only while unshare runs is that pid still systemd's: `unshare
        // --fork` reaps its child and exits, and then the pid may be reused.
        if let Ok(None) = self.unshare.try_wait() {
            let _ = kill(Pid::from_raw(self.pid), Signal::SIGKILL);
        }
        let _ = self.unshare.wait();
        remove_cgroups(&self.cgroups);
    }
}

/// A cgroup of this boot's in each hierarchy the test process is in,
/// created below the test's own (v1's cpuset left out: a task can join a
/// new one only once its CPUs and nodes are set, and systemd does not use
/// it). A hierarchy where none can be made is left as it is. The first boot
/// of a process removes those of killed runs.
fn boot_cgroups(scratch: &tempfile::TempDir) -> Vec<PathBuf> {
    let read = |p| std::fs::read_to_string(p).unwrap_or_default();
    let (own, mounts) = (read("/proc/self/cgroup"), read("/proc/self/mountinfo"));
    let parents: Vec<PathBuf> = own
        .lines()
        .filter_map(|line| {
            let (_, rest) = line.split_once(':')?;
            let (controllers, path) = rest.split_once(':')?;
            let skip = controllers.split(',').any(|c| c == "cpuset");
            let mount = cgroup_mount(&mounts, controllers).filter(|_| !skip)?;
            Some(mount.join(path.trim_start_matches('/')))
        })
        .collect();
    static SWEPT: std::sync::Once = std::sync::Once::new();
    SWEPT.call_once(|| {
        let entries = parents
            .iter()
            .flat_map(std::fs::read_dir)
            .flatten()
            .flatten();
        let dead =
            entries.filter(|e| xtask::kit::site::of_dead_run(&e.file_name().to_string_lossy()));
        remove_cgroups(&dead.map(|e| e.path()).collect::<Vec<_>>());
    });
    let name = scratch.path().file_name().expect("temp dir name");
    let made = parents.into_iter().map(|p| p.join(name));
    made.filter(|dir| std::fs::create_dir(dir).is_ok())
        .collect()
}

/// Where the hierarchy of `controllers` (a `/proc/self/cgroup` field; empty
/// for cgroup2) is mounted with its root, from `/proc/self/mountinfo`.
fn cgroup_mount(mountinfo: &str, controllers: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|m| {
        let (fields, fs) = m.split_once(" - ")?;
        let fields: Vec<&str> = fields.split(' ').collect();
        let fs: Vec<&str> = fs.split(' ').collect();
        let (root, point, fstype, options) = (fields.get(3)?, fields.get(4)?, fs[0], fs.get(2)?);
        let ours = if controllers.is_empty() {
            fstype == "cgroup2"
        } else {
            let options = options.split(',');
            fstype == "cgroup"
                && controllers
                    .split(',')
                    .all(|c| options.clone().any(|o| o == c))
        };
        (ours && *root == "/").then(|| PathBuf::from(point))
    })
}

/// Removes each boot cgroup and what systemd made below it, deepest first.
/// A cgroup empties only once its last process is reaped, so a busy one is
/// tried again for a few seconds.
fn remove_cgroups(cgroups: &[PathBuf]) {
    fn subtree(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                subtree(&entry.path(), out);
            }
        }
        out.push(dir.to_owned());
    }
    for cgroup in cgroups {
        let mut dirs = Vec::new();
        subtree(cgroup, &mut dirs);
        super::wait_until(Duration::from_secs(5), || {
            dirs.retain(|d| std::fs::remove_dir(d).is_err() && d.exists());
            dirs.is_empty()
        });
    }
}

/// Runs in the forked child before exec; see the SAFETY note at the call.
fn child_setup(plan: &ChildPlan) -> std::io::Result<()> {
    fn check(r: libc::c_int) -> std::io::Result<()> {
        if r < 0 {
            Err(std::io::Error::last_os_error())
        } else {
            Ok(())
        }
    }
    fn mkdir(p: &CString) -> std::io::Result<()> {
        // SAFETY: valid C string; mkdir does not retain the pointer.
        let r = unsafe { libc::mkdir(p.as_ptr(), 0o755) };
        if r < 0 && std::io::Error::last_os_error().raw_os_error() != Some(libc::EEXIST) {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }
    // SAFETY: every call below gets valid NUL-terminated C strings (or null
    // pointers where the syscall documents them) and retains no pointer.
    unsafe {
        // unshare dies with the test thread that started it.
        check(libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL))?;
        // "0" moves the writing process (cgroup v1 and v2 alike).
        for procs in &plan.cgroup_procs {
            let fd = libc::open(procs.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
            check(fd)?;
            let written = libc::write(fd, c"0".as_ptr().cast(), 1);
            libc::close(fd);
            check(written as libc::c_int)?;
        }
        check(libc::unshare(libc::CLONE_NEWNS))?;
        check(libc::mount(
            std::ptr::null(),
            c"/".as_ptr(),
            std::ptr::null(),
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        ))?;
        for b in &plan.binds {
            let fd = libc::open(b.host.as_ptr(), libc::O_PATH | libc::O_CLOEXEC);
            check(fd)?;
            if fd != b.fd {
                check(libc::dup2(fd, b.fd))?;
                libc::close(fd);
            }
        }
        // Before the tmpfs on /tmp hides the upper layers' host paths.
        for (dir, opts) in &plan.overlays {
            check(libc::mount(
                c"overlay".as_ptr(),
                dir.as_ptr(),
                c"overlay".as_ptr(),
                0,
                opts.as_ptr().cast(),
            ))?;
        }
        for (dir, opts) in TMPFS {
            check(libc::mount(
                c"tmpfs".as_ptr(),
                dir.as_ptr(),
                c"tmpfs".as_ptr(),
                libc::MS_NOSUID | libc::MS_NODEV,
                opts.as_ptr().cast(),
            ))?;
        }
        for d in &plan.dirs {
            mkdir(d)?;
        }
        for b in &plan.binds {
            if b.is_dir {
                mkdir(&b.target)?;
            } else {
                // A file to bind onto; one that is there already will do.
                if libc::mknod(b.target.as_ptr(), libc::S_IFREG | 0o644, 0) < 0 {
                    let e = std::io::Error::last_os_error();
                    if e.raw_os_error() != Some(libc::EEXIST) {
                        return Err(e);
                    }
                }
            }
            // Recursive: a site's runtime directory is a tmpfs of its own
            // below the bound run directory.
            check(libc::mount(
                b.proc_path.as_ptr(),
                b.target.as_ptr(),
                std::ptr::null(),
                libc::MS_BIND | libc::MS_REC,
                std::ptr::null(),
            ))?;
            libc::close(b.fd);
        }
    }
    Ok(())
}

/// The repository's systemd unit directory.
pub fn unit_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../systemd")
}

/// Where the binaries under test appear inside the namespace for the units.
/// Not their own path: a checkout under /tmp would be hidden from services
/// by their `PrivateTmp=yes`.
pub const NS_BIN_DIR: &str = "/run/fleet-test-bin";

/// A unit file of the repository with binaries pointed at the ones under test.
pub fn unit_text(name: &str) -> String {
    let text = std::fs::read_to_string(unit_dir().join(name)).expect("read unit");
    text.replace("/usr/bin/", &format!("{NS_BIN_DIR}/"))
}

/// Boots systemd with the site's directories and the binaries bound in, and
/// the units installed.
pub fn boot_for(site: &TestSite) -> NsSystemd {
    let layout = site.layout();
    let bin_dir = bin("fleet-waker").parent().expect("bin dir").to_owned();
    let ns = NsSystemd::boot_private(
        &[
            Bind::new("/run/docker.sock", "/run/docker.sock"),
            Bind::new(&layout.run_dir, "/run/docker-apps"),
            Bind::new(&layout.state_dir, "/run/fleet"),
            Bind::new(&layout.sites_dir, "/run/fleet-sites"),
            // The binaries stay where they are for commands run with nsenter,
            // even when the checkout is under /tmp (hidden by the namespace's
            // tmpfs otherwise), and appear at NS_BIN_DIR for the units.
            Bind::new(&bin_dir, &bin_dir),
            Bind::new(&bin_dir, NS_BIN_DIR),
        ],
        &[],
    );
    for unit in ["fleet-waker@.socket", "fleet-waker@.service"] {
        ns.write_unit(unit, &unit_text(unit));
    }
    ns.systemctl_ok(&["daemon-reload"]);
    ns
}

/// `fleet-renew args` inside the namespaces.
pub fn run_renew(ns: &NsSystemd, args: &[&str]) -> Output {
    ns.command(bin("fleet-renew"))
        .args(args)
        .output()
        .expect("run fleet-renew")
}

/// The drop-in with which [`drive_socket_into_limit`] makes every start of a
/// waker service fail; remove it (and `daemon-reload`) to fix the cause.
pub const FAILING_SERVICE_DROPIN: &str = "fleet-waker@.service.d/fail.conf";

/// Drives `site`'s socket unit into systemd's limit: a drop-in makes the
/// service fail before the waker even runs, and each connection triggers a
/// start, until systemd gives up on the socket (`service-start-limit-hit`
/// or `trigger-limit-hit`). Returns the socket unit's `Result` and
/// `ActiveState`; panics if it never failed or failed for another reason.
/// The failing drop-in is left in place.
pub fn drive_socket_into_limit(ns: &NsSystemd, site: &TestSite) -> String {
    let socket_unit = format!("fleet-waker@{}.socket", site.name());
    // systemd's default start limit is 5 starts in 10 s: a loaded host may
    // not fit 5 failed starts in 10 s, so they are counted over 5 min. That
    // drop-in stays: a newer systemd keeps the start counter across a
    // reload only while the limit is unchanged, and the cause is removed
    // alone.
    ns.write_unit(
        "fleet-waker@.service.d/limit.conf",
        "[Unit]\nStartLimitIntervalSec=5min\nStartLimitBurst=5\n",
    );
    ns.write_unit(
        FAILING_SERVICE_DROPIN,
        "[Service]\nExecStartPre=/bin/false\n",
    );
    ns.systemctl_ok(&["daemon-reload"]);
    ns.systemctl_ok(&["start", &socket_unit]);
    let failed = super::wait_until(Duration::from_secs(60), || {
        let _ = super::wake::hello(&site.waker_socket());
        let state = ns.systemctl(&["is-failed", &socket_unit]);
        String::from_utf8_lossy(&state.stdout).trim() == "failed"
    });
    let show = ns.systemctl_ok(&["show", "-p", "Result", "-p", "ActiveState", &socket_unit]);
    assert!(failed, "socket never failed: {show}");
    assert!(
        show.contains("limit-hit"),
        "socket failed for another reason: {show}"
    );
    assert!(
        super::wake::hello(&site.waker_socket()).is_err(),
        "a failed socket must not answer"
    );
    show.replace('\n', " ")
}

/// Installs the repository's `fleet-reaper.service` and `fleet-reaper.timer`
/// with the test's drop-ins (`service`: lines of a `[Service]` section, e.g.
/// the sites directory; `timer`: a whole `[Timer]` section replacing the
/// minute's schedule), then `daemon-reload`. The timer is not started.
pub fn install_reaper(ns: &NsSystemd, service: &str, timer: &str) {
    for unit in ["fleet-reaper.service", "fleet-reaper.timer"] {
        ns.write_unit(unit, &unit_text(unit));
    }
    ns.write_unit(
        "fleet-reaper.service.d/test.conf",
        &format!("[Service]\n{service}"),
    );
    ns.write_unit("fleet-reaper.timer.d/test.conf", timer);
    ns.systemctl_ok(&["daemon-reload"]);
}

/// Where the tests' reaper units append fleet-reaper's stderr.
pub const REAPER_LOG: &str = "/run/fleet-reaper.log";

/// Where [`RECORD_REAPER_RUNS`] appends one line per finished reaper run
/// inside the namespace: `$SERVICE_RESULT $EXIT_CODE $EXIT_STATUS`.
pub const REAPER_RUNS: &str = "/run/fleet-reaper.runs";

/// A `[Service]` line for [`install_reaper`] that records each run's result
/// in [`REAPER_RUNS`], from an unsandboxed `ExecStopPost=` (`+`) so the
/// service's own `ProtectSystem=strict` does not stop it.
pub const RECORD_REAPER_RUNS: &str = "ExecStopPost=+/bin/sh -c 'echo \"$$SERVICE_RESULT $$EXIT_CODE $$EXIT_STATUS\" >> /run/fleet-reaper.runs'\n";

/// The reaper runs recorded so far (see [`RECORD_REAPER_RUNS`]).
pub fn reaper_runs(ns: &NsSystemd) -> Vec<String> {
    std::fs::read_to_string(ns.path(Path::new(REAPER_RUNS)))
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}
