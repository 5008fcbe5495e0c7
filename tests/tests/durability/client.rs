//! The client side of the durability tests: one HTTP client, answers read whole, the
//! API calls they make, and the bounded polls that wait for executions to end.

use std::cell::RefCell;
use std::collections::HashMap;
use std::time::Duration;

use futures::StreamExt;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::processes::Log;

/// How many requests a poll over many executions has in flight at once.
const PARALLEL_READS: usize = 32;

/// The client: no request waits forever on a process that died.
pub(crate) fn http() -> reqwest::Client {
    crate::processes::http_client_builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("an HTTP client")
}

/// An answer, read whole.
#[derive(Debug)]
pub(crate) struct Reply {
    pub(crate) status: StatusCode,
    pub(crate) headers: reqwest::header::HeaderMap,
    /// The JSON body (`Null` when empty, a string when it is not JSON).
    pub(crate) body: Value,
}

impl Reply {
    pub(crate) fn execution_id(&self) -> String {
        self.body["executionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no executionId in {} {}", self.status, self.body))
            .to_owned()
    }
}

/// Sends `request` and reads the answer whole; `Err` when the transport failed (the
/// process died before, while or after it took the request).
pub(crate) async fn send(request: reqwest::RequestBuilder) -> Result<Reply, reqwest::Error> {
    let response = request.send().await?;
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response.bytes().await?;
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
    };
    Ok(Reply {
        status,
        headers,
        body,
    })
}

/// Sends `request` to a server that must answer.
pub(crate) async fn call(request: reqwest::RequestBuilder) -> Reply {
    send(request).await.expect("the server answers")
}

/// `POST <url>` with a JSON body and, if given, an `Idempotency-Key`.
pub(crate) async fn post(
    http: &reqwest::Client,
    url: &str,
    body: &Value,
    key: Option<&str>,
) -> Result<Reply, reqwest::Error> {
    let mut request = http.post(url).json(body);
    if let Some(key) = key {
        request = request.header("Idempotency-Key", key);
    }
    send(request).await
}

/// A `POOL` function served by the runtime at `endpoint`, with `overrides`.
pub(crate) fn pool_function(name: &str, endpoint: &str, overrides: &Value) -> Value {
    let mut spec = json!({
        "name": name,
        "image": "nanofaas/python-runtime",
        "executionMode": "POOL",
        "endpointUrl": endpoint,
    });
    for (key, value) in overrides.as_object().expect("an object") {
        spec[key] = value.clone();
    }
    spec
}

/// Registers `spec`, expecting 201.
pub(crate) async fn register(http: &reqwest::Client, api: &str, spec: &Value) {
    let reply = post(http, &format!("{api}/v1/functions"), spec, None)
        .await
        .expect("the control plane answers");
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
}

pub(crate) fn is_terminal(record: &Value) -> bool {
    matches!(
        record["status"].as_str(),
        Some("success" | "error" | "timeout")
    )
}

/// `GET /v1/executions/{id}`: the record, or `None` for a 404.
pub(crate) async fn execution(http: &reqwest::Client, api: &str, id: &str) -> Option<Value> {
    let reply = call(http.get(format!("{api}/v1/executions/{id}"))).await;
    match reply.status {
        StatusCode::OK => Some(reply.body),
        StatusCode::NOT_FOUND => None,
        other => panic!("GET execution {id}: {other} {}", reply.body),
    }
}

/// Reads every execution in `ids` until each one is terminal, within `bound`: their
/// terminal records. An id that reads 404 is a record lost (the TTLs of these tests
/// outlive them), and fails at once.
pub(crate) async fn until_all_terminal(
    http: &reqwest::Client,
    api: &str,
    ids: &[String],
    bound: Duration,
) -> HashMap<String, Value> {
    let deadline = Instant::now() + bound;
    let mut done = HashMap::new();
    let mut pending = ids.to_vec();
    loop {
        let reads: Vec<(String, Option<Value>)> = futures::stream::iter(pending)
            .map(|id| async move {
                let record = execution(http, api, &id).await;
                (id, record)
            })
            .buffer_unordered(PARALLEL_READS)
            .collect()
            .await;
        pending = Vec::new();
        for (id, record) in reads {
            let record = record.unwrap_or_else(|| panic!("execution {id} was stored and is gone"));
            if is_terminal(&record) {
                done.insert(id, record);
            } else {
                pending.push(id);
            }
        }
        if pending.is_empty() {
            return done;
        }
        assert!(
            Instant::now() < deadline,
            "after {bound:?}, {} executions have not ended, e.g. {:?}",
            pending.len(),
            &pending[..pending.len().min(5)]
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// What the runtime saw (`GET <runtime>/stats`).
pub(crate) async fn runtime_stats(http: &reqwest::Client, runtime: &str) -> Value {
    call(http.get(format!("{runtime}/stats"))).await.body
}

/// The sum of a gauge over all its labels (every function) in `/actuator/prometheus`.
pub(crate) async fn gauge_sum(http: &reqwest::Client, management: &str, name: &str) -> f64 {
    metric_sum(http, management, name, "").await
}

/// The sum of the series of metric `name` whose labels contain `labelled` (`""`: all
/// of them) in `/actuator/prometheus`.
pub(crate) async fn metric_sum(
    http: &reqwest::Client,
    management: &str,
    name: &str,
    labelled: &str,
) -> f64 {
    let text = http
        .get(format!("{management}/actuator/prometheus"))
        .send()
        .await
        .expect("the control plane answers")
        .text()
        .await
        .expect("a readable body");
    text.lines()
        .filter(|line| {
            line.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(['{', ' ']))
        })
        .filter(|line| line.contains(labelled))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Reads a control plane's log into `into` for as long as it is polled (and then
/// some: it never ends, so it fits a `select!` against the test's body). Reading
/// keeps the pipe from filling up and stalling a process that logs a lot.
pub(crate) async fn drain(mut log: Log, into: &RefCell<Vec<String>>) {
    while let Ok(Some(line)) = log.next_line().await {
        into.borrow_mut().push(line);
    }
    std::future::pending::<()>().await;
}

/// The numeric value of `key=value` in a log line (`tracing`'s text format).
pub(crate) fn log_count(line: &str, key: &str) -> Option<u64> {
    line.split_whitespace()
        .find_map(|token| token.strip_prefix(key)?.strip_prefix('='))?
        .parse()
        .ok()
}
