//! The scenarios, one loadgen run's result, and the rows (medians and ratios) the report shows.

use super::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub(super) enum Scenario {
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
    pub(super) const ALL: [Scenario; 5] = [
        Scenario::DirectEcho,
        Scenario::BareProxy,
        Scenario::SyncLocal,
        Scenario::SyncPool,
        Scenario::AsyncPool,
    ];

    pub(super) fn name(self) -> &'static str {
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
pub(super) struct RunResult {
    pub(super) scenario: Scenario,
    pub(super) concurrency: usize,
    pub(super) repetition: usize,
    /// Answered requests in the window; for async, executions enqueued.
    pub(super) requests: u64,
    pub(super) errors: u64,
    /// For async: completions per second from the first enqueue to the last terminal.
    pub(super) req_per_sec: f64,
    /// For async: of the completion latency.
    pub(super) p50_us: f64,
    pub(super) p99_us: f64,
    pub(super) enqueue_per_sec: Option<f64>,
    pub(super) control_plane_cpu_secs: f64,
    pub(super) echo_cpu_secs: f64,
    /// loadgen's own CPU time: close to `window_secs`, loadgen limited the run.
    pub(super) loadgen_cpu_secs: f64,
    /// The measured window (for async: first enqueue to last terminal).
    pub(super) window_secs: f64,
    pub(super) peak_rss_kb: u64,
    pub(super) rss_kb: u64,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct LoadgenLatency {
    pub(super) p50: f64,
    pub(super) p99: f64,
}

/// The processes whose CPU time a run reports.
#[derive(Debug, Clone, Copy)]
pub(super) struct Pids {
    /// The control plane, or the bare proxy in its run.
    pub(super) control_plane: u32,
    pub(super) echo: u32,
}

#[derive(Debug, Deserialize)]
pub(super) struct LoadgenCpu {
    pub(super) pid: u32,
    pub(super) seconds: f64,
}

impl RunResult {
    pub(super) fn from_loadgen(
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
    pub(super) fn busy_percent(&self, seconds: f64) -> f64 {
        if self.window_secs > 0.0 {
            seconds * 100.0 / self.window_secs
        } else {
            0.0
        }
    }

    pub(super) fn cpu_us_per_request(&self, seconds: f64) -> f64 {
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
pub(super) struct Row {
    pub(super) scenario: Scenario,
    pub(super) concurrency: usize,
    pub(super) req_per_sec: f64,
    pub(super) p50_us: f64,
    pub(super) p99_us: f64,
    /// Summed over the repetitions.
    pub(super) errors: u64,
    pub(super) enqueue_per_sec: Option<f64>,
    pub(super) control_plane_cpu_us_per_request: f64,
    pub(super) echo_cpu_us_per_request: f64,
    /// loadgen's CPU over the window, in percent of its core: near 100, loadgen was the
    /// limit and the row says little about the servers.
    pub(super) loadgen_busy_percent: f64,
    /// The control plane's and the echo's CPU over the window, in percent of one core.
    pub(super) servers_busy_percent: f64,
    /// The highest VmHWM seen after a repetition.
    pub(super) peak_rss_kb: u64,
    /// VmRSS after the last repetition.
    pub(super) rss_kb: u64,
    /// Against the direct echo at the same concurrency.
    pub(super) throughput_vs_echo: Option<f64>,
    pub(super) p50_vs_echo: Option<f64>,
    /// Control-plane CPU per request over the echo endpoint's CPU per request (direct).
    pub(super) cpu_vs_echo: Option<f64>,
}

/// The median; the mean of the middle two for an even count. `None` when empty.
pub(super) fn median(values: &[f64]) -> Option<f64> {
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

pub(super) fn ratio(value: f64, base: f64) -> Option<f64> {
    (base > 0.0).then(|| value / base)
}

pub(super) fn rows(runs: &[RunResult]) -> Vec<Row> {
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
pub(super) struct MemoryResult {
    pub(super) concurrency: usize,
    pub(super) secs: f64,
    /// Finished executions created in the measured load (all retained: TTL 5 minutes).
    pub(super) records: u64,
    pub(super) errors: u64,
    pub(super) rss_before_kb: u64,
    pub(super) rss_after_kb: u64,
    pub(super) peak_rss_kb: u64,
    /// RSS growth over the measured load divided by `records`.
    pub(super) bytes_per_record: f64,
    /// The output each record keeps.
    pub(super) output_bytes: usize,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Report {
    pub(super) mode: &'static str,
    pub(super) commit: String,
    pub(super) cores: usize,
    pub(super) pinning: String,
    pub(super) plan: Plan,
    pub(super) startup: Startup,
    /// The control plane after every scenario: it retained every record (TTL 5 minutes).
    pub(super) at_end: Memory,
    pub(super) rows: Vec<Row>,
    pub(super) memory: MemoryResult,
    pub(super) deployments: DeploymentsReport,
    pub(super) runs: Vec<RunResult>,
    pub(super) elapsed_secs: f64,
}

/// What makes a run worthless: errors, or a scenario that moved nothing.
pub(super) fn problems(report: &Report) -> Vec<String> {
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
