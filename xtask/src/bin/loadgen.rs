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

use std::cell::Cell;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::{Args, Parser, Subcommand};
use futures::future::join_all;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{self, Connection, SendRequest};
use hyper::header::{self, HeaderName, HeaderValue};
use hyper::{HeaderMap, Method, Request, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize};
use tokio::net::TcpStream;
use tokio::time::sleep_until;

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
type Sender = SendRequest<Full<Bytes>>;
type Driver = Connection<TokioIo<TcpStream>, Full<Bytes>>;

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
// Connections and requests

/// Where to connect and what to put in the request line.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Target {
    /// `host:port`.
    authority: String,
    /// Origin-form: path and query only, as HTTP/1.1 sends it to a server.
    path: Uri,
}

fn parse_url(url: &str) -> Result<Target, Error> {
    let uri: Uri = url.parse()?;
    if uri.scheme_str() != Some("http") {
        return Err(format!("only http:// URLs are supported: {url}").into());
    }
    let authority = uri.authority().ok_or_else(|| format!("no host in {url}"))?;
    let port = authority.port_u16().unwrap_or(80);
    let path = uri
        .path_and_query()
        .map_or("/", |path| path.as_str())
        .parse()?;
    Ok(Target {
        authority: format!("{}:{port}", authority.host()),
        path,
    })
}

/// The request every send of a worker repeats.
#[derive(Debug, Clone)]
struct Template {
    method: Method,
    path: Uri,
    headers: HeaderMap,
    body: Bytes,
}

impl Template {
    fn new(
        method: Method,
        target: &Target,
        headers: &[String],
        body: Bytes,
    ) -> Result<Self, Error> {
        let mut map = HeaderMap::new();
        map.insert(header::HOST, HeaderValue::from_str(&target.authority)?);
        if !body.is_empty() {
            map.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
        }
        for line in headers {
            let (name, value) = line
                .split_once(':')
                .ok_or_else(|| format!("a header is `Name: value`, got {line}"))?;
            map.insert(
                HeaderName::try_from(name.trim())?,
                HeaderValue::from_str(value.trim())?,
            );
        }
        Ok(Self {
            method,
            path: target.path.clone(),
            headers: map,
            body,
        })
    }

    fn get(target: &Target, path: &str) -> Result<Self, Error> {
        let mut template = Self::new(Method::GET, target, &[], Bytes::new())?;
        template.path = path.parse()?;
        Ok(template)
    }

    fn request(&self) -> Request<Full<Bytes>> {
        let mut request = Request::new(Full::new(self.body.clone()));
        *request.method_mut() = self.method.clone();
        *request.uri_mut() = self.path.clone();
        *request.headers_mut() = self.headers.clone();
        request
    }
}

async fn connect(authority: &str) -> Result<(Sender, Driver), Error> {
    let stream = TcpStream::connect(authority).await?;
    stream.set_nodelay(true)?;
    Ok(http1::handshake(TokioIo::new(stream)).await?)
}

/// Runs `work` while driving the connection its sender talks through; `None` when the
/// connection ended first.
async fn driven<T>(driver: Driver, work: impl Future<Output = T>) -> Option<T> {
    tokio::select! {
        output = work => Some(output),
        _closed = driver => None,
    }
}

/// What a request came back with.
enum Answer {
    /// The status was 2xx and the body held the expected text.
    Ok,
    /// An answer, but not a successful one.
    Refused,
}

/// Sends one request and reads its whole answer. `Err` means the connection is unusable.
async fn exchange(
    sender: &mut Sender,
    template: &Template,
    expect: Option<&[u8]>,
) -> Result<Answer, Error> {
    sender.ready().await?;
    let response = sender.send_request(template.request()).await?;
    let success = response.status().is_success();
    let mut body = response.into_body();
    let complete = match expect {
        Some(text) => contains(&body.collect().await?.to_bytes(), text),
        None => {
            while let Some(frame) = body.frame().await {
                frame?;
            }
            true
        }
    };
    Ok(if success && complete {
        Answer::Ok
    } else {
        Answer::Refused
    })
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty()
        || haystack
            .windows(needle.len())
            .any(|window| window == needle)
}

/// One request on a fresh connection, for the few calls outside the measured loops.
async fn fetch(target: &Target, template: &Template) -> Result<(StatusCode, Bytes), Error> {
    let (mut sender, driver) = connect(&target.authority).await?;
    let work = async {
        let response = sender.send_request(template.request()).await?;
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        Ok::<_, Error>((status, body))
    };
    driven(driver, work)
        .await
        .ok_or("the connection closed before the answer")?
}

// ---------------------------------------------------------------------------------------
// CPU time from /proc

/// utime + stime of `/proc/PID/stat`, in clock ticks.
fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    // The command name (field 2) is in parentheses and may hold spaces or parentheses:
    // fields are counted from after its last `)`. utime and stime are fields 14 and 15,
    // so the 12th and 13th after it.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

fn cpu_ticks(pid: u32) -> Result<u64, Error> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    parse_cpu_ticks(&stat).ok_or_else(|| format!("cannot read /proc/{pid}/stat: {stat}").into())
}

/// Clock ticks per second (`getconf CLK_TCK`; 100 on every Linux this runs on otherwise).
fn ticks_per_second() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|output| String::from_utf8(output.stdout).ok())
        .and_then(|text| text.trim().parse::<f64>().ok())
        .filter(|ticks| *ticks > 0.0)
        .unwrap_or(100.0)
}

/// CPU readings of the watched processes and of loadgen itself, taken at the start of
/// a window.
struct CpuMeter {
    pids: Vec<u32>,
    start: Vec<u64>,
    own_start: u64,
    per_second: f64,
}

impl CpuMeter {
    fn start(pids: &[u32], per_second: f64) -> Result<Self, Error> {
        Ok(Self {
            pids: pids.to_vec(),
            start: pids
                .iter()
                .map(|pid| cpu_ticks(*pid))
                .collect::<Result<_, _>>()?,
            own_start: cpu_ticks(std::process::id())?,
            per_second,
        })
    }

    /// The watched processes' CPU seconds since `start`, and loadgen's own.
    fn stop(self) -> Result<(Vec<CpuSpent>, f64), Error> {
        let own = cpu_ticks(std::process::id())?.saturating_sub(self.own_start);
        let watched = self
            .pids
            .iter()
            .zip(self.start)
            .map(|(pid, start)| {
                let spent = cpu_ticks(*pid)?.saturating_sub(start);
                Ok(CpuSpent {
                    pid: *pid,
                    seconds: spent as f64 / self.per_second,
                })
            })
            .collect::<Result<_, Error>>()?;
        Ok((watched, own as f64 / self.per_second))
    }
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
    fn cpu_time_is_utime_plus_stime() {
        let stat = "4242 (control-plane) S 1 4242 4242 0 -1 4194560 1234 0 0 0 \
                    250 75 0 0 20 0 9 0 123456 987654321 2048 18446744073709551615";
        assert_eq!(parse_cpu_ticks(stat), Some(325));
    }

    #[test]
    fn a_command_name_with_spaces_and_parentheses_does_not_shift_the_fields() {
        let stat = "77 (tokio (worker) 1) R 1 77 77 0 -1 0 0 0 0 0 10 5 0 0 20 0 1 0";
        assert_eq!(parse_cpu_ticks(stat), Some(15));
        assert_eq!(parse_cpu_ticks("77 (cut short) R 1"), None);
    }

    #[test]
    fn urls_become_an_address_and_an_origin_form_path() {
        let target = parse_url("http://127.0.0.1:8080/v1/functions/echo:invoke").unwrap();
        assert_eq!(target.authority, "127.0.0.1:8080");
        assert_eq!(target.path, "/v1/functions/echo:invoke");
        assert_eq!(parse_url("http://localhost").unwrap().path, "/");
        assert!(parse_url("https://127.0.0.1:8443/").is_err());
    }

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
