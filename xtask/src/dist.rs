//! `cargo xtask dist`: release binaries, systemd units, man pages, shell
//! completions and a Debian package in `target/dist/`.
//!
//! * `--debug` packages the debug binaries (stripped like release ones;
//!   seconds instead of minutes of release build; for checking the
//!   packaging itself, e.g. in CI).
//! * `--no-build` uses the binaries as they are in `target/<profile>/`.
//! * `--out DIR` writes there instead of `target/dist/`.
//! * `--verify` (root): installs the .deb on this machine with `dpkg -i`,
//!   checks every file `dpkg -L fleet` lists, `fleet-waker --version` and
//!   `man fleet-reaper`, removes it with `dpkg -r fleet` and checks that
//!   those files are gone. Refuses when a package `fleet` is already
//!   installed (it never replaces a real installation).
//!
//! The package is staged the way debhelper would (`<out>/debian/fleet/`)
//! and made by Debian's own tools: `strip` (dh_strip's flags),
//! `dpkg-shlibdeps` for the shared-library `Depends`, `dpkg-deb --build`.
//! The maintainer scripts, changelog and copyright are plain files in
//! `xtask/debian/`. Man pages and completions come from the binaries' own
//! clap definitions (`fleet_waker::command()` …), so they say what `--help`
//! says. README "Install" lists the lintian tags left and why.

use std::io::Write as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use clap_complete::Shell;
use md5::{Digest as _, Md5};

use crate::error::{Cmd, Error, chain, run, run_in};

/// The binaries, in the order they are documented.
pub const BINARIES: &[&str] = &["fleet-waker", "fleet-reaper", "fleet-renew"];
/// Debian package name.
pub const PACKAGE: &str = "fleet";
/// Version of the workspace (xtask shares it): the upstream part of the
/// package's version.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Maintainer scripts (`sh -n`-checked and tested under systemd by
/// `tests/it/package.rs`).
pub const POSTINST: &str = include_str!("../debian/postinst");
/// See [`POSTINST`].
pub const PRERM: &str = include_str!("../debian/prerm");
/// See [`POSTINST`].
pub const POSTRM: &str = include_str!("../debian/postrm");
/// The Debian changelog; its top entry's version is the package's version.
pub const CHANGELOG: &str = include_str!("../debian/changelog");
/// `/usr/share/doc/fleet/copyright` (machine-readable format).
pub const COPYRIGHT: &str = include_str!("../debian/copyright");

/// The enablement links an admin's `systemctl enable` makes for fleet's
/// units, as a shell glob list (the sites' sockets and the reaper's timer).
/// The maintainer scripts start them on install, report them on remove and
/// delete them on purge.
pub const ENABLED_LINKS: &str = "/etc/systemd/system/*.wants/fleet-waker@*.socket /etc/systemd/system/*.wants/fleet-reaper.timer";

/// `cargo xtask dist` arguments.
#[derive(Debug, Clone, Default, PartialEq, Eq, clap::Args)]
pub struct DistArgs {
    /// Package the debug binaries (fast; for checking the packaging).
    #[arg(long)]
    pub debug: bool,
    /// Do not run cargo build; use target/PROFILE/ as it is.
    #[arg(long)]
    pub no_build: bool,
    /// Write into DIR instead of target/dist.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// As root: dpkg -i the .deb, check files, --version, man page; dpkg -r;
    /// check removal.
    #[arg(long)]
    pub verify: bool,
    /// The package's version instead of the changelog's (tests build a
    /// second, newer package to upgrade to).
    #[arg(skip)]
    pub version: Option<String>,
}

/// gzip `data` at level 9 with no name and no time stamp in the header, as
/// `gzip -9n` (Debian wants man pages and changelogs so; reproducible).
pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut gz = flate2::GzBuilder::new().write(Vec::new(), flate2::Compression::best());
    // Writing into a Vec cannot fail.
    let _ = gz.write_all(data);
    gz.finish().unwrap_or_default()
}

/// The version of a Debian changelog's top entry (`fleet (0.1.0-1) …`). Pure.
pub fn changelog_version(changelog: &str) -> Option<&str> {
    let first = changelog.lines().next()?;
    let rest = first
        .strip_prefix(PACKAGE)?
        .trim_start()
        .strip_prefix('(')?;
    rest.split_once(')').map(|(v, _)| v)
}

/// The changelog shipped for package version `version`: [`CHANGELOG`], with
/// an entry for `version` on top when that is not its own (a test's upgrade
/// package), signed like the top entry. Pure.
pub fn changelog_for(version: &str) -> String {
    if changelog_version(CHANGELOG) == Some(version) {
        return CHANGELOG.to_string();
    }
    let trailer = CHANGELOG.lines().find(|l| l.starts_with(" -- ")).unwrap_or(
        " -- fleet maintainers <fleet@example.invalid>  Mon, 30 Nov 2026 01:13:58 +0000",
    );
    format!(
        "{PACKAGE} ({version}) unstable; urgency=medium\n\n  * Package built as version {version}.\n\n{trailer}\n\n{CHANGELOG}"
    )
}

/// `DEBIAN/control`: `xtask/debian/control` with its `@…@` fields filled
/// in; `shlibs` is dpkg-shlibdeps' `Depends` (may be empty). Pure.
pub fn control(version: &str, arch: &str, installed_kib: u64, shlibs: &str) -> String {
    let shlibs = if shlibs.is_empty() {
        String::new()
    } else {
        format!("{shlibs}, ")
    };
    include_str!("../debian/control")
        .replace("@VERSION@", version)
        .replace("@ARCH@", arch)
        .replace("@INSTALLED_SIZE@", &installed_kib.to_string())
        .replace("@SHLIBS@", &shlibs)
}

/// `DEBIAN/md5sums` of the staged tree `root` (every regular file outside
/// `DEBIAN/`, sorted, paths relative to `/`).
fn md5sums(root: &Path) -> Result<String, Error> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) -> Result<(), Error> {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(Error::io("read directory", dir))?
            .flatten()
            .map(|e| e.path())
            .collect();
        entries.sort();
        for p in entries {
            let meta = std::fs::symlink_metadata(&p).map_err(Error::io("stat", &p))?;
            if meta.is_dir() {
                if p != root.join("DEBIAN") {
                    walk(root, &p, out)?;
                }
            } else if meta.is_file() {
                let digest = Md5::digest(read(&p)?);
                let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
                let rel = p.strip_prefix(root).unwrap_or(&p);
                out.push(format!("{hex}  {}\n", rel.display()));
            }
        }
        Ok(())
    }
    let mut lines = Vec::new();
    walk(root, root, &mut lines)?;
    Ok(lines.concat())
}

/// The clap commands of the binaries, as (binary name, command).
pub fn commands() -> Vec<(&'static str, clap::Command)> {
    vec![
        ("fleet-waker", fleet_waker::command()),
        ("fleet-reaper", fleet_reaper::command()),
        ("fleet-renew", fleet_renew::command()),
    ]
}

/// A roff man page (section 1) for `cmd`.
pub fn man_page(cmd: clap::Command) -> Vec<u8> {
    let mut out = Vec::new();
    // Rendering into a Vec cannot fail.
    let _ = clap_mangen::Man::new(cmd).render(&mut out);
    out
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
pub fn unit_files(repo: &Path) -> Result<Vec<PathBuf>, Error> {
    let dir = repo.join("systemd");
    let mut units: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map_err(Error::io("read directory", &dir))?
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

/// Build the binaries (`cargo build [--release] -p …`) unless `no_build`,
/// and return the directory they are in.
pub(crate) fn build_binaries(debug: bool, no_build: bool) -> Result<PathBuf, Error> {
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
        // Inherits stdout/stderr: cargo's progress is the user's to see.
        Cmd::new(&cargo).args(&args).dir(&root).status()?;
    }
    let dir = crate::kit::target_dir().join(profile);
    for b in BINARIES {
        if !dir.join(b).is_file() {
            return Err(Error::failed(
                "binaries",
                format!("{} missing", dir.join(b).display()),
            ));
        }
    }
    Ok(dir)
}

fn write(path: &Path, data: &[u8], mode: u32) -> Result<(), Error> {
    if let Some(parent) = path.parent() {
        mkdir(parent)?;
    }
    std::fs::write(path, data).map_err(Error::io("write", path))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(Error::io("chmod", path))
}

fn mkdir(path: &Path) -> Result<(), Error> {
    std::fs::create_dir_all(path).map_err(Error::io("mkdir", path))?;
    // Every directory of a staged tree is 0755 whatever the umask.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
        .map_err(Error::io("chmod", path))
}

fn read(path: &Path) -> Result<Vec<u8>, Error> {
    std::fs::read(path).map_err(Error::io("read", path))
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
) -> Result<Vec<PathBuf>, Error> {
    let repo = crate::demo::repo_root();
    let mut files = Vec::new();
    let mut put = |path: PathBuf, data: &[u8], mode: u32| -> Result<(), Error> {
        write(&under(dest, &path), data, mode)?;
        files.push(path);
        Ok(())
    };
    for b in BINARIES {
        put(paths.bin.join(b), &read(&bin_dir.join(b))?, 0o755)?;
    }
    let bindir = paths.bin.display().to_string();
    for unit in unit_files(&repo)? {
        let text = String::from_utf8_lossy(&read(&unit)?).into_owned();
        let name = unit.file_name().unwrap_or_default();
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
        let page = man_page(cmd.clone());
        if gz {
            put(paths.man1.join(format!("{bin}.1.gz")), &gzip(&page), 0o644)?;
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
pub fn dist(args: &DistArgs) -> Result<Dist, Error> {
    let bin_dir = build_binaries(args.debug, args.no_build)?;
    let repo = crate::demo::repo_root();
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| crate::kit::target_dir().join("dist"));
    if out.exists() {
        std::fs::remove_dir_all(&out).map_err(Error::io("clean", &out))?;
    }
    mkdir(&out)?;

    // Plain artifacts: bin/, systemd/, man/, completions/<shell>/.
    for b in BINARIES {
        write(&out.join("bin").join(b), &read(&bin_dir.join(b))?, 0o755)?;
    }
    for unit in unit_files(&repo)? {
        let name = unit.file_name().unwrap_or_default();
        write(&out.join("systemd").join(name), &read(&unit)?, 0o644)?;
    }
    for (bin, cmd) in commands() {
        write(
            &out.join("man").join(format!("{bin}.1")),
            &man_page(cmd.clone()),
            0o644,
        )?;
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

    // The Debian package, staged where debhelper would stage it
    // (dpkg-shlibdeps reads `debian/control` next to the staged tree).
    let arch = run("dpkg", &["--print-architecture"])?.trim().to_string();
    let version = match &args.version {
        Some(v) => v.clone(),
        None => changelog_version(CHANGELOG)
            .ok_or_else(|| Error::failed("xtask/debian/changelog", "no version on its first line"))?
            .to_string(),
    };
    write(
        &out.join("debian/control"),
        format!("Source: {PACKAGE}\n\nPackage: {PACKAGE}\nArchitecture: any\n").as_bytes(),
        0o644,
    )?;
    let stage = out.join("debian").join(PACKAGE);
    let paths = Paths::for_prefix(Path::new("/usr"));
    install_tree(&bin_dir, &stage, &paths, true)?;
    let staged_bins: Vec<String> = BINARIES
        .iter()
        .map(|b| under(&stage, &paths.bin.join(b)).display().to_string())
        .collect();
    for bin in &staged_bins {
        // dh_strip's flags: debug symbols and notes out, the dynamic symbol
        // table (which the loader needs) in.
        run(
            "strip",
            &[
                "--strip-unneeded",
                "--remove-section=.comment",
                "--remove-section=.note",
                bin,
            ],
        )?;
    }
    let doc = stage.join("usr/share/doc").join(PACKAGE);
    write(
        &doc.join("README.md"),
        &read(&repo.join("README.md"))?,
        0o644,
    )?;
    write(&doc.join("copyright"), COPYRIGHT.as_bytes(), 0o644)?;
    write(
        &doc.join("changelog.Debian.gz"),
        &gzip(changelog_for(&version).as_bytes()),
        0o644,
    )?;
    let nginx = repo.join("contrib/nginx");
    for entry in std::fs::read_dir(&nginx).map_err(Error::io("read directory", &nginx))? {
        let path = entry.map_err(Error::io("read directory", &nginx))?.path();
        if let Some(name) = path.file_name() {
            write(&doc.join("nginx").join(name), &read(&path)?, 0o644)?;
        }
    }
    // `shlibs:Depends=libc6 (>= 2.34), …` from the binaries' NEEDED
    // libraries and symbol versions.
    let mut shlibs_args = vec!["-O"];
    shlibs_args.extend(
        staged_bins
            .iter()
            .map(|b| b.strip_prefix(&format!("{}/", out.display())).unwrap_or(b)),
    );
    let substvars = run_in(Some(&out), "dpkg-shlibdeps", &shlibs_args)?;
    let shlibs = substvars
        .lines()
        .find_map(|l| l.strip_prefix("shlibs:Depends="))
        .unwrap_or("")
        .trim();
    let debian = stage.join("DEBIAN");
    let size = dir_size_kib(&stage);
    write(
        &debian.join("control"),
        control(&version, &arch, size, shlibs).as_bytes(),
        0o644,
    )?;
    write(&debian.join("md5sums"), md5sums(&stage)?.as_bytes(), 0o644)?;
    write(&debian.join("postinst"), POSTINST.as_bytes(), 0o755)?;
    write(&debian.join("prerm"), PRERM.as_bytes(), 0o755)?;
    write(&debian.join("postrm"), POSTRM.as_bytes(), 0o755)?;
    let deb = out.join(format!("{PACKAGE}_{version}_{arch}.deb"));
    let stage_s = stage.display().to_string();
    let deb_s = deb.display().to_string();
    run(
        "dpkg-deb",
        &["--build", "--root-owner-group", "-Zxz", &stage_s, &deb_s],
    )?;
    Ok(Dist { out, deb })
}

/// `dpkg -i` the package, check it, `dpkg -r` it, check it is gone.
pub fn verify(deb: &Path) -> Result<(), Error> {
    if !nix::unistd::geteuid().is_root() {
        return Err(Error::unavailable(
            "--verify",
            "needs root (dpkg -i / dpkg -r)",
        ));
    }
    let status = Cmd::new("dpkg-query")
        .args(["-W", "-f=${Status}", PACKAGE])
        .output()?;
    let status_text = String::from_utf8_lossy(&status.stdout).into_owned();
    if status.status.success() && status_text.contains(" installed") {
        return Err(Error::unavailable(
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
        return Err(Error::failed(
            "dpkg -r",
            format!("files left behind: {}", left.join(", ")),
        ));
    }
    let state = Cmd::new("dpkg-query")
        .args(["-W", "-f=${Status}", PACKAGE])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    if state.contains(" installed") {
        return Err(Error::failed(
            "dpkg -r",
            format!("still installed: {state}"),
        ));
    }
    let doc = Path::new("/usr/share/doc").join(PACKAGE);
    if doc.exists() {
        return Err(Error::failed(
            "dpkg -r",
            format!("{} left behind", doc.display()),
        ));
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
fn check_installed() -> Result<Vec<PathBuf>, Error> {
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
            return Err(Error::failed(
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
        return Err(Error::failed(
            "fleet-waker --version",
            format!("printed {version:?}"),
        ));
    }
    eprintln!("==> /usr/bin/fleet-waker --version: {}", version.trim());
    let man = Cmd::new("man")
        .arg("fleet-reaper")
        .env("MANPAGER", "cat")
        .env("MANWIDTH", "80")
        .output()
        .map_err(|e| Error::unavailable("man (apt-get install man-db)", chain(&e)))?;
    let page = String::from_utf8_lossy(&man.stdout);
    if !man.status.success() || !page.contains("fleet-reaper") || !page.contains("--action") {
        return Err(Error::failed(
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
pub fn main(args: &DistArgs) -> Result<(), Error> {
    let d = dist(args)?;
    eprintln!("==> dist: {}", d.out.display());
    let mut listing = Vec::new();
    list(&d.out, &d.out, &mut listing);
    for l in &listing {
        eprintln!("    {l}");
    }
    eprintln!("==> package: {}", d.deb.display());
    if args.verify { verify(&d.deb) } else { Ok(()) }
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
            if p != root.join("debian") {
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
    fn gzip_is_gzip_without_name_or_time() {
        use std::io::Read as _;
        let data = b"fleet changelog\n".repeat(100);
        let gz = gzip(&data);
        // Magic, deflate, no flags (no name), mtime 0.
        assert_eq!(&gz[..8], &[0x1f, 0x8b, 8, 0, 0, 0, 0, 0]);
        let mut back = Vec::new();
        flate2::read::GzDecoder::new(&gz[..])
            .read_to_end(&mut back)
            .expect("gunzip");
        assert_eq!(back, data);
        assert!(gz.len() < data.len() / 10);
    }

    #[test]
    fn changelog_matches_the_workspace_version() {
        // Bumping the workspace version needs a changelog entry for it.
        let v = changelog_version(CHANGELOG).expect("a version on the first line");
        assert_eq!(v.split_once('-').map(|(u, _)| u), Some(VERSION), "{v}");
        assert_eq!(changelog_for(v), CHANGELOG);
        let up = changelog_for("0.1.0+upgrade1");
        assert_eq!(changelog_version(&up), Some("0.1.0+upgrade1"));
        assert!(up.ends_with(CHANGELOG));
        assert_eq!(up.matches("\n -- fleet maintainers").count(), 2, "{up}");
        assert_eq!(changelog_version("nope (1.0) x"), None);
    }

    #[test]
    fn control_file_fields() {
        let c = control(
            "1.2.3-1",
            "amd64",
            4242,
            "libc6 (>= 2.34), libgcc-s1 (>= 4.2)",
        );
        assert!(c.starts_with("Package: fleet\nVersion: 1.2.3-1\nArchitecture: amd64\n"));
        assert!(c.contains("\nInstalled-Size: 4242\n"));
        assert!(c.contains(
            "\nDepends: libc6 (>= 2.34), libgcc-s1 (>= 4.2), init-system-helpers (>= 1.54~), docker.io | docker-ce | moby-engine | docker-engine\n"
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
            control("1", "arm64", 1, "")
                .contains("\nDepends: init-system-helpers (>= 1.54~), docker.io")
        );
    }

    #[test]
    fn md5sums_list_every_file_but_the_control_area() {
        let dir = std::env::temp_dir().join(format!("xtask-md5-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        write(&dir.join("usr/bin/a"), b"", 0o755).expect("write");
        write(&dir.join("DEBIAN/control"), b"x", 0o644).expect("write");
        write(&dir.join("usr/share/doc/b"), b"abc", 0o644).expect("write");
        let sums = md5sums(&dir);
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(
            sums.expect("md5sums"),
            "d41d8cd98f00b204e9800998ecf8427e  usr/bin/a\n900150983cd24fb0d6963f7d28e17f72  usr/share/doc/b\n"
        );
    }

    #[test]
    fn maintainer_scripts_are_valid_sh_and_enable_nothing() {
        for s in [POSTINST, PRERM, POSTRM] {
            assert!(s.starts_with("#!/bin/sh\n"));
            // Parsed by the shell dpkg runs them with.
            let out = Cmd::new("sh")
                .arg("-n")
                .stdin(s.as_bytes())
                .output()
                .expect("sh -n");
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
            let page = String::from_utf8(man_page(cmd.clone())).expect("utf-8");
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
