//! The in-process harness shared by the HTTP-level parity cases and the bad-input
//! sweep: the real `http_api` router over a real `Scheduler` whose clock, ids and
//! dispatcher are injected, driven through `tower::ServiceExt::oneshot` (no socket).
//! Everything a response depends on is deterministic, so whole exchanges can be pinned
//! as insta snapshots without redactions.
//!
//! The clock and ids are `core_types::testing`'s, the scripted dispatcher is
//! `scheduler::testing`'s: the same fakes the scheduler's own parity cases use. The
//! router and the scheduler under it are put together by `AppState::assemble`, as in
//! the binary and http-api's own tests.

#![allow(
    dead_code,
    unused_imports,
    reason = "each test binary (parity, bad_input) uses its own part of the harness"
)]

use std::fmt::Write as _;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::http::{HeaderName, HeaderValue, Method, Request, StatusCode, header};
use core_types::testing::{ManualClock, SequentialIds};
use core_types::{Clock, Dispatch, ExecutionId, IdGenerator};
use http_api::{ApiConfig, AppState};
use scheduler::testing::ScriptedDispatch;
pub(crate) use scheduler::testing::{Step, gate};
use scheduler::{RetryBackoff, Scheduler, SchedulerConfig, SchedulerParts};
use serde_json::Value;
use tower::ServiceExt;

/// The callback base the scheduler hands to dispatches (never called in-process).
const CALLBACK_BASE_URL: &str = "http://127.0.0.1:8080/v1/internal/executions";

// ----- requests and answers ----------------------------------------------------------

/// One HTTP request, kept as data so it can be sent and shown.
#[derive(Clone, Debug)]
pub(crate) struct Call {
    method: Method,
    uri: String,
    headers: Vec<(HeaderName, HeaderValue)>,
    body: Vec<u8>,
}

impl Call {
    fn new(method: Method, uri: impl Into<String>) -> Self {
        Self {
            method,
            uri: uri.into(),
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    pub(crate) fn get(uri: impl Into<String>) -> Self {
        Self::new(Method::GET, uri)
    }

    pub(crate) fn delete(uri: impl Into<String>) -> Self {
        Self::new(Method::DELETE, uri)
    }

    /// A POST without a body.
    pub(crate) fn post(uri: impl Into<String>) -> Self {
        Self::new(Method::POST, uri)
    }

    /// A POST of `body` as `application/json`.
    pub(crate) fn post_json(uri: impl Into<String>, body: &Value) -> Self {
        Self::post(uri).body("application/json", body.to_string())
    }

    /// Any method (including nonsense ones) on `uri`.
    pub(crate) fn method(method: &str, uri: impl Into<String>) -> Self {
        Self::new(
            Method::from_bytes(method.as_bytes()).expect("a valid method token"),
            uri,
        )
    }

    /// Sets the body and its declared content type.
    pub(crate) fn body(self, content_type: &str, body: impl Into<Vec<u8>>) -> Self {
        let mut call = self.header_bytes(header::CONTENT_TYPE.as_str(), content_type.as_bytes());
        call.body = body.into();
        call
    }

    /// Sets the body without declaring a content type.
    pub(crate) fn untyped_body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    pub(crate) fn header(self, name: &str, value: &str) -> Self {
        self.header_bytes(name, value.as_bytes())
    }

    /// A header whose value may be any bytes HTTP allows (obs-text included).
    pub(crate) fn header_bytes(mut self, name: &str, value: &[u8]) -> Self {
        let name = HeaderName::from_bytes(name.as_bytes()).expect("a valid header name");
        let value = HeaderValue::from_bytes(value).expect("a header value HTTP can carry");
        self.headers.retain(|(n, _)| *n != name);
        self.headers.push((name, value));
        self
    }

    /// A one-line description for failure messages (long parts cut).
    pub(crate) fn describe(&self) -> String {
        let cut = |text: &str| -> String {
            if text.chars().count() <= 80 {
                text.to_owned()
            } else {
                format!("{}...", text.chars().take(80).collect::<String>())
            }
        };
        let headers: Vec<String> = self
            .headers
            .iter()
            .map(|(n, v)| format!("{n}: {}", String::from_utf8_lossy(v.as_bytes())))
            .collect();
        format!(
            "{} {} [{}] {:?}",
            self.method,
            cut(&self.uri),
            headers.join(", "),
            cut(&String::from_utf8_lossy(&self.body))
        )
    }

    fn to_request(&self) -> Request<Body> {
        let mut builder = Request::builder()
            .method(self.method.clone())
            .uri(self.uri.as_str());
        for (name, value) in &self.headers {
            builder = builder.header(name, value);
        }
        builder
            .body(Body::from(self.body.clone()))
            .unwrap_or_else(|e| panic!("cannot build {} {}: {e}", self.method, self.uri))
    }

    /// What the request looked like, for a transcript.
    fn render(&self, out: &mut String) {
        writeln!(out, "> {} {}", self.method, self.uri).unwrap();
        for (name, value) in &self.headers {
            writeln!(
                out,
                "> {name}: {}",
                String::from_utf8_lossy(value.as_bytes())
            )
            .unwrap();
        }
        if !self.body.is_empty() {
            writeln!(out, "> {}", String::from_utf8_lossy(&self.body)).unwrap();
        }
    }
}

/// A response, read whole.
#[derive(Debug)]
pub(crate) struct Answer {
    pub(crate) status: StatusCode,
    pub(crate) headers: axum::http::HeaderMap,
    /// The body as JSON (`Null` when empty); `Err` with the text when it is not JSON.
    pub(crate) body: Result<Value, String>,
}

impl Answer {
    /// The JSON body; panics with the text if it is not JSON.
    pub(crate) fn json(&self) -> &Value {
        match &self.body {
            Ok(value) => value,
            Err(text) => panic!("{} answered a non-JSON body: {text:?}", self.status),
        }
    }

    /// The `executionId` of an invocation answer.
    pub(crate) fn execution_id(&self) -> ExecutionId {
        let id = self.json()["executionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no executionId in {}", self.json()));
        ExecutionId::new(id)
    }

    /// The response as a transcript shows it: status, the headers a client acts on,
    /// and the body (pretty JSON).
    fn render(&self, out: &mut String) {
        writeln!(out, "< {}", self.status).unwrap();
        for name in [
            header::CONTENT_TYPE.as_str(),
            header::RETRY_AFTER.as_str(),
            core_types::headers::X_EXECUTION_ID,
            core_types::headers::X_QUEUE_REJECT_REASON,
        ] {
            if let Some(value) = self.headers.get(name) {
                writeln!(out, "< {name}: {}", value.to_str().unwrap_or("<binary>")).unwrap();
            }
        }
        match &self.body {
            Ok(Value::Null) => {}
            Ok(value) => {
                for line in serde_json::to_string_pretty(value).unwrap().lines() {
                    writeln!(out, "< {line}").unwrap();
                }
            }
            Err(text) => writeln!(out, "< {text}").unwrap(),
        }
    }
}

/// Why `answer` is not a proper refusal (a 4xx with a JSON `{error, message}` body), or
/// `None` if it is one.
pub(crate) fn not_a_refusal(answer: &Answer) -> Option<String> {
    if !answer.status.is_client_error() {
        return Some(format!("answered {}", answer.status));
    }
    let content_type = answer
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if !content_type.starts_with("application/json") {
        return Some(format!(
            "{} with Content-Type {content_type:?}",
            answer.status
        ));
    }
    let Ok(body) = &answer.body else {
        return Some(format!("{} with a non-JSON body", answer.status));
    };
    let code_ok = body["error"].as_str().is_some_and(|code| {
        !code.is_empty() && code.chars().all(|c| c.is_ascii_uppercase() || c == '_')
    });
    if !code_ok || !body["message"].is_string() {
        return Some(format!("{} with body {body}", answer.status));
    }
    None
}

// ----- the harness -------------------------------------------------------------------

/// The router over a real scheduler with a manual clock, sequential ids and a scripted
/// dispatcher. No background loop unless [`Api::start_background`]: queued work moves
/// only through `:drain-once`, as with `--scheduler manual`.
pub(crate) struct Api {
    app: http_api::Api,
    pub(crate) scheduler: Scheduler,
    clock: Arc<ManualClock>,
    ids: Arc<SequentialIds>,
    dispatch: Arc<ScriptedDispatch>,
    /// Dispatches since the last checkpoint, rendered.
    calls: Arc<Mutex<Vec<String>>>,
    /// Exchanges since the last checkpoint, rendered.
    transcript: Mutex<String>,
    /// The parity case this harness pins snapshots for.
    case: Option<&'static str>,
    /// With authentication on: the token every request carries unless it names one.
    token: Option<&'static str>,
}

/// The `admin` token of [`Api::with_authentication`].
pub(crate) const ADMIN_TOKEN: &str = "admin-token-for-the-sweeps";

impl Api {
    /// A harness with `config`, for tests that assert without snapshots.
    pub(crate) fn new(config: ApiConfig) -> Self {
        Self::with(config, RetryBackoff::default())
    }

    fn with(config: ApiConfig, retry_backoff: RetryBackoff) -> Self {
        let clock = Arc::new(ManualClock::default());
        let ids = Arc::new(SequentialIds::default());
        let calls = Arc::new(Mutex::new(Vec::new()));
        let heard = Arc::clone(&calls);
        let dispatch = Arc::new(ScriptedDispatch::new(move |request| {
            let key = request
                .idempotency_key
                .as_ref()
                .map_or("-".to_owned(), ToString::to_string);
            heard.lock().unwrap().push(format!(
                "{} attempt {} of {} (idempotency key {key}, trace {})",
                request.execution_id, request.attempt, request.function.name, request.trace_id
            ));
        }));
        let mut parts = SchedulerParts::in_memory(Arc::clone(&dispatch) as Arc<dyn Dispatch>);
        parts.clock = Arc::clone(&clock) as Arc<dyn Clock>;
        parts.ids = Arc::clone(&ids) as Arc<dyn IdGenerator>;
        let config_scheduler = SchedulerConfig {
            callback_base_url: Some(CALLBACK_BASE_URL.into()),
            // Each case decides what is dispatched when (`:drain-once`, gates); a
            // manual-mode sync caller moving the queue itself is pinned by the
            // scheduler's parity cases.
            waiters_drive_when_manual: false,
            retry_backoff,
            ..SchedulerConfig::default()
        };
        let state = AppState::assemble(parts, config_scheduler, config);
        Self {
            app: http_api::router(state.clone()),
            scheduler: state.scheduler().clone(),
            clock,
            ids,
            dispatch,
            calls,
            transcript: Mutex::default(),
            case: None,
            token: None,
        }
    }

    /// A harness with authentication on: one `admin` token, which every request
    /// carries unless it sets `Authorization` itself; callbacks are signed.
    pub(crate) fn with_authentication(config: ApiConfig) -> Self {
        let key = auth::CallbackKey::from_bytes([9; 32]);
        let tokens = auth::Tokens::parse(&format!("admin {ADMIN_TOKEN} sweeps")).unwrap();
        let config = ApiConfig {
            auth: Some(Arc::new(http_api::ApiAuth::new(tokens, key, false))),
            ..config
        };
        Self {
            token: Some(ADMIN_TOKEN),
            ..Self::new(config)
        }
    }

    /// The same harness, its requests sent without the token (what a stranger sends).
    pub(crate) fn without_token(mut self) -> Self {
        self.token = None;
        self
    }

    /// A harness for the parity case `name`: its snapshots go to `snapshots/<name>/`.
    pub(crate) fn case(name: &'static str) -> Self {
        Self {
            case: Some(name),
            ..Self::new(ApiConfig::default())
        }
    }

    /// A parity case with the scheduler's background loop running (sync invokes then
    /// complete on their own). Retries are due at once: the loop sleeps on tokio's
    /// clock until a retry is due by the manual one, which nothing here advances.
    pub(crate) fn case_in_background(name: &'static str) -> Self {
        let api = Self {
            case: Some(name),
            ..Self::with(ApiConfig::default(), RetryBackoff::NONE)
        };
        api.scheduler.start_background();
        api
    }

    /// Appends steps to a function's script.
    pub(crate) fn script(&self, function: &str, steps: impl IntoIterator<Item = Step>) {
        self.dispatch.script(function, steps);
    }

    /// Moves the manual clock.
    pub(crate) fn advance_clock(&self, ms: u64) {
        self.clock.advance_ms(ms);
    }

    /// Every execution id the scheduler has ever named.
    pub(crate) fn issued_executions(&self) -> Vec<ExecutionId> {
        self.ids.issued()
    }

    /// Sends `call` without recording it.
    pub(crate) async fn send(&self, call: &Call) -> Answer {
        self.send_request(call.to_request()).await
    }

    /// Sends a request built by hand (e.g. with a streamed body).
    pub(crate) async fn send_request(&self, mut request: Request<Body>) -> Answer {
        if let Some(token) = self.token
            && !request.headers().contains_key(header::AUTHORIZATION)
        {
            let bearer = HeaderValue::from_str(&format!("Bearer {token}")).expect("ASCII");
            request.headers_mut().insert(header::AUTHORIZATION, bearer);
        }
        let response = self
            .app
            .clone()
            .oneshot(request)
            .await
            .expect("the router is infallible");
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .expect("the body is readable");
        let body = if bytes.is_empty() {
            Ok(Value::Null)
        } else {
            serde_json::from_slice(&bytes).map_err(|_| String::from_utf8_lossy(&bytes).into_owned())
        };
        Answer {
            status,
            headers,
            body,
        }
    }

    /// Sends `call` and records the exchange for the next checkpoint.
    pub(crate) async fn exchange(&self, call: Call) -> Answer {
        let answer = self.send(&call).await;
        let mut text = String::new();
        call.render(&mut text);
        answer.render(&mut text);
        writeln!(text).unwrap();
        self.transcript.lock().unwrap().push_str(&text);
        answer
    }

    /// `POST /v1/functions`, expecting 201.
    pub(crate) async fn register(&self, spec: Value) {
        let answer = self.exchange(Call::post_json("/v1/functions", &spec)).await;
        assert_eq!(answer.status, StatusCode::CREATED, "{:?}", answer.body);
    }

    /// `GET /v1/executions/{id}` (not recorded).
    pub(crate) async fn execution(&self, id: &ExecutionId) -> Answer {
        self.send(&Call::get(format!("/v1/executions/{id}"))).await
    }

    /// Pins, as `snapshots/<case>/<checkpoint>.snap`, the exchanges since the last
    /// checkpoint, then the state a client can read afterwards: every execution ever
    /// created (`GET /v1/executions/{id}`), each function's queue and slots, and the
    /// dispatches made.
    pub(crate) async fn checkpoint(&self, checkpoint: &str) {
        let case = self.case.expect("a parity case (Api::case)");
        let dump = self.dump().await;
        insta::with_settings!({
            snapshot_path => format!("../snapshots/{case}"),
            prepend_module_to_snapshot => false,
            omit_expression => true,
        }, {
            insta::assert_snapshot!(checkpoint.to_owned(), dump);
        });
    }

    async fn dump(&self) -> String {
        let mut out = String::new();
        writeln!(out, "exchanges:").unwrap();
        let transcript = std::mem::take(&mut *self.transcript.lock().unwrap());
        if transcript.is_empty() {
            writeln!(out, "  (none)\n").unwrap();
        }
        out.push_str(&transcript);

        writeln!(out, "executions:").unwrap();
        let issued = self.issued_executions();
        if issued.is_empty() {
            writeln!(out, "  (none)").unwrap();
        }
        for id in issued {
            let answer = self.execution(&id).await;
            let mut text = String::new();
            writeln!(text, "> GET /v1/executions/{id}").unwrap();
            answer.render(&mut text);
            for line in text.lines() {
                writeln!(out, "  {line}").unwrap();
            }
        }

        writeln!(out, "queues:").unwrap();
        let mut functions = self.scheduler.functions();
        functions.sort_by(|a, b| a.spec.name.cmp(&b.spec.name));
        if functions.is_empty() {
            writeln!(out, "  (no functions)").unwrap();
        }
        for function in functions {
            let name = &function.spec.name;
            let q = self
                .scheduler
                .queue_snapshot(name.as_str())
                .expect("a registered function has a queue");
            let queued: Vec<_> = q.queued.iter().map(ToString::to_string).collect();
            writeln!(
                out,
                "  {name}: queued [{}], slots {}/{} taken, capacity {}",
                queued.join(", "),
                q.in_flight,
                q.concurrency,
                q.capacity
            )
            .unwrap();
        }

        writeln!(out, "dispatches since last checkpoint:").unwrap();
        let calls = std::mem::take(&mut *self.calls.lock().unwrap());
        if calls.is_empty() {
            writeln!(out, "  (none)").unwrap();
        }
        for call in calls {
            writeln!(out, "  {call}").unwrap();
        }
        out
    }
}

/// Lets other tasks on this (single-threaded, paused-clock) runtime run until `done`
/// holds; panics if it never does, so a broken case fails instead of spinning.
pub(crate) async fn until(what: &str, mut done: impl FnMut() -> bool) {
    for _ in 0..10_000 {
        if done() {
            return;
        }
        tokio::task::yield_now().await;
    }
    panic!("never happened: {what}");
}

/// A `LOCAL` function spec (the dispatcher is scripted, so the mode only shows in the
/// function's JSON) with `overrides` merged in.
pub(crate) fn spec(name: &str, overrides: Value) -> Value {
    let mut spec =
        serde_json::json!({"name": name, "image": "nanofaas/test", "executionMode": "LOCAL"});
    for (k, v) in overrides.as_object().expect("an object").clone() {
        spec[k] = v;
    }
    spec
}

/// The path of a function action, e.g. `/v1/functions/echo:invoke`.
pub(crate) fn action(function: &str, action: &str) -> String {
    format!("/v1/functions/{function}:{action}")
}

/// The callback path of an execution.
pub(crate) fn complete(id: &str) -> String {
    format!("/v1/internal/executions/{id}:complete")
}

/// The drain-once path of a function.
pub(crate) fn drain(function: &str) -> String {
    format!("/v1/internal/functions/{function}:drain-once")
}
