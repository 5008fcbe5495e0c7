//! Hostile clients against the real binary: slowloris heads, trickled bodies, oversized
//! heads and idempotency keys, thousands of idle connections, replay storms and callback
//! storms, all at once -- while a well-behaved client keeps getting correct answers.
//! Afterwards the control plane's memory is within a stated bound, and SIGTERM, with
//! hostile connections still open and an execution still running, ends it within its
//! grace. It runs twice: open (loopback), and with authentication on, where the
//! well-behaved client holds the admin token and a stranger's storm of every kind of
//! change, without one, is all 401 and changes nothing.

#[path = "e2e/processes.rs"]
mod processes;

use std::time::Duration;

use futures::StreamExt;
use processes::{ControlPlane, DEADLINE, Runtime, eventually};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// The most resident memory the control plane may use after the storm. Idle it uses
/// ~10 MiB; each open connection costs a read buffer and a task. The issue this guards
/// measured ~100 MB from 300 long idempotency keys alone, and ~236 MB from a million
/// abandoned waits.
const RSS_BOUND_BYTES: u64 = 128 * 1024 * 1024;

/// Kept-alive connections left idle through the storm (fewer if this process may not
/// open that many files).
const IDLE_CONNECTIONS: usize = 2000;

/// The shutdown grace of the control plane under test.
const GRACE: Duration = Duration::from_secs(2);

/// The HTTP address (`host:port`) of the API.
fn address(plane: &ControlPlane) -> String {
    plane.api.trim_start_matches("http://").to_owned()
}

/// How many files this process may open (`Max open files` in `/proc/self/limits`).
fn open_file_limit() -> usize {
    let limits = std::fs::read_to_string("/proc/self/limits").expect("/proc/self/limits");
    limits
        .lines()
        .find(|line| line.starts_with("Max open files"))
        .and_then(|line| line.split_whitespace().nth(3))
        .and_then(|soft| soft.parse().ok())
        .expect("a soft limit of open files")
}

/// The resident memory of `pid` (`VmRSS` in `/proc/<pid>/status`).
fn resident_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("its status");
    let kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
        .expect("a VmRSS line");
    kib * 1024
}

/// Reads from `stream` until the server closes it; whatever it sent before.
async fn until_closed(stream: &mut TcpStream) -> String {
    let mut bytes = Vec::new();
    let read = tokio::time::timeout(DEADLINE, async {
        let mut chunk = [0; 4096];
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => bytes.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await;
    assert!(read.is_ok(), "the server kept a hostile connection open");
    String::from_utf8_lossy(&bytes).into_owned()
}

/// A head sent a byte at a time, slower than the header read timeout: closed unanswered.
async fn slowloris(addr: &str) {
    let mut stream = TcpStream::connect(addr).await.expect("connects");
    let head = b"POST /v1/functions/echo:invoke HTTP/1.1\r\nHost: hostile\r\nX-Pad: ";
    let closed = async {
        for byte in head.iter().cycle() {
            if stream.write_all(&[*byte]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    assert!(
        tokio::time::timeout(DEADLINE, closed).await.is_ok(),
        "a slowloris head was never cut off"
    );
    assert_eq!(until_closed(&mut stream).await, "", "nothing is answered");
}

/// A 6 MiB body trickled a byte at a time: 408 `REQUEST_TIMEOUT` (a caller the server
/// would refuse is refused before its body is read, so it carries the token, if any).
async fn trickled_body(addr: &str, token: Option<&str>) {
    let mut stream = TcpStream::connect(addr).await.expect("connects");
    let authorization =
        token.map_or_else(String::new, |t| format!("Authorization: Bearer {t}\r\n"));
    let head = format!(
        "POST /v1/functions/echo:enqueue HTTP/1.1\r\nHost: hostile\r\n{authorization}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        6 * 1024 * 1024
    );
    stream.write_all(head.as_bytes()).await.expect("sends");
    // It goes on sending a byte now and then and reads in between; once the server has
    // answered and closed, its writes fail, and what it read is the answer.
    let mut answer = Vec::new();
    let answered = async {
        let mut chunk = [0; 1024];
        loop {
            let _ = stream.write_all(b" ").await;
            tokio::select! {
                read = stream.read(&mut chunk) => match read {
                    Ok(0) | Err(_) => break,
                    Ok(n) => answer.extend_from_slice(&chunk[..n]),
                },
                () = tokio::time::sleep(Duration::from_millis(100)) => {}
            }
        }
    };
    assert!(
        tokio::time::timeout(DEADLINE, answered).await.is_ok(),
        "a trickled body was never cut off"
    );
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("\"REQUEST_TIMEOUT\""), "{answer}");
}

/// The admin token of the run with authentication on.
const ADMIN_TOKEN: &str = "the-hostile-tests-admin-token";

/// The API client every well-behaved and storming request goes through, sending
/// `token` with each.
fn client(token: Option<&str>) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(token) = token {
        let value = format!("Bearer {token}").parse().expect("a header value");
        headers.insert(reqwest::header::AUTHORIZATION, value);
    }
    processes::http_client_builder()
        .timeout(DEADLINE)
        .default_headers(headers)
        .build()
        .expect("an HTTP client")
}

async fn post(
    http: &reqwest::Client,
    url: &str,
    body: &Value,
    headers: &[(&str, &str)],
) -> (StatusCode, Value) {
    let mut request = http.post(url).json(body);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.expect("the control plane answers");
    let status = response.status();
    let body = response.json().await.unwrap_or(Value::Null);
    (status, body)
}

/// Heads over the limit (64 KiB by default) and keys over 256 bytes are refused with
/// the contract's errors and change nothing.
async fn oversized_heads_and_keys(http: &reqwest::Client, api: &str) {
    let enqueue = format!("{api}/v1/functions/echo:enqueue");
    let huge = "k".repeat(300 * 1024);
    // An oversized head may be cut off before it is all sent; then there is no answer.
    if let Ok(response) = http
        .post(&enqueue)
        .json(&json!({"input": 1}))
        .header("Idempotency-Key", &huge)
        .send()
        .await
    {
        assert_eq!(
            response.status(),
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
        );
    }
    let long_key = "k".repeat(1024);
    let (status, body) = post(
        http,
        &enqueue,
        &json!({"input": 1}),
        &[("Idempotency-Key", &long_key)],
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"], "VALIDATION_ERROR", "{body}");
}

/// `count` replays of one idempotent invocation, sync ones giving up after 1 ms: each
/// names the same execution.
async fn replay_storm(http: &reqwest::Client, api: &str, count: usize) {
    let invoke = format!("{api}/v1/functions/slow:invoke");
    let enqueue = format!("{api}/v1/functions/slow:enqueue");
    let body = json!({"input": {"mode": "sleep", "ms": 60_000}});
    let key = ("Idempotency-Key", "replayed");
    let (status, first) = post(http, &enqueue, &body, &[key]).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{first}");
    let id = first["executionId"].clone();
    futures::stream::iter(0..count)
        .for_each_concurrent(64, |i| {
            let (body, id) = (&body, &id);
            let (url, headers) = if i % 2 == 0 {
                (&invoke, vec![key, ("X-Timeout-Ms", "1")])
            } else {
                (&enqueue, vec![key])
            };
            async move {
                let (status, reply) = post(http, url, body, &headers).await;
                assert!(status.is_success(), "{status} {reply}");
                assert_eq!(&reply["executionId"], id, "{reply}");
            }
        })
        .await;
}

/// `count` callbacks for executions that do not exist (404) or have finished (204,
/// ignored).
async fn callback_storm(http: &reqwest::Client, api: &str, count: usize) {
    let (status, done) = post(
        http,
        &format!("{api}/v1/functions/echo:invoke"),
        &json!({"input": "done"}),
        &[],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{done}");
    let finished = done["executionId"].as_str().expect("an id").to_owned();
    futures::stream::iter(0..count)
        .for_each_concurrent(64, |i| {
            let finished = &finished;
            async move {
                let (id, expected) = if i % 2 == 0 {
                    (format!("unknown-{i}"), StatusCode::NOT_FOUND)
                } else {
                    (finished.clone(), StatusCode::NO_CONTENT)
                };
                let url = format!("{api}/v1/internal/executions/{id}:complete");
                let (status, reply) = post(
                    http,
                    &url,
                    &json!({"success": true, "output": "forged"}),
                    &[],
                )
                .await;
                assert_eq!(status, expected, "{reply}");
            }
        })
        .await;
    let record = http
        .get(format!("{api}/v1/executions/{finished}"))
        .send()
        .await
        .expect("answers")
        .json::<Value>()
        .await
        .expect("JSON");
    assert_eq!(
        record["output"], "done",
        "a finished execution stays as it ended"
    );
}

/// `count` requests of every kind of change without a token, or with a wrong or
/// malformed one: every one is 401 `UNAUTHENTICATED`, and none changes anything (the
/// caller checks the functions and the finished execution afterwards).
async fn stranger_storm(api: &str, count: usize) {
    let stranger = client(None);
    let wrong = client(Some("a-token-nobody-was-given"));
    futures::stream::iter(0..count)
        .for_each_concurrent(64, |i| {
            let (stranger, wrong) = (&stranger, &wrong);
            async move {
                let (method, path, body) = match i % 5 {
                    0 => ("POST", "/v1/functions".to_owned(),
                        json!({"name": format!("planted-{i}"), "image": "i", "executionMode": "LOCAL"})),
                    1 => ("DELETE", "/v1/functions/echo".to_owned(), Value::Null),
                    2 => ("POST", "/v1/functions/slow:enqueue".to_owned(), json!({"input": i})),
                    3 => ("PUT", "/v1/functions/slow/replicas".to_owned(), json!({"replicas": 3})),
                    _ => ("POST", format!("/v1/internal/executions/forged-{i}:complete"),
                        json!({"success": true, "output": "forged"})),
                };
                let method: reqwest::Method = method.parse().expect("a method");
                let request = match i % 3 {
                    0 => stranger.request(method, format!("{api}{path}")),
                    1 => wrong.request(method, format!("{api}{path}")),
                    _ => stranger
                        .request(method, format!("{api}{path}"))
                        .header("Authorization", "Basic c3RyYW5nZXI6cGFzcw=="),
                };
                let response = request.json(&body).send().await.expect("the control plane answers");
                let status = response.status();
                let reply: Value = response.json().await.unwrap_or(Value::Null);
                assert_eq!(status, StatusCode::UNAUTHORIZED, "{path}: {reply}");
                assert_eq!(reply["error"], "UNAUTHENTICATED", "{path}: {reply}");
            }
        })
        .await;
}

/// Opens `count` kept-alive connections, each answered once, then left idle.
async fn idle_connections(addr: &str, count: usize) -> Vec<TcpStream> {
    futures::stream::iter(0..count)
        .map(|_| async {
            let mut stream = TcpStream::connect(addr).await.expect("connects");
            stream
                .write_all(b"GET /actuator/health HTTP/1.1\r\nHost: idle\r\n\r\n")
                .await
                .expect("sends");
            let mut answer = [0; 1024];
            let n = stream.read(&mut answer).await.expect("answered");
            assert!(
                answer[..n].starts_with(b"HTTP/1.1 200"),
                "the health check answers"
            );
            stream
        })
        .buffer_unordered(128)
        .collect()
        .await
}

/// 200 sync invocations, one after another, each answered with its own input.
async fn well_behaved(http: &reqwest::Client, api: &str) {
    let invoke = format!("{api}/v1/functions/echo:invoke");
    for i in 0..200 {
        let (status, reply) = post(http, &invoke, &json!({"input": {"n": i}}), &[]).await;
        assert_eq!(status, StatusCode::OK, "{reply}");
        assert_eq!(reply["status"], "success", "{reply}");
        assert_eq!(reply["output"], json!({"n": i}), "{reply}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_clients_leave_the_service_correct_its_memory_bounded_and_its_shutdown_prompt() {
    hostile_clients_then_sigterm(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_authentication_on_hostile_clients_and_strangers_change_nothing() {
    hostile_clients_then_sigterm(true).await;
}

async fn hostile_clients_then_sigterm(authenticated: bool) {
    let token = authenticated.then_some(ADMIN_TOKEN);
    let http = client(token);
    let grace = format!("PT{}S", GRACE.as_secs());
    let tokens_dir = tempfile::tempdir().expect("a temporary directory");
    let tokens_file = tokens_dir.path().join("tokens");
    std::fs::write(&tokens_file, format!("admin {ADMIN_TOKEN} hostile-tests\n"))
        .expect("the tokens file is written");
    let mut args = vec![
        "--http-header-read-timeout",
        "PT1S",
        "--http-body-read-timeout",
        "PT1S",
        "--shutdown-grace",
        &grace,
    ];
    if authenticated {
        args.extend([
            "--auth-tokens-file",
            tokens_file.to_str().expect("a UTF-8 path"),
        ]);
    }
    let (mut plane, runtime) = tokio::join!(ControlPlane::start(&args, &http), Runtime::start());
    let api = plane.api.clone();
    let addr = address(&plane);
    for spec in [
        json!({"name": "echo", "image": "i", "executionMode": "LOCAL"}),
        json!({"name": "slow", "image": "i", "executionMode": "POOL",
               "endpointUrl": runtime.endpoint(), "timeoutMs": 120_000}),
    ] {
        let (status, body) = post(&http, &format!("{api}/v1/functions"), &spec, &[]).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }

    // Two processes (this one and the control plane) each hold every connection.
    let idle_count = IDLE_CONNECTIONS.min(open_file_limit().saturating_sub(512) / 2);
    let idle = idle_connections(&addr, idle_count).await;
    let storm = async {
        tokio::join!(
            futures::future::join_all((0..100).map(|_| slowloris(&addr))),
            futures::future::join_all((0..10).map(|_| trickled_body(&addr, token))),
            oversized_heads_and_keys(&http, &api),
            replay_storm(&http, &api, 2000),
            callback_storm(&http, &api, 2000),
            async {
                if authenticated {
                    stranger_storm(&api, 2000).await;
                }
            },
        )
    };
    tokio::join!(storm, well_behaved(&http, &api));
    let functions: Value = http
        .get(format!("{api}/v1/functions"))
        .send()
        .await
        .expect("answers")
        .json()
        .await
        .expect("JSON");
    let mut names: Vec<_> = functions
        .as_array()
        .expect("a list")
        .iter()
        .map(|function| function["name"].as_str().expect("a name").to_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["echo", "slow"], "the functions are as registered");

    let rss = resident_bytes(plane.pid());
    eprintln!(
        "control plane RSS after the storm, with {idle_count} idle connections open: {} MiB",
        rss / (1024 * 1024)
    );
    assert!(
        rss < RSS_BOUND_BYTES,
        "{} MiB resident, over the bound of {} MiB",
        rss / (1024 * 1024),
        RSS_BOUND_BYTES / (1024 * 1024)
    );

    // SIGTERM with the idle connections, fresh half-sent heads and the 60 s execution
    // still there: the exit comes after the grace, not after any of them.
    let mut half_sent = Vec::new();
    for _ in 0..20 {
        let mut stream = TcpStream::connect(&addr).await.expect("connects");
        stream
            .write_all(b"POST /v1/functions HTTP/1.1\r\nHo")
            .await
            .expect("sends");
        half_sent.push(stream);
    }
    eventually("the long execution to be running", || async {
        (http
            .get(format!("{}/stats", runtime.url))
            .send()
            .await
            .ok()?
            .json::<Value>()
            .await
            .ok()?["inFlight"]
            == 1)
            .then_some(())
    })
    .await;
    let signalled = Instant::now();
    plane.terminate();
    let status = plane.exit_status().await;
    let took = signalled.elapsed();
    assert_eq!(status.code(), Some(0), "{status}");
    // The grace, the drain limit (1 s) and room for a slow machine: a bound, not a
    // measurement.
    assert!(
        took < GRACE + Duration::from_secs(5),
        "exited {took:?} after SIGTERM with a grace of {GRACE:?}"
    );
    drop((idle, half_sent));
}
