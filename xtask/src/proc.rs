//! Process and container guards shared by `bench` and `soak`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use nix::sys::signal::Signal;
use xtask::kit::process::{Launch, Spawned, stop};

/// A running child stopped on drop: SIGTERM, then SIGKILL after 3 s. Not
/// SIGKILL at once: systemd-socket-activate or a waker must get to clean up.
/// Only for a `Child` spawned by hand (bench/sleep.rs); new code uses
/// [`Launch`] with [`Launch::stop_with`], which stops the same way.
pub struct Guard(pub Child);

impl Drop for Guard {
    fn drop(&mut self) {
        stop(&mut self.0, Signal::SIGTERM, Duration::from_secs(3), false);
    }
}

/// A run's container and temp dir, removed on drop.
pub struct Env {
    pub dir: PathBuf,
    pub container: String,
}

impl Drop for Env {
    fn drop(&mut self) {
        let _ = Command::new("docker")
            .args(["rm", "-f", "-v", &self.container])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Runs `argv` (no shell) and returns its stdout, or an error naming the
/// command and quoting its stderr.
pub fn run(argv: &[&str]) -> Result<String, String> {
    let (program, args) = argv.split_first().ok_or("an empty command line")?;
    xtask::error::run(program, args).map_err(|e| e.to_string())
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> Result<u16, String> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    l.local_addr().map(|a| a.port()).map_err(|e| e.to_string())
}

/// One benchmark site: the tools checked, a release fleet-waker built, the
/// php-fpm image, a temp dir `/tmp/fleet-it-<pid>-<kind>` (run, state, www,
/// nginx), `hello.php`, and a created (not started) container `<site>.fpm`.
/// Container and dir are removed when `env` drops.
pub struct Rig {
    pub env: Env,
    pub site: String,
    pub run_dir: PathBuf,
    pub site_dir: PathBuf,
    pub waker_bin: PathBuf,
}

impl Rig {
    /// Sets the site up; `tools` are `(name, path)` pairs that must exist.
    pub fn new(root: &Path, kind: &str, tools: &[(&str, &str)]) -> Result<Rig, String> {
        for (what, path) in tools {
            if !Path::new(path).exists() {
                return Err(format!("{what} missing ({path})"));
            }
        }
        eprintln!("==> building fleet-waker (release)");
        run(&["cargo", "build", "--release", "-q", "-p", "fleet-waker"])?;
        let waker_bin = root.join("target/release/fleet-waker");
        let image = crate::image::ensure_image_info()
            .map_err(|e| e.to_string())?
            .tag;

        let pid = std::process::id();
        let site = format!("fleet-{kind}-{pid}");
        let dir = PathBuf::from(format!("/tmp/fleet-it-{pid}-{kind}"));
        let env = Env {
            dir: dir.clone(),
            container: format!("{site}.fpm"),
        };
        let run_dir = dir.join("run");
        let site_dir = run_dir.join(&site);
        let www = dir.join("www");
        for d in [&site_dir, &www, &dir.join("state"), &dir.join("nginx")] {
            std::fs::create_dir_all(d).map_err(|e| format!("{}: {e}", d.display()))?;
        }
        use std::os::unix::fs::PermissionsExt;
        for d in [&dir, &run_dir, &site_dir, &www] {
            let _ = std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755));
        }
        std::fs::write(www.join("hello.php"), "<?php\necho 'hello';\n")
            .map_err(|e| e.to_string())?;
        create_container(&env.container, &site_dir, &www, "/srv/www", &image, &[])?;
        Ok(Rig {
            env,
            site,
            run_dir,
            site_dir,
            waker_bin,
        })
    }

    /// The temp dir.
    pub fn dir(&self) -> &Path {
        &self.env.dir
    }

    /// Runs fleet-waker for the site with `--listen socket` (log in
    /// `<dir>/waker.log`) and waits for its `READY=1` on a notify socket of
    /// our own. Not by connecting to it: a probe connection to a sleeping
    /// site would itself wake the container.
    pub fn spawn_waker(&self, socket: &Path) -> Result<Spawned, String> {
        self.spawn_waker_bin(&self.waker_bin, socket)
    }

    /// Like [`Rig::spawn_waker`] with another fleet-waker binary (an older
    /// build, measured in the same run).
    pub fn spawn_waker_bin(&self, bin: &Path, socket: &Path) -> Result<Spawned, String> {
        Launch::new(bin)
            .arg(&self.site)
            .arg("--listen")
            .arg(socket)
            .arg("--run-dir")
            .arg(&self.run_dir)
            .arg("--state-dir")
            .arg(self.dir().join("state"))
            // info: start-up and one line per wake (with its duration),
            // nothing per connection.
            .env("RUST_LOG", "info")
            .log_to(self.dir().join("waker.log"))
            .notify_ready(Duration::from_secs(5))
            .stop_with(Signal::SIGTERM, Duration::from_secs(3))
            .same_group()
            .try_spawn()
            .map_err(|e| xtask::error::chain(&e))
    }

    /// nginx's directory (config, logs, temp paths).
    pub fn nginx_dir(&self) -> PathBuf {
        self.dir().join("nginx")
    }
}

/// The user nginx's workers run as in the benches and the soak: root, as
/// they are (the sockets they pass to are root's and not shared with
/// www-data); the benches measure, the integration tests check the modes.
pub const NGINX_USER: Option<&str> = Some("root root");

/// Runs `f(0..n)` on `threads` threads; the first error wins.
pub fn parallel(
    n: usize,
    threads: usize,
    f: impl Fn(usize) -> Result<(), String> + Sync,
) -> Result<(), String> {
    let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                let next = std::sync::Arc::clone(&next);
                let f = &f;
                s.spawn(move || -> Result<(), String> {
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        if i >= n {
                            return Ok(());
                        }
                        f(i)?;
                    }
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err("worker panicked".into())))
            .collect::<Result<Vec<()>, String>>()
            .map(|_| ())
    })
}

/// `docker create` of a benchmark site's container (the one way sites are
/// made, [`xtask::image::create_site_container`]): labelled as a test
/// container of this process, so the tests' leftover check sweeps it if the
/// run dies; `env` is `KEY=value`.
pub fn create_container(
    name: &str,
    run_dir: &Path,
    www: &Path,
    docroot_inside: &str,
    image: &str,
    env: &[&str],
) -> Result<(), String> {
    let labels = xtask::image::test_labels();
    let env: Vec<String> = env.iter().map(|e| e.to_string()).collect();
    xtask::image::create_site_container(&xtask::image::SiteContainer {
        name,
        image,
        run_dir,
        docroot: www,
        docroot_inside,
        labels: &labels,
        env: &env,
        extra: &[],
    })
    .map_err(|e| xtask::error::chain(&e))
}
