//! `cargo xtask dist`: release binaries, systemd units, man pages, shell
//! completions and a Debian package in `target/dist/` (flags: [`DistArgs`]).
//!
//! The package's files are one table ([`files`] and the docs), staged where
//! debhelper would (`<out>/debian/fleet/`); Debian's own tools do the rest:
//! `strip` (dh_strip's flags), `dpkg-shlibdeps` (the shared-library
//! `Depends`), `dpkg-gencontrol` (`DEBIAN/control` from `xtask/debian/control`
//! and the changelog's version), `md5sum`, `dpkg-deb --build`. Man pages and
//! completions come from the binaries' own clap definitions
//! (`fleet_waker::command()` …), so they say what `--help` says. README
//! "Install" lists the lintian tags left and why.

use std::io::Write as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use clap_complete::Shell;

use crate::error::{Cmd, Error, run};
use crate::kit::mkdir;

/// The binaries, in the order they are documented.
pub const BINARIES: &[&str] = &["fleet-waker", "fleet-reaper", "fleet-renew"];
/// Debian package name.
pub const PACKAGE: &str = "fleet";
/// Where the package is staged, relative to dist's output directory.
const STAGE: &str = "debian/fleet";
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
/// `debian/control` (source format), which dpkg-gencontrol makes
/// `DEBIAN/control` of.
pub const CONTROL: &str = include_str!("../debian/control");

/// `cargo xtask dist` arguments.
#[derive(Debug, Clone, Default, PartialEq, Eq, clap::Args)]
pub struct DistArgs {
    /// Package the debug binaries, stripped like release ones (seconds
    /// instead of minutes of release build: for checking the packaging).
    #[arg(long)]
    pub debug: bool,
    /// Do not run cargo build; use target/PROFILE/ as it is.
    #[arg(long)]
    pub no_build: bool,
    /// Write into DIR instead of target/dist.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// As root: dpkg -i the .deb, check files, --version, man page; dpkg -r;
    /// check removal. Refuses when a package fleet is already installed.
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

/// The clap commands of the binaries, as (binary name, command).
fn commands() -> Vec<(&'static str, clap::Command)> {
    vec![
        ("fleet-waker", fleet_waker::command()),
        ("fleet-reaper", fleet_reaper::command()),
        ("fleet-renew", fleet_renew::command()),
    ]
}

/// The shells we ship completions for: the directory under `<prefix>/share`
/// each reads them from, and what goes before and after the binary's name
/// in the file's name.
const SHELLS: &[(Shell, &str, &str, &str)] = &[
    (Shell::Bash, "bash-completion/completions", "", ""),
    (Shell::Zsh, "zsh/vendor-completions", "_", ""),
    (Shell::Fish, "fish/vendor_completions.d", "", ".fish"),
];

/// A unit with `/usr/bin/` in its `Exec…=` lines replaced by `<bindir>/`.
/// Pure.
pub fn rewrite_exec(unit: &str, bindir: &str) -> String {
    let bindir = format!("{}/", bindir.trim_end_matches('/'));
    let exec = |l: &str| l.trim_start().starts_with("Exec") && l.contains('=');
    unit.split_inclusive('\n')
        .map(|l| {
            if exec(l) {
                l.replace("/usr/bin/", &bindir)
            } else {
                l.to_string()
            }
        })
        .collect()
}

/// Build the binaries (`cargo build --profile dev|release -p …`) unless
/// `no_build`, and return the directory they are in (a missing one fails
/// [`files`]).
pub(crate) fn build_binaries(debug: bool, no_build: bool) -> Result<PathBuf, Error> {
    let (profile, dir) = if debug {
        ("dev", "debug")
    } else {
        ("release", "release")
    };
    if !no_build {
        crate::kit::build(profile, BINARIES)?;
    }
    Ok(crate::kit::target_dir().join(dir))
}

fn write(path: &Path, data: &[u8], mode: u32) -> Result<(), Error> {
    if let Some(parent) = path.parent() {
        mkdir(parent)?;
    }
    std::fs::write(path, data).map_err(Error::io("write", path))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(Error::io("chmod", path))
}

fn read(path: &Path) -> Result<Vec<u8>, Error> {
    std::fs::read(path).map_err(Error::io("read", path))
}

/// The files of a directory, sorted.
fn read_dir(dir: &Path) -> Result<Vec<PathBuf>, Error> {
    let entries = std::fs::read_dir(dir).map_err(Error::io("read directory", dir))?;
    let mut paths: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
    paths.sort();
    Ok(paths)
}

/// `dest` + an absolute `path`.
pub fn under(dest: &Path, path: &Path) -> PathBuf {
    dest.join(path.strip_prefix("/").unwrap_or(path))
}

/// A file to install: absolute path, contents, mode.
pub type File = (PathBuf, Vec<u8>, u32);

/// The files of an installation under `prefix`: binaries from `bin_dir`,
/// units (`Exec…=` lines pointing at `<prefix>/bin`; in `/lib/systemd/system`
/// for `/usr`, else `<prefix>/lib/systemd/system`, which systemd also reads),
/// the tmpfiles.d file, man pages (gzipped when `gz`) and completions.
pub fn files(bin_dir: &Path, prefix: &Path, gz: bool) -> Result<Vec<File>, Error> {
    let repo = crate::kit::repo_root();
    let bin = prefix.join("bin");
    let mut files = Vec::new();
    for b in BINARIES {
        files.push((bin.join(b), read(&bin_dir.join(b))?, 0o755));
    }
    let root = if prefix == Path::new("/usr") {
        Path::new("/")
    } else {
        prefix
    };
    for unit in read_dir(&repo.join("systemd"))? {
        let (Some(name), Some("service" | "socket" | "timer")) =
            (unit.file_name(), unit.extension().and_then(|e| e.to_str()))
        else {
            continue;
        };
        let text = String::from_utf8_lossy(&read(&unit)?).into_owned();
        let text = rewrite_exec(&text, &bin.display().to_string());
        let path = root.join("lib/systemd/system").join(name);
        files.push((path, text.into(), 0o644));
    }
    let tmpfiles = read(&repo.join("systemd/fleet.tmpfiles"))?;
    files.push((prefix.join("lib/tmpfiles.d/fleet.conf"), tmpfiles, 0o644));
    let man1 = prefix.join("share/man/man1");
    for (bin, mut cmd) in commands() {
        let mut page = Vec::new();
        // Rendering into a Vec cannot fail.
        let _ = clap_mangen::Man::new(cmd.clone()).render(&mut page);
        files.push(match gz {
            true => (man1.join(format!("{bin}.1.gz")), gzip(&page), 0o644),
            false => (man1.join(format!("{bin}.1")), page, 0o644),
        });
        for (shell, dir, before, after) in SHELLS {
            let mut script = Vec::new();
            clap_complete::generate(*shell, &mut cmd, bin, &mut script);
            let path = prefix.join("share").join(dir);
            files.push((path.join(format!("{before}{bin}{after}")), script, 0o644));
        }
    }
    Ok(files)
}

/// Write `files` under `dest`.
pub fn install(dest: &Path, files: &[File]) -> Result<(), Error> {
    files
        .iter()
        .try_for_each(|(path, data, mode)| write(&under(dest, path), data, *mode))
}

/// dist's plain copies: where the files of each directory of a `/usr`
/// installation go in the output directory (the tmpfiles.d file does not).
const PLAIN: &[(&str, &str)] = &[
    ("/usr/bin", "bin"),
    ("/lib/systemd/system", "systemd"),
    ("/usr/share/man/man1", "man"),
    ("/usr/share/bash-completion/completions", "completions/bash"),
    ("/usr/share/zsh/vendor-completions", "completions/zsh"),
    ("/usr/share/fish/vendor_completions.d", "completions/fish"),
];

/// `DEBIAN/md5sums` of `files` (absolute paths as installed) in the staged
/// tree `root`, in that order: `md5sum`'s own format.
fn md5sums(root: &Path, files: &[&Path]) -> Result<String, Error> {
    let relative = files.iter().map(|f| f.strip_prefix("/").unwrap_or(f));
    Cmd::new("md5sum")
        .arg("--")
        .args(relative)
        .dir(root)
        .stdout()
}

/// `DEBIAN/control` of the package staged in `<dir>/debian/fleet`, made by
/// dpkg-gencontrol from [`CONTROL`], `changelog` (the version)
/// and `<dir>/debian/substvars` (dpkg-shlibdeps' `shlibs:Depends`).
fn gencontrol(dir: &Path, changelog: &str) -> Result<String, Error> {
    write(&dir.join("debian/changelog"), changelog.as_bytes(), 0o644)?;
    let control = dir.join(STAGE).join("DEBIAN/control");
    mkdir(control.parent().unwrap_or(dir))?;
    Cmd::new("dpkg-gencontrol")
        .arg(format!("-P{STAGE}"))
        .dir(dir)
        .stdout()?;
    Ok(String::from_utf8_lossy(&read(&control)?).into_owned())
}

/// Produce everything into `out`; returns the .deb.
pub fn dist(args: &DistArgs) -> Result<PathBuf, Error> {
    let bin_dir = build_binaries(args.debug, args.no_build)?;
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| crate::kit::target_dir().join("dist"));
    if out.exists() {
        std::fs::remove_dir_all(&out).map_err(Error::io("clean", &out))?;
    }
    eprintln!("==> dist: {}", out.display());
    for (path, data, mode) in files(&bin_dir, Path::new("/usr"), false)? {
        let dir = path.parent().and_then(|d| d.to_str());
        if let Some((_, to)) = PLAIN.iter().find(|(from, _)| dir == Some(*from)) {
            let to = Path::new(to).join(path.file_name().unwrap_or_default());
            eprintln!("    {}", to.display());
            write(&out.join(to), &data, mode)?;
        }
    }

    // The package: the files, with the docs in /usr/share/doc/fleet.
    let repo = crate::kit::repo_root();
    let changelog = match &args.version {
        Some(v) => changelog_for(v),
        None => CHANGELOG.to_string(),
    };
    let mut files = files(&bin_dir, Path::new("/usr"), true)?;
    let doc = Path::new("/usr/share/doc").join(PACKAGE);
    let docs = [
        ("README.md", "README.md"),
        ("xtask/debian/copyright", "copyright"),
    ];
    for (from, to) in docs {
        files.push((doc.join(to), read(&repo.join(from))?, 0o644));
    }
    let changelog_gz = gzip(changelog.as_bytes());
    files.push((doc.join("changelog.Debian.gz"), changelog_gz, 0o644));
    for path in read_dir(&repo.join("contrib/nginx"))? {
        let name = path.file_name().unwrap_or_default();
        files.push((doc.join("nginx").join(name), read(&path)?, 0o644));
    }
    files.sort();
    let stage = out.join(STAGE);
    install(&stage, &files)?;
    // The tools run in `out` and read `out/debian/`.
    write(&out.join("debian/control"), CONTROL.as_bytes(), 0o644)?;
    let bins: Vec<PathBuf> = BINARIES
        .iter()
        .map(|b| stage.join("usr/bin").join(b))
        .collect();
    // dh_strip's flags: debug symbols and notes out, the dynamic symbol
    // table (which the loader needs) in.
    let strip = [
        "--strip-unneeded",
        "--remove-section=.comment",
        "--remove-section=.note",
    ];
    Cmd::new("strip").args(strip).args(&bins).stdout()?;
    // `debian/substvars`: `shlibs:Depends=libc6 (>= 2.34), …` from the
    // binaries' NEEDED libraries and symbol versions.
    Cmd::new("dpkg-shlibdeps").args(&bins).dir(&out).stdout()?;
    gencontrol(&out, &changelog)?;
    let paths: Vec<&Path> = files.iter().map(|(p, _, _)| p.as_path()).collect();
    let debian = stage.join("DEBIAN");
    let md5sums = md5sums(&stage, &paths)?;
    write(&debian.join("md5sums"), md5sums.as_bytes(), 0o644)?;
    for (name, script) in [("postinst", POSTINST), ("prerm", PRERM), ("postrm", POSTRM)] {
        write(&debian.join(name), script.as_bytes(), 0o755)?;
    }
    // Named `fleet_<version>_<arch>.deb` by dpkg-deb, the only .deb in `out`.
    Cmd::new("dpkg-deb")
        .args(["--build", "--root-owner-group", "-Zxz"])
        .args([&stage, &out])
        .stdout()?;
    let mut debs = read_dir(&out)?.into_iter();
    let deb = debs.find(|p| p.extension().is_some_and(|e| e == "deb"));
    let deb = deb.ok_or_else(|| Error::failed("dpkg-deb --build", "made no .deb"))?;
    eprintln!("==> package: {}", deb.display());
    Ok(deb)
}

/// dpkg's status of the package (`install ok installed`; empty when dpkg
/// knows no such package).
fn dpkg_status() -> String {
    run("dpkg-query", &["-W", "-f=${Status}", PACKAGE]).unwrap_or_default()
}

/// Runs `program args`, says so and shows its output; returns the output.
fn step(program: &str, args: &[&str]) -> Result<String, Error> {
    eprintln!("==> {program} {}", args.join(" "));
    let out = run(program, args)?;
    eprint!("{out}");
    Ok(out)
}

/// `dpkg -i` the package, check it, `dpkg -r` it, check it is gone.
pub fn verify(deb: &Path) -> Result<(), Error> {
    if !nix::unistd::geteuid().is_root() {
        let why = "needs root (dpkg -i / dpkg -r)";
        return Err(Error::unavailable("--verify", why));
    }
    let status = dpkg_status();
    if status.contains(" installed") {
        let why = format!("a package {PACKAGE} is already installed ({status}); not touching it");
        return Err(Error::unavailable("--verify", why));
    }
    // Once it is installed, remove it whatever happens.
    let checked = step("dpkg", &["-i", &deb.display().to_string()]).and_then(|_| check_installed());
    let removed = step("dpkg", &["-r", PACKAGE]);
    let listed = checked?;
    removed?;
    let doc = Path::new("/usr/share/doc").join(PACKAGE);
    let mut left: Vec<String> = listed
        .iter()
        .chain([&doc])
        .filter(|p| std::fs::symlink_metadata(p).is_ok())
        .map(|p| p.display().to_string())
        .collect();
    let status = dpkg_status();
    if status.contains(" installed") {
        left.push(format!("dpkg's status {status:?}"));
    }
    if !left.is_empty() {
        let left = format!("left behind: {}", left.join(", "));
        return Err(Error::failed("dpkg -r", left));
    }
    let n = listed.len();
    eprintln!("==> removed cleanly; none of the {n} files it had installed is left");
    // dpkg -r keeps the maintainer scripts' record; purge it so the dpkg
    // database is as before.
    step("dpkg", &["--purge", PACKAGE]).map(|_| ())
}

/// Check the installed package: every file as its md5sums say
/// (`dpkg --verify`), `fleet-waker --version`, `man fleet-reaper`. Returns
/// the files (not directories) it owns.
fn check_installed() -> Result<Vec<PathBuf>, Error> {
    let files: Vec<PathBuf> = step("dpkg", &["-L", PACKAGE])?
        .lines()
        .map(PathBuf::from)
        // Regular files only: directories are shared, and /lib may be a
        // symlink to /usr/lib (merged /usr).
        .filter(|p| std::fs::symlink_metadata(p).is_ok_and(|m| m.is_file()))
        .collect();
    // dpkg --verify lists what is missing or differs from md5sums.
    let bad = step("dpkg", &["--verify", PACKAGE])?;
    let version = step("/usr/bin/fleet-waker", &["--version"])?;
    let man = Cmd::new("man").arg("fleet-reaper").env("MANPAGER", "cat");
    let page = man.env("MANWIDTH", "80").stdout().map_err(|e| match e {
        // Only a missing `man` is helped by installing it.
        Error::Unavailable { .. } => {
            let why = format!("{} (apt-get install man-db)", crate::error::chain(&e));
            Error::unavailable("man fleet-reaper", why)
        }
        e => e,
    })?;
    eprintln!("==> man fleet-reaper: {} lines", page.lines().count());
    if !bad.trim().is_empty() {
        Err(Error::failed("dpkg --verify fleet", bad))
    } else if version.trim() != format!("fleet-waker {VERSION}") {
        Err(Error::failed("fleet-waker --version", version))
    } else if !page.contains("fleet-reaper") || !page.contains("--action") {
        Err(Error::failed("man fleet-reaper", page))
    } else {
        Ok(files)
    }
}

/// `cargo xtask dist …`.
pub fn main(args: &DistArgs) -> Result<(), Error> {
    let deb = dist(args)?;
    if args.verify { verify(&deb) } else { Ok(()) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kit::site::temp_dir;

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

    /// `DEBIAN/control` as dist makes it, for a package of one 4242 KiB file
    /// whose dpkg-shlibdeps found `shlibs`.
    fn control(version: &str, shlibs: &str) -> String {
        let dir = temp_dir("dist-control");
        let (substvars, bin) = (format!("shlibs:Depends={shlibs}\n"), vec![0; 4242 * 1024]);
        let files: [File; 3] = [
            ("debian/control".into(), CONTROL.into(), 0o644),
            ("debian/substvars".into(), substvars.into(), 0o644),
            (format!("{STAGE}/usr/bin/a").into(), bin, 0o755),
        ];
        install(dir.path(), &files).expect("write");
        gencontrol(dir.path(), &changelog_for(version)).expect("dpkg-gencontrol")
    }

    #[test]
    fn control_file_fields() {
        if crate::kit::process::find_in_path("dpkg-gencontrol").is_none() {
            assert!(!crate::kit::in_ci(), "dpkg-gencontrol missing under CI");
            eprintln!(
                "SKIP control_file_fields: dpkg-gencontrol missing (apt-get install dpkg-dev)"
            );
            return;
        }
        let c = control("1.2.3-1", "libc6 (>= 2.34), libgcc-s1 (>= 4.2)");
        let arch = run("dpkg", &["--print-architecture"]).expect("dpkg");
        let head = format!("Package: fleet\nVersion: 1.2.3-1\nArchitecture: {arch}");
        assert!(c.starts_with(&head), "{c}");
        // The file's 4242 KiB and one for each directory.
        let size = c.lines().find_map(|l| l.strip_prefix("Installed-Size: "));
        let size: u64 = size.and_then(|s| s.parse().ok()).expect("Installed-Size");
        assert!((4242..4250).contains(&size), "{c}");
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
        let c = control("1", "");
        assert!(c.contains("\nDepends: init-system-helpers (>= 1.54~), docker.io"));
    }

    #[test]
    fn md5sums_list_every_file_but_the_control_area() {
        let dir = temp_dir("dist-md5");
        write(&dir.path().join("usr/bin/a"), b"", 0o755).expect("write");
        write(&dir.path().join("DEBIAN/control"), b"x", 0o644).expect("write");
        write(&dir.path().join("usr/share/doc/b"), b"abc", 0o644).expect("write");
        // dist lists the package's files, which has none in DEBIAN/.
        let files = [Path::new("/usr/bin/a"), Path::new("/usr/share/doc/b")];
        assert_eq!(
            md5sums(dir.path(), &files).expect("md5sums"),
            "d41d8cd98f00b204e9800998ecf8427e  usr/bin/a\n900150983cd24fb0d6963f7d28e17f72  usr/share/doc/b\n"
        );
    }

    #[test]
    fn maintainer_scripts_are_valid_sh_and_enable_nothing() {
        for s in [POSTINST, PRERM, POSTRM] {
            assert!(s.starts_with("#!/bin/sh\n"));
            // Parsed by the shell dpkg runs them with.
            let sh = Cmd::new("sh").arg("-n").stdin(s).stdout();
            sh.unwrap_or_else(|e| panic!("{}\n{s}", crate::error::chain(&e)));
            let code: Vec<&str> = s
                .lines()
                .filter(|l| !l.trim_start().starts_with('#'))
                .collect();
            let at = |pred: fn(&&str) -> bool| code.iter().position(pred);
            let enable = at(|l| l.contains("systemctl enable") || l.contains("helper enable"));
            assert!(enable.is_none(), "{s}");
            // Every call into systemd comes after the systemd-is-running check.
            let guarded = at(|l| l.contains("[ -d /run/systemd/system ]"));
            let first_call = at(|l| l.contains("systemctl ") || l.contains("deb-systemd-invoke "));
            assert!(
                matches!((guarded, first_call), (Some(g), Some(c)) if c > g),
                "{s}"
            );
        }
        assert!(POSTINST.contains("systemctl --system daemon-reload"));
        assert!(POSTINST.contains("deb-systemd-invoke try-restart 'fleet-waker@*.service'"));
        assert!(PRERM.contains("'fleet-waker@*.socket' 'fleet-waker@*.service'"));
        assert!(POSTRM.contains("systemctl --system daemon-reload"));
        // The enablement links an admin's `systemctl enable` makes (the
        // sites' sockets, the reaper's timer): started on install, reported
        // on remove, deleted on purge.
        let links = "/etc/systemd/system/*.wants/fleet-waker@*.socket /etc/systemd/system/*.wants/fleet-reaper.timer";
        assert!(POSTINST.contains(links) && POSTRM.contains(links));
        // Sockets are never restarted: the listening socket stays with systemd.
        assert!(!POSTINST.contains("restart 'fleet-waker@*.socket'"));
    }

    /// [`files`] under `prefix`, with stand-ins for the binaries.
    fn files_under(prefix: &str, gz: bool) -> Vec<File> {
        let bins = temp_dir("dist-bins");
        for b in BINARIES {
            write(&bins.path().join(b), b"", 0o755).expect("write");
        }
        files(bins.path(), Path::new(prefix), gz).expect("files")
    }

    #[test]
    fn paths_for_prefixes() {
        let usr = files_under("/usr", true);
        let local = files_under("/usr/local", false);
        let has = |files: &[File], path: &str| files.iter().any(|(p, _, _)| p == Path::new(path));
        assert!(has(&usr, "/lib/systemd/system/fleet-waker@.service"));
        assert!(has(&usr, "/usr/bin/fleet-waker"));
        assert!(has(&usr, "/usr/share/man/man1/fleet-reaper.1.gz"));
        assert!(has(
            &local,
            "/usr/local/lib/systemd/system/fleet-waker@.socket"
        ));
        assert!(has(&local, "/usr/local/share/man/man1/fleet-reaper.1"));
        assert_eq!(
            under(Path::new("/d"), Path::new("/usr/bin/x")),
            Path::new("/d/usr/bin/x")
        );
    }

    #[test]
    fn man_pages_and_completions_for_every_binary() {
        let cmds = commands();
        assert_eq!(cmds.iter().map(|(b, _)| *b).collect::<Vec<_>>(), BINARIES);
        let files = files_under("/p", false);
        let text = |path: String| {
            let file = files.iter().find(|(p, _, _)| *p == Path::new(&path));
            String::from_utf8(file.expect(&path).1.clone()).expect("utf-8")
        };
        for (bin, cmd) in cmds {
            assert_eq!(cmd.get_name(), bin);
            let page = text(format!("/p/share/man/man1/{bin}.1"));
            assert!(page.contains(".TH "), "{page}");
            assert!(page.contains(bin));
            for (shell, dir, before, after) in SHELLS {
                let script = text(format!("/p/share/{dir}/{before}{bin}{after}"));
                assert!(script.contains(bin), "{shell} completion of {bin}");
            }
        }
    }
}
