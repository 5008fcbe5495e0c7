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
    ExecutionId, ExecutionState, FunctionName, FunctionSpec, InvocationRequest, Payload,
};
use scheduler::{RetryBackoff, Scheduler, SchedulerConfig, SchedulerParts, SubmitOptions};
#[path = "support/watched_store.rs"]
mod watched_store;

use watched_store::{WatchedStore, WriteHook};

use store::{ApplyError, ChangeKind, ExecutionStore, MemoryExecutionStore, RecordChange};

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

/// Slows the in-memory store down on `queued` writes (a store whose write takes a
/// moment, as a real one does, without yielding) and counts every refused write.
#[derive(Default)]
struct SlowRequeues {
    refused: AtomicU64,
}

impl WriteHook for SlowRequeues {
    fn before_apply(&self, _id: &ExecutionId, change: &RecordChange) {
        if matches!(change.kind, ChangeKind::Requeued { .. }) {
            // Long enough for another worker to take the retry off the queue first.
            let until = std::time::Instant::now() + Duration::from_micros(50);
            while std::time::Instant::now() < until {
                std::hint::spin_loop();
            }
        }
    }

    fn after_apply(&self, applied: &Result<(), ApplyError>) {
        if matches!(applied, Err(ApplyError::InvalidTransition(_))) {
            self.refused.fetch_add(1, Ordering::Relaxed);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn retries_racing_on_many_workers_leave_every_record_true_to_its_last_attempt() {
    const EXECUTIONS: usize = 4_000;
    let store = Arc::new(WatchedStore {
        inner: MemoryExecutionStore::new(DurationMs(10 * 60 * 1000)),
        hook: SlowRequeues::default(),
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
        store.hook.refused.load(Ordering::Relaxed),
        0,
        "the store refused writes that landed out of order; records wrong: {wrong:?}"
    );
    assert!(wrong.is_empty(), "{} records lie: {wrong:?}", wrong.len());
    scheduler.shutdown(Duration::from_secs(5)).await;
}
