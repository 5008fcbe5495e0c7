//! `cargo xtask bench --startup`: how long a durable control plane takes to come back
//! after a crash with a large store, and what it then holds in memory. It fills a fresh
//! data directory through the API (a million finished executions, then a hundred
//! thousand queued ones with no scheduler to take them), kills the process with SIGKILL,
//! and starts it again on the same directory: the time to a healthy answer, the RSS,
//! and the queue depth it reports (every queued execution taken up).

use std::path::Path;
use std::time::Instant;

use serde::Serialize;

use super::{Bench, Method, Mode, Plan, StatusCode, Store, memory_of, mib, write_reports};
use crate::Result;

/// Finished executions to keep (`--quick`: a hundredth).
const RETAINED: u64 = 1_000_000;
/// Queued executions to leave.
const QUEUED: u64 = 100_000;
const FUNCTION: &str = "bench-startup";

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Report {
    retained: u64,
    queued_target: u64,
    queued_reported: Option<f64>,
    database_bytes: u64,
    fill_secs: f64,
    time_to_healthy_ms: f64,
    rss_kb: u64,
    idle_rss_kb_of_an_empty_store: u64,
}

/// `cargo xtask bench --startup [--quick]`.
pub(crate) fn run(root: &Path, mode: Mode) -> Result<()> {
    let scale = if mode == Mode::Quick { 100 } else { 1 };
    let (retained, queued) = (RETAINED / scale, QUEUED / scale);
    let bench = Bench::prepare(root, Plan::of(mode), Store::Sqlite)?;
    let dir = bench.out.join("data-startup");
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    let args = |scheduler: &str| -> Vec<String> {
        [
            "--store",
            "sqlite",
            "--data-dir",
            &dir.display().to_string(),
            "--execution-ttl",
            "PT24H",
            "--scheduler",
            scheduler,
        ]
        .map(String::from)
        .to_vec()
    };
    let fill_started = Instant::now();
    let empty_rss_kb;
    {
        let control_plane =
            bench.start_control_plane_under("control-plane-fill.log", &[], &args("background"))?;
        empty_rss_kb = control_plane.startup.idle_rss_kb;
        let spec = serde_json::json!({
            "name": FUNCTION, "image": "bench", "executionMode": "LOCAL",
            "concurrency": 64, "queueSize": retained.max(queued) + 1_000,
        });
        let (status, body) = bench.http.call(
            Method::POST,
            control_plane.api,
            "/v1/functions",
            Some(&spec.to_string()),
        )?;
        if status != StatusCode::CREATED {
            return Err(format!("registering {spec} answered {status}: {body}").into());
        }
        println!("bench: filling the store with {retained} finished executions");
        bench.loadgen(&[
            "async".into(),
            "--api".into(),
            format!("http://{}", control_plane.api),
            "--management".into(),
            format!("http://{}", control_plane.management),
            "--function".into(),
            FUNCTION.into(),
            "--count".into(),
            retained.to_string(),
            "--concurrency".into(),
            "64".into(),
            "--sample".into(),
            "10".into(),
            "--timeout-secs".into(),
            "900".into(),
        ])?;
    }
    {
        // No scheduler: what is enqueued now stays queued.
        let control_plane =
            bench.start_control_plane_under("control-plane-queue.log", &[], &args("manual"))?;
        println!("bench: leaving {queued} executions queued");
        let url = format!("{}/v1/functions/{FUNCTION}:enqueue", control_plane.api);
        let body = r#"{"input":{"message":"hello"}}"#;
        for _ in 0..queued {
            let (status, answer) =
                bench
                    .http
                    .call(Method::POST, control_plane.api, &url_path(&url), Some(body))?;
            if status != StatusCode::ACCEPTED {
                return Err(format!("enqueue answered {status}: {answer}").into());
            }
        }
        // Dropped: SIGKILL, no shutdown of any kind.
    }
    let fill_secs = fill_started.elapsed().as_secs_f64();
    let database_bytes = std::fs::metadata(dir.join("control-plane.sqlite3"))
        .map(|m| m.len())
        .unwrap_or(0);
    let control_plane =
        bench.start_control_plane_under("control-plane-restart.log", &[], &args("manual"))?;
    let rss_kb = memory_of(control_plane.guard.pid())?.rss_kb;
    let (_, metrics) = bench.http.call(
        Method::GET,
        control_plane.management,
        "/actuator/prometheus",
        None,
    )?;
    let queued_reported = metrics
        .lines()
        .find(|line| line.starts_with("function_queue_depth{") && line.contains(FUNCTION))
        .and_then(|line| line.rsplit(' ').next()?.parse().ok());
    let report = Report {
        retained,
        queued_target: queued,
        queued_reported,
        database_bytes,
        fill_secs,
        time_to_healthy_ms: control_plane.startup.time_to_healthy_ms,
        rss_kb,
        idle_rss_kb_of_an_empty_store: empty_rss_kb,
    };
    let markdown = format!(
        "## Start-up after a crash\n\n| retained | queued (reported) | database | ready after | RSS | RSS, empty store |\n|---|---|---|---|---|---|\n| {} | {} ({}) | {:.0} MiB | {:.0} ms | {:.1} MiB | {:.1} MiB |\n",
        report.retained,
        report.queued_target,
        report
            .queued_reported
            .map_or("-".to_owned(), |q| format!("{q:.0}")),
        report.database_bytes as f64 / 1024.0 / 1024.0,
        report.time_to_healthy_ms,
        mib(report.rss_kb),
        mib(report.idle_rss_kb_of_an_empty_store),
    );
    write_reports(root, &bench.out, "startup", &report, &markdown)?;
    Ok(())
}

/// The path of a URL (`host:port/path` -> `/path`).
fn url_path(url: &str) -> String {
    url.find('/')
        .map_or("/".to_owned(), |i| url[i..].to_owned())
}
