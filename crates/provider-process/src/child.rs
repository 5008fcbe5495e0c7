//! Starting a function's command as a child process that never outlives its owner:
//! in a process group of its own (so a signal reaches whatever it started too), killed
//! with its group when the [`ProcessGroup`] that owns it is dropped, and -- a replica --
//! killed by the kernel if the control plane dies (`PR_SET_PDEATHSIG`).
//!
//! The parent-death signal has to be asked for between fork and exec, and a hook there
//! makes std fork the control plane instead of using `posix_spawn` (a vfork): a fork
//! copies the page tables of the whole control plane, which costs milliseconds once it
//! holds a few hundred MiB of records (a one-shot invocation became 30x dearer in the
//! bench). So only replicas, started rarely, ask for it; one-shot commands, started once
//! per invocation, are spawned without a hook. If the control plane is killed while one
//! runs, the command loses its stdout (a write then ends it with SIGPIPE) and the next
//! start kills its group from the ledger, as it does for what replicas started.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::Duration;

use rustix::process::{Pid, Signal};
use tokio::process::{Child, Command};

use crate::ledger::GroupLedger;

/// The variables of the control plane's own environment a function's process keeps
/// (everything else is left out: the control plane's flags and secrets are not the
/// function's business).
const INHERITED: [&str; 6] = ["PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "TZ"];

/// What to start: the argv (no shell), its environment on top of [`INHERITED`], where
/// its standard streams go, and the ledger its process group is recorded in.
#[derive(Debug)]
pub(crate) struct Launch<'a> {
    pub(crate) argv: &'a [String],
    pub(crate) env: &'a BTreeMap<String, String>,
    pub(crate) dir: Option<&'a Path>,
    pub(crate) stdin: Stdio,
    pub(crate) ledger: &'a Arc<GroupLedger>,
    /// Whether the kernel kills the child when the control plane dies (a replica), at
    /// the price of a fork (see the module's doc).
    pub(crate) die_with_parent: bool,
}

/// Starts `launch` with piped stdout and stderr. The child leads a new process group
/// whose id is its pid, recorded in the ledger until the group is killed.
pub(crate) fn spawn(launch: Launch<'_>) -> io::Result<(Child, ProcessGroup)> {
    let Some((program, args)) = launch.argv.split_first() else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "the function has no command",
        ));
    };
    let inherited: BTreeMap<&str, OsString> = INHERITED
        .iter()
        .filter_map(|key| Some((*key, std::env::var_os(key)?)))
        .collect();
    let search_path = launch
        .env
        .get("PATH")
        .map(OsString::from)
        .or_else(|| inherited.get("PATH").cloned());
    let mut command = Command::new(resolve(program, search_path, launch.dir));
    command
        // argv[0] as the function wrote it, as if the shell had started it.
        .arg0(program)
        .args(args)
        .env_clear()
        .envs(inherited)
        .envs(launch.env)
        .stdin(launch.stdin)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        // A backstop only: the group is killed by `ProcessGroup` first.
        .kill_on_drop(true);
    if let Some(dir) = launch.dir {
        command.current_dir(dir);
    }
    if launch.die_with_parent {
        die_with_parent(&mut command);
    }
    let child = command.spawn()?;
    let pid = child
        .id()
        .ok_or_else(|| io::Error::other("the child exited at once"))?;
    Ok((child, ProcessGroup::led_by(pid, launch.ledger)))
}

/// `program` as a path: a bare name looked up on `search_path` (the child's `PATH`, as
/// its `execvp` would), so that std can start the child with `posix_spawn` -- it falls
/// back to a fork when the child's `PATH` is set and the program is a bare name. A
/// name found nowhere stays as it is, and the start fails with the usual "not found".
fn resolve(program: &str, search_path: Option<OsString>, dir: Option<&Path>) -> PathBuf {
    if program.contains('/') {
        return PathBuf::from(program);
    }
    let cwd = match dir {
        Some(dir) => dir.to_owned(),
        None => std::env::current_dir().unwrap_or_default(),
    };
    which::which_in(program, search_path, cwd).unwrap_or_else(|_| PathBuf::from(program))
}

/// Asks the kernel to SIGKILL the child when the control plane dies, also by `kill -9`.
/// (The signal follows the *thread* that forked: children are started from the
/// runtime's worker threads, which live as long as the runtime, never from a blocking
/// pool thread that could retire early.)
fn die_with_parent(command: &mut Command) {
    let parent = rustix::process::getpid();
    #[allow(
        unsafe_code,
        reason = "`pre_exec` is unsafe because the closure runs between fork and exec; \
                  this one makes only two async-signal-safe system calls (prctl, getppid) \
                  and allocates nothing"
    )]
    // SAFETY: see the reason above: no allocation, no lock, only raw system calls.
    unsafe {
        command.pre_exec(move || {
            rustix::process::set_parent_process_death_signal(Some(Signal::KILL))?;
            // The parent may have died before the call above: then nobody kills us.
            if rustix::process::getppid() != Some(parent) {
                return Err(io::Error::other("the control plane exited while starting"));
            }
            Ok(())
        });
    }
}

/// A process group this control plane started; killed (SIGKILL, the whole group) when
/// dropped, so nothing it ran survives its owner, and then forgotten by the ledger.
#[derive(Debug)]
pub(crate) struct ProcessGroup {
    leader: Option<Pid>,
    ledger: Arc<GroupLedger>,
}

impl ProcessGroup {
    fn led_by(pid: u32, ledger: &Arc<GroupLedger>) -> Self {
        let leader = i32::try_from(pid).ok().and_then(Pid::from_raw);
        if let Some(leader) = leader {
            ledger.record(leader);
        }
        Self {
            leader,
            ledger: Arc::clone(ledger),
        }
    }

    /// Sends `signal` to every process of the group; a group that is gone already is
    /// not an error.
    pub(crate) fn signal(&self, signal: Signal) {
        if let Some(leader) = self.leader {
            let _ = rustix::process::kill_process_group(leader, signal);
        }
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        self.signal(Signal::KILL);
        if let Some(leader) = self.leader {
            self.ledger.forget(leader);
        }
    }
}

/// Stops a child and its group: SIGTERM, up to `grace` to exit, then SIGKILL. Returns
/// how it ended (`None` if waiting for it failed).
pub(crate) async fn stop(
    child: &mut Child,
    group: &ProcessGroup,
    grace: Duration,
) -> Option<ExitStatus> {
    if let Ok(Some(status)) = child.try_wait() {
        // The leader is gone; what it left in its group is not.
        group.signal(Signal::KILL);
        return Some(status);
    }
    group.signal(Signal::TERM);
    if let Ok(status) = tokio::time::timeout(grace, child.wait()).await {
        group.signal(Signal::KILL);
        return status.ok();
    }
    group.signal(Signal::KILL);
    child.wait().await.ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(args: &[&str]) -> Vec<String> {
        args.iter().map(|s| (*s).to_owned()).collect()
    }

    /// A ledger of its own, in a directory that lives as long as the test holds it.
    fn ledger() -> (tempfile::TempDir, Arc<GroupLedger>) {
        let dir = tempfile::tempdir().unwrap();
        let ledger = GroupLedger::open(dir.path()).unwrap().0;
        (dir, Arc::new(ledger))
    }

    fn alive(pid: u32) -> bool {
        // Signal 0 checks existence; a zombie counts as gone for our purposes once reaped.
        let pid = Pid::from_raw(i32::try_from(pid).unwrap()).unwrap();
        rustix::process::test_kill_process(pid).is_ok()
    }

    #[tokio::test]
    async fn a_bare_program_name_is_found_on_the_function_s_own_path() {
        let bin = tempfile::tempdir().unwrap();
        let script = bin.path().join("greet");
        std::fs::write(&script, "#!/bin/sh\necho \"hello from $0\"\n").unwrap();
        std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let path = format!("{}:/usr/bin:/bin", bin.path().display());
        let env = BTreeMap::from([("PATH".to_owned(), path)]);
        let (_dir, ledger) = ledger();
        let (child, _group) = spawn(Launch {
            argv: &argv(&["greet"]),
            env: &env,
            dir: None,
            stdin: Stdio::null(),
            ledger: &ledger,
            die_with_parent: false,
        })
        .unwrap();
        let output = child.wait_with_output().await.unwrap();
        let said = String::from_utf8(output.stdout).unwrap();
        assert_eq!(said.trim(), format!("hello from {}", script.display()));

        let missing = spawn(Launch {
            argv: &argv(&["no-such-program-anywhere"]),
            env: &env,
            dir: None,
            stdin: Stdio::null(),
            ledger: &ledger,
            die_with_parent: false,
        })
        .unwrap_err();
        assert_eq!(missing.kind(), io::ErrorKind::NotFound);
    }

    #[tokio::test]
    async fn the_environment_is_the_function_s_plus_a_few_inherited_variables() {
        let env = BTreeMap::from([("GREETING".to_owned(), "hi".to_owned())]);
        let (_dir, ledger) = ledger();
        let (child, _group) = spawn(Launch {
            argv: &argv(&["sh", "-c", "env"]),
            env: &env,
            dir: None,
            stdin: Stdio::null(),
            ledger: &ledger,
            die_with_parent: true,
        })
        .unwrap();
        let output = child.wait_with_output().await.unwrap();
        let text = String::from_utf8(output.stdout).unwrap();
        assert!(text.lines().any(|l| l == "GREETING=hi"), "{text}");
        assert!(text.lines().any(|l| l.starts_with("PATH=")), "{text}");
        assert!(
            !text.contains("CARGO"),
            "the control plane's own environment leaked: {text}"
        );
    }

    #[tokio::test]
    async fn stopping_ends_the_child_and_what_it_started() {
        // The shell ignores SIGTERM, and its background sleep would outlive it.
        let (_dir, ledger) = ledger();
        let (mut child, group) = spawn(Launch {
            argv: &argv(&["sh", "-c", "trap '' TERM; sleep 300 & echo $!; wait"]),
            env: &BTreeMap::new(),
            dir: None,
            stdin: Stdio::null(),
            ledger: &ledger,
            die_with_parent: true,
        })
        .unwrap();
        let mut stdout = tokio::io::BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        tokio::io::AsyncBufReadExt::read_line(&mut stdout, &mut line)
            .await
            .unwrap();
        let grandchild: u32 = line.trim().parse().unwrap();
        assert!(alive(grandchild));

        let status = stop(&mut child, &group, Duration::from_millis(100)).await;
        assert!(status.is_some_and(|s| !s.success()));
        // The grandchild was killed with the group; its parent (init or a subreaper)
        // reaps it, so wait for that, bounded.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while alive(grandchild) && !zombie(grandchild) {
            assert!(
                std::time::Instant::now() < deadline,
                "the group's sleep survived"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test]
    async fn dropping_the_group_kills_it() {
        let (_dir, ledger) = ledger();
        let (mut child, group) = spawn(Launch {
            argv: &argv(&["sleep", "300"]),
            env: &BTreeMap::new(),
            dir: None,
            stdin: Stdio::null(),
            ledger: &ledger,
            die_with_parent: true,
        })
        .unwrap();
        drop(group);
        let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
            .await
            .expect("killed")
            .unwrap();
        assert!(!status.success());
    }

    #[test]
    fn an_empty_command_is_refused() {
        let (_dir, ledger) = ledger();
        let error = spawn(Launch {
            argv: &[],
            env: &BTreeMap::new(),
            dir: None,
            stdin: Stdio::null(),
            ledger: &ledger,
            die_with_parent: true,
        })
        .unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::InvalidInput);
    }

    fn zombie(pid: u32) -> bool {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|stat| {
                stat.rsplit(')')
                    .next()
                    .is_some_and(|rest| rest.trim_start().starts_with('Z'))
            })
            .unwrap_or(true)
    }
}
