//! `cargo xtask tidy`: the repository rules, checked from `cargo metadata` and the file
//! tree, every problem reported at once. The same rules run as `#[test]`s
//! (`cargo test -p xtask`), so breaking one fails the test suite too.

use std::fmt;
use std::path::Path;

use cargo_metadata::{Metadata, Package};

use crate::util::{relative, workspace_metadata};
use crate::{Result, graph, snap};

/// One broken repository rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Problem {
    /// Which rule: `deps`, `doc-header`, `snapshots` or `publish`.
    pub(crate) rule: &'static str,
    pub(crate) message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}] {}", self.rule, self.message)
    }
}

fn problem(rule: &'static str, message: impl Into<String>) -> Problem {
    Problem {
        rule,
        message: message.into(),
    }
}

/// Runs every rule over the repository at `root`.
pub(crate) fn check(root: &Path) -> Result<Vec<Problem>> {
    let metadata = workspace_metadata(root)?;
    let mut problems = Vec::new();

    problems.extend(
        graph::check_graph(&graph::members_from_metadata(&metadata))
            .into_iter()
            .map(|violation| problem("deps", violation.to_string())),
    );
    problems.extend(check_doc_headers(root, &metadata)?);
    problems.extend(check_publish(&metadata));
    problems.extend(check_no_pending_snapshots(root)?);
    Ok(problems)
}

/// `cargo xtask tidy` (and the `tidy` step of `cargo xtask ci`).
pub(crate) fn run_and_report(root: &Path) -> Result<()> {
    let problems = check(root)?;
    if problems.is_empty() {
        println!("tidy: ok");
        return Ok(());
    }
    for problem in &problems {
        println!("{problem}");
    }
    Err(format!("tidy: {} problem(s) found", problems.len()).into())
}

/// The crate roots that must start with a `//!` line: the library target of a crate that
/// has one, else every binary target.
fn crate_roots(package: &Package) -> Vec<&cargo_metadata::Target> {
    let libs: Vec<_> = package
        .targets
        .iter()
        .filter(|target| target.is_lib() || target.is_rlib() || target.is_proc_macro())
        .collect();
    if libs.is_empty() {
        package
            .targets
            .iter()
            .filter(|target| target.is_bin())
            .collect()
    } else {
        libs
    }
}

/// Whether the first non-empty line of a crate root is a `//!` doc comment.
pub(crate) fn starts_with_doc_comment(source: &str) -> bool {
    source
        .trim_start_matches('\u{feff}')
        .lines()
        .map(str::trim)
        .find(|line| !line.is_empty())
        .is_some_and(|line| line.starts_with("//!"))
}

fn check_doc_headers(root: &Path, metadata: &Metadata) -> Result<Vec<Problem>> {
    let mut problems = Vec::new();
    for package in metadata.workspace_packages() {
        for target in crate_roots(package) {
            let path = target.src_path.as_std_path();
            let source = std::fs::read_to_string(path)
                .map_err(|error| format!("cannot read {}: {error}", relative(root, path)))?;
            if !starts_with_doc_comment(&source) {
                problems.push(problem(
                    "doc-header",
                    format!(
                        "{} (crate `{}`) must start with a `//!` doc comment saying what the \
                         crate owns",
                        relative(root, path),
                        package.name
                    ),
                ));
            }
        }
    }
    Ok(problems)
}

fn check_publish(metadata: &Metadata) -> Vec<Problem> {
    metadata
        .workspace_packages()
        .into_iter()
        .filter(|package| package.publish.as_deref() != Some(&[]))
        .map(|package| {
            problem(
                "publish",
                format!(
                    "crate `{}` must not be publishable: add `publish.workspace = true` \
                     (the workspace sets `publish = false`)",
                    package.name
                ),
            )
        })
        .collect()
}

fn check_no_pending_snapshots(root: &Path) -> Result<Vec<Problem>> {
    let pending = snap::find_pending(root)?;
    Ok(pending
        .new_snapshots
        .iter()
        .chain(&pending.pending_inline)
        .map(|path| {
            problem(
                "snapshots",
                format!(
                    "pending snapshot {}: review it, then `cargo xtask snap accept` or delete it",
                    relative(root, path)
                ),
            )
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::util::repo_root;

    #[test]
    fn doc_comment_must_be_the_first_non_empty_line() {
        assert!(starts_with_doc_comment("//! The crate.\n"));
        assert!(starts_with_doc_comment(
            "\n\n   //! The crate.\nfn main() {}\n"
        ));
        assert!(!starts_with_doc_comment("fn main() {}\n"));
        assert!(!starts_with_doc_comment("// plain comment\n//! doc\n"));
        assert!(!starts_with_doc_comment(
            "#![forbid(unsafe_code)]\n//! doc\n"
        ));
        assert!(!starts_with_doc_comment(""));
    }

    #[test]
    fn pending_snapshots_are_problems() {
        let dir = crate::util::test_support::ScratchDir::new("tidy-snap");
        dir.write("crates/q/tests/snapshots/x.snap.new", "");
        let problems = check_no_pending_snapshots(dir.path()).expect("scan");
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].rule, "snapshots");
        assert!(problems[0].message.contains("x.snap.new"));
    }

    /// The repository rules as a test: `cargo test -p xtask` fails when tidy would.
    #[test]
    fn tidy_passes_on_this_repository() {
        let problems = check(&repo_root()).expect("tidy runs");
        assert!(
            problems.is_empty(),
            "`cargo xtask tidy` found {} problem(s):\n{}",
            problems.len(),
            problems
                .iter()
                .map(|p| format!("  {p}\n"))
                .collect::<String>()
        );
    }
}
