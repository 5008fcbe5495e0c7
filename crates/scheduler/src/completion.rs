//! The vocabulary of the one completion path.

use std::fmt;

use core_types::{DispatchSuccess, ErrorInfo, ExecutionState};

/// How an attempt (or a whole execution) ended, as reported by any source.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Completion {
    /// It produced an output.
    Success(DispatchSuccess),
    /// It failed (`Error`) or ran out of time (`Timeout`).
    Failure {
        /// `Error` or `Timeout`.
        state: ExecutionState,
        /// Why.
        error: ErrorInfo,
    },
}

impl Completion {
    /// A failure in state `error`.
    pub fn error(error: ErrorInfo) -> Self {
        Self::Failure {
            state: ExecutionState::Error,
            error,
        }
    }
}

/// Who reported a completion.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CompletionSource {
    /// The dispatch of an attempt returned (answer, error or dispatch timeout).
    Dispatch,
    /// The dispatcher panicked; the execution ends without a retry.
    DispatchPanic,
    /// The runtime called `:complete`.
    Callback,
    /// The sync caller's wait ran out.
    SyncTimeout,
    /// An admitted sync invocation stayed queued too long (the sync queue's maximum
    /// wait). Applies only to a still-queued execution: one already dispatched keeps
    /// its attempt.
    QueueTimeout,
    /// The function was removed.
    FunctionRemoved,
    /// The control plane is shutting down.
    Shutdown,
}

impl CompletionSource {
    /// Whether a failure from this source may be retried: only an attempt's own result
    /// (from its dispatch or its runtime's callback) is.
    pub(crate) const fn may_retry(self) -> bool {
        matches!(self, Self::Dispatch | Self::Callback)
    }

    /// Short lowercase name, for logs and event dumps.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Dispatch => "dispatch",
            Self::DispatchPanic => "dispatch_panic",
            Self::Callback => "callback",
            Self::SyncTimeout => "sync_timeout",
            Self::QueueTimeout => "queue_timeout",
            Self::FunctionRemoved => "function_removed",
            Self::Shutdown => "shutdown",
        }
    }
}

impl fmt::Display for CompletionSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a completion changed nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum IgnoredBecause {
    /// The execution had already reached a terminal state (or was reaching it).
    AlreadyFinished,
    /// A queue timeout for an execution no longer queued (dispatched meanwhile).
    NotQueued,
    /// It named an attempt other than the current one.
    StaleAttempt {
        /// The attempt the completion named.
        reported: u32,
        /// The execution's current attempt.
        current: u32,
    },
}

impl fmt::Display for IgnoredBecause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::AlreadyFinished => f.write_str("already finished"),
            Self::NotQueued => f.write_str("no longer queued"),
            Self::StaleAttempt { reported, current } => {
                write!(f, "attempt {reported} is stale (current {current})")
            }
        }
    }
}

/// What a completion did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CompletionOutcome {
    /// It won: the execution is now in this state (terminal, or `Queued` for a retry).
    Applied(ExecutionState),
    /// It lost to an earlier completion.
    Ignored(IgnoredBecause),
}
