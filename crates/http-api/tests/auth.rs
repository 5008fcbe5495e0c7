//! Authentication at the HTTP level (api.md "Authentication (decided)"): every route of
//! the router, asked with no token, a wrong token and each role's token, answers
//! exactly the status of the table; and a runtime callback completes an execution only
//! with the credential its dispatch carried.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use auth::{CallbackKey, Credential, Tokens};
use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode, header};
use core_types::testing::ManualClock;
use core_types::{
    Dispatch, DispatchOutcome, DispatchRequest, DispatchSuccess, ExecutionId, FunctionName,
    Timestamp,
};
use http_api::{ApiAuth, ApiConfig, AppState, router};
use scheduler::{CallbackSigning, Scheduler, SchedulerConfig, SchedulerParts};
use serde_json::{Value, json};
use tower::ServiceExt;

const ADMIN: &str = "admin-token-0123456789";
const INVOKER: &str = "invoker-token-0123456789";
const READER: &str = "reader-token-0123456789";
const TOKENS: &str = "admin admin-token-0123456789 ops\n\
                      invoker invoker-token-0123456789 app\n\
                      reader reader-token-0123456789 dashboards\n";
const CALLBACK_BASE: &str = "http://control-plane/v1/internal/executions";

/// Echoes at once, except an input of `"park"`, whose dispatch never answers (its
/// execution stays running until a callback ends it). Keeps every request it saw.
#[derive(Default)]
struct Recording {
    seen: Mutex<Vec<DispatchRequest>>,
}

#[async_trait::async_trait]
impl Dispatch for Recording {
    async fn dispatch(&self, request: DispatchRequest) -> DispatchOutcome {
        let park = request.input.to_value() == json!("park");
        self.seen.lock().unwrap().push(request.clone());
        if park {
            std::future::pending::<()>().await;
        }
        Ok(DispatchSuccess::warm(request.input))
    }
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Value,
}

/// A router with authentication on (and the admin API), a POOL function `probe` and
/// one queued execution of it.
struct Fixture {
    app: http_api::Api,
    scheduler: Scheduler,
    dispatch: Arc<Recording>,
    clock: Arc<ManualClock>,
    key: CallbackKey,
    execution_id: String,
}

async fn fixture_with(metrics_require_auth: bool) -> Fixture {
    let key = CallbackKey::from_bytes([42; 32]);
    let auth = ApiAuth::new(
        Tokens::parse(TOKENS).unwrap(),
        key.clone(),
        metrics_require_auth,
    );
    let dispatch = Arc::new(Recording::default());
    let clock = Arc::new(ManualClock::starting_at(Timestamp::from_millis(
        1_800_000_000_000,
    )));
    let mut parts = SchedulerParts::in_memory(Arc::clone(&dispatch) as Arc<dyn Dispatch>);
    parts.clock = Arc::clone(&clock) as _;
    let state = AppState::assemble(
        parts,
        SchedulerConfig {
            callback_base_url: Some(CALLBACK_BASE.into()),
            callback_signer: Some(CallbackSigning(Arc::new(key.clone()))),
            ..SchedulerConfig::default()
        },
        ApiConfig {
            admin_api: true,
            auth: Some(Arc::new(auth)),
            ..ApiConfig::default()
        },
    );
    let scheduler = state.scheduler().clone();
    let app = router(state);
    let mut fixture = Fixture {
        app,
        scheduler,
        dispatch,
        clock,
        key,
        execution_id: String::new(),
    };
    let function = json!({
        "name": "probe", "image": "img", "executionMode": "POOL",
        "endpointUrl": "http://127.0.0.1:9/invoke", "timeoutMs": 1000,
    });
    let registered = fixture.post("/v1/functions", Some(ADMIN), &function).await;
    assert_eq!(
        registered.status,
        StatusCode::CREATED,
        "{}",
        registered.body
    );
    fixture.execution_id = fixture.enqueue(json!(1)).await;
    fixture
}

async fn fixture() -> Fixture {
    fixture_with(false).await
}

impl Fixture {
    async fn send(
        &self,
        method: &str,
        uri: &str,
        token: Option<&str>,
        body: Option<&Value>,
        headers: &[(&str, &str)],
    ) -> Answer {
        let mut request = Request::builder().method(method).uri(uri);
        if let Some(token) = token {
            request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = match body {
            Some(body) => request
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(body.to_string())),
            None => request.body(Body::empty()),
        };
        let response = self.app.clone().oneshot(request.unwrap()).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        let body = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        Answer {
            status,
            headers,
            body,
        }
    }

    async fn post(&self, uri: &str, token: Option<&str>, body: &Value) -> Answer {
        self.send("POST", uri, token, Some(body), &[]).await
    }

    async fn enqueue(&self, input: Value) -> String {
        let answer = self
            .post(
                "/v1/functions/probe:enqueue",
                Some(INVOKER),
                &json!({ "input": input }),
            )
            .await;
        assert_eq!(answer.status, StatusCode::ACCEPTED, "{}", answer.body);
        answer.body["executionId"].as_str().unwrap().to_owned()
    }

    async fn assert_running(&self, id: &str) {
        let record = self.status_of(id).await;
        assert_eq!(record["status"], "running", "nothing changed: {record}");
    }

    async fn status_of(&self, id: &str) -> Value {
        let uri = format!("/v1/executions/{id}");
        self.send("GET", &uri, Some(READER), None, &[]).await.body
    }

    /// Dispatches the queue's next execution (an input of `"park"` keeps it running)
    /// and returns the path its callback URL says to post to.
    async fn dispatch_next(&self) -> String {
        let function = FunctionName::parse("probe").unwrap();
        let before = self.dispatch.seen.lock().unwrap().len();
        let handle = self.scheduler.tick_once(&function).await.unwrap();
        assert!(handle.is_some(), "something was queued");
        // Parked dispatches never end; a finished one has been recorded by now.
        for _ in 0..1000 {
            if self.dispatch.seen.lock().unwrap().len() > before {
                break;
            }
            tokio::task::yield_now().await;
        }
        let seen = self.dispatch.seen.lock().unwrap();
        let request = seen.get(before).expect("the dispatch reached the function");
        let url = request.callback_url.as_deref().expect("a callback URL");
        let path = url.strip_prefix("http://control-plane").expect("the base");
        format!("{path}/{}:complete", request.execution_id)
    }
}

/// The route table: every operation of the API, a concrete request, and the status
/// for no token, a wrong token, and the reader's, invoker's and admin's tokens.
struct Row {
    method: &'static str,
    template: &'static str,
    body: Option<Value>,
    statuses: [u16; 5],
}

fn row(
    method: &'static str,
    template: &'static str,
    body: Option<Value>,
    statuses: [u16; 5],
) -> Row {
    Row {
        method,
        template,
        body,
        statuses,
    }
}

fn table() -> Vec<Row> {
    let function = json!({"name": "other", "image": "img", "executionMode": "LOCAL"});
    let done = json!({"success": true, "output": "by hand"});
    vec![
        row("GET", "/v1/functions", None, [401, 401, 200, 200, 200]),
        row(
            "POST",
            "/v1/functions",
            Some(function),
            [401, 401, 403, 403, 201],
        ),
        row(
            "GET",
            "/v1/functions/{name}",
            None,
            [401, 401, 200, 200, 200],
        ),
        row(
            "DELETE",
            "/v1/functions/{name}",
            None,
            [401, 401, 403, 403, 204],
        ),
        // `probe` is POOL: no replicas to set or read.
        row(
            "PUT",
            "/v1/functions/{name}/replicas",
            Some(json!({"replicas": 1})),
            [401, 401, 403, 403, 400],
        ),
        row(
            "GET",
            "/v1/functions/{name}/logs",
            None,
            [401, 401, 400, 403, 400],
        ),
        row(
            "POST",
            "/v1/functions/{name}:invoke",
            Some(json!({"input": 1})),
            [401, 401, 403, 200, 200],
        ),
        row(
            "POST",
            "/v1/functions/{name}:enqueue",
            Some(json!({"input": 1})),
            [401, 401, 403, 202, 202],
        ),
        row(
            "GET",
            "/v1/executions/{id}",
            None,
            [401, 401, 200, 200, 200],
        ),
        row(
            "POST",
            "/v1/internal/executions/{id}:complete",
            Some(done.clone()),
            [401, 401, 403, 403, 204],
        ),
        // A token is no callback credential, whoever holds it.
        row(
            "POST",
            "/v1/internal/executions/{credential}/{id}:complete",
            Some(done),
            [401, 401, 401, 401, 401],
        ),
        row(
            "POST",
            "/v1/internal/functions/{name}:drain-once",
            None,
            [401, 401, 403, 403, 200],
        ),
        row(
            "GET",
            "/v1/admin/runtime-config",
            None,
            [401, 401, 200, 403, 200],
        ),
        row(
            "PATCH",
            "/v1/admin/runtime-config",
            Some(json!({"expectedRevision": 1, "rateMaxPerSecond": 5})),
            [401, 401, 403, 403, 200],
        ),
        row(
            "POST",
            "/v1/admin/runtime-config/validate",
            Some(json!({"rateMaxPerSecond": 5})),
            [401, 401, 403, 403, 200],
        ),
        row("GET", "/actuator/health", None, [200, 200, 200, 200, 200]),
        row(
            "GET",
            "/actuator/health/liveness",
            None,
            [200, 200, 200, 200, 200],
        ),
        row(
            "GET",
            "/actuator/health/readiness",
            None,
            [200, 200, 200, 200, 200],
        ),
        row(
            "GET",
            "/actuator/prometheus",
            None,
            [200, 200, 200, 200, 200],
        ),
        row("GET", "/openapi.json", None, [401, 401, 200, 403, 200]),
    ]
}

const WHO: [Option<&str>; 5] = [
    None,
    Some("wrong-token-0123456789"),
    Some(READER),
    Some(INVOKER),
    Some(ADMIN),
];

/// Runs `row` once per caller, each against a fixture of its own (so that one
/// caller's change is not the next one's state), and lists what differs.
async fn check(row: &Row, metrics_require_auth: bool, problems: &mut Vec<String>) {
    for (caller, expected) in WHO.iter().zip(row.statuses) {
        let fixture = fixture_with(metrics_require_auth).await;
        let uri = row
            .template
            .replace("{name}", "probe")
            .replace("{id}", &fixture.execution_id)
            .replace("{credential}", "not-a-credential");
        let answer = fixture
            .send(row.method, &uri, *caller, row.body.as_ref(), &[])
            .await;
        let who = caller.map_or("no token", |token| token.split('-').next().unwrap_or(token));
        if answer.status.as_u16() != expected {
            problems.push(format!(
                "{} {} as {who}: {} instead of {expected}: {}",
                row.method, row.template, answer.status, answer.body
            ));
            continue;
        }
        let code = &answer.body["error"];
        let challenge = answer.headers.get(header::WWW_AUTHENTICATE);
        match expected {
            401 if code != "UNAUTHENTICATED" || challenge.is_none_or(|v| v != "Bearer") => {
                problems.push(format!(
                    "{} {} as {who}: a 401 without its code or WWW-Authenticate: {:?} {}",
                    row.method, row.template, answer.headers, answer.body
                ));
            }
            403 if code != "FORBIDDEN" => problems.push(format!(
                "{} {} as {who}: a 403 without FORBIDDEN: {}",
                row.method, row.template, answer.body
            )),
            _ => {}
        }
    }
}

#[tokio::test]
async fn every_route_answers_each_caller_exactly_as_the_table_says() {
    let mut problems = Vec::new();
    for row in table() {
        check(&row, false, &mut problems).await;
    }
    // Unknown routes say nothing to a caller without a token.
    for row in [
        row("GET", "/v1/nothing", None, [401, 401, 404, 404, 404]),
        row(
            "POST",
            "/v1/nothing",
            Some(json!({})),
            [401, 401, 403, 403, 404],
        ),
    ] {
        check(&row, false, &mut problems).await;
    }
    assert!(problems.is_empty(), "\n{}", problems.join("\n"));
}

#[tokio::test]
async fn with_metrics_behind_auth_the_exposition_needs_a_reader() {
    let mut problems = Vec::new();
    let scrape = row(
        "GET",
        "/actuator/prometheus",
        None,
        [401, 401, 200, 403, 200],
    );
    check(&scrape, true, &mut problems).await;
    let health = row("GET", "/actuator/health", None, [200, 200, 200, 200, 200]);
    check(&health, true, &mut problems).await;
    assert!(problems.is_empty(), "\n{}", problems.join("\n"));
}

#[tokio::test]
async fn the_table_names_every_documented_operation() {
    let fixture = fixture().await;
    let document = fixture
        .send("GET", "/openapi.json", Some(READER), None, &[])
        .await
        .body;
    let mut documented = BTreeSet::new();
    for (path, item) in document["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            documented.insert((method.to_uppercase(), path.clone()));
        }
    }
    let tabled: BTreeSet<_> = table()
        .iter()
        .map(|row| (row.method.to_owned(), row.template.to_owned()))
        .collect();
    assert_eq!(tabled, documented, "add the new route's row to the table");
}

#[tokio::test]
async fn the_credential_of_a_dispatch_completes_its_execution() {
    let fixture = fixture().await;
    let _ = fixture.dispatch_next().await;
    let parked = fixture.enqueue(json!("park")).await;
    let path = fixture.dispatch_next().await;
    let credential = path.split('/').nth(4).unwrap();
    assert!(path.starts_with("/v1/internal/executions/"), "{path}");
    assert!(
        credential.len() > 40,
        "the URL carries a credential: {path}"
    );
    let done = json!({"success": true, "output": {"from": "runtime"}});
    let answer = fixture.send("POST", &path, None, Some(&done), &[]).await;
    assert_eq!(answer.status, StatusCode::NO_CONTENT, "{}", answer.body);
    let record = fixture.status_of(&parked).await;
    assert_eq!(record["status"], "success", "{record}");
    assert_eq!(record["output"], json!({"from": "runtime"}));
}

#[tokio::test]
async fn a_parked_attempt_is_completed_only_by_its_own_valid_credential() {
    let fixture = fixture().await;
    // The fixture's execution echoes and ends; a parked one stays running.
    let _ = fixture.dispatch_next().await;
    let parked = fixture.enqueue(json!("park")).await;
    let path = fixture.dispatch_next().await;
    assert!(path.ends_with(&format!("/{parked}:complete")), "{path}");
    let credential = path.split('/').nth(4).unwrap().to_owned();
    let done = json!({"success": true, "output": "forged"});
    type Case<'a> = (&'a str, String, Vec<(&'a str, &'a str)>);
    let cases: Vec<Case> = vec![
        (
            "no credential and no token",
            format!("/v1/internal/executions/{parked}:complete"),
            vec![],
        ),
        (
            "a credential of another key",
            format!(
                "/v1/internal/executions/{}/{parked}:complete",
                CallbackKey::from_bytes([1; 32]).sign(&Credential::Attempt {
                    execution: ExecutionId::new(parked.as_str()),
                    attempt: 1,
                    expires_at: Timestamp::from_millis(u64::MAX),
                })
            ),
            vec![],
        ),
        (
            "a credential changed by a byte",
            format!(
                "/v1/internal/executions/{}x/{parked}:complete",
                &credential[..credential.len() - 1]
            ),
            vec![],
        ),
        (
            "the credential, for another execution",
            format!(
                "/v1/internal/executions/{credential}/{}:complete",
                fixture.execution_id
            ),
            vec![],
        ),
        (
            "the credential, for another attempt",
            path.clone(),
            vec![("X-Dispatch-Attempt", "2")],
        ),
    ];
    for (what, uri, headers) in cases {
        let answer = fixture
            .send("POST", &uri, None, Some(&done), &headers)
            .await;
        assert_eq!(
            answer.status,
            StatusCode::UNAUTHORIZED,
            "{what}: {}",
            answer.body
        );
        assert_eq!(answer.body["error"], "UNAUTHENTICATED", "{what}");
        fixture.assert_running(&parked).await;
    }

    // Past the attempt's timeout (1 s) and the slack, the credential has expired.
    fixture.clock.advance_ms(1000 + 30_000);
    let answer = fixture.send("POST", &path, None, Some(&done), &[]).await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{}", answer.body);
    assert!(
        answer.body["message"].as_str().unwrap().contains("expired"),
        "{}",
        answer.body
    );
    fixture.assert_running(&parked).await;
}

#[tokio::test]
async fn a_credential_replayed_after_the_execution_ended_changes_nothing() {
    let fixture = fixture().await;
    let _ = fixture.dispatch_next().await;
    let parked = fixture.enqueue(json!("park")).await;
    let path = fixture.dispatch_next().await;
    let first = json!({"success": true, "output": "first"});
    let answer = fixture.send("POST", &path, None, Some(&first), &[]).await;
    assert_eq!(answer.status, StatusCode::NO_CONTENT, "{}", answer.body);
    let replay = json!({"success": true, "output": "replayed"});
    let answer = fixture.send("POST", &path, None, Some(&replay), &[]).await;
    assert_eq!(
        answer.status,
        StatusCode::NO_CONTENT,
        "ignored: {}",
        answer.body
    );
    let record = fixture.status_of(&parked).await;
    assert_eq!(record["output"], "first", "{record}");
}

#[tokio::test]
async fn a_function_credential_completes_that_function_s_executions_while_its_registration_stands()
{
    let fixture = fixture().await;
    let _ = fixture.dispatch_next().await;
    let parked = fixture.enqueue(json!("park")).await;
    let _ = fixture.dispatch_next().await;
    let registered_at = fixture.scheduler.function("probe").unwrap().created_at;
    let sign = |name: &str, at: Timestamp| {
        fixture.key.sign(&Credential::Function {
            function: FunctionName::parse(name).unwrap(),
            registered_at: at,
        })
    };
    let done = json!({"success": true, "output": "from a replica"});
    for (what, credential) in [
        ("another function", sign("other", registered_at)),
        (
            "an earlier registration",
            sign(
                "probe",
                Timestamp::from_millis(registered_at.as_millis() - 1),
            ),
        ),
    ] {
        let uri = format!("/v1/internal/executions/{credential}/{parked}:complete");
        let answer = fixture.send("POST", &uri, None, Some(&done), &[]).await;
        assert_eq!(
            answer.status,
            StatusCode::UNAUTHORIZED,
            "{what}: {}",
            answer.body
        );
    }
    let credential = sign("probe", registered_at);
    let uri = format!("/v1/internal/executions/{credential}/{parked}:complete");
    let answer = fixture.send("POST", &uri, None, Some(&done), &[]).await;
    assert_eq!(answer.status, StatusCode::NO_CONTENT, "{}", answer.body);
    assert_eq!(fixture.status_of(&parked).await["output"], "from a replica");
}

#[tokio::test]
async fn an_admin_token_may_complete_an_execution_by_hand() {
    let fixture = fixture().await;
    let _ = fixture.dispatch_next().await;
    let parked = fixture.enqueue(json!("park")).await;
    let _ = fixture.dispatch_next().await;
    let uri = format!("/v1/internal/executions/{parked}:complete");
    let done = json!({"success": true, "output": "operator"});
    let answer = fixture.post(&uri, Some(INVOKER), &done).await;
    assert_eq!(answer.status, StatusCode::FORBIDDEN, "{}", answer.body);
    let answer = fixture.post(&uri, Some(ADMIN), &done).await;
    assert_eq!(answer.status, StatusCode::NO_CONTENT, "{}", answer.body);
    assert_eq!(fixture.status_of(&parked).await["output"], "operator");
}
