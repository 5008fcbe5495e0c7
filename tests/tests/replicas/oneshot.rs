//! One-shot functions over HTTP: a shell script (`STDIO`) and a Python script (`FILE`)
//! registered with one request each, run once per invocation by the `process`
//! provider; a timeout kills the command and what it started, a non-zero exit is a
//! `FUNCTION_ERROR` carrying stderr's tail, and outputs are taken whole up to the body
//! limit and refused past it.

use std::time::Duration;

use serde_json::{Value, json};

use super::{Platform, until_gone};
use crate::client::post;
use crate::processes::eventually;

/// A shell handler in the nanofaas style: the invocation JSON on stdin, JSON on
/// stdout. It counts the bytes of its input and answers with the function's name.
const SHELL_HANDLER: &str =
    r#"input=$(cat); printf '{"bytes": %d, "function": "%s"}' "${#input}" "$FUNCTION_NAME""#;

/// A Python `FILE` handler: reads `INPUT_FILE`, writes `OUTPUT_FILE`.
const PYTHON_FILE_HANDLER: &str = r#"
import json, os
with open(os.environ["INPUT_FILE"]) as f:
    request = json.load(f)
words = request["input"]["text"].split()
with open(os.environ["OUTPUT_FILE"], "w") as f:
    json.dump({"words": len(words), "longest": max(words, key=len)}, f)
"#;

fn one_shot(name: &str, mode: &str, command: &[&str], overrides: &Value) -> Value {
    let mut spec = json!({
        "name": name,
        "image": "one-shot",
        "executionMode": "DEPLOYMENT",
        "runtimeMode": mode,
        "command": command,
    });
    for (key, value) in overrides.as_object().expect("an object") {
        spec[key] = value.clone();
    }
    spec
}

impl Platform {
    /// `:invoke`, whatever the execution's status (the record).
    async fn invoke_record(&self, name: &str, input: &Value) -> Value {
        let url = self.url(&format!("/v1/functions/{name}:invoke"));
        let reply = post(&self.http, &url, &json!({ "input": input }), None)
            .await
            .expect("the control plane answers");
        assert!(reply.status.is_success(), "{} {}", reply.status, reply.body);
        reply.body
    }
}

#[tokio::test]
async fn a_shell_script_and_a_python_script_are_functions_with_one_registration_each() {
    let platform = Platform::start(&[]).await;
    platform
        .registered(&one_shot(
            "count",
            "STDIO",
            &["sh", "-c", SHELL_HANDLER],
            &json!({}),
        ))
        .await;
    platform
        .registered(&one_shot(
            "words",
            "FILE",
            &["python3", "-c", PYTHON_FILE_HANDLER],
            &json!({}),
        ))
        .await;

    let record = platform.invoke_record("count", &json!("hello")).await;
    assert_eq!(record["status"], "success", "{record}");
    assert_eq!(record["output"]["function"], "count");
    let bytes = record["output"]["bytes"].as_u64().expect("a count");
    assert!(
        bytes > 20,
        "the whole invocation JSON came on stdin: {record}"
    );

    let text = "one-shot functions need no server at all";
    let record = platform
        .invoke_record("words", &json!({"text": text}))
        .await;
    assert_eq!(record["status"], "success", "{record}");
    assert_eq!(
        record["output"],
        json!({"words": 7, "longest": "functions"})
    );

    let view = platform.function("count").await;
    assert!(view.get("degradationReason").is_none(), "{view}");
}

#[tokio::test]
async fn a_timeout_kills_the_command_and_what_it_started() {
    let platform = Platform::start(&[]).await;
    let dir = tempfile::tempdir().expect("a directory");
    let pid_file = dir.path().join("sleeper.pid");
    // The command starts a sleeper of its own and waits: both must die at timeoutMs.
    let script = r#"sleep 60 & echo $! > "$0"; wait"#;
    let pid_arg = pid_file.to_str().expect("a UTF-8 path");
    let spec = one_shot(
        "slow",
        "STDIO",
        &["sh", "-c", script, pid_arg],
        &json!({"timeoutMs": 500, "maxRetries": 1}),
    );
    platform.registered(&spec).await;

    // Enqueued, so that only the function's timeout is in play.
    let id = platform.enqueue("slow", &json!({})).await;
    let records = platform
        .until_all_ended(&[id], Duration::from_secs(20))
        .await;
    let record = &records[0];
    assert_eq!(record["status"], "timeout", "{record}");
    assert_eq!(record["error"]["code"], "DISPATCH_TIMEOUT", "{record}");
    let sleeper: u32 = std::fs::read_to_string(&pid_file)
        .expect("the command wrote its sleeper's pid")
        .trim()
        .parse()
        .expect("a pid");
    until_gone(&[sleeper], "the timeout").await;
}

#[tokio::test]
async fn a_non_zero_exit_is_a_function_error_with_the_tail_of_stderr() {
    let platform = Platform::start(&[]).await;
    let script = "cat >/dev/null; echo 'no database configured' >&2; exit 3";
    let spec = one_shot(
        "broken",
        "STDIO",
        &["sh", "-c", script],
        &json!({"maxRetries": 1}),
    );
    platform.registered(&spec).await;

    let record = platform
        .invoke_record("broken", &json!({"any": "input"}))
        .await;
    assert_eq!(record["status"], "error", "{record}");
    assert_eq!(record["error"]["code"], "FUNCTION_ERROR", "{record}");
    let message = record["error"]["message"].as_str().expect("a message");
    assert!(message.contains('3'), "the exit status: {message}");
    assert!(
        message.contains("no database configured"),
        "stderr's tail: {message}"
    );
}

#[tokio::test]
async fn a_huge_output_is_taken_whole_up_to_the_body_limit_and_refused_past_it() {
    // A 1 MiB limit, so "huge" stays quick: 900 KB passes, 2 MB does not.
    let platform = Platform::start(&["--max-body-bytes", "1048576"]).await;
    let script =
        r#"import sys, json; n = json.load(sys.stdin)["input"]; print(json.dumps("x" * n))"#;
    let spec = one_shot(
        "big",
        "STDIO",
        &["python3", "-c", script],
        &json!({"maxRetries": 1}),
    );
    platform.registered(&spec).await;

    let record = platform.invoke_record("big", &json!(900_000)).await;
    assert_eq!(record["status"], "success", "{}", record["error"]);
    assert_eq!(record["output"].as_str().map(str::len), Some(900_000));

    let record = platform.invoke_record("big", &json!(2_000_000)).await;
    assert_eq!(record["status"], "error", "{}", record["error"]);
    let message = record["error"]["message"].as_str().expect("a message");
    assert!(message.contains("larger than"), "{message}");

    // The server is unharmed: the next small invocation answers.
    let record = platform.invoke_record("big", &json!(3)).await;
    assert_eq!(record["output"], "xxx");
}

#[tokio::test]
async fn concurrency_bounds_how_many_commands_run_at_once() {
    let platform = Platform::start(&[]).await;
    let dir = tempfile::tempdir().expect("a directory");
    // Each run records its pid in the directory while it lasts; with concurrency 2 no
    // more than two files are ever there.
    let script =
        r#"cat >/dev/null; touch "$0/$$"; n=$(ls "$0" | wc -l); sleep 0.2; rm "$0/$$"; echo "$n""#;
    let dir_arg = dir.path().to_str().expect("a UTF-8 path");
    let spec = one_shot(
        "bounded",
        "STDIO",
        &["sh", "-c", script, dir_arg],
        &json!({"concurrency": 2, "queueSize": 20}),
    );
    platform.registered(&spec).await;

    let mut ids = Vec::new();
    for _ in 0..8 {
        ids.push(platform.enqueue("bounded", &json!({})).await);
    }
    let records = platform
        .until_all_ended(&ids, Duration::from_secs(30))
        .await;
    for record in &records {
        assert_eq!(record["status"], "success", "{record}");
        let seen = record["output"].as_u64().expect("a count");
        assert!(seen <= 2, "{seen} commands ran at once: {record}");
    }
    let pids: Vec<u32> = std::fs::read_dir(dir.path())
        .expect("readable")
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    assert!(
        pids.is_empty(),
        "every run cleaned up after itself: {pids:?}"
    );
}

#[tokio::test]
async fn a_command_running_when_the_control_plane_is_killed_is_ended_by_the_next_start() {
    let data_dir = tempfile::tempdir().expect("a data directory");
    let data_arg = data_dir.path().to_str().expect("a UTF-8 path").to_owned();
    let args = ["--data-dir", data_arg.as_str()];
    let pid_file = data_dir.path().join("command.pid");
    let pid_arg = pid_file.to_str().expect("a UTF-8 path");
    // One-shot commands are spawned without the parent-death signal (a fork per
    // invocation would cost the control plane's page tables): the ledger ends them.
    let spec = one_shot(
        "long",
        "STDIO",
        &["sh", "-c", r#"echo $$ > "$0"; exec sleep 60"#, pid_arg],
        &json!({"timeoutMs": 120_000, "maxRetries": 1}),
    );
    let platform = Platform::start(&args).await;
    platform.registered(&spec).await;
    platform.enqueue("long", &json!({})).await;
    let pid: u32 = eventually("the command to write its pid", || async {
        std::fs::read_to_string(&pid_file).ok()?.trim().parse().ok()
    })
    .await;
    let Platform { plane, .. } = platform;
    plane.kill().await;

    let platform = Platform::start(&args).await;
    until_gone(&[pid], "the next start").await;
    platform.stop(&[]).await;
}
