//! The ports the engine is written against. Production wires real implementations in
//! the binary; tests inject scripted ones.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::{
    ErrorInfo, ExecutionId, FunctionName, FunctionSpec, IdempotencyKey, Payload, Timestamp, TraceId,
};

/// One attempt of one execution, as handed to a [`Dispatch`].
#[derive(Clone, Debug)]
pub struct DispatchRequest {
    /// The execution (the same across retries).
    pub execution_id: ExecutionId,
    /// The function as registered when the attempt started.
    pub function: Arc<FunctionSpec>,
    /// 1-based attempt number (`X-Dispatch-Attempt`).
    pub attempt: u32,
    /// The invocation input.
    pub input: Payload,
    /// The invocation metadata.
    pub metadata: Arc<BTreeMap<String, String>>,
    /// Trace id passed on as `X-Trace-Id`.
    pub trace_id: TraceId,
    /// The client's idempotency key; set on the first attempt only.
    pub idempotency_key: Option<IdempotencyKey>,
    /// Base URL for `<callback>/<id>:complete` callbacks, if callbacks are possible.
    pub callback_url: Option<Arc<str>>,
}

/// A successful attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DispatchSuccess {
    /// The function's answer.
    pub output: Payload,
    /// The runtime said `X-Cold-Start: true`.
    pub cold_start: bool,
    /// The runtime's `X-Init-Duration-Ms`.
    pub init_duration_ms: Option<u64>,
}

impl DispatchSuccess {
    /// A warm success with `output`.
    pub fn warm(output: Payload) -> Self {
        Self {
            output,
            cold_start: false,
            init_duration_ms: None,
        }
    }
}

/// A failed attempt: why it failed.
pub type DispatchFailure = ErrorInfo;

/// What one attempt came to.
pub type DispatchOutcome = Result<DispatchSuccess, DispatchFailure>;

/// How an invocation reaches its function. The scheduler calls this once per attempt
/// and owns its deadline: when the function's `timeoutMs` runs out it drops the future
/// and ends the attempt as `DISPATCH_TIMEOUT`. Implementations need no timer of their
/// own, but must be cancel-safe: dropped at any await, they release what they hold and
/// leave nothing half-used behind (a connection mid-request is not reused).
#[async_trait::async_trait]
pub trait Dispatch: Send + Sync + 'static {
    /// Runs one attempt.
    async fn dispatch(&self, request: DispatchRequest) -> DispatchOutcome;

    /// Lets go of resources idle for too long (pooled connections). The scheduler's
    /// sweeper calls it periodically, because a dispatcher owns no task of its own to
    /// do it; it must not block. Nothing to do by default.
    fn sweep_idle(&self) {}
}

/// What time it is (wall clock, for records and metrics).
pub trait Clock: Send + Sync + 'static {
    /// Now.
    fn now(&self) -> Timestamp;
}

/// The real clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        let since_epoch = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        Timestamp::from_millis(u64::try_from(since_epoch.as_millis()).unwrap_or(u64::MAX))
    }
}

/// Where new execution and trace ids come from.
pub trait IdGenerator: Send + Sync + 'static {
    /// A fresh, unique execution id.
    fn execution_id(&self) -> ExecutionId;
    /// A fresh trace id for an invocation that came without one.
    fn trace_id(&self) -> TraceId;
}

/// Mints the credentials a dispatch carries so that its callback can prove it answers
/// that dispatch (api.md "Authentication (decided)"). The text goes into a path segment
/// of the callback URL, so it is URL-safe.
pub trait CallbackSigner: Send + Sync + 'static {
    /// A credential for one attempt of one execution, valid until `expires_at`.
    fn for_attempt(&self, execution: &ExecutionId, attempt: u32, expires_at: Timestamp) -> String;

    /// A credential for any execution of `function` while the registration made at
    /// `registered_at` stands (the `CALLBACK_URL` of its replicas).
    fn for_function(&self, function: &FunctionName, registered_at: Timestamp) -> String;
}
