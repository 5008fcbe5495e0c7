//! `cargo xtask bench [--quick]`: the benchmark of the issue "Performance", on loopback.
//!
//! It builds the release binaries (`control-plane`, and this package's `bench-echo` and
//! `loadgen`), starts the echo endpoint and a control plane with default settings,
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
//! sustained LOCAL load (the execution TTL, 5 minutes, retains them all).
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

mod instructions;
mod startup;
mod stores;
pub(crate) use instructions::run as run_instructions;
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
        runs,
        elapsed_secs: started.elapsed().as_secs_f64(),
    };
    write_reports(root, &bench.out, "bench", &report, &markdown(&report))?;
    println!("bench: done in {:.1}s", report.elapsed_secs);
    let problems = problems(&report);
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

/// Builds the three binaries; where they are, and the (created) report directory.
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
    };
    let out = target_dir.join("bench");
    std::fs::create_dir_all(&out)
        .map_err(|error| format!("cannot create {}: {error}", out.display()))?;
    Ok((bins, out))
}

/// `cargo build --release` of the three binaries.
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

// ---------------------------------------------------------------------------------------
// Child processes

/// A child process killed (and reaped) when this is dropped, however the bench ends.
#[derive(Debug)]
struct Guard {
    name: &'static str,
    child: Child,
    /// Where its stdout and stderr go.
    log: PathBuf,
}

impl Guard {
    fn spawn(name: &'static str, mut command: Command, log: &Path) -> Result<Self> {
        let file = File::create(log)
            .map_err(|error| format!("cannot create {}: {error}", log.display()))?;
        command
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file);
        let child = command.spawn().map_err(|error| {
            format!(
                "cannot start {name} (`{}`): {error}",
                display_command(&command)
            )
        })?;
        Ok(Self {
            name,
            child,
            log: log.to_path_buf(),
        })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// An error if the process has already exited (killed by someone, or crashed).
    fn still_running(&mut self) -> Result<()> {
        match self.child.try_wait()? {
            None => Ok(()),
            Some(status) => Err(format!(
                "{} exited ({status}); see {}",
                self.name,
                self.log.display()
            )
            .into()),
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `program`, on `core` when pinned.
fn pinned_command(program: &Path, core: Option<u32>) -> Command {
    match core {
        Some(core) => {
            // taskset execs the program: the child's pid is the program's.
            let mut command = Command::new("taskset");
            command.arg("-c").arg(core.to_string()).arg(program);
            command
        }
        None => Command::new(program),
    }
}

/// Waits, briefly sleeping between looks, until `ready` gives a value or `deadline`.
fn wait_for<T>(
    what: &str,
    deadline: Instant,
    mut ready: impl FnMut() -> Result<Option<T>>,
) -> Result<T> {
    loop {
        if let Some(value) = ready()? {
            return Ok(value);
        }
        if Instant::now() >= deadline {
            return Err(format!("timed out waiting for {what}").into());
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// A bench-echo process: the echo endpoint, or the bare proxy.
#[derive(Debug)]
struct Echo {
    guard: Guard,
    port: u16,
}

/// The processes the scenarios run against.
#[derive(Debug)]
struct Servers {
    control_plane: ControlPlane,
    echo: Echo,
    /// bench-echo forwarding to `echo`.
    proxy: Echo,
}

impl Servers {
    /// Why a run failed, if one of the servers has died: that explains it better than
    /// the load generator's view of it.
    fn exited(&mut self) -> Option<crate::Error> {
        [
            self.control_plane.guard.still_running(),
            self.echo.guard.still_running(),
            self.proxy.guard.still_running(),
        ]
        .into_iter()
        .find_map(Result::err)
    }
}

#[derive(Debug)]
struct ControlPlane {
    guard: Guard,
    api: SocketAddr,
    management: SocketAddr,
    startup: Startup,
}

/// How the control plane came up.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
struct Startup {
    /// From spawn to the first 200 of `GET /actuator/health`.
    time_to_healthy_ms: f64,
    /// VmRSS right then.
    idle_rss_kb: u64,
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
        command.args(args);
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
        let output = command
            .stderr(Stdio::piped())
            .stdout(Stdio::piped())
            .output()
            .map_err(|error| format!("cannot run loadgen: {error}"))?;
        if !output.status.success() {
            return Err(format!(
                "`{}` failed ({}): {}",
                display_command(&command),
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            )
            .into());
        }
        Ok(serde_json::from_slice(&output.stdout)?)
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

// ---------------------------------------------------------------------------------------
// Scenarios and their results

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
enum Scenario {
    #[serde(rename = "direct echo")]
    DirectEcho,
    #[serde(rename = "bare proxy")]
    BareProxy,
    #[serde(rename = "sync LOCAL")]
    SyncLocal,
    #[serde(rename = "sync POOL")]
    SyncPool,
    #[serde(rename = "async POOL")]
    AsyncPool,
}

impl Scenario {
    const ALL: [Scenario; 5] = [
        Scenario::DirectEcho,
        Scenario::BareProxy,
        Scenario::SyncLocal,
        Scenario::SyncPool,
        Scenario::AsyncPool,
    ];

    fn name(self) -> &'static str {
        match self {
            Scenario::DirectEcho => "direct echo",
            Scenario::BareProxy => "bare proxy",
            Scenario::SyncLocal => "sync LOCAL",
            Scenario::SyncPool => "sync POOL",
            Scenario::AsyncPool => "async POOL",
        }
    }
}

/// One loadgen run.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
struct RunResult {
    scenario: Scenario,
    concurrency: usize,
    repetition: usize,
    /// Answered requests in the window; for async, executions enqueued.
    requests: u64,
    errors: u64,
    /// For async: completions per second from the first enqueue to the last terminal.
    req_per_sec: f64,
    /// For async: of the completion latency.
    p50_us: f64,
    p99_us: f64,
    enqueue_per_sec: Option<f64>,
    control_plane_cpu_secs: f64,
    echo_cpu_secs: f64,
    /// loadgen's own CPU time: close to `window_secs`, loadgen limited the run.
    loadgen_cpu_secs: f64,
    /// The measured window (for async: first enqueue to last terminal).
    window_secs: f64,
    peak_rss_kb: u64,
    rss_kb: u64,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct LoadgenLatency {
    p50: f64,
    p99: f64,
}

/// The processes whose CPU time a run reports.
#[derive(Debug, Clone, Copy)]
struct Pids {
    /// The control plane, or the bare proxy in its run.
    control_plane: u32,
    echo: u32,
}

#[derive(Debug, Deserialize)]
struct LoadgenCpu {
    pid: u32,
    seconds: f64,
}

impl RunResult {
    fn from_loadgen(
        scenario: Scenario,
        concurrency: usize,
        repetition: usize,
        report: &Value,
        pids: Pids,
        memory: Memory,
    ) -> Result<Self> {
        let cpu: Vec<LoadgenCpu> = serde_json::from_value(report["cpu"].clone())?;
        let cpu_of = |pid: u32| {
            cpu.iter()
                .find(|cpu| cpu.pid == pid)
                .map(|cpu| cpu.seconds)
                .ok_or_else(|| format!("loadgen reported no CPU time of pid {pid}"))
        };
        let asynchronous = scenario == Scenario::AsyncPool;
        let (requests, req_per_sec, latency, enqueue_per_sec, window_secs) = if asynchronous {
            (
                number(report, "enqueued")?,
                number(report, "completionsPerSec")?,
                &report["completionLatencyUs"],
                Some(number(report, "enqueuePerSec")?),
                number(report, "totalSecs")?,
            )
        } else {
            (
                number(report, "requests")?,
                number(report, "reqPerSec")?,
                &report["latencyUs"],
                None,
                number(report, "windowSecs")?,
            )
        };
        let latency: LoadgenLatency = serde_json::from_value(latency.clone())?;
        Ok(Self {
            scenario,
            concurrency,
            repetition,
            requests: requests as u64,
            errors: number(report, "errors")? as u64,
            req_per_sec,
            p50_us: latency.p50,
            p99_us: latency.p99,
            enqueue_per_sec,
            control_plane_cpu_secs: cpu_of(pids.control_plane)?,
            echo_cpu_secs: cpu_of(pids.echo)?,
            loadgen_cpu_secs: number(report, "selfCpuSecs")?,
            window_secs,
            peak_rss_kb: memory.peak_rss_kb,
            rss_kb: memory.rss_kb,
        })
    }

    /// The share of one core `seconds` of CPU time are over the window, in percent.
    fn busy_percent(&self, seconds: f64) -> f64 {
        if self.window_secs > 0.0 {
            seconds * 100.0 / self.window_secs
        } else {
            0.0
        }
    }

    fn cpu_us_per_request(&self, seconds: f64) -> f64 {
        if self.requests == 0 {
            0.0
        } else {
            seconds * 1e6 / self.requests as f64
        }
    }
}

/// One scenario at one concurrency: the medians of its repetitions.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
struct Row {
    scenario: Scenario,
    concurrency: usize,
    req_per_sec: f64,
    p50_us: f64,
    p99_us: f64,
    /// Summed over the repetitions.
    errors: u64,
    enqueue_per_sec: Option<f64>,
    control_plane_cpu_us_per_request: f64,
    echo_cpu_us_per_request: f64,
    /// loadgen's CPU over the window, in percent of its core: near 100, loadgen was the
    /// limit and the row says little about the servers.
    loadgen_busy_percent: f64,
    /// The control plane's and the echo's CPU over the window, in percent of one core.
    servers_busy_percent: f64,
    /// The highest VmHWM seen after a repetition.
    peak_rss_kb: u64,
    /// VmRSS after the last repetition.
    rss_kb: u64,
    /// Against the direct echo at the same concurrency.
    throughput_vs_echo: Option<f64>,
    p50_vs_echo: Option<f64>,
    /// Control-plane CPU per request over the echo endpoint's CPU per request (direct).
    cpu_vs_echo: Option<f64>,
}

/// The median; the mean of the middle two for an even count. `None` when empty.
fn median(values: &[f64]) -> Option<f64> {
    let mut sorted: Vec<f64> = values.iter().copied().filter(|v| !v.is_nan()).collect();
    if sorted.is_empty() {
        return None;
    }
    sorted.sort_by(f64::total_cmp);
    let middle = sorted.len() / 2;
    Some(if sorted.len() % 2 == 1 {
        sorted[middle]
    } else {
        (sorted[middle - 1] + sorted[middle]) / 2.0
    })
}

fn ratio(value: f64, base: f64) -> Option<f64> {
    (base > 0.0).then(|| value / base)
}

fn rows(runs: &[RunResult]) -> Vec<Row> {
    let mut keys: Vec<(usize, Scenario)> = Vec::new();
    for run in runs {
        if !keys.contains(&(run.concurrency, run.scenario)) {
            keys.push((run.concurrency, run.scenario));
        }
    }
    keys.sort_by_key(|(concurrency, scenario)| {
        (
            Scenario::ALL.iter().position(|s| s == scenario),
            *concurrency,
        )
    });
    let mut rows: Vec<Row> = keys
        .iter()
        .map(|&(concurrency, scenario)| {
            let group: Vec<&RunResult> = runs
                .iter()
                .filter(|run| run.scenario == scenario && run.concurrency == concurrency)
                .collect();
            let med = |value: &dyn Fn(&RunResult) -> f64| {
                median(&group.iter().map(|run| value(run)).collect::<Vec<_>>()).unwrap_or(0.0)
            };
            let enqueue: Vec<f64> = group.iter().filter_map(|run| run.enqueue_per_sec).collect();
            Row {
                scenario,
                concurrency,
                req_per_sec: med(&|run| run.req_per_sec),
                p50_us: med(&|run| run.p50_us),
                p99_us: med(&|run| run.p99_us),
                errors: group.iter().map(|run| run.errors).sum(),
                enqueue_per_sec: median(&enqueue),
                control_plane_cpu_us_per_request: med(&|run| {
                    run.cpu_us_per_request(run.control_plane_cpu_secs)
                }),
                echo_cpu_us_per_request: med(&|run| run.cpu_us_per_request(run.echo_cpu_secs)),
                loadgen_busy_percent: med(&|run| run.busy_percent(run.loadgen_cpu_secs)),
                servers_busy_percent: med(&|run| {
                    run.busy_percent(run.control_plane_cpu_secs + run.echo_cpu_secs)
                }),
                peak_rss_kb: group.iter().map(|run| run.peak_rss_kb).max().unwrap_or(0),
                rss_kb: group.last().map_or(0, |run| run.rss_kb),
                throughput_vs_echo: None,
                p50_vs_echo: None,
                cpu_vs_echo: None,
            }
        })
        .collect();
    let floors: Vec<Row> = rows
        .iter()
        .filter(|row| row.scenario == Scenario::DirectEcho)
        .cloned()
        .collect();
    for row in &mut rows {
        let Some(floor) = floors.iter().find(|f| f.concurrency == row.concurrency) else {
            continue;
        };
        row.throughput_vs_echo = ratio(row.req_per_sec, floor.req_per_sec);
        if row.scenario != Scenario::AsyncPool {
            // A completion latency is not a request latency: no ratio.
            row.p50_vs_echo = ratio(row.p50_us, floor.p50_us);
        }
        if row.scenario != Scenario::DirectEcho {
            row.cpu_vs_echo = ratio(
                row.control_plane_cpu_us_per_request,
                floor.echo_cpu_us_per_request,
            );
        }
    }
    rows
}

/// The memory scenario.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
struct MemoryResult {
    concurrency: usize,
    secs: f64,
    /// Finished executions created in the measured load (all retained: TTL 5 minutes).
    records: u64,
    errors: u64,
    rss_before_kb: u64,
    rss_after_kb: u64,
    peak_rss_kb: u64,
    /// RSS growth over the measured load divided by `records`.
    bytes_per_record: f64,
    /// The output each record keeps.
    output_bytes: usize,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Report {
    mode: &'static str,
    commit: String,
    cores: usize,
    pinning: String,
    plan: Plan,
    startup: Startup,
    /// The control plane after every scenario: it retained every record (TTL 5 minutes).
    at_end: Memory,
    rows: Vec<Row>,
    memory: MemoryResult,
    runs: Vec<RunResult>,
    elapsed_secs: f64,
}

/// What makes a run worthless: errors, or a scenario that moved nothing.
fn problems(report: &Report) -> Vec<String> {
    let mut problems = Vec::new();
    for row in &report.rows {
        let name = format!("{} at concurrency {}", row.scenario.name(), row.concurrency);
        if row.errors > 0 {
            problems.push(format!("{name} had {} error(s)", row.errors));
        }
        if row.req_per_sec <= 0.0 {
            problems.push(format!("{name} had no throughput"));
        }
    }
    if report.memory.errors > 0 {
        problems.push(format!(
            "the memory run had {} error(s)",
            report.memory.errors
        ));
    }
    if report.memory.records == 0 {
        problems.push("the memory run created no record".to_owned());
    }
    problems
}

// ---------------------------------------------------------------------------------------
// The Markdown report

fn mib(kb: u64) -> f64 {
    kb as f64 / 1024.0
}

fn optional(value: Option<f64>, digits: usize) -> String {
    value.map_or_else(|| "-".to_owned(), |value| format!("{value:.digits$}"))
}

fn markdown(report: &Report) -> String {
    let plan = &report.plan;
    let mut text = String::new();
    let _ = writeln!(text, "# `cargo xtask bench` ({})\n", report.mode);
    let _ = writeln!(
        text,
        "Commit `{}`, {} CPU(s), {}. {} repetition(s), medians; {} s warm-up then {} s \
         per run; async: {} enqueued per run.\n",
        report.commit,
        report.cores,
        report.pinning,
        plan.repetitions,
        plan.warmup_secs,
        plan.duration_secs,
        plan.async_count
    );
    let _ = writeln!(
        text,
        "Control plane: first healthy answer {:.1} ms after spawn; idle RSS {:.1} MiB; \
         after all scenarios (every record retained, TTL 5 minutes) RSS {:.1} MiB, peak \
         {:.1} MiB. The RSS columns below are read after each row's runs, so they grow \
         with the records of all runs before, in run order (repetition, concurrency, \
         scenario).\n",
        report.startup.time_to_healthy_ms,
        mib(report.startup.idle_rss_kb),
        mib(report.at_end.rss_kb),
        mib(report.at_end.peak_rss_kb),
    );
    text.push_str(
        "| scenario | conc | req/s | p50 us | p99 us | errors | enqueue/s | req/s vs echo | \
         p50 vs echo |\n|---|--:|--:|--:|--:|--:|--:|--:|--:|\n",
    );
    for row in &report.rows {
        let _ = writeln!(
            text,
            "| {} | {} | {:.0} | {:.1} | {:.1} | {} | {} | {} | {} |",
            row.scenario.name(),
            row.concurrency,
            row.req_per_sec,
            row.p50_us,
            row.p99_us,
            row.errors,
            optional(row.enqueue_per_sec, 0),
            optional(row.throughput_vs_echo, 2),
            optional(row.p50_vs_echo, 2),
        );
    }
    text.push_str(
        "\n| scenario | conc | CP CPU us/req | echo CPU us/req | CP CPU vs echo CPU | \
         loadgen core % | servers core % | CP peak RSS MiB | CP RSS MiB |\n\
         |---|--:|--:|--:|--:|--:|--:|--:|--:|\n",
    );
    for row in &report.rows {
        let _ = writeln!(
            text,
            "| {} | {} | {:.1} | {:.1} | {} | {:.0} | {:.0} | {:.1} | {:.1} |",
            row.scenario.name(),
            row.concurrency,
            row.control_plane_cpu_us_per_request,
            row.echo_cpu_us_per_request,
            optional(row.cpu_vs_echo, 2),
            row.loadgen_busy_percent,
            row.servers_busy_percent,
            mib(row.peak_rss_kb),
            mib(row.rss_kb),
        );
    }
    text.push_str(
        "\nasync POOL: req/s is completions per second from the first enqueue to the last \
         terminal execution; p50/p99 are `finishedAt - createdAt` of sampled records \
         (millisecond timestamps). CPU per request divides the CPU time of the measured \
         window by its requests (for async: by the executions). \"CP CPU vs echo CPU\" is \
         the control plane's CPU per request over the echo endpoint's in the direct run at \
         the same concurrency; in the bare proxy's row \"CP CPU\" is the proxy's (bench-echo \
         forwarding each request to the echo on a connection of its own: two HTTP \
         exchanges and nothing else). \"core %\" is CPU time over the window in percent of one \
         core: loadgen near 100 % means loadgen, not the servers, set the pace.\n\n",
    );
    let memory = &report.memory;
    let _ = writeln!(
        text,
        "Memory: {} s of sync LOCAL load at concurrency {} on a fresh control plane \
         retained {} finished records; RSS {:.1} -> {:.1} MiB (peak {:.1} MiB): \
         **{:.0} bytes per retained record** (each keeps a {}-byte output).",
        memory.secs,
        memory.concurrency,
        memory.records,
        mib(memory.rss_before_kb),
        mib(memory.rss_after_kb),
        mib(memory.peak_rss_kb),
        memory.bytes_per_record,
        memory.output_bytes
    );
    text
}

// ---------------------------------------------------------------------------------------
// The machine: CPUs, pinning, /proc, git

/// Which core each side runs on; `None` fields mean not pinned.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Pinning {
    loadgen: Option<u32>,
    servers: Option<u32>,
    why_not: Option<&'static str>,
}

impl Pinning {
    fn choose(cpus: &[u32], taskset: bool) -> Self {
        match cpus {
            [first, second, ..] if taskset => Self {
                loadgen: Some(*first),
                servers: Some(*second),
                why_not: None,
            },
            [_, _, ..] => Self {
                loadgen: None,
                servers: None,
                why_not: Some("not pinned: taskset (util-linux) not found"),
            },
            _ => Self {
                loadgen: None,
                servers: None,
                why_not: Some("not pinned: one CPU only, everything shares it"),
            },
        }
    }

    fn describe(&self) -> String {
        match (self.loadgen, self.servers, self.why_not) {
            (Some(loadgen), Some(servers), _) => format!(
                "pinned with taskset: loadgen on CPU {loadgen}, control plane and \
                 bench-echo on CPU {servers}"
            ),
            (_, _, Some(why)) => why.to_owned(),
            _ => "not pinned".to_owned(),
        }
    }
}

fn taskset_available() -> bool {
    Command::new("taskset")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// The CPUs this process may run on (`Cpus_allowed_list` of `/proc/self/status`).
fn allowed_cpus() -> Result<Vec<u32>> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("Cpus_allowed_list:"))
        .and_then(|list| parse_cpu_list(list.trim()))
        .ok_or_else(|| "no readable Cpus_allowed_list in /proc/self/status".into())
}

/// A kernel CPU list (`0-3,8,10-11`), expanded.
fn parse_cpu_list(list: &str) -> Option<Vec<u32>> {
    let mut cpus = Vec::new();
    for part in list.split(',').filter(|part| !part.is_empty()) {
        match part.split_once('-') {
            Some((low, high)) => {
                let (low, high): (u32, u32) = (low.parse().ok()?, high.parse().ok()?);
                if low > high {
                    return None;
                }
                cpus.extend(low..=high);
            }
            None => cpus.push(part.parse().ok()?),
        }
    }
    (!cpus.is_empty()).then_some(cpus)
}

/// Resident memory of a process, from `/proc/PID/status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
struct Memory {
    /// VmRSS.
    rss_kb: u64,
    /// VmHWM: the highest VmRSS so far.
    peak_rss_kb: u64,
}

fn parse_memory(status: &str) -> Option<Memory> {
    let field = |name: &str| {
        status.lines().find_map(|line| {
            line.strip_prefix(name)?
                .trim()
                .strip_suffix("kB")?
                .trim()
                .parse::<u64>()
                .ok()
        })
    };
    Some(Memory {
        rss_kb: field("VmRSS:")?,
        peak_rss_kb: field("VmHWM:")?,
    })
}

fn memory_of(pid: u32) -> Result<Memory> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).map_err(|error| format!("{path}: {error}"))?;
    parse_memory(&status).ok_or_else(|| format!("no VmRSS/VmHWM in {path}").into())
}

/// The API and management addresses of the "control plane listening" line of the
/// control plane's JSON log (`tracing-subscriber`'s JSON puts them under `fields`).
fn parse_listening(line: &str) -> Option<(SocketAddr, SocketAddr)> {
    let event: Value = serde_json::from_str(line).ok()?;
    let fields = event.get("fields").unwrap_or(&event);
    if fields.get("message")?.as_str()? != "control plane listening" {
        return None;
    }
    let address = |name: &str| fields.get(name)?.as_str()?.parse::<SocketAddr>().ok();
    Some((address("api_addr")?, address("management_addr")?))
}

/// `HEAD`'s short hash, `+dirty` with uncommitted changes.
fn git_commit(root: &Path) -> String {
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .current_dir(root)
            .output()
            .ok()
            .filter(|output| output.status.success())
            .map(|output| String::from_utf8_lossy(&output.stdout).trim().to_owned())
    };
    let Some(commit) = git(&["rev-parse", "--short=12", "HEAD"]) else {
        return "unknown".to_owned();
    };
    match git(&["status", "--porcelain"]) {
        Some(changes) if !changes.is_empty() => format!("{commit}+dirty"),
        _ => commit,
    }
}

// ---------------------------------------------------------------------------------------
// The bench's own few HTTP calls (registration, health)

/// A blocking HTTP/1.1 client for the handful of calls outside loadgen's runs.
#[derive(Debug)]
struct Http {
    runtime: tokio::runtime::Runtime,
}

impl Http {
    fn new() -> Result<Self> {
        Ok(Self {
            runtime: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?,
        })
    }

    /// One request on a fresh connection; the status and the body as text.
    fn call(
        &self,
        method: Method,
        addr: SocketAddr,
        path: &str,
        body: Option<&str>,
    ) -> Result<(StatusCode, String)> {
        let mut request = Request::new(Full::new(Bytes::from(body.unwrap_or("").to_owned())));
        *request.method_mut() = method;
        *request.uri_mut() = path.parse()?;
        let headers = request.headers_mut();
        headers.insert(header::HOST, HeaderValue::from_str(&addr.to_string())?);
        if body.is_some() {
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
        }
        let exchange = async {
            let stream = tokio::net::TcpStream::connect(addr).await?;
            let (mut sender, connection) = http1::handshake(TokioIo::new(stream)).await?;
            let work = async {
                let response = sender.send_request(request).await?;
                let status = response.status();
                let body = response.into_body().collect().await?.to_bytes();
                Ok::<_, crate::Error>((status, String::from_utf8_lossy(&body).into_owned()))
            };
            tokio::select! {
                answer = work => answer,
                _closed = connection => Err("the connection closed before the answer".into()),
            }
        };
        self.runtime.block_on(async {
            tokio::time::timeout(Duration::from_secs(10), exchange)
                .await
                .map_err(|_| format!("no answer to {path} from {addr} within 10 s"))?
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_median_of_an_odd_count_is_the_middle_value() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[7.5]), Some(7.5));
    }

    #[test]
    fn the_median_of_an_even_count_is_the_mean_of_the_middle_two() {
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median(&[]), None);
    }

    #[test]
    fn the_listening_line_gives_both_bound_addresses() {
        let line = r#"{"timestamp":"2026-11-27T10:00:00.000Z","level":"INFO","fields":{"message":"control plane listening","api_addr":"127.0.0.1:41234","management_addr":"127.0.0.1:41235","scheduler":"Background","callback_base_url":"http://127.0.0.1:41234/v1/internal/executions"},"target":"control_plane"}"#;
        assert_eq!(
            parse_listening(line),
            Some((
                "127.0.0.1:41234".parse().unwrap(),
                "127.0.0.1:41235".parse().unwrap()
            ))
        );
    }

    #[test]
    fn other_log_lines_are_not_the_listening_line() {
        let other = r#"{"level":"INFO","fields":{"message":"control plane stopped"}}"#;
        assert_eq!(parse_listening(other), None);
        assert_eq!(parse_listening("control plane listening api_addr=1"), None);
        let flattened = r#"{"message":"control plane listening","api_addr":"127.0.0.1:1","management_addr":"127.0.0.1:2"}"#;
        assert!(parse_listening(flattened).is_some());
    }

    #[test]
    fn rss_and_its_peak_come_from_proc_status() {
        let status = "Name:\tcontrol-plane\nVmPeak:\t  812345 kB\nVmHWM:\t   20480 kB\n\
                      VmRSS:\t   10240 kB\nThreads:\t3\n";
        assert_eq!(
            parse_memory(status),
            Some(Memory {
                rss_kb: 10_240,
                peak_rss_kb: 20_480
            })
        );
        assert_eq!(parse_memory("Name:\tzombie\n"), None);
    }

    #[test]
    fn cpu_lists_expand_ranges() {
        assert_eq!(parse_cpu_list("0-1"), Some(vec![0, 1]));
        assert_eq!(parse_cpu_list("0,2-4,7"), Some(vec![0, 2, 3, 4, 7]));
        assert_eq!(parse_cpu_list("3"), Some(vec![3]));
        assert_eq!(parse_cpu_list(""), None);
        assert_eq!(parse_cpu_list("4-2"), None);
    }

    #[test]
    fn two_cpus_split_the_load_generator_from_the_servers() {
        let pinning = Pinning::choose(&[2, 5], true);
        assert_eq!((pinning.loadgen, pinning.servers), (Some(2), Some(5)));
        assert!(pinning.describe().contains("loadgen on CPU 2"));
        let single = Pinning::choose(&[0], true);
        assert_eq!((single.loadgen, single.servers), (None, None));
        assert!(single.describe().contains("one CPU"));
        assert!(
            Pinning::choose(&[0, 1], false)
                .describe()
                .contains("taskset")
        );
    }

    fn run(scenario: Scenario, concurrency: usize, req_per_sec: f64, p50_us: f64) -> RunResult {
        RunResult {
            scenario,
            concurrency,
            repetition: 1,
            requests: 1_000,
            errors: 0,
            req_per_sec,
            p50_us,
            p99_us: p50_us * 2.0,
            enqueue_per_sec: None,
            control_plane_cpu_secs: 0.02,
            echo_cpu_secs: 0.01,
            loadgen_cpu_secs: 0.5,
            window_secs: 1.0,
            peak_rss_kb: 10_000,
            rss_kb: 9_000,
        }
    }

    #[test]
    fn rows_take_medians_and_ratios_against_the_echo_at_the_same_concurrency() {
        let runs = [
            run(Scenario::DirectEcho, 16, 100.0, 10.0),
            run(Scenario::DirectEcho, 16, 300.0, 30.0),
            run(Scenario::DirectEcho, 16, 200.0, 20.0),
            run(Scenario::SyncPool, 16, 50.0, 40.0),
            run(Scenario::SyncPool, 1, 10.0, 5.0),
        ];
        let rows = rows(&runs);
        assert_eq!(rows.len(), 3);
        let echo = &rows[0];
        assert_eq!(
            (echo.scenario, echo.req_per_sec),
            (Scenario::DirectEcho, 200.0)
        );
        let pool = rows
            .iter()
            .find(|row| row.scenario == Scenario::SyncPool && row.concurrency == 16)
            .unwrap();
        assert_eq!(pool.throughput_vs_echo, Some(0.25));
        assert_eq!(pool.p50_vs_echo, Some(2.0));
        // 20 us of control-plane CPU per request against 10 us of echo CPU.
        assert!((pool.cpu_vs_echo.unwrap() - 2.0).abs() < 1e-9);
        let alone = rows.iter().find(|row| row.concurrency == 1).unwrap();
        assert_eq!(
            alone.throughput_vs_echo, None,
            "no echo run at concurrency 1"
        );
    }

    #[test]
    fn errors_or_no_throughput_make_the_run_fail() {
        let mut runs = vec![run(Scenario::DirectEcho, 1, 100.0, 10.0)];
        runs.push(RunResult {
            errors: 2,
            ..run(Scenario::SyncLocal, 1, 100.0, 10.0)
        });
        runs.push(run(Scenario::SyncPool, 1, 0.0, 0.0));
        let report = Report {
            mode: "quick",
            commit: "abc".to_owned(),
            cores: 2,
            pinning: "not pinned".to_owned(),
            plan: Plan::of(Mode::Quick),
            startup: Startup {
                time_to_healthy_ms: 5.0,
                idle_rss_kb: 5_000,
            },
            at_end: Memory {
                rss_kb: 9_000,
                peak_rss_kb: 10_000,
            },
            rows: rows(&runs),
            memory: MemoryResult {
                concurrency: 16,
                secs: 1.0,
                records: 100,
                errors: 0,
                rss_before_kb: 1,
                rss_after_kb: 2,
                peak_rss_kb: 2,
                bytes_per_record: 10.0,
                output_bytes: 19,
            },
            runs,
            elapsed_secs: 1.0,
        };
        let problems = problems(&report);
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].contains("sync LOCAL at concurrency 1 had 2 error(s)"));
        assert!(problems[1].contains("sync POOL at concurrency 1 had no throughput"));
        assert!(markdown(&report).contains("| sync LOCAL | 1 |"));
    }
}
