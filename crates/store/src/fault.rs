//! What every port shares: a fault of the medium, and how long a write's caller waits.

/// The store could not do what was asked (a disk that is full, gone or read-only, a
/// database that went away). Nothing was changed by the operation that reports it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the store is unavailable: {0}")]
pub struct StoreUnavailable(pub String);

impl StoreUnavailable {
    /// A fault described by `reason`.
    pub fn new(reason: impl std::fmt::Display) -> Self {
        Self(reason.to_string())
    }
}

/// How long the caller of a write waits for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// Until the write is durable (committed and synced): what the caller answers
    /// next is a promise that survives a crash. A failure is reported.
    Committed,
    /// Only until the write is handed over: it is made durable soon after, in the
    /// order it was handed over relative to every later write, but a crash may lose
    /// it and its failure is only logged. For work whose caller's connection would
    /// break with the process anyway (a sync invocation without an idempotency key).
    Behind,
}
