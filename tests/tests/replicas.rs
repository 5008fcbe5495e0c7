//! Functions that run themselves, end to end: the real `control-plane` binary with its
//! `process` provider runs `DEPLOYMENT` replicas of the Python test runtime
//! (`tests/runtime/fn_runtime.py`, which binds `PORT` and prints its port and pid as
//! its first two lines), scales them with the autoscaler (its windows made short by
//! flags), and stops them. A replica is found through the function's own log route:
//! `[replica N] <port>` and `[replica N] pid=<pid>`. Waits are polls with a bound.

#[path = "durability/client.rs"]
#[allow(
    dead_code,
    reason = "the durability tests' client, shared; these tests use part of it"
)]
mod client;
#[path = "replicas/oneshot.rs"]
mod oneshot;
#[path = "e2e/processes.rs"]
#[allow(
    dead_code,
    reason = "shared with e2e.rs; here the provider starts the runtime, not the test"
)]
mod processes;

use std::collections::BTreeMap;
use std::time::Duration;

use client::{Reply, call, http, metric_sum, post, until_all_terminal};
use futures::StreamExt;
use processes::{ControlPlane, eventually, eventually_within, runtime_script};
use reqwest::StatusCode;
use serde_json::{Value, json};

/// The autoscaler and the provider on a test's time scale: decisions every 50 ms, down
/// after half a second of less work, to zero after a second of none, restarts soon.
const QUICK_SCALING: [&str; 10] = [
    "--autoscale-interval",
    "PT0.05S",
    "--scale-down-window",
    "PT0.5S",
    "--scale-to-zero-after",
    "PT1S",
    "--replica-restart-backoff-base",
    "PT0.05S",
    "--replica-stop-grace",
    "PT2S",
];

/// A control plane and a client.
struct Platform {
    plane: ControlPlane,
    http: reqwest::Client,
}

/// One replica as its log tells it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Replica {
    number: u32,
    port: Option<u16>,
    pid: Option<u32>,
}

impl Platform {
    async fn start(args: &[&str]) -> Self {
        let http = http();
        let mut all = QUICK_SCALING.to_vec();
        all.extend_from_slice(args);
        let plane = ControlPlane::start(&all, &http).await;
        Self { plane, http }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.plane.api)
    }

    async fn register(&self, spec: &Value) -> Reply {
        post(&self.http, &self.url("/v1/functions"), spec, None)
            .await
            .expect("the control plane answers")
    }

    /// Registers `spec`, expecting 201.
    async fn registered(&self, spec: &Value) {
        let reply = self.register(spec).await;
        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
    }

    async fn function(&self, name: &str) -> Value {
        let reply = call(self.http.get(self.url(&format!("/v1/functions/{name}")))).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        reply.body
    }

    /// `replicas.{desired, ready}` of the function.
    async fn replica_counts(&self, name: &str) -> (u64, u64) {
        let view = self.function(name).await;
        let counts = &view["replicas"];
        (
            counts["desired"]
                .as_u64()
                .unwrap_or_else(|| panic!("{view}")),
            counts["ready"].as_u64().unwrap_or_else(|| panic!("{view}")),
        )
    }

    async fn until_replicas(&self, name: &str, desired: u64, ready: u64) {
        eventually_within(
            Duration::from_secs(30),
            &format!("{name} to have {desired} desired and {ready} ready replicas"),
            || async { (self.replica_counts(name).await == (desired, ready)).then_some(()) },
        )
        .await;
    }

    async fn logs(&self, name: &str) -> String {
        let url = self.url(&format!("/v1/functions/{name}/logs?tail=10000"));
        let reply = call(self.http.get(url)).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        reply.body.as_str().unwrap_or_default().to_owned()
    }

    /// The replicas the function's log names, by number, each with the port and pid
    /// it printed last (a restarted replica keeps its number).
    async fn replicas(&self, name: &str) -> Vec<Replica> {
        let mut found = BTreeMap::<u32, Replica>::new();
        for (number, text) in replica_lines(&self.logs(name).await) {
            let replica = found.entry(number).or_insert(Replica {
                number,
                port: None,
                pid: None,
            });
            if let Some(pid) = text.strip_prefix("pid=") {
                replica.pid = pid.trim().parse().ok();
            } else if let Ok(port) = text.trim().parse() {
                replica.port = Some(port);
            }
        }
        found.into_values().collect()
    }

    /// The pid of every replica process the function's log names, live or gone.
    async fn replica_pids(&self, name: &str) -> Vec<u32> {
        replica_lines(&self.logs(name).await)
            .filter_map(|(_, text)| text.strip_prefix("pid=")?.trim().parse().ok())
            .collect()
    }

    async fn enqueue(&self, name: &str, input: &Value) -> String {
        let url = self.url(&format!("/v1/functions/{name}:enqueue"));
        let reply = post(&self.http, &url, &json!({ "input": input }), None)
            .await
            .expect("the control plane answers");
        assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.body);
        reply.execution_id()
    }

    async fn invoke(&self, name: &str, input: &Value) -> Value {
        let url = self.url(&format!("/v1/functions/{name}:invoke"));
        let reply = post(&self.http, &url, &json!({ "input": input }), None)
            .await
            .expect("the control plane answers");
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        reply.body
    }

    async fn delete(&self, name: &str) {
        let reply = call(self.http.delete(self.url(&format!("/v1/functions/{name}")))).await;
        assert_eq!(reply.status, StatusCode::NO_CONTENT, "{}", reply.body);
    }

    /// The value of the metric `name` for `function` in `/actuator/prometheus`.
    async fn metric(&self, name: &str, function: &str) -> f64 {
        let labelled = format!("function=\"{function}\"");
        metric_sum(&self.http, &self.plane.management, name, &labelled).await
    }

    /// Waits until every execution of `ids` has ended, within `bound`: their records.
    async fn until_all_ended(&self, ids: &[String], bound: Duration) -> Vec<Value> {
        until_all_terminal(&self.http, &self.plane.api, ids, bound)
            .await
            .into_values()
            .collect()
    }

    /// Stops the control plane with SIGTERM and checks that it exited cleanly and
    /// took every replica in `pids` with it.
    async fn stop(self, pids: &[u32]) {
        let Self { mut plane, .. } = self;
        plane.terminate();
        assert!(plane.exit_status().await.success());
        until_gone(pids, "SIGTERM").await;
    }
}

/// The lines of a function's log as `(replica number, what it wrote)`.
fn replica_lines(log: &str) -> impl Iterator<Item = (u32, &str)> {
    log.lines().filter_map(|line| {
        let (number, text) = line.strip_prefix("[replica ")?.split_once("] ")?;
        Some((number.parse().ok()?, text))
    })
}

/// A `DEPLOYMENT` of the Python test runtime, with `overrides`.
fn runtime_deployment(name: &str, overrides: &Value) -> Value {
    let mut spec = json!({
        "name": name,
        "image": "fn-runtime",
        "executionMode": "DEPLOYMENT",
        "command": ["python3", runtime_script()],
    });
    for (key, value) in overrides.as_object().expect("an object") {
        spec[key] = value.clone();
    }
    spec
}

/// Whether `pid` is a live process (a zombie waiting for its reaper is not).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        // The state follows the command name, which is in parentheses.
        stat.rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X")
    })
}

async fn until_gone(pids: &[u32], after: &str) {
    eventually(
        &format!("replicas {pids:?} to be gone after {after}"),
        || async { pids.iter().all(|pid| !alive(*pid)).then_some(()) },
    )
    .await;
}

/// `kill -9 <pid>` (through `sh`, so no `unsafe` and no extra crate).
fn kill_9(pid: u32) {
    let status = std::process::Command::new("sh")
        .args(["-c", "kill -KILL \"$1\"", "sh", &pid.to_string()])
        .status()
        .expect("sh runs");
    assert!(status.success(), "kill -9 {pid} failed");
}

#[tokio::test]
async fn a_burst_scales_a_function_from_zero_to_several_replicas_and_back_to_zero() {
    const BURST: usize = 2000;
    let platform = Platform::start(&[]).await;
    let spec = runtime_deployment(
        "burst",
        &json!({
            "concurrency": 2,
            "queueSize": BURST,
            "scalingConfig": {
                "strategy": "INTERNAL",
                "minReplicas": 0,
                "maxReplicas": 4,
                "metrics": [{"type": "queue_depth", "target": "20"}],
            },
        }),
    );
    platform.registered(&spec).await;
    assert_eq!(platform.replica_counts("burst").await, (0, 0), "at rest");
    assert!(platform.replica_pids("burst").await.is_empty());

    let input = json!({"mode": "sleep", "ms": 2});
    let ids: Vec<String> = futures::stream::iter(0..BURST)
        .map(|_| platform.enqueue("burst", &input))
        .buffer_unordered(32)
        .collect()
        .await;
    let records = platform
        .until_all_ended(&ids, Duration::from_secs(120))
        .await;
    let failed: Vec<_> = records
        .iter()
        .filter(|record| record["status"] != "success")
        .collect();
    assert!(
        failed.is_empty(),
        "{} failed, e.g. {:?}",
        failed.len(),
        &failed[..1]
    );

    let pids = platform.replica_pids("burst").await;
    assert!(
        pids.len() >= 2,
        "a queue of {BURST} scaled out to several replicas, not {pids:?}"
    );
    let cold: Vec<_> = records
        .iter()
        .filter(|record| record["coldStart"] == true)
        .collect();
    assert!(
        !cold.is_empty(),
        "the first executions of new replicas are cold starts"
    );
    assert!(
        cold.len() <= pids.len(),
        "one cold start per replica at most: {} for {} replicas",
        cold.len(),
        pids.len()
    );
    assert!(
        cold.iter().all(|record| record["initDurationMs"].is_u64()),
        "a cold start says how long its replica took to get ready: {cold:?}"
    );
    assert_eq!(
        platform.metric("function_cold_start_total", "burst").await,
        cold.len() as f64,
        "the cold-start counter counts the cold executions"
    );
    assert_eq!(
        platform
            .metric("function_init_duration_ms_count", "burst")
            .await,
        cold.len() as f64,
        "each cold start's init duration is observed once"
    );

    // Idle: down to zero, and every replica's process gone.
    platform.until_replicas("burst", 0, 0).await;
    until_gone(&pids, "scaling to zero").await;

    // And back: the next invocation waits for a new replica and is its cold start.
    let reply = platform.invoke("burst", &json!({"back": true})).await;
    assert_eq!(reply["output"], json!({"back": true}), "{reply}");
    let id = reply["executionId"].as_str().expect("an execution id");
    let record = client::execution(&platform.http, &platform.plane.api, id)
        .await
        .expect("the execution is kept");
    assert_eq!(record["coldStart"], true, "{record}");
    let now = platform.replica_pids("burst").await;
    assert!(now.len() > pids.len(), "a new replica was started: {now:?}");
    platform.stop(&now).await;
}

#[tokio::test]
async fn a_replica_killed_under_load_is_replaced_and_its_in_flight_invocations_retried() {
    let platform = Platform::start(&[]).await;
    let spec = runtime_deployment(
        "steady",
        &json!({
            "concurrency": 2,
            "maxRetries": 3,
            "scalingConfig": {"strategy": "NONE", "minReplicas": 2, "maxReplicas": 2},
        }),
    );
    platform.registered(&spec).await;
    platform.until_replicas("steady", 2, 2).await;
    let (desired, ready) = (
        platform.metric("function_replicas_desired", "steady").await,
        platform.metric("function_replicas_ready", "steady").await,
    );
    assert_eq!((desired, ready), (2.0, 2.0), "the replica gauges");
    let replicas = platform.replicas("steady").await;
    let victim = replicas[0].clone();
    let victim_url = format!(
        "http://127.0.0.1:{}",
        victim.port.expect("the replica printed its port")
    );

    // Four slow invocations fill both replicas (two each).
    let input = json!({"mode": "sleep", "ms": 1500});
    let mut ids = Vec::new();
    for _ in 0..4 {
        ids.push(platform.enqueue("steady", &input).await);
    }
    let stats = eventually("the victim to run two invocations", || async {
        let stats = call(platform.http.get(format!("{victim_url}/stats")))
            .await
            .body;
        (stats["inFlight"] == 2).then_some(stats)
    })
    .await;
    let on_victim: Vec<String> = stats["calls"]
        .as_object()
        .expect("calls by execution")
        .keys()
        .cloned()
        .collect();
    kill_9(victim.pid.expect("the replica printed its pid"));

    let records = platform
        .until_all_ended(&ids, Duration::from_secs(30))
        .await;
    for record in &records {
        assert_eq!(record["status"], "success", "{record}");
        let id = record["executionId"].as_str().expect("an id").to_owned();
        if on_victim.contains(&id) {
            assert!(
                record["attempt"].as_u64() >= Some(2),
                "an invocation the killed replica was running is retried: {record}"
            );
        }
    }
    platform.until_replicas("steady", 2, 2).await;
    let view = platform.function("steady").await;
    assert!(
        view["replicas"]["restarts"].as_u64() >= Some(1),
        "the replacement counts as a restart: {view}"
    );
    assert!(
        view["replicas"]
            .get("crashLoop")
            .is_none_or(|flag| flag == false),
        "one kill is no crash loop: {view}"
    );
    let now = platform.replica_pids("steady").await;
    assert_eq!(now.len(), 3, "two replicas and one replacement: {now:?}");
    platform.stop(&now).await;
}

#[tokio::test]
async fn nothing_is_left_running_after_delete_shutdown_or_kill_9_and_restart() {
    let data_dir = tempfile::tempdir().expect("a data directory");
    let data_arg = data_dir.path().to_str().expect("a UTF-8 path").to_owned();
    let args = ["--data-dir", data_arg.as_str()];
    let spec = runtime_deployment(
        "kept",
        &json!({"scalingConfig": {"strategy": "NONE", "minReplicas": 2, "maxReplicas": 2}}),
    );

    // Delete.
    let platform = Platform::start(&args).await;
    platform.registered(&spec).await;
    platform.until_replicas("kept", 2, 2).await;
    let pids = platform.replica_pids("kept").await;
    assert_eq!(pids.len(), 2, "{pids:?}");
    platform.delete("kept").await;
    until_gone(&pids, "DELETE").await;

    // Shutdown (SIGTERM).
    platform.registered(&spec).await;
    platform.until_replicas("kept", 2, 2).await;
    let pids = platform.replica_pids("kept").await;
    platform.stop(&pids).await;

    // The function is durable: a restart brings its replicas back. Then kill -9.
    let platform = Platform::start(&args).await;
    platform.until_replicas("kept", 2, 2).await;
    let pids = platform.replica_pids("kept").await;
    assert_eq!(pids.len(), 2, "{pids:?}");
    let Platform { plane, .. } = platform;
    plane.kill().await;
    until_gone(&pids, "kill -9 of the control plane").await;

    // And once more: the replicas are back after the kill too.
    let platform = Platform::start(&args).await;
    platform.until_replicas("kept", 2, 2).await;
    let record = platform.invoke("kept", &json!("still here")).await;
    assert_eq!(record["output"], "still here", "{record}");
    let pids = platform.replica_pids("kept").await;
    platform.stop(&pids).await;
}

#[tokio::test]
async fn what_a_replica_started_itself_is_ended_by_the_next_start_after_a_kill_9() {
    let data_dir = tempfile::tempdir().expect("a data directory");
    let data_arg = data_dir.path().to_str().expect("a UTF-8 path").to_owned();
    let args = ["--data-dir", data_arg.as_str()];
    // The replica is a shell that starts the runtime as its own child: the kernel's
    // parent-death signal reaches the shell, not the runtime.
    let script = runtime_script();
    let spec = json!({
        "name": "wrapped",
        "image": "fn-runtime",
        "executionMode": "DEPLOYMENT",
        "command": ["sh", "-c", "python3 \"$0\" & wait", script],
        "scalingConfig": {"strategy": "NONE", "minReplicas": 1, "maxReplicas": 1},
    });
    let platform = Platform::start(&args).await;
    platform.registered(&spec).await;
    platform.until_replicas("wrapped", 1, 1).await;
    let pids = platform.replica_pids("wrapped").await;
    assert_eq!(pids.len(), 1, "{pids:?}");
    let Platform { plane, .. } = platform;
    plane.kill().await;

    let platform = Platform::start(&args).await;
    until_gone(&pids, "the next start").await;
    platform.until_replicas("wrapped", 1, 1).await;
    let record = platform.invoke("wrapped", &json!("back")).await;
    assert_eq!(record["output"], "back", "{record}");
    let pids = platform.replica_pids("wrapped").await;
    platform.stop(&pids).await;
}

#[tokio::test]
async fn a_function_whose_replica_never_gets_ready_is_not_registered_and_leaves_nothing() {
    let platform = Platform::start(&["--replica-start-timeout", "PT5S"]).await;
    let spec = json!({
        "name": "broken",
        "image": "sh",
        "command": ["sh", "-c", "echo \"pid=$$\"; echo 'ModuleNotFoundError: flask' >&2; exit 1"],
        "scalingConfig": {"strategy": "NONE", "minReplicas": 1, "maxReplicas": 1},
    });
    let reply = platform.register(&spec).await;
    assert_eq!(
        reply.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        reply.body
    );
    let message = reply.body["message"].as_str().expect("a message");
    assert!(
        message.contains("exited before it was ready (status 1)"),
        "{message}"
    );
    assert!(
        message.contains("ModuleNotFoundError: flask"),
        "its output: {message}"
    );
    let pid: u32 = message
        .split("pid=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("the output names the pid: {message}"));
    until_gone(&[pid], "the refused registration").await;
    let reply = call(platform.http.get(platform.url("/v1/functions/broken"))).await;
    assert_eq!(
        reply.status,
        StatusCode::NOT_FOUND,
        "nothing was registered: {}",
        reply.body
    );
    platform.stop(&[]).await;
}

#[tokio::test]
async fn with_no_deployment_provider_a_deployment_runs_at_its_endpoint_or_is_refused() {
    let platform = Platform::start(&["--deployment-provider", "none"]).await;
    let with_command = runtime_deployment("local", &json!({}));
    let reply = platform.register(&with_command).await;
    assert_eq!(
        reply.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        reply.body
    );
    assert_eq!(
        reply.body["error"], "PROVIDER_UNAVAILABLE",
        "{}",
        reply.body
    );

    let with_endpoint = runtime_deployment(
        "remote",
        &json!({"endpointUrl": "http://127.0.0.1:9/invoke"}),
    );
    platform.registered(&with_endpoint).await;
    let view = platform.function("remote").await;
    assert_eq!(view["effectiveExecutionMode"], "POOL", "{view}");
    assert!(view["degradationReason"].is_string(), "{view}");
    assert!(
        view.get("replicas").is_none(),
        "no managed replicas: {view}"
    );
    let logs = call(platform.http.get(platform.url("/v1/functions/remote/logs"))).await;
    assert_eq!(logs.status, StatusCode::BAD_REQUEST, "{}", logs.body);
    platform.stop(&[]).await;
}
