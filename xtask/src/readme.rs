//! The README's runnable parts: fenced blocks that follow a marker line
//! `<!-- fleet:<name> -->`. The tests run these very blocks (the site setup,
//! the nginx files), so the README cannot drift from what is tested.
//!
//! Two kinds of marker:
//! * `<!-- fleet:site-setup -->`, `<!-- fleet:reaper-timer -->`, … : a block
//!   the tests extract by name ([`block`]);
//! * `<!-- fleet:file contrib/nginx/fleet-proxy-mode.conf -->`: a block that
//!   must be that file of the repository byte for byte ([`file_blocks`]; a
//!   unit test below checks every one, and that every `contrib/nginx` file
//!   is shown).

/// The README, as compiled into xtask (a README edit rebuilds the tests).
pub const README: &str = include_str!("../../README.md");

/// The site setup: one shell block, run by the package test as written
/// (`example.com` replaced by the test's site).
pub const SITE_SETUP: &str = "site-setup";
/// Enabling the reaper's timer.
pub const REAPER_TIMER: &str = "reaper-timer";

/// A marker or its block is missing or malformed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ReadmeError {
    #[error("README.md has no marker line `<!-- fleet:{0} -->`")]
    NoMarker(String),
    #[error("README.md: no fenced block after the marker `<!-- fleet:{0} -->`")]
    NoBlock(String),
    #[error("README.md: the fenced block after `<!-- fleet:{0} -->` is not closed")]
    Unclosed(String),
}

/// The text of the fenced block right after `line` (index of a marker):
/// only blank lines may come between them.
fn block_after(lines: &[&str], marker: usize, name: &str) -> Result<String, ReadmeError> {
    let open = lines[marker + 1..]
        .iter()
        .position(|l| !l.trim().is_empty())
        .map(|i| marker + 1 + i)
        .filter(|&i| lines[i].starts_with("```"))
        .ok_or_else(|| ReadmeError::NoBlock(name.to_string()))?;
    let close = lines[open + 1..]
        .iter()
        .position(|l| l.trim_end() == "```")
        .map(|i| open + 1 + i)
        .ok_or_else(|| ReadmeError::Unclosed(name.to_string()))?;
    Ok(lines[open + 1..close]
        .iter()
        .map(|l| format!("{l}\n"))
        .collect())
}

/// Every marked block as (marker name, text), in README order: the name
/// is `site-setup`, … or `file <path>`. Pure.
fn blocks(readme: &str) -> Result<Vec<(String, String)>, ReadmeError> {
    let lines: Vec<&str> = readme.lines().collect();
    let mut out = Vec::new();
    for (i, l) in lines.iter().enumerate() {
        let marker = l.trim().strip_prefix("<!-- fleet:");
        if let Some(name) = marker.and_then(|r| r.strip_suffix(" -->")) {
            out.push((name.to_string(), block_after(&lines, i, name)?));
        }
    }
    Ok(out)
}

/// The fenced block after `<!-- fleet:<name> -->` in `readme`. Pure.
pub fn block(readme: &str, name: &str) -> Result<String, ReadmeError> {
    blocks(readme)?
        .into_iter()
        .find(|(n, _)| n == name)
        .map(|(_, text)| text)
        .ok_or_else(|| ReadmeError::NoMarker(name.to_string()))
}

/// Every `<!-- fleet:file <path> -->` block as (path, text), in README
/// order. Pure.
pub fn file_blocks(readme: &str) -> Result<Vec<(String, String)>, ReadmeError> {
    let blocks = blocks(readme)?.into_iter();
    Ok(blocks
        .filter_map(|(name, text)| Some((name.strip_prefix("file ")?.to_string(), text)))
        .collect())
}

/// The README's copy of repository file `path` (e.g.
/// `contrib/nginx/fleet-direct-mode.conf`).
pub fn file(readme: &str, path: &str) -> Result<String, ReadmeError> {
    block(readme, &format!("file {path}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_are_found_by_marker() {
        let md = "# t\n<!-- fleet:a -->\n\n```sh\necho a\n  b\n```\ntext\n<!-- fleet:file x/y.conf -->\n```nginx\nserver {}\n```\n";
        assert_eq!(block(md, "a").expect("a"), "echo a\n  b\n");
        assert_eq!(
            file_blocks(md).expect("files"),
            vec![("x/y.conf".to_string(), "server {}\n".to_string())]
        );
        assert_eq!(file(md, "x/y.conf").expect("file"), "server {}\n");
        assert_eq!(block(md, "b"), Err(ReadmeError::NoMarker("b".into())));
        assert_eq!(
            block("<!-- fleet:a -->\ntext\n```\nx\n```\n", "a"),
            Err(ReadmeError::NoBlock("a".into()))
        );
        assert_eq!(
            block("<!-- fleet:a -->\n```\nx\n", "a"),
            Err(ReadmeError::Unclosed("a".into()))
        );
    }

    /// Every `contrib/nginx` file is in the README verbatim, and every
    /// `fleet:file` block of the README is its file verbatim.
    #[test]
    fn readme_shows_every_nginx_example_verbatim() {
        let root = crate::kit::repo_root();
        let shown = file_blocks(README).expect("README's file blocks");
        for (path, text) in &shown {
            let real = std::fs::read_to_string(root.join(path))
                .unwrap_or_else(|e| panic!("README shows {path}, which cannot be read: {e}"));
            assert_eq!(text, &real, "README's copy of {path} differs from the file");
        }
        for e in std::fs::read_dir(root.join("contrib/nginx")).expect("contrib/nginx") {
            let f = format!("contrib/nginx/{}", e.expect("entry").file_name().display());
            assert!(
                shown.iter().any(|(p, _)| *p == f),
                "README does not show {f} (add it after a `<!-- fleet:file {f} -->` line)"
            );
        }
        for name in [SITE_SETUP, REAPER_TIMER] {
            block(README, name).expect("a runnable README block");
        }
    }
}
