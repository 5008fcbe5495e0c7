//! The scheduler: submission, `tick_once`, the completion path, waiters, the background
//! loop and shutdown.

use std::collections::BTreeMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use core_types::{
    Clock, DeploymentProvider, Dispatch, DispatchRequest, DurationMs, ErrorCode, ErrorInfo,
    ExecutionId, ExecutionMode, ExecutionState, FunctionName, FunctionSpec, IdGenerator,
    IdempotencyKey, InvocationRequest, Payload, ProvisionError, SetReplicasError, SystemClock,
    Timestamp, TraceId,
};
use dashmap::DashMap;
use futures::FutureExt;
use queue::{FunctionQueue, PushError, QueuedExecution, Readiness, ReadyFunctions, Slot};
use store::ExecutionIdHasher;
use store::{
    AlreadyRegistered, ChangeKind, ClaimOutcome, ClaimToken, ExecutionRecord, ExecutionStore,
    Fingerprint, FunctionRegistry, IdempotencyStore, MemoryExecutionStore, MemoryFunctionRegistry,
    MemoryIdempotencyStore, RecordChange, RegisteredFunction,
};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::{
    Completion, CompletionOutcome, CompletionSource, IgnoredBecause, NoObserver, Observer,
    SchedulerEvent, UuidV7Ids,
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
            idempotency: Arc::new(MemoryIdempotencyStore::new(limits.idempotency_ttl)),
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
}

impl Default for MemoryLimits {
    /// The contract's 5-minute TTLs, no budget.
    fn default() -> Self {
        let five_minutes = DurationMs(5 * 60 * 1000);
        Self {
            execution_ttl: five_minutes,
            idempotency_ttl: five_minutes,
            execution_memory_budget: usize::MAX,
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
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        Self {
            callback_base_url: None,
            sweep_interval: Duration::from_secs(1),
            waiters_drive_when_manual: true,
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
}

/// An accepted submission.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Submitted {
    /// The execution (new, or the one an idempotency key already named).
    pub execution_id: ExecutionId,
    /// `true` when the idempotency key named an existing execution.
    pub replayed: bool,
}

/// Why a submission was refused. A refused submission leaves no record and no claim.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubmitError {
    /// No such function.
    #[error("function {0} is not registered")]
    UnknownFunction(FunctionName),
    /// The function's queue is full.
    #[error("the queue of {function} is full ({capacity} queued)")]
    QueueFull {
        /// The function.
        function: FunctionName,
        /// Its queue size.
        capacity: usize,
    },
    /// The idempotency key was used with a different request.
    #[error("idempotency key {0} was used with a different request")]
    IdempotencyKeyReused(IdempotencyKey),
    /// The control plane is shutting down or the function is being removed.
    #[error("not accepting invocations of {0}: shutting down or removed")]
    NotAccepting(FunctionName),
    /// The execution store refused the record.
    #[error("the execution store refused the record: {0}")]
    Store(String),
}

/// Why a function could not be registered. A refused registration leaves nothing
/// registered and nothing provisioned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegisterError {
    /// The name is taken (or being registered right now).
    #[error(transparent)]
    AlreadyRegistered(#[from] AlreadyRegistered),
    /// A `DEPLOYMENT` function without `endpointUrl`, and no provider can run it.
    #[error(
        "function {0} asks for DEPLOYMENT, but no deployment provider can run it and it has no endpointUrl"
    )]
    NoProvider(FunctionName),
    /// The provider could not provision it.
    #[error(transparent)]
    Provision(#[from] ProvisionError),
}

/// Why a function's replica count could not be set.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplicasError {
    /// No such function.
    #[error("function {0} is not registered")]
    UnknownFunction(FunctionName),
    /// The function has no managed deployment.
    #[error(
        "function {function} runs as {mode:?}, not as a managed DEPLOYMENT: it has no replicas to set"
    )]
    NotDeployment {
        /// The function.
        function: FunctionName,
        /// How it runs.
        mode: ExecutionMode,
    },
    /// The provider failed.
    #[error(transparent)]
    Provider(#[from] SetReplicasError),
}

/// Why `tick_once` could not look at a function.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TickError {
    /// No such function.
    #[error("function {0} is not registered")]
    UnknownFunction(FunctionName),
}

/// Why a completion could not be applied at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CompleteError {
    /// No such execution (never existed, or evicted).
    #[error("no execution {0}")]
    UnknownExecution(ExecutionId),
}

/// Why waiting for a result failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WaitError {
    /// No such execution (never existed, or evicted).
    #[error("no execution {0}")]
    UnknownExecution(ExecutionId),
}

/// Why a function could not be removed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RemoveError {
    /// No such function.
    #[error("function {0} is not registered")]
    UnknownFunction(FunctionName),
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

/// A registered function's hot-path handles.
#[derive(Debug)]
struct FunctionRuntime {
    spec: Arc<FunctionSpec>,
    queue: Arc<FunctionQueue>,
}

/// An execution that has not finished yet. The map entry's lock is the execution's
/// lock: every decision about it (start, retry, finish) is taken under it, briefly,
/// without awaiting; the store writes that follow carry the decision's `version`.
struct Live {
    function: Arc<FunctionRuntime>,
    attempt: u32,
    version: u64,
    phase: Phase,
    input: Payload,
    metadata: Arc<BTreeMap<String, String>>,
    trace_id: TraceId,
    idempotency_key: Option<IdempotencyKey>,
    waiters: Vec<oneshot::Sender<ExecutionRecord>>,
}

enum Phase {
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
        function: FunctionName,
        version: u64,
        next_attempt: u32,
        error: ErrorInfo,
        running: RunningAttempt,
    },
    Finish {
        version: u64,
        completion: Completion,
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
    stopping: CancellationToken,
    ignored_completions: AtomicU64,
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
                stopping: CancellationToken::new(),
                ignored_completions: AtomicU64::new(0),
            }),
        }
    }

    // ----- functions ---------------------------------------------------------------

    /// Registers a function and creates its queue. A `DEPLOYMENT` function is
    /// provisioned first (the provider's endpoint becomes its `endpointUrl`); without a
    /// provider able to run it, one that brought its own `endpointUrl` runs as `POOL`,
    /// any other is refused. Atomic: a refused registration leaves nothing behind.
    pub async fn register_function(
        &self,
        mut spec: FunctionSpec,
    ) -> Result<RegisteredFunction, RegisterError> {
        let inner = &self.inner;
        let name = spec.name.clone();
        let _reservation = Reservation::take(&inner.registering, &name)
            .ok_or_else(|| AlreadyRegistered(name.clone()))?;
        if inner.parts.registry.get(name.as_str()).await.is_some() {
            return Err(AlreadyRegistered(name).into());
        }

        let provider = match spec.execution_mode {
            ExecutionMode::Deployment => inner
                .parts
                .deployments
                .as_ref()
                .filter(|provider| provider.supports(&spec)),
            ExecutionMode::Local | ExecutionMode::Pool => None,
        };
        let effective_mode = match (spec.execution_mode, provider) {
            (ExecutionMode::Deployment, Some(provider)) => {
                spec.endpoint_url = Some(provider.provision(&spec).await?);
                ExecutionMode::Deployment
            }
            (ExecutionMode::Deployment, None) if spec.endpoint_url.is_some() => ExecutionMode::Pool,
            (ExecutionMode::Deployment, None) => return Err(RegisterError::NoProvider(name)),
            (mode, _) => mode,
        };

        let spec = Arc::new(spec);
        let registered = RegisteredFunction {
            spec: Arc::clone(&spec),
            effective_mode,
            created_at: inner.parts.clock.now(),
        };
        if let Err(taken) = inner.parts.registry.register(registered.clone()).await {
            if let Some(provider) = provider {
                self.deprovision(provider.as_ref(), &name).await;
            }
            return Err(taken.into());
        }
        let queue = FunctionQueue::new(
            name.clone(),
            spec.queue_size as usize,
            spec.concurrency as usize,
            inner.readiness.clone(),
        );
        inner
            .functions
            .insert(name, Arc::new(FunctionRuntime { spec, queue }));
        Ok(registered)
    }

    async fn deprovision(&self, provider: &dyn DeploymentProvider, name: &FunctionName) {
        if let Err(error) = provider.deprovision(name).await {
            tracing::error!(function = %name, %error, "managed deployment could not be removed");
        }
    }

    /// Sets the replica count of a provisioned `DEPLOYMENT` function.
    pub async fn set_replicas(
        &self,
        name: &FunctionName,
        replicas: u32,
    ) -> Result<(), ReplicasError> {
        let function = self
            .function(name.as_str())
            .await
            .ok_or_else(|| ReplicasError::UnknownFunction(name.clone()))?;
        let provider = match (function.effective_mode, &self.inner.parts.deployments) {
            (ExecutionMode::Deployment, Some(provider)) => provider,
            (mode, _) => {
                return Err(ReplicasError::NotDeployment {
                    function: function.spec.name.clone(),
                    mode,
                });
            }
        };
        provider.set_replicas(&function.spec.name, replicas).await?;
        Ok(())
    }

    /// Removes a function. Its queued executions end in `error` with
    /// `FUNCTION_REMOVED` (their sync callers are answered at once); running ones finish.
    pub async fn remove_function(
        &self,
        name: &FunctionName,
    ) -> Result<RegisteredFunction, RemoveError> {
        let Some((_, runtime)) = self.inner.functions.remove(name) else {
            return Err(RemoveError::UnknownFunction(name.clone()));
        };
        for queued in runtime.queue.close() {
            let error = ErrorInfo::new(
                ErrorCode::FunctionRemoved,
                format!("function {name} was removed"),
            );
            let _ = self
                .complete(
                    &queued.id,
                    None,
                    Completion::error(error),
                    CompletionSource::FunctionRemoved,
                )
                .await;
        }
        let removed = self
            .inner
            .parts
            .registry
            .remove(name.as_str())
            .await
            .ok_or_else(|| RemoveError::UnknownFunction(name.clone()))?;
        if removed.effective_mode == ExecutionMode::Deployment
            && let Some(provider) = &self.inner.parts.deployments
        {
            self.deprovision(provider.as_ref(), name).await;
        }
        Ok(removed)
    }

    /// One registered function.
    pub async fn function(&self, name: &str) -> Option<RegisteredFunction> {
        self.inner.parts.registry.get(name).await
    }

    /// Every registered function, by name.
    pub async fn functions(&self) -> Vec<RegisteredFunction> {
        self.inner.parts.registry.list().await
    }

    /// A function's queue and slots, if it is registered.
    pub fn queue_snapshot(&self, name: &str) -> Option<QueueSnapshot> {
        let runtime = self.inner.functions.get(name)?;
        let queue = &runtime.queue;
        Some(QueueSnapshot {
            queued: queue.queued_ids(),
            in_flight: queue.in_flight(),
            concurrency: queue.concurrency(),
            capacity: queue.capacity(),
        })
    }

    // ----- executions --------------------------------------------------------------

    /// An execution's record.
    pub async fn execution(&self, id: &ExecutionId) -> Option<ExecutionRecord> {
        self.inner.parts.executions.get(id).await
    }

    /// What the execution store holds (records, finished bytes, budget evictions).
    pub fn store_stats(&self) -> store::StoreStats {
        self.inner.parts.executions.stats()
    }

    /// How many completions lost to an earlier one (or named an older attempt).
    pub fn ignored_completions(&self) -> u64 {
        self.inner.ignored_completions.load(Ordering::Relaxed)
    }

    /// Accepts an invocation and queues it. With an idempotency key, a request equal to
    /// an earlier one (same function, key and body) returns the earlier execution, even
    /// when both arrive at once; a different body under the same key is refused.
    pub async fn submit(
        &self,
        function: &FunctionName,
        request: InvocationRequest,
        options: SubmitOptions,
    ) -> Result<Submitted, SubmitError> {
        let inner = &self.inner;
        let runtime = inner
            .functions
            .get(function)
            .map(|r| Arc::clone(&r))
            .ok_or_else(|| SubmitError::UnknownFunction(function.clone()))?;
        if inner.stopping.is_cancelled() {
            return Err(SubmitError::NotAccepting(function.clone()));
        }

        let mut claim = None;
        if let Some(key) = &options.idempotency_key {
            let fingerprint = fingerprint(&request);
            match inner
                .parts
                .idempotency
                .claim(function, key, fingerprint, inner.parts.clock.now())
                .await
            {
                ClaimOutcome::Existing(execution_id) => {
                    return Ok(Submitted {
                        execution_id,
                        replayed: true,
                    });
                }
                ClaimOutcome::Reused => return Err(SubmitError::IdempotencyKeyReused(key.clone())),
                ClaimOutcome::Acquired(token) => {
                    claim = Some(ClaimGuard {
                        store: Arc::clone(&inner.parts.idempotency),
                        token: Some(token),
                    });
                }
            }
        }

        let id = inner.parts.ids.execution_id();
        let now = inner.parts.clock.now();
        inner
            .parts
            .executions
            .insert(ExecutionRecord::queued(id.clone(), function.clone(), now))
            .await
            .map_err(|e| SubmitError::Store(e.to_string()))?;
        inner.live.insert(
            id.clone(),
            Live {
                function: Arc::clone(&runtime),
                attempt: 1,
                version: 0,
                phase: Phase::Queued,
                input: request.input,
                metadata: Arc::new(request.metadata),
                trace_id: options
                    .trace_id
                    .unwrap_or_else(|| inner.parts.ids.trace_id()),
                idempotency_key: options.idempotency_key,
                waiters: Vec::new(),
            },
        );
        // With the background loop running, the submitting task starts the dispatch
        // itself when a slot is free, instead of waking the loop to do it: one task
        // hand-off less per invocation. If no slot is free, the release of a taken one
        // announces the queue to the loop as usual. Without the loop (manual mode)
        // queued work waits for `tick_once`.
        let dispatch_here = inner.background.load(Ordering::Acquire);
        let queued = QueuedExecution {
            id: id.clone(),
            enqueued_at: now,
        };
        let pushed = if dispatch_here {
            runtime.queue.push_unannounced(queued)
        } else {
            runtime.queue.push(queued)
        };
        if let Err(refused) = pushed {
            inner.live.remove(&id);
            inner.parts.executions.remove(&id).await;
            // `claim` drops here and abandons the key: a refused request leaves no claim.
            return Err(match refused {
                PushError::Full { function, capacity } => {
                    SubmitError::QueueFull { function, capacity }
                }
                PushError::Closed { function } => SubmitError::NotAccepting(function),
            });
        }
        if let Some(mut claim) = claim {
            let token = claim
                .token
                .take()
                .expect("a guard holds its token until used");
            inner
                .parts
                .idempotency
                .publish(token, id.clone(), now)
                .await;
        }
        inner.parts.observer.on_event(SchedulerEvent::Enqueued {
            function,
            execution: &id,
        });
        if dispatch_here {
            // The background loop owns what this starts, as if it had started it.
            drop(self.tick_runtime(&runtime).await);
        }
        Ok(Submitted {
            execution_id: id,
            replayed: false,
        })
    }

    /// Waits for an execution's final record. With a `timeout`, an execution still
    /// unfinished when it runs out is ended as `timeout` (whatever state it was in; a
    /// queued one is never dispatched) and that final record is returned: this is the
    /// deadline of the caller that owns the execution. Any number of callers may wait on
    /// one execution; each is woken exactly once. Without a background loop the wait
    /// drives the function's queue itself (see [`Self::wait_at_most`]).
    pub async fn wait_for_result(
        &self,
        id: &ExecutionId,
        timeout: Option<Duration>,
    ) -> Result<ExecutionRecord, WaitError> {
        let Some(waiter) = self.subscribe(id) else {
            return self.final_record(id).await;
        };
        let woken = match timeout {
            None => self.woken(id, waiter).await,
            Some(limit) => match tokio::time::timeout(limit, self.woken(id, waiter)).await {
                Ok(woken) => woken,
                Err(_elapsed) => {
                    let error = ErrorInfo::new(
                        ErrorCode::SyncTimeout,
                        format!("no result within {} ms", limit.as_millis()),
                    );
                    let completion = Completion::Failure {
                        state: ExecutionState::Timeout,
                        error,
                    };
                    // Whatever won (this timeout or a result that beat it), the record is final now.
                    let _ = self
                        .complete(id, None, completion, CompletionSource::SyncTimeout)
                        .await;
                    match self.subscribe(id) {
                        Some(waiter) => waiter.await,
                        None => return self.final_record(id).await,
                    }
                }
            },
        };
        match woken {
            Ok(record) => Ok(record),
            Err(_) => self.final_record(id).await,
        }
    }

    /// Waits at most `limit` for an execution's final record, and then returns the
    /// record as it stands, finished or not, without changing the execution: for a
    /// caller that shares an execution it does not own (an idempotent replay), whose
    /// patience must not cut short the owner's. Without a background loop (manual
    /// mode) the wait drives the function's queue itself, in FIFO order, so a sync
    /// caller still gets its answer.
    pub async fn wait_at_most(
        &self,
        id: &ExecutionId,
        limit: Duration,
    ) -> Result<ExecutionRecord, WaitError> {
        if let Some(waiter) = self.subscribe(id)
            && let Ok(Ok(record)) = tokio::time::timeout(limit, self.woken(id, waiter)).await
        {
            return Ok(record);
        }
        self.final_record(id).await
    }

    /// Resolves when `waiter` is woken. With no background loop, nobody else moves the
    /// queue, so this caller does: it takes queued work (its own execution or what is
    /// ahead of it) whenever a slot is free, and otherwise waits for one to be released.
    async fn woken(
        &self,
        id: &ExecutionId,
        mut waiter: oneshot::Receiver<ExecutionRecord>,
    ) -> Result<ExecutionRecord, oneshot::error::RecvError> {
        if !self.inner.config.waiters_drive_when_manual
            || self.inner.background.load(Ordering::Acquire)
        {
            return waiter.await;
        }
        let Some(runtime) = self
            .inner
            .live
            .get(id)
            .map(|live| Arc::clone(&live.function))
        else {
            return waiter.await;
        };
        loop {
            let released = runtime.queue.slot_released();
            tokio::pin!(released);
            released.as_mut().enable();
            match self.tick_runtime(&runtime).await {
                Some(attempt) => tokio::select! {
                    woken = &mut waiter => return woken,
                    _ = attempt => {}
                },
                None => tokio::select! {
                    woken = &mut waiter => return woken,
                    () = released => {}
                },
            }
        }
    }

    fn subscribe(&self, id: &ExecutionId) -> Option<oneshot::Receiver<ExecutionRecord>> {
        let mut live = self.inner.live.get_mut(id)?;
        let (tx, rx) = oneshot::channel();
        live.waiters.push(tx);
        Some(rx)
    }

    async fn final_record(&self, id: &ExecutionId) -> Result<ExecutionRecord, WaitError> {
        self.inner
            .parts
            .executions
            .get(id)
            .await
            .ok_or_else(|| WaitError::UnknownExecution(id.clone()))
    }

    // ----- tick_once ---------------------------------------------------------------

    /// Takes at most one queued invocation of `function`, only if a concurrency slot is
    /// free, marks it running and starts its dispatch. `Ok(None)`: no free slot or no
    /// queued work. `Ok(Some(handle))`: the handle resolves only after the execution's
    /// record has been updated (terminal, or queued again for a retry) and the slot
    /// released. The background loop drops handles; `:drain-once` awaits them.
    pub async fn tick_once(
        &self,
        function: &FunctionName,
    ) -> Result<Option<JoinHandle<()>>, TickError> {
        let runtime = self
            .inner
            .functions
            .get(function)
            .map(|r| Arc::clone(&r))
            .ok_or_else(|| TickError::UnknownFunction(function.clone()))?;
        Ok(self.tick_runtime(&runtime).await)
    }

    async fn tick_runtime(&self, runtime: &Arc<FunctionRuntime>) -> Option<JoinHandle<()>> {
        let inner = &self.inner;
        loop {
            let slot = runtime.queue.try_acquire_slot()?;
            let queued = runtime.queue.pop()?;
            let now = inner.parts.clock.now();
            let (finished_tx, finished_rx) = oneshot::channel();
            let start = {
                let Some(mut live) = inner.live.get_mut(&queued.id) else {
                    continue;
                };
                if !matches!(live.phase, Phase::Queued) {
                    // Completed while queued (callback, removal, timeout): skip it.
                    continue;
                }
                live.version += 1;
                live.phase = Phase::Running(RunningAttempt {
                    _slot: slot,
                    _finished: finished_tx,
                });
                let request = DispatchRequest {
                    execution_id: queued.id.clone(),
                    function: Arc::clone(&live.function.spec),
                    attempt: live.attempt,
                    input: live.input.clone(),
                    metadata: Arc::clone(&live.metadata),
                    trace_id: live.trace_id.clone(),
                    idempotency_key: if live.attempt == 1 {
                        live.idempotency_key.clone()
                    } else {
                        None
                    },
                    callback_url: inner.config.callback_base_url.clone(),
                };
                (live.version, request)
            };
            let (version, request) = start;
            let attempt = request.attempt;
            let change = RecordChange {
                version,
                kind: ChangeKind::Started { attempt, at: now },
            };
            // The record says `running` before the handle is returned. The in-memory
            // store answers in one poll, so a caller dropped here (a drain-once or a
            // submit whose client went away) cannot leave the execution marked running
            // with no task; a store that really waits would need this write moved into
            // the attempt's task (its version already orders it against completions).
            self.write(&queued.id, change).await;
            inner.parts.observer.on_event(SchedulerEvent::Dispatched {
                function: &runtime.spec.name,
                execution: &queued.id,
                attempt,
                queue_wait: now.since(queued.enqueued_at),
            });
            // DEBUG, not INFO: the fmt subscriber formats a span's fields when the span
            // is created, which at INFO (the default filter) cost ~9 % of a sync LOCAL
            // invocation's instructions for a span no event at INFO ever used. The
            // events of an attempt that show at INFO and above name the execution
            // themselves.
            let span = tracing::debug_span!(
                "execution",
                function = %runtime.spec.name,
                execution_id = %queued.id,
                attempt,
                trace_id = %request.trace_id,
            );
            let timeout = Duration::from_millis(runtime.spec.timeout_ms);
            let attempt_task = self
                .clone()
                .run_attempt(request, timeout, finished_rx)
                .instrument(span);
            return Some(self.spawn_owned(attempt_task));
        }
    }

    /// Runs one attempt to its end: dispatch under the function's timeout, then the
    /// completion path. If another completion wins first (a callback, a sync timeout,
    /// shutdown), the dispatch is dropped and the task ends once the winner has
    /// written the record and released the slot.
    async fn run_attempt(
        self,
        request: DispatchRequest,
        timeout: Duration,
        mut settled: oneshot::Receiver<()>,
    ) {
        let id = request.execution_id.clone();
        let attempt = request.attempt;
        let function = Arc::clone(&request.function);
        let dispatch = AssertUnwindSafe(self.inner.parts.dispatch.dispatch(request)).catch_unwind();
        let result = tokio::select! {
            biased;
            _ = &mut settled => return,
            result = tokio::time::timeout(timeout, dispatch) => result,
        };
        let (completion, source) = match result {
            Err(_elapsed) => {
                let error = ErrorInfo::new(
                    ErrorCode::DispatchTimeout,
                    format!("function did not answer within {} ms", timeout.as_millis()),
                );
                (
                    Completion::Failure {
                        state: ExecutionState::Timeout,
                        error,
                    },
                    CompletionSource::Dispatch,
                )
            }
            Ok(Err(panic)) => {
                let message = panic_message(panic.as_ref());
                tracing::error!(function = %function.name, execution_id = %id, attempt, %message, "dispatch panicked");
                let error = ErrorInfo::new(
                    ErrorCode::DispatchPanicked,
                    format!("dispatch panicked: {message}"),
                );
                (Completion::error(error), CompletionSource::DispatchPanic)
            }
            Ok(Ok(Ok(success))) => (Completion::Success(success), CompletionSource::Dispatch),
            Ok(Ok(Err(error))) => {
                let state = if error.has_code(ErrorCode::DispatchTimeout) {
                    ExecutionState::Timeout
                } else {
                    ExecutionState::Error
                };
                (
                    Completion::Failure { state, error },
                    CompletionSource::Dispatch,
                )
            }
        };
        match self.complete(&id, Some(attempt), completion, source).await {
            Ok(CompletionOutcome::Applied(_)) => {}
            // Someone else won; resolve only once they have finished writing.
            Ok(CompletionOutcome::Ignored(_)) | Err(_) => {
                let _ = settled.await;
            }
        }
    }

    // ----- the completion path -----------------------------------------------------

    /// The one completion path. Dispatch results, runtime callbacks (`attempt` from
    /// `X-Dispatch-Attempt`), sync timeouts, function removal and shutdown all come
    /// here. The first completion of the current attempt wins; later ones and those
    /// naming another attempt are ignored and counted. A failed attempt reported by its
    /// dispatch or callback is retried (same id, `attempt + 1`, tail of the queue) until
    /// the function's `maxRetries` total attempts; a retry that cannot be queued ends
    /// the execution with the attempt's error. A completion of a queued execution takes
    /// it out of the queue, so it is never dispatched.
    pub async fn complete(
        &self,
        id: &ExecutionId,
        attempt: Option<u32>,
        completion: Completion,
        source: CompletionSource,
    ) -> Result<CompletionOutcome, CompleteError> {
        let inner = &self.inner;
        let now = inner.parts.clock.now();
        match self.decide(id, attempt, completion, source, now) {
            Decision::Unknown => {
                if inner.parts.executions.get(id).await.is_some() {
                    Ok(self.ignored(id, source, IgnoredBecause::AlreadyFinished))
                } else {
                    Err(CompleteError::UnknownExecution(id.clone()))
                }
            }
            Decision::Ignore(because) => Ok(self.ignored(id, source, because)),
            Decision::Retry {
                function,
                version,
                next_attempt,
                error,
                running,
            } => {
                let kind = ChangeKind::Requeued {
                    attempt: next_attempt,
                    at: now,
                };
                self.write(id, RecordChange { version, kind }).await;
                drop(running);
                inner.parts.observer.on_event(SchedulerEvent::Retried {
                    function: &function,
                    execution: id,
                    next_attempt,
                    error: &error,
                });
                Ok(CompletionOutcome::Applied(ExecutionState::Queued))
            }
            Decision::Finish {
                version,
                completion,
                running,
            } => {
                let (state, kind) = finished(completion, now);
                let record = self.write(id, RecordChange { version, kind }).await;
                // Slot and the attempt task are released only now, after the write.
                drop(running);
                let waiters = inner
                    .live
                    .remove(id)
                    .map(|(_, live)| live.waiters)
                    .unwrap_or_default();
                if let Some(record) = &record {
                    for waiter in waiters {
                        let _ = waiter.send(record.clone());
                    }
                    inner
                        .parts
                        .observer
                        .on_event(SchedulerEvent::Finished { record, source });
                }
                Ok(CompletionOutcome::Applied(state))
            }
        }
    }

    /// Decides, under the execution's lock and without awaiting, what a completion does.
    fn decide(
        &self,
        id: &ExecutionId,
        attempt: Option<u32>,
        completion: Completion,
        source: CompletionSource,
        now: Timestamp,
    ) -> Decision {
        let Some(mut live) = self.inner.live.get_mut(id) else {
            return Decision::Unknown;
        };
        if let Some(reported) = attempt
            && reported != live.attempt
        {
            return Decision::Ignore(IgnoredBecause::StaleAttempt {
                reported,
                current: live.attempt,
            });
        }
        let function = Arc::clone(&live.function);
        let running = match std::mem::replace(&mut live.phase, Phase::Finishing) {
            Phase::Finishing => return Decision::Ignore(IgnoredBecause::AlreadyFinished),
            Phase::Queued => {
                function.queue.remove(id);
                None
            }
            Phase::Running(running) => Some(running),
        };
        live.version += 1;
        let version = live.version;
        match (completion, running) {
            (Completion::Failure { state, error }, Some(running))
                if source.may_retry() && live.attempt < function.spec.max_attempts() =>
            {
                let retry = QueuedExecution {
                    id: id.clone(),
                    enqueued_at: now,
                };
                match function.queue.push(retry) {
                    Ok(()) => {
                        live.attempt += 1;
                        live.phase = Phase::Queued;
                        let next_attempt = live.attempt;
                        let function = function.spec.name.clone();
                        Decision::Retry {
                            function,
                            version,
                            next_attempt,
                            error,
                            running,
                        }
                    }
                    Err(refused) => {
                        tracing::warn!(execution_id = %id, %refused, "retry could not be queued; the execution ends with its error");
                        let completion = Completion::Failure { state, error };
                        Decision::Finish {
                            version,
                            completion,
                            running: Some(running),
                        }
                    }
                }
            }
            (completion, running) => Decision::Finish {
                version,
                completion,
                running,
            },
        }
    }

    fn ignored(
        &self,
        id: &ExecutionId,
        source: CompletionSource,
        because: IgnoredBecause,
    ) -> CompletionOutcome {
        self.inner
            .ignored_completions
            .fetch_add(1, Ordering::Relaxed);
        tracing::debug!(execution_id = %id, %source, %because, "completion ignored");
        self.inner
            .parts
            .observer
            .on_event(SchedulerEvent::CompletionIgnored {
                execution: id,
                source,
                because,
            });
        CompletionOutcome::Ignored(because)
    }

    /// Applies a decided change. A stale change (a newer decision was written first) is
    /// dropped by design; anything else is a bug worth shouting about, not a reason to
    /// leave the execution hanging.
    async fn write(&self, id: &ExecutionId, change: RecordChange) -> Option<ExecutionRecord> {
        match self.inner.parts.executions.apply(id, change).await {
            Ok(record) => Some(record),
            Err(store::ApplyError::Stale { .. }) => None,
            Err(error) => {
                tracing::error!(execution_id = %id, %error, "execution record update refused");
                None
            }
        }
    }

    // ----- background work and shutdown --------------------------------------------

    fn spawn_owned<F>(&self, task: F) -> JoinHandle<()>
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        #[expect(
            clippy::disallowed_methods,
            reason = "the scheduler owns every long-lived task: each is tracked by `tasks` and awaited by `shutdown`"
        )]
        tokio::spawn(self.inner.tasks.track_future(task))
    }

    /// Starts the background loop: it wakes when a queue gains work or frees a slot and
    /// gives each ready function one dispatch per turn, so a saturated or slow function
    /// never stalls another. Also starts the eviction sweeper. Calling it twice does
    /// nothing the second time.
    pub fn start_background(&self) {
        let Some(mut ready) = self
            .inner
            .ready
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        else {
            return;
        };
        self.inner.background.store(true, Ordering::Release);
        self.start_sweeper();
        let scheduler = self.clone();
        let stopping = self.inner.stopping.clone();
        self.spawn_owned(async move {
            loop {
                let name = tokio::select! {
                    _ = stopping.cancelled() => return,
                    next = ready.next() => match next {
                        Some(name) => name,
                        None => return,
                    },
                };
                let Some(runtime) = scheduler.inner.functions.get(&name).map(|r| Arc::clone(&r))
                else {
                    continue;
                };
                runtime.queue.clear_announcement();
                if scheduler.tick_runtime(&runtime).await.is_some() {
                    // Back to the tail: one dispatch per function per turn.
                    runtime.queue.announce();
                }
            }
        });
    }

    /// Starts the periodic eviction of finished records and idempotency keys past
    /// their TTL (started by `start_background` too; call it alone in manual mode).
    pub fn start_sweeper(&self) {
        let parts = self.inner.parts.clone();
        let every = self.inner.config.sweep_interval;
        let stopping = self.inner.stopping.clone();
        self.spawn_owned(async move {
            let mut ticks = tokio::time::interval(every);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = stopping.cancelled() => return,
                    _ = ticks.tick() => {}
                }
                let now = parts.clock.now();
                let records = parts.executions.evict_expired(now).await;
                let keys = parts.idempotency.evict_expired(now).await;
                if records + keys > 0 {
                    tracing::debug!(records, keys, "evicted expired entries");
                }
            }
        });
    }

    /// Stops gracefully: accepts nothing new, ends every queued execution with
    /// `SHUTDOWN`, lets in-flight attempts finish for up to `grace`, then ends the rest
    /// with `SHUTDOWN` too. When it returns, no execution is queued or running and every
    /// waiter has its answer.
    pub async fn shutdown(&self, grace: Duration) {
        let inner = &self.inner;
        inner.stopping.cancel();
        let runtimes: Vec<_> = inner
            .functions
            .iter()
            .map(|r| Arc::clone(r.value()))
            .collect();
        for runtime in runtimes {
            for queued in runtime.queue.close() {
                let error = ErrorInfo::new(
                    ErrorCode::Shutdown,
                    "the control plane shut down before this execution started",
                );
                let _ = self
                    .complete(
                        &queued.id,
                        None,
                        Completion::error(error),
                        CompletionSource::Shutdown,
                    )
                    .await;
            }
        }
        inner.tasks.close();
        if tokio::time::timeout(grace, inner.tasks.wait())
            .await
            .is_err()
        {
            let unfinished: Vec<ExecutionId> = inner.live.iter().map(|e| e.key().clone()).collect();
            for id in unfinished {
                let error = ErrorInfo::new(
                    ErrorCode::Shutdown,
                    "the control plane shut down before the function answered",
                );
                let _ = self
                    .complete(
                        &id,
                        None,
                        Completion::error(error),
                        CompletionSource::Shutdown,
                    )
                    .await;
            }
            inner.tasks.wait().await;
        }
    }
}

/// The terminal change a completion makes, and the state it ends in.
fn finished(completion: Completion, at: Timestamp) -> (ExecutionState, ChangeKind) {
    let (state, output, error, cold_start, init_duration_ms) = match completion {
        Completion::Success(success) => (
            ExecutionState::Success,
            Some(success.output),
            None,
            success.cold_start,
            success.init_duration_ms,
        ),
        Completion::Failure { state, error } => (state, None, Some(error), false, None),
    };
    (
        state,
        ChangeKind::Finished {
            state,
            at,
            output,
            error,
            cold_start,
            init_duration_ms,
        },
    )
}

/// A name held in the set of registrations in progress until dropped.
struct Reservation<'a> {
    set: &'a dashmap::DashSet<FunctionName>,
    name: FunctionName,
}

impl<'a> Reservation<'a> {
    fn take(set: &'a dashmap::DashSet<FunctionName>, name: &FunctionName) -> Option<Self> {
        set.insert(name.clone()).then(|| Self {
            set,
            name: name.clone(),
        })
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        self.set.remove(&self.name);
    }
}

/// Frees an idempotency claim unless it was published (also when the submitting future
/// is dropped half-way).
struct ClaimGuard {
    store: Arc<dyn IdempotencyStore>,
    token: Option<ClaimToken>,
}

impl Drop for ClaimGuard {
    fn drop(&mut self) {
        if let Some(token) = self.token.take() {
            self.store.abandon(token);
        }
    }
}

/// A digest of what makes two requests "the same" for idempotency: the input as a JSON
/// value (however spelled) and the metadata.
fn fingerprint(request: &InvocationRequest) -> Fingerprint {
    // DefaultHasher::new() uses fixed keys: stable within a build, which is all an
    // in-memory claim needs. A shared backend would want a hash fixed across builds.
    let mut hasher = DefaultHasher::new();
    request.input.hash_value(&mut hasher);
    request.metadata.hash(&mut hasher);
    Fingerprint(hasher.finish())
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic payload".to_owned())
}
