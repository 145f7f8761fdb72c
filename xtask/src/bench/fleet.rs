//! `cargo xtask bench fleet [N]`: a crawler's sweep over N sleeping sites.
//!
//! N stopped sites (default 300), each with its own runtime tmpfs, container
//! (one php-fpm worker) and a fleet-waker under real socket activation
//! (`systemd-socket-activate`, which starts the waker on the first
//! connection), all sharing one state directory and so the host's wake
//! slots; one nginx in front, configured from `contrib/nginx`'s proxy-mode
//! file with default timeouts. Then one request to every site at once.
//!
//! Reported: answers by status (and wrong bodies), the time to the last
//! answer against N ÷ the bare start rate measured in the same run (K
//! containers at a time through the API until php-fpm accepts), the peak
//! number of wakes holding a slot at once (from the wakers' logs), the
//! wakers' memory before and after they exit idle, and one fleet-reaper
//! pass over the N sites. Release builds. Needs root, Docker, nginx and
//! systemd-socket-activate.

use std::path::Path;
use std::sync::Barrier;
use std::time::{Duration, Instant};

use crate::bench::waker::{api_post, fpm_accepts};
use xtask::Error;
use xtask::error::run;
use xtask::kit::process::SocketActivated;
use xtask::kit::reaper::Reaper;

use crate::proc::{NGINX_USER, parallel, require, rm_containers, rss_kib, waker};
use xtask::kit::free_port;
use xtask::kit::nginx::{Mode, NGINX, NginxProc, Server, share_socket_with_nginx, site_snippet};
use xtask::kit::site::hello_line;
use xtask::wait::wait_until;
use xtask::wakes::{peak_overlap, slot_window};

/// How long an idle waker lives on here (the unit ships 5 min): longer than
/// the sweep, so every waker is still there when its memory is measured.
const IDLE_EXIT: Duration = Duration::from_secs(90);

/// Everything made for the run; removed on drop (containers, mounts, dir).
struct Fleet {
    /// The kit's temp dir (`/tmp/fleet-it-<pid>-fleet-…`, swept if the run
    /// dies); removes itself after the drop below.
    dir: tempfile::TempDir,
    sites: Vec<String>,
}

impl Drop for Fleet {
    fn drop(&mut self) {
        eprintln!("==> removing {} containers", self.sites.len());
        let names: Vec<String> = self.sites.iter().map(|s| format!("{s}.fpm")).collect();
        if let Err(e) = rm_containers(&names) {
            eprintln!("{}", xtask::error::chain(&e));
        }
        xtask::kit::site::umount_under(self.dir.path());
    }
}

pub fn bench(n: usize) -> Result<String, Error> {
    require(&[
        (NGINX, "nginx-light"),
        ("/usr/bin/systemd-socket-activate", "systemd"),
    ])?;
    xtask::kit::build("release", &["fleet-waker", "fleet-reaper"])?;
    let waker_bin = xtask::kit::release_bin("fleet-waker");
    let reaper_bin = xtask::kit::release_bin("fleet-reaper");
    let image = crate::image::ensure_image_info()?.tag;
    let k = fleet_core::admission::default_slots();
    let pid = std::process::id();
    let fleet = Fleet {
        dir: xtask::kit::site::try_temp_dir_in(Path::new("/tmp"), "fleet")?,
        sites: (0..n).map(|i| format!("b{pid}-{i}.fleet.bench")).collect(),
    };
    let dir = fleet.dir.path().to_owned();
    let dirs = ["run", "state", "sites", "www", "logs"].map(|d| dir.join(d));
    for d in &dirs {
        xtask::kit::mkdir(d)?;
    }
    let [run_dir, state, sites_dir, www, logs] = dirs;
    let ndir = dir.join("nginx"); // made by NginxProc as it starts
    xtask::kit::site::write_scripts(&www)?;
    let layout = fleet_core::Layout {
        run_dir: run_dir.clone(),
        state_dir: state,
        sites_dir: sites_dir.clone(),
    };

    eprintln!("==> creating {n} sites (runtime tmpfs, container)");
    let labels = xtask::image::test_labels();
    let t = Instant::now();
    parallel(fleet.sites.len(), 4, |i| {
        let s = &fleet.sites[i];
        let site = fleet_core::Site::new(s).map_err(|e| Error::failed(format!("site {s}"), e))?;
        fleet_core::rundir::prepare(&layout, &site, fleet_core::rundir::Limits::default())
            .map_err(|e| Error::failed(format!("runtime dir of {s}"), e))?;
        // The one way sites are made, labelled as this process's test
        // containers, so the leftover sweep removes them if the run dies.
        xtask::image::create_site_container(&xtask::image::SiteContainer {
            name: &format!("{s}.fpm"),
            image: &image,
            run_dir: &layout.site_dir(&site),
            docroot: &www,
            docroot_inside: &format!("/srv/www/{s}"),
            labels: &labels,
            env: &[
                format!("{}=1", xtask::image::CHILDREN_ENV),
                format!("FLEET_SITE={s}"),
            ],
            extra: &[],
        })
    })?;
    let setup = t.elapsed();

    // The bare start rate: K at a time through the API until php-fpm accepts.
    let sample: Vec<String> = fleet.sites.iter().take(n.clamp(1, 30)).cloned().collect();
    eprintln!(
        "==> bare start rate: {} containers, {k} at a time",
        sample.len()
    );
    let t = Instant::now();
    parallel(sample.len(), k, |i| {
        let s = &sample[i];
        let container = format!("{s}.fpm");
        api_post(&container, "start")?;
        let sock = run_dir.join(s).join("php-fpm.sock");
        fpm_accepts(&container, &sock, Duration::from_secs(60))
    })?;
    let bare_rate = sample.len() as f64 / t.elapsed().as_secs_f64();
    parallel(sample.len(), 8, |i| {
        let container = format!("{}.fpm", sample[i]);
        run("docker", &["stop", "-t", "1", &container]).map(drop)
    })?;

    eprintln!("==> {n} socket-activated wakers, nginx");
    let mut wakers: Vec<SocketActivated> = fleet
        .sites
        .iter()
        .map(|s| {
            let sock = run_dir.join(s).join("vhost-waker.sock");
            let activated = waker(&waker_bin, s, &layout, &logs.join(format!("{s}.log")))
                .arg("--exit-idle-time")
                .arg(format!("{}s", IDLE_EXIT.as_secs()))
                .try_activate(&sock)?;
            // It listens (try_activate waited for it): one nginx's workers
            // may use it (what the unit's SocketMode gives).
            share_socket_with_nginx(&sock).map_err(Error::io("share with nginx", &sock))?;
            Ok(activated)
        })
        .collect::<Result<_, Error>>()?;
    let port = free_port()?;
    // The shipped proxy-mode location for every site, behind one port told
    // apart by name; two workers and room for N clients plus N upstreams,
    // and a names hash that holds N long names.
    let hash = "server_names_hash_bucket_size 128;\nserver_names_hash_max_size 8192;";
    // Each site's docroot as its container sees it, and its snippet.
    let per_site = fleet
        .sites
        .iter()
        .map(|s| {
            let snippet = site_snippet(Mode::Proxy, s, &run_dir)?;
            Ok((
                format!("/srv/www/{s}"),
                snippet.with_workers(2, 4096).with_http(hash),
            ))
        })
        .collect::<Result<Vec<_>, Error>>()?;
    let servers: Vec<Server<'_>> = fleet
        .sites
        .iter()
        .zip(&per_site)
        .map(|(name, (root, snippet))| Server::new(port, name, root, snippet))
        .collect();
    let _nginx = NginxProc::start_servers(&ndir, NGINX_USER, &servers)?;

    eprintln!("==> one request to each of the {n} sites at once");
    let barrier = &Barrier::new(n);
    let t0 = Instant::now();
    let answers: Vec<(u16, bool, Duration)> = std::thread::scope(|sc| {
        let handles: Vec<_> = fleet
            .sites
            .iter()
            .map(|s| {
                // (status, right body, time); a failure counts as status 0.
                sc.spawn(move || {
                    barrier.wait();
                    let t = Instant::now();
                    match xtask::kit::http::get_host(port, s, "/hello.php") {
                        Ok(r) => (r.status, r.text() == hello_line(s), r.total),
                        Err(_) => (0, false, t.elapsed()),
                    }
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or((0, false, Duration::ZERO)))
            .collect()
    });
    let last = answers.iter().map(|a| a.2).max().unwrap_or_default();
    let since_start = t0.elapsed();
    let mut by_status = std::collections::BTreeMap::new();
    for a in &answers {
        *by_status.entry(a.0).or_insert(0usize) += 1;
    }
    let wrong = answers.iter().filter(|a| a.0 == 200 && !a.1).count();
    let mut windows = Vec::new();
    for s in &fleet.sites {
        let log = std::fs::read_to_string(logs.join(format!("{s}.log"))).unwrap_or_default();
        windows.extend(slot_window(&log));
    }
    let peak = peak_overlap(&windows);

    // Memory: every waker idle now; then after they exit idle.
    let pids: Vec<u32> = wakers.iter().map(|g| g.pid()).collect();
    let rss = |pids: &[u32]| -> (usize, f64) {
        let alive: Vec<u64> = pids
            .iter()
            .filter(|p| Path::new(&format!("/proc/{p}")).exists())
            .map(|&p| rss_kib(p).0)
            .filter(|&kib| kib > 0)
            .collect();
        (alive.len(), alive.iter().sum::<u64>() as f64 / 1024.0)
    };
    let (alive_before, mib_before) = rss(&pids);
    eprintln!("==> waiting {IDLE_EXIT:?} for the wakers to exit idle");
    wait_until(IDLE_EXIT + Duration::from_secs(20), || {
        wakers.iter_mut().all(|g| g.try_status().is_some())
    });
    let (alive_after, mib_after) = rss(&pids);

    // One reaper pass over the N sites (all awake: each is examined).
    for s in &fleet.sites {
        let conf = sites_dir.join(format!("{s}.conf"));
        std::fs::write(&conf, "# Amount of time to pause the container after: 1h\n")
            .map_err(Error::io("write", &conf))?;
    }
    let pass = Reaper::over(&reaper_bin, &layout).arg("--dry-run").json();
    let (reaper_secs, reaper_ok) = pass.run().map_or((f64::NAN, false), |run| {
        (run.elapsed.as_secs_f64(), run.code == Some(0))
    });

    let budget = 1.5 * n as f64 / bare_rate;
    let statuses: Vec<String> = by_status
        .iter()
        .map(|(s, c)| format!("{c} × {s}"))
        .collect();
    let (statuses, sampled, idle_secs) = (statuses.join(", "), sample.len(), IDLE_EXIT.as_secs());
    // Dropped at the return in reverse order: nginx, the wakers, the fleet.
    Ok(format!(
        "### A crawler's sweep (`cargo xtask bench fleet {n}`, release builds)\n\n\
         Machine: {} cores; K = {k} wake slots (the default: the CPU count, at least 2); \
         set-up of {n} sites took {:.0} s.\n\n\
         | measure | value | target |\n|---|---|---|\n\
         | answers | {statuses} ({wrong} wrong bodies) | {n} × 200, or fast 503s; no 502/504 |\n\
         | bare start rate ({sampled} containers, {k} at a time, until php-fpm accepts) | {bare_rate:.2} /s | |\n\
         | time to the last answer | {:.1} s (whole sweep {:.1} s) | ≤ 1.5 × N ÷ rate = {budget:.1} s |\n\
         | peak wakes holding a slot at once (wakers' logs, {} wakes) | {peak} | ≤ K = {k} |\n\
         | wakers after the sweep | {alive_before} processes, {mib_before:.0} MiB RSS | |\n\
         | wakers {idle_secs} s after their last connection (`--exit-idle-time`) | {alive_after} processes, {mib_after:.0} MiB RSS | 0 |\n\
         | one fleet-reaper pass over {n} awake sites (`--dry-run`) | {:.2} s{} | |\n",
        std::thread::available_parallelism().map_or(0, |c| c.get()),
        setup.as_secs_f64(),
        last.as_secs_f64(),
        since_start.as_secs_f64(),
        windows.len(),
        reaper_secs,
        if reaper_ok { "" } else { " (it failed)" }
    ))
}
