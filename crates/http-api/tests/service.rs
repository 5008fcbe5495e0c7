//! The service around the operations, through the real router and scheduler: the
//! Prometheus exposition, the runtime-config admin API, and admission (rate limit and
//! sync queue).
//!
//! Time is a manual clock (records, queue waits, completion rates, the rate limit) or
//! tokio's paused clock (waits that must run out); nothing sleeps. A sync caller that
//! must be waiting while the test goes on is a future polled until it is queued
//! ([`park`]), on the test's own task. The metrics cases are here; the runtime-config
//! and admission cases in `service/`.

#[path = "service/admission.rs"]
mod admission;
#[path = "service/runtime_config.rs"]
mod runtime_config;

use std::future::Future;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::task::Poll;

use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode, header};
use core_types::testing::ManualClock;
use core_types::{
    Dispatch, DispatchOutcome, DispatchRequest, DispatchSuccess, ErrorCode, ErrorInfo,
    FunctionName, Timestamp,
};
use http_api::{ApiConfig, AppState, RuntimeConfig, management_router, router};
use scheduler::{MemoryLimits, RetryBackoff, Scheduler, SchedulerConfig, SchedulerParts};
use serde_json::{Value, json};
use tower::ServiceExt;

/// Echoes the input, except: `{"fail": true}` fails the attempt, `{"hang": true}` never
/// answers (the function's `timeoutMs` ends it), `{"cold": ms}` answers as a cold start
/// that took `ms` to initialise.
struct Scripted;

#[async_trait::async_trait]
impl Dispatch for Scripted {
    async fn dispatch(&self, request: DispatchRequest) -> DispatchOutcome {
        let input = request.input.to_value();
        if input.get("fail") == Some(&Value::Bool(true)) {
            return Err(ErrorInfo::new(ErrorCode::FunctionError, "asked to fail"));
        }
        if input.get("hang") == Some(&Value::Bool(true)) {
            std::future::pending::<()>().await;
        }
        let mut success = DispatchSuccess::warm(request.input);
        if let Some(init) = input.get("cold").and_then(Value::as_u64) {
            success.cold_start = true;
            success.init_duration_ms = Some(init);
        }
        Ok(success)
    }
}

struct Service {
    app: http_api::Api,
    state: AppState,
    scheduler: Scheduler,
    clock: Arc<ManualClock>,
}

fn service(config: ApiConfig) -> Service {
    service_within(config, MemoryLimits::default())
}

fn service_within(config: ApiConfig, limits: MemoryLimits) -> Service {
    let clock = Arc::new(ManualClock::starting_at(Timestamp::from_millis(
        1_800_000_000_000,
    )));
    let parts = SchedulerParts {
        clock: clock.clone(),
        ..SchedulerParts::in_memory_with(Arc::new(Scripted), limits)
    };
    // These stories hold invocations in the queue and release them with `:drain-once`,
    // so sync callers must not move the queue themselves.
    // ... and drain a failed attempt's retry right away: retries are due at once.
    let scheduler_config = SchedulerConfig {
        waiters_drive_when_manual: false,
        retry_backoff: RetryBackoff::NONE,
        ..SchedulerConfig::default()
    };
    let state = AppState::assemble(parts, scheduler_config, config);
    Service {
        app: router(state.clone()),
        scheduler: state.scheduler().clone(),
        state,
        clock,
    }
}

/// The API with the admin routes and `runtime` as revision 1.
fn service_with(runtime: RuntimeConfig) -> Service {
    service(ApiConfig {
        admin_api: true,
        runtime,
        ..ApiConfig::default()
    })
}

/// The sync queue on, admission on, `PT2S` budgets, `Retry-After` at least 2.
fn sync_queue_admission() -> RuntimeConfig {
    RuntimeConfig {
        sync_queue_enabled: true,
        sync_queue_admission_enabled: true,
        ..RuntimeConfig::default()
    }
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    text: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text))
    }

    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .unwrap_or_else(|| panic!("no {name} header on {} {}", self.status, self.text))
            .to_str()
            .unwrap()
    }

    /// Asserts a contract error body with `status` and `code`; returns the body.
    fn error(&self, status: StatusCode, code: &str) -> Value {
        assert_eq!(self.status, status, "{}", self.text);
        assert_eq!(self.header("content-type"), "application/json");
        let body = self.json();
        assert_eq!(body["error"], code, "{body}");
        assert!(body["message"].is_string(), "{body}");
        body
    }
}

async fn send(app: &http_api::Api, request: Request<Body>) -> Answer {
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    Answer {
        status,
        headers,
        text: String::from_utf8(bytes.to_vec()).unwrap(),
    }
}

fn json_request(method: &str, uri: &str, body: &Value) -> Request<Body> {
    Request::builder()
        .method(method)
        .uri(uri)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_string()))
        .unwrap()
}

impl Service {
    async fn call(&self, method: &str, uri: &str, body: Option<Value>) -> Answer {
        let request = match body {
            Some(body) => json_request(method, uri, &body),
            None => Request::builder()
                .method(method)
                .uri(uri)
                .body(Body::empty())
                .unwrap(),
        };
        send(&self.app, request).await
    }

    async fn register(&self, spec: Value) {
        let answer = self.call("POST", "/v1/functions", Some(spec)).await;
        assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.text);
    }

    /// A LOCAL function with these extra spec fields.
    async fn register_local(&self, name: &str, extra: Value) {
        let mut spec = json!({"name": name, "image": "i", "executionMode": "LOCAL"});
        spec.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        self.register(spec).await;
    }

    async fn enqueue(&self, function: &str, input: Value) -> Answer {
        let uri = format!("/v1/functions/{function}:enqueue");
        self.call("POST", &uri, Some(json!({ "input": input })))
            .await
    }

    fn invoke_request(function: &str, input: &Value, headers: &[(&str, &str)]) -> Request<Body> {
        let mut request = json_request(
            "POST",
            &format!("/v1/functions/{function}:invoke"),
            &json!({ "input": input }),
        );
        for (name, value) in headers {
            let name = axum::http::HeaderName::from_bytes(name.as_bytes()).unwrap();
            request.headers_mut().insert(name, value.parse().unwrap());
        }
        request
    }

    async fn invoke(&self, function: &str, input: Value, headers: &[(&str, &str)]) -> Answer {
        send(&self.app, Self::invoke_request(function, &input, headers)).await
    }

    async fn drain(&self, function: &str) -> bool {
        let uri = format!("/v1/internal/functions/{function}:drain-once");
        let answer = self.call("POST", &uri, None).await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
        answer.json()["dispatched"].as_bool().unwrap()
    }

    fn queued(&self, function: &str) -> usize {
        self.scheduler
            .queue_snapshot(function)
            .unwrap()
            .queued
            .len()
    }

    async fn runtime_config(&self) -> Value {
        let answer = self.call("GET", "/v1/admin/runtime-config", None).await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
        answer.json()
    }

    async fn patch(&self, body: Value) -> Answer {
        self.call("PATCH", "/v1/admin/runtime-config", Some(body))
            .await
    }

    async fn scrape(&self) -> Exposition {
        let answer = self.call("GET", "/actuator/prometheus", None).await;
        assert_eq!(answer.status, StatusCode::OK);
        assert_eq!(
            answer.header("content-type"),
            "text/plain; version=0.0.4; charset=utf-8"
        );
        Exposition(answer.text)
    }
}

/// Polls a sync caller's `invocation` until `ready()` holds, as a caller that is still
/// waiting; panics if it is answered first.
async fn park<F: Future<Output = Answer>>(mut invocation: Pin<&mut F>, ready: impl Fn() -> bool) {
    for _ in 0..100 {
        if ready() {
            return;
        }
        if let Poll::Ready(answer) = futures::poll!(invocation.as_mut()) {
            panic!(
                "answered instead of waiting: {} {}",
                answer.status, answer.text
            );
        }
        tokio::task::yield_now().await;
    }
    panic!("the invocation never got to the expected state");
}

/// A scraped exposition.
struct Exposition(String);

impl Exposition {
    /// The value of the sample named exactly `series` (name and labels).
    fn value(&self, series: &str) -> f64 {
        self.find(series)
            .unwrap_or_else(|| panic!("no sample {series} in:\n{}", self.0))
    }

    fn find(&self, series: &str) -> Option<f64> {
        self.0.lines().find_map(|line| {
            let value = line.strip_prefix(series)?.strip_prefix(' ')?;
            Some(value.parse().unwrap())
        })
    }

    fn has_line(&self, line: &str) -> bool {
        self.0.lines().any(|l| l == line)
    }
}

// ----- metrics ------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn the_exposition_counts_what_happened_to_each_function() {
    let service = service(ApiConfig::default());
    service
        .register_local("fn", json!({"maxRetries": 2, "timeoutMs": 1000}))
        .await;
    service
        .register_local("slow", json!({"maxRetries": 1, "timeoutMs": 1000}))
        .await;

    // Waits 250 ms in the queue, then succeeds.
    service.enqueue("fn", json!({"n": 1})).await;
    service.clock.advance_ms(250);
    assert!(service.drain("fn").await);
    // Fails, is retried, fails again: error.
    service.enqueue("fn", json!({"fail": true})).await;
    assert!(service.drain("fn").await);
    assert!(service.drain("fn").await);
    // A cold start that took 40 ms to initialise.
    service.enqueue("fn", json!({"cold": 40})).await;
    assert!(service.drain("fn").await);
    // Left in the queue.
    service.enqueue("fn", json!({"n": 3})).await;

    // `slow` hangs until its timeoutMs: in flight while the scrape looks.
    service.enqueue("slow", json!({"hang": true})).await;
    let slow = FunctionName::parse("slow").unwrap();
    let hanging = service.scheduler.tick_once(&slow).await.unwrap().unwrap();
    let during = service.scrape().await;
    assert_eq!(during.value("function_in_flight{function=\"slow\"}"), 1.0);
    assert_eq!(during.value("function_queue_depth{function=\"slow\"}"), 0.0);
    hanging.await.unwrap();

    let metrics = service.scrape().await;
    let fun = |name: &str| metrics.value(&format!("{name}{{function=\"fn\"}}"));
    assert_eq!(fun("function_enqueue_total"), 4.0);
    assert_eq!(fun("function_dispatch_total"), 4.0);
    assert_eq!(fun("function_success_total"), 2.0);
    assert_eq!(fun("function_error_total"), 1.0);
    assert_eq!(fun("function_retry_total"), 1.0);
    assert_eq!(fun("function_retry_backoff_ms_count"), 1.0);
    assert_eq!(fun("function_timeout_total"), 0.0);
    assert_eq!(fun("function_cold_start_total"), 1.0);
    assert_eq!(fun("function_warm_start_total"), 1.0);
    assert_eq!(fun("function_queue_depth"), 1.0);
    assert_eq!(fun("function_in_flight"), 0.0);
    // Four dispatches; only the first waited, 250 ms.
    assert_eq!(fun("function_queue_wait_ms_count"), 4.0);
    assert_eq!(fun("function_queue_wait_ms_sum"), 250.0);
    assert_eq!(
        metrics.value("function_queue_wait_ms_bucket{le=\"100.0\",function=\"fn\"}"),
        3.0
    );
    assert_eq!(
        metrics.value("function_queue_wait_ms_bucket{le=\"250.0\",function=\"fn\"}"),
        4.0
    );
    // Three finished executions; the first lived 250 ms from creation to its end.
    assert_eq!(fun("function_latency_ms_count"), 3.0);
    assert_eq!(fun("function_e2e_latency_ms_count"), 3.0);
    assert_eq!(fun("function_e2e_latency_ms_sum"), 250.0);
    assert_eq!(fun("function_init_duration_ms_count"), 1.0);
    assert_eq!(fun("function_init_duration_ms_sum"), 40.0);

    let slow = |name: &str| metrics.value(&format!("{name}{{function=\"slow\"}}"));
    assert_eq!(slow("function_timeout_total"), 1.0);
    assert_eq!(slow("function_in_flight"), 0.0);

    for counter in [
        "function_enqueue_total",
        "function_dispatch_total",
        "function_success_total",
        "function_error_total",
        "function_retry_total",
        "function_timeout_total",
        "function_cold_start_total",
        "function_warm_start_total",
        "sync_queue_admitted_total",
        "sync_queue_rejected_total",
    ] {
        assert!(
            metrics.has_line(&format!("# TYPE {counter} counter")),
            "{counter} is not typed as a counter:\n{}",
            metrics.0
        );
        assert!(
            metrics.0.contains(&format!("# HELP {counter} ")),
            "{counter}"
        );
    }
    for gauge in [
        "function_queue_depth",
        "function_in_flight",
        "idempotency_keys",
        "idempotency_keys_bytes",
        "queued_input_bytes",
    ] {
        assert!(
            metrics.has_line(&format!("# TYPE {gauge} gauge")),
            "{gauge}"
        );
    }
    for histogram in [
        "function_latency_ms",
        "function_queue_wait_ms",
        "function_e2e_latency_ms",
        "function_init_duration_ms",
        "sync_queue_wait_ms",
        "function_retry_backoff_ms",
    ] {
        assert!(
            metrics.has_line(&format!("# TYPE {histogram} histogram")),
            "{histogram}"
        );
    }
    assert!(
        !metrics.0.contains("# EOF"),
        "OpenMetrics marker in 0.0.4 text"
    );
}

#[tokio::test]
async fn a_removed_function_leaves_the_gauges_and_the_management_port_serves_the_same() {
    let service = service(ApiConfig::default());
    service.register_local("gone", json!({})).await;
    service.enqueue("gone", json!(1)).await;
    let before = service.scrape().await;
    assert_eq!(before.value("function_queue_depth{function=\"gone\"}"), 1.0);

    let deleted = service.call("DELETE", "/v1/functions/gone", None).await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    let after = service.scrape().await;
    assert_eq!(after.find("function_queue_depth{function=\"gone\"}"), None);
    assert_eq!(after.find("function_in_flight{function=\"gone\"}"), None);
    // Counters are history: they stay.
    assert_eq!(
        after.value("function_enqueue_total{function=\"gone\"}"),
        1.0
    );

    let management = management_router(service.state.clone());
    let scraped = send(
        &management,
        Request::get("/actuator/prometheus")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(scraped.status, StatusCode::OK);
    assert_eq!(scraped.text, after.0);
    let health = send(
        &management,
        Request::get("/actuator/health")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(health.json(), json!({"status": "UP"}));
}
