//! Real replicas: a Python HTTP server started from the function's `command`, ready on
//! `GET /health`, dispatched to (its first answer a cold start), and stopped with
//! nothing left running.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use core_types::{
    DeploymentHooks, DeploymentProvider, Dispatch, DispatchRequest, ExecutionId, FunctionSpec,
    OwnedTask, Payload, Provisioned, ReadyReplicas, TaskOwner, TraceId,
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
    ProcessProvider::new(
        ProcessConfig {
            start_timeout: Duration::from_secs(20),
            stop_grace: Duration::from_secs(2),
            restart_backoff_base: Duration::from_millis(50),
            restart_backoff_max: Duration::from_millis(500),
            log_lines: 100,
            callback_url: None,
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
    let ready = Arc::new(Ready::default());
    let tasks = Arc::new(Tasks::default());
    let hooks = DeploymentHooks {
        ready: Arc::clone(&ready) as Arc<dyn ReadyReplicas>,
        tasks: Arc::clone(&tasks) as Arc<dyn TaskOwner>,
    };
    let provisioned = provider.provision(&spec, 1, hooks).await.unwrap();
    assert_eq!(provisioned, Provisioned::Replicas);
    assert_eq!(ready.0.load(Ordering::SeqCst), 1);

    let request = |n: u32| DispatchRequest {
        execution_id: ExecutionId::new(format!("e{n}")),
        function: Arc::clone(&spec),
        attempt: 1,
        input: Payload::from_value(&serde_json::json!(n)),
        metadata: Arc::default(),
        trace_id: TraceId::new("t"),
        idempotency_key: None,
        callback_url: None,
    };
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
    let handles: Vec<_> = tasks.0.lock().unwrap().drain(..).collect();
    for handle in handles {
        tokio::time::timeout(Duration::from_secs(10), handle)
            .await
            .expect("supervision ends with the deployment")
            .unwrap();
    }
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
    let tasks = Arc::new(Tasks::default());
    let hooks = DeploymentHooks {
        ready: Arc::new(Ready::default()),
        tasks: Arc::clone(&tasks) as Arc<dyn TaskOwner>,
    };
    let error = provider.provision(&spec, 1, hooks).await.unwrap_err();
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
    let handles: Vec<_> = tasks.0.lock().unwrap().drain(..).collect();
    for handle in handles {
        tokio::time::timeout(Duration::from_secs(10), handle)
            .await
            .expect("supervision ended")
            .unwrap();
    }
}
