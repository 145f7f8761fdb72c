//! `cargo xtask dist`: release binaries, systemd units, man pages, shell
//! completions and a Debian package in `target/dist/`.
//!
//! ```text
//! cargo xtask dist [--debug] [--no-build] [--out DIR] [--verify]
//! ```
//!
//! * `--debug` packages the debug binaries (seconds instead of minutes of
//!   release build; for checking the packaging itself, e.g. in CI).
//! * `--no-build` uses the binaries as they are in `target/<profile>/`.
//! * `--out DIR` writes there instead of `target/dist/`.
//! * `--verify` (root): installs the .deb on this machine with `dpkg -i`,
//!   checks every file `dpkg -L fleet` lists, `fleet-waker --version` and
//!   `man fleet-reaper`, removes it with `dpkg -r fleet` and checks that
//!   those files are gone. Refuses when a package `fleet` is already
//!   installed (it never replaces a real installation).
//!
//! Man pages and completions come from the binaries' own clap definitions
//! (`fleet_waker::command()` …), so they say what `--help` says.

use std::io::Write as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};

use clap_complete::Shell;

/// The binaries, in the order they are documented.
pub const BINARIES: &[&str] = &["fleet-waker", "fleet-reaper", "fleet-renew"];
/// Debian package name.
pub const PACKAGE: &str = "fleet";
/// Version of the workspace (xtask shares it).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// sysexits: usage error.
const EX_USAGE: u8 = 64;
/// sysexits: something needed is missing.
const EX_UNAVAILABLE: u8 = 69;

/// The clap commands of the binaries, as (binary name, command).
pub fn commands() -> Vec<(&'static str, clap::Command)> {
    vec![
        ("fleet-waker", fleet_waker::command()),
        ("fleet-reaper", fleet_reaper::command()),
        ("fleet-renew", fleet_renew::command()),
    ]
}

/// A roff man page (section 1) for `cmd`.
pub fn man_page(cmd: clap::Command) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    clap_mangen::Man::new(cmd).render(&mut out)?;
    Ok(out)
}

/// The shells we ship completions for, with the file name each expects
/// and the directory under `<prefix>/share` it goes to.
pub const SHELLS: &[(Shell, &str)] = &[
    (Shell::Bash, "bash-completion/completions"),
    (Shell::Zsh, "zsh/vendor-completions"),
    (Shell::Fish, "fish/vendor_completions.d"),
];

/// File name of `bin`'s completion script for `shell`.
pub fn completion_file(shell: Shell, bin: &str) -> String {
    match shell {
        Shell::Zsh => format!("_{bin}"),
        Shell::Fish => format!("{bin}.fish"),
        _ => bin.to_string(),
    }
}

/// `bin`'s completion script for `shell`.
pub fn completion(shell: Shell, mut cmd: clap::Command, bin: &str) -> Vec<u8> {
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut cmd, bin, &mut out);
    out
}

/// The systemd unit files of the repository (`systemd/*.service|socket|timer`), sorted.
pub fn unit_files(repo: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut units: Vec<PathBuf> = std::fs::read_dir(repo.join("systemd"))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension()
                .is_some_and(|e| e == "service" || e == "socket" || e == "timer")
        })
        .collect();
    units.sort();
    Ok(units)
}

/// A unit with `/usr/bin/` in its `Exec…=` lines replaced by `<bindir>/`.
/// Pure.
pub fn rewrite_exec(unit: &str, bindir: &str) -> String {
    let bindir = bindir.trim_end_matches('/');
    unit.lines()
        .map(|l| {
            if l.trim_start().starts_with("Exec") && l.contains('=') {
                l.replace("/usr/bin/", &format!("{bindir}/"))
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
        + if unit.ends_with('\n') { "\n" } else { "" }
}

/// The highest `GLIBC_2.N[.M]` symbol version an ELF binary references,
/// as (2, N, M). Pure: the version names are strings in `.dynstr`; only
/// that section is scanned (a debug binary is ~100 MB).
pub fn glibc_requirement(binary: &[u8]) -> Option<(u32, u32, u32)> {
    glibc_versions_in(dynstr(binary)?)
}

/// `.dynstr` of a little-endian ELF64 file.
fn dynstr(elf: &[u8]) -> Option<&[u8]> {
    let u16_at = |o: usize| -> Option<usize> {
        elf.get(o..o + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]) as usize)
    };
    let u64_at = |o: usize| -> Option<usize> {
        let b: [u8; 8] = elf.get(o..o + 8)?.try_into().ok()?;
        usize::try_from(u64::from_le_bytes(b)).ok()
    };
    let u32_at = |o: usize| -> Option<usize> {
        let b: [u8; 4] = elf.get(o..o + 4)?.try_into().ok()?;
        Some(u32::from_le_bytes(b) as usize)
    };
    // ELF magic, ELFCLASS64, ELFDATA2LSB.
    if elf.get(0..6)? != b"\x7fELF\x02\x01" {
        return None;
    }
    let shoff = u64_at(0x28)?;
    let shentsize = u16_at(0x3a)?;
    let shnum = u16_at(0x3c)?;
    let shstrndx = u16_at(0x3e)?;
    let section = |i: usize| -> Option<(usize, usize, usize)> {
        let h = shoff.checked_add(i.checked_mul(shentsize)?)?;
        // (sh_name, sh_offset, sh_size)
        Some((u32_at(h)?, u64_at(h + 0x18)?, u64_at(h + 0x20)?))
    };
    let (_, names_off, names_size) = section(shstrndx)?;
    let names = elf.get(names_off..names_off.checked_add(names_size)?)?;
    (0..shnum).find_map(|i| {
        let (name, off, size) = section(i)?;
        let rest = names.get(name..)?;
        let end = rest.iter().position(|b| *b == 0)?;
        (&rest[..end] == b".dynstr").then(|| elf.get(off..off.checked_add(size)?))?
    })
}

/// The highest `GLIBC_x.y[.z]` among NUL-separated strings. Pure.
pub fn glibc_versions_in(strings: &[u8]) -> Option<(u32, u32, u32)> {
    strings
        .split(|b| *b == 0)
        .filter_map(|s| s.strip_prefix(b"GLIBC_"))
        .filter_map(|v| {
            let v = std::str::from_utf8(v).ok()?;
            let mut parts = v.split('.').map(|p| p.parse::<u32>().ok());
            let a = parts.next()??;
            let b = parts.next()??;
            let c = parts.next().unwrap_or(Some(0))?;
            Some((a, b, c))
        })
        .max()
}

/// `DEBIAN/control`. Pure.
pub fn control(
    version: &str,
    arch: &str,
    installed_kib: u64,
    glibc: Option<(u32, u32, u32)>,
) -> String {
    let libc = match glibc {
        Some((a, b, 0)) => format!("libc6 (>= {a}.{b}), "),
        Some((a, b, c)) => format!("libc6 (>= {a}.{b}.{c}), "),
        None => String::new(),
    };
    format!(
        "Package: {PACKAGE}
Version: {version}
Architecture: {arch}
Maintainer: fleet maintainers <fleet@example.invalid>
Installed-Size: {installed_kib}
Depends: {libc}init-system-helpers, docker.io | docker-ce | moby-engine | docker-engine
Recommends: nginx | nginx-light | nginx-core
Section: admin
Priority: optional
Description: wake php-fpm containers on demand, put idle ones to sleep
 fleet runs many low-traffic PHP sites on one host, each in its own php-fpm
 Docker container, while only the sites that get traffic use memory.
 .
 fleet-waker is socket-activated by systemd (fleet-waker@<site>.socket),
 starts or unpauses the site's container through the Docker Engine API on
 the first request and proxies FastCGI to php-fpm. fleet-reaper, run by
 fleet-reaper.timer, stops containers idle longer than their timeout.
 fleet-renew brings a site's socket, service and container back to a clean
 state.
 .
 No site is enabled by installing the package: enable one with
 systemctl enable --now fleet-waker@example.com.socket
"
    )
}

/// The enablement links an admin's `systemctl enable` makes for fleet's
/// units, as a shell glob list (the sites' sockets and the reaper's timer).
/// The maintainer scripts start them on install, report them on remove and
/// delete them on purge.
pub const ENABLED_LINKS: &str = "/etc/systemd/system/*.wants/fleet-waker@*.socket /etc/systemd/system/*.wants/fleet-reaper.timer";

/// `DEBIAN/postinst`. Enables nothing. Under systemd: reload the units; on
/// an upgrade restart the running wakers (they still run the replaced
/// binary); start the units the admin had enabled (a new install after a
/// remove brings the sites and the timer back as they were).
pub const POSTINST: &str = concat!(
    r#"#!/bin/sh
# fleet postinst (README: "Upgrade and remove"). Enables nothing: a site is
# `systemctl enable --now fleet-waker@<site>.socket`, the reaper
# `systemctl enable --now fleet-reaper.timer`.
set -e
case "$1" in
configure|abort-upgrade|abort-deconfigure|abort-remove)
    if [ -d /run/systemd/system ]; then
        # /run/docker-apps: root:www-data 0750 now, not only after a reboot.
        systemd-tmpfiles --create fleet.conf >/dev/null || true
        systemctl --system daemon-reload >/dev/null || true
        if [ -n "$2" ]; then
            # An upgrade: running wakers still run the replaced binary. A
            # restart stops each gracefully (it finishes the connections it
            # holds) while systemd keeps the listening socket, whose backlog
            # holds new connections for the new waker. Sockets stay as they are.
            deb-systemd-invoke try-restart 'fleet-waker@*.service' || true
        fi
        # What the admin enabled runs again (a no-op when it runs already).
        for link in "#,
    "/etc/systemd/system/*.wants/fleet-waker@*.socket /etc/systemd/system/*.wants/fleet-reaper.timer",
    r#"; do
            if [ -L "$link" ]; then
                deb-systemd-invoke start "${link##*/}" || true
            fi
        done
    fi
    ;;
esac
exit 0
"#
);

/// `DEBIAN/prerm`: on removal, stop everything that runs fleet's binaries
/// (nothing may keep running from a deleted file). On upgrade nothing stops.
pub const PRERM: &str = r#"#!/bin/sh
# fleet prerm: on removal stop the reaper's timer and service and every
# site's socket and waker (a waker finishes the connections it holds), so
# nothing runs from a deleted binary. On upgrade nothing is stopped: the
# postinst restarts the wakers. What the admin enabled stays enabled.
set -e
if [ "$1" = remove ] && [ -d /run/systemd/system ]; then
    deb-systemd-invoke stop fleet-reaper.timer fleet-reaper.service \
        'fleet-waker@*.socket' 'fleet-waker@*.service' || true
fi
exit 0
"#;

/// `DEBIAN/postrm`: on removal reload systemd and say which enabled units it
/// leaves; on purge remove their enablement links and `/run/fleet`.
pub const POSTRM: &str = concat!(
    r#"#!/bin/sh
# fleet postrm. remove: systemd forgets the units; the enablement links the
# admin made stay (a new install starts those units again) and are listed.
# purge: those links and the wakers' state directory /run/fleet go too; the
# admin's own drop-ins stay and are listed.
set -e
links=""
for link in "#,
    "/etc/systemd/system/*.wants/fleet-waker@*.socket /etc/systemd/system/*.wants/fleet-reaper.timer",
    r#"; do
    if [ -L "$link" ]; then links="$links $link"; fi
done
case "$1" in
remove)
    if [ -n "$links" ]; then
        echo "fleet: stopped; these units stay enabled and start again when fleet is installed again:"
        for link in $links; do echo "fleet:   ${link##*/} ($link)"; done
        echo "fleet: 'dpkg --purge fleet' removes these links"
    fi
    ;;
purge)
    for link in $links; do
        rm -f -- "$link"
        echo "fleet: removed $link"
        rmdir -- "${link%/*}" 2>/dev/null || true
    done
    if [ -d /run/fleet ] && [ ! -L /run/fleet ]; then
        rm -rf -- /run/fleet
        echo "fleet: removed /run/fleet (the wakers' state files)"
    fi
    for dropin in /etc/systemd/system/fleet-*.d; do
        if [ -d "$dropin" ]; then echo "fleet: left your drop-in directory $dropin"; fi
    done
    ;;
esac
if [ -d /run/systemd/system ]; then
    case "$1" in
    remove|purge)
        systemctl --system daemon-reload >/dev/null || true
        systemctl reset-failed 'fleet-waker@*' 'fleet-reaper.*' >/dev/null 2>&1 || true
        ;;
    esac
fi
exit 0
"#
);

const COPYRIGHT: &str = "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: fleet
License: MIT or Apache-2.0

Files: *
Copyright: the fleet authors
License: MIT or Apache-2.0
 On Debian systems the Apache 2.0 license is in
 /usr/share/common-licenses/Apache-2.0.
";

/// Parsed `dist` arguments.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DistArgs {
    /// Package debug binaries.
    pub debug: bool,
    /// Do not run `cargo build`.
    pub no_build: bool,
    /// Output directory (default `target/dist`).
    pub out: Option<PathBuf>,
    /// Install, check and remove the .deb on this machine.
    pub verify: bool,
    /// The package's version instead of the workspace's (tests build a
    /// second, newer package to upgrade to).
    pub version: Option<String>,
}

/// Usage of `cargo xtask dist`.
pub const USAGE: &str = "usage: cargo xtask dist [--debug] [--no-build] [--out DIR] [--verify]
  --debug      package the debug binaries (fast; for checking the packaging)
  --no-build   do not run cargo build; use target/<profile>/ as it is
  --out DIR    write into DIR instead of target/dist
  --verify     as root: dpkg -i the .deb, check files, --version, man page; dpkg -r; check removal";

/// Parse `dist`'s arguments. Pure.
pub fn parse_args(args: &[String]) -> Result<DistArgs, String> {
    let mut out = DistArgs::default();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--debug" => out.debug = true,
            "--no-build" => out.no_build = true,
            "--verify" => out.verify = true,
            "--out" => out.out = Some(PathBuf::from(it.next().ok_or("--out needs a directory")?)),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(out)
}

/// Failure of a dist step, with what was being done.
#[derive(Debug, thiserror::Error)]
#[error("{what}: {why}")]
pub struct DistError {
    what: String,
    why: String,
    unavailable: bool,
}

fn err(what: impl Into<String>, why: impl std::fmt::Display) -> DistError {
    DistError {
        what: what.into(),
        why: why.to_string(),
        unavailable: false,
    }
}

fn unavailable(what: impl Into<String>, why: impl std::fmt::Display) -> DistError {
    DistError {
        what: what.into(),
        why: why.to_string(),
        unavailable: true,
    }
}

/// Run a program (argv), fail with its stderr.
pub(crate) fn run(program: &str, args: &[&str]) -> Result<String, DistError> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| unavailable(format!("{program} {}", args.join(" ")), e))?;
    if !out.status.success() {
        return Err(err(
            format!("{program} {}", args.join(" ")),
            format!(
                "{}: {}{}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim(),
                String::from_utf8_lossy(&out.stdout).trim()
            ),
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Build the binaries (`cargo build [--release] -p …`) unless `no_build`,
/// and return the directory they are in.
pub(crate) fn build_binaries(debug: bool, no_build: bool) -> Result<PathBuf, DistError> {
    let root = crate::demo::repo_root();
    let profile = if debug { "debug" } else { "release" };
    if !no_build {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
        let mut args = vec!["build"];
        if !debug {
            args.push("--release");
        }
        for b in BINARIES {
            args.extend(["-p", b]);
        }
        eprintln!("==> {cargo} {}", args.join(" "));
        let status = Command::new(&cargo)
            .args(&args)
            .current_dir(&root)
            .stdin(Stdio::null())
            .status()
            .map_err(|e| unavailable("cargo build", e))?;
        if !status.success() {
            return Err(err("cargo build", status));
        }
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    let dir = target.join(profile);
    for b in BINARIES {
        if !dir.join(b).is_file() {
            return Err(err(
                "binaries",
                format!("{} missing", dir.join(b).display()),
            ));
        }
    }
    Ok(dir)
}

fn write(path: &Path, data: &[u8], mode: u32) -> Result<(), DistError> {
    if let Some(parent) = path.parent() {
        mkdir(parent)?;
    }
    std::fs::write(path, data).map_err(|e| err(format!("write {}", path.display()), e))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| err(format!("chmod {}", path.display()), e))
}

fn mkdir(path: &Path) -> Result<(), DistError> {
    std::fs::create_dir_all(path).map_err(|e| err(format!("mkdir {}", path.display()), e))?;
    // Every directory of a staged tree is 0755 whatever the umask.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
        .map_err(|e| err(format!("chmod {}", path.display()), e))
}

fn read(path: &Path) -> Result<Vec<u8>, DistError> {
    std::fs::read(path).map_err(|e| err(format!("read {}", path.display()), e))
}

fn gzip(data: &[u8]) -> Result<Vec<u8>, DistError> {
    let mut child = Command::new("gzip")
        .args(["-9", "-n", "-c"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| unavailable("gzip", e))?;
    let mut stdin = child.stdin.take().ok_or_else(|| err("gzip", "no stdin"))?;
    let input = data.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let out = child.wait_with_output().map_err(|e| err("gzip", e))?;
    writer
        .join()
        .map_err(|_| err("gzip", "writer thread panicked"))?
        .map_err(|e| err("gzip", e))?;
    if !out.status.success() {
        return Err(err("gzip", out.status));
    }
    Ok(out.stdout)
}

/// Where to put things under a prefix (`/usr` for the .deb).
#[derive(Debug, Clone)]
pub struct Paths {
    /// `<prefix>/bin`.
    pub bin: PathBuf,
    /// systemd system unit directory.
    pub units: PathBuf,
    /// `<prefix>/share/man/man1`.
    pub man1: PathBuf,
    /// `<prefix>/share`.
    pub share: PathBuf,
    /// tmpfiles.d directory (`fleet.conf`: /run/docker-apps' mode and group).
    pub tmpfiles: PathBuf,
}

impl Paths {
    /// Paths for `prefix`: units in `/lib/systemd/system` for `/usr`, else
    /// `<prefix>/lib/systemd/system` (systemd also reads
    /// `/usr/local/lib/systemd/system`).
    pub fn for_prefix(prefix: &Path) -> Paths {
        let units = if prefix == Path::new("/usr") {
            PathBuf::from("/lib/systemd/system")
        } else {
            prefix.join("lib/systemd/system")
        };
        Paths {
            bin: prefix.join("bin"),
            tmpfiles: prefix.join("lib/tmpfiles.d"),
            units,
            man1: prefix.join("share/man/man1"),
            share: prefix.join("share"),
        }
    }
}

/// `dest` + an absolute `path`.
pub fn under(dest: &Path, path: &Path) -> PathBuf {
    dest.join(path.strip_prefix("/").unwrap_or(path))
}

/// Install binaries, units (Exec lines rewritten to `paths.bin`), man pages
/// (gzipped when `gz`) and completions into `dest` + `paths`. Returns the
/// installed files (absolute, without `dest`).
pub fn install_tree(
    bin_dir: &Path,
    dest: &Path,
    paths: &Paths,
    gz: bool,
) -> Result<Vec<PathBuf>, DistError> {
    let repo = crate::demo::repo_root();
    let mut files = Vec::new();
    let mut put = |path: PathBuf, data: &[u8], mode: u32| -> Result<(), DistError> {
        write(&under(dest, &path), data, mode)?;
        files.push(path);
        Ok(())
    };
    for b in BINARIES {
        put(paths.bin.join(b), &read(&bin_dir.join(b))?, 0o755)?;
    }
    let bindir = paths.bin.display().to_string();
    for unit in unit_files(&repo).map_err(|e| err("systemd/", e))? {
        let text = String::from_utf8_lossy(&read(&unit)?).into_owned();
        let name = unit
            .file_name()
            .ok_or_else(|| err("unit", "no file name"))?;
        put(
            paths.units.join(name),
            rewrite_exec(&text, &bindir).as_bytes(),
            0o644,
        )?;
    }
    put(
        paths.tmpfiles.join("fleet.conf"),
        &read(&repo.join("systemd/fleet.tmpfiles"))?,
        0o644,
    )?;
    for (bin, cmd) in commands() {
        let page = man_page(cmd.clone()).map_err(|e| err(format!("man page of {bin}"), e))?;
        if gz {
            put(paths.man1.join(format!("{bin}.1.gz")), &gzip(&page)?, 0o644)?;
        } else {
            put(paths.man1.join(format!("{bin}.1")), &page, 0o644)?;
        }
        for (shell, dir) in SHELLS {
            put(
                paths.share.join(dir).join(completion_file(*shell, bin)),
                &completion(*shell, cmd.clone(), bin),
                0o644,
            )?;
        }
    }
    Ok(files)
}

fn dir_size_kib(path: &Path) -> u64 {
    fn walk(p: &Path) -> u64 {
        let Ok(meta) = std::fs::symlink_metadata(p) else {
            return 0;
        };
        if meta.is_dir() {
            std::fs::read_dir(p)
                .map(|rd| rd.flatten().map(|e| walk(&e.path())).sum())
                .unwrap_or(0)
        } else {
            meta.len().div_ceil(1024)
        }
    }
    walk(path)
}

/// What `dist` produced.
#[derive(Debug)]
pub struct Dist {
    /// The output directory.
    pub out: PathBuf,
    /// The .deb.
    pub deb: PathBuf,
}

/// Produce everything into `out`.
pub fn dist(args: &DistArgs) -> Result<Dist, DistError> {
    let bin_dir = build_binaries(args.debug, args.no_build)?;
    let repo = crate::demo::repo_root();
    let out = args.out.clone().unwrap_or_else(|| {
        std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| repo.join("target"))
            .join("dist")
    });
    if out.exists() {
        std::fs::remove_dir_all(&out).map_err(|e| err(format!("clean {}", out.display()), e))?;
    }
    mkdir(&out)?;

    // Plain artifacts: bin/, systemd/, man/, completions/<shell>/.
    for b in BINARIES {
        write(&out.join("bin").join(b), &read(&bin_dir.join(b))?, 0o755)?;
    }
    for unit in unit_files(&repo).map_err(|e| err("systemd/", e))? {
        let name = unit
            .file_name()
            .ok_or_else(|| err("unit", "no file name"))?;
        write(&out.join("systemd").join(name), &read(&unit)?, 0o644)?;
    }
    for (bin, cmd) in commands() {
        let page = man_page(cmd.clone()).map_err(|e| err(format!("man page of {bin}"), e))?;
        write(&out.join("man").join(format!("{bin}.1")), &page, 0o644)?;
        for (shell, _) in SHELLS {
            write(
                &out.join("completions")
                    .join(shell.to_string())
                    .join(completion_file(*shell, bin)),
                &completion(*shell, cmd.clone(), bin),
                0o644,
            )?;
        }
    }

    // The Debian package from a staged tree.
    let arch = run("dpkg", &["--print-architecture"])?.trim().to_string();
    let version = args.version.as_deref().unwrap_or(VERSION);
    let stage = out.join(format!("{PACKAGE}_{version}_{arch}"));
    mkdir(&stage)?;
    let paths = Paths::for_prefix(Path::new("/usr"));
    install_tree(&bin_dir, &stage, &paths, true)?;
    let doc = stage.join("usr/share/doc").join(PACKAGE);
    write(
        &doc.join("README.md"),
        &read(&repo.join("README.md"))?,
        0o644,
    )?;
    write(&doc.join("copyright"), COPYRIGHT.as_bytes(), 0o644)?;
    let nginx = repo.join("contrib/nginx");
    for entry in
        std::fs::read_dir(&nginx).map_err(|e| err(format!("read {}", nginx.display()), e))?
    {
        let path = entry.map_err(|e| err("contrib/nginx", e))?.path();
        if let Some(name) = path.file_name() {
            write(&doc.join("nginx").join(name), &read(&path)?, 0o644)?;
        }
    }
    let glibc = BINARIES
        .iter()
        .filter_map(|b| {
            std::fs::read(bin_dir.join(b))
                .ok()
                .and_then(|d| glibc_requirement(&d))
        })
        .max();
    let debian = stage.join("DEBIAN");
    let size = dir_size_kib(&stage);
    write(
        &debian.join("control"),
        control(version, &arch, size, glibc).as_bytes(),
        0o644,
    )?;
    write(&debian.join("postinst"), POSTINST.as_bytes(), 0o755)?;
    write(&debian.join("prerm"), PRERM.as_bytes(), 0o755)?;
    write(&debian.join("postrm"), POSTRM.as_bytes(), 0o755)?;
    let deb = out.join(format!("{PACKAGE}_{version}_{arch}.deb"));
    let stage_s = stage.display().to_string();
    let deb_s = deb.display().to_string();
    // A debug build is ~150 MB: xz would take a minute; store it instead.
    let compression = if args.debug { "-Znone" } else { "-Zxz" };
    run(
        "dpkg-deb",
        &[
            "--build",
            "--root-owner-group",
            compression,
            &stage_s,
            &deb_s,
        ],
    )?;
    Ok(Dist { out, deb })
}

/// `dpkg -i` the package, check it, `dpkg -r` it, check it is gone.
pub fn verify(deb: &Path) -> Result<(), DistError> {
    if !nix::unistd::geteuid().is_root() {
        return Err(unavailable("--verify", "needs root (dpkg -i / dpkg -r)"));
    }
    let status = Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", PACKAGE])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| unavailable("dpkg-query", e))?;
    let status_text = String::from_utf8_lossy(&status.stdout).into_owned();
    if status.status.success() && status_text.contains(" installed") {
        return Err(unavailable(
            "--verify",
            format!("a package {PACKAGE} is already installed ({status_text}); not touching it"),
        ));
    }
    let deb_s = deb.display().to_string();
    eprintln!("==> dpkg -i {deb_s}");
    let installed = run("dpkg", &["-i", &deb_s]);
    // From here on, remove it whatever happens.
    let checked = installed.and_then(|out| {
        eprint!("{out}");
        check_installed()
    });
    eprintln!("==> dpkg -r {PACKAGE}");
    let removed = run("dpkg", &["-r", PACKAGE]);
    let listed = checked?;
    let out = removed?;
    eprint!("{out}");
    let left: Vec<String> = listed
        .iter()
        .filter(|p| std::fs::symlink_metadata(p).is_ok())
        .map(|p| p.display().to_string())
        .collect();
    if !left.is_empty() {
        return Err(err(
            "dpkg -r",
            format!("files left behind: {}", left.join(", ")),
        ));
    }
    let state = Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", PACKAGE])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    if state.contains(" installed") {
        return Err(err("dpkg -r", format!("still installed: {state}")));
    }
    let doc = Path::new("/usr/share/doc").join(PACKAGE);
    if doc.exists() {
        return Err(err("dpkg -r", format!("{} left behind", doc.display())));
    }
    eprintln!(
        "==> dpkg -r: removed cleanly; none of the {} files it had installed is left",
        listed.len()
    );
    // dpkg -r keeps the maintainer scripts' record; purge it so the dpkg
    // database is as before.
    run("dpkg", &["--purge", PACKAGE])?;
    eprintln!("==> dpkg --purge {PACKAGE}: the dpkg database no longer knows it");
    Ok(())
}

/// Check the installed package; return the files (not directories) it owns.
fn check_installed() -> Result<Vec<PathBuf>, DistError> {
    let listing = run("dpkg", &["-L", PACKAGE])?;
    let files: Vec<PathBuf> = listing
        .lines()
        .map(PathBuf::from)
        // Regular files only: directories are shared, and /lib may be a
        // symlink to /usr/lib (merged /usr).
        .filter(|p| std::fs::symlink_metadata(p).is_ok_and(|m| m.is_file()))
        .collect();
    let paths = Paths::for_prefix(Path::new("/usr"));
    let mut expected: Vec<PathBuf> = BINARIES.iter().map(|b| paths.bin.join(b)).collect();
    expected.extend(
        BINARIES
            .iter()
            .map(|b| paths.man1.join(format!("{b}.1.gz"))),
    );
    expected.push(paths.units.join("fleet-waker@.socket"));
    expected.push(paths.units.join("fleet-waker@.service"));
    expected.push(PathBuf::from(
        "/usr/share/bash-completion/completions/fleet-waker",
    ));
    expected.push(PathBuf::from(
        "/usr/share/doc/fleet/nginx/fleet-direct-mode.conf",
    ));
    for p in &expected {
        if !files.contains(p) || !p.is_file() {
            return Err(err(
                "dpkg -L fleet",
                format!("{} not installed", p.display()),
            ));
        }
    }
    eprintln!("==> dpkg -L {PACKAGE}: {} files, all present", files.len());
    for f in &files {
        eprintln!("    {}", f.display());
    }
    let version = run("/usr/bin/fleet-waker", &["--version"])?;
    if version.trim() != format!("fleet-waker {VERSION}") {
        return Err(err("fleet-waker --version", format!("printed {version:?}")));
    }
    eprintln!("==> /usr/bin/fleet-waker --version: {}", version.trim());
    let man = Command::new("man")
        .arg("fleet-reaper")
        .env("MANPAGER", "cat")
        .env("MANWIDTH", "80")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| unavailable("man (apt-get install man-db)", e))?;
    let page = String::from_utf8_lossy(&man.stdout);
    if !man.status.success() || !page.contains("fleet-reaper") || !page.contains("--action") {
        return Err(err(
            "man fleet-reaper",
            format!(
                "{}: {}{page}",
                man.status,
                String::from_utf8_lossy(&man.stderr)
            ),
        ));
    }
    eprintln!(
        "==> man fleet-reaper: {} lines; it begins:",
        page.lines().count()
    );
    for l in page.lines().take(8) {
        eprintln!("    {l}");
    }
    Ok(files)
}

/// `cargo xtask dist …`.
pub fn main(args: &[String]) -> ExitCode {
    let args = match parse_args(args) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("xtask dist: {e}\n\n{USAGE}");
            return ExitCode::from(EX_USAGE);
        }
    };
    let result = dist(&args).and_then(|d| {
        eprintln!("==> dist: {}", d.out.display());
        let mut listing = Vec::new();
        list(&d.out, &d.out, &mut listing);
        for l in &listing {
            eprintln!("    {l}");
        }
        eprintln!("==> package: {}", d.deb.display());
        if args.verify { verify(&d.deb) } else { Ok(()) }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask dist: {e}");
            ExitCode::from(if e.unavailable { EX_UNAVAILABLE } else { 1 })
        }
    }
}

fn list(root: &Path, dir: &Path, out: &mut Vec<String>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<PathBuf> = rd.flatten().map(|e| e.path()).collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            // The staged tree is listed by `dpkg -c`; skip it here.
            if !p.join("DEBIAN").is_dir() {
                list(root, &p, out);
            }
        } else if let Ok(rel) = p.strip_prefix(root) {
            out.push(rel.display().to_string());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exec_lines_are_rewritten_only() {
        let unit = "[Unit]\nDescription=x /usr/bin/ here stays\n[Service]\nExecStart=/usr/bin/fleet-waker %i\nExecStartPre=-/usr/bin/true\nEnvironment=P=/usr/bin/x\n";
        let out = rewrite_exec(unit, "/usr/local/bin/");
        assert_eq!(
            out,
            "[Unit]\nDescription=x /usr/bin/ here stays\n[Service]\nExecStart=/usr/local/bin/fleet-waker %i\nExecStartPre=-/usr/local/bin/true\nEnvironment=P=/usr/bin/x\n"
        );
        assert_eq!(
            rewrite_exec("ExecStart=/usr/bin/a", "/opt/f/bin"),
            "ExecStart=/opt/f/bin/a"
        );
    }

    #[test]
    fn glibc_requirement_is_the_highest_version() {
        let strings = b"\0GLIBC_2.2.5\0GLIBC_2.34\0xGLIBC_2.99\0GLIBC_PRIVATE\0GLIBC_2.3.4\0";
        assert_eq!(glibc_versions_in(strings), Some((2, 34, 0)));
        assert_eq!(glibc_versions_in(b"GLIBC_2.2.5"), Some((2, 2, 5)));
        assert_eq!(glibc_versions_in(b"no libc here"), None);
        // A real ELF binary: this test's own executable links glibc.
        let exe = std::fs::read(std::env::current_exe().expect("current_exe")).expect("read exe");
        let v = glibc_requirement(&exe).expect("a glibc version in .dynstr");
        assert_eq!(v.0, 2);
        assert!(v.1 >= 2, "{v:?}");
        assert_eq!(glibc_requirement(b"not an ELF file"), None);
    }

    #[test]
    fn control_file_fields() {
        let c = control("1.2.3", "amd64", 4242, Some((2, 34, 0)));
        assert!(c.starts_with("Package: fleet\nVersion: 1.2.3\nArchitecture: amd64\n"));
        assert!(c.contains("\nInstalled-Size: 4242\n"));
        assert!(c.contains(
            "\nDepends: libc6 (>= 2.34), init-system-helpers, docker.io | docker-ce | moby-engine | docker-engine\n"
        ));
        assert!(c.contains("\nRecommends: nginx"));
        // Continuation lines of the description start with a space; an
        // empty one is " .".
        let desc: Vec<&str> = c
            .lines()
            .skip_while(|l| !l.starts_with("Description:"))
            .skip(1)
            .collect();
        assert!(!desc.is_empty());
        assert!(desc.iter().all(|l| l.starts_with(' ') && l.trim() != ""));
        assert!(c.ends_with('\n'));
        assert!(
            control("1", "arm64", 1, None).contains("\nDepends: init-system-helpers, docker.io")
        );
    }

    #[test]
    fn maintainer_scripts_are_valid_sh_and_enable_nothing() {
        for s in [POSTINST, PRERM, POSTRM] {
            assert!(s.starts_with("#!/bin/sh\n"));
            // Parsed by the shell dpkg runs them with.
            let mut sh = Command::new("sh")
                .arg("-n")
                .stdin(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("sh");
            sh.stdin
                .take()
                .expect("stdin")
                .write_all(s.as_bytes())
                .expect("write");
            let out = sh.wait_with_output().expect("sh -n");
            assert!(
                out.status.success(),
                "sh -n: {}\n{s}",
                String::from_utf8_lossy(&out.stderr)
            );
            let code: Vec<&str> = s
                .lines()
                .filter(|l| !l.trim_start().starts_with('#'))
                .collect();
            assert!(
                !code
                    .iter()
                    .any(|l| l.contains("systemctl enable") || l.contains("helper enable")),
                "{s}"
            );
            // Every call into systemd comes after the systemd-is-running check.
            let guarded = code
                .iter()
                .position(|l| l.contains("[ -d /run/systemd/system ]"));
            let first_call = code
                .iter()
                .position(|l| l.contains("systemctl ") || l.contains("deb-systemd-invoke "));
            assert!(
                guarded.is_some_and(|g| first_call.is_some_and(|c| c > g)),
                "{s}"
            );
        }
        assert!(POSTINST.contains("systemctl --system daemon-reload"));
        assert!(POSTINST.contains("deb-systemd-invoke try-restart 'fleet-waker@*.service'"));
        assert!(PRERM.contains("'fleet-waker@*.socket' 'fleet-waker@*.service'"));
        assert!(POSTRM.contains("systemctl --system daemon-reload"));
        assert!(POSTINST.contains(ENABLED_LINKS) && POSTRM.contains(ENABLED_LINKS));
        // Sockets are never restarted: the listening socket stays with systemd.
        assert!(!POSTINST.contains("restart 'fleet-waker@*.socket'"));
    }

    #[test]
    fn paths_for_prefixes() {
        let usr = Paths::for_prefix(Path::new("/usr"));
        assert_eq!(usr.units, Path::new("/lib/systemd/system"));
        assert_eq!(usr.bin, Path::new("/usr/bin"));
        let local = Paths::for_prefix(Path::new("/usr/local"));
        assert_eq!(local.units, Path::new("/usr/local/lib/systemd/system"));
        assert_eq!(local.man1, Path::new("/usr/local/share/man/man1"));
        assert_eq!(
            under(Path::new("/d"), Path::new("/usr/bin/x")),
            Path::new("/d/usr/bin/x")
        );
    }

    #[test]
    fn man_pages_and_completions_for_every_binary() {
        let cmds = commands();
        assert_eq!(cmds.iter().map(|(b, _)| *b).collect::<Vec<_>>(), BINARIES);
        for (bin, cmd) in cmds {
            assert_eq!(cmd.get_name(), bin);
            let page = String::from_utf8(man_page(cmd.clone()).expect("render")).expect("utf-8");
            assert!(page.contains(".TH "), "{page}");
            assert!(page.contains(bin));
            for (shell, _) in SHELLS {
                let script =
                    String::from_utf8(completion(*shell, cmd.clone(), bin)).expect("utf-8");
                assert!(script.contains(bin), "{shell} completion of {bin}");
            }
        }
    }
}
