//! Security end to end, over the real `control-plane` binary: with `--auth-tokens-file`
//! only the right token changes anything, a runtime completes only the dispatch it was
//! sent (the credential travels in `X-Callback-Url` for the nanofaas runtimes and in
//! `CALLBACK_URL` for replicas), the tokens are re-read on SIGHUP, admin changes are
//! audit events naming the token and never showing it, and without tokens the API is
//! refused off loopback. Waits are polls with a bound.

#[path = "durability/client.rs"]
#[allow(
    dead_code,
    reason = "the durability tests' client, shared; these tests use part of it"
)]
mod client;
#[path = "e2e/processes.rs"]
#[allow(dead_code, reason = "shared with e2e.rs; these tests use part of it")]
mod processes;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use client::{Reply, call, http};
use processes::{ControlPlane, Log, Runtime, control_plane_binary, eventually, runtime_script};
use reqwest::StatusCode;
use serde_json::{Value, json};

/// 401 (HTTP's name for it is "Unauthorized"; api.md's code is `UNAUTHENTICATED`).
const UNAUTHENTICATED: StatusCode = StatusCode::UNAUTHORIZED;

const ADMIN: &str = "admin-token-0123456789";
const INVOKER: &str = "invoker-token-0123456789";
const READER: &str = "reader-token-0123456789";

/// A tokens file in api.md's format: one `ROLE TOKEN [NAME]` a line, `#` comments.
const TOKENS: &str = "\
# who may do what
admin   admin-token-0123456789    alice
invoker invoker-token-0123456789  ci-pipeline
reader  reader-token-0123456789
";

/// A control plane with authentication on, its data dir and tokens file in a
/// directory of the test's own.
struct Secured {
    plane: ControlPlane,
    http: reqwest::Client,
    dir: tempfile::TempDir,
}

impl Secured {
    async fn start(extra: &[&str]) -> Self {
        Self::start_logging(extra, processes::START_AND_STOP_LINES).await
    }

    async fn start_logging(extra: &[&str], log_filter: &str) -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        std::fs::write(dir.path().join("tokens"), TOKENS).expect("the tokens file is written");
        let tokens = path_arg(&dir.path().join("tokens"));
        let data_dir = path_arg(&dir.path().join("data"));
        let mut args = vec!["--auth-tokens-file", &tokens, "--data-dir", &data_dir];
        args.extend_from_slice(extra);
        let http = http();
        let plane = ControlPlane::start_logging(&args, log_filter, &http).await;
        Self { plane, http, dir }
    }

    fn tokens_file(&self) -> PathBuf {
        self.dir.path().join("tokens")
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.plane.api)
    }

    /// `method path` with `token` (none when `None`) and, if given, a JSON body.
    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> Reply {
        let mut request = self.http.request(method, self.url(path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        call(request).await
    }

    async fn post(&self, path: &str, token: Option<&str>, body: &Value) -> Reply {
        self.send(reqwest::Method::POST, path, token, Some(body))
            .await
    }

    async fn get(&self, path: &str, token: Option<&str>) -> Reply {
        self.send(reqwest::Method::GET, path, token, None).await
    }

    async fn register(&self, spec: &Value) {
        let reply = self.post("/v1/functions", Some(ADMIN), spec).await;
        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
    }

    /// A sync invoke by the invoker: its answer.
    async fn invoke(&self, function: &str, input: &Value) -> Value {
        let path = format!("/v1/functions/{function}:invoke");
        let reply = self
            .post(&path, Some(INVOKER), &json!({ "input": input }))
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        reply.body
    }

    async fn execution(&self, id: &str) -> Value {
        let reply = self
            .get(&format!("/v1/executions/{id}"), Some(READER))
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        reply.body
    }
}

fn path_arg(path: &Path) -> String {
    path.to_str().expect("a UTF-8 temporary path").to_owned()
}

/// Reads `log` until a line contains every one of `needles`; the line.
async fn log_line_with(log: &mut Log, needles: &[&str]) -> String {
    let wanted = format!("a log line with {needles:?}");
    let read = async {
        while let Ok(Some(line)) = log.next_line().await {
            if needles.iter().all(|needle| line.contains(needle)) {
                return line;
            }
        }
        panic!("the log ended before {wanted}");
    };
    tokio::time::timeout(processes::DEADLINE, read)
        .await
        .unwrap_or_else(|_| panic!("no {wanted} within {:?}", processes::DEADLINE))
}

#[tokio::test]
async fn each_role_gets_what_it_may_and_nothing_more() {
    let secured = Secured::start(&[]).await;
    let runtime = Runtime::start().await;
    let spec = json!({"name": "echo", "image": "fn-runtime", "executionMode": "POOL",
        "endpointUrl": runtime.endpoint()});

    // Nobody but the admin registers: the body is never looked at first.
    for (token, status) in [
        (None, UNAUTHENTICATED),
        (Some("not-a-token-at-all-000"), UNAUTHENTICATED),
        (Some(READER), StatusCode::FORBIDDEN),
        (Some(INVOKER), StatusCode::FORBIDDEN),
    ] {
        let reply = secured.post("/v1/functions", token, &spec).await;
        assert_eq!(reply.status, status, "{token:?}: {}", reply.body);
        if status == UNAUTHENTICATED {
            assert_eq!(reply.body["error"], "UNAUTHENTICATED", "{}", reply.body);
            assert_eq!(reply.headers["www-authenticate"], "Bearer");
        } else {
            assert_eq!(reply.body["error"], "FORBIDDEN", "{}", reply.body);
        }
    }
    let listed = secured.get("/v1/functions", Some(READER)).await;
    assert_eq!(
        listed.body,
        json!([]),
        "nothing was registered by the refusals"
    );

    secured.register(&spec).await;
    let input = json!({"mode": "echo", "n": 1});
    assert_eq!(secured.invoke("echo", &input).await["output"], input);
    let by_reader = secured
        .post(
            "/v1/functions/echo:invoke",
            Some(READER),
            &json!({"input": 1}),
        )
        .await;
    assert_eq!(
        by_reader.status,
        StatusCode::FORBIDDEN,
        "{}",
        by_reader.body
    );
    let removal = secured
        .send(
            reqwest::Method::DELETE,
            "/v1/functions/echo",
            Some(INVOKER),
            None,
        )
        .await;
    assert_eq!(removal.status, StatusCode::FORBIDDEN, "{}", removal.body);
    assert_eq!(
        secured.get("/v1/functions/echo", Some(READER)).await.status,
        StatusCode::OK,
        "the invoker's removal changed nothing"
    );

    // Health stays open; metrics too without --metrics-require-auth.
    let management = &secured.plane.management;
    for path in ["/actuator/health", "/actuator/prometheus"] {
        let reply = call(secured.http.get(format!("{management}{path}"))).await;
        assert_eq!(reply.status, StatusCode::OK, "{path}: {}", reply.body);
    }
}

#[tokio::test]
async fn metrics_need_a_token_with_metrics_require_auth_and_health_does_not() {
    let secured = Secured::start(&["--metrics-require-auth"]).await;
    let management = &secured.plane.management;
    let prometheus = format!("{management}/actuator/prometheus");
    let anonymous = call(secured.http.get(&prometheus)).await;
    assert_eq!(anonymous.status, UNAUTHENTICATED);
    let read = call(secured.http.get(&prometheus).bearer_auth(READER)).await;
    assert_eq!(read.status, StatusCode::OK, "{}", read.body);
    let health = call(secured.http.get(format!("{management}/actuator/health"))).await;
    assert_eq!(health.status, StatusCode::OK, "{}", health.body);
}

#[tokio::test]
async fn a_pool_runtime_completes_its_dispatch_through_the_credential_in_x_callback_url() {
    let secured = Secured::start(&[]).await;
    let runtime = Runtime::start().await;
    secured
        .register(&json!({"name": "calls-back", "image": "fn-runtime",
            "executionMode": "POOL", "endpointUrl": runtime.endpoint()}))
        .await;

    let answer = secured
        .invoke(
            "calls-back",
            &json!({"mode": "callback", "output": "from the callback"}),
        )
        .await;
    assert_eq!(answer["status"], "success", "{answer}");
    assert_eq!(answer["output"], "from the callback", "{answer}");

    let id = answer["executionId"].as_str().expect("an execution id");
    // The runtime records the callback's answer after the execution it completed has
    // already answered the invoke.
    let stats = eventually("the runtime to record its callback's answer", || async {
        let stats = call(secured.http.get(format!("{}/stats", runtime.url)))
            .await
            .body;
        (!stats["callbacks"][id].is_null()).then_some(stats)
    })
    .await;
    assert_eq!(
        stats["callbacks"][id], 204,
        "the callback was taken: {stats}"
    );
    let sent = stats["calls"][id][0]["callbackUrl"]
        .as_str()
        .unwrap_or_else(|| panic!("no X-Callback-Url: {stats}"))
        .to_owned();
    let plain = secured.url("/v1/internal/executions");
    let credential = sent
        .strip_prefix(&format!("{plain}/"))
        .unwrap_or_else(|| panic!("{sent} is not under {plain}/"));
    assert!(
        credential.len() > 20 && !credential.contains('/'),
        "one path segment of credential: {sent}"
    );
}

#[tokio::test]
async fn nobody_else_completes_a_running_execution() {
    let secured = Secured::start(&[]).await;
    let runtime = Runtime::start().await;
    secured
        .register(&json!({"name": "held", "image": "fn-runtime",
            "executionMode": "POOL", "endpointUrl": runtime.endpoint()}))
        .await;
    let enqueued = secured
        .post(
            "/v1/functions/held:enqueue",
            Some(INVOKER),
            &json!({"input": {"mode": "callback", "output": "genuine", "after": "release"}}),
        )
        .await;
    assert_eq!(enqueued.status, StatusCode::ACCEPTED, "{}", enqueued.body);
    let id = enqueued.execution_id();
    eventually("the runtime to hold the execution", || async {
        (secured.execution(&id).await["status"] == "running").then_some(())
    })
    .await;

    let forged = json!({"success": true, "output": "forged"});
    let plain = format!("/v1/internal/executions/{id}:complete");
    let made_up = format!("/v1/internal/executions/bm90LWEtY3JlZGVudGlhbA.AAAA/{id}:complete");
    for (path, token, status) in [
        (&plain, None, UNAUTHENTICATED),
        (&plain, Some(INVOKER), StatusCode::FORBIDDEN),
        (&made_up, None, UNAUTHENTICATED),
    ] {
        let reply = secured.post(path, token, &forged).await;
        assert_eq!(reply.status, status, "{path} {token:?}: {}", reply.body);
    }
    assert_eq!(secured.execution(&id).await["status"], "running");

    let released = call(secured.http.post(format!("{}/release/{id}", runtime.url))).await;
    assert_eq!(released.status, StatusCode::NO_CONTENT);
    let ended = eventually("the execution to end", || async {
        let record = secured.execution(&id).await;
        (record["status"] != "running").then_some(record)
    })
    .await;
    assert_eq!(ended["status"], "success", "{ended}");
    assert_eq!(ended["output"], "genuine", "{ended}");
}

#[tokio::test]
async fn a_replica_completes_through_its_callback_url_and_the_key_is_private() {
    let secured = Secured::start(&[]).await;
    secured
        .register(&json!({"name": "replica", "image": "fn-runtime",
            "executionMode": "DEPLOYMENT", "command": ["python3", runtime_script()]}))
        .await;
    let answer = secured
        .invoke(
            "replica",
            &json!({"mode": "callback", "via": "env", "output": "from CALLBACK_URL"}),
        )
        .await;
    assert_eq!(answer["status"], "success", "{answer}");
    assert_eq!(answer["output"], "from CALLBACK_URL", "{answer}");

    let key = secured.dir.path().join("data").join("callback.key");
    let mode = std::fs::metadata(&key)
        .unwrap_or_else(|e| panic!("{}: {e}", key.display()))
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "{} is {mode:o}", key.display());
}

#[tokio::test]
async fn a_one_shot_command_is_given_a_callback_url_for_its_own_attempt() {
    let secured = Secured::start(&[]).await;
    secured
        .register(&json!({"name": "where-to", "image": "one-shot",
            "executionMode": "DEPLOYMENT", "runtimeMode": "STDIO",
            "command": ["sh", "-c", "cat >/dev/null; printf '\"%s\"' \"$CALLBACK_URL\""]}))
        .await;
    let answer = secured.invoke("where-to", &json!({})).await;
    assert_eq!(answer["status"], "success", "{answer}");
    let given = answer["output"]
        .as_str()
        .unwrap_or_else(|| panic!("{answer}"));
    let plain = secured.url("/v1/internal/executions/");
    let credential = given
        .strip_prefix(&plain)
        .unwrap_or_else(|| panic!("{given} is not under {plain}"));
    assert!(
        credential.len() > 20 && !credential.contains('/'),
        "one path segment of credential: {given}"
    );

    // Its attempt is over: the credential completes nothing any more.
    let id = answer["executionId"].as_str().expect("an execution id");
    let late = call(
        secured
            .http
            .post(format!("{given}/{id}:complete"))
            .json(&json!({"success": true, "output": "rewritten"})),
    )
    .await;
    assert!(late.status.is_success(), "{}: {}", late.status, late.body);
    assert_eq!(secured.execution(id).await["output"], answer["output"]);
}

#[tokio::test]
async fn sighup_rereads_the_tokens_and_a_bad_file_keeps_them() {
    let mut secured = Secured::start_logging(&[], "warn,control_plane=info,audit=info").await;
    let mut log = secured.plane.take_log();
    const NEW_READER: &str = "a-reader-added-on-reload";
    let status_with = |token: &'static str| {
        let secured = &secured;
        async move { secured.get("/v1/functions", Some(token)).await.status }
    };
    assert_eq!(status_with(NEW_READER).await, UNAUTHENTICATED);

    let replaced = TOKENS.replace(READER, NEW_READER);
    std::fs::write(secured.tokens_file(), replaced).expect("the tokens file is rewritten");
    secured.plane.hangup();
    log_line_with(&mut log, &["tokens reloaded"]).await;
    assert_eq!(status_with(NEW_READER).await, StatusCode::OK);
    assert_eq!(status_with(READER).await, UNAUTHENTICATED);

    std::fs::write(secured.tokens_file(), "admin tiny-tok\n").expect("a bad tokens file");
    secured.plane.hangup();
    let refusal = log_line_with(&mut log, &["was not reloaded"]).await;
    assert!(
        !refusal.contains("tiny-tok"),
        "a token in the log: {refusal}"
    );
    assert_eq!(
        status_with(NEW_READER).await,
        StatusCode::OK,
        "the old tokens stay"
    );
}

#[tokio::test]
async fn admin_changes_are_audit_events_with_the_tokens_name_never_the_token() {
    let mut secured = Secured::start_logging(&[], "warn,control_plane=info,audit=info").await;
    let mut log = secured.plane.take_log();
    let runtime = Runtime::start().await;
    secured
        .register(&json!({"name": "audited", "image": "fn-runtime",
            "executionMode": "POOL", "endpointUrl": runtime.endpoint()}))
        .await;
    let event = log_line_with(&mut log, &["change requested", "/v1/functions"]).await;
    assert!(event.contains("alice"), "the token's name: {event}");
    assert!(event.contains("201"), "the answer: {event}");
    assert!(!event.contains(ADMIN), "the token itself: {event}");

    let removed = secured
        .send(
            reqwest::Method::DELETE,
            "/v1/functions/audited",
            Some(ADMIN),
            None,
        )
        .await;
    assert_eq!(removed.status, StatusCode::NO_CONTENT, "{}", removed.body);
    let event = log_line_with(&mut log, &["change requested", "/v1/functions/audited"]).await;
    assert!(
        event.contains("DELETE") && event.contains("alice"),
        "{event}"
    );
}

#[tokio::test]
async fn without_tokens_the_api_is_refused_off_loopback() {
    let data_dir = tempfile::tempdir().expect("a temporary directory");
    // Not through the harness, which binds the API on loopback.
    let run = tokio::process::Command::new(control_plane_binary())
        .args([
            "--api-addr",
            "0.0.0.0:0",
            "--management-addr",
            "127.0.0.1:0",
        ])
        .arg("--data-dir")
        .arg(data_dir.path())
        .env("RUST_LOG", "info")
        .kill_on_drop(true)
        .output();
    let ran = tokio::time::timeout(processes::DEADLINE, run)
        .await
        .expect("it stops by itself")
        .expect("the binary runs");
    let status = ran.status;
    let output = format!(
        "{}{}",
        String::from_utf8_lossy(&ran.stdout),
        String::from_utf8_lossy(&ran.stderr)
    );
    assert!(!status.success(), "it served: {output}");
    assert!(
        output.contains("without authentication") && output.contains("--allow-unauthenticated"),
        "{output}"
    );
    assert!(
        !output.contains("control plane listening"),
        "it listened before refusing: {output}"
    );
}
