//! The `nanofaas` command-line client end to end: the real binary against the real
//! `control-plane` binary on free loopback ports (and the Python test runtime), with
//! authentication off and on. Every command, both output formats, the exit statuses,
//! `fn apply` idempotence and a spec directory, `--watch` against a slow execution (the
//! plain lines off a terminal, and the spinner on a pty that util-linux's `script`
//! makes), `--follow`, contexts in a
//! config file of the test's own, `up`, and every help text as a reviewed snapshot.
//! Waits are bounded reads of the processes' output or polls with a bound.

#[path = "durability/client.rs"]
#[allow(
    dead_code,
    reason = "the durability tests' client, shared; these tests use part of it"
)]
mod client;
#[path = "cli/harness.rs"]
mod harness;
#[path = "e2e/processes.rs"]
#[allow(dead_code, reason = "shared with e2e.rs; these tests use part of it")]
mod processes;

use std::os::unix::fs::PermissionsExt;

use harness::{User, closed_port, nanofaas, read_until};
use processes::{ControlPlane, Runtime, eventually, runtime_script};
use serde_json::{Value, json};

/// Exit statuses, as `nanofaas --help` lists them.
const LOCAL: i32 = 1;
const USAGE: i32 = 2;
const FUNCTION_ERROR: i32 = 3;
const FUNCTION_TIMEOUT: i32 = 4;
const TRANSPORT: i32 = 5;
const REFUSED: i32 = 6;
const SERVER_FAULT: i32 = 7;
const INTERRUPTED: i32 = 130;

/// A control plane with `args`, and the runtime POOL functions are sent to.
async fn plane_with_runtime(args: &[&str]) -> (ControlPlane, Runtime) {
    let http = client::http();
    tokio::join!(ControlPlane::start(args, &http), Runtime::start())
}

/// Every command path of the tree (`[]` is `nanofaas` itself).
fn command_paths(command: &clap::Command, prefix: &[String], paths: &mut Vec<Vec<String>>) {
    paths.push(prefix.to_vec());
    for sub in command.get_subcommands() {
        let mut path = prefix.to_vec();
        path.push(sub.get_name().to_owned());
        command_paths(sub, &path, paths);
    }
}

#[tokio::test]
async fn every_help_text_is_a_reviewed_snapshot() {
    let user = User::new();
    let mut paths = Vec::new();
    command_paths(&cli::command(), &[], &mut paths);
    assert!(paths.len() > 20, "{paths:?}");
    for path in paths {
        let mut args: Vec<&str> = path.iter().map(String::as_str).collect();
        args.push("--help");
        let run = user.run(&args).await;
        run.ok();
        let name = if path.is_empty() {
            "help".to_owned()
        } else {
            format!("help_{}", path.join("_"))
        };
        insta::assert_snapshot!(name, run.stdout);
    }
}

#[tokio::test]
async fn completions_for_bash_zsh_and_fish() {
    let user = User::new();
    for shell in ["bash", "zsh", "fish"] {
        let run = user.run(&["completions", shell]).await;
        run.ok();
        for word in ["nanofaas", "apply", "invoke", "endpoint", "idempotency-key"] {
            assert!(run.stdout.contains(word), "{shell}: no {word}");
        }
    }
    user.run(&["completions", "powershell"]).await.status(USAGE);
}

/// A directory of specs: two YAML documents in one file, a JSON file, and a file that
/// is not a spec.
fn write_specs(user: &User, runtime: &Runtime) -> std::path::PathBuf {
    let dir = user.dir().join("specs");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("local.yaml"),
        "name: echo\nimage: local\nexecutionMode: LOCAL\n---\n\
         name: shout\nimage: sh\nruntimeMode: STDIO\ncommand: [sh, -c, 'tr a-z A-Z']\n",
    )
    .unwrap();
    write_greet(&dir, runtime, 30_000);
    std::fs::write(dir.join("README.txt"), "not a spec").unwrap();
    dir
}

fn write_greet(dir: &std::path::Path, runtime: &Runtime, timeout_ms: u64) {
    let spec = json!({
        "name": "greet", "image": "python-runtime", "executionMode": "POOL",
        "endpointUrl": runtime.endpoint(), "maxRetries": 1, "timeoutMs": timeout_ms,
    });
    std::fs::write(dir.join("greet.json"), spec.to_string()).unwrap();
}

fn names(list: &Value) -> Vec<&str> {
    list.as_array()
        .expect("an array")
        .iter()
        .map(|f| f["name"].as_str().expect("a name"))
        .collect()
}

#[tokio::test]
async fn functions_are_applied_from_specs_listed_inspected_and_deleted() {
    let (plane, runtime) = plane_with_runtime(&[]).await;
    let user = User::of(&plane.api);
    let specs = write_specs(&user, &runtime);
    let specs = specs.to_str().unwrap();

    let applied = user.run(&["fn", "apply", "-f", specs]).await;
    applied.ok();
    assert_eq!(
        applied.stdout,
        "greet: created\necho: created\nshout: created\n"
    );
    // Applying the same again changes nothing.
    let again = user.run(&["fn", "apply", "-f", specs, "-o", "json"]).await;
    let again = again.ok().json();
    let actions: Vec<&str> = again
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["unchanged"; 3]);
    assert_eq!(again[0]["name"], "greet");
    let created_at = again[0]["function"]["createdAt"].clone();
    // A changed spec replaces its function, naming what changed.
    write_greet(std::path::Path::new(specs), &runtime, 5_000);
    let replaced = user.run(&["fn", "apply", "-f", specs]).await;
    replaced
        .ok()
        .prints("greet: replaced (changed: timeoutMs)\n");
    replaced.prints("echo: unchanged\n");
    let greet = user.run(&["fn", "get", "greet", "-o", "json"]).await.json();
    assert_eq!(greet["timeoutMs"], 5_000);
    assert_ne!(greet["createdAt"], created_at);

    // list and get, in each format.
    let table = user.run(&["fn", "list"]).await;
    table.ok();
    let lines: Vec<&str> = table.stdout.lines().collect();
    assert!(
        lines[0].starts_with("NAME") && lines[0].contains("MODE"),
        "{lines:?}"
    );
    assert!(
        lines[1].starts_with("echo ") && lines[1].contains("LOCAL"),
        "{lines:?}"
    );
    assert!(
        lines[2].starts_with("greet ") && lines[2].contains("POOL"),
        "{lines:?}"
    );
    assert_eq!(lines.len(), 4);
    let json = user.run(&["fn", "list", "-o", "json"]).await.json();
    assert_eq!(names(&json), ["echo", "greet", "shout"]);
    let yaml = user.run(&["fn", "list", "-o", "yaml"]).await.yaml();
    assert_eq!(yaml, json);
    let text = user.run(&["fn", "get", "greet"]).await;
    text.ok()
        .prints("name:")
        .prints("greet")
        .prints(&runtime.endpoint());
    assert!(text.stdout.contains("timeout:") && text.stdout.contains("5s"));
    let yaml = user.run(&["fn", "get", "shout", "-o", "yaml"]).await.yaml();
    assert_eq!(yaml["runtimeMode"], "STDIO");

    // A bad spec anywhere applies nothing.
    std::fs::write(
        std::path::Path::new(specs).join("broken.yaml"),
        "name: 1-not-a-name\n",
    )
    .unwrap();
    user.run(&["fn", "apply", "-f", specs])
        .await
        .status(LOCAL)
        .says("nothing applied")
        .says("broken.yaml");
    user.run(&["fn", "apply", "-f", "/nonexistent/spec.yaml"])
        .await
        .status(LOCAL);
    // A spec on stdin.
    user.run_stdin(
        &["fn", "apply", "-f", "-"],
        r#"{"name": "piped", "image": "local", "executionMode": "LOCAL"}"#,
    )
    .await
    .ok()
    .prints("piped: created");

    // delete, then the function is gone: a readable sentence and "refused".
    user.run(&["fn", "delete", "shout"])
        .await
        .ok()
        .prints("shout: deleted");
    user.run(&["fn", "get", "shout"])
        .await
        .status(REFUSED)
        .says("error: function shout is not registered (NOT_FOUND)");
    user.run(&["fn", "delete", "shout"]).await.status(REFUSED);
    user.run(&["fn", "get", "not/a/name"]).await.status(USAGE);
    // The server failing to run it (5xx): a DEPLOYMENT with nothing to run.
    user.run_stdin(&["fn", "apply", "-f", "-"], "name: nothing\nimage: x\n")
        .await
        .status(SERVER_FAULT)
        .says("(PROVIDER_UNAVAILABLE)");
    // No runtime configuration without --admin-api: a hint says so.
    user.run(&["config", "get"])
        .await
        .status(REFUSED)
        .says("--admin-api");
}

#[tokio::test]
async fn colour_only_when_forced_and_never_with_no_color() {
    let (plane, _runtime) = plane_with_runtime(&[]).await;
    let user = User::of(&plane.api);
    user.run_stdin(
        &["fn", "apply", "-f", "-"],
        "name: echo\nimage: local\nexecutionMode: LOCAL\n",
    )
    .await
    .ok();
    let escape = '\u{1b}';
    // Not a terminal: no colour.
    let plain = user.run(&["fn", "list"]).await;
    assert!(!plain.stdout.contains(escape), "{plain:?}");
    let forced = user
        .run_env(&["fn", "list"], &[("CLICOLOR_FORCE", "1")])
        .await;
    assert!(forced.stdout.contains(escape), "{forced:?}");
    let never = user
        .run_env(
            &["fn", "list"],
            &[("CLICOLOR_FORCE", "1"), ("NO_COLOR", "1")],
        )
        .await;
    assert!(!never.stdout.contains(escape), "{never:?}");
    let error = user
        .run_env(
            &["fn", "get", "nope"],
            &[("CLICOLOR_FORCE", "1"), ("NO_COLOR", "1")],
        )
        .await;
    assert!(error.stderr.starts_with("error: "), "{error:?}");
}

/// A POOL function `greet` at the runtime (one attempt), and a LOCAL `echo`.
async fn register_greet_and_echo(user: &User, runtime: &Runtime, concurrency: u32) {
    let greet = json!({
        "name": "greet", "image": "python-runtime", "executionMode": "POOL",
        "endpointUrl": runtime.endpoint(), "maxRetries": 1, "concurrency": concurrency,
    });
    user.run_stdin(&["fn", "apply", "-f", "-"], &greet.to_string())
        .await
        .ok();
    user.run_stdin(
        &["fn", "apply", "-f", "-"],
        "name: echo\nimage: local\nexecutionMode: LOCAL\n",
    )
    .await
    .ok();
}

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

#[tokio::test]
async fn replicas_are_scaled_and_their_logs_followed() {
    let (plane, _runtime) = plane_with_runtime(&[]).await;
    let user = User::of(&plane.api);
    let spec = json!({
        "name": "hello", "image": "python",
        "command": ["python3", runtime_script()],
        "scalingConfig": {"strategy": "INTERNAL", "minReplicas": 1, "maxReplicas": 4},
    });
    let spec_file = user.dir().join("hello.json");
    std::fs::write(&spec_file, spec.to_string()).unwrap();
    let spec_file = spec_file.to_str().unwrap();
    user.run(&["fn", "apply", "-f", spec_file])
        .await
        .ok()
        .prints("hello: created");
    // The endpoint the provider set is no change.
    user.run(&["fn", "apply", "-f", spec_file])
        .await
        .ok()
        .prints("hello: unchanged");
    user.run(&["fn", "get", "hello"])
        .await
        .ok()
        .prints("1 ready of 1 desired");

    // The replica printed its port and pid.
    let logs = user.run(&["fn", "logs", "hello", "--tail", "10"]).await;
    logs.ok().prints("pid=");
    let mut follow = user.start(&["fn", "logs", "hello", "--follow"]);
    read_until(&mut follow.stdout, "the first replica's pid", |l| {
        l.contains("pid=")
    })
    .await;
    user.run(&["fn", "scale", "hello", "--replicas", "2"])
        .await
        .ok()
        .prints("hello: scaled to 2 replicas");
    // The second replica's lines arrive while following.
    read_until(&mut follow.stdout, "a second replica's pid", |l| {
        l.contains("pid=") && !logs.stdout.contains(l)
    })
    .await;
    follow.signal("INT");
    assert_eq!(follow.exit_code().await, 0);
    let scaled = user
        .run(&["fn", "scale", "hello", "--replicas", "1", "-o", "json"])
        .await
        .json();
    assert_eq!(scaled, json!({"function": "hello", "replicas": 1}));

    user.run_stdin(
        &["fn", "apply", "-f", "-"],
        "name: echo\nimage: local\nexecutionMode: LOCAL\n",
    )
    .await
    .ok();
    user.run(&["fn", "scale", "echo", "--replicas", "2"])
        .await
        .status(REFUSED)
        .says("(VALIDATION_ERROR)");
    user.run(&["fn", "logs", "echo"]).await.status(REFUSED);
    user.run(&["fn", "logs", "hello", "--tail", "0"])
        .await
        .status(USAGE);
    user.run(&["fn", "scale", "hello", "--replicas", "-1"])
        .await
        .status(USAGE);
    user.run(&["fn", "delete", "hello"]).await.ok();
}

#[tokio::test]
async fn the_runtime_configuration_is_read_and_patched_with_its_revision() {
    let (plane, _runtime) = plane_with_runtime(&["--admin-api"]).await;
    let user = User::of(&plane.api);
    user.run(&["config", "get"])
        .await
        .ok()
        .prints("revision:")
        .prints("PT2S");
    let before = user.run(&["config", "get", "-o", "json"]).await.json();
    assert_eq!(before["revision"], 1);

    let patched = user
        .run(&[
            "config",
            "patch",
            "--set",
            "rateMaxPerSecond=500",
            "--set",
            "syncQueueEnabled=true",
            "--set",
            "syncQueueMaxQueueWait=PT3S",
        ])
        .await;
    patched.ok().prints("revision 2 (was 1)");
    let after = user.run(&["config", "get", "-o", "yaml"]).await.yaml();
    assert_eq!(after["revision"], 2);
    assert_eq!(after["rateMaxPerSecond"], 500);
    assert_eq!(after["syncQueueEnabled"], true);
    assert_eq!(after["syncQueueMaxQueueWait"], "PT3S");

    // A change against an old revision is refused, and changes nothing.
    user.run(&[
        "config",
        "patch",
        "--set",
        "rateMaxPerSecond=7",
        "--revision",
        "1",
    ])
    .await
    .status(REFUSED)
    .says("(REVISION_MISMATCH)");
    user.run(&["config", "patch", "--set", "syncQueueMaxQueueWait=2s"])
        .await
        .status(REFUSED)
        .says("(VALIDATION_ERROR)");
    user.run(&["config", "patch", "--set", "rateMaxPerSecond=0"])
        .await
        .status(REFUSED);
    user.run(&["config", "patch", "--set", "novalue"])
        .await
        .status(USAGE);
    let json = user
        .run(&[
            "config",
            "patch",
            "--set",
            "rateMaxPerSecond=600",
            "-o",
            "json",
        ])
        .await
        .json();
    assert_eq!(json["revision"], 3);
    assert_eq!(json["effectiveConfig"]["rateMaxPerSecond"], 600);
    assert_eq!(
        user.run(&["config", "get", "-o", "json"]).await.json()["rateMaxPerSecond"],
        600
    );
}

const ADMIN: &str = "admin-token-0123456789";
const READER: &str = "reader-token-0123456789";

#[tokio::test]
async fn contexts_hold_endpoints_and_tokens_with_authentication_on() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("tokens"),
        format!("admin {ADMIN} alice\nreader {READER} grafana\n"),
    )
    .unwrap();
    let tokens = dir.path().join("tokens").display().to_string();
    let (plane, _runtime) =
        plane_with_runtime(&["--auth-tokens-file", &tokens, "--admin-api"]).await;
    let api = plane.api.as_str();
    let user = User::new();

    user.run(&["context", "list"])
        .await
        .ok()
        .prints("no contexts");
    user.run(&[
        "context",
        "add",
        "admin",
        "--endpoint",
        api,
        "--token",
        ADMIN,
    ])
    .await
    .ok()
    .prints("context admin: added (now the current one)");
    let mode = std::fs::metadata(user.config_file())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "the config file holds tokens");
    user.run(&[
        "context",
        "add",
        "reader",
        "--endpoint",
        &format!("{api}/"),
        "--token",
        READER,
    ])
    .await
    .ok();
    user.run(&["context", "add", "anonymous", "--endpoint", api])
        .await
        .ok();
    let list = user.run(&["context", "list"]).await;
    list.ok();
    assert!(!list.stdout.contains(ADMIN) && !list.stdout.contains(READER));
    assert!(
        list.stdout
            .lines()
            .any(|l| l.starts_with('*') && l.contains("admin")),
        "{list:?}"
    );
    let json = user.run(&["context", "list", "-o", "json"]).await.json();
    assert_eq!(
        json,
        json!([
            {"name": "admin", "endpoint": api, "hasToken": true, "current": true},
            {"name": "anonymous", "endpoint": api, "hasToken": false, "current": false},
            {"name": "reader", "endpoint": api, "hasToken": true, "current": false},
        ])
    );

    // The current context (admin) registers and invokes.
    let echo = "name: echo\nimage: local\nexecutionMode: LOCAL\n";
    user.run_stdin(&["fn", "apply", "-f", "-"], echo).await.ok();
    user.run(&["invoke", "echo", "-d", "1"])
        .await
        .ok()
        .prints("1");
    user.run(&["config", "get"]).await.ok();
    // Another context for one command, by flag or environment.
    user.run(&["--context", "reader", "fn", "list"])
        .await
        .ok()
        .prints("echo");
    user.run(&["fn", "delete", "echo", "--context", "reader"])
        .await
        .status(REFUSED)
        .says("(FORBIDDEN)")
        .says("role");
    user.run_env(
        &["invoke", "echo", "-d", "1"],
        &[("NANOFAAS_CONTEXT", "reader")],
    )
    .await
    .status(REFUSED);
    user.run(&["--context", "anonymous", "fn", "list"])
        .await
        .status(REFUSED)
        .says("(UNAUTHENTICATED)")
        .says("needs a token");
    user.run(&["--context", "nope", "fn", "list"])
        .await
        .status(USAGE);
    // The flag and the environment win over the context.
    user.run_env(
        &["fn", "list"],
        &[("NANOFAAS_TOKEN", "a-token-nobody-was-given")],
    )
    .await
    .status(REFUSED)
    .says("does not know this token");
    user.run_env(
        &["fn", "list", "--token", ADMIN],
        &[("NANOFAAS_TOKEN", "a-token-nobody-was-given")],
    )
    .await
    .ok();
    let nowhere = format!("http://127.0.0.1:{}", closed_port());
    user.run_env(&["fn", "list"], &[("NANOFAAS_ENDPOINT", &nowhere)])
        .await
        .status(TRANSPORT);
    // Switching and removing.
    user.run(&["context", "use", "reader"]).await.ok();
    user.run(&["fn", "delete", "echo"]).await.status(REFUSED);
    user.run(&["context", "use", "nope"]).await.status(USAGE);
    user.run(&["context", "delete", "anonymous"]).await.ok();
    user.run(&["context", "delete", "anonymous"])
        .await
        .status(USAGE);
    // The environment's endpoint is never stored.
    user.run_env(
        &["context", "add", "env-only"],
        &[("NANOFAAS_ENDPOINT", api)],
    )
    .await
    .status(USAGE)
    .says("--endpoint");
    user.run(&["context", "add", "bad", "--endpoint", "not a url"])
        .await
        .status(USAGE);
    std::fs::write(user.config_file(), "contexts: [unclosed").unwrap();
    user.run(&["fn", "list"])
        .await
        .status(LOCAL)
        .says("config.yaml");
}

#[tokio::test]
async fn up_runs_a_control_plane_in_the_foreground_until_a_signal() {
    let user = User::new();
    let data = tempfile::tempdir().unwrap();
    let data_dir = data.path().join("state");
    let data_arg = data_dir.display().to_string();
    let mut up = user.start(&[
        "up",
        "--",
        "--api-addr",
        "127.0.0.1:0",
        "--management-addr",
        "127.0.0.1:0",
        "--data-dir",
        &data_arg,
    ]);
    let said = read_until(&mut up.stderr, "the endpoint", |l| {
        l.starts_with("endpoint: ")
    })
    .await;
    assert!(
        said.iter()
            .any(|l| l == &format!("data: {data_arg} (its --data-dir)")),
        "{said:?}"
    );
    let endpoint = said
        .last()
        .and_then(|l| l.strip_prefix("endpoint: "))
        .and_then(|l| l.split_whitespace().next())
        .unwrap()
        .to_owned();
    User::of(&endpoint)
        .run(&["fn", "list"])
        .await
        .ok()
        .prints("no functions registered");
    assert!(data_dir.join("control-plane.sqlite3").exists());
    // SIGTERM reaches the control plane, which stops; `up` exits with its status.
    up.signal("TERM");
    assert_eq!(up.exit_code().await, 0);
    User::of(&endpoint)
        .run(&["fn", "list"])
        .await
        .status(TRANSPORT);

    // Without a control-plane binary beside it or on PATH: how to get one.
    let lonely = tempfile::tempdir().unwrap();
    let copy = lonely.path().join("nanofaas");
    std::fs::copy(nanofaas(), &copy).unwrap();
    let output = tokio::process::Command::new(&copy)
        .arg("up")
        .env("PATH", lonely.path())
        .env("NANOFAAS_CONFIG", user.config_file())
        .output()
        .await
        .unwrap();
    assert_eq!(output.status.code(), Some(LOCAL));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("cargo build --release -p control-plane"),
        "{stderr}"
    );
}
