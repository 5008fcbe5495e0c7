use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use core_types::{ExecutionId, FunctionSpec, TraceId};
use serde_json::{Value, json};

use super::*;

const LIMITS: OneShotLimits = OneShotLimits {
    max_output_bytes: 6 * 1024 * 1024,
};

/// Every test's invocation ends within this, or the test fails instead of hanging.
const HANG: Duration = Duration::from_secs(60);

fn request(mode: &str, command: &[&str], input: Value) -> DispatchRequest {
    request_with_env(mode, command, input, json!({}))
}

fn request_with_env(mode: &str, command: &[&str], input: Value, env: Value) -> DispatchRequest {
    let spec = json!({
        "name": "f", "image": "img", "executionMode": "DEPLOYMENT", "runtimeMode": mode,
        "command": command, "env": env, "timeoutMs": 5000,
    });
    DispatchRequest {
        execution_id: ExecutionId::new("exec-1"),
        function: Arc::new(FunctionSpec::from_json(&spec).unwrap()),
        attempt: 1,
        input: Payload::from_value(&input),
        metadata: Arc::new(BTreeMap::new()),
        trace_id: TraceId::new("trace-1"),
        idempotency_key: None,
        callback_url: None,
    }
}

/// Runs `request` with a scratch directory of its own, and checks that the invocation
/// left nothing in it.
async fn run(request: &DispatchRequest, limits: OneShotLimits) -> DispatchOutcome {
    let scratch = tempfile::tempdir().unwrap();
    let outcome = run_in(request, limits, scratch.path()).await;
    assert_empty(scratch.path());
    outcome
}

async fn run_in(
    request: &DispatchRequest,
    limits: OneShotLimits,
    scratch: &Path,
) -> DispatchOutcome {
    // A script file just written can be "busy" for a moment when another test forks
    // while it was open (the fork holds the descriptor until it execs): try again.
    let ledger_dir = tempfile::tempdir().unwrap();
    let ledger = Arc::new(GroupLedger::open(ledger_dir.path()).unwrap().0);
    for _ in 0..50 {
        let outcome = tokio::time::timeout(HANG, run_once(request, limits, scratch, &ledger))
            .await
            .expect("the invocation hung");
        match &outcome {
            Err(e) if e.message.contains("Text file busy") => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            _ => return outcome,
        }
    }
    panic!("the script stayed busy");
}

fn output(outcome: DispatchOutcome) -> Value {
    outcome.expect("the invocation succeeded").output.to_value()
}

fn failure_message(outcome: DispatchOutcome) -> String {
    let error = outcome.expect_err("the invocation failed");
    assert!(error.has_code(ErrorCode::FunctionError), "{error:?}");
    error.message
}

fn assert_empty(dir: &Path) {
    let left: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(left.is_empty(), "the invocation left {left:?} behind");
}

fn script(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path.to_str().unwrap().to_owned()
}

fn pids(file: &Path) -> Vec<u32> {
    let text = std::fs::read_to_string(file).unwrap_or_default();
    text.lines()
        .map(|line| line.trim().parse().unwrap())
        .collect()
}

/// Waits (bounded) until `pid` has exited: gone, or a zombie nobody reaped yet.
async fn assert_gone(pid: u32) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"));
        let zombie = stat.as_ref().is_ok_and(|stat| {
            stat.rsplit(')')
                .next()
                .is_some_and(|rest| rest.trim_start().starts_with('Z'))
        });
        if stat.is_err() || zombie {
            return;
        }
        assert!(Instant::now() < deadline, "process {pid} is still running");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_shell_one_liner_gets_the_invocation_on_stdin_and_answers_with_it() {
    let mut request = request("STDIO", &["sh", "-c", "cat"], json!({"hello": "world"}));
    request.metadata = Arc::new(BTreeMap::from([("k".to_owned(), "v".to_owned())]));
    let answer = output(run(&request, LIMITS).await);
    assert_eq!(
        answer,
        json!({"input": {"hello": "world"}, "metadata": {"k": "v"}})
    );
}

#[tokio::test]
async fn a_script_file_with_a_shebang_transforms_its_input() {
    let dir = tempfile::tempdir().unwrap();
    let path = script(
        dir.path(),
        "wrap.sh",
        "#!/bin/sh\ninvocation=$(cat)\nprintf '{\"got\": %s, \"args\": \"%s\"}\\n' \"$invocation\" \"$1\"\n",
    );
    let request = request("STDIO", &[&path, "one"], json!(41));
    let answer = output(run(&request, LIMITS).await);
    assert_eq!(
        answer,
        json!({"got": {"input": 41, "metadata": {}}, "args": "one"})
    );
}

#[tokio::test]
async fn a_python_script_reads_json_and_writes_json() {
    let program = "import json, sys\n\
                   invocation = json.load(sys.stdin)\n\
                   json.dump({'sum': sum(invocation['input'])}, sys.stdout)\n";
    let request = request("STDIO", &["python3", "-c", program], json!([1, 2, 3]));
    assert_eq!(output(run(&request, LIMITS).await), json!({"sum": 6}));
}

#[tokio::test]
async fn the_command_gets_the_replica_environment_and_the_invocation_s_ids() {
    let program = "import json, os\n\
                   json.dump(dict(os.environ), open(1, 'w'))\n";
    let mut request = request_with_env(
        "STDIO",
        &["python3", "-c", program],
        json!(null),
        json!({"GREETING": "hi"}),
    );
    request.callback_url = Some("http://cp:8080/v1/internal/executions".into());
    let env = output(run(&request, LIMITS).await);
    for (key, value) in [
        ("EXECUTION_ID", "exec-1"),
        ("TRACE_ID", "trace-1"),
        ("FUNCTION_NAME", "f"),
        ("EXECUTION_MODE", "STDIO"),
        ("TIMEOUT_MS", "5000"),
        ("WARM", "true"),
        ("CALLBACK_URL", "http://cp:8080/v1/internal/executions"),
        ("GREETING", "hi"),
    ] {
        assert_eq!(env[key], value, "{key} in {env}");
    }
    assert!(env.get("INPUT_FILE").is_none() && env.get("OUTPUT_FILE").is_none());
}

/// nanofaas' bash example `functions/bash/word-stats/handler.sh` (github.com/Nanofaas/
/// nanofaas), copied unchanged: it reads the invocation JSON from stdin with `cat` and
/// prints JSON made with `jq`.
const UPSTREAM_WORD_STATS: &str = r##"#!/usr/bin/env bash
#
# nanoFaaS bash example: word-stats
#
# Reads InvocationRequest JSON from stdin:
#   {"input": {"text":"...", "topN":3}, "metadata": {...}}
# Writes handler output JSON to stdout.
#

set -euo pipefail

req="$(cat)"

# Extract input; allow string input.
input_type="$(jq -r '.input | type' <<<"$req" 2>/dev/null || echo "null")"

if [[ "$input_type" == "string" ]]; then
  text="$(jq -r '.input' <<<"$req")"
  top_n=10
elif [[ "$input_type" == "object" ]]; then
  text="$(jq -r '.input.text // empty' <<<"$req")"
  top_n="$(jq -r '.input.topN // 10' <<<"$req")"
else
  jq -n --arg msg "Field 'text' is required and must be non-empty" '{error:$msg}'
  exit 0
fi

if [[ -z "${text}" ]]; then
  jq -n --arg msg "Field 'text' is required and must be non-empty" '{error:$msg}'
  exit 0
fi

tmp_words="$(mktemp)"
trap 'rm -f "$tmp_words"' EXIT

# Normalize: lowercase, split on non-alnum.
printf "%s" "$text" \
  | tr '[:upper:]' '[:lower:]' \
  | tr -cs '[:alnum:]' '\n' \
  | awk 'NF' >"$tmp_words"

word_count="$(wc -l <"$tmp_words" | tr -d ' ')"
if [[ "${word_count}" == "0" ]]; then
  jq -n --arg msg "No words found" '{error:$msg}'
  exit 0
fi

unique_words="$(sort -u "$tmp_words" | wc -l | tr -d ' ')"

avg_len="$(awk '{sum+=length($0)} END { if (NR>0) printf "%.2f", sum/NR; else printf "0.0" }' "$tmp_words")"

top_lines="$(awk '{c[$0]++} END { for (w in c) print c[w] "\t" w }' "$tmp_words" | sort -k1,1nr -k2,2 | head -n "$top_n")"
top_words_json="$(printf "%s\n" "$top_lines" | jq -R -s '
  split("\n")
  | map(select(length>0))
  | map(split("\t") | {word: .[1], count: (.[0] | tonumber)})
')"

jq -n \
  --argjson wordCount "$word_count" \
  --argjson uniqueWords "$unique_words" \
  --argjson topWords "$top_words_json" \
  --argjson averageWordLength "$avg_len" \
  '{wordCount:$wordCount, uniqueWords:$uniqueWords, topWords:$topWords, averageWordLength:$averageWordLength}'
"##;

#[tokio::test]
async fn the_upstream_bash_word_stats_example_runs_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let path = script(dir.path(), "handler.sh", UPSTREAM_WORD_STATS);
    let input = json!({"text": "The cat and the hat", "topN": 2});
    let answer = output(run(&request("STDIO", &[&path], input), LIMITS).await);
    assert_eq!(answer["wordCount"], 5);
    assert_eq!(answer["uniqueWords"], 4);
    assert_eq!(
        answer["topWords"],
        json!([{"word": "the", "count": 2}, {"word": "and", "count": 1}])
    );
    assert_eq!(answer["averageWordLength"].as_f64(), Some(3.0));
}

#[tokio::test]
async fn a_file_function_in_sh_reads_input_file_and_writes_output_file() {
    let command = ["sh", "-c", r#"tr a-z A-Z < "$INPUT_FILE" > "$OUTPUT_FILE""#];
    let answer = output(run(&request("FILE", &command, json!("hello")), LIMITS).await);
    assert_eq!(answer, json!({"INPUT": "HELLO", "METADATA": {}}));
}

#[tokio::test]
async fn a_file_function_in_python_works_in_a_private_directory_that_is_removed_after() {
    let program = "import json, os, stat\n\
                   invocation = json.load(open(os.environ['INPUT_FILE']))\n\
                   folder = os.path.dirname(os.environ['INPUT_FILE'])\n\
                   json.dump({'doubled': [2 * x for x in invocation['input']],\n\
                              'folder': folder,\n\
                              'mode': stat.S_IMODE(os.stat(folder).st_mode),\n\
                              'same': os.path.dirname(os.environ['OUTPUT_FILE']) == folder},\n\
                             open(os.environ['OUTPUT_FILE'], 'w'))\n\
                   print('stdout is not the output of a FILE function')\n";
    let request = request("FILE", &["python3", "-c", program], json!([1, 2]));
    let scratch = tempfile::tempdir().unwrap();
    let answer = output(run_in(&request, LIMITS, scratch.path()).await);
    assert_eq!(answer["doubled"], json!([2, 4]));
    assert_eq!(answer["mode"], 0o700);
    assert_eq!(answer["same"], true);
    let folder = PathBuf::from(answer["folder"].as_str().unwrap());
    assert_eq!(folder.parent(), Some(scratch.path()));
    assert!(!folder.exists());
    assert_empty(scratch.path());
}

#[tokio::test]
async fn a_file_function_that_writes_no_output_file_fails() {
    let command = ["sh", "-c", "echo 'forgot to write it' >&2"];
    let message = failure_message(run(&request("FILE", &command, json!(1)), LIMITS).await);
    assert!(message.contains("wrote no OUTPUT_FILE"), "{message}");
    assert!(message.contains("forgot to write it"), "{message}");
}

#[tokio::test]
async fn stdout_that_is_not_json_becomes_a_json_string() {
    let text = |command: &str| {
        let request = request("STDIO", &["sh", "-c", command], json!(null));
        async move { output(run(&request, LIMITS).await) }
    };
    assert_eq!(text("echo hello world").await, json!("hello world"));
    assert_eq!(
        text("printf '  two\\nlines\\n\\n'").await,
        json!("  two\nlines")
    );
    assert_eq!(
        text(r#"printf '{"a":1}{"b":2}'"#).await,
        json!(r#"{"a":1}{"b":2}"#)
    );
    assert_eq!(text(r"printf 'caf\303'").await, json!("caf\u{FFFD}"));
    assert_eq!(text("echo '  [1, 2]  '").await, json!([1, 2]));
}

#[tokio::test]
async fn empty_stdout_is_a_function_error_as_in_the_watchdog() {
    let request = request("STDIO", &["sh", "-c", "cat > /dev/null; echo"], json!(1));
    let message = failure_message(run(&request, LIMITS).await);
    assert!(message.contains("wrote nothing to stdout"), "{message}");
}

#[tokio::test]
async fn a_non_zero_exit_is_a_function_error_with_the_status_and_the_end_of_stderr() {
    let command = [
        "sh",
        "-c",
        "echo '{}'; echo starting >&2; echo 'it broke' >&2; exit 42",
    ];
    let message = failure_message(run(&request("STDIO", &command, json!(1)), LIMITS).await);
    assert_eq!(
        message,
        "sh exited with status 42; stderr: starting\nit broke"
    );
}

#[tokio::test]
async fn a_command_killed_by_a_signal_reports_the_signal() {
    let command = ["sh", "-c", "kill -9 $$"];
    let message = failure_message(run(&request("STDIO", &command, json!(1)), LIMITS).await);
    assert_eq!(message, "sh was killed by signal 9 (SIGKILL)");
}

#[tokio::test]
async fn a_huge_stderr_keeps_only_its_tail_and_does_not_hang() {
    let command = [
        "sh",
        "-c",
        r#"head -c 10000000 /dev/zero | tr '\0' e >&2; echo ' the end' >&2; exit 3"#,
    ];
    let message = failure_message(run(&request("STDIO", &command, json!(1)), LIMITS).await);
    assert!(
        message.starts_with("sh exited with status 3; stderr: …eee"),
        "{message:.80}"
    );
    assert!(message.ends_with("eee the end"), "{message:.80}");
    assert!(
        message.len() < STDERR_TAIL_BYTES + 100,
        "{} bytes",
        message.len()
    );
}

#[tokio::test]
async fn the_tail_of_stderr_does_not_start_inside_a_character() {
    let text = "é".repeat(STDERR_TAIL_BYTES);
    let tail = read_tail(Some(text.as_bytes())).await;
    assert!(tail.cut);
    let shown = tail.text();
    assert!(
        shown.starts_with("…é") && !shown.contains('\u{FFFD}'),
        "{shown:.20}"
    );
}

#[tokio::test]
async fn a_huge_input_to_a_command_that_prints_a_lot_before_reading_does_not_deadlock() {
    // 1 MB out (far more than a pipe holds) before reading 5 MB in.
    let program = "import sys\n\
                   sys.stdout.write('[' + '0,' * 500000)\n\
                   sys.stdout.flush()\n\
                   data = sys.stdin.buffer.read()\n\
                   sys.stdout.write(str(len(data)) + ']')\n";
    let request = request(
        "STDIO",
        &["python3", "-c", program],
        json!("x".repeat(5_000_000)),
    );
    let sent = invocation_json(&request).unwrap().len();
    let answer = output(run(&request, LIMITS).await);
    let items = answer.as_array().unwrap();
    assert_eq!(items.len(), 500_001);
    assert_eq!(items.last(), Some(&json!(sent)));
}

#[tokio::test]
async fn a_command_that_does_not_read_its_input_still_answers() {
    let request = request(
        "STDIO",
        &["sh", "-c", "echo 7"],
        json!("x".repeat(1_000_000)),
    );
    assert_eq!(output(run(&request, LIMITS).await), json!(7));
}

#[tokio::test]
async fn a_background_child_holding_stdout_does_not_hold_up_the_answer() {
    // The command's exit ends the invocation: its `sleep` is killed, not waited for.
    let command = ["sh", "-c", r#"sleep 300 & echo '{"done": true}'"#];
    let started = Instant::now();
    let answer = output(run(&request("STDIO", &command, json!(1)), LIMITS).await);
    assert_eq!(answer, json!({"done": true}));
    assert!(started.elapsed() < Duration::from_secs(30));
}

#[tokio::test]
async fn output_over_the_limit_fails_at_once_and_the_command_is_gone() {
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("pids");
    let command = [
        "sh",
        "-c",
        r#"echo $$ > "$PIDS"; sleep 300 & echo $! >> "$PIDS"; exec yes"#,
    ];
    let env = json!({"PIDS": pid_file.to_str().unwrap()});
    let request = request_with_env("STDIO", &command, json!(1), env);
    let limits = OneShotLimits {
        max_output_bytes: 64 * 1024,
    };
    let message = failure_message(run(&request, limits).await);
    assert_eq!(message, "sh wrote output larger than 65536 bytes");
    let pids = pids(&pid_file);
    assert_eq!(pids.len(), 2, "{pids:?}");
    for pid in pids {
        assert_gone(pid).await;
    }
}

#[tokio::test]
async fn an_output_file_over_the_limit_fails() {
    let command = ["sh", "-c", r#"head -c 2000 /dev/zero > "$OUTPUT_FILE""#];
    let limits = OneShotLimits {
        max_output_bytes: 1000,
    };
    let message = failure_message(run(&request("FILE", &command, json!(1)), limits).await);
    assert_eq!(message, "sh wrote output larger than 1000 bytes");
}

#[tokio::test]
async fn dropping_the_invocation_kills_the_command_and_its_children_and_removes_its_directory() {
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("pids");
    let command = [
        "sh",
        "-c",
        r#"sleep 300 & echo $! >> "$PIDS"; sleep 300 & echo $! >> "$PIDS"; echo $$ >> "$PIDS"; wait"#,
    ];
    let env = json!({"PIDS": pid_file.to_str().unwrap()});
    let request = request_with_env("FILE", &command, json!(1), env);
    let scratch = tempfile::tempdir().unwrap();
    let ledger_dir = tempfile::tempdir().unwrap();
    let ledger = Arc::new(GroupLedger::open(ledger_dir.path()).unwrap().0);
    let dropped = tokio::time::timeout(
        Duration::from_secs(2),
        run_once(&request, LIMITS, scratch.path(), &ledger),
    )
    .await;
    assert!(dropped.is_err(), "the command ended by itself: {dropped:?}");
    let pids = pids(&pid_file);
    assert_eq!(
        pids.len(),
        3,
        "the script had not started its children: {pids:?}"
    );
    for pid in pids {
        assert_gone(pid).await;
    }
    assert_empty(scratch.path());
    let recorded: Vec<_> = std::fs::read_dir(ledger_dir.path())
        .unwrap()
        .map(|entry| entry.unwrap().file_name())
        .filter(|name| name != ".lock")
        .collect();
    assert!(
        recorded.is_empty(),
        "the killed group is forgotten: {recorded:?}"
    );
}

#[tokio::test]
async fn a_missing_program_is_a_function_error_naming_it() {
    let request = request("STDIO", &["/nonexistent/no-such-program", "arg"], json!(1));
    let message = failure_message(run(&request, LIMITS).await);
    assert!(
        message.starts_with("could not start /nonexistent/no-such-program: "),
        "{message}"
    );
    assert!(message.contains("No such file"), "{message}");
}

#[tokio::test]
async fn a_program_that_is_not_executable_is_a_function_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("plain.sh");
    std::fs::write(&path, "#!/bin/sh\necho 1\n").unwrap();
    let path = path.to_str().unwrap();
    let message = failure_message(run(&request("FILE", &[path], json!(1)), LIMITS).await);
    assert!(
        message.starts_with(&format!("could not start {path}: ")),
        "{message}"
    );
    assert!(message.contains("Permission denied"), "{message}");
}

#[tokio::test]
async fn an_http_function_is_not_one_shot() {
    let request = request("HTTP", &["sh", "-c", "echo 1"], json!(1));
    let error = run(&request, LIMITS).await.unwrap_err();
    assert!(error.has_code(ErrorCode::DispatchError), "{error:?}");
    assert!(
        error.message.contains("not a one-shot function"),
        "{error:?}"
    );
}
