//! `cargo xtask bench [--quick]`: the benchmark of the issue "Performance", on loopback.
//!
//! It builds the release binaries (`control-plane`, and this package's `bench-echo`,
//! `loadgen` and `spawn-floor`), starts the echo endpoint and a control plane with default settings,
//! registers a LOCAL and a POOL function (the POOL one dispatching to the echo), and
//! runs every scenario at each client concurrency, repeated, taking medians:
//!
//! - `direct echo`: loadgen straight to bench-echo, the floor every ratio is taken
//!   against, measured in the same run so a noisy machine shifts both sides alike;
//! - `bare proxy`: loadgen through a second bench-echo that forwards every request to
//!   the first (`--forward-to`): what the two HTTP exchanges of a POOL invocation cost
//!   a proxy doing nothing else, so the report shows which share of the control
//!   plane's cost is its own;
//! - `sync LOCAL`, `sync POOL`: `:invoke`, each answer checked for `"status":"success"`
//!   (a sync invoke answers 200 whatever the execution's status);
//! - `async POOL`: enqueue N, then wait until all are terminal; its `req/s` is
//!   completions per second over the whole run, its latencies are those of the records
//!   (`finishedAt - createdAt`, millisecond timestamps).
//!
//! CPU per request comes from `/proc/PID/stat` (utime + stime, clock ticks) over exactly
//! loadgen's measured window, for the control plane and for the echo endpoint; peak and
//! final RSS from `/proc/PID/status` after each run. A last scenario starts a fresh
//! control plane and measures its RSS growth per retained finished record under
//! sustained LOCAL load (the execution TTL, 5 minutes, retains them all). The rows of
//! functions that run themselves (a warm `DEPLOYMENT` replica against `POOL`, a one-shot
//! `STDIO` `cat` against spawn + exit, scale from zero) come last, on control planes of
//! their own (`bench/deployments.rs`).
//!
//! With two cores or more, loadgen runs on one (`taskset -c`) and both servers on
//! another, so the load generator never takes CPU from what it measures. Reports go to
//! `target/bench/bench.json` and `target/bench/bench.md`, the children's output to
//! `target/bench/*.log`. A scenario with errors or without throughput fails the command
//! (after the reports are written); the numbers themselves are never judged. Every
//! child process is killed when this returns, by error or panic too.

use std::fmt::Write as _;
use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::Result;
use crate::util::{cargo, display_command, relative, workspace_metadata};

mod deployments;
mod http;
mod instructions;
mod machine;
mod processes;
mod report;
mod scenarios;
mod startup;
mod stores;

use deployments::{DEPLOYMENT_FUNCTION, DeploymentsReport, Replicas, function_processes};
use http::*;
pub(crate) use instructions::run as run_instructions;
use machine::*;
use processes::*;
use report::*;
use scenarios::*;
pub(crate) use startup::run as run_startup;
pub(crate) use stores::{Store, compare as run_stores};

/// How much to measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// A smoke run of seconds: proves the harness works (CI runs it).
    Quick,
    /// The real measurement.
    Full,
}

impl Mode {
    /// `--quick` or not.
    pub(crate) fn of(quick: bool) -> Self {
        if quick { Mode::Quick } else { Mode::Full }
    }
}

/// The knobs a mode sets.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
struct Plan {
    concurrencies: Vec<usize>,
    repetitions: usize,
    warmup_secs: f64,
    duration_secs: f64,
    /// Invocations enqueued per async run.
    async_count: u64,
    /// Execution records read per async run for the completion latency.
    async_sample: usize,
    memory_warmup_secs: f64,
    memory_secs: f64,
    memory_concurrency: usize,
}

impl Plan {
    fn of(mode: Mode) -> Self {
        match mode {
            Mode::Quick => Self {
                concurrencies: vec![1, 16],
                repetitions: 1,
                warmup_secs: 0.2,
                duration_secs: 1.0,
                async_count: 2_000,
                async_sample: 100,
                memory_warmup_secs: 0.2,
                memory_secs: 1.0,
                memory_concurrency: 16,
            },
            Mode::Full => Self {
                concurrencies: vec![1, 16, 64],
                repetitions: 3,
                warmup_secs: 1.0,
                duration_secs: 3.0,
                async_count: 20_000,
                async_sample: 500,
                memory_warmup_secs: 1.0,
                memory_secs: 10.0,
                memory_concurrency: 64,
            },
        }
    }
}

/// The function names the bench registers.
const LOCAL_FUNCTION: &str = "bench-local";
const POOL_FUNCTION: &str = "bench-pool";
/// What a client sends to the control plane, and what the control plane sends the echo
/// (so the direct run carries the same bytes as a dispatch).
const INVOKE_BODY: &str = r#"{"input":{"message":"hello"}}"#;
const DISPATCH_BODY: &str = r#"{"input":{"message":"hello"},"metadata":{}}"#;
/// The output a LOCAL invocation of `INVOKE_BODY` keeps in its record.
const LOCAL_OUTPUT: &str = r#"{"message":"hello"}"#;
/// A finished sync invocation answers 200 whatever its status: this marks success.
const SUCCESS: &str = r#""status":"success""#;
/// How long a server may take to come up.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(20);

/// `cargo xtask bench [--quick]`.
pub(crate) fn run(root: &Path, mode: Mode, store: Store) -> Result<()> {
    let started = Instant::now();
    let bench = Bench::prepare(root, Plan::of(mode), store)?;
    println!(
        "bench: {} CPU(s) allowed; {}",
        bench.cores,
        bench.pinning.describe()
    );
    let (startup, runs, at_end) = {
        let echo = bench.start_echo()?;
        let proxy = bench.start_proxy(echo.port)?;
        let control_plane = bench.start_control_plane("control-plane.log")?;
        println!(
            "bench: control plane healthy {:.1} ms after spawn, idle RSS {:.1} MiB",
            control_plane.startup.time_to_healthy_ms,
            mib(control_plane.startup.idle_rss_kb)
        );
        bench.register(&control_plane, Some(echo.port))?;
        let mut servers = Servers {
            control_plane,
            echo,
            proxy,
        };
        let runs = bench.scenarios(&mut servers)?;
        let at_end = memory_of(servers.control_plane.guard.pid())?;
        (servers.control_plane.startup.clone(), runs, at_end)
    };
    // Every server of the scenarios is gone: the memory run has the core to itself.
    let memory = bench.memory()?;
    let deployments = bench.deployments(mode)?;

    let rows = rows(&runs);
    let report = Report {
        mode: match mode {
            Mode::Quick => "quick",
            Mode::Full => "full",
        },
        commit: git_commit(root),
        cores: bench.cores,
        pinning: bench.pinning.describe(),
        plan: bench.plan.clone(),
        startup,
        at_end,
        rows,
        memory,
        deployments,
        runs,
        elapsed_secs: started.elapsed().as_secs_f64(),
    };
    let text = markdown(&report) + &deployments_markdown(&report.deployments);
    write_reports(root, &bench.out, "bench", &report, &text)?;
    println!("bench: done in {:.1}s", report.elapsed_secs);
    let mut problems = problems(&report);
    problems.extend(deployments::problems(&report.deployments));
    if problems.is_empty() {
        Ok(())
    } else {
        Err(format!("bench: {}", problems.join("; ")).into())
    }
}

/// Writes `<name>.json` and `<name>.md` into `out` and prints the Markdown.
fn write_reports(
    root: &Path,
    out: &Path,
    name: &str,
    report: &impl Serialize,
    markdown: &str,
) -> Result<()> {
    let json_path = out.join(format!("{name}.json"));
    let md_path = out.join(format!("{name}.md"));
    std::fs::write(&json_path, serde_json::to_string_pretty(report)? + "\n")?;
    std::fs::write(&md_path, markdown)?;
    println!("\n{markdown}");
    println!(
        "bench: wrote {} and {}",
        relative(root, &json_path),
        relative(root, &md_path)
    );
    Ok(())
}

/// Builds the four binaries; where they are, and the (created) report directory.
fn build_binaries(root: &Path) -> Result<(Binaries, PathBuf)> {
    build(root)?;
    let target_dir = workspace_metadata(root)?
        .target_directory
        .into_std_path_buf();
    let release = target_dir.join("release");
    let bins = Binaries {
        control_plane: release.join("control-plane"),
        echo: release.join("bench-echo"),
        loadgen: release.join("loadgen"),
        spawn_floor: release.join("spawn-floor"),
    };
    let out = target_dir.join("bench");
    std::fs::create_dir_all(&out)
        .map_err(|error| format!("cannot create {}: {error}", out.display()))?;
    Ok((bins, out))
}

/// `cargo build --release` of the four binaries.
fn build(root: &Path) -> Result<()> {
    let mut command = cargo(root);
    command.args([
        "build",
        "--release",
        "--locked",
        "--package",
        "control-plane",
        "--package",
        "xtask",
        "--bin",
        "control-plane",
        "--bin",
        "bench-echo",
        "--bin",
        "loadgen",
        "--bin",
        "spawn-floor",
    ]);
    println!("bench: {}", display_command(&command));
    let status = command
        .status()
        .map_err(|error| format!("cannot run `{}`: {error}", display_command(&command)))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("`{}` failed ({status})", display_command(&command)).into())
    }
}

#[derive(Debug)]
struct Binaries {
    control_plane: PathBuf,
    echo: PathBuf,
    loadgen: PathBuf,
    spawn_floor: PathBuf,
}

/// Everything a scenario needs.
#[derive(Debug)]
struct Bench {
    plan: Plan,
    bins: Binaries,
    /// Where reports and logs go.
    out: PathBuf,
    /// The CPUs this process may use.
    cores: usize,
    pinning: Pinning,
    http: Http,
    /// The store of the control planes it starts.
    store: Store,
}

impl Bench {
    /// Builds the binaries and chooses the pinning: where every mode starts.
    fn prepare(root: &Path, plan: Plan, store: Store) -> Result<Self> {
        let (bins, out) = build_binaries(root)?;
        let cores = allowed_cpus()?;
        Ok(Self {
            plan,
            bins,
            out,
            cores: cores.len(),
            pinning: Pinning::choose(&cores, taskset_available()),
            http: Http::new()?,
            store,
        })
    }
}

impl Bench {
    fn start_echo(&self) -> Result<Echo> {
        self.start_bench_echo("bench-echo", &[])
    }

    /// The bare proxy: bench-echo forwarding to the echo on `echo_port`.
    fn start_proxy(&self, echo_port: u16) -> Result<Echo> {
        self.start_bench_echo(
            "bench-proxy",
            &["--forward-to".into(), echo_port.to_string()],
        )
    }

    /// bench-echo with `args`, on the servers' core; `name` names it and its log.
    fn start_bench_echo(&self, name: &'static str, args: &[String]) -> Result<Echo> {
        let log = self.out.join(format!("{name}.log"));
        let mut command = pinned_command(&self.bins.echo, self.pinning.servers);
        // bench-echo binds `PORT` when it has no port argument (as a replica); here it
        // must take a free port whatever this shell exports.
        command.args(args).env_remove("PORT");
        let mut guard = Guard::spawn(name, command, &log)?;
        let port = wait_for(
            &format!("{name}'s port"),
            Instant::now() + STARTUP_TIMEOUT,
            || {
                guard.still_running()?;
                let text = std::fs::read_to_string(&log)?;
                Ok(text
                    .lines()
                    .next()
                    .filter(|_| text.contains('\n'))
                    .and_then(|line| line.trim().parse::<u16>().ok()))
            },
        )?;
        Ok(Echo { guard, port })
    }

    /// A control plane with default settings (but the bench's store) on free ports, its
    /// JSON log in `log_name`.
    fn start_control_plane(&self, log_name: &str) -> Result<ControlPlane> {
        self.start_control_plane_with(log_name, self.store)
    }

    /// The same, with `store` (in a fresh data directory).
    fn start_control_plane_with(&self, log_name: &str, store: Store) -> Result<ControlPlane> {
        let args = store.args(&self.out, log_name)?;
        self.start_control_plane_under(log_name, &[], &args)
    }

    /// The same, run by `under` (a program and its arguments, e.g. valgrind) when given,
    /// with `args` (the store's, and any other) added.
    fn start_control_plane_under(
        &self,
        log_name: &str,
        under: &[String],
        args: &[String],
    ) -> Result<ControlPlane> {
        let log = self.out.join(log_name);
        let mut command = match under.split_first() {
            None => pinned_command(&self.bins.control_plane, self.pinning.servers),
            Some((program, args)) => {
                let mut command = pinned_command(Path::new(program), self.pinning.servers);
                command.args(args).arg(&self.bins.control_plane);
                command
            }
        };
        command.args([
            "--api-addr",
            "127.0.0.1:0",
            "--management-addr",
            "127.0.0.1:0",
            "--log-format",
            "json",
        ]);
        command.args(args);
        // Default settings means none inherited from this shell either.
        command.env_remove("RUST_LOG");
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("CONTROL_PLANE_") {
                command.env_remove(key);
            }
        }
        let spawned = Instant::now();
        let mut guard = Guard::spawn("control-plane", command, &log)?;
        let deadline = spawned + STARTUP_TIMEOUT;
        let (api, management) = wait_for("the control plane's addresses", deadline, || {
            guard.still_running()?;
            let text = std::fs::read_to_string(&log)?;
            Ok(text.lines().find_map(parse_listening))
        })?;
        wait_for("the control plane's health", deadline, || {
            guard.still_running()?;
            Ok(self
                .http
                .call(Method::GET, management, "/actuator/health", None)
                .ok()
                .filter(|(status, _)| *status == StatusCode::OK))
        })?;
        let time_to_healthy_ms = spawned.elapsed().as_secs_f64() * 1_000.0;
        let idle_rss_kb = memory_of(guard.pid())?.rss_kb;
        Ok(ControlPlane {
            guard,
            api,
            management,
            startup: Startup {
                time_to_healthy_ms,
                idle_rss_kb,
            },
        })
    }

    /// Registers `bench-local` and, given the echo's port, `bench-pool`.
    fn register(&self, control_plane: &ControlPlane, echo_port: Option<u16>) -> Result<()> {
        let concurrency = self.function_concurrency();
        let queue_size = self.plan.async_count.max(1_000);
        let mut specs = vec![serde_json::json!({
            "name": LOCAL_FUNCTION,
            "image": "bench",
            "executionMode": "LOCAL",
            "concurrency": concurrency,
            "queueSize": queue_size,
        })];
        if let Some(echo_port) = echo_port {
            specs.push(serde_json::json!({
                "name": POOL_FUNCTION,
                "image": "bench-echo",
                "executionMode": "POOL",
                "endpointUrl": format!("http://127.0.0.1:{echo_port}/invoke"),
                "concurrency": concurrency,
                "queueSize": queue_size,
            }));
        }
        for spec in specs {
            let (status, body) = self.http.call(
                Method::POST,
                control_plane.api,
                "/v1/functions",
                Some(&spec.to_string()),
            )?;
            if status != StatusCode::CREATED {
                return Err(format!("registering {spec} answered {status}: {body}").into());
            }
        }
        Ok(())
    }

    /// At least 64 (the async scenario's function concurrency), and never fewer slots
    /// than clients, so sync runs measure dispatch rather than queueing.
    fn function_concurrency(&self) -> usize {
        self.plan
            .concurrencies
            .iter()
            .copied()
            .max()
            .unwrap_or(1)
            .max(64)
    }

    fn loadgen(&self, args: &[String]) -> Result<Value> {
        let mut command = pinned_command(&self.bins.loadgen, self.pinning.loadgen);
        command.args(args);
        json_report(&mut command, "loadgen")
    }

    fn closed_args(&self, url: &str, body: &str, expect: &str, concurrency: usize) -> Vec<String> {
        vec![
            "closed".into(),
            "--url".into(),
            url.into(),
            "--body".into(),
            body.into(),
            "--concurrency".into(),
            concurrency.to_string(),
            "--warmup-secs".into(),
            self.plan.warmup_secs.to_string(),
            "--duration-secs".into(),
            self.plan.duration_secs.to_string(),
            "--expect".into(),
            expect.into(),
        ]
    }

    /// Every scenario at every concurrency, `repetitions` times, interleaved so that a
    /// slow phase of the machine touches every scenario rather than one.
    fn scenarios(&self, servers: &mut Servers) -> Result<Vec<RunResult>> {
        let mut runs = Vec::new();
        for repetition in 1..=self.plan.repetitions {
            for &concurrency in &self.plan.concurrencies {
                for scenario in Scenario::ALL {
                    let run = self
                        .run_one(scenario, concurrency, repetition, servers)
                        .map_err(|error| servers.exited().unwrap_or(error))?;
                    println!(
                        "bench: [{repetition}/{}] {:<11} c={concurrency:<3} {:>9.0} req/s  p50 {:>8.1} us  p99 {:>8.1} us  errors {}",
                        self.plan.repetitions,
                        scenario.name(),
                        run.req_per_sec,
                        run.p50_us,
                        run.p99_us,
                        run.errors
                    );
                    runs.push(run);
                }
            }
        }
        Ok(runs)
    }

    fn run_one(
        &self,
        scenario: Scenario,
        concurrency: usize,
        repetition: usize,
        servers: &Servers,
    ) -> Result<RunResult> {
        let Servers {
            control_plane,
            echo,
            proxy,
        } = servers;
        let api = control_plane.api;
        let mut args = match scenario {
            Scenario::DirectEcho | Scenario::BareProxy => {
                let port = if scenario == Scenario::DirectEcho {
                    echo.port
                } else {
                    proxy.port
                };
                self.closed_args(
                    &format!("http://127.0.0.1:{port}/invoke"),
                    DISPATCH_BODY,
                    "hello",
                    concurrency,
                )
            }
            Scenario::SyncLocal | Scenario::SyncPool => {
                let function = if scenario == Scenario::SyncLocal {
                    LOCAL_FUNCTION
                } else {
                    POOL_FUNCTION
                };
                self.closed_args(
                    &format!("http://{api}/v1/functions/{function}:invoke"),
                    INVOKE_BODY,
                    SUCCESS,
                    concurrency,
                )
            }
            Scenario::AsyncPool => vec![
                "async".into(),
                "--api".into(),
                format!("http://{api}"),
                "--management".into(),
                format!("http://{}", control_plane.management),
                "--function".into(),
                POOL_FUNCTION.into(),
                "--body".into(),
                INVOKE_BODY.into(),
                "--count".into(),
                self.plan.async_count.to_string(),
                "--concurrency".into(),
                concurrency.to_string(),
                "--sample".into(),
                self.plan.async_sample.to_string(),
            ],
        };
        // In the bare proxy's run the proxy stands where the control plane stands.
        let pids = Pids {
            control_plane: if scenario == Scenario::BareProxy {
                proxy.guard.pid()
            } else {
                control_plane.guard.pid()
            },
            echo: echo.guard.pid(),
        };
        for pid in [pids.control_plane, pids.echo] {
            args.push("--watch-pid".into());
            args.push(pid.to_string());
        }
        let report = self.loadgen(&args)?;
        let memory = memory_of(control_plane.guard.pid())?;
        RunResult::from_loadgen(scenario, concurrency, repetition, &report, pids, memory)
    }

    /// RSS growth per retained record, on a control plane of its own so nothing else
    /// it retained blurs the count.
    fn memory(&self) -> Result<MemoryResult> {
        let control_plane = self.start_control_plane("control-plane-memory.log")?;
        self.register(&control_plane, None)?;
        let url = format!(
            "http://{}/v1/functions/{LOCAL_FUNCTION}:invoke",
            control_plane.api
        );
        let pid = control_plane.guard.pid();
        let load = |secs: f64| -> Result<Value> {
            let mut args =
                self.closed_args(&url, INVOKE_BODY, SUCCESS, self.plan.memory_concurrency);
            // No warm-up inside the run: every request of it is counted.
            set_arg(&mut args, "--warmup-secs", "0");
            set_arg(&mut args, "--duration-secs", &secs.to_string());
            self.loadgen(&args)
        };
        // The first requests grow buffers, pools and maps once; that is not per record.
        let warmup = load(self.plan.memory_warmup_secs)?;
        let before = memory_of(pid)?;
        let measured = load(self.plan.memory_secs)?;
        let after = memory_of(pid)?;
        let records = number(&measured, "requests")? as u64 + number(&measured, "errors")? as u64;
        let errors = number(&warmup, "errors")? as u64 + number(&measured, "errors")? as u64;
        let growth = after.rss_kb.saturating_sub(before.rss_kb) * 1024;
        let result = MemoryResult {
            concurrency: self.plan.memory_concurrency,
            secs: self.plan.memory_secs,
            records,
            errors,
            rss_before_kb: before.rss_kb,
            rss_after_kb: after.rss_kb,
            peak_rss_kb: after.peak_rss_kb,
            bytes_per_record: if records == 0 {
                0.0
            } else {
                growth as f64 / records as f64
            },
            output_bytes: LOCAL_OUTPUT.len(),
        };
        println!(
            "bench: memory: {} records retained, RSS {:.1} -> {:.1} MiB, {:.0} bytes per record",
            result.records,
            mib(result.rss_before_kb),
            mib(result.rss_after_kb),
            result.bytes_per_record
        );
        Ok(result)
    }
}

fn set_arg(args: &mut [String], flag: &str, value: &str) {
    if let Some(position) = args.iter().position(|arg| arg == flag) {
        args[position + 1] = value.to_owned();
    }
}

fn number(report: &Value, field: &str) -> Result<f64> {
    report
        .get(field)
        .and_then(Value::as_f64)
        .ok_or_else(|| format!("loadgen's report has no number `{field}`: {report}").into())
}

#[cfg(test)]
mod tests;
