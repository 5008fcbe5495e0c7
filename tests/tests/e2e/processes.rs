//! The two processes an end-to-end test runs: the real `control-plane` binary and the
//! Python function runtime (`tests/runtime/fn_runtime.py`). Both bind `127.0.0.1:0` and
//! say which ports they got on stdout; both are killed when their guard drops, a failing
//! (panicking) test included.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};
use tokio::time::Instant;

/// The most any wait of these tests may take: a bound, never a pause.
pub(crate) const DEADLINE: Duration = Duration::from_secs(20);

/// How often a poll looks again.
const POLL_INTERVAL: Duration = Duration::from_millis(10);

/// Polls `probe` until it gives a value; panics naming `what` after [`DEADLINE`].
pub(crate) async fn eventually<T, Fut>(what: &str, probe: impl FnMut() -> Fut) -> T
where
    Fut: Future<Output = Option<T>>,
{
    eventually_within(DEADLINE, what, probe).await
}

/// [`eventually`] with another bound (for waits on thousands of executions).
pub(crate) async fn eventually_within<T, Fut>(
    bound: Duration,
    what: &str,
    mut probe: impl FnMut() -> Fut,
) -> T
where
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + bound;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "gave up after {bound:?} waiting for {what}"
        );
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// The workspace root (this package lives in `<root>/tests`).
fn workspace_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests package is inside the workspace")
}

/// The Python function runtime's script (`tests/runtime/fn_runtime.py`).
pub(crate) fn runtime_script() -> PathBuf {
    workspace_root().join("tests/runtime/fn_runtime.py")
}

/// The `control-plane` executable, built from this checkout.
pub(crate) fn control_plane_binary() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| workspace_binary("control-plane", "control-plane"))
}

/// The executable `bin` of workspace package `package`, built from this checkout.
///
/// Cargo builds a test's own package binaries for it, but not another package's, so the
/// caller runs `cargo build -p <package> --bin <bin>` (a no-op when `cargo xtask ci` has
/// built it already; callers keep the path in a `OnceLock`) and takes the executable's
/// path from cargo's JSON messages, which also covers `CARGO_TARGET_DIR` and build-dir
/// settings.
pub(crate) fn workspace_binary(package: &str, bin: &str) -> PathBuf {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| env!("CARGO").into());
    let output = std::process::Command::new(cargo)
        .current_dir(workspace_root())
        .args([
            "build",
            "--package",
            package,
            "--bin",
            bin,
            "--message-format=json-render-diagnostics",
        ])
        .stderr(Stdio::inherit())
        .output()
        .expect("cargo runs");
    assert!(
        output.status.success(),
        "cargo build -p {package} failed ({})",
        output.status
    );
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|message| {
            message["reason"] == "compiler-artifact" && message["target"]["name"] == bin
        })
        .find_map(|message| message["executable"].as_str().map(PathBuf::from))
        .unwrap_or_else(|| panic!("cargo reported no {bin} executable"))
}

/// Reads lines of a child's stdout until `wanted` picks one, within [`DEADLINE`].
async fn read_until<T>(
    lines: &mut Lines<BufReader<ChildStdout>>,
    who: &str,
    mut wanted: impl FnMut(&str) -> Option<T>,
) -> T {
    let read = async {
        while let Some(line) = lines.next_line().await.expect("stdout is readable") {
            if let Some(found) = wanted(&line) {
                return found;
            }
        }
        panic!("{who} closed its stdout before saying where it listens");
    };
    tokio::time::timeout(DEADLINE, read)
        .await
        .unwrap_or_else(|_| panic!("{who} did not say where it listens within {DEADLINE:?}"))
}

/// The value of `key=value` in a log line (`tracing`'s text format).
fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    line.split_whitespace()
        .find_map(|token| token.strip_prefix(key)?.strip_prefix('='))
}

/// Its log: the lines of its stdout.
pub(crate) type Log = Lines<BufReader<ChildStdout>>;

/// The start of every test's HTTP client: never through a proxy from the environment
/// (everything is on loopback). reqwest's rustls has no crypto provider of its own in
/// this workspace (the CLI's `rustls-no-provider` is unified into every build with it),
/// so ring, as everywhere, is installed first: a client built before that panics.
pub(crate) fn http_client_builder() -> reqwest::ClientBuilder {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder().no_proxy()
}

/// The log filter of a control plane whose log nobody reads but its start and stop
/// lines: it must stay far below what the pipe buffers.
pub(crate) const START_AND_STOP_LINES: &str = "warn,control_plane=info";

/// The `control-plane` binary with `args` (and free ports) as [`ControlPlane::start`]
/// runs it, with its own `--data-dir` unless `args` name one or a `--store`.
fn control_plane_command(args: &[&str]) -> (Command, Option<tempfile::TempDir>) {
    control_plane_command_logging(args, START_AND_STOP_LINES)
}

/// [`control_plane_command`] with `RUST_LOG=<log_filter>`.
fn control_plane_command_logging(
    args: &[&str],
    log_filter: &str,
) -> (Command, Option<tempfile::TempDir>) {
    let mut command = Command::new(control_plane_binary());
    let names_its_store = args
        .iter()
        .any(|arg| arg.starts_with("--data-dir") || arg.starts_with("--store"));
    let data_dir =
        (!names_its_store).then(|| tempfile::tempdir().expect("a temporary data directory"));
    if let Some(dir) = &data_dir {
        command.arg("--data-dir").arg(dir.path());
    }
    command
        .args([
            "--api-addr",
            "127.0.0.1:0",
            "--management-addr",
            "127.0.0.1:0",
        ])
        .args(args)
        // Unless a test takes the log, nobody reads it after the start: a filter that
        // lets more than the start and stop lines through must come with a reader.
        .env("RUST_LOG", log_filter)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true);
    // The developer's own settings must not change what the tests start.
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("CONTROL_PLANE_") {
            command.env_remove(name);
        }
    }
    (command, data_dir)
}

/// Runs the binary with `args` (and free ports) until it exits on its own, within
/// [`DEADLINE`]: its exit status and everything it wrote (stdout, then stderr).
#[allow(
    dead_code,
    reason = "this module is compiled into several test targets; only durability.rs runs one to its exit"
)]
pub(crate) async fn run_to_exit(args: &[&str]) -> (ExitStatus, String) {
    let (mut command, _data_dir) = control_plane_command(args);
    command.stderr(Stdio::piped());
    let output = tokio::time::timeout(DEADLINE, command.output())
        .await
        .unwrap_or_else(|_| panic!("control-plane {args:?} still running after {DEADLINE:?}"))
        .expect("the control-plane binary runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status, text)
}

/// A running `control-plane`; killed on drop.
pub(crate) struct ControlPlane {
    child: Child,
    /// Its own `--data-dir`, unless the test named one (removed after the process).
    _data_dir: Option<tempfile::TempDir>,
    /// Its log (stdout), read up to the "listening" line; `None` once a test took it.
    logs: Option<Log>,
    /// What it logged before it said it listens.
    startup: Vec<String>,
    /// `http://<api addr>`, or `https://<api addr>` when it serves TLS (the listening
    /// line's `api_url`).
    pub(crate) api: String,
    /// `http://<management addr>`.
    pub(crate) management: String,
}

impl ControlPlane {
    /// Starts the binary on free ports with `args` added, and waits until its health
    /// endpoint answers. Its store is the default (SQLite) in a fresh directory of its
    /// own, unless `args` name a `--data-dir` or a `--store`.
    pub(crate) async fn start(args: &[&str], http: &reqwest::Client) -> Self {
        Self::start_logging(args, START_AND_STOP_LINES, http).await
    }

    /// [`start`](Self::start) with `RUST_LOG=<log_filter>` (a test that reads more of
    /// the log than the start and stop lines takes it with [`Self::take_log`]).
    pub(crate) async fn start_logging(
        args: &[&str],
        log_filter: &str,
        http: &reqwest::Client,
    ) -> Self {
        let (mut command, data_dir) = control_plane_command_logging(args, log_filter);
        let mut child = command.spawn().expect("the control-plane binary starts");
        let mut logs = BufReader::new(child.stdout.take().expect("piped stdout")).lines();
        let mut startup = Vec::new();
        let (api, management) = read_until(&mut logs, "control-plane", |line| {
            if !line.contains("control plane listening") {
                startup.push(line.to_owned());
                return None;
            }
            let api = field(line, "api_url").expect("the line names api_url");
            // The management listener is always plain HTTP, so the health poll below
            // needs no TLS even when the API serves it.
            let management = field(line, "management_addr").expect("it names management_addr");
            Some((api.to_owned(), format!("http://{management}")))
        })
        .await;

        let plane = Self {
            child,
            _data_dir: data_dir,
            logs: Some(logs),
            startup,
            api,
            management,
        };
        let health = format!("{}/actuator/health", plane.management);
        eventually("the management port to report UP", || async {
            let response = http.get(&health).send().await.ok()?;
            response.status().is_success().then_some(())
        })
        .await;
        plane
    }

    /// The process id (to read its memory from `/proc`).
    #[allow(
        dead_code,
        reason = "this module is compiled into e2e.rs and hostile.rs; only hostile.rs reads memory"
    )]
    pub(crate) fn pid(&self) -> u32 {
        self.child.id().expect("still running")
    }

    /// Sends SIGTERM.
    #[allow(
        dead_code,
        reason = "this module is compiled into several test targets; durability.rs only kills"
    )]
    pub(crate) fn terminate(&self) {
        self.signal("TERM");
    }

    /// Sends SIGHUP (the reload of the tokens file and the TLS certificate).
    #[allow(
        dead_code,
        reason = "this module is compiled into several test targets; only tls.rs and security.rs reload"
    )]
    pub(crate) fn hangup(&self) {
        self.signal("HUP");
    }

    /// Sends `SIG<name>` to the process, by its pid (through `sh`'s `kill`, so no
    /// `unsafe` and no extra crate).
    #[allow(
        dead_code,
        reason = "this module is compiled into several test targets"
    )]
    pub(crate) fn signal(&self, name: &str) {
        let pid = self.child.id().expect("still running").to_string();
        let status = std::process::Command::new("sh")
            .args(["-c", &format!("kill -{name} \"$1\""), "sh", &pid])
            .status()
            .expect("sh runs");
        assert!(status.success(), "kill -{name} {pid} failed");
    }

    /// Waits for the process to exit, within [`DEADLINE`].
    pub(crate) async fn exit_status(&mut self) -> ExitStatus {
        tokio::time::timeout(DEADLINE, self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("control-plane still running after {DEADLINE:?}"))
            .expect("waiting for the child works")
    }
}

#[allow(
    dead_code,
    reason = "this module is compiled into several test targets; only durability.rs kills"
)]
impl ControlPlane {
    /// Kills the process with SIGKILL (`kill -9`: no shutdown of any kind) and waits
    /// until it is gone.
    pub(crate) async fn kill(mut self) {
        self.child.start_kill().expect("the process can be killed");
        let _ = self.exit_status().await;
    }

    /// Starts the binary as [`start`](Self::start) does, and kills it (SIGKILL) after
    /// `delay` wherever its start-up is by then, waiting until it is gone. Whether it
    /// had said it listens by then.
    pub(crate) async fn kill_during_start(args: &[&str], delay: Duration) -> bool {
        let (mut command, _data_dir) = control_plane_command(args);
        let mut child = command.spawn().expect("the control-plane binary starts");
        let mut logs = BufReader::new(child.stdout.take().expect("piped stdout")).lines();
        let mut listening = false;
        let read = async {
            while let Ok(Some(line)) = logs.next_line().await {
                listening |= line.contains("control plane listening");
            }
        };
        let exited = tokio::time::timeout(delay, read).await.is_ok();
        // Its stdout closed: it exited by itself, and a kill cannot cut that start short.
        assert!(
            !exited,
            "control-plane exited during its start: {:?}",
            child.try_wait()
        );
        child.start_kill().expect("the process can be killed");
        tokio::time::timeout(DEADLINE, child.wait())
            .await
            .unwrap_or_else(|_| panic!("control-plane still running after {DEADLINE:?}"))
            .expect("waiting for the child works");
        listening
    }

    /// The lines it logged before it said it listens (the store's `store open` line
    /// says what it took up again).
    pub(crate) fn startup_log(&self) -> &[String] {
        &self.startup
    }

    /// Its log from here on, for a test that reads it (and so keeps the pipe from
    /// filling while the process logs more than the start and stop lines).
    pub(crate) fn take_log(&mut self) -> Log {
        self.logs.take().expect("the log is taken once")
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

/// The Python function runtime; killed on drop.
pub(crate) struct Runtime {
    child: Child,
    /// Its stdout, kept open: what it prints after its port must not meet a closed
    /// pipe.
    _stdout: Log,
    /// `http://127.0.0.1:<port>`.
    pub(crate) url: String,
}

impl Runtime {
    pub(crate) async fn start() -> Self {
        Self::start_with_env(&[]).await
    }

    /// [`start`](Self::start) with `env` added to its environment (`SSL_CERT_FILE`: the
    /// roots its callbacks to an `https` control plane trust).
    pub(crate) async fn start_with_env(env: &[(&str, &str)]) -> Self {
        let script = runtime_script();
        let mut child = Command::new("python3")
            .arg(&script)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start python3 {}: {e}", script.display()));
        let mut lines = BufReader::new(child.stdout.take().expect("piped stdout")).lines();
        let port: u16 =
            read_until(&mut lines, "fn_runtime.py", |line| line.trim().parse().ok()).await;
        Self {
            child,
            _stdout: lines,
            url: format!("http://127.0.0.1:{port}"),
        }
    }

    /// The URL functions are registered with.
    pub(crate) fn endpoint(&self) -> String {
        format!("{}/invoke", self.url)
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}
