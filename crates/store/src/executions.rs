//! Execution records and their eviction once finished.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::mpsc;

use async_trait::async_trait;
use core_types::{
    DurationMs, ErrorInfo, ExecutionId, ExecutionState, ExecutionStatus, FunctionName,
    InvalidTransition, Payload, Timestamp,
};
use dashmap::DashMap;

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
    fn target_state(&self) -> ExecutionState {
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
}

/// Where execution records live.
#[async_trait]
pub trait ExecutionStore: Send + Sync + 'static {
    /// Stores a new record.
    async fn insert(&self, record: ExecutionRecord) -> Result<(), InsertError>;
    /// The record, if it exists and has not been evicted.
    async fn get(&self, id: &ExecutionId) -> Option<ExecutionRecord>;
    /// Applies a change and returns the record as it is afterwards.
    async fn apply(
        &self,
        id: &ExecutionId,
        change: RecordChange,
    ) -> Result<ExecutionRecord, ApplyError>;
    /// Forgets a record that was never accepted (e.g. its queue was full).
    async fn remove(&self, id: &ExecutionId) -> bool;
    /// Evicts finished records older than the TTL; returns how many went.
    async fn evict_expired(&self, now: Timestamp) -> usize;
}

/// In-memory records, sharded by id. Finished records are evicted by
/// [`ExecutionStore::evict_expired`] in the order they finished: with one TTL for all,
/// that is expiry order, so a sweep touches only the records it evicts.
#[derive(Debug)]
pub struct MemoryExecutionStore {
    records: DashMap<ExecutionId, ExecutionRecord>,
    ttl: DurationMs,
    finished_tx: mpsc::Sender<(Timestamp, ExecutionId)>,
    expiry: Mutex<Expiry>,
}

/// Finished records in the order they finished. Finishing sends on a channel (no lock
/// shared with other finishing executions); the sweep drains it into its own deque.
#[derive(Debug)]
struct Expiry {
    finished_rx: mpsc::Receiver<(Timestamp, ExecutionId)>,
    by_deadline: VecDeque<(Timestamp, ExecutionId)>,
}

impl MemoryExecutionStore {
    /// An empty store keeping finished records for `ttl`.
    pub fn new(ttl: DurationMs) -> Self {
        let (finished_tx, finished_rx) = mpsc::channel();
        Self {
            records: DashMap::new(),
            ttl,
            finished_tx,
            expiry: Mutex::new(Expiry {
                finished_rx,
                by_deadline: VecDeque::new(),
            }),
        }
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
        let mut record = self
            .records
            .get_mut(id)
            .ok_or_else(|| ApplyError::Unknown(id.clone()))?;
        if change.version <= record.version {
            return Err(ApplyError::Stale {
                change: change.version,
                current: record.version,
            });
        }
        record.state.check_transition(change.kind.target_state())?;
        record.version = change.version;
        match change.kind {
            ChangeKind::Started { attempt, at } => {
                record.state = ExecutionState::Running;
                record.attempt = attempt;
                record.started_at = Some(at);
            }
            ChangeKind::Requeued { attempt, at } => {
                record.state = ExecutionState::Queued;
                record.attempt = attempt;
                record.enqueued_at = at;
                record.started_at = None;
            }
            ChangeKind::Finished {
                state,
                at,
                output,
                error,
                cold_start,
                init_duration_ms,
            } => {
                record.state = state;
                record.finished_at = Some(at);
                record.output = output;
                record.error = error;
                record.cold_start = cold_start;
                record.init_duration_ms = init_duration_ms;
                // The receiver lives as long as `self`; a send cannot fail.
                let _ = self.finished_tx.send((at.plus(self.ttl), id.clone()));
            }
        }
        Ok(record.clone())
    }
}

#[async_trait]
impl ExecutionStore for MemoryExecutionStore {
    async fn insert(&self, record: ExecutionRecord) -> Result<(), InsertError> {
        match self.records.entry(record.id.clone()) {
            dashmap::Entry::Occupied(_) => Err(InsertError::Duplicate(record.id)),
            dashmap::Entry::Vacant(slot) => {
                slot.insert(record);
                Ok(())
            }
        }
    }

    async fn get(&self, id: &ExecutionId) -> Option<ExecutionRecord> {
        self.records.get(id).map(|r| r.clone())
    }

    async fn apply(
        &self,
        id: &ExecutionId,
        change: RecordChange,
    ) -> Result<ExecutionRecord, ApplyError> {
        self.apply_now(id, change)
    }

    async fn remove(&self, id: &ExecutionId) -> bool {
        self.records.remove(id).is_some()
    }

    async fn evict_expired(&self, now: Timestamp) -> usize {
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
        while let Some((deadline, _)) = by_deadline.front() {
            if *deadline > now {
                break;
            }
            let (_, id) = by_deadline.pop_front().expect("front exists");
            if self
                .records
                .remove_if(&id, |_, r| r.state.is_terminal())
                .is_some()
            {
                evicted += 1;
            }
        }
        evicted
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(ms: u64) -> Timestamp {
        Timestamp::from_millis(ms)
    }

    fn finished(version: u64, at: u64) -> RecordChange {
        RecordChange {
            version,
            kind: ChangeKind::Finished {
                state: ExecutionState::Success,
                at: t(at),
                output: Some(Payload::string("ok")),
                error: None,
                cold_start: false,
                init_duration_ms: None,
            },
        }
    }

    async fn store_with(ids: &[&str]) -> MemoryExecutionStore {
        let store = MemoryExecutionStore::new(DurationMs(100));
        for id in ids {
            store
                .insert(ExecutionRecord::queued(
                    ExecutionId::new(*id),
                    FunctionName::parse("f").unwrap(),
                    t(0),
                ))
                .await
                .unwrap();
        }
        store
    }

    #[tokio::test]
    async fn a_record_moves_through_its_life() {
        let store = store_with(&["a"]).await;
        let id = ExecutionId::new("a");
        store
            .apply(
                &id,
                RecordChange {
                    version: 1,
                    kind: ChangeKind::Started {
                        attempt: 1,
                        at: t(5),
                    },
                },
            )
            .await
            .unwrap();
        store
            .apply(
                &id,
                RecordChange {
                    version: 2,
                    kind: ChangeKind::Requeued {
                        attempt: 2,
                        at: t(7),
                    },
                },
            )
            .await
            .unwrap();
        store
            .apply(
                &id,
                RecordChange {
                    version: 3,
                    kind: ChangeKind::Started {
                        attempt: 2,
                        at: t(10),
                    },
                },
            )
            .await
            .unwrap();
        let done = store.apply(&id, finished(4, 30)).await.unwrap();
        let status = done.to_status();
        assert_eq!(
            (status.status, status.attempt),
            (ExecutionState::Success, 2)
        );
        assert_eq!(
            (status.queue_wait_ms, status.duration_ms),
            (Some(3), Some(20))
        );
    }

    #[tokio::test]
    async fn stale_changes_are_dropped_and_terminal_records_never_move() {
        let store = store_with(&["a"]).await;
        let id = ExecutionId::new("a");
        store.apply(&id, finished(2, 1)).await.unwrap();
        let late_start = RecordChange {
            version: 1,
            kind: ChangeKind::Started {
                attempt: 1,
                at: t(0),
            },
        };
        assert_eq!(
            store.apply(&id, late_start).await,
            Err(ApplyError::Stale {
                change: 1,
                current: 2
            })
        );
        let newer_start = RecordChange {
            version: 3,
            kind: ChangeKind::Started {
                attempt: 1,
                at: t(0),
            },
        };
        assert!(matches!(
            store.apply(&id, newer_start).await,
            Err(ApplyError::InvalidTransition(_))
        ));
        assert_eq!(store.get(&id).await.unwrap().state, ExecutionState::Success);
    }

    #[tokio::test]
    async fn duplicates_and_unknown_ids_are_refused() {
        let store = store_with(&["a"]).await;
        let again = ExecutionRecord::queued(
            ExecutionId::new("a"),
            FunctionName::parse("f").unwrap(),
            t(0),
        );
        assert!(store.insert(again).await.is_err());
        assert!(matches!(
            store.apply(&ExecutionId::new("zz"), finished(1, 0)).await,
            Err(ApplyError::Unknown(_))
        ));
    }

    #[tokio::test]
    async fn finished_records_expire_after_the_ttl_and_live_ones_stay() {
        let store = store_with(&["a", "b", "live"]).await;
        store
            .apply(&ExecutionId::new("a"), finished(1, 10))
            .await
            .unwrap();
        store
            .apply(&ExecutionId::new("b"), finished(1, 50))
            .await
            .unwrap();
        assert_eq!(store.evict_expired(t(109)).await, 0);
        assert_eq!(store.evict_expired(t(110)).await, 1);
        assert!(store.get(&ExecutionId::new("a")).await.is_none());
        assert_eq!(store.evict_expired(t(10_000)).await, 1);
        assert!(store.get(&ExecutionId::new("live")).await.is_some());
        assert_eq!(store.len(), 1);
    }
}
