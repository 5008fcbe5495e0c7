//! Real replicas: a Python HTTP server started from the function's `command`, ready on
//! `GET /health`, dispatched to (its first answer a cold start), and stopped with
//! nothing left running.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use core_types::{
    DeploymentHooks, DeploymentProvider, Dispatch, DispatchOutcome, DispatchRequest, ExecutionId,
    FunctionSpec, OwnedTask, Payload, Provisioned, ReadyReplicas, TaskOwner, TraceId,
};
use dispatcher::PoolDispatcher;
use provider_process::{ProcessConfig, ProcessProvider};

const SERVER: &str = r#"
import http.server, json, os
class H(http.server.BaseHTTPRequestHandler):
    disable_nagle_algorithm = True
    def log_message(self, *a): pass
    def do_GET(self):
        self.send_response(200 if self.path == "/health" else 404); self.send_header("content-length", "0"); self.end_headers()
    def do_POST(self):
        body = self.rfile.read(int(self.headers["content-length"]))
        out = json.dumps({"pid": os.getpid(), "input": json.loads(body)["input"]}).encode()
        self.send_response(200); self.send_header("content-type", "application/json"); self.send_header("content-length", str(len(out))); self.end_headers(); self.wfile.write(out)
print("listening on", os.environ["PORT"], flush=True)
http.server.HTTPServer(("127.0.0.1", int(os.environ["PORT"])), H).serve_forever()
"#;

#[derive(Default)]
struct Ready(AtomicU32);

impl ReadyReplicas for Ready {
    fn set_ready(&self, ready: u32) {
        self.0.store(ready, Ordering::SeqCst);
    }
}

#[derive(Default)]
struct Tasks(Mutex<Vec<tokio::task::JoinHandle<()>>>);

impl TaskOwner for Tasks {
    fn run(&self, task: OwnedTask) {
        #[expect(
            clippy::disallowed_methods,
            reason = "the test is the owner: it awaits every handle before it ends"
        )]
        let handle = tokio::spawn(task);
        self.0.lock().unwrap().push(handle);
    }
}

fn provider(dir: &std::path::Path) -> ProcessProvider {
    provider_with_start_timeout(dir, Duration::from_secs(20))
}

fn provider_with_start_timeout(dir: &std::path::Path, start_timeout: Duration) -> ProcessProvider {
    ProcessProvider::new(
        ProcessConfig {
            start_timeout,
            stop_grace: Duration::from_secs(2),
            restart_backoff_base: Duration::from_millis(50),
            restart_backoff_max: Duration::from_millis(500),
            log_lines: 100,
            scratch_dir: dir.join("scratch"),
            ledger_dir: dir.join("process-groups"),
            max_output_bytes: 1 << 20,
        },
        PoolDispatcher::new(),
    )
    .expect("the ledger is free")
}

fn alive(pid: u64) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        !stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z')
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_is_started_dispatched_to_and_stopped_with_nothing_left() {
    let dir = tempfile::tempdir().unwrap();
    let provider = provider(dir.path());
    let spec = Arc::new(
        FunctionSpec::from_json(&serde_json::json!({
            "name": "py", "image": "local", "command": ["python3", "-c", SERVER]
        }))
        .unwrap(),
    );
    let (ready, tasks) = (Arc::new(Ready::default()), Arc::new(Tasks::default()));
    let provisioned = provider
        .provision(&spec, 1, hooks(&ready, &tasks))
        .await
        .unwrap();
    assert_eq!(provisioned, Provisioned::Replicas);
    assert_eq!(ready.0.load(Ordering::SeqCst), 1);

    let request = |n: u32| invocation(&spec, &format!("e{n}"), serde_json::json!(n));
    let first = provider.dispatch(request(1)).await.unwrap();
    assert!(
        first.cold_start,
        "the replica's first answer is a cold start"
    );
    assert!(first.init_duration_ms.is_some());
    let second = provider.dispatch(request(2)).await.unwrap();
    assert!(!second.cold_start);
    assert_eq!(second.output.to_value()["input"], 2);
    let pid = second.output.to_value()["pid"].as_u64().unwrap();
    assert!(alive(pid));
    let logs = provider.logs(&spec.name, 10).unwrap();
    assert!(
        logs.iter()
            .any(|l| l.starts_with("[replica 1] listening on")),
        "{logs:?}"
    );

    provider.deprovision(&spec.name).await.unwrap();
    assert_eq!(ready.0.load(Ordering::SeqCst), 0);
    end_supervision(&tasks).await;
    assert!(!alive(pid), "the replica's process is gone");
    assert!(provider.dispatch(request(3)).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_that_never_gets_ready_fails_the_provisioning_and_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let provider = provider(dir.path());
    let spec = Arc::new(
        FunctionSpec::from_json(&serde_json::json!({
            "name": "broken", "image": "local",
            "command": ["sh", "-c", "echo missing dependency >&2; exit 3"]
        }))
        .unwrap(),
    );
    let (ready, tasks) = (Arc::new(Ready::default()), Arc::new(Tasks::default()));
    let error = provider
        .provision(&spec, 1, hooks(&ready, &tasks))
        .await
        .unwrap_err();
    let message = error.to_string();
    assert!(
        message.contains("exited before it was ready (status 3)"),
        "{message}"
    );
    assert!(message.contains("missing dependency"), "{message}");
    assert!(
        provider.status(&spec.name).is_none(),
        "nothing stays provisioned"
    );
    end_supervision(&tasks).await;
}

/// A replica server whose answer to an invocation waits `input` milliseconds, and which
/// says on stdout that it took one.
const SLOW_SERVER: &str = r#"
import http.server, json, os, time
class H(http.server.BaseHTTPRequestHandler):
    def log_message(self, *a): pass
    def do_GET(self):
        self.send_response(200 if self.path == "/health" else 404); self.send_header("content-length", "0"); self.end_headers()
    def do_POST(self):
        ms = json.loads(self.rfile.read(int(self.headers["content-length"])))["input"]
        print("took", ms, flush=True)
        time.sleep(ms / 1000)
        out = json.dumps({"pid": os.getpid(), "slept": ms}).encode()
        self.send_response(200); self.send_header("content-type", "application/json"); self.send_header("content-length", str(len(out))); self.end_headers(); self.wfile.write(out)
http.server.ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), H).serve_forever()
"#;

fn spec_of(value: serde_json::Value) -> Arc<FunctionSpec> {
    Arc::new(FunctionSpec::from_json(&value).unwrap())
}

fn hooks(ready: &Arc<Ready>, tasks: &Arc<Tasks>) -> DeploymentHooks {
    DeploymentHooks {
        ready: Arc::clone(ready) as Arc<dyn ReadyReplicas>,
        tasks: Arc::clone(tasks) as Arc<dyn TaskOwner>,
        callback_url: None,
    }
}

fn invocation(spec: &Arc<FunctionSpec>, id: &str, input: serde_json::Value) -> DispatchRequest {
    DispatchRequest {
        execution_id: ExecutionId::new(id),
        function: Arc::clone(spec),
        attempt: 1,
        input: Payload::from_value(&input),
        metadata: Arc::default(),
        trace_id: TraceId::new("t"),
        idempotency_key: None,
        callback_url: None,
    }
}

/// Polls `probe` every 10 ms until it holds, for at most 20 s.
async fn until(what: &str, mut probe: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !probe() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "gave up waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn end_supervision(tasks: &Tasks) {
    let handles: Vec<_> = tasks.0.lock().unwrap().drain(..).collect();
    for handle in handles {
        tokio::time::timeout(Duration::from_secs(10), handle)
            .await
            .expect("supervision ends with the deployment")
            .unwrap();
    }
}

/// What a test of the slow server runs: the provider, the function, its hooks' ends.
struct SlowDeployment {
    provider: Arc<ProcessProvider>,
    spec: Arc<FunctionSpec>,
    ready: Arc<Ready>,
    tasks: Arc<Tasks>,
}

impl SlowDeployment {
    async fn provision(dir: &std::path::Path, name: &str, replicas: u32) -> Self {
        let provider = Arc::new(provider(dir));
        let spec = spec_of(serde_json::json!({
            "name": name, "image": "local", "timeoutMs": 20000,
            "command": ["python3", "-c", SLOW_SERVER],
        }));
        let (ready, tasks) = (Arc::new(Ready::default()), Arc::new(Tasks::default()));
        provider
            .provision(&spec, replicas, hooks(&ready, &tasks))
            .await
            .unwrap();
        Self {
            provider,
            spec,
            ready,
            tasks,
        }
    }

    /// Dispatches an invocation that takes `ms`, and returns once a replica has it.
    async fn start_slow(&self, id: &str, ms: u64) -> tokio::task::JoinHandle<DispatchOutcome> {
        #[expect(
            clippy::disallowed_methods,
            reason = "the test owns the dispatch: it awaits the handle"
        )]
        let handle = tokio::spawn({
            let provider = Arc::clone(&self.provider);
            let request = invocation(&self.spec, id, serde_json::json!(ms));
            async move { provider.dispatch(request).await }
        });
        let took = format!("took {ms}");
        until("a replica to take the slow invocation", || {
            self.provider
                .logs(&self.spec.name, 10)
                .unwrap()
                .iter()
                .any(|line| line.ends_with(&took))
        })
        .await;
        handle
    }

    async fn remove(&self) {
        self.provider.deprovision(&self.spec.name).await.unwrap();
        end_supervision(&self.tasks).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_that_keeps_failing_is_a_crash_loop_until_it_gets_ready() {
    let dir = tempfile::tempdir().unwrap();
    let provider = provider(dir.path());
    // It fails until the marker file exists, then serves.
    let marker = dir.path().join("fixed");
    let script = r#"if [ -e "$0" ]; then exec python3 -c "$1"; fi; echo "not yet"; exit 1"#;
    let spec = spec_of(serde_json::json!({
        "name": "flaky", "image": "local",
        "command": ["sh", "-c", script, marker.to_str().unwrap(), SERVER],
    }));
    let (ready, tasks) = (Arc::new(Ready::default()), Arc::new(Tasks::default()));
    // Zero at first (as a restart provisions), so provisioning does not wait.
    provider
        .provision(&spec, 0, hooks(&ready, &tasks))
        .await
        .unwrap();
    provider.set_replicas(&spec.name, 1).await.unwrap();

    until("a crash loop", || {
        provider
            .status(&spec.name)
            .is_some_and(|status| status.crash_loop.is_some())
    })
    .await;
    let status = provider.status(&spec.name).unwrap();
    assert!(status.restarts >= 2, "{status:?}");
    assert_eq!(status.ready, 0);
    let reason = status.crash_loop.unwrap();
    assert!(
        reason.contains("exited before it was ready (status 1)"),
        "{reason}"
    );
    assert!(reason.contains("next start in"), "{reason}");
    let logs = provider.logs(&spec.name, 100).unwrap();
    assert!(
        logs.iter().filter(|line| line.ends_with("not yet")).count() >= 2,
        "every run's output is kept: {logs:?}"
    );

    std::fs::write(&marker, "").unwrap();
    until("the replica to get ready", || {
        ready.0.load(Ordering::SeqCst) == 1
    })
    .await;
    let status = provider.status(&spec.name).unwrap();
    assert_eq!(status.crash_loop, None, "ready again: no crash loop");
    let answer = provider
        .dispatch(invocation(&spec, "e1", serde_json::json!(1)))
        .await;
    assert_eq!(answer.unwrap().output.to_value()["input"], 1);

    provider.deprovision(&spec.name).await.unwrap();
    end_supervision(&tasks).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scaling_down_takes_a_replica_out_of_dispatch_and_lets_its_work_finish() {
    let dir = tempfile::tempdir().unwrap();
    let slow = SlowDeployment::provision(dir.path(), "slow", 1).await;
    let (provider, spec) = (&slow.provider, &slow.spec);
    let in_flight = slow.start_slow("e1", 1500).await;
    provider.set_replicas(&spec.name, 0).await.unwrap();

    // Out of dispatch at once ...
    assert_eq!(slow.ready.0.load(Ordering::SeqCst), 0);
    let refused = provider
        .dispatch(invocation(spec, "e2", serde_json::json!(0)))
        .await;
    assert!(refused.unwrap_err().message.contains("no replica"));
    // ... yet the invocation it was running ends with its answer, not a kill.
    let answer = tokio::time::timeout(Duration::from_secs(20), in_flight)
        .await
        .expect("the drained invocation ends")
        .unwrap()
        .expect("it was answered");
    let value = answer.output.to_value();
    assert_eq!(value["slept"], 1500);
    let pid = value["pid"].as_u64().unwrap();
    until("the drained replica to stop", || !alive(pid)).await;
    slow.remove().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dispatch_goes_to_the_ready_replica_with_the_least_work_in_flight() {
    let dir = tempfile::tempdir().unwrap();
    let slow = SlowDeployment::provision(dir.path(), "spread", 2).await;
    let busy = slow.start_slow("e1", 1000).await;
    // While one replica is busy, every quick one goes to the other.
    let mut quick = Vec::new();
    for n in 0..3 {
        let answer = slow
            .provider
            .dispatch(invocation(
                &slow.spec,
                &format!("q{n}"),
                serde_json::json!(0),
            ))
            .await
            .unwrap();
        quick.push(answer.output.to_value()["pid"].as_u64().unwrap());
    }
    let answer = busy.await.unwrap().unwrap();
    let busy_pid = answer.output.to_value()["pid"].as_u64().unwrap();
    assert!(quick.iter().all(|pid| *pid == quick[0]), "{quick:?}");
    assert_ne!(
        quick[0], busy_pid,
        "the busy replica got a quick invocation"
    );
    slow.remove().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_not_ready_within_the_start_timeout_fails_the_provisioning_and_is_killed() {
    let dir = tempfile::tempdir().unwrap();
    let provider = provider_with_start_timeout(dir.path(), Duration::from_millis(300));
    // It runs, but never answers GET /health.
    let spec = spec_of(serde_json::json!({
        "name": "mute", "image": "local",
        "command": ["sh", "-c", "echo $$; exec sleep 300"],
    }));
    let (ready, tasks) = (Arc::new(Ready::default()), Arc::new(Tasks::default()));
    let error = provider
        .provision(&spec, 1, hooks(&ready, &tasks))
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains("was not ready within 300 ms"), "{error}");
    let pid: u64 = error
        .lines()
        .find_map(|line| line.strip_prefix("[replica 1] ")?.trim().parse().ok())
        .unwrap_or_else(|| panic!("the replica's output names its pid: {error}"));
    end_supervision(&tasks).await;
    assert!(!alive(pid), "the replica that never got ready was killed");
    assert!(provider.status(&spec.name).is_none());
}
