//! `config get/patch`, contexts with authentication on, `up`.

use std::os::unix::fs::PermissionsExt;

use serde_json::json;

use crate::harness::{Running, User, closed_port, nanofaas, read_until};
use crate::*;

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
    // Without NANOFAAS_CONFIG the file is in the XDG config directory.
    let xdg = tempfile::tempdir().unwrap();
    let xdg_home = xdg.path().display().to_string();
    user.run_env(
        &["context", "add", "xdg", "--endpoint", api],
        &[("NANOFAAS_CONFIG", ""), ("XDG_CONFIG_HOME", &xdg_home)],
    )
    .await
    .ok();
    let in_xdg = xdg.path().join("nanofaas/config.yaml");
    assert!(std::fs::read_to_string(&in_xdg).unwrap().contains("xdg:"));
    std::fs::write(user.config_file(), "contexts: [unclosed").unwrap();
    user.run(&["fn", "list"])
        .await
        .status(LOCAL)
        .says("config.yaml");
}

/// `nanofaas up` on free loopback ports with its data in `data_dir`, once it has said
/// its endpoint: the running `up`, what it said, and the endpoint.
async fn start_up(user: &User, data_dir: &str) -> (Running, Vec<String>, String) {
    let mut up = user.start(&[
        "up",
        "--",
        "--api-addr",
        "127.0.0.1:0",
        "--management-addr",
        "127.0.0.1:0",
        "--data-dir",
        data_dir,
    ]);
    let said = read_until(&mut up.stderr, "the endpoint", |l| {
        l.starts_with("endpoint: ")
    })
    .await;
    let endpoint = said
        .last()
        .and_then(|l| l.strip_prefix("endpoint: "))
        .and_then(|l| l.split_whitespace().next())
        .unwrap()
        .to_owned();
    (up, said, endpoint)
}

#[tokio::test]
async fn up_runs_a_control_plane_in_the_foreground_until_a_signal() {
    let user = User::new();
    let data = tempfile::tempdir().unwrap();
    let data_dir = data.path().join("state");
    let data_arg = data_dir.display().to_string();
    let (mut up, said, endpoint) = start_up(&user, &data_arg).await;
    assert!(
        said.iter()
            .any(|l| l == &format!("data: {data_arg} (its --data-dir)")),
        "{said:?}"
    );
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

#[tokio::test]
async fn a_kill_9_of_up_stops_its_control_plane_too() {
    let user = User::new();
    let data = tempfile::tempdir().unwrap();
    let data_arg = data.path().display().to_string();
    let (up, _, endpoint) = start_up(&user, &data_arg).await;
    User::of(&endpoint).run(&["fn", "list"]).await.ok();

    // No chance to pass anything on: the kernel tells the control plane (SIGTERM).
    up.signal("KILL");
    crate::processes::eventually("the control plane to stop after up's kill -9", || async {
        let run = User::of(&endpoint).run(&["fn", "list"]).await;
        (run.code == TRANSPORT).then_some(())
    })
    .await;
}
