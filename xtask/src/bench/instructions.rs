//! `cargo xtask bench --instructions`: the control plane's instructions per sync
//! invocation, counted by valgrind's callgrind.
//!
//! CPU time on a shared machine moves by tens of per cent from run to run; an
//! instruction count of the same binary under the same load moves by well under one.
//! That makes this the measure to compare two builds with (an optimisation, a new
//! dependency), where the timed benchmark can only show ratios of one run.
//!
//! It starts bench-echo and a control plane with default settings under `valgrind
//! --tool=callgrind --instr-atstart=no` (pinned as the timed benchmark pins it, so with
//! one worker thread), registers the same functions and a `DEPLOYMENT` of bench-echo
//! (one replica, which the control plane starts and valgrind does not follow: only the
//! control plane is counted, as the echo is not for POOL), and for sync LOCAL, sync POOL
//! and sync DEPLOYMENT at concurrency 16: a warm-up run, then instrumentation on and counters zeroed
//! (`callgrind_control`), a measured run, a dump. Instructions per invocation are the
//! dump's total over the measured run's invocations. Kernel time is not counted: this
//! is the control plane's own code, the allocator and libc.

use super::*;

/// Clients, warm-up and measured seconds (under callgrind the control plane runs some
/// 50 times slower, so a few thousand invocations).
const CONCURRENCY: usize = 16;
const WARMUP_SECS: f64 = 2.0;
const MEASURED_SECS: f64 = 5.0;

/// One scenario's count.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
struct Counted {
    scenario: &'static str,
    concurrency: usize,
    invocations: u64,
    instructions: u64,
    instructions_per_invocation: f64,
}

/// What `--instructions` writes.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct InstructionsReport {
    commit: String,
    pinning: String,
    counted: Vec<Counted>,
}

/// `cargo xtask bench --instructions`.
pub(crate) fn run(root: &Path) -> Result<()> {
    for tool in ["valgrind", "callgrind_control"] {
        let found = Command::new(tool)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success());
        if !found {
            return Err(format!("`{tool}` is not installed (Debian: apt install valgrind)").into());
        }
    }
    // Only registration reads the plan here (function concurrency and queue size).
    let bench = Bench::prepare(root, Plan::of(Mode::Quick), Store::Memory)?;
    let out = &bench.out;

    let dumps = out.join("callgrind.out");
    let echo = bench.start_echo()?;
    // Dropped after the control plane: makes sure its replica went with it.
    let mut replicas = Replicas::default();
    let valgrind = vec![
        "valgrind".to_owned(),
        "--tool=callgrind".to_owned(),
        "--instr-atstart=no".to_owned(),
        format!("--callgrind-out-file={}", dumps.display()),
    ];
    let mut control_plane = bench.start_control_plane_under(
        "control-plane-callgrind.log",
        &valgrind,
        &bench
            .store
            .args(&bench.out, "control-plane-callgrind.log")?,
    )?;
    bench.register(&control_plane, Some(echo.port))?;
    bench.register_warm_deployment(&control_plane)?;
    replicas.add(function_processes(
        control_plane.guard.pid(),
        DEPLOYMENT_FUNCTION,
    ));
    let pid = control_plane.guard.pid().to_string();
    let callgrind = |action: &str| -> Result<()> {
        let output = Command::new("callgrind_control")
            .arg(action)
            .arg(&pid)
            .output()?;
        if output.status.success() {
            Ok(())
        } else {
            Err(format!(
                "`callgrind_control {action} {pid}` failed ({}): {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            )
            .into())
        }
    };

    let mut counted = Vec::new();
    for (part, (scenario, function)) in [
        (Scenario::SyncLocal.name(), LOCAL_FUNCTION),
        (Scenario::SyncPool.name(), POOL_FUNCTION),
        ("sync DEPLOYMENT", DEPLOYMENT_FUNCTION),
    ]
    .into_iter()
    .enumerate()
    {
        let url = format!(
            "http://{}/v1/functions/{function}:invoke",
            control_plane.api
        );
        let load = |secs: f64| -> Result<Value> {
            let mut args = bench.closed_args(&url, INVOKE_BODY, SUCCESS, CONCURRENCY);
            set_arg(&mut args, "--warmup-secs", "0");
            set_arg(&mut args, "--duration-secs", &secs.to_string());
            bench.loadgen(&args)
        };
        load(WARMUP_SECS)?;
        callgrind("--instr=on")?;
        callgrind("--zero")?;
        let measured = load(MEASURED_SECS)?;
        callgrind("--dump")?;
        callgrind("--instr=off")?;
        if number(&measured, "errors")? > 0.0 {
            return Err(format!("{scenario}: invocations failed: {measured}").into());
        }
        // callgrind numbers its dumps 1, 2, ... after the output file's name.
        let dump = PathBuf::from(format!("{}.{}", dumps.display(), part + 1));
        let instructions = dump_total(&dump)?;
        let invocations = number(&measured, "requests")? as u64;
        if invocations == 0 {
            return Err(format!("{scenario}: no invocation finished").into());
        }
        let result = Counted {
            scenario,
            concurrency: CONCURRENCY,
            invocations,
            instructions,
            instructions_per_invocation: instructions as f64 / invocations as f64,
        };
        println!(
            "bench: {:<11} c={CONCURRENCY}: {} instructions over {} invocations: {:.0} per invocation",
            scenario, result.instructions, result.invocations, result.instructions_per_invocation
        );
        counted.push(result);
    }
    // Stopped, not killed: it stops its replica itself (under callgrind, slowly).
    control_plane.guard.terminate(Duration::from_secs(60));
    drop(control_plane);
    drop(replicas);
    drop(echo);

    let report = InstructionsReport {
        commit: git_commit(root),
        pinning: bench.pinning.describe(),
        counted,
    };
    write_reports(
        root,
        out,
        "instructions",
        &report,
        &instructions_markdown(&report),
    )
}

/// The `totals:` (or, failing that, `summary:`) line of a callgrind dump.
fn dump_total(path: &Path) -> Result<u64> {
    let text = std::fs::read_to_string(path)
        .map_err(|error| format!("cannot read {}: {error}", path.display()))?;
    parse_total(&text).ok_or_else(|| format!("no instruction total in {}", path.display()).into())
}

fn parse_total(dump: &str) -> Option<u64> {
    let line = |key: &str| {
        dump.lines()
            .find_map(|line| line.strip_prefix(key))
            .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
    };
    line("totals:").or_else(|| line("summary:"))
}

fn instructions_markdown(report: &InstructionsReport) -> String {
    let mut text = format!(
        "Commit `{}`; {}. Instructions of the control plane (user space: its code, the \
         allocator, libc) counted by callgrind over a measured run, per invocation.\n\n\
         | scenario | conc | invocations | instructions per invocation |\n|---|--:|--:|--:|\n",
        report.commit, report.pinning
    );
    for counted in &report.counted {
        let _ = writeln!(
            text,
            "| {} | {} | {} | {:.0} |",
            counted.scenario,
            counted.concurrency,
            counted.invocations,
            counted.instructions_per_invocation
        );
    }
    text
}

#[cfg(test)]
mod tests {
    use super::parse_total;

    #[test]
    fn the_total_comes_from_the_totals_line_else_the_summary() {
        let dump = "version: 1\nevents: Ir\nsummary: 120\nfn=main\n1 5\ntotals: 126218178\n";
        assert_eq!(parse_total(dump), Some(126_218_178));
        assert_eq!(parse_total("events: Ir\nsummary: 77\n"), Some(77));
        assert_eq!(parse_total("events: Ir\n"), None);
    }
}
