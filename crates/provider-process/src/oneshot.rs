//! One-shot functions (`runtimeMode` `STDIO` or `FILE`): the function's `command` is
//! started once per invocation, as the nanofaas watchdog's one-shot modes do, and how it
//! ends (exit status, output, the tail of its stderr) is the attempt's outcome.
//!
//! Owns: one invocation's exchange with its command -- the environment, the invocation
//! JSON on stdin (`STDIO`) or in `INPUT_FILE` (`FILE`), reading the output (stdout, or
//! `OUTPUT_FILE`) and the tail of stderr within fixed bounds, the private directory a
//! `FILE` invocation works in, and turning all of that into a [`DispatchOutcome`].
//!
//! Must not know: scheduling, retries, timeouts or replicas. The scheduler enforces
//! `timeoutMs` by dropping the future; dropped at any await, it kills the command's
//! whole process group and removes the invocation's directory, so there is no timer
//! here. Nothing it starts outlives the invocation: when the command exits, whatever it
//! left running in its group is killed too.

use std::collections::{BTreeMap, VecDeque};
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;

use core_types::{
    DispatchOutcome, DispatchRequest, DispatchSuccess, ErrorCode, ErrorInfo, Payload, RuntimeMode,
};
use rustix::process::Signal;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::{ChildStdin, ChildStdout};

use crate::child::{self, Launch};
use crate::ledger::GroupLedger;

/// How much of the end of stderr a failure message carries.
const STDERR_TAIL_BYTES: usize = 2048;

/// The size of one read from a pipe.
const CHUNK_BYTES: usize = 16 * 1024;

/// The file names inside a `FILE` invocation's directory (the watchdog's defaults are
/// `/tmp/input.json` and `/tmp/output.json`).
const INPUT_NAME: &str = "input.json";
const OUTPUT_NAME: &str = "output.json";

/// The bounds one invocation is held to.
#[derive(Clone, Copy, Debug)]
pub(crate) struct OneShotLimits {
    /// The largest output (stdout for `STDIO`, `OUTPUT_FILE` for `FILE`) accepted; the
    /// control plane's body limit, so an output it takes is one it can store and serve.
    pub(crate) max_output_bytes: usize,
}

/// Runs one invocation of a one-shot function, its command's group recorded in
/// `ledger` while it runs.
pub(crate) async fn run_once(
    request: &DispatchRequest,
    limits: OneShotLimits,
    scratch: &std::path::Path,
    ledger: &Arc<GroupLedger>,
) -> DispatchOutcome {
    let spec = &request.function;
    let file_mode = match spec.runtime_mode {
        RuntimeMode::Stdio => false,
        RuntimeMode::File => true,
        RuntimeMode::Http => {
            return Err(dispatch_error(format!(
                "function {} is not a one-shot function (its runtimeMode is HTTP)",
                spec.name
            )));
        }
    };
    if spec.command.is_empty() {
        return Err(dispatch_error(format!(
            "function {} has no command to run",
            spec.name
        )));
    }
    let invocation = invocation_json(request)?;
    // What the watchdog's process would see: the replica contract (it inherits the
    // watchdog's own environment), plus what the watchdog sets per invocation.
    let mut env = dispatcher::replica_env(spec, request.callback_url.as_deref());
    env.insert("EXECUTION_ID".to_owned(), request.execution_id.to_string());
    env.insert("TRACE_ID".to_owned(), request.trace_id.to_string());
    let command = Command {
        argv: &spec.command,
        max_output_bytes: limits.max_output_bytes,
        ledger,
    };
    if file_mode {
        command.run_file(env, invocation, scratch).await
    } else {
        command.run_stdio(&env, invocation).await
    }
}

/// The invocation as the command receives it: `{"input": .., "metadata": {..}}`, the
/// body a `POOL` function is sent (built from the payload's text, never re-parsed).
fn invocation_json(request: &DispatchRequest) -> Result<String, ErrorInfo> {
    let metadata = serde_json::to_string(&*request.metadata)
        .map_err(|e| dispatch_error(format!("could not encode the metadata: {e}")))?;
    Ok(format!(
        r#"{{"input":{},"metadata":{metadata}}}"#,
        request.input.json_text()
    ))
}

/// One function's command, for one invocation.
struct Command<'a> {
    argv: &'a [String],
    max_output_bytes: usize,
    ledger: &'a Arc<GroupLedger>,
}

impl Command<'_> {
    fn program(&self) -> &str {
        self.argv.first().map_or("", String::as_str)
    }

    /// `STDIO`: the invocation on stdin, the output on stdout.
    async fn run_stdio(
        &self,
        env: &BTreeMap<String, String>,
        invocation: String,
    ) -> DispatchOutcome {
        let ended = self.exchange(env, Some(invocation.into_bytes())).await?;
        ended.check_status(self)?;
        // Empty stdout is a failure, as in the watchdog (its `stdio_empty_output` test):
        // a command that printed nothing most likely did not do its job, and `null`
        // would hide that. (Text that is not JSON is no failure here, unlike in the
        // watchdog: api.md makes it a JSON string.)
        let output = parse_output(&ended.stdout)
            .ok_or_else(|| ended.failure(self, "wrote nothing to stdout"))?;
        Ok(DispatchSuccess::warm(output))
    }

    /// `FILE`: the invocation in `INPUT_FILE`, the output in `OUTPUT_FILE`, both in a
    /// fresh private directory under `scratch`.
    async fn run_file(
        &self,
        mut env: BTreeMap<String, String>,
        invocation: String,
        scratch: &Path,
    ) -> DispatchOutcome {
        // Declared before the process exists, so dropped after it, also when the
        // future is dropped: the group is killed before its directory is removed.
        let dir = invocation_dir(scratch)?;
        let input = dir.path().join(INPUT_NAME);
        let output = dir.path().join(OUTPUT_NAME);
        for (key, path) in [("INPUT_FILE", &input), ("OUTPUT_FILE", &output)] {
            let path = path.to_str().ok_or_else(|| {
                dispatch_error(format!("the scratch path {} is not UTF-8", path.display()))
            })?;
            env.insert(key.to_owned(), path.to_owned());
        }
        // Written in place rather than on the blocking pool: it is at most a request
        // body into a fresh directory, and a write left running by a dropped future
        // could race the directory's removal and leave it behind.
        std::fs::write(&input, invocation)
            .map_err(|e| dispatch_error(format!("could not write {}: {e}", input.display())))?;
        let ended = self.exchange(&env, None).await?;
        ended.check_status(self)?;
        let bytes = read_output_file(&output, self.max_output_bytes)
            .await
            .map_err(|what| ended.failure(self, &what))?;
        // As on stdout, an empty output file is a failure (the watchdog's too).
        let output = parse_output(&bytes)
            .ok_or_else(|| ended.failure(self, "wrote an empty OUTPUT_FILE"))?;
        Ok(DispatchSuccess::warm(output))
    }

    /// Starts the command and follows it to its end: writes `stdin` (if any) and
    /// reads stdout and stderr side by side, so that no order of the command's reads
    /// and writes can deadlock with ours. Without `stdin`, stdout is read and dropped
    /// (it is not the output, but a full pipe must not stall the command).
    async fn exchange(
        &self,
        env: &BTreeMap<String, String>,
        stdin: Option<Vec<u8>>,
    ) -> Result<Ended, ErrorInfo> {
        let program = self.program();
        let capture_stdout = stdin.is_some();
        let (mut process, group) = child::spawn(Launch {
            argv: self.argv,
            env,
            dir: None,
            stdin: if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            },
            ledger: self.ledger,
            // Spawned, not forked: once per invocation (see `child`).
            die_with_parent: false,
        })
        .map_err(|e| function_error(format!("could not start {program}: {e}")))?;
        // `group` lives as long as this future: dropping it kills the whole group.
        let input = process.stdin.take();
        let stdout = process.stdout.take();
        let stderr = process.stderr.take();

        let exchanged = tokio::try_join!(
            write_input(input, stdin),
            async {
                match stdout {
                    Some(out) if capture_stdout => self.read_stdout(out).await,
                    Some(mut out) => {
                        let _ = tokio::io::copy(&mut out, &mut tokio::io::sink()).await;
                        Ok(Vec::new())
                    }
                    None => Ok(Vec::new()),
                }
            },
            async { Ok(read_tail(stderr).await) },
            async {
                let status = process.wait().await.map_err(|e| {
                    function_error(format!("could not wait for {program} to exit: {e}"))
                })?;
                // Its exit ends the invocation: what it left running in its group is
                // killed now, which also lets go of the pipes, so the reads above see
                // their end instead of waiting for a background child.
                group.signal(Signal::KILL);
                Ok(status)
            },
        );
        match exchanged {
            Ok(((), stdout, stderr, status)) => Ok(Ended {
                status,
                stdout,
                stderr,
            }),
            Err(failure) => {
                // Output over the limit (or a pipe that failed): stop it at once, not
                // after reading the rest, and reap it.
                group.signal(Signal::KILL);
                let _ = process.wait().await;
                Err(failure)
            }
        }
    }

    /// Reads stdout up to the output limit; one byte more fails the invocation.
    async fn read_stdout(&self, mut out: ChildStdout) -> Result<Vec<u8>, ErrorInfo> {
        let limit = self.max_output_bytes;
        let mut output = Vec::new();
        let mut chunk = vec![0; CHUNK_BYTES];
        loop {
            let read = out.read(&mut chunk).await.map_err(|e| {
                function_error(format!(
                    "could not read the stdout of {}: {e}",
                    self.program()
                ))
            })?;
            if read == 0 {
                return Ok(output);
            }
            if output.len() + read > limit {
                return Err(self.too_large());
            }
            output.extend_from_slice(&chunk[..read]);
        }
    }

    fn too_large(&self) -> ErrorInfo {
        function_error(format!(
            "{} wrote output larger than {} bytes",
            self.program(),
            self.max_output_bytes
        ))
    }
}

/// Writes the invocation and closes stdin (its EOF tells the command it has it all).
/// A failed write is no failure of ours: a command may exit without reading its input
/// (a broken pipe), and its exit status then says how it went.
async fn write_input(stdin: Option<ChildStdin>, bytes: Option<Vec<u8>>) -> Result<(), ErrorInfo> {
    if let (Some(mut stdin), Some(bytes)) = (stdin, bytes) {
        let _ = stdin.write_all(&bytes).await;
        let _ = stdin.shutdown().await;
    }
    Ok(())
}

/// How the command ended.
struct Ended {
    status: ExitStatus,
    stdout: Vec<u8>,
    stderr: Tail,
}

impl Ended {
    /// Success is exit status 0; anything else fails, with the status (or the
    /// signal) and the tail of stderr.
    fn check_status(&self, command: &Command<'_>) -> Result<(), ErrorInfo> {
        if self.status.success() {
            return Ok(());
        }
        let how = match (self.status.code(), self.status.signal()) {
            (Some(code), _) => format!("exited with status {code}"),
            (None, Some(signal)) => match signal_name(signal) {
                Some(name) => format!("was killed by signal {signal} ({name})"),
                None => format!("was killed by signal {signal}"),
            },
            (None, None) => format!("ended with {}", self.status),
        };
        Err(self.failure(command, &how))
    }

    /// A failure of the command, with the tail of its stderr.
    fn failure(&self, command: &Command<'_>, what: &str) -> ErrorInfo {
        function_error(format!(
            "{} {what}{}",
            command.program(),
            self.stderr.suffix()
        ))
    }
}

/// The end of a stream: the last [`STDERR_TAIL_BYTES`] bytes, never more in memory.
#[derive(Debug, Default)]
struct Tail {
    bytes: VecDeque<u8>,
    cut: bool,
}

impl Tail {
    /// The tail as text (lossy UTF-8, trimmed), `…` in front when the start was cut.
    fn text(&self) -> String {
        let bytes: Vec<u8> = self.bytes.iter().copied().collect();
        // A cut may fall inside a character: drop its continuation bytes.
        let skip = if self.cut {
            bytes
                .iter()
                .take(3)
                .take_while(|b| **b & 0xC0 == 0x80)
                .count()
        } else {
            0
        };
        let text = String::from_utf8_lossy(&bytes[skip..]);
        let text = text.trim();
        if self.cut && !text.is_empty() {
            format!("…{text}")
        } else {
            text.to_owned()
        }
    }

    /// `; stderr: <tail>` for a message, or nothing when stderr was empty.
    fn suffix(&self) -> String {
        let text = self.text();
        if text.is_empty() {
            String::new()
        } else {
            format!("; stderr: {text}")
        }
    }
}

/// Reads `stream` to its end, keeping only its tail.
async fn read_tail(stream: Option<impl AsyncRead + Unpin>) -> Tail {
    let mut tail = Tail::default();
    let Some(mut stream) = stream else {
        return tail;
    };
    let mut chunk = vec![0; CHUNK_BYTES];
    loop {
        let read = match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return tail,
            Ok(read) => read,
        };
        let fresh = &chunk[read.saturating_sub(STDERR_TAIL_BYTES)..read];
        let excess = (tail.bytes.len() + fresh.len()).saturating_sub(STDERR_TAIL_BYTES);
        tail.cut |= excess > 0 || fresh.len() < read;
        tail.bytes.drain(..excess);
        tail.bytes.extend(fresh);
    }
}

/// The output a command wrote: JSON if it is JSON once trimmed, else a JSON string of
/// the text (lossy UTF-8, without its trailing line ends, as shell command substitution
/// would take it: `echo hi` is `"hi"`); `None` when there is nothing but whitespace.
fn parse_output(bytes: &[u8]) -> Option<Payload> {
    let text = String::from_utf8_lossy(bytes);
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return None;
    }
    Some(
        Payload::from_json_text(trimmed)
            .unwrap_or_else(|_| Payload::string(text.trim_end_matches(['\n', '\r']))),
    )
}

/// Reads `OUTPUT_FILE` within the limit; the error is what the command did wrong.
async fn read_output_file(path: &Path, limit: usize) -> Result<Vec<u8>, String> {
    // Looked at without following links, and only a regular file is read: a FIFO
    // would block the open for ever. (Nothing can swap it now: the group is dead.)
    let metadata = match tokio::fs::symlink_metadata(path).await {
        Ok(metadata) => metadata,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            // The watchdog fails this way too ("Output file .. not created").
            return Err("wrote no OUTPUT_FILE".to_owned());
        }
        Err(e) => return Err(format!("left an OUTPUT_FILE that cannot be read ({e})")),
    };
    if !metadata.is_file() {
        return Err("left an OUTPUT_FILE that is not a regular file".to_owned());
    }
    let too_large = || format!("wrote output larger than {limit} bytes");
    if metadata.len() > u64::try_from(limit).unwrap_or(u64::MAX) {
        return Err(too_large());
    }
    let file = tokio::fs::File::open(path)
        .await
        .map_err(|e| format!("left an OUTPUT_FILE that cannot be read ({e})"))?;
    let mut bytes = Vec::with_capacity(usize::try_from(metadata.len()).unwrap_or(0));
    file.take(u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1))
        .read_to_end(&mut bytes)
        .await
        .map_err(|e| format!("left an OUTPUT_FILE that cannot be read ({e})"))?;
    if bytes.len() > limit {
        return Err(too_large());
    }
    Ok(bytes)
}

/// A fresh directory under `scratch` (made if missing), private to the control
/// plane's user (mode 0700: other users' functions must not read an invocation), and
/// removed when dropped.
fn invocation_dir(scratch: &Path) -> Result<tempfile::TempDir, ErrorInfo> {
    std::fs::create_dir_all(scratch)
        .and_then(|()| {
            tempfile::Builder::new()
                .prefix("oneshot-")
                .permissions(std::fs::Permissions::from_mode(0o700))
                .tempdir_in(scratch)
        })
        .map_err(|e| {
            dispatch_error(format!(
                "could not make an invocation directory under {}: {e}",
                scratch.display()
            ))
        })
}

/// The names of the signals that usually end a process.
const SIGNAL_NAMES: [(Signal, &str); 15] = [
    (Signal::HUP, "SIGHUP"),
    (Signal::INT, "SIGINT"),
    (Signal::QUIT, "SIGQUIT"),
    (Signal::ILL, "SIGILL"),
    (Signal::TRAP, "SIGTRAP"),
    (Signal::ABORT, "SIGABRT"),
    (Signal::BUS, "SIGBUS"),
    (Signal::FPE, "SIGFPE"),
    (Signal::KILL, "SIGKILL"),
    (Signal::SEGV, "SIGSEGV"),
    (Signal::PIPE, "SIGPIPE"),
    (Signal::ALARM, "SIGALRM"),
    (Signal::TERM, "SIGTERM"),
    (Signal::XCPU, "SIGXCPU"),
    (Signal::XFSZ, "SIGXFSZ"),
];

fn signal_name(signal: i32) -> Option<&'static str> {
    SIGNAL_NAMES
        .iter()
        .find(|(known, _)| known.as_raw() == signal)
        .map(|(_, name)| *name)
}

fn function_error(message: String) -> ErrorInfo {
    ErrorInfo::new(ErrorCode::FunctionError, message)
}

/// The function never ran (it is not one-shot, or the control plane could not prepare
/// the invocation).
fn dispatch_error(message: String) -> ErrorInfo {
    ErrorInfo::new(ErrorCode::DispatchError, message)
}

#[cfg(test)]
mod tests;
