//! Property tests of every parser of client input: function specs, invocation bodies,
//! callback bodies, runtime-configuration patches, the headers the API reads and the
//! ISO-8601 durations. Whatever a client sends, the answer is a status the OpenAPI
//! document lists for that operation, a refusal is a 4xx with the contract's JSON error
//! body, and nothing panics. The bad-input sweep (bad_input.rs) pins the refusals one
//! by one; these find the inputs nobody thought of.
//!
//! Each property drives one router, kept across its cases on one paused runtime, so
//! what earlier cases left behind (claims, queued work) is part of what later ones see.
//! `PROPTEST_CASES` sets the number of cases (256 by default).

mod support;

use std::time::Duration;

use axum::http::StatusCode;
use core_types::parse_iso_duration;
use http_api::ApiConfig;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde_json::{Map, Value, json};
use support::{Answer, Api, Call, Step, action, complete, not_a_refusal, spec};

/// A small body limit, so bodies over it are among what the generators reach.
const LIMIT: usize = 4096;

/// The names a spec, an invocation, a callback or a patch reads: generated objects use
/// them more often than random keys, so the parsers see wrong values in real fields.
const FIELDS: &[&str] = &[
    "name",
    "image",
    "executionMode",
    "runtimeMode",
    "endpointUrl",
    "timeoutMs",
    "concurrency",
    "queueSize",
    "maxRetries",
    "command",
    "env",
    "resources",
    "runtimeCommand",
    "imagePullSecrets",
    "scalingConfig",
    "strategy",
    "minReplicas",
    "maxReplicas",
    "metrics",
    "type",
    "target",
    "input",
    "metadata",
    "status",
    "success",
    "output",
    "error",
    "code",
    "message",
    "expectedRevision",
    "rateMaxPerSecond",
    "syncQueueEnabled",
    "syncQueueAdmissionEnabled",
    "syncQueueMaxEstimatedWait",
    "syncQueueMaxQueueWait",
    "syncQueueRetryAfterSeconds",
];

/// Texts a parser may treat specially.
const TEXTS: &[&str] = &[
    "",
    "LOCAL",
    "POOL",
    "DEPLOYMENT",
    "HTTP",
    "STDIO",
    "FILE",
    "NONE",
    "INTERNAL",
    "success",
    "error",
    "timeout",
    "queued",
    "running",
    "rps",
    "queue_depth",
    "in_flight",
    "PT2S",
    "PT0.5S",
    "P1D",
    "-PT1S",
    "http://127.0.0.1:9/invoke",
    "https://example.invalid/",
    "ftp://x/",
    "fn",
    "a..b",
    "../etc",
    "\u{0}",
    "🦀",
];

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => proptest::sample::select(TEXTS).prop_map(str::to_owned),
        1 => ".{0,24}",
    ]
}

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => proptest::sample::select(FIELDS).prop_map(str::to_owned),
        1 => ".{0,8}",
    ]
}

fn number() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        (-5i64..70_000).prop_map(Value::from),
        any::<f64>()
            .prop_filter("JSON has no NaN or infinity", |f| f.is_finite())
            .prop_map(Value::from),
    ]
}

/// Any JSON value, nested a few levels, its objects keyed mostly by real field names.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        number(),
        text().prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::btree_map(key(), inner, 0..6)
                .prop_map(|fields| Value::Object(fields.into_iter().collect())),
        ]
    })
}

/// `base` with some of its fields replaced, removed or added: mostly near-valid
/// bodies, which get past the first checks and reach the deeper ones.
fn mutated(base: Value) -> impl Strategy<Value = Value> {
    let edits = proptest::collection::vec((key(), proptest::option::of(json_value())), 0..4);
    (edits, any::<bool>()).prop_map(move |(edits, whole)| {
        if whole && edits.is_empty() {
            return base.clone();
        }
        let mut body: Map<String, Value> = base.as_object().cloned().unwrap_or_default();
        for (field, value) in edits {
            match value {
                Some(value) => body.insert(field, value),
                None => body.remove(&field),
            };
        }
        Value::Object(body)
    })
}

/// A body as bytes: mostly JSON (near-valid or any), sometimes not JSON at all.
fn body_bytes(base: Value) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        6 => mutated(base).prop_map(|v| v.to_string().into_bytes()),
        2 => json_value().prop_map(|v| v.to_string().into_bytes()),
        1 => proptest::collection::vec(any::<u8>(), 0..64),
        1 => Just(vec![b'x'; LIMIT + 1]),
    ]
}

/// A header value HTTP can carry: visible ASCII, spaces, tabs and obs-text (the bytes
/// of a generated text that a header cannot hold are left out).
fn header_value() -> impl Strategy<Value = Vec<u8>> {
    let carried = |b: &u8| *b == b'\t' || (0x20..0x7f).contains(b) || *b >= 0x80;
    prop_oneof![
        text().prop_map(move |t| t.into_bytes().into_iter().filter(carried).collect()),
        proptest::collection::vec(any::<u8>(), 0..300)
            .prop_map(move |bytes| bytes.into_iter().filter(carried).collect()),
        any::<u64>().prop_map(|n| n.to_string().into_bytes()),
    ]
}

/// One router, its OpenAPI document, and the runtime its cases run on.
struct World {
    runtime: tokio::runtime::Runtime,
    api: Api,
    document: Value,
}

impl World {
    fn new(config: ApiConfig) -> Self {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .expect("a runtime");
        let api = Api::new(ApiConfig {
            max_body_bytes: LIMIT,
            ..config
        });
        let document = runtime.block_on(async {
            let answer = api.send(&Call::get("/openapi.json")).await;
            assert_eq!(answer.status, StatusCode::OK);
            answer.json().clone()
        });
        Self {
            runtime,
            api,
            document,
        }
    }

    fn with_echo() -> Self {
        let world = Self::new(ApiConfig::default());
        world.runtime.block_on(
            world
                .api
                .register(spec("echo", json!({"queueSize": 100_000, "maxRetries": 0}))),
        );
        world
    }

    fn send(&self, call: &Call) -> Answer {
        self.runtime.block_on(self.api.send(call))
    }

    /// Fails the case unless `answer` is a status the document lists for `method`
    /// `template`, and a refusal has the contract's error body.
    fn documented(
        &self,
        method: &str,
        template: &str,
        call: &Call,
        answer: &Answer,
    ) -> Result<(), TestCaseError> {
        let responses = &self.document["paths"][template][method]["responses"];
        prop_assert!(
            responses.is_object(),
            "{method} {template} is not in the document"
        );
        prop_assert!(
            responses.get(answer.status.as_str()).is_some(),
            "{} is not documented for {method} {template}\n  for {}\n  body {:?}",
            answer.status,
            call.describe(),
            answer.body
        );
        if !answer.status.is_success()
            && let Some(problem) = not_a_refusal(answer)
        {
            // A documented 503 (a DEPLOYMENT nothing can run) is a refusal too.
            prop_assert!(
                answer.status == StatusCode::SERVICE_UNAVAILABLE
                    && answer.body.as_ref().is_ok_and(|b| b["error"].is_string()),
                "{problem}\n  for {}",
                call.describe()
            );
        }
        prop_assert!(
            !answer.status.is_server_error() || answer.status == StatusCode::SERVICE_UNAVAILABLE,
            "{} for {}",
            answer.status,
            call.describe()
        );
        Ok(())
    }

    fn healthy(&self) -> Result<(), TestCaseError> {
        let health = self.send(&Call::get("/actuator/health"));
        prop_assert_eq!(health.status, StatusCode::OK);
        Ok(())
    }
}

fn runner() -> TestRunner {
    TestRunner::new(Config {
        failure_persistence: None,
        ..Config::default()
    })
}

/// Panics with the reason of a failed property and the (shrunk) input, cut: a body over
/// the limit would otherwise fill the report with its bytes.
fn holds<T: std::fmt::Debug>(outcome: Result<(), proptest::test_runner::TestError<T>>) {
    if let Err(error) = outcome {
        let mut shown = format!("{error}");
        if shown.len() > 2000 {
            shown.truncate(shown.floor_char_boundary(2000));
            shown.push_str("...");
        }
        panic!("{shown}");
    }
}

/// How many cases were accepted and how many refused: a property whose generator never
/// reaches one side would pass without testing it.
#[derive(Default)]
struct Seen {
    accepted: std::cell::Cell<usize>,
    refused: std::cell::Cell<usize>,
}

impl Seen {
    fn count(&self, answer: &Answer) {
        let side = if answer.status.is_success() {
            &self.accepted
        } else {
            &self.refused
        };
        side.set(side.get() + 1);
    }

    fn both(&self, property: &str) {
        let (accepted, refused) = (self.accepted.get(), self.refused.get());
        assert!(
            accepted > 0 && refused > 0,
            "{property}: {accepted} accepted, {refused} refused: the generator misses a side"
        );
    }
}

fn json_call(uri: String, body: Vec<u8>) -> Call {
    Call::post(uri).body("application/json", body)
}

#[test]
fn any_function_spec_is_registered_or_refused_as_documented() {
    let world = World::new(ApiConfig::default());
    let base = json!({"name": "probe", "image": "nanofaas/echo", "executionMode": "LOCAL"});
    let seen = Seen::default();
    holds(runner().run(&body_bytes(base), |body| {
        let call = json_call("/v1/functions".to_owned(), body);
        let answer = world.send(&call);
        seen.count(&answer);
        world.documented("post", "/v1/functions", &call, &answer)?;
        if answer.status == StatusCode::CREATED {
            // Registered as it was read: the name it answers is the one it serves.
            let name = answer.json()["name"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            let read = world.send(&Call::get(format!("/v1/functions/{name}")));
            prop_assert_eq!(read.status, StatusCode::OK, "{}", call.describe());
            let removed = world.send(&Call::delete(format!("/v1/functions/{name}")));
            prop_assert_eq!(removed.status, StatusCode::NO_CONTENT);
        }
        world.healthy()
    }));
    seen.both("any_function_spec_is_registered_or_refused_as_documented");
    assert_eq!(
        world.api.issued_executions(),
        [],
        "a registration ran something"
    );
}

#[test]
fn any_invocation_body_and_headers_are_accepted_or_refused_as_documented() {
    let world = World::with_echo();
    let headers = proptest::collection::vec(
        (
            proptest::sample::select(&["Idempotency-Key", "X-Trace-Id", "X-Timeout-Ms"][..]),
            header_value(),
        ),
        0..3,
    );
    let base = json!({"input": {"a": 1}, "metadata": {"k": "v"}});
    let case = (body_bytes(base), headers, any::<bool>());
    let seen = Seen::default();
    holds(runner().run(&case, |(body, headers, sync)| {
        let (verb, template) = if sync {
            ("invoke", "/v1/functions/{name}:invoke")
        } else {
            ("enqueue", "/v1/functions/{name}:enqueue")
        };
        let mut call = json_call(action("echo", verb), body);
        for (name, value) in &headers {
            call = call.header_bytes(name, value);
        }
        if sync {
            // A sync invocation that is accepted is answered by this attempt.
            world.api.script("echo", [Step::Echo]);
        }
        let answer = world.send(&call);
        seen.count(&answer);
        world.documented("post", template, &call, &answer)?;
        if answer.status.is_client_error() {
            prop_assert!(
                answer.headers.get("X-Execution-Id").is_none()
                    || answer.status == StatusCode::TOO_MANY_REQUESTS,
                "a refusal named an execution: {}",
                call.describe()
            );
        }
        world.healthy()
    }));
    seen.both("any_invocation_body_and_headers_are_accepted_or_refused_as_documented");
}

#[test]
fn any_callback_is_applied_or_refused_as_documented_and_a_refusal_changes_nothing() {
    let world = World::with_echo();
    let enqueue = || {
        let answer = world.send(&Call::post_json(
            action("echo", "enqueue"),
            &json!({"input": "x"}),
        ));
        assert_eq!(answer.status, StatusCode::ACCEPTED, "{:?}", answer.body);
        answer.execution_id()
    };
    let current = std::cell::RefCell::new(enqueue());
    let base = json!({"success": false, "error": {"code": "BOOM", "message": "m"}});
    let attempt = proptest::option::of(header_value());
    let seen = Seen::default();
    holds(
        runner().run(&(body_bytes(base), attempt), |(body, attempt)| {
            let id = current.borrow().clone();
            let mut call = json_call(complete(id.as_str()), body);
            if let Some(attempt) = &attempt {
                call = call.header_bytes("X-Dispatch-Attempt", attempt);
            }
            let answer = world.send(&call);
            seen.count(&answer);
            world.documented(
                "post",
                "/v1/internal/executions/{id}:complete",
                &call,
                &answer,
            )?;
            let record = world.runtime.block_on(world.api.execution(&id));
            match answer.status {
                StatusCode::NO_CONTENT => {
                    // Applied (the execution ended) or ignored (an older attempt named):
                    // either way the next case needs a queued execution.
                    if record.json()["status"] != "queued" {
                        *current.borrow_mut() = enqueue();
                    }
                }
                _ => prop_assert_eq!(
                    &record.json()["status"],
                    "queued",
                    "a refused callback changed the execution: {}",
                    call.describe()
                ),
            }
            world.healthy()
        }),
    );
    seen.both("any_callback_is_applied_or_refused_as_documented_and_a_refusal_changes_nothing");
}

#[test]
fn any_runtime_config_patch_is_applied_or_refused_as_documented() {
    let world = World::new(ApiConfig {
        admin_api: true,
        ..ApiConfig::default()
    });
    let base =
        json!({"expectedRevision": 1, "rateMaxPerSecond": 100, "syncQueueMaxQueueWait": "PT2S"});
    let validate = any::<bool>();
    let seen = Seen::default();
    holds(
        runner().run(&(body_bytes(base), validate), |(body, validate)| {
            let (method, template, call) = if validate {
                let path = "/v1/admin/runtime-config/validate";
                ("post", path, json_call(path.to_owned(), body))
            } else {
                let path = "/v1/admin/runtime-config";
                let call = Call::method("PATCH", path).body("application/json", body);
                ("patch", path, call)
            };
            let answer = world.send(&call);
            seen.count(&answer);
            world.documented(method, template, &call, &answer)?;
            let config = world.send(&Call::get("/v1/admin/runtime-config"));
            prop_assert_eq!(config.status, StatusCode::OK);
            world.healthy()
        }),
    );
    seen.both("any_runtime_config_patch_is_applied_or_refused_as_documented");
}

proptest! {
    #![proptest_config(Config { failure_persistence: None, ..Config::default() })]

    #[test]
    fn any_text_is_a_duration_or_a_clear_error(text in prop_oneof![
        "P?T?[0-9.,]{0,8}[HMSD]?[0-9.]{0,4}[HMS]?",
        "-?PT[0-9]{1,20}(\\.[0-9]{1,12})?S",
        ".{0,16}",
    ]) {
        if let Err(error) = parse_iso_duration(&text) {
            prop_assert!(!error.to_string().is_empty());
        }
    }

    #[test]
    fn a_duration_reads_back_as_written(millis in 0u64..=u64::MAX / 1000) {
        let duration = Duration::from_millis(millis);
        let text = core_types::format_iso_duration(duration);
        prop_assert_eq!(parse_iso_duration(&text), Ok(duration), "{}", text);
    }
}
