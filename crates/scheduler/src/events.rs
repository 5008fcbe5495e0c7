//! What the scheduler reports as it works, for metrics and for tests' event logs.

use core_types::{DurationMs, ErrorInfo, ExecutionId, FunctionName};
use store::ExecutionRecord;

use crate::{CompletionSource, IgnoredBecause};

/// One thing that happened.
#[derive(Debug)]
pub enum SchedulerEvent<'a> {
    /// An execution was accepted and queued.
    Enqueued {
        /// Its function.
        function: &'a FunctionName,
        /// The execution.
        execution: &'a ExecutionId,
    },
    /// An attempt was dispatched after waiting `queue_wait`.
    Dispatched {
        /// Its function.
        function: &'a FunctionName,
        /// The execution.
        execution: &'a ExecutionId,
        /// Which attempt.
        attempt: u32,
        /// Time from enqueue to dispatch.
        queue_wait: DurationMs,
    },
    /// A failed attempt was queued again as `next_attempt`.
    Retried {
        /// Its function.
        function: &'a FunctionName,
        /// The execution.
        execution: &'a ExecutionId,
        /// The attempt that will run next.
        next_attempt: u32,
        /// Why the previous attempt failed.
        error: &'a ErrorInfo,
        /// How long the retry waits before it may be dispatched.
        backoff: DurationMs,
    },
    /// An execution reached its terminal state.
    Finished {
        /// The final record.
        record: &'a ExecutionRecord,
        /// What ended it.
        source: CompletionSource,
    },
    /// A completion arrived after the execution (or that attempt) had already ended.
    CompletionIgnored {
        /// The execution.
        execution: &'a ExecutionId,
        /// Where the completion came from.
        source: CompletionSource,
        /// Why it was ignored.
        because: IgnoredBecause,
    },
}

/// Receives [`SchedulerEvent`]s. Called inline on the hot path: keep it cheap and never
/// block.
pub trait Observer: Send + Sync + 'static {
    /// Something happened.
    fn on_event(&self, event: SchedulerEvent<'_>);
}

/// Ignores every event.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoObserver;

impl Observer for NoObserver {
    fn on_event(&self, _: SchedulerEvent<'_>) {}
}
