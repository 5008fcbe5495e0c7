//! `invoke`, `enqueue`, `exec get [--watch]` and their exit statuses.

use serde_json::{Value, json};

use crate::harness::{User, closed_port, read_until};
use crate::processes::eventually;
use crate::*;

#[tokio::test]
async fn invocations_print_their_output_and_exit_with_their_status() {
    let (plane, runtime) = plane_with_runtime(&[]).await;
    let user = User::of(&plane.api);
    register_greet_and_echo(&user, &runtime, 4).await;

    // The output, from -d, -d @file and stdin.
    let run = user
        .run(&["invoke", "echo", "-d", r#"{"hello": "world"}"#])
        .await;
    assert_eq!(
        serde_json::from_str::<Value>(&run.ok().stdout).unwrap(),
        json!({"hello": "world"})
    );
    let input = user.dir().join("input.json");
    std::fs::write(&input, r#""from a file""#).unwrap();
    let at_file = format!("@{}", input.display());
    user.run(&["invoke", "echo", "-d", &at_file])
        .await
        .ok()
        .prints("from a file\n");
    user.run_stdin(&["invoke", "echo"], "[1, 2]")
        .await
        .ok()
        .prints("1");
    // -o json / yaml: the whole answer.
    let json = user
        .run(&["invoke", "echo", "-d", "7", "-o", "json"])
        .await
        .json();
    assert_eq!(json["status"], "success");
    assert_eq!(json["output"], 7);
    assert!(json["executionId"].is_string());
    let yaml = user
        .run(&["invoke", "echo", "-d", "7", "-o", "yaml"])
        .await
        .yaml();
    assert_eq!(yaml["output"], 7);

    // The function fails: `error`, with the reason.
    user.run(&[
        "invoke",
        "greet",
        "-d",
        r#"{"mode": "fail", "status": 500}"#,
    ])
    .await
    .status(FUNCTION_ERROR)
    .says("ended in error")
    .says("(FUNCTION_ERROR)");
    let failed = user
        .run(&["invoke", "greet", "-d", r#"{"mode": "fail"}"#, "-o", "json"])
        .await;
    assert_eq!(failed.status(FUNCTION_ERROR).json()["status"], "error");
    // It takes longer than --timeout: `timeout`.
    user.run(&[
        "invoke",
        "greet",
        "-d",
        r#"{"mode": "sleep", "ms": 5000}"#,
        "--timeout",
        "200ms",
    ])
    .await
    .status(FUNCTION_TIMEOUT)
    .says("timed out")
    .says("(SYNC_TIMEOUT)");
    // Refused, unreachable, and usage errors.
    user.run(&["invoke", "nope", "-d", "1"])
        .await
        .status(REFUSED)
        .says("(NOT_FOUND)");
    let nowhere = format!("http://127.0.0.1:{}", closed_port());
    user.run(&["invoke", "echo", "-d", "1", "--endpoint", &nowhere])
        .await
        .status(TRANSPORT)
        .says("cannot connect");
    for bad in [
        &["invoke", "echo", "-d", "{"][..],
        &["invoke", "echo", "-d", "1", "--timeout", "5"],
        &["invoke", "echo", "-d", "1", "--timeout", "10m"],
        &["invoke", "echo", "-d", "1", "--header", "no-equals"],
        &["invoke", "echo", "-d", "1", "--header", "bad name=x"],
        &["invoke", "echo", "--bogus"],
    ] {
        user.run(bad).await.status(USAGE);
    }
    user.run_stdin(&["invoke", "echo"], "")
        .await
        .status(LOCAL)
        .says("empty");
    user.run(&["invoke", "echo", "-d", "@/nonexistent"])
        .await
        .status(LOCAL);

    // Headers, metadata and idempotency keys reach the function; a key gives one
    // execution.
    let keyed = [
        "enqueue",
        "greet",
        "-d",
        r#"{"n": 1}"#,
        "--idempotency-key",
        "order-42",
        "--header",
        "X-Trace-Id=trace-from-cli",
        "--metadata",
        "team=faas",
    ];
    let first = user.run(&keyed).await;
    let id = first.ok().stdout.trim().to_owned();
    assert_eq!(user.run(&keyed).await.ok().stdout.trim(), id);
    let mut reused = keyed.to_vec();
    reused[3] = r#"{"n": 2}"#;
    user.run(&reused)
        .await
        .status(REFUSED)
        .says("(IDEMPOTENCY_KEY_REUSED)");
    let http = client::http();
    let calls = eventually("the keyed execution to reach the runtime", || async {
        let stats = client::runtime_stats(&http, &runtime.url).await;
        stats["calls"][&id].as_array().cloned()
    })
    .await;
    assert_eq!(calls[0]["traceId"], "trace-from-cli");
    assert_eq!(calls[0]["idempotencyKey"], "order-42");

    // enqueue -o json, and --wait: the end, with invoke's statuses.
    let queued = user
        .run(&["enqueue", "echo", "-d", "1", "-o", "json"])
        .await
        .json();
    assert_eq!(queued["status"], "queued");
    user.run(&[
        "enqueue",
        "greet",
        "-d",
        r#"{"mode": "sleep", "ms": 200}"#,
        "--wait",
    ])
    .await
    .ok()
    .prints("sleep");
    user.run(&["enqueue", "greet", "-d", r#"{"mode": "fail"}"#, "--wait"])
        .await
        .status(FUNCTION_ERROR)
        .says("ended in error");
    let waited = user
        .run(&["enqueue", "echo", "-d", "3", "--wait", "-o", "yaml"])
        .await
        .yaml();
    assert_eq!(waited["output"], 3);
    assert_eq!(waited["status"], "success");
}

#[tokio::test]
async fn watching_shows_each_state_of_a_slow_execution() {
    let (plane, runtime) = plane_with_runtime(&[]).await;
    let user = User::of(&plane.api);
    // One at a time, so the second execution waits in the queue behind the first.
    register_greet_and_echo(&user, &runtime, 1).await;
    let slow = r#"{"mode": "sleep", "ms": 1500}"#;
    let first = user.run(&["enqueue", "greet", "-d", slow]).await;
    let first = first.ok().stdout.trim().to_owned();
    let second = user.run(&["enqueue", "greet", "-d", slow]).await;
    let second = second.ok().stdout.trim().to_owned();

    let watched = user.run(&["exec", "get", &second, "--watch"]).await;
    watched.ok();
    let states: Vec<&str> = watched.stderr.lines().collect();
    assert_eq!(states[0], "queued", "{watched:#?}");
    assert_eq!(states[1], "running (attempt 1)", "{watched:#?}");
    assert!(states[2].starts_with("success after "), "{watched:#?}");
    assert_eq!(states.len(), 3, "{watched:#?}");
    watched
        .prints(&format!("execution:  {second}"))
        .prints("success");

    // exec get in each format.
    let json = user
        .run(&["exec", "get", &first, "-o", "json"])
        .await
        .json();
    assert_eq!(json["status"], "success");
    assert_eq!(json["attempt"], 1);
    assert_eq!(json["output"]["ms"], 1500);
    let yaml = user
        .run(&["exec", "get", &first, "-o", "yaml"])
        .await
        .yaml();
    assert_eq!(yaml, json);
    user.run(&["exec", "get", &first])
        .await
        .ok()
        .prints("function:   greet");
    user.run(&["exec", "get", "no-such-execution"])
        .await
        .status(REFUSED);
    user.run(&["exec", "get", "../etc"]).await.status(USAGE);

    // On a terminal: a spinner with the elapsed time, redrawn in place, and colour
    // unless NO_COLOR.
    let on_terminal = user.run(&["enqueue", "greet", "-d", slow]).await;
    let on_terminal = on_terminal.ok().stdout.trim().to_owned();
    let shown = user
        .run_on_terminal(&["exec", "get", &on_terminal, "--watch"], &[])
        .await;
    shown.ok();
    let screen = &shown.stdout;
    assert!(screen.contains("running (attempt 1)"), "{shown:#?}");
    assert!(
        screen.contains("\r\u{1b}[2K"),
        "no spinner redrawn in place: {shown:#?}"
    );
    assert!(screen.contains("success\u{1b}[0m after "), "{shown:#?}");
    assert!(screen.contains("\u{1b}[1mexecution:"), "{shown:#?}");
    let plain = user
        .run_on_terminal(
            &["exec", "get", &on_terminal, "--watch"],
            &[("NO_COLOR", "1")],
        )
        .await;
    plain.ok();
    assert!(plain.stdout.contains("success after "), "{plain:#?}");
    assert!(
        !plain.stdout.contains("\u{1b}[3"),
        "colour with NO_COLOR: {plain:#?}"
    );
    assert!(
        !plain.stdout.contains("\u{1b}[1m"),
        "bold with NO_COLOR: {plain:#?}"
    );

    // A watched failure exits as invoke would.
    let failing = user
        .run(&["enqueue", "greet", "-d", r#"{"mode": "fail"}"#])
        .await;
    let failing = failing.ok().stdout.trim().to_owned();
    let watched = user
        .run(&["exec", "get", &failing, "--watch", "-o", "json"])
        .await;
    assert_eq!(watched.status(FUNCTION_ERROR).json()["status"], "error");
    assert!(watched.stderr.contains("error after "), "{watched:#?}");

    // Ctrl-C stops the watch (the execution goes on).
    let long = user
        .run(&[
            "enqueue",
            "greet",
            "-d",
            r#"{"mode": "sleep", "ms": 10000}"#,
        ])
        .await;
    let long = long.ok().stdout.trim().to_owned();
    let mut watch = user.start(&["exec", "get", &long, "--watch"]);
    read_until(&mut watch.stderr, "the running state", |line| {
        line.starts_with("running")
    })
    .await;
    watch.signal("INT");
    assert_eq!(watch.exit_code().await, INTERRUPTED);
    let rest = read_until(&mut watch.stderr, "the interruption", |line| {
        line.contains("stopped watching")
    })
    .await;
    assert!(rest.iter().any(|l| l.contains(&long)), "{rest:?}");
}
