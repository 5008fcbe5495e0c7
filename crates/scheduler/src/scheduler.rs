//! The scheduler: submission, `tick_once`, the completion path, waiters, the background
//! loop and shutdown.

use std::collections::BTreeMap;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use core_types::{
    CallbackSigner, Clock, DeploymentProvider, Dispatch, DispatchRequest, DurationMs, ErrorCode,
    ErrorInfo, ExecutionId, ExecutionMode, ExecutionState, FunctionName, FunctionSpec, IdGenerator,
    IdempotencyKey, InvocationRequest, Payload, ProvisionError, Provisioned, SetReplicasError,
    SystemClock, Timestamp, TraceId,
};
use dashmap::DashMap;
use futures::FutureExt;
use queue::{FunctionQueue, PushError, QueuedExecution, Readiness, ReadyFunctions, Slot};
use store::ExecutionIdHasher;
use store::{
    AlreadyRegistered, ChangeKind, ClaimOutcome, ClaimToken, Durability, ExecutionRecord,
    ExecutionStore, ExecutionWork, Fingerprint, FunctionRegistry, IdempotencyStore,
    MemoryExecutionStore, MemoryFunctionRegistry, MemoryIdempotencyStore, RecordChange,
    RegisteredFunction, RegistryError, StoreUnavailable, StoredExecution,
};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::{
    Completion, CompletionOutcome, CompletionSource, IgnoredBecause, NoObserver, Observer,
    RetryBackoff, SchedulerEvent, UuidV7Ids,
};

mod attempt;
mod background;
mod complete;
mod errors;
mod functions;
mod replicas;
mod restore;
mod submit;
mod waiting;

pub use replicas::{AutoscalingConfig, ReplicaCounts};
pub use restore::Restored;

pub use waiting::Waiter;

pub use errors::{
    CompleteError, LogsError, RegisterError, RemoveError, ReplicasError, SubmitError, TickError,
    WaitError,
};

/// Everything the scheduler is written against, injected.
#[derive(Clone)]
pub struct SchedulerParts {
    /// How attempts reach functions.
    pub dispatch: Arc<dyn Dispatch>,
    /// Wall clock for records.
    pub clock: Arc<dyn Clock>,
    /// Execution and trace ids.
    pub ids: Arc<dyn IdGenerator>,
    /// Execution records.
    pub executions: Arc<dyn ExecutionStore>,
    /// Idempotency claims.
    pub idempotency: Arc<dyn IdempotencyStore>,
    /// Registered functions.
    pub registry: Arc<dyn FunctionRegistry>,
    /// Receives every [`SchedulerEvent`].
    pub observer: Arc<dyn Observer>,
    /// Runs the replicas of `DEPLOYMENT` functions; `None` when nothing can (then such
    /// a function needs its own `endpointUrl` and runs as `POOL`).
    pub deployments: Option<Arc<dyn DeploymentProvider>>,
}

impl std::fmt::Debug for SchedulerParts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SchedulerParts").finish_non_exhaustive()
    }
}

impl SchedulerParts {
    /// In-memory stores with the contract's 5-minute TTLs and no memory budget, the
    /// system clock and UUID v7 ids.
    pub fn in_memory(dispatch: Arc<dyn Dispatch>) -> Self {
        Self::in_memory_with(dispatch, MemoryLimits::default())
    }

    /// In-memory stores within `limits`, the system clock and UUID v7 ids.
    pub fn in_memory_with(dispatch: Arc<dyn Dispatch>, limits: MemoryLimits) -> Self {
        Self {
            dispatch,
            clock: Arc::new(SystemClock),
            ids: Arc::new(UuidV7Ids),
            executions: Arc::new(MemoryExecutionStore::with_budget(
                limits.execution_ttl,
                limits.execution_memory_budget,
            )),
            idempotency: Arc::new(MemoryIdempotencyStore::with_budget(
                limits.idempotency_ttl,
                limits.idempotency_memory_budget,
            )),
            registry: Arc::new(MemoryFunctionRegistry::new()),
            observer: Arc::new(NoObserver),
            deployments: None,
        }
    }
}

/// How long the in-memory stores remember, and how much.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryLimits {
    /// How long a finished execution stays readable.
    pub execution_ttl: DurationMs,
    /// How long an idempotency key is remembered.
    pub idempotency_ttl: DurationMs,
    /// Estimated bytes finished records may keep; past it the oldest are evicted
    /// before their TTL.
    pub execution_memory_budget: usize,
    /// Estimated bytes remembered idempotency keys may keep; past it the oldest are
    /// forgotten before their TTL.
    pub idempotency_memory_budget: usize,
}

impl Default for MemoryLimits {
    /// The contract's 5-minute TTLs, no budget.
    fn default() -> Self {
        let five_minutes = DurationMs(5 * 60 * 1000);
        Self {
            execution_ttl: five_minutes,
            idempotency_ttl: five_minutes,
            execution_memory_budget: usize::MAX,
            idempotency_memory_budget: usize::MAX,
        }
    }
}

/// Tunables.
#[derive(Clone, Debug)]
pub struct SchedulerConfig {
    /// Base URL runtimes call back (`<base>/<id>:complete`); `None` sends no
    /// `X-Callback-Url`.
    pub callback_base_url: Option<Arc<str>>,
    /// How often finished records and idempotency keys past their TTL are evicted.
    pub sweep_interval: Duration,
    /// Whether a caller waiting for a result moves the function's queue itself while
    /// no background loop runs (manual mode), so a sync invoke still completes. Turn it
    /// off when something else drives every dispatch step by step (a test that scripts
    /// the order of dispatches with `tick_once`).
    pub waiters_drive_when_manual: bool,
    /// How long a failed attempt's retry waits before it may be dispatched.
    pub retry_backoff: RetryBackoff,
    /// Bytes the inputs (and metadata) of unfinished executions may hold in all;
    /// past it submissions are refused ([`SubmitError::InputsFull`]).
    pub queued_input_budget: usize,
    /// How the replicas of `INTERNAL`-scaled functions are autoscaled.
    pub autoscaling: AutoscalingConfig,
    /// With authentication on: who signs the credential each callback URL carries
    /// (`<base>/<credential>`, so a runtime posting to `<X-Callback-Url>/<id>:complete`
    /// sends it back). `None`: the plain base.
    pub callback_signer: Option<CallbackSigning>,
}

/// How long after an attempt's `timeoutMs` its callback credential still verifies: a
/// callback that lands just after the timeout is then a late callback, ignored as such,
/// rather than a 401.
pub const CALLBACK_CREDENTIAL_SLACK: Duration = Duration::from_secs(30);

/// The signer of callback credentials, shared by every dispatch.
#[derive(Clone)]
pub struct CallbackSigning(pub Arc<dyn CallbackSigner>);

impl std::fmt::Debug for CallbackSigning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CallbackSigning(..)")
    }
}

impl SchedulerConfig {
    /// The callback URL of one attempt: the base, followed by the attempt's credential
    /// (valid for its timeout and [`CALLBACK_CREDENTIAL_SLACK`]) when callbacks are
    /// signed.
    pub(crate) fn attempt_callback_url(
        &self,
        execution: &ExecutionId,
        attempt: u32,
        function: &FunctionSpec,
        now: Timestamp,
    ) -> Option<Arc<str>> {
        let base = self.callback_base_url.as_ref()?;
        let Some(CallbackSigning(signer)) = &self.callback_signer else {
            return Some(Arc::clone(base));
        };
        let slack = u64::try_from(CALLBACK_CREDENTIAL_SLACK.as_millis()).unwrap_or(u64::MAX);
        let expires_at = now.plus(DurationMs(function.timeout_ms.saturating_add(slack)));
        Some(
            format!(
                "{base}/{}",
                signer.for_attempt(execution, attempt, expires_at)
            )
            .into(),
        )
    }

    /// The `CALLBACK_URL` of a function's replicas: the base, followed by a credential
    /// for the function's registration made at `registered_at` when callbacks are
    /// signed.
    pub(crate) fn function_callback_url(
        &self,
        function: &FunctionName,
        registered_at: Timestamp,
    ) -> Option<Arc<str>> {
        let base = self.callback_base_url.as_ref()?;
        let Some(CallbackSigning(signer)) = &self.callback_signer else {
            return Some(Arc::clone(base));
        };
        Some(format!("{base}/{}", signer.for_function(function, registered_at)).into())
    }
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        Self {
            callback_base_url: None,
            sweep_interval: Duration::from_secs(1),
            waiters_drive_when_manual: true,
            retry_backoff: RetryBackoff::default(),
            queued_input_budget: usize::MAX,
            autoscaling: AutoscalingConfig::default(),
            callback_signer: None,
        }
    }
}

/// How a submission is made.
#[derive(Clone, Debug, Default)]
pub struct SubmitOptions {
    /// The client's `Idempotency-Key`.
    pub idempotency_key: Option<IdempotencyKey>,
    /// The client's `X-Trace-Id`; one is generated if absent.
    pub trace_id: Option<TraceId>,
    /// Subscribe to the execution's final record ([`Submitted::waiter`]), for a caller
    /// that will wait for it.
    pub wait: bool,
}

/// An accepted submission.
#[derive(Debug)]
pub struct Submitted {
    /// The execution (new, or the one an idempotency key already named).
    pub execution_id: ExecutionId,
    /// `true` when the idempotency key named an existing execution.
    pub replayed: bool,
    /// For a replay, the execution's record when the replay was accepted (`None` only
    /// if it ended and was evicted at that very moment; `waiter` then has it).
    pub record: Option<ExecutionRecord>,
    /// With [`SubmitOptions::wait`], the subscription to the final record.
    pub waiter: Option<Waiter>,
}

/// A function's queue as seen from outside.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueueSnapshot {
    /// Queued execution ids, head first.
    pub queued: Vec<ExecutionId>,
    /// Taken concurrency slots.
    pub in_flight: usize,
    /// The function's concurrency.
    pub concurrency: usize,
    /// The queue size.
    pub capacity: usize,
}

/// A function's queue by its counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueueLoad {
    /// Executions queued (in line or waiting for a retry's due time).
    pub depth: usize,
    /// Taken concurrency slots.
    pub in_flight: usize,
}

/// A registered function: the scheduler's view of it, which serves every read (the
/// registry is only written, and read in full at start), and its queue.
#[derive(Debug)]
struct FunctionRuntime {
    registered: RegisteredFunction,
    spec: Arc<FunctionSpec>,
    queue: Arc<FunctionQueue>,
    /// Its replicas, when a provider starts and stops them for it.
    replicas: Option<Arc<replicas::Replicas>>,
    /// Whether a provider runs its command once per invocation (`STDIO`, `FILE`).
    per_invocation: bool,
}

/// An execution that has not finished yet. The map entry's lock is the execution's
/// lock: every decision about it (start, retry, finish) is taken under it, briefly,
/// without awaiting; the store writes that follow carry the decision's `version`.
struct Live {
    function: Arc<FunctionRuntime>,
    attempt: u32,
    version: u64,
    phase: Phase,
    /// Its record with every decision taken so far applied: what its waiters receive
    /// when it ends (a write behind may not have reached the store yet).
    record: ExecutionRecord,
    /// Which of its steps are written to the store.
    recording: Recording,
    input: Payload,
    metadata: Arc<BTreeMap<String, String>>,
    trace_id: TraceId,
    idempotency_key: Option<IdempotencyKey>,
    waiters: Vec<oneshot::Sender<ExecutionRecord>>,
    /// Its input's share of the queued-input budget, given back when it ends.
    _input: submit::InputCharge,
}

/// Which steps of an execution the store sees.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Recording {
    /// Every step, each committed before what depends on it (the record before the
    /// 202 or the claim, `running` before the dispatch, a retry before its attempt):
    /// an enqueued or keyed execution, which a restart must be able to take up.
    EachStep,
    /// Only its end, as one committed insert of the final record: a sync invocation
    /// without a key, whose caller's connection breaks with the process anyway (it is
    /// read from the scheduler while it runs). One write instead of three or more.
    AtTheEnd,
}

enum Phase {
    /// In its function's queue: in line, waiting out a retry's backoff, or (a retry
    /// whose `queued` write is in progress) held there.
    Queued,
    Running(RunningAttempt),
    /// A completion won; its record write is in progress. Later completions are
    /// ignored, new waiters still join.
    Finishing,
}

/// What an attempt holds while it runs. Dropping it frees the slot and tells the
/// attempt's task (through `_finished`) that its outcome is settled.
struct RunningAttempt {
    _slot: Slot,
    _finished: oneshot::Sender<()>,
}

/// What a completion does, decided under the execution's lock; carried out after it.
enum Decision {
    Unknown,
    Ignore(IgnoredBecause),
    Retry {
        function: Arc<FunctionRuntime>,
        /// `None` when only the end is recorded.
        change: Option<RecordChange>,
        next_attempt: u32,
        error: ErrorInfo,
        running: RunningAttempt,
    },
    Finish {
        write: complete::Write,
        /// The final record, as the waiters receive it.
        record: ExecutionRecord,
        running: Option<RunningAttempt>,
    },
}

struct Inner {
    parts: SchedulerParts,
    config: SchedulerConfig,
    functions: DashMap<FunctionName, Arc<FunctionRuntime>>,
    /// Names whose registration is in progress (provisioning can take a while).
    registering: dashmap::DashSet<FunctionName>,
    live: DashMap<ExecutionId, Live, ExecutionIdHasher>,
    readiness: Readiness,
    ready: std::sync::Mutex<Option<ReadyFunctions>>,
    /// Set once the background loop runs; until then sync waiters drive their queue.
    background: AtomicBool,
    tasks: TaskTracker,
    /// The deployment provider's supervision, awaited at shutdown after the provider
    /// stopped its replicas.
    provider_tasks: Arc<replicas::ProviderTasks>,
    /// Wakes the autoscaler before its next turn (work for a function at zero).
    scale_now: tokio::sync::Notify,
    stopping: CancellationToken,
    /// Cancelled when shutdown's grace is over: writes the store keeps refusing are
    /// given up (what was last committed is what a restart recovers).
    gave_up: CancellationToken,
    ignored_completions: AtomicU64,
    /// When retries waiting out their backoff come due (background mode only).
    retry_timer: background::RetryTimer,
    /// Bytes of input held by unfinished executions (see `InputCharge`).
    queued_input_bytes: Arc<AtomicUsize>,
}

/// The scheduler. Cheap to clone; clones share everything.
#[derive(Clone)]
pub struct Scheduler {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Scheduler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scheduler")
            .field("functions", &self.inner.functions.len())
            .field("live_executions", &self.inner.live.len())
            .finish_non_exhaustive()
    }
}

impl Scheduler {
    /// A scheduler over `parts`. Nothing runs in the background until
    /// [`start_background`](Self::start_background) or
    /// [`start_sweeper`](Self::start_sweeper) is called; until then queued work moves
    /// only through [`tick_once`](Self::tick_once).
    pub fn new(parts: SchedulerParts, config: SchedulerConfig) -> Self {
        let (readiness, ready) = Readiness::channel();
        Self {
            inner: Arc::new(Inner {
                parts,
                config,
                functions: DashMap::new(),
                registering: dashmap::DashSet::new(),
                live: DashMap::default(),
                readiness,
                ready: std::sync::Mutex::new(Some(ready)),
                background: AtomicBool::new(false),
                tasks: TaskTracker::new(),
                provider_tasks: Arc::new(replicas::ProviderTasks {
                    tracker: TaskTracker::new(),
                }),
                scale_now: tokio::sync::Notify::new(),
                stopping: CancellationToken::new(),
                gave_up: CancellationToken::new(),
                ignored_completions: AtomicU64::new(0),
                retry_timer: background::RetryTimer::default(),
                queued_input_bytes: Arc::default(),
            }),
        }
    }

    /// An execution's record: as the store has it (what survives a crash), except for a
    /// live execution recorded only at its end, which the scheduler serves until its
    /// one write has landed (it is removed from `live` only after that, so one of the
    /// two lookups finds it).
    pub async fn execution(
        &self,
        id: &ExecutionId,
    ) -> Result<Option<ExecutionRecord>, StoreUnavailable> {
        let recorded_at_the_end = |live: &Live| live.recording == Recording::AtTheEnd;
        if let Some(live) = self.inner.live.get(id)
            && recorded_at_the_end(&live)
        {
            return Ok(Some(live.record.clone()));
        }
        self.inner.parts.executions.get(id).await
    }

    /// Now, on the scheduler's clock.
    pub fn now(&self) -> Timestamp {
        self.inner.parts.clock.now()
    }

    /// What the execution store holds (records, finished bytes, budget evictions).
    pub fn store_stats(&self) -> store::StoreStats {
        self.inner.parts.executions.stats()
    }

    /// What the idempotency store holds (keys, bytes, budget evictions).
    pub fn idempotency_stats(&self) -> store::ClaimStats {
        self.inner.parts.idempotency.stats()
    }

    /// Bytes of input the unfinished executions hold (see
    /// [`SchedulerConfig::queued_input_budget`]).
    pub fn queued_input_bytes(&self) -> usize {
        self.inner.queued_input_bytes.load(Ordering::Acquire)
    }

    /// How many completions lost to an earlier one (or named an older attempt).
    pub fn ignored_completions(&self) -> u64 {
        self.inner.ignored_completions.load(Ordering::Relaxed)
    }
}

/// What a live (unfinished) execution looks like from outside, for tests that check
/// the scheduler's state against its records ([`Scheduler::live_executions`]).
#[cfg(feature = "testing")]
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LiveExecution {
    /// The execution.
    pub id: ExecutionId,
    /// Its function.
    pub function: FunctionName,
    /// Which queue it belongs to (the same name registered again is another queue).
    pub queue: usize,
    /// Slots taken in that queue.
    pub queue_slots_taken: usize,
    /// Its current attempt.
    pub attempt: u32,
    /// Where it is.
    pub phase: LivePhase,
    /// Subscriptions to its end.
    pub waiters: usize,
}

/// [`LiveExecution::phase`].
#[cfg(feature = "testing")]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LivePhase {
    /// In its queue.
    Queued,
    /// An attempt holds a slot.
    Running,
    /// A completion won and is writing the record.
    Finishing,
}

#[cfg(feature = "testing")]
impl Scheduler {
    /// Every unfinished execution, for tests (copies the whole live map).
    pub fn live_executions(&self) -> Vec<LiveExecution> {
        self.inner
            .live
            .iter()
            .map(|entry| {
                let live = entry.value();
                LiveExecution {
                    id: entry.key().clone(),
                    function: live.function.spec.name.clone(),
                    queue: Arc::as_ptr(&live.function.queue) as usize,
                    queue_slots_taken: live.function.queue.in_flight(),
                    attempt: live.attempt,
                    phase: match live.phase {
                        Phase::Queued => LivePhase::Queued,
                        Phase::Running(_) => LivePhase::Running,
                        Phase::Finishing => LivePhase::Finishing,
                    },
                    waiters: live.waiters.len(),
                }
            })
            .collect()
    }

    /// Which queue a registered function has now, comparable with
    /// [`LiveExecution::queue`].
    pub fn queue_id(&self, function: &str) -> Option<usize> {
        let runtime = self.inner.functions.get(function)?;
        Some(Arc::as_ptr(&runtime.queue) as usize)
    }
}
