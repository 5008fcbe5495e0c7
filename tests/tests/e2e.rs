//! End to end: the real `control-plane` binary on free ports, a real function runtime
//! (the Python standard-library server in `tests/runtime/fn_runtime.py`) and a real HTTP
//! client. Each test starts its own pair of processes, tells the runtime what to do
//! through the invocation's `input`, and reads what happened from the API and from the
//! runtime's own `/stats`. Waits are polls with a bound, never pauses; no assertion is
//! about how long anything took.

#[path = "e2e/processes.rs"]
mod processes;

use std::net::TcpListener;

use processes::{ControlPlane, Runtime, eventually};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One control plane, one runtime and a client.
struct Env {
    plane: ControlPlane,
    runtime: Runtime,
    http: reqwest::Client,
}

/// A response, read whole.
struct Reply {
    status: StatusCode,
    headers: reqwest::header::HeaderMap,
    body: Value,
}

impl Reply {
    fn execution_id(&self) -> String {
        self.body["executionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no executionId in {}", self.body))
            .to_owned()
    }
}

impl Env {
    /// The binary with its background scheduler.
    async fn start() -> Self {
        Self::start_with(&[]).await
    }

    async fn start_with(args: &[&str]) -> Self {
        let http = processes::http_client_builder()
            .build()
            .expect("an HTTP client");
        let (plane, runtime) = tokio::join!(ControlPlane::start(args, &http), Runtime::start());
        Self {
            plane,
            runtime,
            http,
        }
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> Reply {
        let response = request.send().await.expect("the control plane answers");
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.bytes().await.expect("a readable body");
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|e| panic!("{status} with a non-JSON body ({e}): {bytes:?}"))
        };
        Reply {
            status,
            headers,
            body,
        }
    }

    async fn post(&self, path: &str, body: &Value, headers: &[(&str, &str)]) -> Reply {
        let mut request = self
            .http
            .post(format!("{}{path}", self.plane.api))
            .json(body);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        self.send(request).await
    }

    async fn get(&self, path: &str) -> Reply {
        self.send(self.http.get(format!("{}{path}", self.plane.api)))
            .await
    }

    /// Registers `spec`, expecting 201.
    async fn register(&self, spec: Value) -> Value {
        let reply = self.post("/v1/functions", &spec, &[]).await;
        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
        reply.body
    }

    /// Registers a `POOL` function served by the runtime, with `overrides`.
    async fn pool_function(&self, name: &str, overrides: Value) {
        let mut spec = json!({
            "name": name,
            "image": "nanofaas/python-runtime",
            "executionMode": "POOL",
            "endpointUrl": self.runtime.endpoint(),
        });
        for (key, value) in overrides.as_object().expect("an object") {
            spec[key] = value.clone();
        }
        self.register(spec).await;
    }

    async fn invoke(&self, function: &str, input: Value, headers: &[(&str, &str)]) -> Reply {
        let path = format!("/v1/functions/{function}:invoke");
        self.post(&path, &json!({ "input": input }), headers).await
    }

    async fn enqueue(&self, function: &str, input: Value, headers: &[(&str, &str)]) -> Reply {
        let path = format!("/v1/functions/{function}:enqueue");
        self.post(&path, &json!({ "input": input }), headers).await
    }

    async fn execution(&self, id: &str) -> Value {
        let reply = self.get(&format!("/v1/executions/{id}")).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        reply.body
    }

    /// Polls the execution until its status is terminal.
    async fn until_terminal(&self, id: &str) -> Value {
        eventually(&format!("execution {id} to end"), || async {
            let record = self.execution(id).await;
            matches!(
                record["status"].as_str(),
                Some("success" | "error" | "timeout")
            )
            .then_some(record)
        })
        .await
    }

    /// What the runtime saw (`GET /stats`).
    async fn runtime_stats(&self) -> Value {
        let response = self
            .http
            .get(format!("{}/stats", self.runtime.url))
            .send()
            .await
            .expect("the runtime answers");
        response.json().await.expect("JSON stats")
    }

    /// Waits until the runtime is running exactly one invocation.
    async fn until_the_runtime_runs_one(&self) {
        eventually("the runtime to be running one invocation", || async {
            (self.runtime_stats().await["inFlight"] == 1).then_some(())
        })
        .await;
    }

    /// The status the runtime's callback for `id` got, once it has one (the runtime
    /// records it after the control plane answered, which may be after the execution
    /// ended).
    async fn callback_status(&self, id: &str) -> Value {
        eventually(&format!("the runtime's callback for {id}"), || async {
            self.runtime_stats().await["callbacks"].get(id).cloned()
        })
        .await
    }

    /// The calls the runtime got for one execution.
    async fn calls_for(&self, id: &str) -> Vec<Value> {
        self.runtime_stats().await["calls"][id]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }
}

#[tokio::test]
async fn local_and_pool_functions_answer_a_sync_invoke_with_the_input() {
    let env = Env::start().await;
    let local = env
        .register(json!({"name": "local-echo", "image": "nanofaas/echo", "executionMode": "LOCAL"}))
        .await;
    assert_eq!(local["effectiveExecutionMode"], "LOCAL");
    env.pool_function("pool-echo", json!({})).await;

    let input = json!({"greeting": "hello", "list": [1, 2, 3]});
    for function in ["local-echo", "pool-echo"] {
        let reply = env.invoke(function, input.clone(), &[]).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        assert_eq!(
            reply.body["status"], "success",
            "{function}: {}",
            reply.body
        );
        assert_eq!(reply.body["output"], input, "{function}");
        let id = reply.execution_id();
        assert_eq!(reply.headers["x-execution-id"], id.as_str());
        let record = env.execution(&id).await;
        assert_eq!(record["functionName"], function);
        assert_eq!(record["status"], "success");
    }

    // What reached the runtime over the wire, per api.md "Dispatch to functions".
    let reply = env
        .invoke("pool-echo", json!(1), &[("X-Trace-Id", "trace-e2e")])
        .await;
    let calls = env.calls_for(&reply.execution_id()).await;
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(calls[0]["attempt"], "1");
    assert_eq!(calls[0]["traceId"], "trace-e2e");
    assert_eq!(
        calls[0]["callbackUrl"],
        format!("{}/v1/internal/executions", env.plane.api)
    );
}

#[tokio::test]
async fn cold_start_headers_of_the_runtime_show_in_the_execution() {
    let env = Env::start().await;
    env.pool_function("cold", json!({})).await;
    let reply = env
        .invoke("cold", json!({"mode": "cold", "init_ms": 1234}), &[])
        .await;
    assert_eq!(reply.body["status"], "success", "{}", reply.body);
    let record = env.execution(&reply.execution_id()).await;
    assert_eq!(record["coldStart"], true, "{record}");
    assert_eq!(record["initDurationMs"], 1234, "{record}");

    let warm = env.invoke("cold", json!({"mode": "echo"}), &[]).await;
    let record = env.execution(&warm.execution_id()).await;
    assert_eq!(record["coldStart"], false, "{record}");
    assert!(record.get("initDurationMs").is_none(), "{record}");
}

#[tokio::test]
async fn a_text_plain_answer_becomes_a_json_string() {
    let env = Env::start().await;
    env.pool_function("texty", json!({})).await;
    let reply = env
        .invoke(
            "texty",
            json!({"mode": "text", "text": "plain {not json}"}),
            &[],
        )
        .await;
    assert_eq!(reply.body["status"], "success", "{}", reply.body);
    assert_eq!(reply.body["output"], json!("plain {not json}"));
}

#[tokio::test]
async fn an_enqueued_invocation_is_run_by_the_background_scheduler() {
    let env = Env::start().await;
    env.pool_function("worker", json!({})).await;
    let reply = env.enqueue("worker", json!({"job": 42}), &[]).await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.body);
    assert_eq!(reply.body["status"], "queued");
    let id = reply.execution_id();
    assert_eq!(reply.headers["x-execution-id"], id.as_str());

    let record = env.until_terminal(&id).await;
    assert_eq!(record["status"], "success", "{record}");
    assert_eq!(record["output"], json!({"job": 42}));
    assert_eq!(record["attempt"], 1);
}

#[tokio::test]
async fn a_runtime_callback_to_x_callback_url_completes_the_execution() {
    let env = Env::start().await;
    env.pool_function("calls-back", json!({})).await;
    // The runtime POSTs `{"success": true, "output": ..}` to
    // `<X-Callback-Url>/<id>:complete` before it answers its own request with 202.
    let reply = env
        .invoke(
            "calls-back",
            json!({"mode": "callback", "output": {"via": "callback"}}),
            &[],
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body["status"], "success", "{}", reply.body);
    assert_eq!(reply.body["output"], json!({"via": "callback"}));
    let id = reply.execution_id();
    assert_eq!(env.callback_status(&id).await, 204);
    assert_eq!(
        env.execution(&id).await["output"],
        json!({"via": "callback"})
    );
}

#[tokio::test]
async fn a_202_answer_is_the_result_and_a_later_callback_is_ignored() {
    let env = Env::start().await;
    env.pool_function("answers-first", json!({})).await;
    // api.md: a 2xx body is the output and the first completion wins, so a runtime that
    // answers 202 (empty body) before calling back has already finished the execution.
    let reply = env
        .invoke(
            "answers-first",
            json!({"mode": "callback", "after": "answer", "output": "from the callback"}),
            &[],
        )
        .await;
    assert_eq!(reply.body["status"], "success", "{}", reply.body);
    assert!(reply.body["output"].is_null(), "{}", reply.body);
    let id = reply.execution_id();

    env.send(env.http.post(format!("{}/release/{id}", env.runtime.url)))
        .await;
    assert_eq!(
        env.callback_status(&id).await,
        204,
        "an ignored callback is still 204"
    );
    let record = env.execution(&id).await;
    assert_eq!(record["status"], "success");
    assert!(record["output"].is_null(), "{record}");
}

#[tokio::test]
async fn a_failed_first_attempt_is_retried_and_the_second_succeeds() {
    let env = Env::start().await;
    env.pool_function("flaky", json!({"maxRetries": 2})).await;
    let input = json!({"mode": "fail", "status": 500, "times": 1});
    let reply = env
        .invoke("flaky", input.clone(), &[("Idempotency-Key", "flaky-1")])
        .await;
    assert_eq!(reply.body["status"], "success", "{}", reply.body);
    assert_eq!(reply.body["output"], input);
    let id = reply.execution_id();
    assert_eq!(env.execution(&id).await["attempt"], 2);

    let calls = env.calls_for(&id).await;
    let attempts: Vec<&Value> = calls.iter().map(|c| &c["attempt"]).collect();
    assert_eq!(attempts, [&json!("1"), &json!("2")]);
    // The idempotency key goes to the first attempt only.
    assert_eq!(calls[0]["idempotencyKey"], "flaky-1");
    assert!(calls[1]["idempotencyKey"].is_null(), "{calls:?}");
}

#[tokio::test]
async fn a_non_2xx_answer_on_every_attempt_ends_in_function_error() {
    let env = Env::start().await;
    env.pool_function("broken", json!({"maxRetries": 2})).await;
    let reply = env
        .invoke("broken", json!({"mode": "fail", "status": 503}), &[])
        .await;
    assert_eq!(reply.status, StatusCode::OK, "finished invocations are 200");
    assert_eq!(reply.body["status"], "error", "{}", reply.body);
    assert_eq!(reply.body["error"]["code"], "FUNCTION_ERROR");
    let message = reply.body["error"]["message"].as_str().unwrap();
    assert!(message.contains("503"), "{message}");
    assert!(message.contains("failure 2 requested"), "{message}");
    let id = reply.execution_id();
    assert_eq!(env.execution(&id).await["attempt"], 2);
    assert_eq!(env.calls_for(&id).await.len(), 2);
}

#[tokio::test]
async fn a_function_slower_than_its_timeout_ends_in_dispatch_timeout() {
    let env = Env::start().await;
    env.pool_function("sluggish", json!({"timeoutMs": 300, "maxRetries": 1}))
        .await;
    // Enqueued, so that only the function's timeout is in play (a sync caller would
    // wait just as long by default).
    let reply = env
        .enqueue("sluggish", json!({"mode": "sleep", "ms": 10_000}), &[])
        .await;
    let record = env.until_terminal(&reply.execution_id()).await;
    assert_eq!(record["status"], "timeout", "{record}");
    assert_eq!(record["error"]["code"], "DISPATCH_TIMEOUT", "{record}");
}

#[tokio::test]
async fn a_sync_wait_shorter_than_the_run_answers_200_with_status_timeout() {
    let env = Env::start().await;
    env.pool_function("long", json!({})).await;
    let reply = env
        .invoke(
            "long",
            json!({"mode": "sleep", "ms": 10_000}),
            &[("X-Timeout-Ms", "200")],
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body["status"], "timeout", "{}", reply.body);
    let record = env.execution(&reply.execution_id()).await;
    assert_eq!(record["status"], "timeout", "terminal: {record}");
}

#[tokio::test]
async fn one_idempotency_key_names_one_execution_even_for_concurrent_duplicates() {
    let env = Env::start().await;
    env.pool_function("once", json!({})).await;
    let first = env
        .enqueue(
            "once",
            json!({"order": 1}),
            &[("Idempotency-Key", "order-1")],
        )
        .await;
    let again = env
        .enqueue(
            "once",
            json!({"order": 1}),
            &[("Idempotency-Key", "order-1")],
        )
        .await;
    assert_eq!(first.execution_id(), again.execution_id());

    let input = json!({"mode": "sleep", "ms": 200});
    let duplicates =
        (0..8).map(|_| env.invoke("once", input.clone(), &[("Idempotency-Key", "order-2")]));
    let replies = futures::future::join_all(duplicates).await;
    let id = replies[0].execution_id();
    for reply in &replies {
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        assert_eq!(reply.execution_id(), id);
        assert_eq!(reply.body["status"], "success", "{}", reply.body);
    }
    assert_eq!(env.calls_for(&id).await.len(), 1, "the runtime ran it once");
}

#[tokio::test]
async fn concurrency_1_never_lets_the_runtime_see_two_invocations_at_once() {
    let env = Env::start().await;
    env.pool_function("single", json!({"concurrency": 1})).await;
    let invocations =
        (0..4).map(|n| env.invoke("single", json!({"mode": "sleep", "ms": 100, "n": n}), &[]));
    let replies = futures::future::join_all(invocations).await;
    for reply in &replies {
        assert_eq!(reply.body["status"], "success", "{}", reply.body);
    }
    let stats = env.runtime_stats().await;
    assert_eq!(stats["maxInFlight"], 1, "{stats}");
    assert_eq!(stats["calls"].as_object().unwrap().len(), 4, "{stats}");
}

#[tokio::test]
async fn a_full_queue_answers_429_queue_full() {
    let env = Env::start_with(&["--scheduler", "manual"]).await;
    env.pool_function("narrow", json!({"queueSize": 1})).await;
    let first = env.enqueue("narrow", json!({"n": 1}), &[]).await;
    assert_eq!(first.status, StatusCode::ACCEPTED);
    let refused = env.enqueue("narrow", json!({"n": 2}), &[]).await;
    assert_eq!(
        refused.status,
        StatusCode::TOO_MANY_REQUESTS,
        "{}",
        refused.body
    );
    assert_eq!(refused.body["error"], "QUEUE_FULL");
    assert!(refused.headers.contains_key("retry-after"));

    // Manual scheduling: the queued one moves only through drain-once, which answers
    // once it has ended.
    let drained = env
        .post(
            "/v1/internal/functions/narrow:drain-once",
            &Value::Null,
            &[],
        )
        .await;
    assert_eq!(drained.body, json!({"dispatched": true}));
    let record = env.execution(&first.execution_id()).await;
    assert_eq!(record["status"], "success", "{record}");
}

#[tokio::test]
async fn an_unreachable_endpoint_ends_in_dispatch_error() {
    let env = Env::start().await;
    // A port that was free a moment ago and has no listener now.
    let closed = TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port");
    env.register(json!({
        "name": "nowhere", "image": "i", "executionMode": "POOL",
        "endpointUrl": format!("http://{closed}/invoke"), "maxRetries": 1,
    }))
    .await;
    let reply = env.invoke("nowhere", json!(1), &[]).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body["status"], "error", "{}", reply.body);
    assert_eq!(
        reply.body["error"]["code"], "DISPATCH_ERROR",
        "{}",
        reply.body
    );
}

#[tokio::test]
async fn sigterm_lets_the_in_flight_sync_invocation_answer_and_exits_0() {
    let mut env = Env::start().await;
    env.pool_function("busy", json!({})).await;
    let (reply, ()) = tokio::join!(
        env.invoke("busy", json!({"mode": "sleep", "ms": 500}), &[]),
        async {
            env.until_the_runtime_runs_one().await;
            env.plane.terminate();
        }
    );
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(reply.body["status"], "success", "{}", reply.body);
    let status = env.plane.exit_status().await;
    assert_eq!(status.code(), Some(0), "{status}");
}

#[tokio::test]
async fn a_callback_during_the_shutdown_grace_completes_its_execution() {
    let mut env = Env::start_with(&["--shutdown-grace", "PT20S"]).await;
    env.pool_function("reports-late", json!({})).await;
    // The runtime holds the dispatch until released, then reports through `:complete`.
    let accepted = env
        .enqueue(
            "reports-late",
            json!({"mode": "callback", "after": "release", "output": "late"}),
            &[],
        )
        .await;
    assert_eq!(accepted.status, StatusCode::ACCEPTED, "{}", accepted.body);
    let id = accepted.execution_id();
    env.until_the_runtime_runs_one().await;

    env.plane.terminate();
    let enqueue = format!("{}/v1/functions/reports-late:enqueue", env.plane.api);
    eventually("the control plane to refuse new invocations", || async {
        let attempt = env
            .http
            .post(&enqueue)
            .json(&json!({"input": 1}))
            .send()
            .await;
        // Refused with 503, or (what this test guards against) no longer listening.
        match attempt {
            Ok(reply) => (reply.status() == StatusCode::SERVICE_UNAVAILABLE).then_some(()),
            Err(_) => Some(()),
        }
    })
    .await;
    env.send(env.http.post(format!("{}/release/{id}", env.runtime.url)))
        .await;

    assert_eq!(
        env.callback_status(&id).await,
        204,
        "the runtime's result during the grace was taken"
    );
    let status = env.plane.exit_status().await;
    assert_eq!(status.code(), Some(0), "{status}");
}

#[tokio::test]
async fn sigterm_is_not_held_up_by_idle_connections_or_half_sent_requests() {
    // Timeouts far beyond the test's deadline: only the drain may close these.
    let mut env = Env::start_with(&[
        "--http-header-read-timeout",
        "PT60S",
        "--http-idle-timeout",
        "PT60S",
        "--http-body-read-timeout",
        "PT60S",
    ])
    .await;
    let addr = env.plane.api.trim_start_matches("http://").to_owned();
    let mut idle = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let health = b"GET /actuator/health HTTP/1.1\r\nHost: test\r\n\r\n";
    idle.write_all(health).await.unwrap();
    let mut answer = [0; 512];
    assert!(idle.read(&mut answer).await.unwrap() > 0, "answered");
    let mut half_head = tokio::net::TcpStream::connect(&addr).await.unwrap();
    half_head
        .write_all(b"POST /v1/functions HTTP/1.1\r\nHost: te")
        .await
        .unwrap();
    let mut half_body = tokio::net::TcpStream::connect(&addr).await.unwrap();
    half_body
        .write_all(
            b"POST /v1/functions HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"na",
        )
        .await
        .unwrap();

    env.plane.terminate();
    let status = env.plane.exit_status().await;
    assert_eq!(status.code(), Some(0), "{status}");
    for (name, mut stream) in [
        ("idle", idle),
        ("half head", half_head),
        ("half body", half_body),
    ] {
        let mut rest = Vec::new();
        let read = tokio::time::timeout(processes::DEADLINE, stream.read_to_end(&mut rest)).await;
        assert!(read.is_ok(), "the {name} connection is still open");
    }
}
