//! Bad input (issue 8): site names for every binary, on-demand conf files
//! for the reaper, and socket-activation / notify environment garbage for the
//! waker. Each case: a clear error naming the input, the documented exit
//! code, and nothing touched (no file created, changed or followed).
//!
//! Related cases already covered elsewhere (not repeated here):
//! `reaper::malformed_conf_files_are_each_reported_and_the_others_handled`
//! (10 conf shapes, symlink to /etc/passwd, directory), `waker::usage_errors_exit_64`,
//! `renew::renew_reports_a_bad_site_and_renews_the_good_one`.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::stat::Mode;
use nix::unistd::mkfifo;
use serde_json::Value;
use xtask::error::{Cmd, or_panic};

use crate::support::assert::plan_entry;
use crate::support::reaper::{self, ReaperExt as _, RunExt as _};
use crate::support::{self, Launch, Spawned, TestSite, bin, require, wait_until};

/// At least 30 bad site names: traversal, shell metacharacters, unicode
/// look-alikes, lengths, DNS rule breakers. None contains NUL (argv cannot
/// carry one; the conf file list cannot either: a file name has no NUL).
fn bad_names() -> Vec<String> {
    let mut v: Vec<String> = [
        "",
        ".",
        "..",
        "../etc",
        "../../../../etc/passwd",
        "/etc/passwd",
        "a/b",
        "a\\b",
        "a;rm -rf /",
        "$(reboot)",
        "`id`",
        "a|b",
        "a&b",
        "a b",
        " example.com",
        "example.com\n",
        "a\tb",
        "a*",
        "a?",
        "~root",
        "-",
        "-a.com",
        "a-.com",
        ".a.com",
        "a.com.",
        "a..com",
        "a_b.com",
        "a:b",
        "user@a.com",
        "%2e%2e",
        "a'b",
        "a\"b",
        "{site}",
        "a\u{7f}b",
        "\u{435}xample.com",   // Cyrillic 'е'
        "example\u{200b}.com", // zero-width space
        "\u{ff45}xample.com",  // full-width 'ｅ'
        "exa\u{301}mple.com",  // combining accent
        "example.com\u{202e}", // right-to-left override
        "ex\u{0430}mple.com",  // Cyrillic 'а'
        "a\u{2024}com",        // one-dot leader, a dot look-alike
        "a\u{ff0e}com",        // full-width full stop
        "*.example.com",
        "a\rb",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    v.push(format!("{}.com", "a".repeat(64))); // label of 64
    v.push(["a".repeat(63).as_str(); 4].join(".") + ".ab"); // 258 chars
    v.push("a".repeat(10_000));
    v
}

/// A name cut to 40 characters for notes.
fn short(name: &str) -> String {
    let s: String = name.chars().take(40).collect();
    if s.len() < name.len() {
        format!("{s}… ({} chars)", name.chars().count())
    } else {
        s
    }
}

/// Files and directories under `dir`, recursively (what "nothing touched" compares).
fn tree(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    // A missing directory and entries that cannot be read count as nothing.
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        out.push(e.path());
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            out.extend(tree(&e.path()));
        }
    }
    out.sort();
    out
}

/// fleet-waker with its run and state directories at `run` and `state`
/// (`FLEET_RUN_DIR`, `FLEET_STATE_DIR`), `NO_COLOR=1`.
fn waker_in(run: &Path, state: &Path) -> Launch {
    Launch::new(bin("fleet-waker"))
        .env("FLEET_RUN_DIR", run.display().to_string())
        .env("FLEET_STATE_DIR", state.display().to_string())
        .env("NO_COLOR", "1")
}

/// Waits for `w`'s exit (at most 10 s): its exit code and stderr.
fn exited(w: &mut Spawned, what: &str) -> (Option<i32>, String) {
    let status = w
        .wait_exit(Duration::from_secs(10))
        .unwrap_or_else(|| panic!("{what}: still running: {}", w.logs()));
    (status.code(), w.stderr())
}

/// Runs `w` to its exit: [`exited`].
fn run_to_exit(w: Launch, what: &str) -> (Option<i32>, String) {
    exited(&mut w.spawn(), what)
}

/// fleet-renew `args` with its run and state directories at `run` and
/// `state`, `NO_COLOR=1`, and a Docker host that does not exist: nothing
/// may be asked of Docker for an invalid name. Its exit code, stdout and
/// stderr.
fn renew(run: &Path, state: &Path, args: &[&OsStr]) -> (Option<i32>, String, String) {
    let renew = Cmd::new(bin("fleet-renew"))
        .args(args)
        .env("FLEET_RUN_DIR", run)
        .env("FLEET_STATE_DIR", state)
        .env("DOCKER_HOST", "unix:///nonexistent/docker.sock")
        .env("NO_COLOR", "1");
    let out = or_panic(renew.output());
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.code(), text(&out.stdout), text(&out.stderr))
}

/// The rule message of a rejected name must quote it (Rust `{:?}`), except
/// the empty name, which is named as such.
fn assert_names(err: &str, name: &str) {
    if name.is_empty() {
        assert!(err.contains("site name is empty"), "{name:?}: {err}");
    } else {
        let quoted = format!("{name:?}");
        assert!(err.contains(&quoted), "{quoted} not quoted: {err}");
    }
    assert!(err.contains("rule"), "{name:?}: no rule in {err}");
}

#[test]
fn waker_rejects_bad_site_names_with_64_and_touches_nothing() {
    let names = bad_names();
    assert!(names.len() >= 30);
    let dir = support::temp_dir("badname");
    let run = dir.path().join("run");
    let state = dir.path().join("state");
    std::fs::create_dir(&run).expect("mkdir run");
    std::fs::create_dir(&state).expect("mkdir state");
    let listen = dir.path().join("w.sock");
    let before = tree(dir.path());
    for name in &names {
        // `--` so that "-", "-a.com" reach the site validation, not clap.
        let waker = waker_in(&run, &state).arg("--listen").arg(&listen);
        let (code, err) = run_to_exit(waker.arg("--").arg(name), &format!("{name:?}"));
        assert_eq!(code, Some(64), "{name:?}: {err}");
        assert!(err.starts_with("fleet-waker: "), "{name:?}: {err}");
        assert_names(&err, name);
        assert_eq!(tree(dir.path()), before, "{name:?} touched the file system");
    }
    support::note!("{} bad names: all exit 64, nothing created", names.len());
}

/// A name that is not UTF-8 at all (argv can carry any bytes). Also any
/// clap-level usage error of the waker (e.g. `--bogus`) exits the same way.
#[test]
fn waker_rejects_a_non_utf8_site_name_with_64() {
    let dir = support::temp_dir("badname");
    let listen = dir.path().join("w.sock");
    let name = OsStr::from_bytes(b"caf\xe9.com");
    let waker = Launch::new(bin("fleet-waker"));
    let (code, err) = run_to_exit(waker.clone().arg("--listen").arg(&listen).arg(name), "café");
    assert!(!listen.exists());
    assert!(err.contains("UTF-8"), "{err}");
    assert_eq!(
        code,
        Some(64),
        "documented: 64 bad command line; got {code:?}: {err}"
    );
    let (code, err) = run_to_exit(waker.args(["example.com", "--bogus"]), "--bogus");
    assert_eq!(code, Some(64), "{err}");
}

#[test]
fn renew_rejects_bad_site_names_with_64_and_touches_nothing() {
    let names = bad_names();
    let dir = support::temp_dir("badname");
    let before = tree(dir.path());
    let (run, state) = (dir.path().join("run"), dir.path().join("state"));
    let renew = |names: &[&OsStr]| {
        let args = [&["--dry-run", "--"].map(OsStr::new)[..], names].concat();
        renew(&run, &state, &args)
    };
    let invalid = "FAILED\tinvalid site name";
    for name in &names {
        let (code, out, err) = renew(&[OsStr::new(name)]);
        assert_eq!(code, Some(64), "{name:?}: {err}");
        assert_names(&err, name);
        assert!(out.contains(invalid), "{name:?}");
        assert_eq!(tree(dir.path()), before, "{name:?} touched the file system");
    }
    // All at once: each reported, still 64 (no valid site at all).
    let all: Vec<&OsStr> = names.iter().map(OsStr::new).collect();
    let (code, out, _) = renew(&all);
    assert_eq!(code, Some(64));
    assert_eq!(out.matches(invalid).count(), names.len());
    // Not UTF-8: clap refuses it, usage error.
    let (code, _, err) = renew(&[OsStr::from_bytes(b"caf\xe9.com")]);
    assert_eq!(code, Some(64), "{err}");
    assert!(err.contains("UTF-8"), "{err}");
}

/// One reaper pass over a sites directory: `--dry-run --format json`.
fn reaper_json(sites: &Path, state: &Path) -> (Option<i32>, Value, String) {
    let run = reaper::reaper()
        .dirs(sites, state)
        .arg("--dry-run")
        .json()
        .pass();
    (run.code, run.plan(), run.stderr)
}

/// The plan entry whose error names `path`.
fn entry_naming<'a>(json: &'a Value, path: &Path) -> Option<&'a Value> {
    let p = path.display().to_string();
    json["sites"]
        .as_array()
        .expect("sites")
        .iter()
        .find(|e| e["error"].as_str().is_some_and(|err| err.contains(&p)))
}

/// What "left alone" compares: type, content (regular files), link target,
/// mtime.
fn fingerprint(path: &Path) -> String {
    let meta = std::fs::symlink_metadata(path).expect("still there");
    let ft = meta.file_type();
    let what = if ft.is_symlink() {
        format!("link->{:?}", std::fs::read_link(path).expect("readlink"))
    } else if ft.is_file() {
        let bytes = std::fs::read(path).expect("read");
        format!(
            "file {} bytes {:x?}",
            bytes.len(),
            &bytes[..bytes.len().min(64)]
        )
    } else {
        format!("{ft:?}")
    };
    format!("{what} mtime {:?}", meta.modified().expect("mtime"))
}

/// One dry reaper pass over `good`'s sites directory, where the bad conf
/// files `paths` are too: exit 1, the good site handled, every bad file
/// left as it was. The plan and the log.
fn reap_among(good: &TestSite, paths: &[PathBuf]) -> (Value, String) {
    let before: Vec<String> = paths.iter().map(|p| fingerprint(p)).collect();
    let (code, json, stderr) = reaper_json(&good.layout().sites_dir, &good.layout().state_dir);
    assert_eq!(code, Some(1), "{stderr}");
    let g = plan_entry(&json, good.name());
    assert!(g["error"].is_null(), "good site: {g}");
    for (path, before) in paths.iter().zip(before) {
        assert_eq!(fingerprint(path), before, "{} was changed", path.display());
    }
    (json, stderr)
}

/// Reaper: conf files named after bad site names. Names with '/' cannot be
/// file names (N/A); the others are `<name>.conf`, plus non-UTF-8 names.
#[test]
fn reaper_reports_each_bad_conf_file_name_and_handles_the_good_site() {
    require!(Docker, PhpFpm);
    let good = TestSite::new();
    let sites = good.layout().sites_dir.clone();
    let good_conf = good.write_conf("20m");
    // A 10 000-character name is too long for a file name (255 bytes): N/A too.
    let (na, names): (Vec<_>, Vec<_>) = bad_names()
        .into_iter()
        .map(|name| format!("{name}.conf"))
        .partition(|file| file.contains('/') || file.len() > 255);
    let raw = [&b"caf\xe9.com.conf"[..], b"\xff\xfe.conf", b"a\x01b.conf"];
    let names = names
        .iter()
        .map(OsStr::new)
        .chain(raw.map(OsStr::from_bytes));
    let files: Vec<PathBuf> = names.map(|file| sites.join(file)).collect();
    for path in &files {
        std::fs::write(path, b"# pause after: 20m\n").expect("write conf");
    }
    assert!(files.len() >= 30, "{} cases", files.len());
    let (json, _) = reap_among(&good, &files);
    for path in &files {
        let e = entry_naming(&json, path)
            .unwrap_or_else(|| panic!("no error entry naming {}: {json:#}", path.display()));
        let err = e["error"].as_str().expect("error");
        assert!(
            err.contains("does not name a valid site") || err.contains("not UTF-8"),
            "{}: {err}",
            path.display()
        );
        assert_eq!(e["verdict"], "error");
        assert_eq!(e["action"], "none");
    }
    assert!(good_conf.exists());
    let na: Vec<String> = na.iter().map(|file| short(file)).collect();
    support::note!(
        "{} bad conf file names reported, good site handled; N/A (not a file name): {na:?}",
        files.len()
    );
}

/// How a bad conf file is made.
enum Make<'a> {
    Bytes(&'a [u8]),
    Symlink(PathBuf),
    Dir,
    Fifo,
    Socket,
}

#[test]
fn reaper_reports_each_bad_conf_file_and_leaves_it_alone() {
    require!(Docker, PhpFpm);
    let good = TestSite::new();
    good.write_conf("20m");
    let sites = good.layout().sites_dir.clone();
    let elsewhere = good.temp_dir().join("elsewhere.conf");
    std::fs::write(&elsewhere, b"# pause after: 20m\n").expect("write");
    // U+FEFF first: the byte order mark, ff fe (LE) or fe ff (BE).
    let utf16 = |encode: fn(u16) -> [u8; 2]| -> Vec<u8> {
        let text = "\u{feff}# pause after: 20m\n".encode_utf16();
        text.flat_map(encode).collect()
    };
    let (utf16le, utf16be) = (utf16(u16::to_le_bytes), utf16(u16::to_be_bytes));
    let long_line = format!("# {}: 20m\n", "x".repeat(4100)).into_bytes();
    let mut huge_no_nl = b"# pause after: 20m".to_vec();
    huge_no_nl.extend(std::iter::repeat_n(b' ', 8 << 20));
    let mut elf = b"\x7fELF\x02\x01\x01\0".to_vec();
    elf.extend([0u8; 56]);
    // (stem, content, what the error must say)
    let files: Vec<(&str, &[u8], &str)> = vec![
        ("empty", b"", "is empty"),
        ("blank", b"\n# pause after: 20m\n", "line 1 is blank"),
        ("spaces", b"   \t \n", "line 1 is blank"),
        ("bom-only", b"\xef\xbb\xbf", "is empty"),
        ("bom-blank", b"\xef\xbb\xbf\r\n# x: 20m", "line 1 is blank"),
        ("nocolon", b"# pause after 20m\n", "no colon"),
        ("colon-only", b":\n", "nothing after its first colon"),
        ("second-colon", b"# a: b: 20m\n", "bad duration"),
        ("nul-first", b"\0# pause after: 20m\n", "NUL"),
        ("elf", &elf, "binary"),
        (
            "escape",
            b"# pause \x1b[31mafter: 20m\n",
            "control character",
        ),
        ("del", b"# pause after: 20m\x7f\n", "control character"),
        (
            "cr-only",
            b"# pause after: 20m\r# next\r",
            "control character",
        ),
        (
            "latin1",
            b"# Zeit bis zur Pause \xe4: 20m\n",
            "invalid UTF-8",
        ),
        ("utf16le", &utf16le, "binary"),
        ("utf16be", &utf16be, "binary"),
        ("long-line", &long_line, "bytes long"),
        ("huge-no-newline", &huge_no_nl, "bytes long"),
    ];
    // Line 1 `# pause after: <value>`: (stem, value, what the error must say).
    let durations: Vec<(&str, Vec<u8>, &str)> = [
        ("noduration", "  ", "nothing after its first colon"),
        ("words", "twenty minutes", "bad duration"),
        ("negative", "-5m", "bad duration"),
        ("unitless", "20", "bad duration"),
        ("badunit", "20parsecs", "bad duration"),
        ("exponent", "1e3s", "bad duration"),
        ("hex", "0x10m", "bad duration"),
        ("fullwidth", "\u{ff12}\u{ff10}m", "bad duration"),
        ("zero", "0s", "is zero"),
        ("zero-sum", "0h 0m 0s", "is zero"),
        ("zero-ns", "0ns", "is zero"),
        ("enormous", "400days", "longer than the maximum"),
        ("just-over", "30days 1s", "longer than the maximum"),
        ("overflow", "99999999999999999999999h", "bad duration"),
        ("u64-secs", "18446744073709551615s", "duration"),
        ("nul", "2\0m", "NUL"),
    ]
    .map(|(stem, value, why)| (stem, format!("# pause after: {value}\n").into_bytes(), why))
    .into();
    let link = |to: &str| Make::Symlink(to.into());
    let others = vec![
        ("symlink-out", Make::Symlink(elsewhere.clone()), "symlink"),
        ("symlink-passwd", link("/etc/shadow"), "symlink"),
        ("dangling", link("/nonexistent/x.conf"), "symlink"),
        ("directory", Make::Dir, "not a regular file"),
        ("fifo", Make::Fifo, "not a regular file"),
        ("socket", Make::Socket, "cannot open conf file"),
    ];
    let durations = durations.iter().map(|(stem, c, why)| (*stem, &c[..], *why));
    let files = (files.into_iter().chain(durations))
        .map(|(stem, content, why)| (stem, Make::Bytes(content), why));
    let cases: Vec<(&str, Make<'_>, &str)> = files.chain(others).collect();
    let mut paths = Vec::new();
    let mut _held = Vec::new();
    for (stem, make, _) in &cases {
        let path = sites.join(format!("{stem}.conf.fleet.test.conf"));
        match make {
            Make::Bytes(bytes) => std::fs::write(&path, bytes).expect("write"),
            Make::Symlink(to) => std::os::unix::fs::symlink(to, &path).expect("symlink"),
            Make::Dir => std::fs::create_dir(&path).expect("mkdir"),
            Make::Fifo => mkfifo(&path, Mode::from_bits_truncate(0o644)).expect("mkfifo"),
            Make::Socket => _held.push(UnixListener::bind(&path).expect("bind")),
        }
        paths.push(path);
    }
    assert!(cases.len() >= 30);
    let elsewhere_before = fingerprint(&elsewhere);
    let started = std::time::Instant::now();
    let (json, stderr) = reap_among(&good, &paths);
    let elapsed = started.elapsed();
    let mut failures = Vec::new();
    for ((stem, _, why), path) in cases.iter().zip(&paths) {
        match entry_naming(&json, path) {
            None => failures.push(format!("{stem}: no error entry naming the file")),
            Some(e) => {
                let err = e["error"].as_str().unwrap_or_default();
                if !err.contains(why) {
                    failures.push(format!("{stem}: {err:?} does not say {why:?}"));
                }
                if e["verdict"] != "error" || e["action"] != "none" {
                    failures.push(format!("{stem}: {e}"));
                }
            }
        }
        if !stderr.contains(&path.display().to_string()) {
            failures.push(format!("{stem}: the log does not name the file"));
        }
    }
    assert!(failures.is_empty(), "{}\n{json:#}", failures.join("\n"));
    assert_eq!(fingerprint(&elsewhere), elsewhere_before);
    assert!(
        !stderr.contains("root:") && !json.to_string().contains("root:"),
        "a symlink target was read"
    );
    // A FIFO must not block the pass (opened non-blocking, then refused).
    assert!(elapsed < Duration::from_secs(20), "pass took {elapsed:?}");
    support::note!(
        "{} bad conf files: each reported with its path, exit 1, good site handled, all unchanged ({elapsed:?})",
        cases.len()
    );
}

/// Valid shapes that must be accepted (the old script's files were written
/// by hand on many systems): CRLF, BOM, tabs, trailing junk after line 1.
#[test]
fn reaper_accepts_crlf_bom_tabs_and_junk_after_line_one() {
    require!(Docker, PhpFpm);
    let good = TestSite::new();
    let conf = good.layout().conf_file(good.site());
    for (what, content) in [
        ("crlf", &b"# pause after: 20m\r\n# more\r\n"[..]),
        ("bom", b"\xef\xbb\xbf# pause after: 20m\n"),
        ("bom+crlf", b"\xef\xbb\xbf# pause after: 20m\r\n"),
        ("tabs", b"# pause after:\t20m\t\n"),
        ("no newline", b"# pause after: 20m"),
        ("junk after", b"# pause after: 20m\n\0\xff\xfe binary junk"),
        ("compound", b"# pause after: 1h 30m\n"),
    ] {
        std::fs::write(&conf, content).expect("write");
        let before = fingerprint(&conf);
        let (code, json, stderr) = reaper_json(&good.layout().sites_dir, &good.layout().state_dir);
        assert_eq!(code, Some(0), "{what}: {stderr}\n{json:#}");
        let e = &json["sites"][0];
        assert_eq!(e["site"], good.name(), "{what}");
        assert!(e["error"].is_null(), "{what}: {e}");
        assert_eq!(fingerprint(&conf), before, "{what}");
    }
}

/// Runs the waker under real socket activation with `env` (given with
/// `systemd-socket-activate -E`, which come before its own LISTEN_* in the
/// environment, so getenv(3) sees ours), triggers it with one connection and
/// returns its exit code and stderr.
fn activated_with(env: &[(&str, &str)], args: &[&str]) -> (Option<i32>, String) {
    let dir = support::temp_dir("listen");
    let socket = dir.path().join("w.sock");
    let mut w = waker_in(dir.path(), dir.path())
        .arg("garbage.fleet.test")
        .args(args)
        .envs(env.iter().copied())
        .activate(&socket);
    drop(UnixStream::connect(&socket).expect("connect to trigger activation"));
    exited(&mut w, &format!("{env:?}"))
}

#[test]
fn waker_listen_env_garbage() {
    // LISTEN_PID garbage needs no activation: any value is checked before fd 3.
    let dir = support::temp_dir("listen");
    for pid in [
        "",
        "abc",
        "-1",
        "0",
        "1",
        " ",
        "+5",
        "0x10",
        "1e3",
        "12 34",
        "99999999999999999999",
        "\u{0663}", // Arabic-Indic three
    ] {
        let waker = waker_in(dir.path(), dir.path()).arg("garbage.fleet.test");
        let what = format!("LISTEN_PID={pid:?}");
        let (code, err) = run_to_exit(waker.env("LISTEN_PID", pid).env("LISTEN_FDS", "1"), &what);
        assert_eq!(code, Some(64), "{what}: {err}");
        assert!(err.contains("LISTEN_PID"), "{what}: {err}");
    }
    assert!(tree(dir.path()).is_empty());
    // LISTEN_FDS missing with LISTEN_PID set: "nothing passed".
    let waker = Cmd::new(bin("fleet-waker")).arg("garbage.fleet.test");
    let waker = waker.env("LISTEN_PID", "1").env_remove("LISTEN_FDS");
    let (code, err) = run_to_exit(waker.into(), "LISTEN_FDS missing");
    assert_eq!(code, Some(64), "{err}");
    assert!(err.contains("no listening socket was passed"), "{err}");
}

#[test]
fn waker_listen_fds_and_fdnames_garbage_under_activation() {
    require!(SocketActivate);
    for (var, value, want) in [
        ("LISTEN_FDS", "0", "LISTEN_FDS=0"),
        ("LISTEN_FDS", "2", "LISTEN_FDS=2"),
        ("LISTEN_FDS", "4097", "LISTEN_FDS=4097"),
        ("LISTEN_FDS", "abc", "LISTEN_FDS=\"abc\" is not a number"),
        ("LISTEN_FDS", "", "LISTEN_FDS=\"\" is not a number"),
        ("LISTEN_FDS", "-1", "LISTEN_FDS=\"-1\" is not a number"),
        ("LISTEN_FDS", "99999999999", "is not a number"),
        ("LISTEN_FDNAMES", "a:b", "2 names for 1 sockets"),
        ("LISTEN_FDNAMES", "::", "3 names for 1 sockets"),
        ("LISTEN_PID", "1", "is not this process"),
    ] {
        let env = [(var, value)];
        let (code, err) = activated_with(&env, &[]);
        assert_eq!(code, Some(64), "{env:?}: {err}");
        assert!(err.contains(want), "{env:?}: {err:?} lacks {want:?}");
    }
    // The control: a harmless name is accepted and the waker serves (then
    // exits 0 when idle), so the cases above failed for their garbage only.
    let (code, err) = activated_with(
        &[("LISTEN_FDNAMES", "waker"), ("LISTEN_FDS", "1")],
        &["--exit-idle-time", "1s", "--start-timeout", "1s"],
    );
    assert_eq!(code, Some(0), "{err}");
}

#[test]
fn waker_notify_socket_garbage_is_logged_and_ignored() {
    let dir = support::temp_dir("notify");
    let long_path = format!("/{}", "n".repeat(200));
    let long_abstract = format!("@{}", "n".repeat(200));
    for (value, logged) in [
        ("relative/notify.sock", Some("neither an absolute path")),
        ("vsock:2:1234", Some("neither an absolute path")),
        ("\u{1}", Some("neither an absolute path")),
        (long_path.as_str(), Some("too long")),
        (long_abstract.as_str(), Some("too long")),
        ("/nonexistent/dir/notify.sock", None),
        ("@", None),
        ("", None),
    ] {
        let what = format!("NOTIFY_SOCKET={value:?}");
        let listen = dir.path().join("w.sock");
        let mut w = waker_in(dir.path(), dir.path())
            .args(["garbage.fleet.test", "--exit-idle-time", "1s", "--listen"])
            .arg(&listen)
            .env("NOTIFY_SOCKET", value)
            .spawn();
        let listens = wait_until(Duration::from_secs(10), || {
            UnixStream::connect(&listen).is_ok()
        });
        assert!(listens, "{what}: waker does not listen: {}", w.logs());
        let (code, err) = exited(&mut w, &what);
        assert_eq!(code, Some(0), "{what}: {err}");
        if let Some(msg) = logged {
            assert!(err.contains(msg), "{what}: {err}");
            assert_eq!(
                err.matches("not notifying").count(),
                1,
                "logged once: {err}"
            );
        }
        let _ = std::fs::remove_file(&listen);
    }
}

/// The passed fd 3 is a socket, but the wrong kind: an AF_INET (TCP)
/// listener from `systemd-socket-activate --listen=127.0.0.1:<port>`.
#[test]
fn waker_refuses_a_passed_tcp_socket() {
    require!(SocketActivate);
    let dir = support::temp_dir("listen");
    let port = support::free_port();
    let activate = support::find_in_path("systemd-socket-activate").expect("on PATH");
    let mut w = Launch::new(activate)
        .arg(format!("--listen=127.0.0.1:{port}"))
        .args(["-E", &format!("FLEET_RUN_DIR={}", dir.path().display())])
        .args(["-E", &format!("FLEET_STATE_DIR={}", dir.path().display())])
        .arg("--")
        .arg(bin("fleet-waker"))
        .arg("tcp.fleet.test")
        .spawn();
    let mut conn = None;
    assert!(
        wait_until(Duration::from_secs(10), || {
            conn = std::net::TcpStream::connect(("127.0.0.1", port)).ok();
            conn.is_some()
        }),
        "systemd-socket-activate did not listen: {}",
        w.logs()
    );
    let (code, err) = exited(&mut w, "the waker");
    assert_eq!(code, Some(64), "{err}");
    assert!(
        err.contains("passed fd 3 is not a listening SOCK_STREAM AF_UNIX socket"),
        "{err}"
    );
    assert!(tree(dir.path()).is_empty());
}

/// A valid site name whose sockets would not fit in a unix socket address
/// (107 bytes) under the run directory: every binary refuses it up front,
/// naming the limit, and touches nothing.
#[test]
fn socket_paths_longer_than_sun_path_are_refused_by_every_binary() {
    require!(Docker);
    let name = format!("{}.{}", "a".repeat(60), "b".repeat(39));
    let dir = support::temp_dir("sunpath");
    let run = dir.path().join("run");
    let state = dir.path().join("state");
    let sites = dir.path().join("sites");
    for d in [&run, &state, &sites] {
        std::fs::create_dir(d).expect("mkdir");
    }
    let before = tree(dir.path());
    let limit = "at most 107";

    let listen = dir.path().join("w.sock");
    let waker = waker_in(&run, &state).arg("--listen").arg(&listen);
    let (code, err) = run_to_exit(waker.arg(&name), "waker");
    assert_eq!(code, Some(64), "{err}");
    assert!(err.contains(limit) && err.contains(&name), "{err}");

    let (code, out, err) = renew(&run, &state, &[OsStr::new(&name)]);
    assert_eq!(code, Some(64), "{err}");
    assert!(err.contains(limit), "{err}");
    assert!(out.contains("FAILED"), "{out}");
    assert_eq!(
        tree(dir.path()),
        before,
        "the waker or renew touched the file system"
    );

    let conf = sites.join(format!("{name}.conf"));
    std::fs::write(
        &conf,
        "# Amount of time to pause the container after: 20m\n",
    )
    .expect("conf");
    let (code, json, stderr) = reaper_json(&sites, &state);
    assert_eq!(code, Some(1), "{json}\n{stderr}");
    assert!(json.to_string().contains(limit), "{json}");
}
