//! The `nanofaas` command-line client end to end: the real binary against the real
//! `control-plane` binary on free loopback ports (and the Python test runtime), with
//! authentication off and on. Every command, both output formats, the exit statuses,
//! `fn apply` idempotence and a spec directory, `--watch` against a slow execution (the
//! plain lines off a terminal, and the spinner on a pty that util-linux's `script`
//! makes), `--follow`, contexts in a config file of the test's own, `up`, and every help
//! text as a reviewed snapshot. Waits are bounded reads of the processes' output or polls
//! with a bound. The cases are in `cli/`: functions, invocations, settings.

#[path = "durability/client.rs"]
#[allow(
    dead_code,
    reason = "the durability tests' client, shared; these tests use part of it"
)]
mod client;
#[path = "cli/functions.rs"]
mod functions;
#[path = "cli/harness.rs"]
mod harness;
#[path = "cli/invocations.rs"]
mod invocations;
#[path = "e2e/processes.rs"]
#[allow(dead_code, reason = "shared with e2e.rs; these tests use part of it")]
mod processes;
#[path = "cli/settings.rs"]
mod settings;

use harness::User;
use processes::{ControlPlane, Runtime};
use serde_json::json;

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
