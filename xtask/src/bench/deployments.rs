//! The rows of functions that run themselves (the `process` provider), each against its
//! floor measured in the same run:
//!
//! - **warm DEPLOYMENT vs POOL**: bench-echo registered twice on one control plane, as
//!   `POOL` (a bench-echo the bench starts, `endpointUrl` to it) and as `DEPLOYMENT`
//!   (`command` = bench-echo, one replica pinned by `scalingConfig` `NONE`, so the
//!   provider starts it with `PORT` and dispatches to it), sync invocations at the same
//!   load to each, alternating; ratios DEPLOYMENT / POOL.
//! - **one-shot STDIO `cat` vs spawn + exit**: a `STDIO` function whose command is
//!   `cat`, invoked sync; then `spawn-floor`, pinned where the control plane runs, starts
//!   `cat` as many times at the same concurrency (stdin piped, the invocation's JSON
//!   written, stdout read to its end, the exit waited for); ratios invocation / floor.
//!   First on the fresh control plane, then once more after the warm rows have filled
//!   its store with their records: the provider forks the control plane for every
//!   command, and what a fork costs grows with the memory the child gets a copy of.
//! - **scale from zero**: a `DEPLOYMENT` bench-echo with `minReplicas: 0` on a control
//!   plane with short scaling windows; once it is at zero, one sync invocation, its
//!   latency seen by the bench against the `initDurationMs` its execution record
//!   reports (the replica's own start to ready), then one warm invocation; repeated,
//!   waiting for zero in between.
//!
//! The replicas are the control plane's children, not the bench's: each control plane
//! is stopped with SIGTERM at the end, so it stops them itself; on an error path it is
//! killed and the kernel kills them with it (`PR_SET_PDEATHSIG`); either way
//! [`Replicas`] makes sure by pid that none is left.

use super::*;

const POOL_BESIDE: &str = "bench-warm-pool";
pub(super) const DEPLOYMENT_FUNCTION: &str = "bench-deployment";
const STDIO_FUNCTION: &str = "bench-stdio";
const COLD_FUNCTION: &str = "bench-cold";

/// The autoscaler on a benchmark's time scale (as the replica tests run it): decisions
/// every 50 ms, down after half a second of less work, to zero after a second of none.
/// A stopped bench-echo exits at SIGTERM, so the grace is never waited out.
const QUICK_SCALING: [&str; 8] = [
    "--autoscale-interval",
    "PT0.05S",
    "--scale-down-window",
    "PT0.5S",
    "--scale-to-zero-after",
    "PT1S",
    "--replica-stop-grace",
    "PT2S",
];

/// Client concurrencies of the STDIO rows: one, and enough to keep the servers' core
/// busy spawning (every invocation is a fork and an exec, about a millisecond).
const STDIO_CONCURRENCIES: [usize; 2] = [1, 16];

/// How long a replica may take to be started, or to be gone.
const REPLICA_WAIT: Duration = Duration::from_secs(30);

/// How long a control plane with nothing in flight may take to stop its replicas and
/// exit after SIGTERM (its replicas, bench-echo, exit at SIGTERM at once).
const STOP_WAIT: Duration = Duration::from_secs(10);

/// One side of a comparison, one run or the medians of several.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Measure {
    /// Answered requests (spawns, for the floor) in the measured window.
    pub(super) requests: u64,
    pub(super) errors: u64,
    pub(super) req_per_sec: f64,
    pub(super) p50_us: f64,
    pub(super) p99_us: f64,
    /// CPU per request of whoever makes the request happen: the control plane, or the
    /// floor's spawner.
    pub(super) driver_cpu_us: f64,
    /// CPU per request of the function's process: the echo or the replica (the floor's
    /// `cat`s; the control plane's `cat`s are not counted, see the report).
    pub(super) function_cpu_us: Option<f64>,
}

/// A measured side over its base: `measured / base` of each figure.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Ratios {
    pub(super) req_per_sec: Option<f64>,
    pub(super) p50: Option<f64>,
    pub(super) p99: Option<f64>,
    pub(super) driver_cpu: Option<f64>,
}

impl Ratios {
    pub(super) fn of(measured: &Measure, base: &Measure) -> Self {
        Self {
            req_per_sec: ratio(measured.req_per_sec, base.req_per_sec),
            p50: ratio(measured.p50_us, base.p50_us),
            p99: ratio(measured.p99_us, base.p99_us),
            driver_cpu: ratio(measured.driver_cpu_us, base.driver_cpu_us),
        }
    }
}

/// One repetition at one concurrency: the base and the measured side.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct PairRun {
    pub(super) concurrency: usize,
    pub(super) repetition: usize,
    pub(super) base: Measure,
    pub(super) measured: Measure,
    /// The control plane's VmRSS after the pair's runs.
    pub(super) control_plane_rss_kb: u64,
}

/// The medians of a concurrency's repetitions, and their ratios.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Pair {
    pub(super) concurrency: usize,
    pub(super) base: Measure,
    pub(super) measured: Measure,
    pub(super) ratios: Ratios,
    /// The highest of the repetitions.
    pub(super) control_plane_rss_kb: u64,
}

/// The medians of `measures` (errors and requests summed).
pub(super) fn summarize(measures: &[&Measure]) -> Measure {
    let med = |value: fn(&Measure) -> f64| {
        median(&measures.iter().map(|m| value(m)).collect::<Vec<_>>()).unwrap_or(0.0)
    };
    let function: Vec<f64> = measures.iter().filter_map(|m| m.function_cpu_us).collect();
    Measure {
        requests: measures.iter().map(|m| m.requests).sum(),
        errors: measures.iter().map(|m| m.errors).sum(),
        req_per_sec: med(|m| m.req_per_sec),
        p50_us: med(|m| m.p50_us),
        p99_us: med(|m| m.p99_us),
        driver_cpu_us: med(|m| m.driver_cpu_us),
        function_cpu_us: median(&function),
    }
}

/// One pair per concurrency, in the order the runs first show it.
pub(super) fn pairs(runs: &[PairRun]) -> Vec<Pair> {
    let mut concurrencies: Vec<usize> = Vec::new();
    for run in runs {
        if !concurrencies.contains(&run.concurrency) {
            concurrencies.push(run.concurrency);
        }
    }
    concurrencies
        .into_iter()
        .map(|concurrency| {
            let group: Vec<&PairRun> = runs
                .iter()
                .filter(|run| run.concurrency == concurrency)
                .collect();
            let base = summarize(&group.iter().map(|run| &run.base).collect::<Vec<_>>());
            let measured = summarize(&group.iter().map(|run| &run.measured).collect::<Vec<_>>());
            Pair {
                concurrency,
                ratios: Ratios::of(&measured, &base),
                base,
                measured,
                control_plane_rss_kb: group
                    .iter()
                    .map(|run| run.control_plane_rss_kb)
                    .max()
                    .unwrap_or(0),
            }
        })
        .collect()
}

/// One invocation of a function at zero replicas.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct ColdStart {
    /// The sync invocation as the bench saw it (a fresh connection, sent to answered).
    pub(super) first_invoke_ms: f64,
    /// From its execution record.
    pub(super) cold_start: bool,
    pub(super) init_duration_ms: Option<u64>,
    /// The next invocation, at once, on the same replica (same client path, warm).
    pub(super) warm_invoke_ms: f64,
}

impl ColdStart {
    /// What the first invocation took beyond the replica's own start to ready.
    pub(super) fn beyond_init_ms(&self) -> Option<f64> {
        Some(self.first_invoke_ms - self.init_duration_ms? as f64)
    }

    /// The same, less what a warm invocation costs the same client: what scaling from
    /// zero itself adds (the autoscaler's wake-up, the spawn, the wait for the probe).
    pub(super) fn beyond_init_and_warm_ms(&self) -> Option<f64> {
        Some(self.beyond_init_ms()? - self.warm_invoke_ms)
    }
}

/// The medians of the cold starts.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct ColdSummary {
    pub(super) count: usize,
    pub(super) first_invoke_ms: f64,
    pub(super) init_duration_ms: f64,
    pub(super) beyond_init_ms: f64,
    pub(super) beyond_init_max_ms: f64,
    pub(super) beyond_init_and_warm_ms: f64,
    pub(super) warm_invoke_ms: f64,
}

pub(super) fn cold_summary(starts: &[ColdStart]) -> Option<ColdSummary> {
    let beyond: Vec<f64> = starts
        .iter()
        .filter_map(ColdStart::beyond_init_ms)
        .collect();
    let of = |value: fn(&ColdStart) -> Option<f64>| {
        median(&starts.iter().filter_map(value).collect::<Vec<_>>())
    };
    Some(ColdSummary {
        count: starts.len(),
        first_invoke_ms: of(|start| Some(start.first_invoke_ms))?,
        init_duration_ms: of(|start| start.init_duration_ms.map(|ms| ms as f64))?,
        beyond_init_ms: median(&beyond)?,
        beyond_init_max_ms: beyond.iter().copied().fold(f64::MIN, f64::max),
        beyond_init_and_warm_ms: of(ColdStart::beyond_init_and_warm_ms)?,
        warm_invoke_ms: of(|start| Some(start.warm_invoke_ms))?,
    })
}

/// What the rows of this module add to the report.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct DeploymentsReport {
    /// Base POOL, measured DEPLOYMENT.
    pub(super) warm: Vec<Pair>,
    /// Base the spawn + exit floor, measured the STDIO invocation: on the fresh
    /// control plane, and on the same one after the warm rows.
    pub(super) stdio: Vec<Pair>,
    pub(super) stdio_after_warm: Vec<Pair>,
    pub(super) cold: Vec<ColdStart>,
    pub(super) cold_summary: Option<ColdSummary>,
    pub(super) warm_runs: Vec<PairRun>,
    pub(super) stdio_runs: Vec<PairRun>,
    pub(super) stdio_after_warm_runs: Vec<PairRun>,
}

/// Errors, sides without throughput, and invocations at zero that were no cold start.
pub(super) fn problems(report: &DeploymentsReport) -> Vec<String> {
    let mut problems = Vec::new();
    let sides = [
        ("POOL", "DEPLOYMENT", &report.warm),
        ("the floor", "STDIO", &report.stdio),
        (
            "the floor",
            "STDIO after the warm rows",
            &report.stdio_after_warm,
        ),
    ];
    for (base_name, measured_name, pairs) in sides {
        for pair in pairs {
            for (name, side) in [(base_name, &pair.base), (measured_name, &pair.measured)] {
                let name = format!("{name} at concurrency {}", pair.concurrency);
                if side.errors > 0 {
                    problems.push(format!("{name} had {} error(s)", side.errors));
                }
                if side.req_per_sec <= 0.0 {
                    problems.push(format!("{name} had no throughput"));
                }
            }
        }
    }
    for (number, start) in report.cold.iter().enumerate() {
        if !start.cold_start || start.init_duration_ms.is_none() {
            problems.push(format!(
                "invocation {} at zero replicas was not recorded as a cold start with its \
                 initDurationMs",
                number + 1
            ));
        }
    }
    problems
}

/// The pids of the processes whose parent is `parent` and whose environment says
/// `FUNCTION_NAME=<function>`: that function's replicas (or one-shot commands).
pub(super) fn function_processes(parent: u32, function: &str) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|stat| parse_parent(&stat))
                == Some(parent)
        })
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/environ"))
                .is_ok_and(|environ| names_function(&environ, function))
        })
        .collect()
}

/// The parent pid (field 4) of a `/proc/PID/stat` line; a zombie has none worth having.
pub(super) fn parse_parent(stat: &str) -> Option<u32> {
    let mut fields = crate::proc_stat::fields_after_name(stat)?;
    let state = fields.next()?;
    if state == "Z" || state == "X" {
        return None;
    }
    fields.next()?.parse().ok()
}

/// Whether a `/proc/PID/environ` (NUL-separated) sets `FUNCTION_NAME` to `function`.
pub(super) fn names_function(environ: &[u8], function: &str) -> bool {
    let wanted = format!("FUNCTION_NAME={function}");
    environ
        .split(|byte| *byte == 0)
        .any(|variable| variable == wanted.as_bytes())
}

/// The runs of [`Bench::warm_and_stdio`].
#[derive(Debug)]
struct WarmAndStdio {
    warm: Vec<PairRun>,
    stdio: Vec<PairRun>,
    stdio_after_warm: Vec<PairRun>,
}

/// The replica processes the bench has seen: the control plane stops them, and the
/// kernel kills them with it; dropped after the control plane, this waits (bounded)
/// until each is gone and kills by pid any that is not, so none outlives the bench.
#[derive(Debug, Default)]
pub(super) struct Replicas {
    pids: Vec<u32>,
}

impl Replicas {
    pub(super) fn add(&mut self, pids: impl IntoIterator<Item = u32>) {
        for pid in pids {
            if !self.pids.contains(&pid) {
                self.pids.push(pid);
            }
        }
    }
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|stat| parse_parent(&stat).is_some())
}

impl Drop for Replicas {
    fn drop(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.pids.iter().any(|pid| alive(*pid)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        for pid in self.pids.iter().filter(|pid| alive(**pid)) {
            eprintln!("bench: replica {pid} outlived its control plane; killing it");
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
    }
}

impl Bench {
    /// The three kinds of rows, each on a control plane of its own.
    pub(super) fn deployments(&self, mode: Mode) -> Result<DeploymentsReport> {
        let started = Instant::now();
        let runs = self.warm_and_stdio()?;
        let cold = self.cold_starts(if mode == Mode::Quick { 2 } else { 5 })?;
        // What these rows add to a run (CI keeps an eye on the quick one's).
        println!(
            "bench: the rows of functions that run themselves took {:.1}s",
            started.elapsed().as_secs_f64()
        );
        Ok(DeploymentsReport {
            warm: pairs(&runs.warm),
            stdio: pairs(&runs.stdio),
            stdio_after_warm: pairs(&runs.stdio_after_warm),
            cold_summary: cold_summary(&cold),
            cold,
            warm_runs: runs.warm,
            stdio_runs: runs.stdio,
            stdio_after_warm_runs: runs.stdio_after_warm,
        })
    }

    /// A control plane for the replica rows: the bench's store and `extra` flags.
    fn replica_plane(&self, log_name: &str, extra: &[&str]) -> Result<ControlPlane> {
        let mut args = self.store.args(&self.out, log_name)?;
        args.extend(extra.iter().map(|arg| (*arg).to_owned()));
        self.start_control_plane_under(log_name, &[], &args)
    }

    /// Registers `bench-deployment`: bench-echo as the `command` of a `DEPLOYMENT` with
    /// one replica (`NONE` keeps the count where `minReplicas` puts it), answered once
    /// that replica is ready.
    pub(super) fn register_warm_deployment(&self, control_plane: &ControlPlane) -> Result<()> {
        let spec = serde_json::json!({
            "name": DEPLOYMENT_FUNCTION, "image": "bench-echo",
            "executionMode": "DEPLOYMENT", "command": [self.bins.echo.display().to_string()],
            "concurrency": self.function_concurrency(),
            "scalingConfig": {"strategy": "NONE", "minReplicas": 1, "maxReplicas": 1},
        });
        self.register_spec(control_plane, &spec)
    }

    fn register_spec(&self, control_plane: &ControlPlane, spec: &Value) -> Result<()> {
        let (status, body) = self.http.call(
            Method::POST,
            control_plane.api,
            "/v1/functions",
            Some(&spec.to_string()),
        )?;
        if status == StatusCode::CREATED {
            Ok(())
        } else {
            Err(format!("registering {spec} answered {status}: {body}").into())
        }
    }

    /// `replicas.{desired, ready}` of `function`.
    fn replica_counts(&self, control_plane: &ControlPlane, function: &str) -> Result<(u64, u64)> {
        let path = format!("/v1/functions/{function}");
        let (status, body) = self
            .http
            .call(Method::GET, control_plane.api, &path, None)?;
        let view: Value = serde_json::from_str(&body)?;
        let count = |field: &str| view["replicas"][field].as_u64();
        match (status, count("desired"), count("ready")) {
            (StatusCode::OK, Some(desired), Some(ready)) => Ok((desired, ready)),
            _ => Err(format!("GET {path} answered {status}: {body}").into()),
        }
    }

    /// Waits until `function` has `ready` ready replicas (and asks for as many), and
    /// exactly that many replica processes: their pids.
    fn until_replicas(
        &self,
        control_plane: &mut ControlPlane,
        function: &str,
        ready: u64,
    ) -> Result<Vec<u32>> {
        let what = format!("{function} to have {ready} ready replica(s)");
        wait_for(&what, Instant::now() + REPLICA_WAIT, || {
            control_plane.guard.still_running()?;
            let pids = function_processes(control_plane.guard.pid(), function);
            if self.replica_counts(control_plane, function)? == (ready, ready)
                && pids.len() as u64 == ready
            {
                return Ok(Some(pids));
            }
            // Polled over HTTP every 20 ms, not in wait_for's 1 ms loop: it runs beside
            // the servers, and a start or a stop takes milliseconds anyway.
            std::thread::sleep(Duration::from_millis(20));
            Ok(None)
        })
    }

    /// STDIO against its floor, POOL and DEPLOYMENT at every concurrency, and STDIO
    /// once more at concurrency 1, on one control plane.
    fn warm_and_stdio(&self) -> Result<WarmAndStdio> {
        let echo = self.start_bench_echo("bench-echo-warm", &[])?;
        let mut replicas = Replicas::default();
        let mut control_plane = self.replica_plane("control-plane-deployments.log", &[])?;
        let concurrency = self.function_concurrency();
        for spec in [
            serde_json::json!({
                "name": POOL_BESIDE, "image": "bench-echo", "executionMode": "POOL",
                "endpointUrl": format!("http://127.0.0.1:{}/invoke", echo.port),
                "concurrency": concurrency,
            }),
            serde_json::json!({
                "name": STDIO_FUNCTION, "image": "cat", "executionMode": "DEPLOYMENT",
                "runtimeMode": "STDIO", "command": ["cat"], "concurrency": concurrency,
            }),
        ] {
            self.register_spec(&control_plane, &spec)?;
        }
        self.register_warm_deployment(&control_plane)?;
        let replica = self.until_replicas(&mut control_plane, DEPLOYMENT_FUNCTION, 1)?;
        replicas.add(replica.iter().copied());
        let replica = replica[0];

        // Before the warm rows, whose records would make every fork dearer.
        let mut stdio = Vec::new();
        for repetition in 1..=self.plan.repetitions {
            for concurrency in STDIO_CONCURRENCIES {
                stdio.push(self.stdio_pair(&control_plane, concurrency, repetition)?);
            }
        }

        let mut warm = Vec::new();
        for repetition in 1..=self.plan.repetitions {
            for &concurrency in &self.plan.concurrencies {
                // Alternating which side goes first, so a drift of the machine within a
                // repetition does not always favour the same one.
                let mut sides = [
                    (POOL_BESIDE, echo.guard.pid()),
                    (DEPLOYMENT_FUNCTION, replica),
                ];
                if repetition % 2 == 0 {
                    sides.reverse();
                }
                let mut measured = Vec::new();
                for (function, function_pid) in sides {
                    measured.push(self.invoke_load(
                        &control_plane,
                        function,
                        Some(function_pid),
                        concurrency,
                    )?);
                }
                if repetition % 2 == 0 {
                    measured.reverse();
                }
                let deployment = measured.pop().expect("two sides");
                let pool = measured.pop().expect("two sides");
                println!(
                    "bench: [{repetition}/{}] warm       c={concurrency:<3} POOL {:>7.0} req/s p50 {:>7.1} us | DEPLOYMENT {:>7.0} req/s p50 {:>7.1} us  errors {}",
                    self.plan.repetitions,
                    pool.req_per_sec,
                    pool.p50_us,
                    deployment.req_per_sec,
                    deployment.p50_us,
                    pool.errors + deployment.errors
                );
                warm.push(PairRun {
                    concurrency,
                    repetition,
                    base: pool,
                    measured: deployment,
                    control_plane_rss_kb: memory_of(control_plane.guard.pid())?.rss_kb,
                });
            }
        }

        let stdio_after_warm = vec![self.stdio_pair(&control_plane, 1, 1)?];
        control_plane.guard.still_running()?;
        control_plane.guard.terminate(STOP_WAIT);
        drop(control_plane);
        drop(replicas);
        drop(echo);
        Ok(WarmAndStdio {
            warm,
            stdio,
            stdio_after_warm,
        })
    }

    /// One STDIO run at `concurrency` and its floor.
    fn stdio_pair(
        &self,
        control_plane: &ControlPlane,
        concurrency: usize,
        repetition: usize,
    ) -> Result<PairRun> {
        let invocation = self.invoke_load(control_plane, STDIO_FUNCTION, None, concurrency)?;
        let control_plane_rss_kb = memory_of(control_plane.guard.pid())?.rss_kb;
        let floor = self.spawn_floor(invocation.requests, concurrency)?;
        println!(
            "bench: [{repetition}/{}] STDIO cat  c={concurrency:<3} floor {:>6.0}/s p50 {:>7.1} us | invocation {:>6.0}/s p50 {:>7.1} us (control plane RSS {:.1} MiB)  errors {}",
            self.plan.repetitions,
            floor.req_per_sec,
            floor.p50_us,
            invocation.req_per_sec,
            invocation.p50_us,
            mib(control_plane_rss_kb),
            floor.errors + invocation.errors
        );
        Ok(PairRun {
            concurrency,
            repetition,
            base: floor,
            measured: invocation,
            control_plane_rss_kb,
        })
    }

    /// loadgen's closed loop of sync invocations of `function`, watching the control
    /// plane and, when given, the function's own process.
    fn invoke_load(
        &self,
        control_plane: &ControlPlane,
        function: &str,
        function_pid: Option<u32>,
        concurrency: usize,
    ) -> Result<Measure> {
        let url = format!(
            "http://{}/v1/functions/{function}:invoke",
            control_plane.api
        );
        let cp = control_plane.guard.pid();
        let mut args = self.closed_args(&url, INVOKE_BODY, SUCCESS, concurrency);
        for pid in std::iter::once(cp).chain(function_pid) {
            args.extend(["--watch-pid".to_owned(), pid.to_string()]);
        }
        let report = self.loadgen(&args)?;
        let cpu: Vec<LoadgenCpu> = serde_json::from_value(report["cpu"].clone())?;
        let latency: LoadgenLatency = serde_json::from_value(report["latencyUs"].clone())?;
        let requests = number(&report, "requests")?;
        let per_request = |pid: u32| -> Result<f64> {
            let seconds = cpu
                .iter()
                .find(|cpu| cpu.pid == pid)
                .map(|cpu| cpu.seconds)
                .ok_or_else(|| format!("loadgen reported no CPU time of pid {pid}"))?;
            Ok(if requests > 0.0 {
                seconds * 1e6 / requests
            } else {
                0.0
            })
        };
        Ok(Measure {
            requests: requests as u64,
            errors: number(&report, "errors")? as u64,
            req_per_sec: number(&report, "reqPerSec")?,
            p50_us: latency.p50,
            p99_us: latency.p99,
            driver_cpu_us: per_request(cp)?,
            function_cpu_us: function_pid.map(per_request).transpose()?,
        })
    }

    /// `spawn-floor` on the servers' core: `count` spawns of `cat` at `concurrency`,
    /// after a warm-up of the share of the count the invocations' warm-up had.
    fn spawn_floor(&self, count: u64, concurrency: usize) -> Result<Measure> {
        let share = self.plan.warmup_secs / self.plan.duration_secs.max(f64::EPSILON);
        let warmup = ((count as f64 * share) as u64).max(concurrency as u64);
        let mut command = pinned_command(&self.bins.spawn_floor, self.pinning.servers);
        command.args([
            "--count".to_owned(),
            count.to_string(),
            "--concurrency".to_owned(),
            concurrency.to_string(),
            "--warmup".to_owned(),
            warmup.to_string(),
            "--input".to_owned(),
            DISPATCH_BODY.to_owned(),
            "--".to_owned(),
            "cat".to_owned(),
        ]);
        let report = json_report(&mut command, "spawn-floor")?;
        let latency: LoadgenLatency = serde_json::from_value(report["latencyUs"].clone())?;
        let iterations = number(&report, "iterations")?;
        let per_spawn = |field: &str| -> Result<f64> {
            let seconds = number(&report, field)?;
            Ok(if iterations > 0.0 {
                seconds * 1e6 / iterations
            } else {
                0.0
            })
        };
        Ok(Measure {
            requests: iterations as u64,
            errors: number(&report, "errors")? as u64,
            req_per_sec: number(&report, "perSec")?,
            p50_us: latency.p50,
            p99_us: latency.p99,
            driver_cpu_us: per_spawn("selfCpuSecs")?,
            function_cpu_us: Some(per_spawn("childrenCpuSecs")?),
        })
    }

    /// Invocations of a function at zero replicas, each after waiting for zero, on a
    /// control plane with short scaling windows.
    fn cold_starts(&self, count: usize) -> Result<Vec<ColdStart>> {
        let mut replicas = Replicas::default();
        let mut control_plane = self.replica_plane("control-plane-cold.log", &QUICK_SCALING)?;
        self.register_spec(
            &control_plane,
            &serde_json::json!({
                "name": COLD_FUNCTION, "image": "bench-echo", "executionMode": "DEPLOYMENT",
                "command": [self.bins.echo.display().to_string()],
                "scalingConfig": {"strategy": "INTERNAL", "minReplicas": 0, "maxReplicas": 1},
            }),
        )?;
        let mut starts = Vec::new();
        for number in 1..=count {
            self.until_replicas(&mut control_plane, COLD_FUNCTION, 0)?;
            let (first_invoke_ms, id) = self.timed_invoke(&control_plane, COLD_FUNCTION)?;
            replicas.add(function_processes(control_plane.guard.pid(), COLD_FUNCTION));
            let (warm_invoke_ms, _) = self.timed_invoke(&control_plane, COLD_FUNCTION)?;
            let path = format!("/v1/executions/{id}");
            let (status, body) = self
                .http
                .call(Method::GET, control_plane.api, &path, None)?;
            if status != StatusCode::OK {
                return Err(format!("GET {path} answered {status}: {body}").into());
            }
            let record: Value = serde_json::from_str(&body)?;
            let start = ColdStart {
                first_invoke_ms,
                cold_start: record["coldStart"] == true,
                init_duration_ms: record["initDurationMs"].as_u64(),
                warm_invoke_ms,
            };
            println!(
                "bench: [{number}/{count}] from zero: first invocation {first_invoke_ms:.1} ms, \
                 initDurationMs {}, beyond it {} ms; the next one {warm_invoke_ms:.1} ms",
                optional(start.init_duration_ms.map(|ms| ms as f64), 0),
                optional(start.beyond_init_ms(), 1),
            );
            starts.push(start);
        }
        control_plane.guard.still_running()?;
        control_plane.guard.terminate(STOP_WAIT);
        drop(control_plane);
        drop(replicas);
        Ok(starts)
    }

    /// One sync invocation on a fresh connection: how long it took, in milliseconds,
    /// and its execution id. Anything but a success is an error.
    fn timed_invoke(&self, control_plane: &ControlPlane, function: &str) -> Result<(f64, String)> {
        let path = format!("/v1/functions/{function}:invoke");
        let started = Instant::now();
        let (status, body) =
            self.http
                .call(Method::POST, control_plane.api, &path, Some(INVOKE_BODY))?;
        let ms = started.elapsed().as_secs_f64() * 1_000.0;
        if status != StatusCode::OK || !body.contains(SUCCESS) {
            return Err(format!("POST {path} answered {status}: {body}").into());
        }
        let answer: Value = serde_json::from_str(&body)?;
        let id = answer["executionId"]
            .as_str()
            .ok_or_else(|| format!("no executionId in {body}"))?;
        Ok((ms, id.to_owned()))
    }
}
