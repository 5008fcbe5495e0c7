//! `GET /openapi.json` is the API's route table: it documents exactly the operations the
//! router serves (the table below says which), its schemas describe the real answers,
//! and a 405 lists the methods it gives the path.
//!
//! Everything goes through the real router and scheduler with `tower::ServiceExt::oneshot`.

use std::collections::BTreeSet;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode, header};
use core_types::{Dispatch, DispatchOutcome, DispatchRequest, DispatchSuccess, headers};
use http_api::{ApiConfig, AppState, router};
use scheduler::{Scheduler, SchedulerConfig, SchedulerParts};
use serde_json::{Value, json};
use tower::ServiceExt;

/// Every operation of the API. Adding a route? Add its row here; the tests then fail
/// until it is registered in `router()`, annotated with `#[utoipa::path]` and listed in
/// `ApiDoc` (`src/openapi.rs`).
const ROUTES: &[(&str, &str)] = &[
    ("GET", "/v1/functions"),
    ("POST", "/v1/functions"),
    ("GET", "/v1/functions/{name}"),
    ("DELETE", "/v1/functions/{name}"),
    ("PUT", "/v1/functions/{name}/replicas"),
    ("GET", "/v1/functions/{name}/logs"),
    ("POST", "/v1/functions/{name}:invoke"),
    ("POST", "/v1/functions/{name}:enqueue"),
    ("GET", "/v1/executions/{id}"),
    ("POST", "/v1/internal/executions/{id}:complete"),
    ("POST", "/v1/internal/executions/{credential}/{id}:complete"),
    ("POST", "/v1/internal/functions/{name}:drain-once"),
    // Served only with the admin API on (the fixture turns it on).
    ("GET", "/v1/admin/runtime-config"),
    ("PATCH", "/v1/admin/runtime-config"),
    ("POST", "/v1/admin/runtime-config/validate"),
    ("GET", "/actuator/health"),
    ("GET", "/actuator/health/liveness"),
    ("GET", "/actuator/health/readiness"),
    ("GET", "/actuator/prometheus"),
    ("GET", "/openapi.json"),
];

struct Echo;

#[async_trait::async_trait]
impl Dispatch for Echo {
    async fn dispatch(&self, request: DispatchRequest) -> DispatchOutcome {
        Ok(DispatchSuccess::warm(request.input))
    }
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Value,
}

async fn send(app: &http_api::Api, method: &str, uri: &str, body: Option<Value>) -> Answer {
    let request = Request::builder().method(method).uri(uri);
    let request = match body {
        Some(body) => request
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body.to_string())),
        None => request.body(Body::empty()),
    };
    let response = app.clone().oneshot(request.unwrap()).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    let body = if bytes.is_empty() {
        Value::Null
    } else if !is_json {
        // The Prometheus exposition is text; its body does not matter here.
        Value::String(String::from_utf8_lossy(&bytes).into_owned())
    } else {
        serde_json::from_slice(&bytes).unwrap_or_else(|e| {
            panic!(
                "{method} {uri}: not JSON ({e}): {}",
                String::from_utf8_lossy(&bytes)
            )
        })
    };
    Answer {
        status,
        headers,
        body,
    }
}

/// A router with something behind every path parameter: a registered function `probe`
/// and one queued execution of it, so that a documented operation answers 404 only
/// when the router does not serve it.
struct Fixture {
    app: http_api::Api,
    scheduler: Scheduler,
    execution_id: String,
}

/// The API's state with the admin routes on.
fn state() -> AppState {
    let config = ApiConfig {
        admin_api: true,
        ..ApiConfig::default()
    };
    AppState::assemble(
        SchedulerParts::in_memory(Arc::new(Echo)),
        SchedulerConfig::default(),
        config,
    )
}

async fn fixture() -> Fixture {
    let state = state();
    let scheduler = state.scheduler().clone();
    let app = router(state);
    let function = json!({"name": "probe", "image": "img", "executionMode": "LOCAL"});
    let registered = send(&app, "POST", "/v1/functions", Some(function)).await;
    assert_eq!(
        registered.status,
        StatusCode::CREATED,
        "{}",
        registered.body
    );
    let queued = send(
        &app,
        "POST",
        "/v1/functions/probe:enqueue",
        Some(json!({"input": 1})),
    )
    .await;
    assert_eq!(queued.status, StatusCode::ACCEPTED, "{}", queued.body);
    let execution_id = queued.body["executionId"].as_str().unwrap().to_owned();
    Fixture {
        app,
        scheduler,
        execution_id,
    }
}

impl Fixture {
    /// The path template with the fixture's values in place of its parameters.
    fn path(&self, template: &str) -> String {
        let concrete = template
            .replace("{name}", "probe")
            .replace("{id}", &self.execution_id)
            .replace("{credential}", "any-credential");
        assert!(
            !concrete.contains('{'),
            "no fixture value for a parameter of {template}: add one to Fixture::path"
        );
        concrete
    }

    /// Requests the operation: with an empty JSON object as body where there can be
    /// one, so it reaches its handler (which may refuse the body, but not the route).
    async fn request(&self, method: &str, template: &str) -> Answer {
        let body = matches!(method, "POST" | "PUT" | "PATCH").then(|| json!({}));
        send(&self.app, method, &self.path(template), body).await
    }
}

/// Neither the unknown-route answer nor a wrong method: the router has a handler for it.
fn is_served(answer: &Answer) -> bool {
    !matches!(
        answer.status,
        StatusCode::NOT_FOUND | StatusCode::METHOD_NOT_ALLOWED
    )
}

async fn document() -> Value {
    let answer = send(&fixture().await.app, "GET", "/openapi.json", None).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert!(
        answer.body["openapi"].as_str().unwrap().starts_with("3."),
        "{}",
        answer.body["openapi"]
    );
    answer.body
}

const METHODS: [&str; 5] = ["get", "post", "put", "patch", "delete"];

/// `(METHOD, path)` of every operation the document describes.
fn documented_operations(document: &Value) -> BTreeSet<(String, String)> {
    let mut operations = BTreeSet::new();
    for (path, item) in document["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            assert!(
                METHODS.contains(&method.as_str()),
                "{path}: unexpected {method}"
            );
            operations.insert((method.to_uppercase(), path.clone()));
        }
    }
    operations
}

fn operation<'a>(document: &'a Value, method: &str, path: &str) -> &'a Value {
    let operation = &document["paths"][path][method.to_lowercase()];
    assert!(operation.is_object(), "{method} {path} is not documented");
    operation
}

#[tokio::test]
async fn the_document_has_exactly_the_operations_of_the_table() {
    let documented = documented_operations(&document().await);
    let mut problems = Vec::new();
    for &(method, path) in ROUTES {
        if !documented.contains(&(method.to_owned(), path.to_owned())) {
            problems.push(format!(
                "{method} {path} is not documented: annotate its handler with #[utoipa::path] \
                 and list it in ApiDoc"
            ));
        }
    }
    let tabled: BTreeSet<(&str, &str)> = ROUTES.iter().copied().collect();
    for (method, path) in &documented {
        if !tabled.contains(&(method.as_str(), path.as_str())) {
            problems.push(format!(
                "{method} {path} is documented but not in the ROUTES table"
            ));
        }
    }
    assert!(problems.is_empty(), "\n{}", problems.join("\n"));
}

#[tokio::test]
async fn every_documented_operation_is_served_by_the_router() {
    let document = document().await;
    let mut problems = Vec::new();
    for (method, path) in documented_operations(&document) {
        let answer = fixture().await.request(&method, &path).await;
        if !is_served(&answer) {
            problems.push(format!(
                "{method} {path} is documented but the router does not serve it: {} {}",
                answer.status, answer.body
            ));
        }
    }
    assert!(problems.is_empty(), "\n{}", problems.join("\n"));
}

/// Every `$ref` in `value`.
fn references(value: &Value, found: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            if let Some(Value::String(target)) = map.get("$ref") {
                found.push(target.clone());
            }
            map.values().for_each(|v| references(v, found));
        }
        Value::Array(items) => items.iter().for_each(|v| references(v, found)),
        _ => {}
    }
}

#[tokio::test]
async fn every_error_is_documented_as_the_json_error_body_and_every_reference_resolves() {
    let document = document().await;
    for (method, path) in documented_operations(&document) {
        let responses = operation(&document, &method, &path)["responses"]
            .as_object()
            .unwrap();
        assert!(!responses.is_empty(), "{method} {path} has no responses");
        for (status, response) in responses {
            // A probe's 503 is the actuator's health document (`OUT_OF_SERVICE`), as
            // Spring Boot answers it, not a refusal of the request.
            let probe = path.starts_with("/actuator/health");
            if status.as_str() >= "400" && !probe {
                assert_eq!(
                    response["content"]["application/json"]["schema"]["$ref"],
                    "#/components/schemas/ErrorBody",
                    "{method} {path} {status}"
                );
            }
        }
    }
    let mut found = Vec::new();
    references(&document, &mut found);
    assert!(found.len() > 20, "{found:?}");
    for target in found {
        let name = target
            .strip_prefix("#/components/schemas/")
            .unwrap_or_else(|| panic!("unexpected reference {target}"));
        assert!(
            document["components"]["schemas"][name].is_object(),
            "{target} does not resolve"
        );
    }
    let error_body = &document["components"]["schemas"]["ErrorBody"];
    assert_eq!(error_body["required"], json!(["error", "message"]));
    let listed = &document["components"]["schemas"]["ErrorCode"]["enum"];
    for code in [
        "VALIDATION_ERROR",
        "MALFORMED_JSON",
        "UNSUPPORTED_MEDIA_TYPE",
        "PAYLOAD_TOO_LARGE",
        "NOT_FOUND",
        "METHOD_NOT_ALLOWED",
        "FUNCTION_EXISTS",
        "IDEMPOTENCY_KEY_REUSED",
        "RATE_LIMITED",
        "SYNC_QUEUE_REJECTED",
        "QUEUE_FULL",
        "PROVIDER_UNAVAILABLE",
        "REVISION_MISMATCH",
        "INVALID_RUNTIME_CONFIG",
        "QUEUE_TIMEOUT",
        "SYNC_TIMEOUT",
        "INTERNAL_ERROR",
    ] {
        assert!(
            listed.as_array().unwrap().contains(&json!(code)),
            "{code} is not listed in {listed}"
        );
    }
}

/// The request headers an operation documents, lowercase.
fn header_parameters(operation: &Value) -> BTreeSet<String> {
    operation["parameters"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["in"] == "header")
        .map(|p| p["name"].as_str().unwrap().to_ascii_lowercase())
        .collect()
}

/// The response headers of one documented status, lowercase.
fn response_headers(operation: &Value, status: &str) -> BTreeSet<String> {
    operation["responses"][status]["headers"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(name, _)| name.to_ascii_lowercase())
        .collect()
}

#[tokio::test]
async fn the_headers_the_handlers_read_and_write_are_documented() {
    let document = document().await;
    let set = |names: &[&str]| -> BTreeSet<String> {
        names.iter().map(|n| n.to_ascii_lowercase()).collect()
    };
    let retry_after = set(&[header::RETRY_AFTER.as_str()]);
    let execution_id = set(&[headers::X_EXECUTION_ID]);

    let invoke = operation(&document, "POST", "/v1/functions/{name}:invoke");
    assert_eq!(
        header_parameters(invoke),
        set(&[
            headers::IDEMPOTENCY_KEY,
            headers::X_TRACE_ID,
            headers::X_TIMEOUT_MS
        ])
    );
    assert_eq!(response_headers(invoke, "200"), execution_id);

    let enqueue = operation(&document, "POST", "/v1/functions/{name}:enqueue");
    assert_eq!(
        header_parameters(enqueue),
        set(&[headers::IDEMPOTENCY_KEY, headers::X_TRACE_ID])
    );
    assert_eq!(response_headers(enqueue, "202"), execution_id);

    let mut rejected = retry_after.clone();
    rejected.insert(headers::X_QUEUE_REJECT_REASON.to_owned());
    assert_eq!(response_headers(invoke, "429"), rejected);
    assert_eq!(response_headers(enqueue, "429"), retry_after);
    for submit in [invoke, enqueue] {
        assert_eq!(response_headers(submit, "503"), retry_after);
    }

    let complete = operation(&document, "POST", "/v1/internal/executions/{id}:complete");
    assert_eq!(
        header_parameters(complete),
        set(&[headers::X_DISPATCH_ATTEMPT])
    );
    let timeout = invoke["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "X-Timeout-Ms")
        .unwrap();
    assert_eq!(
        (&timeout["schema"]["minimum"], &timeout["schema"]["maximum"]),
        (&json!(1), &json!(300_000))
    );
}

/// The properties and required fields of a component, through its `allOf` parts.
fn shape(document: &Value, schema: &Value) -> (BTreeSet<String>, BTreeSet<String>) {
    if let Some(target) = schema["$ref"].as_str() {
        let name = target.trim_start_matches("#/components/schemas/");
        return shape(document, &document["components"]["schemas"][name]);
    }
    let mut properties: BTreeSet<String> = schema["properties"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(name, _)| name.clone())
        .collect();
    let mut required: BTreeSet<String> = schema["required"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|name| name.as_str().unwrap().to_owned())
        .collect();
    for part in schema["allOf"].as_array().into_iter().flatten() {
        let (p, r) = shape(document, part);
        properties.extend(p);
        required.extend(r);
    }
    (properties, required)
}

/// Checks a real answer against the schema its operation documents for its status:
/// every field it has is documented, every required field is there.
fn assert_documented(document: &Value, method: &str, path: &str, answer: &Answer) {
    let status = answer.status.as_str();
    let schema = &operation(document, method, path)["responses"][status]["content"]["application/json"]
        ["schema"];
    assert!(
        schema.is_object(),
        "{method} {path} answered {status}, which is not documented"
    );
    let (schema, body) = match (schema["type"].as_str(), &answer.body) {
        (Some("array"), Value::Array(items)) => (&schema["items"], items.first().unwrap()),
        _ => (schema, &answer.body),
    };
    let (properties, required) = shape(document, schema);
    let fields: BTreeSet<String> = body.as_object().unwrap().keys().cloned().collect();
    assert!(
        fields.is_subset(&properties),
        "{method} {path} {status}: undocumented fields {:?}",
        fields.difference(&properties).collect::<Vec<_>>()
    );
    assert!(
        required.is_subset(&fields),
        "{method} {path} {status}: missing required fields {:?}",
        required.difference(&fields).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn real_answers_have_the_documented_shape() {
    let document = document().await;
    let fixture = fixture().await;
    let app = &fixture.app;
    let execution = format!("/v1/executions/{}", fixture.execution_id);
    let pooled = json!({"name": "pooled", "image": "img", "executionMode": "POOL",
                        "endpointUrl": "http://127.0.0.1:1/", "resources": {"cpu": "1"}});

    let mut answers = vec![
        (
            "POST",
            "/v1/functions",
            send(app, "POST", "/v1/functions", Some(pooled)).await,
        ),
        (
            "POST",
            "/v1/functions",
            send(app, "POST", "/v1/functions", Some(json!({"name": 1}))).await,
        ),
        (
            "GET",
            "/v1/functions",
            send(app, "GET", "/v1/functions", None).await,
        ),
        (
            "GET",
            "/v1/functions/{name}",
            send(app, "GET", "/v1/functions/probe", None).await,
        ),
        (
            "GET",
            "/v1/executions/{id}",
            send(app, "GET", &execution, None).await,
        ),
        (
            "POST",
            "/v1/internal/functions/{name}:drain-once",
            send(app, "POST", "/v1/internal/functions/probe:drain-once", None).await,
        ),
        (
            "GET",
            "/v1/executions/{id}",
            send(app, "GET", &execution, None).await,
        ),
        (
            "POST",
            "/v1/functions/{name}:enqueue",
            send(
                app,
                "POST",
                "/v1/functions/nobody:enqueue",
                Some(json!({"input": 1})),
            )
            .await,
        ),
        (
            "GET",
            "/actuator/health",
            send(app, "GET", "/actuator/health", None).await,
        ),
    ];
    // A sync invoke is answered once the loop has run it.
    fixture.scheduler.start_background();
    let invoke = json!({"input": {"a": 1}, "metadata": {"k": "v"}});
    answers.push((
        "POST",
        "/v1/functions/{name}:invoke",
        send(app, "POST", "/v1/functions/probe:invoke", Some(invoke)).await,
    ));
    fixture
        .scheduler
        .shutdown(std::time::Duration::from_secs(1))
        .await;

    let statuses: Vec<u16> = answers.iter().map(|(.., a)| a.status.as_u16()).collect();
    assert_eq!(statuses, [201, 400, 200, 200, 200, 200, 200, 404, 200, 200]);
    let (queued, finished, invoked) = (&answers[4].2.body, &answers[6].2.body, &answers[9].2.body);
    assert_eq!(queued["status"], "queued", "{queued}");
    assert_eq!(finished["status"], "success", "{finished}");
    assert_eq!(invoked["output"], json!({"a": 1}), "{invoked}");
    for (method, path, answer) in &answers {
        assert_documented(&document, method, path, answer);
    }
}

/// `Allow` as a set of methods, whatever the spacing.
fn allow(answer: &Answer) -> BTreeSet<String> {
    let value = answer
        .headers
        .get(header::ALLOW)
        .unwrap_or_else(|| panic!("no Allow on {} {}", answer.status, answer.body));
    value
        .to_str()
        .unwrap()
        .split(',')
        .map(|m| m.trim().to_owned())
        .collect()
}

#[tokio::test]
async fn a_wrong_method_is_told_which_methods_the_resource_allows() {
    let cases: [(&str, &str, &[&str]); 7] = [
        // Made by the handler: a function has no POST, only its actions do.
        ("POST", "/v1/functions/probe", &["GET", "HEAD", "DELETE"]),
        ("PATCH", "/v1/functions/probe", &["GET", "HEAD", "DELETE"]),
        ("PUT", "/v1/functions", &["GET", "HEAD", "POST"]),
        ("PUT", "/v1/functions/probe:invoke", &["POST"]),
        ("PATCH", "/v1/functions/probe:enqueue", &["POST"]),
        ("DELETE", "/v1/executions/{id}", &["GET", "HEAD"]),
        ("GET", "/v1/internal/functions/probe:drain-once", &["POST"]),
    ];
    for (method, template, allowed) in cases {
        let fixture = fixture().await;
        let uri = fixture.path(template);
        let answer = send(&fixture.app, method, &uri, Some(json!({}))).await;
        assert_eq!(
            answer.status,
            StatusCode::METHOD_NOT_ALLOWED,
            "{method} {uri}: {}",
            answer.body
        );
        assert_eq!(answer.body["error"], "METHOD_NOT_ALLOWED");
        let expected: BTreeSet<String> = allowed.iter().map(|m| (*m).to_owned()).collect();
        assert_eq!(allow(&answer), expected, "{method} {uri}");
        for &method in allowed {
            let answer = send(&fixture.app, method, &uri, None).await;
            assert!(
                is_served(&answer),
                "Allow of {uri} lists {method}, which answers {}",
                answer.status
            );
        }
    }
}

#[tokio::test]
async fn a_wrong_method_on_an_unknown_action_is_an_unknown_route() {
    let fixture = fixture().await;
    for (method, uri) in [
        ("PUT", "/v1/functions/probe:explode"),
        ("GET", "/v1/internal/functions/probe"),
        ("PUT", "/v1/internal/executions/x:cancel"),
    ] {
        let answer = send(&fixture.app, method, uri, None).await;
        assert_eq!(
            answer.status,
            StatusCode::NOT_FOUND,
            "{method} {uri}: {} {:?}",
            answer.body,
            answer.headers
        );
        assert_eq!(answer.body["error"], "NOT_FOUND");
        assert!(
            answer.headers.get(header::ALLOW).is_none(),
            "{method} {uri}"
        );
    }
}

#[tokio::test]
async fn the_management_port_tells_its_methods_too() {
    let app = http_api::management_router(state());
    let answer = send(&app, "POST", "/actuator/health/readiness", None).await;
    assert_eq!(answer.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(answer.body["error"], "METHOD_NOT_ALLOWED");
    assert_eq!(
        allow(&answer),
        BTreeSet::from(["GET".to_owned(), "HEAD".to_owned()])
    );
}
