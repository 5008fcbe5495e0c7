//! `cargo xtask parity`: runs every completion-parity snapshot case and prints one line
//! per case, then a closing `N passed, N failed` line.
//!
//! Convention: parity cases live in integration-test targets named `parity`
//! (`<crate>/tests/parity.rs`), today in the crates `scheduler` and `tests`; each case is
//! one `#[test]`/`#[tokio::test]` function whose name starts with `case_`. Each target runs
//! through `cargo test` with `CI=true INSTA_UPDATE=no`, so a snapshot mismatch fails (and
//! writes no `.snap.new`), and its stable libtest output (`test NAME ... ok`) is parsed.

use std::path::Path;
use std::process::{Command, Stdio};

use crate::Result;
use crate::util::{cargo, display_command, workspace_metadata};

/// The name of the test target holding a crate's parity cases.
const PARITY_TARGET: &str = "parity";
/// The crates expected to have parity cases; a missing one gets a note, not an error.
const EXPECTED_CRATES: &[&str] = &["scheduler", "tests"];
/// The prefix of a case's function name.
const CASE_PREFIX: &str = "case_";

/// The result of one test, as libtest reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    Passed,
    Failed,
    Ignored,
}

/// One `test NAME ... RESULT` line of libtest's output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TestResult {
    /// The test's path inside its binary, e.g. `case_retry_then_success` or
    /// `timeouts::case_deadline`.
    pub(crate) name: String,
    pub(crate) outcome: Outcome,
}

impl TestResult {
    /// Whether this test is a parity case (its function name starts with `case_`).
    pub(crate) fn is_case(&self) -> bool {
        self.name
            .rsplit("::")
            .next()
            .is_some_and(|function| function.starts_with(CASE_PREFIX))
    }
}

/// Parses one line of libtest's default (`pretty`) output, e.g. `test a::case_x ... ok`,
/// `test case_y ... FAILED`, `test case_z ... ignored, not ready` or
/// `test case_w - should panic ... ok`. Any other line gives `None`.
pub(crate) fn parse_test_line(line: &str) -> Option<TestResult> {
    let rest = line.trim_end().strip_prefix("test ")?;
    let (name, result) = rest.rsplit_once(" ... ")?;
    let outcome = match result {
        "ok" => Outcome::Passed,
        "FAILED" => Outcome::Failed,
        "ignored" => Outcome::Ignored,
        other if other.starts_with("ignored, ") => Outcome::Ignored,
        _ => return None,
    };
    let name = name.strip_suffix(" - should panic").unwrap_or(name).trim();
    if name.is_empty() || name.contains(' ') {
        return None;
    }
    Some(TestResult {
        name: name.to_owned(),
        outcome,
    })
}

/// The parity cases in a test binary's stdout, in output order.
pub(crate) fn parse_cases(stdout: &str) -> Vec<TestResult> {
    stdout
        .lines()
        .filter_map(parse_test_line)
        .filter(TestResult::is_case)
        .collect()
}

/// libtest's `failures:` section (captured output and panic messages), if any, without
/// its `test result:` line: the closing line of a parity run is ours.
pub(crate) fn failure_details(stdout: &str) -> Option<String> {
    let start = stdout.find("\nfailures:\n")?;
    let details: Vec<&str> = stdout[start + 1..]
        .lines()
        .filter(|line| !line.starts_with("test result:"))
        .collect();
    Some(details.join("\n").trim_end().to_owned())
}

/// Counts over all crates.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Summary {
    pub(crate) passed: usize,
    pub(crate) failed: usize,
    pub(crate) ignored: usize,
}

impl Summary {
    /// The closing line, alone on its line: `N passed, N failed`.
    pub(crate) fn closing_line(&self) -> String {
        format!("{} passed, {} failed", self.passed, self.failed)
    }

    /// Passing needs at least one case run and none failed.
    pub(crate) fn check(&self) -> Result<()> {
        if self.failed > 0 {
            Err(format!("parity: {} case(s) failed", self.failed).into())
        } else if self.passed == 0 {
            Err(
                "parity: no parity case ran (expected `case_*` tests in `tests/parity.rs` \
                 of the scheduler and tests crates)"
                    .into(),
            )
        } else {
            Ok(())
        }
    }
}

/// The `cargo test` invocation for one crate's parity target.
fn parity_command(root: &Path, krate: &str) -> Command {
    let mut command = cargo(root);
    command
        .args([
            "test",
            "--locked",
            "--package",
            krate,
            "--test",
            PARITY_TARGET,
        ])
        .args(["--", "--test-threads=2", "--color", "never"])
        .env("CI", "true")
        .env("INSTA_UPDATE", "no");
    command
}

/// The workspace crates that have a test target named `parity`, sorted.
fn crates_with_parity_target(root: &Path) -> Result<Vec<String>> {
    let metadata = workspace_metadata(root)?;
    let mut crates: Vec<String> = metadata
        .workspace_packages()
        .into_iter()
        .filter(|package| {
            package
                .targets
                .iter()
                .any(|target| target.is_test() && target.name == PARITY_TARGET)
        })
        .map(|package| package.name.to_string())
        .collect();
    crates.sort();
    Ok(crates)
}

/// Runs every parity case, printing one line per case and the closing line.
pub(crate) fn run(root: &Path) -> Result<Summary> {
    run_with(root, Stdio::inherit)
}

/// [`run`], with cargo's own stderr (build progress, errors) sent to `cargo_stderr()`.
fn run_with(root: &Path, cargo_stderr: fn() -> Stdio) -> Result<Summary> {
    let crates = crates_with_parity_target(root)?;
    for expected in EXPECTED_CRATES {
        if !crates.iter().any(|krate| krate == expected) {
            println!("note: crate `{expected}` has no `{PARITY_TARGET}` test target yet; skipped");
        }
    }

    let mut summary = Summary::default();
    for krate in &crates {
        let mut command = parity_command(root, krate);
        eprintln!("running {}", display_command(&command));
        let output = command
            .stdout(Stdio::piped())
            .stderr(cargo_stderr())
            .output()
            .map_err(|error| format!("cannot run cargo: {error}"))?;
        let stdout = String::from_utf8_lossy(&output.stdout);

        let cases = parse_cases(&stdout);
        let mut failed_here = 0;
        for case in &cases {
            let label = match case.outcome {
                Outcome::Passed => {
                    summary.passed += 1;
                    "PASS"
                }
                Outcome::Failed => {
                    failed_here += 1;
                    "FAIL"
                }
                Outcome::Ignored => {
                    summary.ignored += 1;
                    "SKIP"
                }
            };
            println!("{label} {krate}::{}", case.name);
        }
        if !output.status.success() && failed_here == 0 {
            // A build error, a failing test that is not a case, or a crashed binary: the
            // crate's run failed even though no case said so.
            failed_here += 1;
            println!(
                "FAIL {krate} (cargo test {}; no failing case reported, see the output above)",
                output.status
            );
        }
        if failed_here > 0
            && let Some(details) = failure_details(&stdout)
        {
            println!("{details}");
        }
        summary.failed += failed_here;
    }

    if summary.ignored > 0 {
        println!("({} case(s) ignored)", summary.ignored);
    }
    println!("{}", summary.closing_line());
    Ok(summary)
}

/// `cargo xtask parity` (and the `parity` step of `cargo xtask ci`).
pub(crate) fn run_and_report(root: &Path) -> Result<()> {
    run(root)?.check()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(name: &str, outcome: Outcome) -> Option<TestResult> {
        Some(TestResult {
            name: name.to_owned(),
            outcome,
        })
    }

    #[test]
    fn parses_libtest_result_lines() {
        assert_eq!(
            parse_test_line("test case_sync_invoke_success ... ok"),
            result("case_sync_invoke_success", Outcome::Passed)
        );
        assert_eq!(
            parse_test_line("test retries::case_retry_then_success ... FAILED"),
            result("retries::case_retry_then_success", Outcome::Failed)
        );
        assert_eq!(
            parse_test_line("test case_timeout ... ignored"),
            result("case_timeout", Outcome::Ignored)
        );
        assert_eq!(
            parse_test_line("test case_timeout ... ignored, waits for the timeout issue"),
            result("case_timeout", Outcome::Ignored)
        );
        assert_eq!(
            parse_test_line("test case_double_complete - should panic ... ok"),
            result("case_double_complete", Outcome::Passed)
        );
        assert_eq!(
            parse_test_line("test case_crlf ... ok\r"),
            result("case_crlf", Outcome::Passed)
        );
    }

    #[test]
    fn ignores_every_other_line() {
        for line in [
            "",
            "running 3 tests",
            "test result: ok. 3 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out",
            "test result: FAILED. 1 passed; 1 failed; 0 ignored; 0 measured",
            "test case_slow has been running for over 60 seconds",
            "failures:",
            "    case_retry_then_success",
            "---- case_retry_then_success stdout ----",
            "thread 'case_x' panicked at tests/parity.rs:10:5:",
            "test case_x ... bench:       1,234 ns/iter (+/- 5)",
        ] {
            assert_eq!(parse_test_line(line), None, "{line:?}");
        }
    }

    #[test]
    fn only_case_functions_are_cases() {
        let stdout = "\nrunning 4 tests\n\
            test helpers::renders_a_dump ... ok\n\
            test case_a ... ok\n\
            test nested::case_b ... FAILED\n\
            test not_a_case_c ... ok\n\
            \n\
            failures:\n\
            \n\
            ---- nested::case_b stdout ----\n\
            snapshot assertion for '02_running' failed\n\
            \n\
            failures:\n    nested::case_b\n\
            \n\
            test result: FAILED. 3 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out\n";
        assert_eq!(
            parse_cases(stdout),
            vec![
                TestResult {
                    name: "case_a".to_owned(),
                    outcome: Outcome::Passed
                },
                TestResult {
                    name: "nested::case_b".to_owned(),
                    outcome: Outcome::Failed
                },
            ]
        );
        let details = failure_details(stdout).expect("has failures");
        assert!(details.starts_with("failures:"));
        assert!(details.contains("snapshot assertion for '02_running' failed"));
        assert!(!details.contains("test result:"));
        assert_eq!(failure_details("test case_a ... ok\n"), None);
    }

    #[test]
    fn closing_line_and_verdict() {
        let ok = Summary {
            passed: 5,
            failed: 0,
            ignored: 1,
        };
        assert_eq!(ok.closing_line(), "5 passed, 0 failed");
        assert!(ok.check().is_ok());

        let failed = Summary {
            passed: 4,
            failed: 1,
            ignored: 0,
        };
        assert_eq!(failed.closing_line(), "4 passed, 1 failed");
        assert!(failed.check().is_err());

        let empty = Summary::default();
        assert_eq!(empty.closing_line(), "0 passed, 0 failed");
        assert!(empty.check().is_err(), "zero cases must fail");
    }

    /// End to end against real libtest output: a scratch workspace with two crates whose
    /// `parity` targets pass, fail, ignore, and fail outside a case.
    #[test]
    fn runs_parity_targets_of_a_scratch_workspace() {
        let dir = crate::util::test_support::ScratchDir::new("parity-e2e");
        dir.write(
            "Cargo.toml",
            "[workspace]\nresolver = \"3\"\nmembers = [\"scheduler\", \"tests\", \"other\"]\n",
        );
        for krate in ["scheduler", "tests", "other"] {
            dir.write(
                &format!("{krate}/Cargo.toml"),
                &format!(
                    "[package]\nname = \"{krate}\"\nversion = \"0.0.0\"\nedition = \"2024\"\n"
                ),
            );
            dir.write(&format!("{krate}/src/lib.rs"), "");
        }
        dir.write(
            "tests/tests/parity.rs",
            "#[test] fn case_passes() {}\n\
             #[test] fn case_fails() { assert_eq!(1 + 1, 3, \"snapshot mismatch\"); }\n\
             #[test] #[ignore = \"not yet\"] fn case_later() {}\n\
             #[test] fn helper_is_not_a_case() {}\n\
             mod nested { #[test] fn case_in_module() {} }\n",
        );
        dir.write(
            "scheduler/tests/parity.rs",
            "#[test] fn case_passes() {}\n\
             #[test] fn helper_fails() { panic!(\"boom\") }\n",
        );
        // Not a parity target: never run.
        dir.write(
            "other/tests/other.rs",
            "#[test] fn case_elsewhere() { panic!() }\n",
        );
        let status = cargo(dir.path())
            .args(["generate-lockfile", "--offline", "--quiet"])
            .status()
            .expect("cargo generate-lockfile");
        assert!(status.success());

        let summary = run_with(dir.path(), Stdio::null).expect("parity runs");

        assert_eq!(
            summary,
            Summary {
                // tests: case_passes, nested::case_in_module; scheduler: case_passes.
                passed: 3,
                // tests: case_fails; scheduler: the crate run (helper_fails).
                failed: 2,
                ignored: 1,
            }
        );
        assert!(summary.check().is_err());
    }

    #[test]
    fn runs_with_ci_settings_so_mismatches_fail() {
        let command = parity_command(Path::new("/repo"), "scheduler");
        let shown = display_command(&command);
        assert!(shown.contains("CI=true"), "{shown}");
        assert!(shown.contains("INSTA_UPDATE=no"), "{shown}");
        assert!(
            shown.ends_with(
                "test --locked --package scheduler --test parity -- --test-threads=2 --color never"
            ),
            "{shown}"
        );
    }
}
