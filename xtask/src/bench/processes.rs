//! The bench's child processes: each killed and reaped when its guard drops, pinned to its core when pinning is on.

use super::*;

/// A child process killed (and reaped) when this is dropped, however the bench ends.
#[derive(Debug)]
pub(super) struct Guard {
    name: &'static str,
    child: Child,
    /// Where its stdout and stderr go.
    log: PathBuf,
}

impl Guard {
    pub(super) fn spawn(name: &'static str, mut command: Command, log: &Path) -> Result<Self> {
        let file = File::create(log)
            .map_err(|error| format!("cannot create {}: {error}", log.display()))?;
        command
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file);
        let child = command.spawn().map_err(|error| {
            format!(
                "cannot start {name} (`{}`): {error}",
                display_command(&command)
            )
        })?;
        Ok(Self {
            name,
            child,
            log: log.to_path_buf(),
        })
    }

    pub(super) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Asks the process to stop (SIGTERM, through `kill`: no libc here) and waits for it
    /// to exit, at most `within`; if it has not by then, dropping the guard kills it.
    /// A control plane stopped this way stops its replicas itself, as in production.
    pub(super) fn terminate(&mut self, within: Duration) {
        let pid = self.pid().to_string();
        if Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .is_ok_and(|status| status.success())
        {
            let deadline = Instant::now() + within;
            while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    }

    /// An error if the process has already exited (killed by someone, or crashed).
    pub(super) fn still_running(&mut self) -> Result<()> {
        match self.child.try_wait()? {
            None => Ok(()),
            Some(status) => Err(format!(
                "{} exited ({status}); see {}",
                self.name,
                self.log.display()
            )
            .into()),
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `program`, on `core` when pinned.
pub(super) fn pinned_command(program: &Path, core: Option<u32>) -> Command {
    match core {
        Some(core) => {
            // taskset execs the program: the child's pid is the program's.
            let mut command = Command::new("taskset");
            command.arg("-c").arg(core.to_string()).arg(program);
            command
        }
        None => Command::new(program),
    }
}

/// Runs a measuring helper (loadgen, spawn-floor) to its end, with no stdin: the JSON
/// report it prints, or an error naming the command with what it wrote to stderr.
pub(super) fn json_report(command: &mut Command, what: &str) -> Result<Value> {
    let output = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .map_err(|error| format!("cannot run {what}: {error}"))?;
    if !output.status.success() {
        return Err(format!(
            "`{}` failed ({}): {}",
            display_command(command),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        )
        .into());
    }
    Ok(serde_json::from_slice(&output.stdout)?)
}

/// Waits, briefly sleeping between looks, until `ready` gives a value or `deadline`.
pub(super) fn wait_for<T>(
    what: &str,
    deadline: Instant,
    mut ready: impl FnMut() -> Result<Option<T>>,
) -> Result<T> {
    loop {
        if let Some(value) = ready()? {
            return Ok(value);
        }
        if Instant::now() >= deadline {
            return Err(format!("timed out waiting for {what}").into());
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// A bench-echo process: the echo endpoint, or the bare proxy.
#[derive(Debug)]
pub(super) struct Echo {
    pub(super) guard: Guard,
    pub(super) port: u16,
}

/// The processes the scenarios run against.
#[derive(Debug)]
pub(super) struct Servers {
    pub(super) control_plane: ControlPlane,
    pub(super) echo: Echo,
    /// bench-echo forwarding to `echo`.
    pub(super) proxy: Echo,
}

impl Servers {
    /// Why a run failed, if one of the servers has died: that explains it better than
    /// the load generator's view of it.
    pub(super) fn exited(&mut self) -> Option<crate::Error> {
        [
            self.control_plane.guard.still_running(),
            self.echo.guard.still_running(),
            self.proxy.guard.still_running(),
        ]
        .into_iter()
        .find_map(Result::err)
    }
}

#[derive(Debug)]
pub(super) struct ControlPlane {
    pub(super) guard: Guard,
    pub(super) api: SocketAddr,
    pub(super) management: SocketAddr,
    pub(super) startup: Startup,
}

/// How the control plane came up.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Startup {
    /// From spawn to the first 200 of `GET /actuator/health`.
    pub(super) time_to_healthy_ms: f64,
    /// VmRSS right then.
    pub(super) idle_rss_kb: u64,
}
