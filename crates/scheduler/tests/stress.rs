//! Races the deterministic cases cannot reach: the real multi-threaded runtime, several
//! workers, many executions retried at once. After the storm every record must tell
//! the truth about its last attempt, and the store must never have refused a write
//! (a refused write means two decisions landed out of order and the later one lost).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use core_types::{
    Dispatch, DispatchOutcome, DispatchRequest, DispatchSuccess, DurationMs, ErrorCode, ErrorInfo,
    ExecutionId, ExecutionState, FunctionName, FunctionSpec, InvocationRequest, Payload, Timestamp,
};
use scheduler::{RetryBackoff, Scheduler, SchedulerConfig, SchedulerParts, SubmitOptions};
use store::{
    ApplyError, ChangeKind, Durability, ExecutionRecord, ExecutionStore, InsertError,
    MemoryExecutionStore, RecordChange, StoreUnavailable, StoredExecution,
};

/// Every attempt but the last one fails, so each execution is retried `ATTEMPTS - 1`
/// times.
const ATTEMPTS: u32 = 3;

struct FailUntilLastAttempt;

#[async_trait]
impl Dispatch for FailUntilLastAttempt {
    async fn dispatch(&self, request: DispatchRequest) -> DispatchOutcome {
        if request.attempt < ATTEMPTS {
            Err(ErrorInfo::new(ErrorCode::FunctionError, "not yet"))
        } else {
            Ok(DispatchSuccess::warm(request.input))
        }
    }
}

/// The in-memory store, slowed down on `queued` writes (a store whose write takes a
/// moment, as a real one does, without yielding) and counting every refused write.
struct SlowRequeueStore {
    inner: MemoryExecutionStore,
    refused: AtomicU64,
}

#[async_trait]
impl ExecutionStore for SlowRequeueStore {
    async fn insert(
        &self,
        execution: StoredExecution,
        durability: Durability,
    ) -> Result<(), InsertError> {
        self.inner.insert(execution, durability).await
    }

    async fn get(&self, id: &ExecutionId) -> Result<Option<ExecutionRecord>, StoreUnavailable> {
        self.inner.get(id).await
    }

    async fn apply(
        &self,
        id: &ExecutionId,
        change: RecordChange,
        durability: Durability,
    ) -> Result<(), ApplyError> {
        if matches!(change.kind, ChangeKind::Requeued { .. }) {
            // Long enough for another worker to take the retry off the queue first.
            let until = std::time::Instant::now() + Duration::from_micros(50);
            while std::time::Instant::now() < until {
                std::hint::spin_loop();
            }
        }
        let applied = self.inner.apply(id, change, durability).await;
        if matches!(applied, Err(ApplyError::InvalidTransition(_))) {
            self.refused.fetch_add(1, Ordering::Relaxed);
        }
        applied
    }

    async fn remove(&self, id: &ExecutionId) -> Result<bool, StoreUnavailable> {
        self.inner.remove(id).await
    }

    async fn evict_expired(&self, now: Timestamp) -> Result<usize, StoreUnavailable> {
        self.inner.evict_expired(now).await
    }

    async fn unfinished(&self) -> Result<Vec<StoredExecution>, StoreUnavailable> {
        self.inner.unfinished().await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn retries_racing_on_many_workers_leave_every_record_true_to_its_last_attempt() {
    const EXECUTIONS: usize = 4_000;
    let store = Arc::new(SlowRequeueStore {
        inner: MemoryExecutionStore::new(DurationMs(10 * 60 * 1000)),
        refused: AtomicU64::new(0),
    });
    let parts = SchedulerParts {
        executions: Arc::clone(&store) as Arc<dyn ExecutionStore>,
        ..SchedulerParts::in_memory(Arc::new(FailUntilLastAttempt))
    };
    // Retries due at once: a backoff would keep the next attempt away from the race.
    let config = SchedulerConfig {
        retry_backoff: RetryBackoff::NONE,
        ..SchedulerConfig::default()
    };
    let scheduler = Scheduler::new(parts, config);
    scheduler.start_background();
    let spec = FunctionSpec::from_json(&serde_json::json!({
        "name": "flaky", "image": "i", "executionMode": "POOL",
        "endpointUrl": "http://127.0.0.1:9/", "concurrency": 16,
        "queueSize": EXECUTIONS, "maxRetries": ATTEMPTS,
    }))
    .expect("a valid spec");
    scheduler.register_function(spec).await.expect("registered");
    let name = FunctionName::parse("flaky").unwrap();

    let mut ids = Vec::with_capacity(EXECUTIONS);
    for n in 0..EXECUTIONS {
        let request = InvocationRequest {
            input: Payload::from_value(&serde_json::json!(n)),
            metadata: Default::default(),
        };
        let submitted = scheduler
            .submit(&name, request, SubmitOptions::default())
            .await
            .expect("room in the queue");
        ids.push(submitted.execution_id);
    }
    let all_done = async {
        for id in &ids {
            scheduler.wait_for_result(id, None).await.expect("known");
        }
    };
    tokio::time::timeout(Duration::from_secs(120), all_done)
        .await
        .expect("every execution ends");

    let mut wrong = Vec::new();
    for id in &ids {
        let record = scheduler.execution(id).await.unwrap().expect("kept");
        let truthful = record.state == ExecutionState::Success
            && record.attempt == ATTEMPTS
            && record.started_at.is_some()
            && record.duration().is_some();
        if !truthful {
            wrong.push(format!(
                "{id}: {} attempt {} started {:?}",
                record.state, record.attempt, record.started_at
            ));
        }
    }
    assert_eq!(
        store.refused.load(Ordering::Relaxed),
        0,
        "the store refused writes that landed out of order; records wrong: {wrong:?}"
    );
    assert!(wrong.is_empty(), "{} records lie: {wrong:?}", wrong.len());
    scheduler.shutdown(Duration::from_secs(5)).await;
}
