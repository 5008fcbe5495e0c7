//! `fn apply/list/get/delete/scale/logs`, and colour.

use serde_json::{Value, json};

use crate::harness::{User, read_until};
use crate::processes::{Runtime, runtime_script};
use crate::*;

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
