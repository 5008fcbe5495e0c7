//! Running the real `nanofaas` binary: built like the control plane (`cargo build`
//! through [`workspace_binary`]), each run with its own config file
//! (`NANOFAAS_CONFIG` in a temporary directory), none of the developer's `NANOFAAS_*`
//! or colour settings, stdin closed unless a test gives it one, and every run bounded
//! by [`DEADLINE`].

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::OnceLock;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStderr, ChildStdout, Command};

use crate::processes::{DEADLINE, workspace_binary};

/// The `nanofaas` executable, built from this checkout.
pub(crate) fn nanofaas() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| workspace_binary("cli", "nanofaas"))
}

/// What one run did.
#[derive(Debug)]
pub(crate) struct Run {
    pub(crate) code: i32,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
}

impl Run {
    /// Asserts the exit status, showing everything the run wrote otherwise.
    #[track_caller]
    pub(crate) fn status(&self, code: i32) -> &Self {
        assert_eq!(self.code, code, "exit status of a run that wrote {self:#?}");
        self
    }

    /// Asserts success.
    #[track_caller]
    pub(crate) fn ok(&self) -> &Self {
        self.status(0)
    }

    /// Its stdout as JSON.
    #[track_caller]
    pub(crate) fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {self:#?}"))
    }

    /// Its stdout as YAML.
    #[track_caller]
    pub(crate) fn yaml(&self) -> Value {
        yaml_serde::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not YAML ({e}): {self:#?}"))
    }

    /// Asserts stderr contains `text`.
    #[track_caller]
    pub(crate) fn says(&self, text: &str) -> &Self {
        assert!(
            self.stderr.contains(text),
            "no {text:?} in stderr: {self:#?}"
        );
        self
    }

    /// Asserts stdout contains `text`.
    #[track_caller]
    pub(crate) fn prints(&self, text: &str) -> &Self {
        assert!(
            self.stdout.contains(text),
            "no {text:?} in stdout: {self:#?}"
        );
        self
    }
}

/// A user of the CLI: a config file of their own and an environment.
pub(crate) struct User {
    dir: tempfile::TempDir,
    env: Vec<(String, String)>,
}

impl User {
    /// A user with an empty config file and no endpoint set (the contexts decide).
    pub(crate) fn new() -> Self {
        Self {
            dir: tempfile::tempdir().expect("a temporary directory"),
            env: Vec::new(),
        }
    }

    /// A user whose `NANOFAAS_ENDPOINT` is `endpoint`.
    pub(crate) fn of(endpoint: &str) -> Self {
        Self::new().env("NANOFAAS_ENDPOINT", endpoint)
    }

    /// Sets an environment variable for every run.
    pub(crate) fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }

    /// The config file (`NANOFAAS_CONFIG`).
    pub(crate) fn config_file(&self) -> PathBuf {
        self.dir.path().join("nanofaas/config.yaml")
    }

    /// A directory of this user's, for spec and input files.
    pub(crate) fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The command `nanofaas args`, with `extra` environment on top of the user's.
    pub(crate) fn command(&self, args: &[&str], extra: &[(&str, &str)]) -> Command {
        let mut command = Command::new(nanofaas());
        for (name, _) in std::env::vars_os() {
            let name = name.to_string_lossy().into_owned();
            if name.starts_with("NANOFAAS_")
                || name.starts_with("CONTROL_PLANE_")
                || matches!(
                    name.as_str(),
                    "NO_COLOR" | "CLICOLOR" | "CLICOLOR_FORCE" | "XDG_CONFIG_HOME"
                )
            {
                command.env_remove(name);
            }
        }
        command
            .args(args)
            .env("NANOFAAS_CONFIG", self.config_file())
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .envs(extra.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        command
    }

    /// Runs `nanofaas args` to its end.
    pub(crate) async fn run(&self, args: &[&str]) -> Run {
        self.run_env(args, &[]).await
    }

    /// Runs `nanofaas args` with `extra` environment.
    pub(crate) async fn run_env(&self, args: &[&str], extra: &[(&str, &str)]) -> Run {
        finish(args, self.command(args, extra)).await
    }

    /// Runs `nanofaas args` with `input` on its stdin.
    pub(crate) async fn run_stdin(&self, args: &[&str], input: &str) -> Run {
        let mut command = self.command(args, &[]);
        command.stdin(Stdio::piped());
        let mut child = command.spawn().expect("nanofaas starts");
        let mut stdin = child.stdin.take().expect("piped stdin");
        stdin
            .write_all(input.as_bytes())
            .await
            .expect("stdin is writable");
        drop(stdin);
        wait(args, child).await
    }

    /// Runs `nanofaas args` on a terminal: a pty made by util-linux's `script` (in
    /// every Debian, bsdutils), what the terminal showed (stdout and stderr together)
    /// in `stdout`. Its stdin stays open until the end (`script` ends its session at
    /// the end of its input).
    pub(crate) async fn run_on_terminal(&self, args: &[&str], extra: &[(&str, &str)]) -> Run {
        let quoted: Vec<String> = std::iter::once(nanofaas().to_string_lossy().into_owned())
            .chain(args.iter().map(|a| (*a).to_owned()))
            .map(|word| format!("'{}'", word.replace('\'', r"'\''")))
            .collect();
        let line = quoted.join(" ");
        // The environment a plain run would have, given to `script` (and so to nanofaas).
        let plain = self.command(&[], extra);
        let mut command = Command::new("script");
        command.args(["--quiet", "--return", "--command", &line, "/dev/null"]);
        for (key, value) in plain.as_std().get_envs() {
            match value {
                Some(value) => command.env(key, value),
                None => command.env_remove(key),
            };
        }
        command
            .env("TERM", "xterm-256color")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = command.spawn().expect("script starts");
        let stdin = child.stdin.take();
        let run = wait(args, child).await;
        drop(stdin);
        run
    }

    /// Starts `nanofaas args` and leaves it running (killed when dropped).
    pub(crate) fn start(&self, args: &[&str]) -> Running {
        let mut child = self.command(args, &[]).spawn().expect("nanofaas starts");
        let stdout = BufReader::new(child.stdout.take().expect("piped stdout")).lines();
        let stderr = BufReader::new(child.stderr.take().expect("piped stderr")).lines();
        Running {
            child,
            stdout,
            stderr,
        }
    }
}

async fn finish(args: &[&str], mut command: Command) -> Run {
    let child = command.spawn().expect("nanofaas starts");
    wait(args, child).await
}

async fn wait(args: &[&str], child: Child) -> Run {
    let output = tokio::time::timeout(DEADLINE, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("nanofaas {args:?} still running after {DEADLINE:?}"))
        .expect("nanofaas runs");
    Run {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// A `nanofaas` still running (`--follow`, `--watch`, `up`); killed when dropped.
pub(crate) struct Running {
    child: Child,
    pub(crate) stdout: Lines<BufReader<ChildStdout>>,
    pub(crate) stderr: Lines<BufReader<ChildStderr>>,
}

/// Reads `lines` until one satisfies `wanted`, within [`DEADLINE`]; every line read.
pub(crate) async fn read_until<R>(
    lines: &mut Lines<BufReader<R>>,
    what: &str,
    mut wanted: impl FnMut(&str) -> bool,
) -> Vec<String>
where
    R: tokio::io::AsyncRead + Unpin,
{
    let mut seen = Vec::new();
    let read = async {
        while let Some(line) = lines.next_line().await.expect("readable") {
            let done = wanted(&line);
            seen.push(line);
            if done {
                return true;
            }
        }
        false
    };
    let found = tokio::time::timeout(DEADLINE, read).await;
    assert!(
        matches!(found, Ok(true)),
        "no line with {what} within {DEADLINE:?} (ended: {}); read {seen:#?}",
        found.is_ok()
    );
    seen
}

impl Running {
    /// Its process id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id().expect("still running")
    }

    /// Sends the signal `name` (`INT`, `TERM`) through `sh`'s `kill`.
    pub(crate) fn signal(&self, name: &str) {
        signal(self.pid(), name);
    }

    /// Waits for its exit, within [`DEADLINE`]; its exit status.
    pub(crate) async fn exit_code(&mut self) -> i32 {
        tokio::time::timeout(DEADLINE, self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("nanofaas still running after {DEADLINE:?}"))
            .expect("waiting works")
            .code()
            .unwrap_or(-1)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        // SIGTERM first, and a bounded wait for it to act: `up` passes it on to the
        // control plane it started, which a SIGKILL of `up` would leave running.
        if let Ok(None) = self.child.try_wait()
            && let Some(pid) = self.child.id()
        {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
            let deadline = std::time::Instant::now() + DEADLINE;
            while matches!(self.child.try_wait(), Ok(None)) && std::time::Instant::now() < deadline
            {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
        }
        let _ = self.child.start_kill();
    }
}

/// Sends the signal `name` to `pid` through `sh`'s `kill` (no `unsafe`, no crate).
pub(crate) fn signal(pid: u32, name: &str) {
    let status = std::process::Command::new("sh")
        .args(["-c", "kill -\"$1\" \"$2\"", "sh", name, &pid.to_string()])
        .status()
        .expect("sh runs");
    assert!(status.success(), "kill -{name} {pid} failed");
}

/// A loopback port nothing listens on (bound, then let go).
pub(crate) fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    listener.local_addr().expect("bound").port()
}
