//! The bad-input sweep: every kind of broken request a client (or an attacker) can send
//! -- malformed JSON, wrong types in every field, missing and null fields, bodies over
//! the limit, wrong content types, hostile names and ids, unknown actions, bad headers,
//! bad callback bodies -- through `oneshot` on the real router. Each one must be a 4xx
//! with the contract's JSON error body (`error`, `message`), never a 5xx, and must leave
//! nothing behind: the server stays healthy, no slot is held, nothing is queued, no
//! execution is created and no idempotency claim survives. Callback bodies
//! (`bad_input/callbacks.rs`) and the random sweep (`bad_input/random.rs`) are in
//! modules of their own.

mod support;

#[path = "bad_input/callbacks.rs"]
mod callbacks;
#[path = "bad_input/random.rs"]
mod random;

use axum::body::{Body, Bytes};
use axum::http::{Request, StatusCode, header};
use http_api::ApiConfig;
use serde_json::{Value, json};
use support::{Answer, Api, Call, Step, action, complete, drain, not_a_refusal};

/// The body limit of these tests: small, so "too large" is cheap to send.
const LIMIT: usize = 1024;

/// A function every sweep can aim at.
const ECHO: &str = "echo";

fn config() -> ApiConfig {
    ApiConfig {
        max_body_bytes: LIMIT,
        ..ApiConfig::default()
    }
}

fn api() -> Api {
    Api::new(config())
}

async fn api_with_echo() -> Api {
    api_with_echo_behind(api()).await
}

/// `api` with the function `echo` registered.
async fn api_with_echo_behind(api: Api) -> Api {
    api.register(json!({"name": ECHO, "image": "nanofaas/echo", "executionMode": "LOCAL"}))
        .await;
    api
}

/// Sends calls, collecting every wrong answer so one run reports them all.
struct Sweep<'a> {
    api: &'a Api,
    problems: Vec<String>,
    sent: usize,
}

impl<'a> Sweep<'a> {
    fn new(api: &'a Api) -> Self {
        Self {
            api,
            problems: Vec::new(),
            sent: 0,
        }
    }

    /// Expects a proper refusal of any 4xx status.
    async fn refused(&mut self, call: Call) -> Answer {
        self.sent += 1;
        let answer = self.api.send(&call).await;
        if let Some(problem) = not_a_refusal(&answer) {
            self.problems
                .push(format!("{problem}\n    for {}", call.describe()));
        }
        answer
    }

    /// Expects a proper refusal with exactly this status and code.
    async fn expect(&mut self, call: Call, status: StatusCode, code: &str) -> Answer {
        let described = call.describe();
        let answer = self.refused(call).await;
        let got = answer.body.as_ref().ok().map(|b| b["error"].clone());
        if answer.status != status || got.as_ref().and_then(Value::as_str) != Some(code) {
            self.problems.push(format!(
                "expected {status} {code}, got {} {got:?}\n    for {described}",
                answer.status
            ));
        }
        answer
    }

    /// Expects a 404 `NOT_FOUND`.
    async fn not_found(&mut self, call: Call) {
        self.expect(call, StatusCode::NOT_FOUND, "NOT_FOUND").await;
    }

    /// Expects a 400 `VALIDATION_ERROR` whose details name a field starting with `field`.
    async fn invalid_field(&mut self, call: Call, field: &str) {
        let described = call.describe();
        let answer = self
            .expect(call, StatusCode::BAD_REQUEST, "VALIDATION_ERROR")
            .await;
        let fields: Vec<String> = answer
            .body
            .as_ref()
            .ok()
            .and_then(|b| b["details"].as_array().cloned())
            .unwrap_or_default()
            .iter()
            .filter_map(|d| d["field"].as_str().map(str::to_owned))
            .collect();
        // Case-insensitively: header names are reported as they were spelled.
        let wanted = field.to_ascii_lowercase();
        if !fields
            .iter()
            .any(|f| f.to_ascii_lowercase().starts_with(&wanted))
        {
            self.problems.push(format!(
                "expected a detail for {field}, got {fields:?}\n    for {described}"
            ));
        }
    }

    /// Fails the test with every problem found.
    fn finish(self) {
        assert!(
            self.problems.is_empty(),
            "{} problem(s) in {} requests:\n  {}",
            self.problems.len(),
            self.sent,
            self.problems.join("\n  ")
        );
        assert!(self.sent > 0, "the sweep sent nothing");
    }
}

/// The server is healthy, holds no slot, queues nothing and created no execution.
async fn assert_unharmed(api: &Api) {
    let health = api.send(&Call::get("/actuator/health")).await;
    assert_eq!(health.status, StatusCode::OK);
    assert_eq!(health.json(), &json!({"status": "UP"}));
    for function in api.scheduler.functions() {
        let name = function.spec.name.as_str();
        let queue = api.scheduler.queue_snapshot(name).expect("registered");
        assert_eq!(queue.in_flight, 0, "{name} holds a slot: {queue:?}");
        assert!(queue.queued.is_empty(), "{name} has queued work: {queue:?}");
    }
    assert_eq!(
        api.issued_executions(),
        [],
        "a refused request created an execution"
    );
}

/// The routes that read a JSON body, each with a body it would accept.
fn body_routes() -> Vec<(String, Value)> {
    vec![
        (
            "/v1/functions".to_owned(),
            json!({"name": "other", "image": "i", "executionMode": "LOCAL"}),
        ),
        (action(ECHO, "invoke"), json!({"input": 1})),
        (action(ECHO, "enqueue"), json!({"input": 1})),
        (
            complete("exec-unknown"),
            json!({"success": true, "output": 1}),
        ),
    ]
}

/// The field of each body route whose value the server reads as JSON (a broken value
/// inside a field the route ignores could be skipped without a look).
fn value_field(route: &str) -> &'static str {
    if route == "/v1/functions" {
        "image"
    } else if route.ends_with(":complete") {
        "output"
    } else {
        "input"
    }
}

/// Bodies that are not JSON, most of them broken inside `field`, the value the route
/// reads.
fn malformed_bodies(field: &str) -> Vec<Vec<u8>> {
    let inside = |value: &[u8]| [b"{\"", field.as_bytes(), b"\": ", value, b"}"].concat();
    vec![
        b"".to_vec(),
        b"{".to_vec(),
        b"not json".to_vec(),
        vec![0xff, 0xfe, 0x00],
        b"\0".to_vec(),
        format!("{{'{field}': 1}}").into_bytes(),
        format!("{{\"{field}\": 1}} trailing").into_bytes(),
        format!("{{\"{field}\": 1,}}").into_bytes(),
        inside(b""),
        inside(b"NaN"),
        inside(b"0x10"),
        inside(b"\"unterminated"),
        // Invalid UTF-8, and a raw control character, inside a string.
        inside(b"\"\xc3\x28\""),
        inside(b"\"\x00\""),
    ]
}

#[tokio::test(start_paused = true)]
async fn malformed_json_is_400_malformed_json_on_every_body_route() {
    let api = api_with_echo().await;
    let mut sweep = Sweep::new(&api);
    for (route, _) in body_routes() {
        let bodies = malformed_bodies(value_field(&route));
        for body in bodies {
            let call = Call::post(route.as_str()).body("application/json", body);
            sweep
                .expect(call, StatusCode::BAD_REQUEST, "MALFORMED_JSON")
                .await;
        }
    }
    sweep.finish();
    assert_unharmed(&api).await;
}

#[tokio::test(start_paused = true)]
async fn deeply_nested_json_never_crashes_the_server() {
    let api = Api::new(ApiConfig::default());
    api.register(json!({"name": ECHO, "image": "nanofaas/echo", "executionMode": "LOCAL"}))
        .await;
    api.script(ECHO, [Step::Echo]);
    let depth = 1_000_000;
    let nested = format!("{}{}", "[".repeat(depth), "]".repeat(depth));

    // A spec is read as a tree: past the parser's depth limit it is refused.
    let spec = Call::post("/v1/functions").body("application/json", nested.clone());
    let refused = api.send(&spec).await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST);
    assert_eq!(not_a_refusal(&refused), None);

    // An input is valid JSON the control plane only forwards: kept as text, however
    // deep, through the queue, the dispatch and the record.
    let body = format!("{{\"input\": {nested}}}");
    let queued = api
        .send(&Call::post(action(ECHO, "enqueue")).body("application/json", body))
        .await;
    assert_eq!(queued.status, StatusCode::ACCEPTED, "{:?}", queued.body);
    let drained = api.send(&Call::post(drain(ECHO))).await;
    assert_eq!(drained.json(), &json!({"dispatched": true}));
    let record = api.execution(&queued.execution_id()).await;
    assert_eq!(record.status, StatusCode::OK);
    // (Too deep for the test's own JSON parser: look at the text.)
    let text = record.body.expect_err("deeper than serde_json parses");
    assert!(text.contains(&nested), "the output is the input");
    assert!(text.contains("\"status\":\"success\""), "{}", &text[..200]);
}

#[tokio::test(start_paused = true)]
async fn every_function_spec_field_with_a_wrong_type_is_named_in_a_400() {
    let api = api();
    let mut sweep = Sweep::new(&api);
    let valid = json!({"name": "f", "image": "i", "executionMode": "POOL", "endpointUrl": "http://127.0.0.1:9/"});
    let wrong: &[(&str, &[Value])] = &[
        (
            "name",
            &[json!(1), json!(true), json!([]), json!({}), json!("")],
        ),
        ("image", &[json!(1), json!([]), json!({}), json!("  ")]),
        (
            "executionMode",
            &[json!(1), json!("CLOUD"), json!("pool"), json!([])],
        ),
        ("runtimeMode", &[json!(true), json!("SOCKET"), json!({})]),
        (
            "endpointUrl",
            &[
                json!(1),
                json!("ftp://x"),
                json!("not a url"),
                json!("http://"),
                json!(["http://x"]),
            ],
        ),
        ("url", &[json!(1), json!("ftp://x")]),
        (
            "timeoutMs",
            &[
                json!("30"),
                json!(1.5),
                json!(-1),
                json!(0),
                json!(300_001),
                json!(true),
            ],
        ),
        ("timeoutMillis", &[json!("x"), json!(0)]),
        (
            "concurrency",
            &[
                json!("4"),
                json!(0),
                json!(-1),
                json!(1.5),
                json!(4_294_967_296_u64),
            ],
        ),
        ("queueSize", &[json!("100"), json!(0), json!(-5), json!({})]),
        (
            "maxRetries",
            &[json!("3"), json!(-1), json!(2.5), json!([])],
        ),
        ("command", &[json!("ls"), json!([1]), json!({})]),
        ("env", &[json!([]), json!({"A": 1}), json!("A=1")]),
        ("resources", &[json!("big"), json!(5), json!({"cpu": 1})]),
        ("runtimeCommand", &[json!(1), json!([])]),
        ("imagePullSecrets", &[json!("x"), json!([1])]),
        (
            "scalingConfig",
            &[
                json!([]),
                json!("x"),
                json!({"strategy": "MAGIC"}),
                json!({"minReplicas": "1"}),
                json!({"minReplicas": 3, "maxReplicas": 2}),
                json!({"metrics": "x"}),
                json!({"metrics": [{"type": "bogus", "target": "1"}]}),
                json!({"metrics": [{"type": "rps", "target": "-1"}]}),
            ],
        ),
    ];
    for (field, values) in wrong {
        for value in *values {
            let mut spec = valid.clone();
            if *field == "url" {
                // The canonical name wins over its alias: test the alias alone.
                spec.as_object_mut().unwrap().remove("endpointUrl");
            }
            spec[*field] = value.clone();
            sweep
                .invalid_field(Call::post_json("/v1/functions", &spec), field)
                .await;
        }
    }
    sweep.finish();
    let listed = api.send(&Call::get("/v1/functions")).await;
    assert_eq!(listed.json(), &json!([]), "nothing was registered");
    assert_unharmed(&api).await;
}

#[tokio::test(start_paused = true)]
async fn missing_and_null_fields_are_400_validation_error() {
    let api = api_with_echo().await;
    let mut sweep = Sweep::new(&api);
    let specs = [
        (json!({}), "name"),
        (json!({"image": "i"}), "name"),
        (json!({"name": "f"}), "image"),
        (json!({"name": null, "image": "i"}), "name"),
        (json!({"name": "f", "image": null}), "image"),
        (
            json!({"name": "f", "image": "i", "executionMode": "POOL"}),
            "endpointUrl",
        ),
        (
            json!({"name": "f", "image": "i", "executionMode": "POOL", "endpointUrl": null}),
            "endpointUrl",
        ),
        (json!(null), "$"),
        (json!([]), "$"),
        (json!("f"), "$"),
        (json!(7), "$"),
    ];
    for (spec, field) in specs {
        sweep
            .invalid_field(Call::post_json("/v1/functions", &spec), field)
            .await;
    }
    let invocations = [
        (json!({}), "input"),
        (json!({"input": null}), "input"),
        (json!({"metadata": {}}), "input"),
        (json!({"input": 1, "metadata": [1]}), "metadata"),
        (json!({"input": 1, "metadata": {"a": 1}}), "metadata"),
        (json!({"input": 1, "metadata": "a=b"}), "metadata"),
        (json!(null), "$"),
        (json!("input"), "$"),
    ];
    for verb in ["invoke", "enqueue"] {
        for (body, field) in &invocations {
            let call = Call::post_json(action(ECHO, verb), body)
                .header("Idempotency-Key", "missing-fields");
            sweep.invalid_field(call, field).await;
        }
    }
    sweep.finish();
    assert_unharmed(&api).await;
}

#[tokio::test(start_paused = true)]
async fn bodies_over_the_limit_are_413_on_every_body_route() {
    let api = api_with_echo().await;
    let mut sweep = Sweep::new(&api);
    for (route, valid) in body_routes() {
        for size in [LIMIT + 1, 4 * LIMIT, 1024 * 1024] {
            // Valid JSON of the route's shape, padded past the limit.
            let mut body = valid.clone();
            body["padding"] = json!("x".repeat(size));
            let call = Call::post_json(route.as_str(), &body);
            sweep
                .expect(call, StatusCode::PAYLOAD_TOO_LARGE, "PAYLOAD_TOO_LARGE")
                .await;
        }
    }
    sweep.finish();

    // Streamed in chunks with no length announced: the limit still holds.
    let chunks = (0..64).map(|_| Ok::<_, std::io::Error>(Bytes::from(vec![b' '; 64])));
    let streamed = Request::post(action(ECHO, "enqueue"))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from_stream(futures::stream::iter(
            std::iter::once(Ok(Bytes::from_static(b"{\"input\": 1")))
                .chain(chunks)
                .chain(std::iter::once(Ok(Bytes::from_static(b"}")))),
        )))
        .unwrap();
    let answer = api.send_request(streamed).await;
    assert_eq!(
        answer.status,
        StatusCode::PAYLOAD_TOO_LARGE,
        "{:?}",
        answer.body
    );
    assert_eq!(not_a_refusal(&answer), None);
    assert_unharmed(&api).await;
}

#[tokio::test(start_paused = true)]
async fn wrong_or_missing_content_types_are_415() {
    let api = api_with_echo().await;
    let mut sweep = Sweep::new(&api);
    let content_types: &[&[u8]] = &[
        b"text/plain",
        b"text/json",
        b"application/x-www-form-urlencoded",
        b"multipart/form-data; boundary=x",
        b"application/jsonx",
        b"application/xml",
        b"json",
        b"",
        b"application/j\xe9son",
    ];
    for (route, valid) in body_routes() {
        let body = valid.to_string();
        let call = Call::post(route.as_str()).untyped_body(body.clone());
        sweep
            .expect(
                call,
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "UNSUPPORTED_MEDIA_TYPE",
            )
            .await;
        for content_type in content_types {
            let call = Call::post(route.as_str())
                .header_bytes(header::CONTENT_TYPE.as_str(), content_type)
                .untyped_body(body.clone());
            sweep
                .expect(
                    call,
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "UNSUPPORTED_MEDIA_TYPE",
                )
                .await;
        }
    }
    sweep.finish();
    assert_unharmed(&api).await;
}

/// Names and ids no function or execution has, percent-encoded as a path segment.
fn hostile_segments() -> Vec<String> {
    let mut segments: Vec<String> = [
        "..",
        "%2E%2E",
        "..%2F..%2Fetc%2Fpasswd",
        "%2F",
        "a%2Fb",
        "%00",
        "a%0Ab",
        "%07",
        "%7F",
        "%1B%5B31m",
        "h%C3%A9llo",
        "%F0%9F%92%A5",
        "%C3%28",
        "%FF",
        "%ZZ",
        "%",
        "x'%20OR%20'1'%3D'1",
        "1%3BDROP%20TABLE%20functions",
        "%22%3E%3Cscript%3E",
        "%25",
        "%20",
        "echo%20",
        "ECHO",
        "echo.",
    ]
    .map(str::to_owned)
    .to_vec();
    segments.push("a".repeat(10_000));
    segments.push("%E2%80%AE".repeat(500));
    segments
}

#[tokio::test(start_paused = true)]
async fn hostile_names_and_ids_are_refused_and_never_reach_anything() {
    let api = api_with_echo().await;
    let mut sweep = Sweep::new(&api);
    let invocation = json!({"input": 1});
    for segment in hostile_segments() {
        sweep
            .refused(Call::get(format!("/v1/functions/{segment}")))
            .await;
        sweep
            .refused(Call::delete(format!("/v1/functions/{segment}")))
            .await;
        for verb in ["invoke", "enqueue"] {
            sweep
                .refused(Call::post_json(action(&segment, verb), &invocation))
                .await;
        }
        sweep.refused(Call::post(drain(&segment))).await;
        sweep
            .refused(Call::get(format!("/v1/executions/{segment}")))
            .await;
        sweep
            .refused(Call::post_json(
                complete(&segment),
                &json!({"success": true, "output": 1}),
            ))
            .await;
    }
    // The same names inside a body are validation errors.
    for name in [
        "..",
        "a/b",
        "\0",
        "a\nb",
        "héllo",
        "💥",
        "x' OR '1'='1",
        "1;DROP TABLE functions",
        &"a".repeat(64),
        "",
        " echo",
    ] {
        let spec = json!({"name": name, "image": "i", "executionMode": "LOCAL"});
        sweep
            .invalid_field(Call::post_json("/v1/functions", &spec), "name")
            .await;
    }
    sweep.finish();
    let listed = api.send(&Call::get("/v1/functions")).await;
    assert_eq!(listed.json().as_array().map(Vec::len), Some(1), "only echo");
    assert_unharmed(&api).await;
}

#[tokio::test(start_paused = true)]
async fn unknown_actions_routes_and_methods_are_404_or_405() {
    let api = api_with_echo().await;
    let mut sweep = Sweep::new(&api);
    let invocation = json!({"input": 1});
    for verb in [
        "explode",
        "",
        "INVOKE",
        "invoke:now",
        "drain-once",
        "complete",
        "invoke%00",
    ] {
        sweep
            .not_found(Call::post_json(action(ECHO, verb), &invocation))
            .await;
    }
    sweep
        .not_found(Call::post_json("/v1/functions/:invoke", &invocation))
        .await;
    sweep
        .not_found(Call::post(drain(ECHO).replace("drain-once", "drain-twice")))
        .await;
    sweep
        .not_found(Call::post(format!("/v1/internal/functions/{ECHO}")))
        .await;
    sweep
        .not_found(Call::post_json(
            "/v1/internal/executions/exec-1:explode",
            &json!({"success": true}),
        ))
        .await;
    sweep
        .not_found(Call::post_json(
            "/v1/internal/executions/exec-1",
            &json!({"success": true}),
        ))
        .await;
    for path in [
        "/",
        "/v1",
        "/v1/",
        "/v2/functions",
        "/v1/functions/echo/replicas/extra",
        "/v1/executions",
        "/actuator",
        "/actuator/prometheus/../health",
    ] {
        sweep.not_found(Call::get(path)).await;
    }
    for (method, path) in [
        ("PUT", "/v1/functions"),
        ("PATCH", "/v1/functions/echo"),
        ("PUT", "/v1/functions/echo:invoke"),
        ("DELETE", "/v1/executions/exec-1"),
        ("GET", "/v1/internal/executions/exec-1:complete"),
        ("GET", "/v1/internal/functions/echo:drain-once"),
        ("POST", "/actuator/health"),
        ("BREW", "/v1/functions"),
    ] {
        sweep
            .expect(
                Call::method(method, path),
                StatusCode::METHOD_NOT_ALLOWED,
                "METHOD_NOT_ALLOWED",
            )
            .await;
    }
    sweep.finish();
    assert_unharmed(&api).await;
}

#[tokio::test(start_paused = true)]
async fn bad_timeout_attempt_and_key_headers_are_400() {
    let api = api_with_echo().await;
    let mut sweep = Sweep::new(&api);
    let invocation = json!({"input": 1});
    let bad_numbers: &[&[u8]] = &[
        b"0",
        b"-1",
        b"300001",
        b"1e3",
        b"",
        b" ",
        b"1.5",
        b"99999999999999999999999",
        b"0x10",
        b"10 ms",
        b"\xe9",
    ];
    for value in bad_numbers {
        let call = Call::post_json(action(ECHO, "invoke"), &invocation)
            .header_bytes("X-Timeout-Ms", value)
            .header("Idempotency-Key", "bad-header");
        sweep.invalid_field(call, "X-Timeout-Ms").await;
    }
    // Checked before the execution is looked up, so an unknown id still gets the 400.
    for value in bad_numbers.iter().filter(|v| **v != b"300001") {
        let call = Call::post_json(complete("exec-unknown"), &json!({"success": true}))
            .header_bytes("X-Dispatch-Attempt", value);
        sweep.invalid_field(call, "X-Dispatch-Attempt").await;
    }
    for name in ["Idempotency-Key", "X-Trace-Id"] {
        for verb in ["invoke", "enqueue"] {
            let call =
                Call::post_json(action(ECHO, verb), &invocation).header_bytes(name, b"caf\xe9");
            sweep.invalid_field(call, &name.to_ascii_lowercase()).await;
            // Kept with the execution for a TTL, so bounded: 256 bytes at most.
            let call =
                Call::post_json(action(ECHO, verb), &invocation).header(name, &"k".repeat(257));
            sweep.invalid_field(call, &name.to_ascii_lowercase()).await;
        }
    }
    sweep.finish();
    assert_unharmed(&api).await;
}

#[tokio::test(start_paused = true)]
async fn an_idempotency_key_of_256_bytes_names_its_execution() {
    let api = api_with_echo().await;
    let longest = "k".repeat(256);
    let enqueue = || {
        Call::post_json(action(ECHO, "enqueue"), &json!({"input": 1}))
            .header("Idempotency-Key", &longest)
            .header("X-Trace-Id", &longest)
    };
    let first = api.send(&enqueue()).await;
    assert_eq!(first.status, StatusCode::ACCEPTED, "{:?}", first.body);
    let replay = api.send(&enqueue()).await;
    assert_eq!(replay.execution_id(), first.execution_id());
}

#[tokio::test(start_paused = true)]
async fn a_refused_request_leaves_no_idempotency_claim_behind() {
    let api = api();
    api.register(json!({"name": "tiny", "image": "i", "executionMode": "LOCAL", "queueSize": 1}))
        .await;
    api.script("tiny", [Step::Echo]);
    let key = ("Idempotency-Key", "k");
    let enqueue =
        |body: &Value| Call::post_json(action("tiny", "enqueue"), body).header(key.0, key.1);
    let invoke =
        |body: &Value| Call::post_json(action("tiny", "invoke"), body).header(key.0, key.1);
    let mut sweep = Sweep::new(&api);
    sweep.refused(enqueue(&json!({"input": null}))).await;
    sweep.refused(enqueue(&json!({"metadata": {"a": 1}}))).await;
    sweep
        .refused(enqueue(&json!({"input": "x".repeat(2 * LIMIT)})))
        .await;
    sweep
        .refused(
            Call::post(action("tiny", "enqueue"))
                .header(key.0, key.1)
                .body("application/json", "{\"input\": "),
        )
        .await;
    sweep
        .refused(
            Call::post(action("tiny", "enqueue"))
                .header(key.0, key.1)
                .body("text/plain", "{\"input\": 1}"),
        )
        .await;
    sweep
        .refused(invoke(&json!({"input": 1})).header("X-Timeout-Ms", "0"))
        .await;
    sweep.finish();
    assert_unharmed(&api).await;

    // A full queue refuses with 429; that refusal must not keep the key either.
    let filler = api
        .send(&Call::post_json(
            action("tiny", "enqueue"),
            &json!({"input": "filler"}),
        ))
        .await;
    assert_eq!(filler.status, StatusCode::ACCEPTED);
    let full = api.send(&enqueue(&json!({"input": "after"}))).await;
    assert_eq!(full.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(not_a_refusal(&full), None);
    let drained = api.send(&Call::post(drain("tiny"))).await;
    assert_eq!(drained.json(), &json!({"dispatched": true}));

    // Now the key is used for real: a fresh execution, named only once.
    let fresh = api.send(&enqueue(&json!({"input": "after"}))).await;
    assert_eq!(fresh.status, StatusCode::ACCEPTED, "{:?}", fresh.body);
    let id = fresh.execution_id();
    let record = api.execution(&id).await;
    assert_eq!(record.json()["status"], "queued", "{}", record.json());
    let replay = api.send(&enqueue(&json!({"input": "after"}))).await;
    assert_eq!(
        replay.execution_id(),
        id,
        "the key now names this execution"
    );
    let reused = api.send(&enqueue(&json!({"input": "other"}))).await;
    assert_eq!(reused.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(not_a_refusal(&reused), None);
}

/// serde's derive reads a JSON array as a struct's fields in order, so `[input]` once
/// passed as an invocation and `["code"]` as a callback's `error` object, where api.md
/// wants objects.
#[tokio::test(start_paused = true)]
async fn json_arrays_are_neither_invocations_nor_callback_errors() {
    let api = api_with_echo().await;
    let mut sweep = Sweep::new(&api);
    for body in [json!([{"input": 1}]), json!(["x"]), json!([1, {}])] {
        let call = Call::post_json(action(ECHO, "enqueue"), &body);
        sweep.invalid_field(call, "$").await;
    }
    sweep.finish();
    assert_unharmed(&api).await;

    let queued = api
        .send(&Call::post_json(
            action(ECHO, "enqueue"),
            &json!({"input": 1}),
        ))
        .await;
    let id = queued.execution_id();
    let mut sweep = Sweep::new(&api);
    let call = Call::post_json(
        complete(id.as_str()),
        &json!({"success": false, "error": ["boom"]}),
    );
    sweep.invalid_field(call, "error").await;
    sweep.finish();
    assert_eq!(api.execution(&id).await.json()["status"], "queued");
}
