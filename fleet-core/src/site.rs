//! Site names and the paths and names derived from them.
//!
//! A [`Site`] can only be made by validation ([`Site::new`] / [`str::parse`]):
//! once you hold one, its name is a DNS-style host name that is safe to use as
//! a path component, a container name and a systemd instance name. Nothing in
//! fleet turns user input into a path or a container name any other way.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

/// Longest site name accepted (the DNS limit for a host name).
pub const MAX_NAME_LEN: usize = 253;
/// Longest label (the part between dots) accepted.
pub const MAX_LABEL_LEN: usize = 63;

/// Default root of per-site runtime directories.
pub const DEFAULT_RUN_DIR: &str = "/run/docker-apps";
/// Default directory of the waker's activity state files.
pub const DEFAULT_STATE_DIR: &str = "/run/fleet";
/// Default directory of the on-demand site list (the old script's list).
pub const DEFAULT_SITES_DIR: &str = "/var/lib/docker/volumes/docker_sites-enabled/on-demand";

/// Environment variable overriding [`DEFAULT_RUN_DIR`].
const ENV_RUN_DIR: &str = "FLEET_RUN_DIR";
/// Environment variable overriding [`DEFAULT_STATE_DIR`].
const ENV_STATE_DIR: &str = "FLEET_STATE_DIR";
/// Environment variable overriding [`DEFAULT_SITES_DIR`].
const ENV_SITES_DIR: &str = "FLEET_SITES_DIR";

/// File name of the waker's listening socket inside a site's runtime directory.
pub const WAKER_SOCKET: &str = "vhost-waker.sock";
/// File name of php-fpm's socket inside a site's runtime directory.
const FPM_SOCKET: &str = "php-fpm.sock";
/// Suffix appended to a site name to get its container name.
const CONTAINER_SUFFIX: &str = ".fpm";
/// Longest path a unix socket can be bound to or connected at: `sun_path`
/// is 108 bytes, one of them the terminating NUL.
const MAX_SOCKET_PATH: usize = 107;

/// The rule a rejected site name broke. Every message names the rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SiteError {
    #[error("site name is empty (rule: 1 to {MAX_NAME_LEN} characters)")]
    Empty,
    #[error(
        "site name {name:?} is {len} characters long (rule: at most {MAX_NAME_LEN} characters)"
    )]
    TooLong { name: String, len: usize },
    #[error(
        "site name {name:?} has {found:?} at byte {index} (rule: only ASCII letters, digits, '-' and '.')"
    )]
    BadCharacter {
        name: String,
        found: char,
        index: usize,
    },
    #[error("site name {name:?} has an empty label (rule: no leading, trailing or doubled '.')")]
    EmptyLabel { name: String },
    #[error(
        "site name {name:?} has label {label:?} of {len} characters (rule: labels are at most {MAX_LABEL_LEN} characters)"
    )]
    LabelTooLong {
        name: String,
        label: String,
        len: usize,
    },
    #[error(
        "site name {name:?} has label {label:?} that starts or ends with '-' (rule: labels start and end with a letter or digit)"
    )]
    LabelHyphen { name: String, label: String },
    #[error(
        "site {site}: socket path {path} is {len} bytes (rule: at most {MAX_SOCKET_PATH}, the size of a unix socket address; use a shorter site name or run directory)"
    )]
    SocketPathTooLong {
        site: String,
        path: PathBuf,
        len: usize,
    },
}

/// A validated site name, e.g. `example.com`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Site(String);

impl Site {
    /// Validates `name` as a DNS-style host name.
    pub fn new(name: &str) -> Result<Self, SiteError> {
        validate(name)?;
        Ok(Site(name.to_owned()))
    }

    /// The site name.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The Docker container that serves this site: `<site>.fpm`.
    pub fn container(&self) -> String {
        format!("{}{CONTAINER_SUFFIX}", self.0)
    }
}

impl fmt::Display for Site {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for Site {
    type Err = SiteError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Site::new(s)
    }
}

impl AsRef<str> for Site {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

fn validate(name: &str) -> Result<(), SiteError> {
    if name.is_empty() {
        return Err(SiteError::Empty);
    }
    // Characters first: a name with a '/' or NUL is reported as such even when
    // it is also too long, since that is the more telling rule.
    if let Some((index, found)) = name
        .char_indices()
        .find(|&(_, c)| !(c.is_ascii_alphanumeric() || c == '-' || c == '.'))
    {
        return Err(SiteError::BadCharacter {
            name: name.to_owned(),
            found,
            index,
        });
    }
    if name.len() > MAX_NAME_LEN {
        return Err(SiteError::TooLong {
            name: name.to_owned(),
            len: name.len(),
        });
    }
    for label in name.split('.') {
        if label.is_empty() {
            return Err(SiteError::EmptyLabel {
                name: name.to_owned(),
            });
        }
        if label.len() > MAX_LABEL_LEN {
            return Err(SiteError::LabelTooLong {
                name: name.to_owned(),
                label: label.to_owned(),
                len: label.len(),
            });
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(SiteError::LabelHyphen {
                name: name.to_owned(),
                label: label.to_owned(),
            });
        }
    }
    Ok(())
}

/// Where fleet's files live. Every root can be overridden (flags in the
/// binaries, or the `FLEET_*` environment variables via [`Layout::from_env`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// Root of per-site runtime directories (`/run/docker-apps`).
    pub run_dir: PathBuf,
    /// Directory of activity state files (`/run/fleet`).
    pub state_dir: PathBuf,
    /// Directory of on-demand `<site>.conf` files.
    pub sites_dir: PathBuf,
}

impl Default for Layout {
    fn default() -> Self {
        Layout {
            run_dir: PathBuf::from(DEFAULT_RUN_DIR),
            state_dir: PathBuf::from(DEFAULT_STATE_DIR),
            sites_dir: PathBuf::from(DEFAULT_SITES_DIR),
        }
    }
}

impl Layout {
    /// The defaults, overridden by `FLEET_RUN_DIR`, `FLEET_STATE_DIR` and
    /// `FLEET_SITES_DIR` when they are set and not empty.
    pub fn from_env() -> Self {
        Self::from_lookup(|k| std::env::var_os(k))
    }

    /// Like [`Layout::from_env`] with an explicit lookup (for tests).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<std::ffi::OsString>) -> Self {
        let pick = |key: &str, default: &str| {
            lookup(key)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from(default))
        };
        Layout {
            run_dir: pick(ENV_RUN_DIR, DEFAULT_RUN_DIR),
            state_dir: pick(ENV_STATE_DIR, DEFAULT_STATE_DIR),
            sites_dir: pick(ENV_SITES_DIR, DEFAULT_SITES_DIR),
        }
    }

    /// The site's runtime directory: `<run_dir>/<site>` (bind-mounted into the container).
    pub fn site_dir(&self, site: &Site) -> PathBuf {
        self.run_dir.join(site.as_str())
    }

    /// The waker's socket: `<run_dir>/<site>/vhost-waker.sock`.
    pub fn waker_socket(&self, site: &Site) -> PathBuf {
        self.site_dir(site).join(WAKER_SOCKET)
    }

    /// php-fpm's socket: `<run_dir>/<site>/php-fpm.sock`.
    pub fn fpm_socket(&self, site: &Site) -> PathBuf {
        self.site_dir(site).join(FPM_SOCKET)
    }

    /// Refuses a site whose socket paths under this run directory would not
    /// fit in a unix socket address, before anything binds or connects
    /// (systemd would fail late, nginx at its first request).
    pub fn check_socket_paths(&self, site: &Site) -> Result<(), SiteError> {
        for path in [self.waker_socket(site), self.fpm_socket(site)] {
            check_socket_path(site, &path)?;
        }
        Ok(())
    }

    /// The site's activity state file: `<state_dir>/<site>.state`. Deliberately
    /// outside the runtime directory, which the container can write.
    pub fn state_file(&self, site: &Site) -> PathBuf {
        self.state_dir.join(format!("{site}.state"))
    }

    /// The lock the waker and the reaper share ([`crate::drain`]):
    /// `<state_dir>/<site>.lock`.
    pub fn lock_file(&self, site: &Site) -> PathBuf {
        self.state_dir.join(format!("{site}.lock"))
    }

    /// What the reaper last read from php-fpm's status page
    /// ([`crate::reaper`]): `<state_dir>/<site>.fpm`.
    pub fn fpm_record(&self, site: &Site) -> PathBuf {
        self.state_dir.join(format!("{site}.fpm"))
    }

    /// The site's on-demand conf file: `<sites_dir>/<site>.conf`.
    pub fn conf_file(&self, site: &Site) -> PathBuf {
        self.sites_dir.join(format!("{site}.conf"))
    }
}

/// Refuses a socket path of `site` that does not fit in `sun_path`.
fn check_socket_path(site: &Site, path: &std::path::Path) -> Result<(), SiteError> {
    let len = path.as_os_str().len();
    if len > MAX_SOCKET_PATH {
        return Err(SiteError::SocketPathTooLong {
            site: site.to_string(),
            path: path.to_owned(),
            len,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_paths_must_fit_sun_path() {
        let layout = Layout::default();
        // /run/docker-apps/<site>/vhost-waker.sock: 34 bytes around the name.
        // A valid name of `n` bytes: labels of 60 letters joined by dots.
        let name = |n: usize| {
            let mut s = String::new();
            while s.len() < n {
                if s.len() % 61 == 60 {
                    s.push('.');
                } else {
                    s.push('a');
                }
            }
            s
        };
        let fits = Site::new(&name(MAX_SOCKET_PATH - 34)).expect("valid");
        assert_eq!(
            layout.waker_socket(&fits).as_os_str().len(),
            MAX_SOCKET_PATH
        );
        assert!(layout.check_socket_paths(&fits).is_ok());
        let long = Site::new(&name(MAX_SOCKET_PATH - 33)).expect("valid");
        let e = layout.check_socket_paths(&long).expect_err("too long");
        assert!(
            matches!(e, SiteError::SocketPathTooLong { len: 108, .. }),
            "{e:?}"
        );
        assert!(e.to_string().contains("at most 107"), "{e}");
    }
    use std::path::Path;

    fn rule_of(name: &str) -> SiteError {
        Site::new(name).expect_err(name)
    }

    #[test]
    fn accepts_host_names() {
        for ok in [
            "a",
            "example.com",
            "www.example.com",
            "xn--bcher-kva.example",
            "my-site1.example.org",
            "1.2.3",
            "A-B.C",
            &"a".repeat(63),
            &format!(
                "{}.{}.{}.{}",
                "a".repeat(63),
                "b".repeat(63),
                "c".repeat(63),
                "d".repeat(61)
            ),
        ] {
            let site = Site::new(ok).expect(ok);
            assert_eq!(site.as_str(), ok);
        }
    }

    #[test]
    fn rejects_empty() {
        assert_eq!(rule_of(""), SiteError::Empty);
        assert!(rule_of("").to_string().contains("rule"));
    }

    #[test]
    fn rejects_bad_characters() {
        for (bad, ch) in [
            ("../etc", '/'),
            ("a/b", '/'),
            ("a\0b", '\0'),
            ("a b", ' '),
            ("$HOME", '$'),
            ("a;rm", ';'),
            ("a'b", '\''),
            ("a\"b", '"'),
            ("a`b", '`'),
            ("exämple.com", 'ä'),
            ("а.com", 'а'), // Cyrillic a
            ("a_b", '_'),
            ("a\nb", '\n'),
            ("*.example", '*'),
        ] {
            match rule_of(bad) {
                SiteError::BadCharacter { found, .. } => assert_eq!(found, ch, "{bad:?}"),
                other => panic!("{bad:?}: {other:?}"),
            }
            assert!(
                rule_of(bad)
                    .to_string()
                    .contains("only ASCII letters, digits")
            );
        }
    }

    #[test]
    fn rejects_too_long() {
        let long = format!(
            "{}.{}.{}.{}",
            "a".repeat(63),
            "b".repeat(63),
            "c".repeat(63),
            "d".repeat(62)
        );
        assert_eq!(long.len(), 254);
        assert!(matches!(
            rule_of(&long),
            SiteError::TooLong { len: 254, .. }
        ));
        assert!(rule_of(&long).to_string().contains("at most 253"));
    }

    #[test]
    fn rejects_empty_labels() {
        for bad in ["..", ".", "a..b", ".a", "a."] {
            assert!(
                matches!(rule_of(bad), SiteError::EmptyLabel { .. }),
                "{bad:?}"
            );
            assert!(rule_of(bad).to_string().contains("empty label"));
        }
    }

    #[test]
    fn rejects_long_labels() {
        let bad = format!("{}.com", "a".repeat(64));
        assert!(matches!(
            rule_of(&bad),
            SiteError::LabelTooLong { len: 64, .. }
        ));
        assert!(rule_of(&bad).to_string().contains("at most 63"));
    }

    #[test]
    fn rejects_hyphen_edges() {
        for bad in ["-a", "a-", "a.-b", "a.b-", "-", "--"] {
            assert!(
                matches!(rule_of(bad), SiteError::LabelHyphen { .. }),
                "{bad:?}"
            );
            assert!(rule_of(bad).to_string().contains("start and end"));
        }
    }

    #[test]
    fn derives_names_and_paths() {
        let site = Site::new("example.com").expect("valid");
        let layout = Layout::default();
        assert_eq!(site.container(), "example.com.fpm");
        assert_eq!(
            layout.site_dir(&site),
            Path::new("/run/docker-apps/example.com")
        );
        assert_eq!(
            layout.waker_socket(&site),
            Path::new("/run/docker-apps/example.com/vhost-waker.sock")
        );
        assert_eq!(
            layout.fpm_socket(&site),
            Path::new("/run/docker-apps/example.com/php-fpm.sock")
        );
        assert_eq!(
            layout.state_file(&site),
            Path::new("/run/fleet/example.com.state")
        );
        assert_eq!(
            layout.conf_file(&site),
            Path::new("/var/lib/docker/volumes/docker_sites-enabled/on-demand/example.com.conf")
        );
    }

    #[test]
    fn layout_env_overrides() {
        let layout = Layout::from_lookup(|k| match k {
            ENV_RUN_DIR => Some("/tmp/run".into()),
            ENV_STATE_DIR => Some("".into()),
            ENV_SITES_DIR => Some("/tmp/sites".into()),
            _ => None,
        });
        assert_eq!(layout.run_dir, Path::new("/tmp/run"));
        assert_eq!(layout.state_dir, Path::new(DEFAULT_STATE_DIR));
        assert_eq!(layout.sites_dir, Path::new("/tmp/sites"));
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        fn label() -> impl Strategy<Value = String> {
            "[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?"
        }

        proptest! {
            /// Whatever the input, validation never panics, and whatever it
            /// accepts obeys every rule and is safe as a path component.
            #[test]
            fn accepted_names_obey_the_rules(name in any::<String>()) {
                if let Ok(site) = Site::new(&name) {
                    prop_assert!(!name.is_empty() && name.len() <= MAX_NAME_LEN);
                    prop_assert!(name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.'));
                    for l in name.split('.') {
                        prop_assert!(!l.is_empty() && l.len() <= MAX_LABEL_LEN);
                        prop_assert!(!l.starts_with('-') && !l.ends_with('-'));
                    }
                    let dir = Layout::default().site_dir(&site);
                    prop_assert_eq!(dir.parent(), Some(std::path::Path::new(DEFAULT_RUN_DIR)));
                    prop_assert_eq!(site.container(), format!("{name}.fpm"));
                }
            }

            /// Bytes that look like names (dots, hyphens, slashes, NUL) are
            /// classified without panicking and every error names its rule.
            #[test]
            fn near_misses_name_the_rule(name in "[a-z0-9./\\-\\x00 ]{0,300}") {
                if let Err(e) = Site::new(&name) {
                    prop_assert!(e.to_string().contains("rule"), "{}", e);
                }
            }

            /// Every well-formed host name is accepted.
            #[test]
            fn host_names_are_accepted(labels in proptest::collection::vec(label(), 1..4)) {
                let name = labels.join(".");
                prop_assume!(name.len() <= MAX_NAME_LEN);
                prop_assert!(Site::new(&name).is_ok(), "{}", name);
            }
        }
    }
}
