//! `cargo xtask ci`: every check CI runs, in order, stopping at the first failure.
//!
//! Each step prints a one-line header before it starts and its elapsed time after. The
//! checks build in debug only: the machine has two cores, and debug artifacts are shared
//! between clippy, the tests and the parity run. The one release build is the `bench`
//! step's (`cargo xtask bench --quick`), because a benchmark of debug binaries would
//! prove nothing about the ones users run; it keeps the benchmark from rotting, and CI
//! never judges its numbers, only that every scenario ran without errors.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::util::{cargo, display_command};
use crate::{Result, bench, parity, tidy};

/// One step of the CI run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    Fmt,
    Tidy,
    Clippy,
    BuildBinary,
    Test,
    DocTest,
    Doc,
    Bench,
    Parity,
}

/// The steps, in order.
pub(crate) const STEPS: &[Step] = &[
    Step::Fmt,
    Step::Tidy,
    Step::Clippy,
    Step::BuildBinary,
    Step::Test,
    Step::DocTest,
    Step::Doc,
    // Before `Parity`, which stays last so its `N passed, N failed` line closes the log.
    Step::Bench,
    Step::Parity,
];

/// The settings every test step runs with: CI mode, and insta never writes or accepts
/// snapshots, so a mismatch fails.
const TEST_ENV: &[(&str, &str)] = &[("CI", "true"), ("INSTA_UPDATE", "no")];

impl Step {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Step::Fmt => "fmt",
            Step::Tidy => "tidy",
            Step::Clippy => "clippy",
            Step::BuildBinary => "build-binary",
            Step::Test => "test",
            Step::DocTest => "doctest",
            Step::Doc => "doc",
            Step::Bench => "bench",
            Step::Parity => "parity",
        }
    }

    /// The cargo command of this step, or `None` for a step that runs in-process.
    /// `nextest` says whether `cargo nextest` is available.
    pub(crate) fn command(self, root: &Path, nextest: bool) -> Option<Command> {
        let mut command = cargo(root);
        match self {
            Step::Fmt => {
                command.args(["fmt", "--all", "--check"]);
            }
            Step::Clippy => {
                command.args([
                    "clippy",
                    "--workspace",
                    "--all-targets",
                    "--locked",
                    "--",
                    "-D",
                    "warnings",
                ]);
            }
            Step::BuildBinary => {
                // The end-to-end tests (`tests/tests/e2e.rs`) start the real binary and
                // run this same command to find it; built here, their run finds it
                // fresh instead of one test process building it while the rest wait.
                command.args([
                    "build",
                    "--locked",
                    "--package",
                    "control-plane",
                    "--bin",
                    "control-plane",
                ]);
            }
            Step::Test => {
                if nextest {
                    command.args(["nextest", "run", "--workspace", "--locked"]);
                } else {
                    command.args(["test", "--workspace", "--locked"]);
                }
                command.envs(TEST_ENV.iter().copied());
            }
            Step::DocTest => {
                // nextest does not run doc tests.
                command
                    .args(["test", "--workspace", "--doc", "--locked"])
                    .envs(TEST_ENV.iter().copied());
            }
            Step::Doc => {
                command
                    .args(["doc", "--workspace", "--no-deps", "--locked"])
                    .env("RUSTDOCFLAGS", "-D warnings");
            }
            Step::Tidy | Step::Bench | Step::Parity => return None,
        }
        Some(command)
    }

    /// What the header shows for this step.
    fn describe(self, root: &Path, nextest: bool) -> String {
        match self.command(root, nextest) {
            Some(command) => display_command(&command),
            None if self == Step::Bench => "cargo xtask bench --quick (in-process)".to_owned(),
            None => format!("cargo xtask {} (in-process)", self.name()),
        }
    }

    fn run(self, root: &Path, nextest: bool) -> Result<()> {
        match self {
            Step::Tidy => tidy::run_and_report(root),
            Step::Bench => bench::run(root, bench::Mode::Quick, bench::Store::Sqlite),
            Step::Parity => parity::run_and_report(root),
            _ => {
                let mut command = self.command(root, nextest).expect("external step");
                let status = command.status().map_err(|error| {
                    format!("cannot run `{}`: {error}", display_command(&command))
                })?;
                if status.success() {
                    Ok(())
                } else {
                    Err(format!("`{}` failed ({status})", display_command(&command)).into())
                }
            }
        }
    }
}

/// Whether `cargo nextest` is installed.
fn nextest_available(root: &Path) -> bool {
    cargo(root)
        .args(["nextest", "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

fn seconds(duration: Duration) -> String {
    format!("{:.1}s", duration.as_secs_f64())
}

/// `cargo xtask ci`.
pub(crate) fn run(root: &Path) -> Result<()> {
    let nextest = nextest_available(root);
    if !nextest {
        println!("note: cargo-nextest not found; the test step uses `cargo test`");
    }
    let started = Instant::now();
    for (index, step) in STEPS.iter().enumerate() {
        let number = index + 1;
        let total = STEPS.len();
        println!(
            "==> [{number}/{total}] {}: {}",
            step.name(),
            step.describe(root, nextest)
        );
        let step_started = Instant::now();
        let result = step.run(root, nextest);
        let elapsed = seconds(step_started.elapsed());
        match result {
            Ok(()) => println!("<== [{number}/{total}] {} ok in {elapsed}", step.name()),
            Err(error) => {
                return Err(format!(
                    "ci failed at step {number}/{total} ({}) after {elapsed}: {error}",
                    step.name()
                )
                .into());
            }
        }
    }
    println!(
        "ci: all {} steps passed in {}",
        STEPS.len(),
        seconds(started.elapsed())
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shown(step: Step, nextest: bool) -> String {
        step.command(Path::new("/repo"), nextest)
            .map(|command| display_command(&command))
            .unwrap_or_default()
    }

    #[test]
    fn steps_run_in_the_documented_order() {
        let names: Vec<_> = STEPS.iter().map(|step| step.name()).collect();
        assert_eq!(
            names,
            [
                "fmt",
                "tidy",
                "clippy",
                "build-binary",
                "test",
                "doctest",
                "doc",
                "bench",
                "parity"
            ]
        );
    }

    #[test]
    fn cargo_commands() {
        assert_eq!(shown(Step::Fmt, true), "cargo fmt --all --check");
        assert_eq!(
            shown(Step::Clippy, true),
            "cargo clippy --workspace --all-targets --locked -- -D warnings"
        );
        assert_eq!(
            shown(Step::BuildBinary, true),
            "cargo build --locked --package control-plane --bin control-plane"
        );
        assert_eq!(
            shown(Step::Test, true),
            "CI=true INSTA_UPDATE=no cargo nextest run --workspace --locked"
        );
        assert_eq!(
            shown(Step::Test, false),
            "CI=true INSTA_UPDATE=no cargo test --workspace --locked"
        );
        assert_eq!(
            shown(Step::DocTest, true),
            "CI=true INSTA_UPDATE=no cargo test --workspace --doc --locked"
        );
        assert_eq!(
            shown(Step::Doc, true),
            "RUSTDOCFLAGS='-D warnings' cargo doc --workspace --no-deps --locked"
        );
    }

    #[test]
    fn tidy_bench_and_parity_run_in_process() {
        assert!(Step::Tidy.command(Path::new("/repo"), true).is_none());
        assert!(Step::Bench.command(Path::new("/repo"), true).is_none());
        assert!(Step::Parity.command(Path::new("/repo"), true).is_none());
    }

    /// Only the bench step builds in release (in-process, so not shown here).
    #[test]
    fn no_release_builds() {
        for step in STEPS {
            for nextest in [true, false] {
                let shown = shown(*step, nextest);
                assert!(!shown.contains("--release"), "{shown}");
            }
        }
    }
}
