//! Execution states and the only transitions between them.

use std::borrow::Cow;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::ErrorCode;

/// Where an execution is in its life. Lowercase on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum ExecutionState {
    /// Waiting in its function's queue (first attempt or a retry).
    Queued,
    /// Dispatched; an attempt is in flight.
    Running,
    /// Finished with an output.
    Success,
    /// Finished with an error.
    Error,
    /// Finished because time ran out.
    Timeout,
}

/// Every allowed `(from, to)` pair. A retry is `Running -> Queued`; a queued execution
/// can end without running when it is completed by a callback, its function is removed,
/// its sync caller times out, or the control plane shuts down.
pub const ALLOWED_TRANSITIONS: &[(ExecutionState, ExecutionState)] = {
    use ExecutionState::*;
    &[
        (Queued, Running),
        (Queued, Success),
        (Queued, Error),
        (Queued, Timeout),
        (Running, Queued),
        (Running, Success),
        (Running, Error),
        (Running, Timeout),
    ]
};

/// A transition the table does not allow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("execution cannot go from {from} to {to}")]
pub struct InvalidTransition {
    /// The state it was in.
    pub from: ExecutionState,
    /// The state that was asked for.
    pub to: ExecutionState,
}

impl ExecutionState {
    /// `success`, `error` and `timeout` never change once reached.
    pub const fn is_terminal(self) -> bool {
        matches!(self, Self::Success | Self::Error | Self::Timeout)
    }

    /// Checks `self -> to` against [`ALLOWED_TRANSITIONS`].
    pub fn check_transition(self, to: ExecutionState) -> Result<(), InvalidTransition> {
        if ALLOWED_TRANSITIONS.contains(&(self, to)) {
            Ok(())
        } else {
            Err(InvalidTransition { from: self, to })
        }
    }

    /// The lowercase wire name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Success => "success",
            Self::Error => "error",
            Self::Timeout => "timeout",
        }
    }
}

impl fmt::Display for ExecutionState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The `error` object of an execution: `{"code", "message"}`. Runtimes may report codes
/// of their own, so the code is text rather than an [`ErrorCode`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorInfo {
    /// Machine-readable code.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub code: Cow<'static, str>,
    /// Human-readable explanation.
    #[serde(default)]
    pub message: String,
}

impl ErrorInfo {
    /// An error with one of the control plane's own codes.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code: Cow::Borrowed(code.as_str()),
            message: message.into(),
        }
    }

    /// Whether this error carries `code`.
    pub fn has_code(&self, code: ErrorCode) -> bool {
        self.code == code.as_str()
    }
}

#[cfg(test)]
mod tests {
    use super::ExecutionState::*;
    use super::*;

    const ALL: [ExecutionState; 5] = [Queued, Running, Success, Error, Timeout];

    #[test]
    fn terminal_states_never_move() {
        for from in ALL.into_iter().filter(|s| s.is_terminal()) {
            for to in ALL {
                assert_eq!(
                    from.check_transition(to),
                    Err(InvalidTransition { from, to })
                );
            }
        }
    }

    #[test]
    fn the_table_is_exactly_the_lifecycle() {
        let allowed: Vec<_> = ALL
            .iter()
            .flat_map(|&from| ALL.iter().map(move |&to| (from, to)))
            .filter(|(from, to)| from.check_transition(*to).is_ok())
            .collect();
        assert_eq!(allowed, ALLOWED_TRANSITIONS);
        assert!(Queued.check_transition(Queued).is_err());
        assert!(Running.check_transition(Running).is_err());
    }

    #[test]
    fn states_are_lowercase_on_the_wire() {
        assert_eq!(serde_json::to_string(&Timeout).unwrap(), "\"timeout\"");
        assert_eq!(
            serde_json::from_str::<ExecutionState>("\"queued\"").unwrap(),
            Queued
        );
    }
}
