//! What can go wrong, and the exit status each kind of failure gives (the table of
//! `nanofaas --help` and the README).

use std::fmt;
use std::process::ExitCode;

use core_types::{ErrorBody, ExecutionState};

/// The exit statuses, one per kind of outcome, so a script can tell them apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Exit {
    /// Done; an invocation ended in `success`.
    Success = 0,
    /// Something on this side: a bad input or spec file, the config file.
    Local = 1,
    /// A usage error: an unknown flag, a missing or malformed argument (clap's).
    Usage = 2,
    /// The execution ended in `error`.
    FunctionError = 3,
    /// The execution ended in `timeout`.
    FunctionTimeout = 4,
    /// The control plane could not be reached, or did not answer in time.
    Transport = 5,
    /// The control plane refused the request (4xx).
    Refused = 6,
    /// The control plane failed (5xx).
    ServerFault = 7,
    /// Interrupted (Ctrl-C) before the end it was waiting for.
    Interrupted = 130,
}

impl Exit {
    /// The status of an execution in `state` at the end of a wait: one still queued or
    /// running when the wait ended counts as a timeout.
    pub(crate) fn of_state(state: ExecutionState) -> Self {
        match state {
            ExecutionState::Success => Self::Success,
            ExecutionState::Error => Self::FunctionError,
            ExecutionState::Timeout | ExecutionState::Queued | ExecutionState::Running => {
                Self::FunctionTimeout
            }
        }
    }
}

impl From<Exit> for ExitCode {
    fn from(exit: Exit) -> Self {
        ExitCode::from(exit as u8)
    }
}

/// The exit-status table as `nanofaas --help` shows it.
pub(crate) const EXIT_STATUS_HELP: &str = "\
Exit status:
  0    done (an invocation ended in `success`)
  1    a problem on this side (a bad input or spec file, the config file)
  2    usage error (unknown flag, missing or malformed argument)
  3    the execution ended in `error`
  4    the execution ended in `timeout`
  5    the control plane could not be reached or did not answer in time
  6    the control plane refused the request (4xx: not found, invalid, unauthenticated,
       forbidden, conflict, rate limited)
  7    the control plane failed (5xx)
  130  interrupted (Ctrl-C) while waiting";

/// A failure, with what to tell the user.
#[derive(Debug)]
pub(crate) enum CliError {
    /// A problem on this side, said as a sentence.
    Local(String),
    /// A bad argument value found after parsing (exit status 2, like clap's).
    Usage(String),
    /// The control plane could not be reached.
    Transport(String),
    /// The control plane answered with an error status.
    Server {
        /// The HTTP status.
        status: u16,
        /// Its JSON error, when it sent one.
        body: Option<ErrorBody>,
        /// The raw text otherwise.
        text: String,
        /// A hint of ours, for statuses whose cause is usually known.
        hint: Option<String>,
    },
    /// Ctrl-C while waiting.
    Interrupted(String),
}

/// Shorthand for results of this crate.
pub(crate) type Result<T, E = CliError> = std::result::Result<T, E>;

impl CliError {
    /// A problem on this side.
    pub(crate) fn local(message: impl Into<String>) -> Self {
        Self::Local(message.into())
    }

    /// A bad argument.
    pub(crate) fn usage(message: impl Into<String>) -> Self {
        Self::Usage(message.into())
    }

    /// The exit status this failure gives.
    pub(crate) fn exit(&self) -> Exit {
        match self {
            Self::Local(_) => Exit::Local,
            Self::Usage(_) => Exit::Usage,
            Self::Transport(_) => Exit::Transport,
            Self::Server { status, .. } if *status >= 500 => Exit::ServerFault,
            Self::Server { .. } => Exit::Refused,
            Self::Interrupted(_) => Exit::Interrupted,
        }
    }

    /// The server's error code, if it sent one.
    pub(crate) fn code(&self) -> Option<&str> {
        match self {
            Self::Server {
                body: Some(body), ..
            } => Some(&body.error),
            _ => None,
        }
    }

    /// Adds a hint to a server error (kept if it has one already).
    pub(crate) fn with_hint(mut self, extra: impl Into<String>) -> Self {
        if let Self::Server { hint, .. } = &mut self
            && hint.is_none()
        {
            *hint = Some(extra.into());
        }
        self
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Local(message)
            | Self::Usage(message)
            | Self::Transport(message)
            | Self::Interrupted(message) => f.write_str(message),
            Self::Server {
                status,
                body,
                text,
                hint,
            } => {
                match body {
                    Some(body) => {
                        let message = body.message.trim_end_matches('.');
                        write!(f, "{message} ({})", body.error)?;
                        for detail in body.details.iter().flatten() {
                            let line = format!("{}: {}", detail.field, detail.message);
                            // Some messages already list their details.
                            if !message.contains(&line) {
                                write!(f, "\n  - {line}")?;
                            }
                        }
                    }
                    None => {
                        write!(f, "the control plane answered {status}")?;
                        let text = text.trim();
                        if !text.is_empty() {
                            let cut: String = text.chars().take(200).collect();
                            write!(f, ": {cut}")?;
                        }
                    }
                }
                if let Some(hint) = hint {
                    write!(f, "\n  hint: {hint}")?;
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use core_types::{ErrorCode, ErrorDetail};

    use super::*;

    fn server(status: u16, body: Option<ErrorBody>) -> CliError {
        CliError::Server {
            status,
            body,
            text: String::new(),
            hint: None,
        }
    }

    #[test]
    fn a_server_error_reads_as_a_sentence_with_its_code() {
        let error = server(
            404,
            Some(ErrorBody::new(
                ErrorCode::NotFound,
                "function 'x' not found",
            )),
        );
        assert_eq!(error.to_string(), "function 'x' not found (NOT_FOUND)");
        assert_eq!(error.exit(), Exit::Refused);
        let mut body = ErrorBody::new(ErrorCode::ValidationError, "invalid function spec.");
        body.details = Some(vec![ErrorDetail::new("image", "is required")]);
        assert_eq!(
            server(400, Some(body)).with_hint("h").to_string(),
            "invalid function spec (VALIDATION_ERROR)\n  - image: is required\n  hint: h"
        );
        assert_eq!(server(503, None).exit(), Exit::ServerFault);
    }

    #[test]
    fn each_kind_has_its_own_status() {
        let statuses = [
            CliError::local("x").exit(),
            CliError::usage("x").exit(),
            CliError::Transport("x".into()).exit(),
            server(400, None).exit(),
            server(500, None).exit(),
            CliError::Interrupted("x".into()).exit(),
        ];
        for (i, a) in statuses.iter().enumerate() {
            for b in &statuses[i + 1..] {
                assert_ne!(a, b);
            }
        }
    }
}
