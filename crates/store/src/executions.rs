//! Execution records and their eviction once finished.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use core_types::{
    DurationMs, ErrorInfo, ExecutionId, ExecutionState, ExecutionStatus, FunctionName,
    IdempotencyKey, InvalidTransition, Payload, Timestamp, TraceId,
};
use dashmap::DashMap;

use crate::{Durability, ExecutionIdHasher, StoreUnavailable};

/// Everything known about one execution.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExecutionRecord {
    /// Its id.
    pub id: ExecutionId,
    /// Its function.
    pub function: FunctionName,
    /// Where it is.
    pub state: ExecutionState,
    /// Current attempt, 1-based.
    pub attempt: u32,
    /// The version of the last change applied; changes with a lower one are stale.
    pub version: u64,
    /// When it was accepted.
    pub created_at: Timestamp,
    /// When its current attempt entered the queue.
    pub enqueued_at: Timestamp,
    /// When its current attempt started.
    pub started_at: Option<Timestamp>,
    /// When it finished.
    pub finished_at: Option<Timestamp>,
    /// Output on success.
    pub output: Option<Payload>,
    /// Error on failure.
    pub error: Option<ErrorInfo>,
    /// The runtime reported a cold start.
    pub cold_start: bool,
    /// The runtime's reported init time.
    pub init_duration_ms: Option<u64>,
}

impl ExecutionRecord {
    /// A freshly accepted execution, queued for its first attempt.
    pub fn queued(id: ExecutionId, function: FunctionName, now: Timestamp) -> Self {
        Self {
            id,
            function,
            state: ExecutionState::Queued,
            attempt: 1,
            version: 0,
            created_at: now,
            enqueued_at: now,
            started_at: None,
            finished_at: None,
            output: None,
            error: None,
            cold_start: false,
            init_duration_ms: None,
        }
    }

    /// Time its current attempt waited in the queue.
    pub fn queue_wait(&self) -> Option<DurationMs> {
        self.started_at
            .map(|started| started.since(self.enqueued_at))
    }

    /// Time from the start of its current attempt to its end.
    pub fn duration(&self) -> Option<DurationMs> {
        Some(self.finished_at?.since(self.started_at?))
    }

    /// Applies `change` if it is newer than the last one applied and the transition
    /// table allows it; otherwise leaves the record as it is. The one definition of
    /// what a change does, for every backend.
    pub fn apply_change(&mut self, change: RecordChange) -> Result<(), ApplyError> {
        if change.version <= self.version {
            return Err(ApplyError::Stale {
                change: change.version,
                current: self.version,
            });
        }
        self.state.check_transition(change.kind.target_state())?;
        self.version = change.version;
        match change.kind {
            ChangeKind::Started { attempt, at } => {
                self.state = ExecutionState::Running;
                self.attempt = attempt;
                self.started_at = Some(at);
            }
            ChangeKind::Requeued { attempt, at } => {
                self.state = ExecutionState::Queued;
                self.attempt = attempt;
                self.enqueued_at = at;
                self.started_at = None;
            }
            ChangeKind::Finished {
                state,
                at,
                output,
                error,
                cold_start,
                init_duration_ms,
            } => {
                self.state = state;
                self.finished_at = Some(at);
                self.output = output;
                self.error = error;
                self.cold_start = cold_start;
                self.init_duration_ms = init_duration_ms;
            }
        }
        Ok(())
    }

    /// The `GET /v1/executions/{id}` view.
    pub fn to_status(&self) -> ExecutionStatus {
        ExecutionStatus {
            execution_id: self.id.clone(),
            function_name: self.function.clone(),
            status: self.state,
            attempt: self.attempt,
            created_at: self.created_at,
            started_at: self.started_at,
            finished_at: self.finished_at,
            output: self.output.clone(),
            error: self.error.clone(),
            cold_start: self.cold_start,
            init_duration_ms: self.init_duration_ms,
            queue_wait_ms: self.queue_wait().map(|d| d.0),
            duration_ms: self.duration().map(|d| d.0),
        }
    }
}

/// What an execution needs to be dispatched (again): kept with its record while it is
/// unfinished, so a restart can queue it again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExecutionWork {
    /// The invocation's input.
    pub input: Payload,
    /// The invocation's metadata.
    pub metadata: Arc<BTreeMap<String, String>>,
    /// Its trace id.
    pub trace_id: TraceId,
    /// The client's `Idempotency-Key`, sent with its first attempt.
    pub idempotency_key: Option<IdempotencyKey>,
}

/// An execution as a durable store keeps it while it is unfinished.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredExecution {
    /// Its record.
    pub record: ExecutionRecord,
    /// What it runs on.
    pub work: ExecutionWork,
}

/// One change to a record, decided by the scheduler. `version` orders changes: the
/// store applies a change only if it is newer than the last one applied, so changes
/// decided in order but written concurrently still leave the last decision in place.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordChange {
    /// Strictly increasing per execution.
    pub version: u64,
    /// What changed.
    pub kind: ChangeKind,
}

/// What a [`RecordChange`] does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChangeKind {
    /// `queued -> running`: attempt `attempt` was dispatched `at`.
    Started {
        /// The attempt that started.
        attempt: u32,
        /// When.
        at: Timestamp,
    },
    /// `running -> queued`: attempt `attempt` (the next one) was queued `at`.
    Requeued {
        /// The new attempt number.
        attempt: u32,
        /// When it entered the queue.
        at: Timestamp,
    },
    /// `queued|running -> success|error|timeout`.
    Finished {
        /// The terminal state.
        state: ExecutionState,
        /// When.
        at: Timestamp,
        /// Output on success.
        output: Option<Payload>,
        /// Error on failure.
        error: Option<ErrorInfo>,
        /// The runtime reported a cold start.
        cold_start: bool,
        /// The runtime's reported init time.
        init_duration_ms: Option<u64>,
    },
}

impl ChangeKind {
    /// The state the change moves a record to.
    pub fn target_state(&self) -> ExecutionState {
        match self {
            Self::Started { .. } => ExecutionState::Running,
            Self::Requeued { .. } => ExecutionState::Queued,
            Self::Finished { state, .. } => *state,
        }
    }
}

/// Why a record could not be inserted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InsertError {
    /// An execution with that id exists already.
    #[error("execution {0} exists already")]
    Duplicate(ExecutionId),
    /// The store could not take it.
    #[error(transparent)]
    Unavailable(#[from] StoreUnavailable),
}

/// Why a change was not applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApplyError {
    /// No record with that id (never inserted, removed or evicted).
    #[error("no execution {0}")]
    Unknown(ExecutionId),
    /// A newer change was applied already; this one is dropped.
    #[error("change version {change} is older than the record's {current}")]
    Stale {
        /// The change's version.
        change: u64,
        /// The record's version.
        current: u64,
    },
    /// The transition table refuses it.
    #[error(transparent)]
    InvalidTransition(#[from] InvalidTransition),
    /// The store could not take it.
    #[error(transparent)]
    Unavailable(#[from] StoreUnavailable),
}

/// Where execution records live. A write reports a fault of the medium
/// ([`StoreUnavailable`]) and then has changed nothing; with [`Durability::Behind`] it
/// may answer before the write is made (and its fault is then only logged).
#[async_trait]
pub trait ExecutionStore: Send + Sync + 'static {
    /// Stores a new record with the work it runs on (a durable backend keeps the work
    /// until the execution ends, for [`unfinished`](Self::unfinished)). The record may
    /// be finished already (an execution written only once, at its end): it is then
    /// kept and evicted like any finished record.
    async fn insert(
        &self,
        execution: StoredExecution,
        durability: Durability,
    ) -> Result<(), InsertError>;
    /// The record, if it exists and has not been evicted.
    async fn get(&self, id: &ExecutionId) -> Result<Option<ExecutionRecord>, StoreUnavailable>;
    /// Applies a change ([`ExecutionRecord::apply_change`]).
    async fn apply(
        &self,
        id: &ExecutionId,
        change: RecordChange,
        durability: Durability,
    ) -> Result<(), ApplyError>;
    /// Forgets a record that was never accepted (e.g. its queue was full).
    async fn remove(&self, id: &ExecutionId) -> Result<bool, StoreUnavailable>;
    /// Evicts finished records older than the TTL; returns how many went.
    async fn evict_expired(&self, now: Timestamp) -> Result<usize, StoreUnavailable>;
    /// Every unfinished (queued or running) execution with its work, in the order
    /// its current attempt entered its queue: what a restart queues again. A backend
    /// that does not outlive its process has none.
    async fn unfinished(&self) -> Result<Vec<StoredExecution>, StoreUnavailable>;
    /// Whether what it holds survives the process (a restart recovers it). The
    /// scheduler then leaves committed executions to the restart at shutdown instead
    /// of ending them.
    fn outlives_process(&self) -> bool {
        false
    }
    /// What the store holds now, for metrics. Backends that do not count say zeros.
    fn stats(&self) -> StoreStats {
        StoreStats::default()
    }
}

/// What an execution store holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Records held, live and finished.
    pub records: usize,
    /// Estimated bytes the finished records hold (see [`MemoryExecutionStore`]).
    pub finished_bytes: usize,
    /// Finished records evicted before their TTL to stay within the memory budget.
    pub evicted_over_budget: u64,
}

/// In-memory records, sharded by id. Finished records are evicted by
/// [`ExecutionStore::evict_expired`] in the order they finished: with one TTL for all,
/// that is expiry order, so a sweep touches only the records it evicts.
///
/// Finished records also live within a memory budget: each is charged an estimate of
/// what it keeps on the heap (its map entry, its id, its output's text, its error's
/// text and its expiry entry), and when the charges pass the budget the oldest finished
/// records are evicted at once, before their TTL, and counted
/// ([`StoreStats::evicted_over_budget`]). Live (queued, running) records are never
/// evicted: the queues bound them.
#[derive(Debug)]
pub struct MemoryExecutionStore {
    /// Boxed: a map slot is then 24 bytes instead of 192, so a growing map rehashes
    /// and over-allocates slots, not whole records (with records inline, where the
    /// table's size landed moved the memory of a retained record between ~220 and
    /// ~440 bytes).
    records: DashMap<ExecutionId, Box<ExecutionRecord>, ExecutionIdHasher>,
    ttl: DurationMs,
    budget_bytes: usize,
    finished_bytes: AtomicUsize,
    evicted_over_budget: AtomicU64,
    finished_tx: mpsc::Sender<FinishedEntry>,
    expiry: Mutex<Expiry>,
}

/// A finished record in the eviction order: when it expires, and what it is charged.
#[derive(Debug)]
struct FinishedEntry {
    deadline: Timestamp,
    id: ExecutionId,
    bytes: usize,
}

/// Finished records in the order they finished. Finishing sends on a channel (no lock
/// shared with other finishing executions); evictions drain it into their own deque.
#[derive(Debug)]
struct Expiry {
    finished_rx: mpsc::Receiver<FinishedEntry>,
    by_deadline: VecDeque<FinishedEntry>,
}

/// An estimate of the heap one finished record keeps. Exact accounting would need the
/// allocator's view; this counts the parts that scale with use, so the budget bounds
/// them.
fn retained_bytes(record: &ExecutionRecord) -> usize {
    /// The strong and weak counts in front of an `Arc`'s data.
    const ARC_HEADER: usize = 2 * size_of::<usize>();
    let id = ARC_HEADER + record.id.as_str().len();
    let output = record
        .output
        .as_ref()
        .map_or(0, |output| ARC_HEADER + output.heap_size());
    let error = record
        .error
        .as_ref()
        .map_or(0, |error| error.code.len() + error.message.len());
    // The map's slot (key and box) and its control byte, the boxed record, and the
    // expiry entry.
    size_of::<(ExecutionId, Box<ExecutionRecord>)>()
        + 1
        + size_of::<ExecutionRecord>()
        + size_of::<FinishedEntry>()
        + id
        + output
        + error
}

impl MemoryExecutionStore {
    /// An empty store keeping finished records for `ttl`, with no memory budget.
    pub fn new(ttl: DurationMs) -> Self {
        Self::with_budget(ttl, usize::MAX)
    }

    /// An empty store keeping finished records for `ttl`, or less when their estimated
    /// size passes `budget_bytes` (the oldest go first).
    pub fn with_budget(ttl: DurationMs, budget_bytes: usize) -> Self {
        let (finished_tx, finished_rx) = mpsc::channel();
        Self {
            records: DashMap::default(),
            ttl,
            budget_bytes,
            finished_bytes: AtomicUsize::new(0),
            evicted_over_budget: AtomicU64::new(0),
            finished_tx,
            expiry: Mutex::new(Expiry {
                finished_rx,
                by_deadline: VecDeque::new(),
            }),
        }
    }

    /// Evicts finished records, oldest first, while `go(entry)` says so; returns how
    /// many records went.
    fn evict_while(&self, mut go: impl FnMut(&FinishedEntry) -> bool) -> usize {
        let mut expiry = self
            .expiry
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let Expiry {
            finished_rx,
            by_deadline,
        } = &mut *expiry;
        by_deadline.extend(finished_rx.try_iter());
        let mut evicted = 0;
        while let Some(entry) = by_deadline.front() {
            if !go(entry) {
                break;
            }
            let entry = by_deadline.pop_front().expect("front exists");
            if self
                .records
                .remove_if(&entry.id, |_, r| r.state.is_terminal())
                .is_some()
            {
                self.finished_bytes.fetch_sub(entry.bytes, Ordering::AcqRel);
                evicted += 1;
            }
        }
        evicted
    }

    fn over_budget(&self) -> bool {
        self.finished_bytes.load(Ordering::Acquire) > self.budget_bytes
    }

    /// How many records are held (live and finished).
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether no record is held.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    fn apply_now(
        &self,
        id: &ExecutionId,
        change: RecordChange,
    ) -> Result<ExecutionRecord, ApplyError> {
        let finishes = matches!(change.kind, ChangeKind::Finished { .. });
        let applied = self.apply_to_entry(id, change)?;
        if finishes {
            self.keep_within_budget();
        }
        Ok(applied)
    }

    fn apply_to_entry(
        &self,
        id: &ExecutionId,
        change: RecordChange,
    ) -> Result<ExecutionRecord, ApplyError> {
        let mut record = self
            .records
            .get_mut(id)
            .ok_or_else(|| ApplyError::Unknown(id.clone()))?;
        record.apply_change(change)?;
        if record.state.is_terminal() {
            self.charge_finished(&record);
        }
        Ok(ExecutionRecord::clone(&record))
    }

    /// Charges a record that just finished to the budget and queues its eviction.
    fn charge_finished(&self, record: &ExecutionRecord) {
        let bytes = retained_bytes(record);
        self.finished_bytes.fetch_add(bytes, Ordering::AcqRel);
        // The receiver lives as long as `self`; a send cannot fail.
        let _ = self.finished_tx.send(FinishedEntry {
            deadline: record
                .finished_at
                .unwrap_or(record.created_at)
                .plus(self.ttl),
            id: record.id.clone(),
            bytes,
        });
    }

    /// Evicts the oldest finished records while over the budget (outside any entry's
    /// lock: eviction takes other entries' locks).
    fn keep_within_budget(&self) {
        if self.over_budget() {
            let evicted = self.evict_while(|_| self.over_budget());
            self.evicted_over_budget
                .fetch_add(evicted as u64, Ordering::Relaxed);
        }
    }
}

/// The memory backend forgets with its process: it keeps no work (the scheduler holds
/// it while the execution lives) and has nothing unfinished to give a restart.
/// Every write is done when its call returns, whatever the durability asked.
#[async_trait]
impl ExecutionStore for MemoryExecutionStore {
    async fn insert(
        &self,
        execution: StoredExecution,
        _durability: Durability,
    ) -> Result<(), InsertError> {
        let record = execution.record;
        let finished = record.state.is_terminal();
        match self.records.entry(record.id.clone()) {
            dashmap::Entry::Occupied(_) => return Err(InsertError::Duplicate(record.id)),
            dashmap::Entry::Vacant(slot) => {
                if finished {
                    self.charge_finished(&record);
                }
                slot.insert(Box::new(record));
            }
        }
        if finished {
            self.keep_within_budget();
        }
        Ok(())
    }

    async fn get(&self, id: &ExecutionId) -> Result<Option<ExecutionRecord>, StoreUnavailable> {
        Ok(self.records.get(id).map(|r| ExecutionRecord::clone(&r)))
    }

    async fn apply(
        &self,
        id: &ExecutionId,
        change: RecordChange,
        _durability: Durability,
    ) -> Result<(), ApplyError> {
        self.apply_now(id, change).map(drop)
    }

    async fn remove(&self, id: &ExecutionId) -> Result<bool, StoreUnavailable> {
        Ok(self.records.remove(id).is_some())
    }

    async fn evict_expired(&self, now: Timestamp) -> Result<usize, StoreUnavailable> {
        Ok(self.evict_while(|entry| entry.deadline <= now))
    }

    async fn unfinished(&self) -> Result<Vec<StoredExecution>, StoreUnavailable> {
        Ok(Vec::new())
    }

    fn stats(&self) -> StoreStats {
        StoreStats {
            records: self.records.len(),
            finished_bytes: self.finished_bytes.load(Ordering::Acquire),
            evicted_over_budget: self.evicted_over_budget.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests;
