//! `cargo xtask snap accept | list`: pending insta snapshots without `cargo-insta`.
//!
//! When a snapshot assertion fails outside CI, insta writes the new value beside the
//! reviewed one as `NAME.snap.new`. Accepting means renaming it over `NAME.snap`; the
//! diff is then reviewed in git like any other change.

use std::io;
use std::path::{Path, PathBuf};

use crate::Result;
use crate::util::relative;

/// Pending snapshot files found in the repository.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Pending {
    /// `*.snap.new`: file snapshots waiting to be accepted.
    pub(crate) new_snapshots: Vec<PathBuf>,
    /// `*.pending-snap`: pending inline snapshots.
    pub(crate) pending_inline: Vec<PathBuf>,
}

impl Pending {
    pub(crate) fn is_empty(&self) -> bool {
        self.new_snapshots.is_empty() && self.pending_inline.is_empty()
    }
}

/// The `.snap` a `.snap.new` is accepted as, or `None` for any other file.
pub(crate) fn accepted_path(path: &Path) -> Option<PathBuf> {
    let name = path.file_name()?.to_str()?;
    let accepted = name.strip_suffix(".new")?;
    accepted
        .ends_with(".snap")
        .then(|| path.with_file_name(accepted))
}

fn is_pending_inline(path: &Path) -> bool {
    path.file_name()
        .and_then(|name| name.to_str())
        .is_some_and(|name| name.ends_with(".pending-snap"))
}

/// Whether a directory is skipped by the scan: VCS data and cargo target directories
/// (the root `target/`, and any directory cargo tagged with `CACHEDIR.TAG`).
fn is_skipped_dir(root: &Path, dir: &Path) -> bool {
    dir == root.join("target") || dir.join("CACHEDIR.TAG").is_file() || {
        let name = dir.file_name().and_then(|name| name.to_str());
        matches!(name, Some(".git"))
    }
}

/// Every pending snapshot file under `root`, sorted.
pub(crate) fn find_pending(root: &Path) -> io::Result<Pending> {
    let mut pending = Pending::default();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            let path = entry.path();
            let file_type = entry.file_type()?;
            if file_type.is_dir() {
                if !is_skipped_dir(root, &path) {
                    stack.push(path);
                }
            } else if accepted_path(&path).is_some() {
                pending.new_snapshots.push(path);
            } else if is_pending_inline(&path) {
                pending.pending_inline.push(path);
            }
        }
    }
    pending.new_snapshots.sort();
    pending.pending_inline.sort();
    Ok(pending)
}

/// Accepts every pending snapshot under `root`; returns the accepted `.snap` paths.
pub(crate) fn accept_all(root: &Path) -> Result<Vec<PathBuf>> {
    let pending = find_pending(root)?;
    let mut accepted = Vec::new();
    for new in &pending.new_snapshots {
        let target = accepted_path(new).expect("found by accepted_path");
        std::fs::rename(new, &target)
            .map_err(|error| format!("cannot rename {}: {error}", relative(root, new)))?;
        println!("accepted {}", relative(root, &target));
        accepted.push(target);
    }
    // `.pending-snap` files hold pending *inline* snapshots (`assert_snapshot!(x, @"...")`),
    // which only cargo-insta can write back into the source. This project does not use
    // inline snapshots (every snapshot is a reviewed file), so such a file is a stray
    // left-over: delete it, and say so.
    for stray in &pending.pending_inline {
        std::fs::remove_file(stray)
            .map_err(|error| format!("cannot delete {}: {error}", relative(root, stray)))?;
        eprintln!(
            "warning: deleted {} (pending inline snapshot; this project uses file snapshots only)",
            relative(root, stray)
        );
    }
    Ok(accepted)
}

/// `cargo xtask snap accept`.
pub(crate) fn accept(root: &Path) -> Result<()> {
    let accepted = accept_all(root)?;
    println!("{} snapshot(s) accepted", accepted.len());
    Ok(())
}

/// `cargo xtask snap list`.
pub(crate) fn list(root: &Path) -> Result<()> {
    let pending = find_pending(root)?;
    if pending.is_empty() {
        println!("no pending snapshots");
    }
    for path in &pending.new_snapshots {
        println!("{}", relative(root, path));
    }
    for path in &pending.pending_inline {
        println!(
            "{} (inline; `snap accept` deletes it)",
            relative(root, path)
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::util::test_support::ScratchDir;

    #[test]
    fn accepted_path_strips_new_from_snap_new_only() {
        assert_eq!(
            accepted_path(Path::new("a/snapshots/x__01_start.snap.new")),
            Some(PathBuf::from("a/snapshots/x__01_start.snap"))
        );
        assert_eq!(accepted_path(Path::new("a/x.snap")), None);
        assert_eq!(accepted_path(Path::new("a/x.new")), None);
        assert_eq!(accepted_path(Path::new("a/.lib.rs.pending-snap")), None);
    }

    #[test]
    fn finds_pending_files_but_not_in_target_or_git() {
        let dir = ScratchDir::new("snap-find");
        let root = dir.path();
        let a = dir.write("crates/s/tests/snapshots/p__case.snap.new", "new");
        dir.write("crates/s/tests/snapshots/p__case.snap", "old");
        let inline = dir.write("crates/s/src/.lib.rs.pending-snap", "{}");
        dir.write("target/debug/x.snap.new", "ignored");
        dir.write(".git/x.snap.new", "ignored");
        dir.write(
            "other-target/CACHEDIR.TAG",
            "Signature: 8a477f597d28d172789f06886806bc55",
        );
        dir.write("other-target/y.snap.new", "ignored");

        let pending = find_pending(root).expect("scan");
        assert_eq!(pending.new_snapshots, vec![a]);
        assert_eq!(pending.pending_inline, vec![inline]);
    }

    #[test]
    fn accept_renames_over_the_old_snapshot_and_deletes_inline_ones() {
        let dir = ScratchDir::new("snap-accept");
        let root = dir.path();
        let new = dir.write("tests/snapshots/p__case.snap.new", "new value");
        let old = dir.write("tests/snapshots/p__case.snap", "old value");
        let fresh = dir.write("tests/snapshots/p__other.snap.new", "first value");
        let inline = dir.write("tests/.parity.rs.pending-snap", "{}");

        let accepted = accept_all(root).expect("accept");

        assert_eq!(accepted, vec![old.clone(), fresh.with_extension("")]);
        assert_eq!(std::fs::read_to_string(&old).unwrap(), "new value");
        assert_eq!(
            std::fs::read_to_string(root.join("tests/snapshots/p__other.snap")).unwrap(),
            "first value"
        );
        assert!(!new.exists());
        assert!(!inline.exists());
        assert!(find_pending(root).unwrap().is_empty());
    }
}
