//! The php-fpm test image, built from the host's Debian `php8.2-fpm`.
//!
//! No registry is reachable, so the image is a tiny rootfs assembled in
//! memory: the php-fpm binary, every shared library the dynamic loader says
//! it needs (symlink names kept, the loader itself included), a minimal
//! `/etc/passwd` and `/etc/group`, and our own `php-fpm.conf` / `php.ini`.
//! The tar is deterministic (sorted, mtime 0, uid/gid 0), so its sha256 is a
//! content hash: the image is tagged `fleet-php-fpm:<first 16 hex>` and only
//! imported (`docker import`) when `docker image inspect` does not know the
//! tag yet. `fleet-php-fpm:latest` always points at the newest build.
//!
//! Hashing ~56 MB costs seconds in a debug build, so there is a fast path:
//! a manifest key hashes the host files' (path, size, mtime, device, inode,
//! mode) and our own files' contents, and the image also gets the tag
//! `fleet-php-fpm:m-<manifest key>`. When that tag exists, its content tag is
//! used without reading the files. A package upgrade changes the metadata,
//! so the manifest misses and the content hash decides again.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};
use std::sync::Mutex;

use sha2::{Digest as _, Sha256};

use crate::Error;
use crate::error::{Cmd, chain, run};

/// The host's php-fpm binary that goes into the image.
pub const PHP_FPM: &str = "/usr/sbin/php-fpm8.2";
/// Repository part of the image tags.
pub const REPOSITORY: &str = "fleet-php-fpm";
/// Environment variable (set in the image, overridable per container) with
/// the number of php-fpm workers of the static pool.
pub const CHILDREN_ENV: &str = "FLEET_FPM_CHILDREN";
/// Default number of php-fpm workers.
pub const DEFAULT_CHILDREN: u32 = 4;
/// Environment variable with the pool's `pm.status_path`.
pub const STATUS_PATH_ENV: &str = "FLEET_FPM_STATUS_PATH";
/// Default status path: the one fleet asks for.
pub const DEFAULT_STATUS_PATH: &str = fleet_core::fpm_status::DEFAULT_STATUS_PATH;
/// Environment variable with the owner and group of php-fpm's socket.
pub const LISTEN_OWNER_ENV: &str = "FLEET_FPM_LISTEN_OWNER";
/// Environment variable with the mode of php-fpm's socket (Debian's stock
/// pool: `www-data`, `0660`).
pub const LISTEN_MODE_ENV: &str = "FLEET_FPM_LISTEN_MODE";
/// Environment variable with the pool's `access.log`.
pub const ACCESS_LOG_ENV: &str = "FLEET_FPM_ACCESS_LOG";
/// Default access log: php-fpm's stderr, so `docker logs` shows a line per
/// request (`/dev/null` makes a stock pool, which logs none).
pub const DEFAULT_ACCESS_LOG: &str = "/proc/self/fd/2";
/// Where php-fpm listens inside the container (bind-mount the site's runtime
/// directory at `/run/php`).
pub const CONTAINER_SOCKET: &str = "/run/php/php-fpm.sock";
/// Document root inside the container.
pub const CONTAINER_DOCROOT: &str = "/srv/www";

/// Time zone files PHP needs for `date.timezone = UTC` (added when present).
const TZ_FILES: &[&str] = &["/usr/share/zoneinfo/UTC", "/usr/share/zoneinfo/Etc/UTC"];

/// The loaders we know how to ask for a binary's libraries (`--list`).
const LOADERS: &[&str] = &["/lib64/ld-linux-x86-64.so.2", "/lib/ld-linux-aarch64.so.1"];

/// The result of [`ensure_image_info`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    /// `fleet-php-fpm:<16 hex>`.
    pub tag: String,
    /// True when the tag already existed and nothing was imported.
    pub cached: bool,
}

/// One site's container of the php-fpm image, as every site in the tests,
/// the demo and the benches is made: no network, the site's runtime
/// directory at `/run/php` (where php-fpm listens), its docroot read-only.
#[derive(Debug, Clone, Copy)]
pub struct SiteContainer<'a> {
    pub name: &'a str,
    pub image: &'a str,
    /// The site's runtime directory on the host.
    pub run_dir: &'a Path,
    /// The docroot on the host, mounted read-only at `docroot_inside`.
    pub docroot: &'a Path,
    pub docroot_inside: &'a str,
    /// `key=value` labels (how leftovers of a dead run are found).
    pub labels: &'a [String],
    /// `KEY=value` environment (the pool's settings, `FLEET_SITE`).
    pub env: &'a [String],
    /// Further `docker create` arguments (mounts, `--stop-signal`, …).
    pub extra: &'a [String],
}

/// The labels of a test or benchmark container made by this process: the
/// tests' leftover check removes those whose process is gone.
pub fn test_labels() -> Vec<String> {
    vec![
        "fleet.test=1".to_owned(),
        format!("fleet.test.pid={}", std::process::id()),
    ]
}

/// `docker create` of `c` (an argv, never a shell), stopped.
pub fn create_site_container(c: &SiteContainer<'_>) -> Result<(), Error> {
    let run_mount = format!("{}:/run/php", c.run_dir.display());
    let www_mount = format!("{}:{}:ro", c.docroot.display(), c.docroot_inside);
    Cmd::new("docker")
        .args(["create", "--name", c.name, "--network", "none"])
        .args(c.labels.iter().flat_map(|l| ["--label", l.as_str()]))
        .args(["-v", &run_mount, "-v", &www_mount])
        .args(c.env.iter().flat_map(|e| ["-e", e.as_str()]))
        .args(c.extra)
        .arg(c.image)
        .stdout()
        .map(drop)
}

/// Build (or find cached) the php-fpm image: its content-hash tag and
/// whether it was cached. Any failure is [`Error::Unavailable`]: the tests
/// cannot run without it.
///
/// Safe to call from many threads: the first caller in the process does the
/// work, the others wait and get the same answer. Two processes importing the
/// same tag at once is harmless (same content, same tag).
pub fn ensure_image_info() -> Result<Image, Error> {
    build_image().map_err(|e| Error::unavailable("php-fpm image", chain(&e)))
}

fn build_image() -> Result<Image, Error> {
    // The tag once it is built or found.
    static DONE: Mutex<Option<String>> = Mutex::new(None);
    let mut done = DONE.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(tag) = done.clone() {
        return Ok(Image { tag, cached: true });
    }
    let entries = collect()?;
    let manifest_tag = format!("{REPOSITORY}:m-{}", manifest_key(&entries));
    let (tag, cached) = match content_tag_of(&manifest_tag)? {
        // Fast path: these very host files were imported before.
        Some(tag) => (tag, true),
        None => {
            let tar = write_tar(&entries)?;
            let image = ensure_tar_image(REPOSITORY, &tar, &php_changes())?;
            run("docker", &["tag", &image.tag, &manifest_tag])?;
            (image.tag, image.cached)
        }
    };
    run("docker", &["tag", &tag, &format!("{REPOSITORY}:latest")])?;
    *done = Some(tag.clone());
    Ok(Image { tag, cached })
}

/// `fleet-php-fpm:<first 16 hex digits of sha256(tar)>`.
pub fn tag_for(tar: &[u8]) -> String {
    content_tag(REPOSITORY, tar)
}

/// `<repository>:<first 16 hex digits of sha256(tar)>`: a deterministic
/// tar's hash is its content's, so the tag names the content.
pub fn content_tag(repository: &str, tar: &[u8]) -> String {
    format!("{repository}:{}", hex16(&Sha256::digest(tar)))
}

/// The image of a deterministic rootfs `tar`, tagged by [`content_tag`]:
/// imported (`docker import`, applying the Dockerfile instructions
/// `changes`) only when Docker does not know that tag yet. The php-fpm image
/// and the reaper bench's light image are both made this way.
pub fn ensure_tar_image(repository: &str, tar: &[u8], changes: &[String]) -> Result<Image, Error> {
    let tag = content_tag(repository, tar);
    let cached = image_exists(&tag)?;
    if !cached {
        let changes = changes.iter().flat_map(|c| ["--change", c.as_str()]);
        let import = Cmd::new("docker").arg("import").args(changes);
        import.args(["-", &tag]).stdin(tar).stdout()?;
    }
    Ok(Image { tag, cached })
}

/// A deterministic tar (sorted, mtime 0, uid/gid 0) of `(path, mode,
/// content)` regular files, their parent directories added with mode 0755.
/// Paths are taken relative to `/` whether or not they start with it.
pub fn files_tar(files: &[(PathBuf, u32, Vec<u8>)]) -> Result<Vec<u8>, Error> {
    let mut entries = BTreeMap::new();
    for (path, mode, content) in files {
        insert(&mut entries, path, Entry::File(*mode, content.clone()));
    }
    write_tar(&entries)
}

/// The shared libraries the host's dynamic loader says `binary` needs, the
/// loader itself last (its `--list` output, parsed by [`parse_loader_list`]).
pub fn needed_libraries(binary: &Path) -> Result<Vec<PathBuf>, Error> {
    let why = format!("none known (looked for {LOADERS:?})");
    let loader = LOADERS.iter().map(Path::new).find(|p| p.exists());
    let loader = loader.ok_or_else(|| Error::unavailable("a dynamic loader", why))?;
    let listing = Cmd::new(loader).arg("--list").arg(binary).stdout()?;
    let mut libs = parse_loader_list(&listing);
    libs.push(loader.to_path_buf());
    Ok(libs)
}

/// The content tag (`fleet-php-fpm:<16 hex>`) of the image that
/// `manifest_tag` points at, if that tag exists.
fn content_tag_of(manifest_tag: &str) -> Result<Option<String>, Error> {
    if !image_exists(manifest_tag)? {
        return Ok(None);
    }
    let format = "{{range .RepoTags}}{{println .}}{{end}}";
    let inspect = ["image", "inspect", "--format", format, manifest_tag];
    Ok(pick_content_tag(&run("docker", &inspect)?))
}

/// From an image's repo tags, the content-hash one.
pub fn pick_content_tag(repo_tags: &str) -> Option<String> {
    repo_tags.lines().map(str::trim).find_map(|t| {
        let hex = t.strip_prefix(REPOSITORY)?.strip_prefix(':')?;
        (hex.len() == 16 && hex.bytes().all(|b| b.is_ascii_hexdigit())).then(|| t.to_string())
    })
}

fn image_exists(tag: &str) -> Result<bool, Error> {
    let cmd = Cmd::new("docker").args(["image", "inspect", "--format", "{{.Id}}", tag]);
    let out = cmd.output()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if out.status.success() {
        Ok(true)
    } else if stderr.contains("No such image") || stderr.contains("No such object") {
        Ok(false)
    } else {
        let why = format!("{}: {}", out.status, stderr.trim());
        Err(Error::failed(cmd.line(), why))
    }
}

/// The image's environment: the defaults `php-fpm.conf` expands.
fn image_env() -> [(&'static str, String); 5] {
    [
        (LISTEN_OWNER_ENV, "root".to_string()),
        (LISTEN_MODE_ENV, "0666".to_string()),
        (CHILDREN_ENV, DEFAULT_CHILDREN.to_string()),
        (STATUS_PATH_ENV, DEFAULT_STATUS_PATH.to_string()),
        (ACCESS_LOG_ENV, DEFAULT_ACCESS_LOG.to_string()),
    ]
}

/// The php-fpm image's Dockerfile instructions: its command and [`image_env`].
fn php_changes() -> Vec<String> {
    let cmd = format!(r#"CMD ["{PHP_FPM}","-F","-R"]"#);
    std::iter::once(cmd)
        .chain(image_env().iter().map(|(k, v)| format!("ENV {k}={v}")))
        .collect()
}

/// One entry of the rootfs, keyed by its path without the leading `/`.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Entry {
    Dir(u32),
    /// Our own file: mode, content.
    File(u32, Vec<u8>),
    /// A host file, read when the tar is written; the metadata is the
    /// manifest's cheap stand-in for the content.
    HostFile {
        mode: u32,
        src: PathBuf,
        size: u64,
        mtime_ns: i128,
        dev: u64,
        ino: u64,
    },
    Symlink(PathBuf),
}

/// The rootfs as a deterministic tar (sorted paths, mtime 0, uid/gid 0).
pub fn rootfs_tar() -> Result<Vec<u8>, Error> {
    write_tar(&collect()?)
}

/// Every entry of the rootfs, without reading the host files' contents.
fn collect() -> Result<BTreeMap<PathBuf, Entry>, Error> {
    let php_fpm = Path::new(PHP_FPM);
    if !php_fpm.exists() {
        let why = "missing: install it with `apt-get install php8.2-fpm`";
        return Err(Error::unavailable(PHP_FPM, why));
    }
    let mut host = vec![php_fpm.to_path_buf()];
    host.extend(needed_libraries(php_fpm)?);
    // PHP (Debian build) reads time zones from the system tzdata: without
    // it every start warns "Invalid date.timezone value 'UTC'".
    host.extend(TZ_FILES.iter().map(PathBuf::from).filter(|p| p.exists()));
    // posix (posix_mkfifo, posix_getpid…): the tenant tests act as a hostile
    // site would, from PHP inside the container.
    host.extend(posix_extension());
    let mut entries = BTreeMap::new();
    for path in &host {
        add_host_path(&mut entries, path)?;
    }
    for (path, mode, content) in static_files() {
        let file = Entry::File(mode, content.into_bytes());
        insert(&mut entries, Path::new(path), file);
    }
    for (dir, mode) in [
        ("tmp", 0o1777),
        ("run", 0o755),
        ("run/php", 0o755),
        ("srv", 0o755),
        ("srv/www", 0o755),
        ("etc/php/8.2/fpm/conf.d", 0o755),
    ] {
        insert(&mut entries, Path::new(dir), Entry::Dir(mode));
    }
    Ok(entries)
}

/// Bump when the way the rootfs is assembled changes.
const MANIFEST_VERSION: &str = "fleet-php-fpm manifest v1";

/// A hash of what would go into the tar, using the host files' (path, size,
/// mtime, device, inode, mode) instead of their bytes: cheap to compute, and
/// any package upgrade changes it. Our own files are hashed by content.
fn manifest_key(entries: &BTreeMap<PathBuf, Entry>) -> String {
    let mut hasher = Sha256::new();
    hasher.update(MANIFEST_VERSION.as_bytes());
    for (path, entry) in entries {
        hasher.update(format!("\n{path:?} {entry:?}").as_bytes());
    }
    hex16(&hasher.finalize())
}

fn hex16(digest: &[u8]) -> String {
    digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// Paths of the libraries in `ld.so --list` / `ldd` output (the vDSO, which
/// has no file, is skipped).
pub fn parse_loader_list(listing: &str) -> Vec<PathBuf> {
    listing
        .lines()
        .map(|line| line.split_once("=>").map_or(line, |(_, rest)| rest))
        .map(|path| path.split_once(" (").map_or(path, |(path, _)| path))
        .map(str::trim)
        .filter(|path| path.starts_with('/'))
        .map(PathBuf::from)
        .collect()
}

fn rel(path: &Path) -> PathBuf {
    path.components()
        .filter(|c| matches!(c, Component::Normal(_)))
        .collect()
}

/// Adds `entry` at `path` (taken relative to `/`), and its parent
/// directories (mode 0755) where missing.
fn insert(entries: &mut BTreeMap<PathBuf, Entry>, path: &Path, entry: Entry) {
    let rel = rel(path);
    for parent in rel
        .ancestors()
        .skip(1)
        .filter(|p| !p.as_os_str().is_empty())
    {
        entries
            .entry(parent.to_owned())
            .or_insert(Entry::Dir(0o755));
    }
    entries.insert(rel, entry);
}

/// Lexically join a symlink target onto the link's directory and normalise.
fn resolve_link(link: &Path, target: &Path) -> PathBuf {
    // An absolute target replaces the base in `join`.
    let base = link.parent().unwrap_or(Path::new("/"));
    let mut out = PathBuf::from("/");
    for comp in base.join(target).components() {
        match comp {
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(c) => out.push(c),
            _ => {}
        }
    }
    out
}

/// Copy a host path into the rootfs, keeping every symlink on the way (in
/// parent directories too, e.g. Debian's `/lib -> usr/lib`) as a symlink.
fn add_host_path(entries: &mut BTreeMap<PathBuf, Entry>, path: &Path) -> Result<(), Error> {
    use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
    let mut path = resolve_link(Path::new("/"), path);
    'hop: for _ in 0..40 {
        // Find the first symlinked ancestor (or the path itself).
        let mut prefix = PathBuf::from("/");
        for comp in rel(&path).components() {
            prefix.push(comp);
            let meta = std::fs::symlink_metadata(&prefix).map_err(Error::io("stat", &prefix))?;
            if meta.file_type().is_symlink() {
                let target = std::fs::read_link(&prefix).map_err(Error::io("readlink", &prefix))?;
                insert(entries, &prefix, Entry::Symlink(target.clone()));
                let resolved = resolve_link(&prefix, &target);
                // Not joined when empty: that would add a trailing `/`.
                let rest = path.strip_prefix(&prefix).unwrap_or(Path::new(""));
                path = if rest.as_os_str().is_empty() {
                    resolved
                } else {
                    resolved.join(rest)
                };
                continue 'hop;
            }
        }
        let meta = std::fs::metadata(&path).map_err(Error::io("stat", &path))?;
        let file = Entry::HostFile {
            mode: meta.permissions().mode() & 0o7777,
            src: path.clone(),
            size: meta.len(),
            mtime_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
            dev: meta.dev(),
            ino: meta.ino(),
        };
        insert(entries, &path, file);
        return Ok(());
    }
    let why = "too many levels of symbolic links";
    Err(Error::failed(path.display().to_string(), why))
}

fn write_tar(entries: &BTreeMap<PathBuf, Entry>) -> Result<Vec<u8>, Error> {
    let tar_error = |e| Error::failed("the rootfs tar", e);
    let mut builder = tar::Builder::new(Vec::new());
    builder.mode(tar::HeaderMode::Deterministic);
    for (path, entry) in entries {
        let mut header = tar::Header::new_gnu();
        header.set_mtime(0);
        header.set_uid(0);
        header.set_gid(0);
        let (kind, mode, data) = match entry {
            Entry::Symlink(_) => (tar::EntryType::Symlink, 0o777, Vec::new()),
            Entry::Dir(mode) => (tar::EntryType::Directory, *mode, Vec::new()),
            Entry::File(mode, data) => (tar::EntryType::Regular, *mode, data.clone()),
            Entry::HostFile { mode, src, .. } => {
                let data = std::fs::read(src).map_err(Error::io("read", src))?;
                (tar::EntryType::Regular, *mode, data)
            }
        };
        header.set_entry_type(kind);
        header.set_mode(mode);
        header.set_size(data.len() as u64);
        // A symlink's header carries its target; every other kind, its data.
        match entry {
            Entry::Symlink(target) => builder.append_link(&mut header, path, target),
            _ => builder.append_data(&mut header, path, data.as_slice()),
        }
        .map_err(tar_error)?;
    }
    builder.into_inner().map_err(tar_error)
}

/// Our configuration files, `(absolute path, mode, content)`.
fn static_files() -> Vec<(&'static str, u32, String)> {
    vec![
        ("/etc/passwd", 0o644, "root:x:0:0:root:/root:/usr/sbin/nologin\nwww-data:x:33:33:www-data:/var/www:/usr/sbin/nologin\n".to_string()),
        ("/etc/group", 0o644, "root:x:0:\nwww-data:x:33:\n".to_string()),
        ("/etc/php/8.2/fpm/php-fpm.conf", 0o644, php_fpm_conf()),
        ("/etc/php/8.2/fpm/php.ini", 0o644, php_ini()),
    ]
}

/// php-fpm's configuration: foreground, logs and (by default) an access
/// line per request on stderr (so `docker logs` shows every request), one
/// static pool with its status page. php-fpm expands `${VAR}` from the
/// environment, so a container's `-e` changes them.
pub fn php_fpm_conf() -> String {
    // The image's ENV is not in the tar's hash: written here, a changed
    // default changes the file and so the image's tag.
    let env = image_env().map(|(k, v)| format!("{k}={v}")).join(" ");
    format!(
        r#"; fleet test image: generated by xtask::image, do not edit.
; image ENV defaults: {env}
[global]
daemonize = no
error_log = /proc/self/fd/2
log_level = notice
log_limit = 8192

[site]
listen = {CONTAINER_SOCKET}
listen.owner = ${{{LISTEN_OWNER_ENV}}}
listen.group = ${{{LISTEN_OWNER_ENV}}}
listen.mode = ${{{LISTEN_MODE_ENV}}}
listen.backlog = 511
user = root
group = root
pm = static
pm.max_children = ${{{CHILDREN_ENV}}}
pm.status_path = ${{{STATUS_PATH_ENV}}}
access.log = ${{{ACCESS_LOG_ENV}}}
access.format = "fpm-access %m %r%Q%q status=%s duration_ms=%{{mili}}d script=%f"
catch_workers_output = yes
decorate_workers_output = no
clear_env = no
"#
    )
}

/// Debian's shared `posix` extension of the host's PHP, if installed.
fn posix_extension() -> Option<PathBuf> {
    std::fs::read_dir("/usr/lib/php")
        .ok()?
        .flatten()
        .map(|e| e.path().join("posix.so"))
        .filter(|p| p.is_file())
        .max()
}

/// php.ini: [`PHP_INI`] plus the `posix` extension when the host has it.
fn php_ini() -> String {
    match posix_extension() {
        Some(p) => format!("{PHP_INI}extension = {}\n", p.display()),
        None => PHP_INI.to_string(),
    }
}

const PHP_INI: &str = "; fleet test image: generated by xtask::image, do not edit.
date.timezone = UTC
display_errors = Off
log_errors = On
output_buffering = 0
implicit_flush = Off
max_execution_time = 0
memory_limit = 256M
post_max_size = 256M
enable_post_data_reading = Off
expose_php = Off
";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loader_list_is_parsed() {
        let listing = "\tlinux-vdso.so.1 (0x00007ffd)\n\tlibm.so.6 => /lib/x86_64-linux-gnu/libm.so.6 (0x00007f83)\n\t/lib64/ld-linux-x86-64.so.2 (0x00007f8380a8a000)\n";
        assert_eq!(
            parse_loader_list(listing),
            vec![
                PathBuf::from("/lib/x86_64-linux-gnu/libm.so.6"),
                PathBuf::from("/lib64/ld-linux-x86-64.so.2")
            ]
        );
    }

    #[test]
    fn links_resolve_lexically() {
        for (link, target, want) in [
            ("/lib", "usr/lib", "/usr/lib"),
            ("/a/b/libx.so.1", "../c/libx.so.1.2", "/a/c/libx.so.1.2"),
            ("/lib64/ld.so", "/lib/x/ld.so", "/lib/x/ld.so"),
        ] {
            let got = resolve_link(Path::new(link), Path::new(target));
            assert_eq!(got, Path::new(want), "{link} -> {target}");
        }
    }

    #[test]
    fn content_tag_is_picked_from_repo_tags() {
        let tags = "fleet-php-fpm:latest\nfleet-php-fpm:m-0123456789abcdef\nfleet-php-fpm:5897a5f1101e4a99\n";
        assert_eq!(
            pick_content_tag(tags).as_deref(),
            Some("fleet-php-fpm:5897a5f1101e4a99")
        );
        assert_eq!(
            pick_content_tag("fleet-php-fpm:latest\nother:5897a5f1101e4a99"),
            None
        );
    }

    #[test]
    fn files_tar_adds_parents_and_is_deterministic() {
        let files = vec![
            (PathBuf::from("/lib/x/libc.so.6"), 0o755, b"libc".to_vec()),
            (PathBuf::from("bin/dash"), 0o755, b"dash".to_vec()),
        ];
        let tar_bytes = files_tar(&files).expect("tar");
        let mut archive = tar::Archive::new(tar_bytes.as_slice());
        let entries = archive.entries().expect("entries");
        // As strings: PathBuf's equality would hide a trailing or doubled slash.
        let paths: Vec<String> = entries
            .map(|e| {
                e.expect("entry")
                    .path()
                    .expect("path")
                    .display()
                    .to_string()
            })
            .collect();
        let want = ["bin", "bin/dash", "lib", "lib/x", "lib/x/libc.so.6"];
        assert_eq!(paths, want);
        assert_eq!(files_tar(&files).expect("tar again"), tar_bytes);
        assert_eq!(
            content_tag("fleet-bench-light", b""),
            "fleet-bench-light:e3b0c44298fc1c14"
        );
    }

    #[test]
    fn tag_is_content_hash() {
        assert_eq!(tag_for(b""), "fleet-php-fpm:e3b0c44298fc1c14");
    }

    #[test]
    fn fpm_conf_uses_env_for_socket_children_status_and_access_log() {
        let conf = php_fpm_conf();
        assert!(conf.contains("listen.group = ${FLEET_FPM_LISTEN_OWNER}"));
        assert!(conf.contains("listen.mode = ${FLEET_FPM_LISTEN_MODE}"));
        assert!(conf.contains("pm.max_children = ${FLEET_FPM_CHILDREN}"));
        assert!(conf.contains("pm.status_path = ${FLEET_FPM_STATUS_PATH}"));
        assert!(conf.contains("access.log = ${FLEET_FPM_ACCESS_LOG}"));
        assert!(conf.contains(
            "; image ENV defaults: FLEET_FPM_LISTEN_OWNER=root FLEET_FPM_LISTEN_MODE=0666 FLEET_FPM_CHILDREN=4 FLEET_FPM_STATUS_PATH=/status FLEET_FPM_ACCESS_LOG=/proc/self/fd/2\n"
        ));
    }
}
