//! `up`: a local control plane in the foreground, for trying things out. It runs the
//! `control-plane` binary (next to this one, else on `PATH`) with its defaults and the
//! arguments after `--`, says where its data lives and which endpoint to use, echoes
//! its log, passes SIGINT, SIGTERM and SIGHUP on to it, and exits with its status. The
//! control plane is started with `CONTROL_PLANE_EXIT_WITH_PARENT` set to this process,
//! so a `kill -9` of `up` stops it too (the kernel's parent-death signal).

use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::signal::unix::{SignalKind, signal};

use crate::args::UpArgs;
use crate::contexts::DEFAULT_ENDPOINT;
use crate::error::{CliError, Result};

const BINARY: &str = "control-plane";

/// Runs `up`.
pub(crate) async fn run(args: &UpArgs) -> Result<ExitCode> {
    let binary = find_binary()?;
    let mut child = tokio::process::Command::new(&binary)
        // It stops when this process ends, also by `kill -9` (unless told otherwise).
        .env(
            "CONTROL_PLANE_EXIT_WITH_PARENT",
            std::process::id().to_string(),
        )
        .args(&args.args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| CliError::local(format!("cannot start {}: {e}", binary.display())))?;
    anstream::eprintln!("nanofaas up: {} (Ctrl-C stops it)", binary.display());
    anstream::eprintln!("data: {}", data_location(&args.args));
    let pid = child
        .id()
        .and_then(|id| i32::try_from(id).ok())
        .and_then(rustix::process::Pid::from_raw);
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| CliError::local("the control plane's output is not readable"))?;
    let mut lines = BufReader::new(stdout).lines();
    let listen = |kind: SignalKind| {
        signal(kind).map_err(|e| CliError::local(format!("cannot listen for signals: {e}")))
    };
    let mut interrupt = listen(SignalKind::interrupt())?;
    let mut terminate = listen(SignalKind::terminate())?;
    let mut hangup = listen(SignalKind::hangup())?;
    let forward = |signal: rustix::process::Signal| {
        if let Some(pid) = pid {
            let _ = rustix::process::kill_process(pid, signal);
        }
    };
    let mut open = true;
    let status = loop {
        tokio::select! {
            line = lines.next_line(), if open => match line {
                Ok(Some(line)) => echo(&line),
                Ok(None) | Err(_) => open = false,
            },
            _ = interrupt.recv() => forward(rustix::process::Signal::INT),
            _ = terminate.recv() => forward(rustix::process::Signal::TERM),
            _ = hangup.recv() => forward(rustix::process::Signal::HUP),
            status = child.wait() => break status,
        }
    };
    // What it wrote last (its stop lines).
    while open {
        match tokio::time::timeout(std::time::Duration::from_secs(1), lines.next_line()).await {
            Ok(Ok(Some(line))) => echo(&line),
            _ => open = false,
        }
    }
    let status =
        status.map_err(|e| CliError::local(format!("cannot wait for the control plane: {e}")))?;
    Ok(match status.code() {
        Some(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        // Ended by a signal.
        None => ExitCode::from(1),
    })
}

/// Prints a line of its log, and the endpoint once it says where it listens.
fn echo(line: &str) {
    anstream::println!("{line}");
    if !line.contains("control plane listening") {
        return;
    }
    let plain = strip_escapes(line);
    if let Some(addr) = plain
        .split_whitespace()
        .find_map(|token| token.strip_prefix("api_addr="))
    {
        let endpoint = format!("http://{addr}");
        if endpoint == DEFAULT_ENDPOINT {
            anstream::eprintln!("endpoint: {endpoint} (what nanofaas uses by default)");
        } else {
            anstream::eprintln!(
                "endpoint: {endpoint} (export NANOFAAS_ENDPOINT={endpoint}, or \
                 `nanofaas context add local --endpoint {endpoint}`)"
            );
        }
    }
}

fn strip_escapes(line: &str) -> String {
    let mut out = String::new();
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Where its state lives: its `--data-dir` (the argument, else
/// `CONTROL_PLANE_DATA_DIR`, else `./data`), absolute; nowhere with `--store memory`.
fn data_location(args: &[String]) -> String {
    let value = |flag: &str| {
        let prefix = format!("{flag}=");
        args.iter().enumerate().find_map(|(i, arg)| {
            if arg == flag {
                args.get(i + 1).cloned()
            } else {
                arg.strip_prefix(&prefix).map(str::to_owned)
            }
        })
    };
    let store = value("--store").or_else(|| std::env::var("CONTROL_PLANE_STORE").ok());
    if store.as_deref() == Some("memory") {
        return "kept in memory only (--store memory): nothing survives a restart".to_owned();
    }
    let dir = value("--data-dir")
        .or_else(|| std::env::var("CONTROL_PLANE_DATA_DIR").ok())
        .unwrap_or_else(|| "data".to_owned());
    let dir = PathBuf::from(dir);
    let absolute = if dir.is_absolute() {
        dir
    } else {
        std::env::current_dir().map_or(dir.clone(), |cwd| cwd.join(&dir))
    };
    format!("{} (its --data-dir)", absolute.display())
}

/// The `control-plane` executable next to this one, else the first on `PATH`.
fn find_binary() -> Result<PathBuf> {
    let beside = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join(BINARY)));
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .map(|dir| dir.join(BINARY));
    beside
        .into_iter()
        .chain(on_path)
        .find(|candidate| is_executable(candidate))
        .ok_or_else(|| {
            CliError::local(
                "cannot find the control-plane binary next to nanofaas or on PATH; build it \
                 with `cargo build --release -p control-plane` (it lands beside nanofaas in \
                 target/release), or put it on PATH",
            )
        })
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_data_location_follows_the_arguments() {
        let args = |a: &[&str]| a.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        assert!(data_location(&args(&["--data-dir", "/srv/faas"])).starts_with("/srv/faas "));
        assert!(data_location(&args(&["--data-dir=/x"])).starts_with("/x "));
        assert!(data_location(&args(&["--store", "memory"])).contains("memory"));
    }

    #[test]
    fn escapes_are_stripped() {
        assert_eq!(
            strip_escapes("\u{1b}[3mapi_addr\u{1b}[0m\u{1b}[2m=\u{1b}[0m127.0.0.1:1"),
            "api_addr=127.0.0.1:1"
        );
    }
}
