//! `PoolDispatcher` and `ModeRouter` against real HTTP servers on 127.0.0.1:0.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::ConnectInfo;
use axum::http::{HeaderMap, Response};
use axum::routing::post;
use core_types::{
    Dispatch, DispatchRequest, ErrorCode, ExecutionId, FunctionSpec, IdempotencyKey, Payload,
    TraceId,
};
use dispatcher::{ModeRouter, PoolConfig, PoolDispatcher};

const CALLBACK: &str = "http://127.0.0.1:8080/v1/internal/executions";

/// What the function answers.
#[derive(Clone, Debug)]
struct Reply {
    status: u16,
    headers: Vec<(&'static str, &'static str)>,
    body: Bytes,
    delay: Option<Duration>,
    chunked: bool,
}

impl Reply {
    fn new(status: u16, content_type: Option<&'static str>, body: impl Into<Bytes>) -> Self {
        Self {
            status,
            headers: content_type
                .map(|ct| vec![("content-type", ct)])
                .unwrap_or_default(),
            body: body.into(),
            delay: None,
            chunked: false,
        }
    }

    fn json(body: &'static str) -> Self {
        Self::new(200, Some("application/json"), body)
    }

    /// Sends the body in two chunks without a `Content-Length`.
    fn chunked(&self) -> Response<Body> {
        let (a, b) = self.body.split_at(self.body.len() / 2);
        let chunks = [Bytes::copy_from_slice(a), Bytes::copy_from_slice(b)];
        let stream = futures::stream::iter(chunks.map(Ok::<_, std::io::Error>));
        let mut response = Response::builder().status(self.status);
        for (name, value) in &self.headers {
            response = response.header(*name, *value);
        }
        response.body(Body::from_stream(stream)).unwrap()
    }

    fn header(mut self, name: &'static str, value: &'static str) -> Self {
        self.headers.push((name, value));
        self
    }

    fn response(&self) -> Response<Body> {
        let mut response = Response::builder().status(self.status);
        for (name, value) in &self.headers {
            response = response.header(*name, *value);
        }
        response.body(Body::from(self.body.clone())).unwrap()
    }
}

/// One request as the function saw it.
#[derive(Clone, Debug)]
struct Seen {
    peer: SocketAddr,
    headers: HeaderMap,
    body: Bytes,
}

/// A function endpoint: `POST /invoke` answers `reply`, `POST /fail` answers 500;
/// both record what they received.
struct Function {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Function {
    async fn start(reply: Reply) -> Self {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let handler = |reply: Reply, seen: Arc<Mutex<Vec<Seen>>>| {
            move |ConnectInfo(peer): ConnectInfo<SocketAddr>, headers: HeaderMap, body: Bytes| {
                let reply = reply.clone();
                let seen = Arc::clone(&seen);
                async move {
                    seen.lock().unwrap().push(Seen {
                        peer,
                        headers,
                        body,
                    });
                    if let Some(delay) = reply.delay {
                        tokio::time::sleep(delay).await;
                    }
                    if reply.chunked {
                        reply.chunked()
                    } else {
                        reply.response()
                    }
                }
            }
        };
        let app = Router::new()
            .route("/invoke", post(handler(reply, Arc::clone(&seen))))
            .route(
                "/fail",
                post(handler(
                    Reply::new(500, Some("text/plain"), "failed"),
                    Arc::clone(&seen),
                )),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        #[allow(
            clippy::disallowed_methods,
            reason = "the test's function server runs beside the test body"
        )]
        tokio::spawn(async move {
            axum::serve(
                listener,
                app.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .await
            .unwrap();
        });
        Self { addr, seen }
    }

    fn url(&self) -> String {
        format!("http://{}/invoke", self.addr)
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    fn only_request(&self) -> Seen {
        let seen = self.seen();
        assert_eq!(seen.len(), 1, "{seen:?}");
        seen.into_iter().next().unwrap()
    }
}

fn function(mode: &str, endpoint: Option<String>, timeout_ms: u64) -> Arc<FunctionSpec> {
    let mut spec = serde_json::json!({
        "name": "fn-under-test", "image": "img", "executionMode": mode, "timeoutMs": timeout_ms
    });
    if let Some(url) = endpoint {
        spec["endpointUrl"] = url.into();
    }
    Arc::new(FunctionSpec::from_json(&spec).unwrap())
}

/// A first attempt with an idempotency key and a callback URL.
fn request(function: Arc<FunctionSpec>) -> DispatchRequest {
    DispatchRequest {
        execution_id: ExecutionId::new("exec-42"),
        function,
        attempt: 1,
        input: Payload::from_json_text(r#"{"x": [1, 2], "s": "é"}"#).unwrap(),
        metadata: Arc::new(BTreeMap::from([("k".to_owned(), "v".to_owned())])),
        trace_id: TraceId::new("trace-7"),
        idempotency_key: Some(IdempotencyKey::new("key-1")),
        callback_url: Some(Arc::from(CALLBACK)),
    }
}

fn pool_request(f: &Function) -> DispatchRequest {
    request(function("POOL", Some(f.url()), 5_000))
}

fn pool() -> PoolDispatcher {
    PoolDispatcher::new()
}

fn header<'a>(seen: &'a Seen, name: &str) -> Option<&'a str> {
    seen.headers.get(name).map(|v| v.to_str().unwrap())
}

#[tokio::test]
async fn posts_the_input_and_metadata_with_every_header() {
    let f = Function::start(Reply::json("true")).await;
    pool().dispatch(pool_request(&f)).await.unwrap();

    let seen = f.only_request();
    // The input's text goes out exactly as it came in (spacing included).
    assert_eq!(
        std::str::from_utf8(&seen.body).unwrap(),
        r#"{"input":{"x": [1, 2], "s": "é"},"metadata":{"k":"v"}}"#
    );
    assert_eq!(header(&seen, "content-type"), Some("application/json"));
    assert_eq!(header(&seen, "x-execution-id"), Some("exec-42"));
    assert_eq!(header(&seen, "x-dispatch-attempt"), Some("1"));
    assert_eq!(header(&seen, "x-trace-id"), Some("trace-7"));
    assert_eq!(header(&seen, "idempotency-key"), Some("key-1"));
    assert_eq!(header(&seen, "x-callback-url"), Some(CALLBACK));
}

#[tokio::test]
async fn a_retry_carries_its_attempt_and_no_idempotency_key() {
    let f = Function::start(Reply::json("true")).await;
    let mut request = pool_request(&f);
    request.attempt = 3;
    request.idempotency_key = None;
    request.callback_url = None;
    request.metadata = Arc::new(BTreeMap::new());
    pool().dispatch(request).await.unwrap();

    let seen = f.only_request();
    assert_eq!(header(&seen, "x-dispatch-attempt"), Some("3"));
    assert_eq!(header(&seen, "idempotency-key"), None);
    assert_eq!(header(&seen, "x-callback-url"), None);
    assert_eq!(header(&seen, "x-execution-id"), Some("exec-42"));
    assert_eq!(
        std::str::from_utf8(&seen.body).unwrap(),
        r#"{"input":{"x": [1, 2], "s": "é"},"metadata":{}}"#
    );
}

#[tokio::test]
async fn a_json_answer_is_the_output_as_is() {
    for content_type in [
        "application/json",
        "application/json; charset=utf-8",
        "application/problem+json",
    ] {
        let body = r#"{"result": [1, 2.5, "ok"], "nested": {"n": null}}"#;
        let f = Function::start(Reply::new(200, Some(content_type), body)).await;
        let success = pool().dispatch(pool_request(&f)).await.unwrap();
        assert_eq!(success.output.json_text(), body, "{content_type}");
        assert!(!success.cold_start);
        assert_eq!(success.init_duration_ms, None);
    }
}

#[tokio::test]
async fn a_non_json_answer_becomes_a_json_string() {
    for content_type in [
        Some("text/plain"),
        Some("text/plain; charset=utf-8"),
        Some("application/octet-stream"),
        None,
    ] {
        let f = Function::start(Reply::new(201, content_type, "hello \"world\"\n")).await;
        let success = pool().dispatch(pool_request(&f)).await.unwrap();
        assert_eq!(
            success.output.to_value(),
            serde_json::json!("hello \"world\"\n"),
            "{content_type:?}"
        );
    }
    // Text that happens to look like JSON is still text.
    let f = Function::start(Reply::new(200, Some("text/plain"), "42")).await;
    let success = pool().dispatch(pool_request(&f)).await.unwrap();
    assert_eq!(success.output.json_text(), r#""42""#);
}

#[tokio::test]
async fn an_empty_answer_is_null() {
    for reply in [
        Reply::new(200, Some("application/json"), ""),
        Reply::new(200, Some("text/plain"), ""),
        Reply::new(200, None, ""),
        Reply::new(204, None, ""),
    ] {
        let f = Function::start(reply.clone()).await;
        let success = pool().dispatch(pool_request(&f)).await.unwrap();
        assert!(success.output.is_null(), "{reply:?}");
    }
}

#[tokio::test]
async fn a_2xx_claiming_json_with_invalid_json_is_a_function_error() {
    let f = Function::start(Reply::new(200, Some("application/json"), "{oops")).await;
    let error = pool().dispatch(pool_request(&f)).await.unwrap_err();
    assert!(error.has_code(ErrorCode::FunctionError), "{error:?}");
    assert!(error.message.contains("not valid JSON"), "{error:?}");
}

#[tokio::test]
async fn a_non_2xx_answer_is_a_function_error_with_status_and_body() {
    let f = Function::start(Reply::new(503, Some("text/plain"), "overloaded, try later")).await;
    let error = pool().dispatch(pool_request(&f)).await.unwrap_err();
    assert!(error.has_code(ErrorCode::FunctionError), "{error:?}");
    assert_eq!(
        error.message,
        "function answered 503: overloaded, try later"
    );

    let f = Function::start(Reply::new(
        422,
        Some("application/json"),
        r#"{"error":"bad"}"#,
    ))
    .await;
    let error = pool().dispatch(pool_request(&f)).await.unwrap_err();
    assert_eq!(error.message, r#"function answered 422: {"error":"bad"}"#);
}

#[tokio::test]
async fn a_long_error_body_is_truncated_in_the_message() {
    let f = Function::start(Reply::new(500, Some("text/plain"), "x".repeat(10_000))).await;
    let error = pool().dispatch(pool_request(&f)).await.unwrap_err();
    assert!(error.has_code(ErrorCode::FunctionError));
    assert!(
        error.message.starts_with("function answered 500: xxxx"),
        "{error:?}"
    );
    assert!(error.message.ends_with("... (truncated)"), "{error:?}");
    assert!(error.message.len() < 1100, "{}", error.message.len());
}

#[tokio::test]
async fn a_2xx_body_over_the_limit_is_a_function_error() {
    let f = Function::start(Reply::json(r#"["0123456789", "0123456789"]"#)).await;
    let pool = PoolDispatcher::with_config(PoolConfig {
        max_response_bytes: 16,
        ..PoolConfig::default()
    });
    let error = pool.dispatch(pool_request(&f)).await.unwrap_err();
    assert!(error.has_code(ErrorCode::FunctionError), "{error:?}");
    assert!(error.message.contains("16 byte limit"), "{error:?}");

    // Without a Content-Length the limit is enforced while reading.
    let mut reply = Reply::json(r#"["0123456789", "0123456789"]"#);
    reply.chunked = true;
    let f = Function::start(reply).await;
    let error = pool.dispatch(pool_request(&f)).await.unwrap_err();
    assert!(error.has_code(ErrorCode::FunctionError), "{error:?}");
    assert!(error.message.contains("16 byte limit"), "{error:?}");

    // A chunked body under the limit is read whole.
    let mut reply = Reply::json(r#"["0123456789"]"#);
    reply.chunked = true;
    let f = Function::start(reply).await;
    let success = pool.dispatch(pool_request(&f)).await.unwrap();
    assert_eq!(success.output.json_text(), r#"["0123456789"]"#);
}

#[tokio::test]
async fn a_refused_connection_is_a_dispatch_error() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let endpoint = format!("http://127.0.0.1:{port}/invoke");
    let error = pool()
        .dispatch(request(function("POOL", Some(endpoint.clone()), 5_000)))
        .await
        .unwrap_err();
    assert!(error.has_code(ErrorCode::DispatchError), "{error:?}");
    assert!(error.message.contains(&endpoint), "{error:?}");
    assert!(error.message.contains("Connection refused"), "{error:?}");
}

#[tokio::test]
async fn a_dispatch_dropped_at_its_deadline_never_hands_its_connection_on() {
    // The scheduler drops a dispatch whose function outlives `timeoutMs`. If its
    // connection went back to the pool, the next dispatch would read the late answer.
    let mut reply = Reply::json("\"late\"");
    reply.delay = Some(Duration::from_secs(30));
    let f = Function::start(reply).await;
    let pool = pool();

    let cut_short =
        tokio::time::timeout(Duration::from_millis(100), pool.dispatch(pool_request(&f))).await;
    assert!(
        cut_short.is_err(),
        "the function answered early: {cut_short:?}"
    );

    let mut next = pool_request(&f);
    next.function = function("POOL", Some(format!("http://{}/fail", f.addr)), 5_000);
    let error = pool.dispatch(next).await.unwrap_err();
    assert_eq!(error.message, "function answered 500: failed");
    let seen = f.seen();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_ne!(
        seen[0].peer, seen[1].peer,
        "the abandoned connection was reused"
    );
}

#[tokio::test]
async fn cold_start_headers_are_reported() {
    let f = Function::start(
        Reply::json("1")
            .header("x-cold-start", "TRUE")
            .header("x-init-duration-ms", "250"),
    )
    .await;
    let success = pool().dispatch(pool_request(&f)).await.unwrap();
    assert!(success.cold_start);
    assert_eq!(success.init_duration_ms, Some(250));

    let f = Function::start(
        Reply::json("1")
            .header("x-cold-start", "false")
            .header("x-init-duration-ms", "soon"),
    )
    .await;
    let success = pool().dispatch(pool_request(&f)).await.unwrap();
    assert!(!success.cold_start);
    assert_eq!(success.init_duration_ms, None);
}

#[tokio::test]
async fn a_function_without_endpoint_is_a_dispatch_error() {
    let mut spec = (*function("POOL", Some("http://127.0.0.1:1/x".into()), 100)).clone();
    spec.endpoint_url = None;
    let error = pool().dispatch(request(Arc::new(spec))).await.unwrap_err();
    assert!(error.has_code(ErrorCode::DispatchError));
    assert_eq!(error.message, "function has no endpointUrl");
}

#[tokio::test]
async fn an_unsendable_header_value_is_a_dispatch_error() {
    let f = Function::start(Reply::json("1")).await;
    let mut request = pool_request(&f);
    request.trace_id = TraceId::new("bad\ntrace");
    let error = pool().dispatch(request).await.unwrap_err();
    assert!(error.has_code(ErrorCode::DispatchError), "{error:?}");
    assert!(error.message.contains("X-Trace-Id"), "{error:?}");
    assert!(f.seen().is_empty());
}

#[tokio::test]
async fn sequential_dispatches_reuse_one_keep_alive_connection() {
    let f = Function::start(Reply::json(r#"{"ok": true}"#)).await;
    let pool = pool();
    let fail_url = format!("http://{}/fail", f.addr);
    for i in 0..5 {
        // Error answers (fully read) must not cost the connection either.
        let endpoint = if i % 2 == 0 {
            f.url()
        } else {
            fail_url.clone()
        };
        let outcome = pool
            .dispatch(request(function("POOL", Some(endpoint), 5_000)))
            .await;
        assert_eq!(outcome.is_ok(), i % 2 == 0, "{outcome:?}");
    }
    let seen = f.seen();
    assert_eq!(seen.len(), 5);
    let peers: HashSet<SocketAddr> = seen.iter().map(|s| s.peer).collect();
    assert_eq!(peers.len(), 1, "{peers:?}");
}

#[tokio::test]
async fn a_function_that_closes_each_connection_still_gets_every_dispatch() {
    let f = Function::start(Reply::json("1").header("connection", "close")).await;
    let pool = pool();
    for _ in 0..4 {
        let success = pool.dispatch(pool_request(&f)).await.unwrap();
        assert_eq!(success.output.json_text(), "1");
    }
    let peers: HashSet<SocketAddr> = f.seen().iter().map(|s| s.peer).collect();
    assert_eq!(peers.len(), 4, "a closed connection was reused: {peers:?}");
}

#[tokio::test]
async fn the_router_sends_pool_and_deployment_over_http_and_echoes_local() {
    let f = Function::start(Reply::json(r#""from http""#)).await;
    let router = ModeRouter::new(pool());

    let local = router
        .dispatch(request(function("LOCAL", Some(f.url()), 5_000)))
        .await
        .unwrap();
    assert_eq!(local.output.json_text(), r#"{"x": [1, 2], "s": "é"}"#);
    assert!(f.seen().is_empty(), "LOCAL must not touch the network");

    for mode in ["POOL", "DEPLOYMENT"] {
        let success = router
            .dispatch(request(function(mode, Some(f.url()), 5_000)))
            .await
            .unwrap();
        assert_eq!(success.output.json_text(), r#""from http""#, "{mode}");
    }
    assert_eq!(f.seen().len(), 2);

    let error = router
        .dispatch(request(function("DEPLOYMENT", None, 5_000)))
        .await
        .unwrap_err();
    assert!(error.has_code(ErrorCode::DispatchError));
    assert_eq!(error.message, "no deployment provider and no endpointUrl");
}
