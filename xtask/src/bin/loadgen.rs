//! `loadgen`: the load generator of `cargo xtask bench`, printing one JSON report on
//! stdout.
//!
//! Two modes:
//!
//! - `loadgen closed`: a closed loop. Each of `--concurrency` workers owns one HTTP/1.1
//!   keep-alive connection and sends the same request again as soon as the previous
//!   answer is read, through a warm-up and then a measured window. Latencies of the
//!   requests started inside the window go into an HDR histogram (nanoseconds, three
//!   significant digits); `requests` counts the answered ones, `errors` counts non-2xx
//!   answers, answers without the `--expect` text, and transport failures, warm-up
//!   included (an error anywhere makes the run suspect).
//! - `loadgen async`: enqueues `--count` invocations with `--concurrency` workers as
//!   fast as it can (202 expected), then polls the management port's
//!   `/actuator/prometheus` until the function's terminal counters (success, error,
//!   timeout) grew by the number enqueued, then reads a sample of the execution records
//!   for their completion latency (`finishedAt - createdAt`, milliseconds).
//!
//! `--watch-pid PID` (repeatable) reports each process's CPU time (utime + stime from
//! `/proc/PID/stat`) spent during the measured window, so the caller can divide it by
//! the requests of exactly that window.
//!
//! It must not be what limits a run: one current-thread runtime (the bench pins it to
//! its own core), no task spawned (every worker is a future of one `join_all`, driving
//! its own connection), one prepared request cloned per send (the body is a shared
//! `Bytes`), responses drained frame by frame unless `--expect` needs the whole body.

#[path = "loadgen/cpu.rs"]
mod cpu;
#[path = "loadgen/http.rs"]
mod http;
#[path = "../proc_stat.rs"]
#[allow(
    dead_code,
    reason = "shared with the bench and spawn-floor; loadgen reads only its own CPU fields"
)]
mod proc_stat;

use std::cell::Cell;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::{Args, Parser, Subcommand};
use futures::future::join_all;
use hdrhistogram::Histogram;
use http_body_util::BodyExt;
use hyper::{Method, StatusCode};
use serde::{Deserialize, Serialize};
use tokio::time::sleep_until;

use cpu::CpuMeter;
use http::{Answer, Target, Template, connect, driven, exchange, fetch, parse_url};
use proc_stat::ticks_per_second;

/// How long after its planned end a run may take to finish its last requests before it
/// is declared stuck.
const GRACE: Duration = Duration::from_secs(10);

#[derive(Debug, Parser)]
#[command(name = "loadgen", about = "The load generator of `cargo xtask bench`")]
struct Cli {
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Debug, Subcommand)]
enum Mode {
    /// Closed loop: each worker sends the next request when the previous one is answered.
    Closed(ClosedArgs),
    /// Enqueue N invocations, then wait until every one is terminal.
    Async(AsyncArgs),
}

#[derive(Debug, Args)]
struct ClosedArgs {
    /// `http://host:port/path`.
    #[arg(long)]
    url: String,
    #[arg(long, default_value = "POST")]
    method: Method,
    /// The request body, sent as is.
    #[arg(long, default_value = "")]
    body: String,
    /// A request header, `Name: value` (repeatable).
    #[arg(long = "header")]
    headers: Vec<String>,
    /// Workers, each with its own keep-alive connection.
    #[arg(long, default_value_t = 1)]
    concurrency: usize,
    /// Seconds of load before the measured window.
    #[arg(long, default_value_t = 1.0)]
    warmup_secs: f64,
    /// Seconds of the measured window.
    #[arg(long, default_value_t = 5.0)]
    duration_secs: f64,
    /// Text every answer body must contain to count as a success (a sync invoke
    /// answers 200 whatever the execution's status).
    #[arg(long)]
    expect: Option<String>,
    /// A process whose CPU time over the measured window is reported (repeatable).
    #[arg(long = "watch-pid")]
    watch_pids: Vec<u32>,
}

#[derive(Debug, Args)]
struct AsyncArgs {
    /// The API base URL, `http://host:port`.
    #[arg(long)]
    api: String,
    /// The management base URL (for `/actuator/prometheus`).
    #[arg(long)]
    management: String,
    /// The function to enqueue.
    #[arg(long)]
    function: String,
    /// The invocation body.
    #[arg(long, default_value = r#"{"input":{"message":"hello"}}"#)]
    body: String,
    /// How many invocations to enqueue.
    #[arg(long)]
    count: u64,
    /// Enqueueing workers, each with its own keep-alive connection.
    #[arg(long, default_value_t = 1)]
    concurrency: usize,
    /// How many execution records to read for the completion latency.
    #[arg(long, default_value_t = 500)]
    sample: usize,
    /// Milliseconds between two reads of the terminal counters.
    #[arg(long, default_value_t = 5)]
    poll_ms: u64,
    /// Give up when not every execution is terminal after this many seconds.
    #[arg(long, default_value_t = 120.0)]
    timeout_secs: f64,
    /// A process whose CPU time from the first enqueue to the last completion is
    /// reported (repeatable).
    #[arg(long = "watch-pid")]
    watch_pids: Vec<u32>,
}

type Error = Box<dyn std::error::Error + Send + Sync>;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("loadgen: cannot start a runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let report = runtime.block_on(async {
        match cli.mode {
            Mode::Closed(args) => run_closed(args)
                .await
                .and_then(|report| Ok(serde_json::to_string(&report)?)),
            Mode::Async(args) => run_async(args)
                .await
                .and_then(|report| Ok(serde_json::to_string(&report)?)),
        }
    });
    match report {
        Ok(json) => {
            println!("{json}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("loadgen: {error}");
            ExitCode::FAILURE
        }
    }
}

// ---------------------------------------------------------------------------------------
// Reports

/// Latency percentiles, in microseconds.
#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
struct LatencyUs {
    p50: f64,
    p90: f64,
    p99: f64,
    max: f64,
}

impl LatencyUs {
    fn of(histogram: &Histogram<u64>, unit_ns: f64) -> Self {
        if histogram.is_empty() {
            return Self::default();
        }
        let us = |value: u64| value as f64 * unit_ns / 1_000.0;
        Self {
            p50: us(histogram.value_at_quantile(0.50)),
            p90: us(histogram.value_at_quantile(0.90)),
            p99: us(histogram.value_at_quantile(0.99)),
            max: us(histogram.max()),
        }
    }
}

/// CPU time one watched process spent in the measured window.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct CpuSpent {
    pid: u32,
    seconds: f64,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct ClosedReport {
    concurrency: usize,
    window_secs: f64,
    requests: u64,
    errors: u64,
    req_per_sec: f64,
    latency_us: LatencyUs,
    cpu: Vec<CpuSpent>,
    /// loadgen's own CPU time in the window: near `windowSecs`, it was the bottleneck.
    self_cpu_secs: f64,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct AsyncReport {
    concurrency: usize,
    count: u64,
    enqueued: u64,
    /// Enqueues that were not answered 202, plus executions that did not end in success.
    errors: u64,
    enqueue_secs: f64,
    enqueue_per_sec: f64,
    /// From the first enqueue to the last execution terminal.
    total_secs: f64,
    completions_per_sec: f64,
    /// `finishedAt - createdAt` of the sampled records (millisecond timestamps).
    completion_latency_us: LatencyUs,
    sampled: usize,
    cpu: Vec<CpuSpent>,
    self_cpu_secs: f64,
}

// ---------------------------------------------------------------------------------------
// Closed loop

fn latency_histogram() -> Histogram<u64> {
    // 1 ns to 10 minutes, three significant digits.
    Histogram::new_with_bounds(1, 600_000_000_000, 3).expect("valid histogram bounds")
}

/// What one closed-loop worker saw.
struct WorkerTally {
    requests: u64,
    errors: u64,
    latency_ns: Histogram<u64>,
}

/// The measured window: requests started in `[start, end)` are measured; none start
/// after `end`.
#[derive(Clone, Copy)]
struct Window {
    start: tokio::time::Instant,
    end: tokio::time::Instant,
}

async fn closed_worker(
    target: &Target,
    template: &Template,
    expect: Option<&[u8]>,
    window: Window,
) -> WorkerTally {
    let mut tally = WorkerTally {
        requests: 0,
        errors: 0,
        latency_ns: latency_histogram(),
    };
    let start = window.start.into_std();
    let end = window.end.into_std();
    while Instant::now() < end {
        let (mut sender, driver) = match connect(&target.authority).await {
            Ok(connection) => connection,
            Err(_) => {
                // Nothing listens: counting this once and stopping beats spinning.
                tally.errors += 1;
                return tally;
            }
        };
        let work = async {
            loop {
                let sent = Instant::now();
                if sent >= end {
                    return;
                }
                match exchange(&mut sender, template, expect).await {
                    Ok(Answer::Ok) => {
                        if sent >= start {
                            let nanos =
                                u64::try_from(sent.elapsed().as_nanos()).unwrap_or(u64::MAX);
                            tally.latency_ns.saturating_record(nanos);
                            tally.requests += 1;
                        }
                    }
                    Ok(Answer::Refused) => tally.errors += 1,
                    Err(_) => {
                        tally.errors += 1;
                        return;
                    }
                }
            }
        };
        if driven(driver, work).await.is_none() {
            // The server closed the connection under a request.
            tally.errors += 1;
        }
    }
    tally
}

async fn run_closed(args: ClosedArgs) -> Result<ClosedReport, Error> {
    if args.concurrency == 0 {
        return Err("--concurrency must be at least 1".into());
    }
    let target = parse_url(&args.url)?;
    let template = Template::new(args.method, &target, &args.headers, Bytes::from(args.body))?;
    let expect = args.expect.as_deref().map(str::as_bytes);
    let now = tokio::time::Instant::now();
    let window = Window {
        start: now + Duration::from_secs_f64(args.warmup_secs),
        end: now
            + Duration::from_secs_f64(args.warmup_secs)
            + Duration::from_secs_f64(args.duration_secs),
    };
    let per_second = ticks_per_second();
    let workers =
        join_all((0..args.concurrency).map(|_| closed_worker(&target, &template, expect, window)));
    let meter = async {
        sleep_until(window.start).await;
        let meter = CpuMeter::start(&args.watch_pids, per_second)?;
        sleep_until(window.end).await;
        meter.stop()
    };
    let (tallies, cpu) = tokio::select! {
        done = futures::future::join(workers, meter) => done,
        () = sleep_until(window.end + GRACE) => {
            return Err(format!("requests still unanswered {GRACE:?} after the window").into());
        }
    };
    let (cpu, self_cpu_secs) = cpu?;
    let mut latency = latency_histogram();
    let (mut requests, mut errors) = (0, 0);
    for tally in &tallies {
        requests += tally.requests;
        errors += tally.errors;
        latency.add(&tally.latency_ns)?;
    }
    let window_secs = (window.end - window.start).as_secs_f64();
    Ok(ClosedReport {
        concurrency: args.concurrency,
        window_secs,
        requests,
        errors,
        req_per_sec: requests as f64 / window_secs,
        latency_us: LatencyUs::of(&latency, 1.0),
        cpu,
        self_cpu_secs,
    })
}

// ---------------------------------------------------------------------------------------
// Async: enqueue, then wait for every execution

#[derive(Deserialize)]
struct Enqueued<'a> {
    #[serde(rename = "executionId", borrow)]
    execution_id: &'a str,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Record {
    created_at: String,
    finished_at: Option<String>,
}

/// The terminal counters of one function, summed: success and the rest.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Terminal {
    success: u64,
    failed: u64,
}

impl Terminal {
    fn total(self) -> u64 {
        self.success + self.failed
    }
}

/// The function's `function_{success,error,timeout}_total` in a Prometheus text page.
fn parse_terminal(page: &str, function: &str) -> Terminal {
    let label = format!("function=\"{function}\"");
    let mut terminal = Terminal::default();
    for line in page.lines() {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Some((name, labels)) = series.split_once('{') else {
            continue;
        };
        if !labels
            .split(',')
            .any(|pair| pair.trim_end_matches('}') == label)
        {
            continue;
        }
        let Ok(value) = value.parse::<f64>() else {
            continue;
        };
        let value = value as u64;
        match name {
            "function_success_total" => terminal.success += value,
            "function_error_total" | "function_timeout_total" => terminal.failed += value,
            _ => {}
        }
    }
    terminal
}

async fn read_terminal(
    target: &Target,
    template: &Template,
    function: &str,
) -> Result<Terminal, Error> {
    let (status, body) = fetch(target, template).await?;
    if status != StatusCode::OK {
        return Err(format!("GET /actuator/prometheus answered {status}").into());
    }
    Ok(parse_terminal(std::str::from_utf8(&body)?, function))
}

/// What one enqueueing worker saw: the execution ids it got, by invocation number.
struct EnqueueTally {
    ids: Vec<(u64, String)>,
    errors: u64,
}

async fn enqueue_worker(
    target: &Target,
    template: &Template,
    next: &Cell<u64>,
    count: u64,
) -> EnqueueTally {
    let mut tally = EnqueueTally {
        ids: Vec::new(),
        errors: 0,
    };
    while next.get() < count {
        let Ok((mut sender, driver)) = connect(&target.authority).await else {
            tally.errors += 1;
            return tally;
        };
        let work = async {
            loop {
                let number = next.get();
                if number >= count {
                    return;
                }
                next.set(number + 1);
                let answer = async {
                    sender.ready().await?;
                    let response = sender.send_request(template.request()).await?;
                    let status = response.status();
                    let body = response.into_body().collect().await?.to_bytes();
                    Ok::<_, Error>((status, body))
                };
                match answer.await {
                    Ok((StatusCode::ACCEPTED, body)) => {
                        match serde_json::from_slice::<Enqueued<'_>>(&body) {
                            Ok(enqueued) => {
                                tally.ids.push((number, enqueued.execution_id.to_owned()));
                            }
                            Err(_) => tally.errors += 1,
                        }
                    }
                    Ok(_) => tally.errors += 1,
                    Err(_) => {
                        tally.errors += 1;
                        return;
                    }
                }
            }
        };
        if driven(driver, work).await.is_none() {
            tally.errors += 1;
        }
    }
    tally
}

/// `count` items spread evenly over `items` (all of them when there are fewer).
fn evenly<T>(items: &[T], count: usize) -> Vec<&T> {
    if items.len() <= count {
        return items.iter().collect();
    }
    (0..count)
        .map(|i| &items[i * items.len() / count])
        .collect()
}

async fn run_async(args: AsyncArgs) -> Result<AsyncReport, Error> {
    if args.concurrency == 0 || args.count == 0 {
        return Err("--concurrency and --count must be at least 1".into());
    }
    let api = parse_url(&args.api)?;
    let management = parse_url(&args.management)?;
    let enqueue = Template::new(Method::POST, &api, &[], Bytes::from(args.body.clone())).and_then(
        |mut template| {
            template.path = format!("/v1/functions/{}:enqueue", args.function).parse()?;
            Ok(template)
        },
    )?;
    let scrape = Template::get(&management, "/actuator/prometheus")?;
    let baseline = read_terminal(&management, &scrape, &args.function).await?;

    let per_second = ticks_per_second();
    let meter = CpuMeter::start(&args.watch_pids, per_second)?;
    let started = Instant::now();
    let next = Cell::new(0);
    let tallies =
        join_all((0..args.concurrency).map(|_| enqueue_worker(&api, &enqueue, &next, args.count)))
            .await;
    let enqueue_secs = started.elapsed().as_secs_f64();
    let mut ids: Vec<(u64, String)> = Vec::with_capacity(args.count as usize);
    let mut errors = 0;
    for tally in tallies {
        ids.extend(tally.ids);
        errors += tally.errors;
    }
    let enqueued = ids.len() as u64;

    let deadline = started + Duration::from_secs_f64(args.timeout_secs);
    let poll = Duration::from_millis(args.poll_ms);
    let finished = loop {
        let terminal = read_terminal(&management, &scrape, &args.function).await?;
        if terminal.total() >= baseline.total() + enqueued {
            break terminal;
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "{} of {enqueued} executions still not terminal after {}s",
                baseline.total() + enqueued - terminal.total(),
                args.timeout_secs
            )
            .into());
        }
        tokio::time::sleep(poll).await;
    };
    let total_secs = started.elapsed().as_secs_f64();
    let (cpu, self_cpu_secs) = meter.stop()?;
    errors += finished.failed - baseline.failed;

    ids.sort_unstable_by_key(|(number, _)| *number);
    let mut latency = latency_histogram();
    let sample = evenly(&ids, args.sample);
    for (_, id) in &sample {
        let record = Template::get(&api, &format!("/v1/executions/{id}"))?;
        let (status, body) = fetch(&api, &record).await?;
        if status != StatusCode::OK {
            return Err(format!("GET /v1/executions/{id} answered {status}").into());
        }
        let record: Record = serde_json::from_slice(&body)?;
        let finished_at = record
            .finished_at
            .ok_or_else(|| format!("execution {id} has no finishedAt"))?;
        let created_at: jiff::Timestamp = record.created_at.parse()?;
        let finished_at: jiff::Timestamp = finished_at.parse()?;
        let millis = finished_at.duration_since(created_at).as_millis();
        latency.saturating_record(u64::try_from(millis).unwrap_or(0));
    }

    Ok(AsyncReport {
        concurrency: args.concurrency,
        count: args.count,
        enqueued,
        errors,
        enqueue_secs,
        enqueue_per_sec: enqueued as f64 / enqueue_secs,
        total_secs,
        completions_per_sec: enqueued as f64 / total_secs,
        completion_latency_us: LatencyUs::of(&latency, 1_000_000.0),
        sampled: sample.len(),
        cpu,
        self_cpu_secs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminal_counters_are_read_for_the_one_function() {
        let page = "\
# HELP function_success Executions that ended in success.
# TYPE function_success counter
function_success_total{function=\"bench-pool\"} 1200
function_success_total{function=\"bench-pool-2\"} 7
function_error_total{function=\"bench-pool\"} 3
function_timeout_total{function=\"bench-pool\"} 1
function_enqueue_total{function=\"bench-pool\"} 1300
function_latency_ms_bucket{le=\"1.0\",function=\"bench-pool\"} 1000
";
        assert_eq!(
            parse_terminal(page, "bench-pool"),
            Terminal {
                success: 1200,
                failed: 4
            }
        );
        assert_eq!(parse_terminal(page, "other"), Terminal::default());
    }

    #[test]
    fn samples_spread_over_the_whole_run() {
        let items: Vec<u32> = (0..10).collect();
        assert_eq!(evenly(&items, 5), [&0, &2, &4, &6, &8]);
        assert_eq!(evenly(&items, 20).len(), 10);
    }

    #[test]
    fn a_latency_histogram_reports_microseconds() {
        let mut histogram = latency_histogram();
        for micros in 1..=100 {
            histogram.record(micros * 1_000).unwrap();
        }
        let latency = LatencyUs::of(&histogram, 1.0);
        assert!((latency.p50 - 50.0).abs() < 0.1, "{latency:?}");
        assert!((latency.p99 - 99.0).abs() < 0.1, "{latency:?}");
        assert!((latency.max - 100.0).abs() < 0.1, "{latency:?}");
    }
}
