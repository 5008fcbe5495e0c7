//! The router over the real scheduler (in-memory stores), driven through
//! `tower::ServiceExt::oneshot`: no socket, no sleeps.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use core_types::{Dispatch, DispatchOutcome, DispatchRequest, DispatchSuccess, ErrorInfo};
use http_api::{ApiConfig, AppState, router};
use scheduler::{Scheduler, SchedulerConfig, SchedulerParts};
use serde_json::{Value, json};
use tower::ServiceExt;

/// Echoes the input, except `{"fail": true}`, which fails the attempt, and
/// `{"hang": true}`, which never answers.
struct Echo;

#[async_trait::async_trait]
impl Dispatch for Echo {
    async fn dispatch(&self, request: DispatchRequest) -> DispatchOutcome {
        let input = request.input.to_value();
        if input.get("hang") == Some(&Value::Bool(true)) {
            return std::future::pending().await;
        }
        if input.get("fail") == Some(&Value::Bool(true)) {
            return Err(ErrorInfo::new(
                core_types::ErrorCode::FunctionError,
                "asked to fail",
            ));
        }
        Ok(DispatchSuccess::warm(request.input))
    }
}

struct Api {
    app: http_api::Api,
    state: AppState,
    scheduler: Scheduler,
}

fn api_with(config: ApiConfig) -> Api {
    let state = AppState::assemble(
        SchedulerParts::in_memory(Arc::new(Echo)),
        SchedulerConfig::default(),
        config,
    );
    Api {
        app: router(state.clone()),
        scheduler: state.scheduler().clone(),
        state,
    }
}

fn api() -> Api {
    api_with(ApiConfig::default())
}

struct Answer {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    body: Value,
}

impl Api {
    async fn send(&self, request: Request<Body>) -> Answer {
        let response = self.app.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&bytes)))
        };
        Answer {
            status,
            headers,
            body,
        }
    }

    async fn call(&self, method: &str, uri: &str, body: Option<Value>) -> Answer {
        let builder = Request::builder().method(method).uri(uri);
        let request = match body {
            Some(body) => builder
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(body.to_string())),
            None => builder.body(Body::empty()),
        };
        self.send(request.unwrap()).await
    }

    async fn register(&self, spec: Value) -> Answer {
        self.call("POST", "/v1/functions", Some(spec)).await
    }

    async fn register_echo(&self, name: &str) {
        let answer = self
            .register(json!({"name": name, "image": "nanofaas/echo", "executionMode": "LOCAL"}))
            .await;
        assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.body);
    }
}

fn assert_error(answer: &Answer, status: StatusCode, code: &str) {
    assert_eq!(answer.status, status, "{}", answer.body);
    assert_eq!(answer.body["error"], code, "{}", answer.body);
    assert!(answer.body["message"].is_string(), "{}", answer.body);
    assert!(
        answer.headers[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("application/json")
    );
}

#[tokio::test]
async fn functions_register_list_get_delete() {
    let api = api();
    let created = api
        .register(json!({"name": "zeta", "image": "img", "executionMode": "LOCAL", "resources": {"cpu": "1"}}))
        .await;
    assert_eq!(created.status, StatusCode::CREATED);
    assert_eq!(created.body["name"], "zeta");
    assert_eq!(created.body["timeoutMs"], 30_000);
    assert_eq!(created.body["concurrency"], 4);
    assert_eq!(created.body["resources"], json!({"cpu": "1"}));
    assert_eq!(created.body["requestedExecutionMode"], "LOCAL");
    assert_eq!(created.body["effectiveExecutionMode"], "LOCAL");
    assert!(created.body["createdAt"].is_string());
    api.register_echo("alpha").await;

    let again = api
        .register(json!({"name": "alpha", "image": "img", "executionMode": "LOCAL"}))
        .await;
    assert_error(&again, StatusCode::CONFLICT, "FUNCTION_EXISTS");

    let list = api.call("GET", "/v1/functions", None).await;
    assert_eq!(list.status, StatusCode::OK);
    let names: Vec<&str> = list
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["alpha", "zeta"]);

    let one = api.call("GET", "/v1/functions/zeta", None).await;
    assert_eq!(one.status, StatusCode::OK);
    assert_eq!(one.body, created.body);

    let deleted = api.call("DELETE", "/v1/functions/zeta", None).await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    assert_error(
        &api.call("GET", "/v1/functions/zeta", None).await,
        StatusCode::NOT_FOUND,
        "NOT_FOUND",
    );
    assert_error(
        &api.call("DELETE", "/v1/functions/zeta", None).await,
        StatusCode::NOT_FOUND,
        "NOT_FOUND",
    );
    assert_error(
        &api.call("GET", "/v1/functions/no%20such", None).await,
        StatusCode::NOT_FOUND,
        "NOT_FOUND",
    );
}

#[tokio::test]
async fn validation_lists_every_invalid_field() {
    let api = api();
    let answer = api
        .register(json!({"name": "1bad", "image": " ", "executionMode": "POOL", "timeoutMs": 0, "concurrency": 0}))
        .await;
    assert_error(&answer, StatusCode::BAD_REQUEST, "VALIDATION_ERROR");
    let fields: Vec<&str> = answer.body["details"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["field"].as_str().unwrap())
        .collect();
    for field in ["name", "image", "timeoutMs", "concurrency", "endpointUrl"] {
        assert!(fields.contains(&field), "{field} missing from {fields:?}");
    }
    let not_object = api.register(json!([1, 2])).await;
    assert_error(&not_object, StatusCode::BAD_REQUEST, "VALIDATION_ERROR");
    assert_eq!(api.call("GET", "/v1/functions", None).await.body, json!([]));
}

#[tokio::test]
async fn sync_invoke_is_answered_by_the_background_loop() {
    let api = api();
    api.scheduler.start_background();
    api.register_echo("echo").await;

    let request = Request::post("/v1/functions/echo:invoke")
        .header(header::CONTENT_TYPE, "application/json")
        .header("X-Trace-Id", "trace-1")
        .body(Body::from(json!({"input": {"hello": "world"}}).to_string()))
        .unwrap();
    let answer = api.send(request).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert_eq!(answer.body["status"], "success");
    assert_eq!(answer.body["output"], json!({"hello": "world"}));
    let id = answer.body["executionId"].as_str().unwrap();
    assert_eq!(answer.headers["x-execution-id"], id);

    let status = api.call("GET", &format!("/v1/executions/{id}"), None).await;
    assert_eq!(status.status, StatusCode::OK);
    assert_eq!(status.body["status"], "success");
    assert_eq!(status.body["functionName"], "echo");
    assert_eq!(status.body["attempt"], 1);

    // A failing function is still a 200, with the error in the body.
    let failed = api
        .register(json!({"name": "once", "image": "i", "executionMode": "LOCAL", "maxRetries": 1}))
        .await;
    assert_eq!(failed.status, StatusCode::CREATED);
    let answer = api
        .call(
            "POST",
            "/v1/functions/once:invoke",
            Some(json!({"input": {"fail": true}})),
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.body["status"], "error");
    assert_eq!(answer.body["error"]["code"], "FUNCTION_ERROR");
    api.scheduler
        .shutdown(std::time::Duration::from_secs(1))
        .await;
}

fn invoke(name: &str, input: Value, headers: &[(&str, &str)]) -> Request<Body> {
    let mut request = Request::post(format!("/v1/functions/{name}:invoke"))
        .header(header::CONTENT_TYPE, "application/json");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request
        .body(Body::from(json!({ "input": input }).to_string()))
        .unwrap()
}

#[tokio::test]
async fn without_a_loop_a_sync_invoke_drives_itself() {
    let api = api();
    api.register_echo("echo").await;
    let answer = api.send(invoke("echo", json!({"n": 1}), &[])).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert_eq!(answer.body["status"], "success");
    assert_eq!(answer.body["output"], json!({"n": 1}));
}

#[tokio::test]
async fn a_sync_invoke_waits_at_most_its_timeout_header_and_then_ends_as_timeout() {
    let api = api();
    api.register_echo("echo").await;
    let answer = api
        .send(invoke(
            "echo",
            json!({"hang": true}),
            &[("X-Timeout-Ms", "20")],
        ))
        .await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.body["status"], "timeout");
    assert_eq!(answer.body["error"]["code"], "SYNC_TIMEOUT");
    assert_eq!(api.scheduler.queue_snapshot("echo").unwrap().in_flight, 0);

    for bad in ["0", "300001", "soon"] {
        let answer = api
            .send(invoke("echo", json!(1), &[("X-Timeout-Ms", bad)]))
            .await;
        assert_error(&answer, StatusCode::BAD_REQUEST, "VALIDATION_ERROR");
        assert_eq!(answer.body["details"][0]["field"], "X-Timeout-Ms");
    }
}

#[tokio::test]
async fn a_sync_replay_that_stops_waiting_does_not_end_the_shared_execution() {
    let api = api();
    api.register_echo("echo").await;
    let enqueue = Request::post("/v1/functions/echo:enqueue")
        .header(header::CONTENT_TYPE, "application/json")
        .header("Idempotency-Key", "k")
        .body(Body::from(json!({"input": {"hang": true}}).to_string()))
        .unwrap();
    let queued = api.send(enqueue).await;
    assert_eq!(queued.status, StatusCode::ACCEPTED);
    let id = queued.body["executionId"].as_str().unwrap().to_owned();

    let replay = api
        .send(invoke(
            "echo",
            json!({"hang": true}),
            &[("Idempotency-Key", "k"), ("X-Timeout-Ms", "20")],
        ))
        .await;
    assert_eq!(replay.status, StatusCode::OK);
    assert_eq!(replay.body["executionId"], id.as_str());
    assert_eq!(replay.body["status"], "running", "answered as it stands");

    let status = api.call("GET", &format!("/v1/executions/{id}"), None).await;
    assert_eq!(
        status.body["status"], "running",
        "the replay's patience ended nothing"
    );
}

#[tokio::test]
async fn deployment_functions_need_a_provider_or_their_own_endpoint() {
    let api = api();
    let deployment = json!({"name": "resize", "image": "img", "executionMode": "DEPLOYMENT"});
    let refused = api.register(deployment.clone()).await;
    assert_error(
        &refused,
        StatusCode::SERVICE_UNAVAILABLE,
        "PROVIDER_UNAVAILABLE",
    );
    let listed = api.call("GET", "/v1/functions", None).await;
    assert_eq!(listed.body, json!([]), "nothing stays registered");

    let mut with_endpoint = deployment;
    with_endpoint["endpointUrl"] = json!("http://127.0.0.1:9/invoke");
    let created = api.register(with_endpoint).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    assert_eq!(created.body["executionMode"], "DEPLOYMENT");
    assert_eq!(created.body["requestedExecutionMode"], "DEPLOYMENT");
    assert_eq!(created.body["effectiveExecutionMode"], "POOL");

    let replicas = api
        .call(
            "PUT",
            "/v1/functions/resize/replicas",
            Some(json!({"replicas": 2})),
        )
        .await;
    assert_error(&replicas, StatusCode::BAD_REQUEST, "VALIDATION_ERROR");
}

#[tokio::test]
async fn replicas_refuse_bad_counts_and_unknown_functions() {
    let api = api();
    api.register_echo("echo").await;
    for bad in [
        json!({}),
        json!({"replicas": -1}),
        json!({"replicas": "2"}),
        json!({"replicas": 1.5}),
    ] {
        let answer = api
            .call("PUT", "/v1/functions/echo/replicas", Some(bad.clone()))
            .await;
        assert_error(&answer, StatusCode::BAD_REQUEST, "VALIDATION_ERROR");
    }
    let missing = api
        .call(
            "PUT",
            "/v1/functions/nope/replicas",
            Some(json!({"replicas": 1})),
        )
        .await;
    assert_error(&missing, StatusCode::NOT_FOUND, "NOT_FOUND");
}

#[tokio::test]
async fn enqueue_then_drain_once_answers_after_the_state_moved() {
    let api = api();
    api.register_echo("echo").await;
    let queued = api
        .call(
            "POST",
            "/v1/functions/echo:enqueue",
            Some(json!({"input": [1, 2]})),
        )
        .await;
    assert_eq!(queued.status, StatusCode::ACCEPTED);
    assert_eq!(queued.body["status"], "queued");
    let id = queued.body["executionId"].as_str().unwrap().to_owned();
    assert_eq!(queued.headers["x-execution-id"], id.as_str());

    let before = api.call("GET", &format!("/v1/executions/{id}"), None).await;
    assert_eq!(before.body["status"], "queued");

    let drained = api
        .call("POST", "/v1/internal/functions/echo:drain-once", None)
        .await;
    assert_eq!(drained.status, StatusCode::OK);
    assert_eq!(drained.body, json!({"dispatched": true}));
    let after = api.call("GET", &format!("/v1/executions/{id}"), None).await;
    assert_eq!(after.body["status"], "success");
    assert_eq!(after.body["output"], json!([1, 2]));

    let empty = api
        .call("POST", "/v1/internal/functions/echo:drain-once", None)
        .await;
    assert_eq!(empty.body, json!({"dispatched": false}));
    assert_error(
        &api.call("POST", "/v1/internal/functions/nope:drain-once", None)
            .await,
        StatusCode::NOT_FOUND,
        "NOT_FOUND",
    );
    assert_error(
        &api.call("GET", "/v1/executions/nope", None).await,
        StatusCode::NOT_FOUND,
        "NOT_FOUND",
    );
}

#[tokio::test]
async fn enqueue_on_a_full_queue_is_429_with_retry_after() {
    let api = api();
    api.register(json!({"name": "tiny", "image": "i", "executionMode": "LOCAL", "queueSize": 1}))
        .await;
    let first = api
        .call(
            "POST",
            "/v1/functions/tiny:enqueue",
            Some(json!({"input": 1})),
        )
        .await;
    assert_eq!(first.status, StatusCode::ACCEPTED);
    let second = api
        .call(
            "POST",
            "/v1/functions/tiny:enqueue",
            Some(json!({"input": 2})),
        )
        .await;
    assert_error(&second, StatusCode::TOO_MANY_REQUESTS, "QUEUE_FULL");
    assert!(second.headers.contains_key(header::RETRY_AFTER));
    assert_error(
        &api.call(
            "POST",
            "/v1/functions/nope:enqueue",
            Some(json!({"input": 1})),
        )
        .await,
        StatusCode::NOT_FOUND,
        "NOT_FOUND",
    );
}

#[tokio::test]
async fn idempotency_key_returns_the_same_execution() {
    let api = api();
    api.register_echo("echo").await;
    let send = |input: Value| {
        Request::post("/v1/functions/echo:enqueue")
            .header(header::CONTENT_TYPE, "application/json")
            .header("Idempotency-Key", "k-1")
            .body(Body::from(json!({ "input": input }).to_string()))
            .unwrap()
    };
    let first = api.send(send(json!(1))).await;
    let again = api.send(send(json!(1))).await;
    assert_eq!(first.body["executionId"], again.body["executionId"]);

    let drained = api
        .call("POST", "/v1/internal/functions/echo:drain-once", None)
        .await;
    assert_eq!(drained.body, json!({"dispatched": true}));
    let after_it_ran = api.send(send(json!(1))).await;
    assert_eq!(after_it_ran.status, StatusCode::ACCEPTED);
    assert_eq!(after_it_ran.body["executionId"], first.body["executionId"]);
    assert_eq!(
        after_it_ran.body["status"], "success",
        "a replay tells the truth"
    );
    assert_eq!(after_it_ran.body["output"], json!(1));
    let reused = api.send(send(json!(2))).await;
    assert_error(
        &reused,
        StatusCode::UNPROCESSABLE_ENTITY,
        "IDEMPOTENCY_KEY_REUSED",
    );
}

#[tokio::test]
async fn callback_completes_a_queued_execution() {
    let api = api();
    api.register_echo("echo").await;
    let queued = api
        .call(
            "POST",
            "/v1/functions/echo:enqueue",
            Some(json!({"input": 1})),
        )
        .await;
    let id = queued.body["executionId"].as_str().unwrap().to_owned();

    let complete = format!("/v1/internal/executions/{id}:complete");
    let bad = api
        .call("POST", &complete, Some(json!({"status": "running"})))
        .await;
    assert_error(&bad, StatusCode::BAD_REQUEST, "VALIDATION_ERROR");

    let request = Request::post(&complete)
        .header(header::CONTENT_TYPE, "application/json")
        .header("X-Dispatch-Attempt", "1")
        .body(Body::from(
            json!({"success": true, "output": {"from": "callback"}}).to_string(),
        ))
        .unwrap();
    let done = api.send(request).await;
    assert_eq!(done.status, StatusCode::NO_CONTENT);

    let record = api.call("GET", &format!("/v1/executions/{id}"), None).await;
    assert_eq!(record.body["status"], "success");
    assert_eq!(record.body["output"], json!({"from": "callback"}));
    // Completed while queued: never dispatched afterwards.
    let drained = api
        .call("POST", "/v1/internal/functions/echo:drain-once", None)
        .await;
    assert_eq!(drained.body, json!({"dispatched": false}));
    // A late callback is ignored, still 204.
    let late = api
        .call(
            "POST",
            &complete,
            Some(json!({"status": "error", "error": "late"})),
        )
        .await;
    assert_eq!(late.status, StatusCode::NO_CONTENT);
    assert_eq!(
        api.call("GET", &format!("/v1/executions/{id}"), None)
            .await
            .body["status"],
        "success"
    );
    let unknown = api
        .call(
            "POST",
            "/v1/internal/executions/nope:complete",
            Some(json!({"success": true})),
        )
        .await;
    assert_error(&unknown, StatusCode::NOT_FOUND, "NOT_FOUND");
}

#[tokio::test]
async fn delete_ends_queued_executions_with_function_removed() {
    let api = api();
    api.register_echo("echo").await;
    let queued = api
        .call(
            "POST",
            "/v1/functions/echo:enqueue",
            Some(json!({"input": 1})),
        )
        .await;
    let id = queued.body["executionId"].as_str().unwrap().to_owned();
    assert_eq!(
        api.call("DELETE", "/v1/functions/echo", None).await.status,
        StatusCode::NO_CONTENT
    );
    let record = api.call("GET", &format!("/v1/executions/{id}"), None).await;
    assert_eq!(record.body["status"], "error");
    assert_eq!(record.body["error"]["code"], "FUNCTION_REMOVED");
}

/// Method, path, content type, body, and the expected status and error code.
type Refusal<'a> = (
    &'a str,
    &'a str,
    Option<&'a str>,
    &'a str,
    StatusCode,
    &'a str,
);

#[tokio::test]
async fn every_refusal_is_a_json_error_and_changes_nothing() {
    let api = api_with(ApiConfig {
        max_body_bytes: 64,
        ..ApiConfig::default()
    });
    api.register_echo("echo").await;
    let json = Some("application/json");
    let too_big = format!("{{\"input\": \"{}\"}}", "x".repeat(200));
    let refusals: &[Refusal<'_>] = &[
        (
            "POST",
            "/v1/functions",
            json,
            "{\"name\": ",
            StatusCode::BAD_REQUEST,
            "MALFORMED_JSON",
        ),
        (
            "POST",
            "/v1/functions/echo:invoke",
            json,
            "not json",
            StatusCode::BAD_REQUEST,
            "MALFORMED_JSON",
        ),
        (
            "POST",
            "/v1/functions/echo:invoke",
            Some("text/plain"),
            "{\"input\": 1}",
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UNSUPPORTED_MEDIA_TYPE",
        ),
        (
            "POST",
            "/v1/functions",
            None,
            "{}",
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UNSUPPORTED_MEDIA_TYPE",
        ),
        (
            "POST",
            "/v1/functions/echo:enqueue",
            json,
            &too_big,
            StatusCode::PAYLOAD_TOO_LARGE,
            "PAYLOAD_TOO_LARGE",
        ),
        (
            "POST",
            "/v1/functions/echo:enqueue",
            json,
            "{\"input\": null}",
            StatusCode::BAD_REQUEST,
            "VALIDATION_ERROR",
        ),
        ("GET", "/nope", None, "", StatusCode::NOT_FOUND, "NOT_FOUND"),
        (
            "POST",
            "/v1/functions/echo:explode",
            json,
            "{\"input\": 1}",
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
        ),
        (
            "PUT",
            "/v1/functions",
            None,
            "",
            StatusCode::METHOD_NOT_ALLOWED,
            "METHOD_NOT_ALLOWED",
        ),
        (
            "POST",
            "/v1/functions/echo",
            json,
            "{}",
            StatusCode::METHOD_NOT_ALLOWED,
            "METHOD_NOT_ALLOWED",
        ),
        (
            "DELETE",
            "/v1/executions/x",
            None,
            "",
            StatusCode::METHOD_NOT_ALLOWED,
            "METHOD_NOT_ALLOWED",
        ),
    ];
    for &(method, uri, content_type, body, status, code) in refusals {
        let mut request = Request::builder().method(method).uri(uri);
        if let Some(content_type) = content_type {
            request = request.header(header::CONTENT_TYPE, content_type);
        }
        let answer = api
            .send(request.body(Body::from(body.to_owned())).unwrap())
            .await;
        assert_error(&answer, status, code);
    }

    let missing_input = api
        .call(
            "POST",
            "/v1/functions/echo:enqueue",
            Some(json!({"metadata": 3})),
        )
        .await;
    assert_error(&missing_input, StatusCode::BAD_REQUEST, "VALIDATION_ERROR");
    let fields: Vec<_> = missing_input.body["details"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["input", "metadata"]);

    let queue = api.scheduler.queue_snapshot("echo").unwrap();
    assert!(queue.queued.is_empty() && queue.in_flight == 0, "{queue:?}");
    let functions = api.call("GET", "/v1/functions", None).await;
    assert_eq!(
        functions.body.as_array().unwrap().len(),
        1,
        "{}",
        functions.body
    );
}

#[tokio::test]
async fn health_is_up() {
    let api = api();
    for path in [
        "/actuator/health",
        "/actuator/health/liveness",
        "/actuator/health/readiness",
    ] {
        let answer = api.call("GET", path, None).await;
        assert_eq!(answer.status, StatusCode::OK);
        assert_eq!(answer.body, json!({"status": "UP"}));
    }
    let management = http_api::management_router(api.state.clone())
        .oneshot(
            Request::get("/actuator/health")
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(management.status(), StatusCode::OK);
}

#[tokio::test]
async fn once_shutdown_begins_readiness_is_out_of_service_and_liveness_stays_up() {
    let api = api();
    api.state
        .scheduler()
        .shutdown(std::time::Duration::ZERO)
        .await;
    let readiness = api.call("GET", "/actuator/health/readiness", None).await;
    assert_eq!(readiness.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(readiness.body, json!({"status": "OUT_OF_SERVICE"}));
    for path in ["/actuator/health", "/actuator/health/liveness"] {
        let answer = api.call("GET", path, None).await;
        assert_eq!(answer.status, StatusCode::OK, "{path}");
        assert_eq!(answer.body, json!({"status": "UP"}), "{path}");
    }
}

#[tokio::test]
async fn an_idempotent_replay_is_recognised_however_its_json_is_spelled() {
    let api = api();
    api.register_echo("echo").await;
    let send = |body: &'static str| {
        Request::post("/v1/functions/echo:enqueue")
            .header(header::CONTENT_TYPE, "application/json")
            .header("Idempotency-Key", "k-1")
            .body(Body::from(body))
            .unwrap()
    };
    let first = api.send(send(r#"{"input":{"a":1,"b":2}}"#)).await;
    let respelled = api
        .send(send(
            r#"{ "input" : { "b": 2, "a": 1 }, "metadata": null }"#,
        ))
        .await;
    assert_eq!(respelled.status, StatusCode::ACCEPTED, "{}", respelled.body);
    assert_eq!(first.body["executionId"], respelled.body["executionId"]);
}
