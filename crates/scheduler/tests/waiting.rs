//! Callers waiting on executions: what they get when records are evicted early, that
//! abandoned waits do not pile up, and that a completion failing half-way cannot leave
//! its waiters hanging.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use core_types::{
    Dispatch, DispatchOutcome, DispatchRequest, DispatchSuccess, DurationMs, ErrorCode, ErrorInfo,
    ExecutionId, ExecutionState, FunctionName, FunctionSpec, IdempotencyKey, InvocationRequest,
    Payload,
};
use futures::FutureExt;
use scheduler::{
    Completion, CompletionOutcome, CompletionSource, IgnoredBecause, MemoryLimits, Scheduler,
    SchedulerConfig, SchedulerParts, SubmitError, SubmitOptions,
};
use serde_json::json;
#[path = "support/watched_store.rs"]
mod watched_store;

use watched_store::{WatchedStore, WriteHook};

use store::{ChangeKind, ExecutionStore, MemoryExecutionStore, RecordChange, StoredExecution};

/// Echoes, except `{"hang": true}`, which never answers (until the function's timeout).
struct EchoOrHang;

#[async_trait]
impl Dispatch for EchoOrHang {
    async fn dispatch(&self, request: DispatchRequest) -> DispatchOutcome {
        if request.input.to_value() == json!({"hang": true}) {
            std::future::pending::<()>().await;
        }
        Ok(DispatchSuccess::warm(request.input))
    }
}

fn function(name: &str) -> FunctionSpec {
    FunctionSpec::from_json(&json!({
        "name": name, "image": "i", "executionMode": "LOCAL", "timeoutMs": 300_000,
    }))
    .unwrap()
}

fn request(input: serde_json::Value) -> InvocationRequest {
    InvocationRequest {
        input: Payload::from_value(&input),
        metadata: Default::default(),
    }
}

fn keyed(key: &str, wait: bool) -> SubmitOptions {
    SubmitOptions {
        idempotency_key: Some(IdempotencyKey::new(key)),
        wait,
        ..SubmitOptions::default()
    }
}

async fn started(parts: SchedulerParts, config: SchedulerConfig) -> (Scheduler, FunctionName) {
    let scheduler = Scheduler::new(parts, config);
    scheduler.start_background();
    scheduler.register_function(function("f")).await.unwrap();
    (scheduler, FunctionName::parse("f").unwrap())
}

/// Finished records evicted at once: a budget no record fits in.
fn nothing_retained() -> SchedulerParts {
    SchedulerParts::in_memory_with(
        Arc::new(EchoOrHang),
        MemoryLimits {
            execution_memory_budget: 1,
            ..MemoryLimits::default()
        },
    )
}

#[tokio::test(start_paused = true)]
async fn a_sync_caller_gets_its_result_even_when_the_record_is_evicted_as_it_finishes() {
    let (scheduler, f) = started(nothing_retained(), SchedulerConfig::default()).await;
    let options = SubmitOptions {
        wait: true,
        ..SubmitOptions::default()
    };
    let submitted = scheduler
        .submit(&f, request(json!("x")), options)
        .await
        .unwrap();
    let mut waiter = submitted.waiter.expect("subscribed");
    let record = scheduler
        .wait(&mut waiter, Some(Duration::from_secs(5)))
        .await
        .expect("the result, not an unknown execution");
    assert_eq!(record.state, ExecutionState::Success);
    assert!(
        scheduler
            .execution(&submitted.execution_id)
            .await
            .unwrap()
            .is_none(),
        "the record itself is gone"
    );
}

#[tokio::test(start_paused = true)]
async fn a_key_whose_execution_was_evicted_starts_a_new_execution() {
    let (scheduler, f) = started(nothing_retained(), SchedulerConfig::default()).await;
    let first = scheduler
        .submit(&f, request(json!("x")), keyed("k", true))
        .await
        .unwrap();
    let mut waiter = first.waiter.unwrap();
    scheduler.wait(&mut waiter, None).await.unwrap();
    assert!(
        scheduler
            .execution(&first.execution_id)
            .await
            .unwrap()
            .is_none()
    );

    for wait in [true, false] {
        let again = scheduler
            .submit(&f, request(json!("x")), keyed("k", wait))
            .await
            .expect("not an internal error");
        assert!(!again.replayed, "the key was forgotten with its execution");
        assert_ne!(again.execution_id, first.execution_id);
        if let Some(mut waiter) = again.waiter {
            let record = scheduler.wait(&mut waiter, None).await.unwrap();
            assert_eq!(record.state, ExecutionState::Success);
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_replay_of_a_finished_execution_answers_its_final_record() {
    let (scheduler, f) = started(
        SchedulerParts::in_memory(Arc::new(EchoOrHang)),
        SchedulerConfig::default(),
    )
    .await;
    let first = scheduler
        .submit(&f, request(json!("x")), keyed("k", true))
        .await
        .unwrap();
    scheduler
        .wait(&mut first.waiter.unwrap(), None)
        .await
        .unwrap();
    let replay = scheduler
        .submit(&f, request(json!("x")), keyed("k", false))
        .await
        .unwrap();
    assert!(replay.replayed);
    assert_eq!(replay.execution_id, first.execution_id);
    let record = replay.record.expect("the record as it stands");
    assert_eq!(record.state, ExecutionState::Success, "not `queued`");
}

#[tokio::test(start_paused = true)]
async fn replays_that_stop_waiting_do_not_pile_up_on_a_long_execution() {
    let (scheduler, f) = started(
        SchedulerParts::in_memory(Arc::new(EchoOrHang)),
        SchedulerConfig::default(),
    )
    .await;
    let long = scheduler
        .submit(&f, request(json!({"hang": true})), keyed("k", true))
        .await
        .unwrap();
    for _ in 0..20_000 {
        let replay = scheduler
            .submit(&f, request(json!({"hang": true})), keyed("k", true))
            .await
            .unwrap();
        let record = scheduler
            .wait_at_most(&mut replay.waiter.unwrap(), Duration::from_millis(1))
            .await
            .unwrap();
        assert_eq!(record.state, ExecutionState::Running);
    }
    let held = scheduler
        .waiters(&long.execution_id)
        .expect("still running");
    assert!(
        held <= 16,
        "{held} subscriptions held for 1 caller still waiting"
    );
}

#[tokio::test(start_paused = true)]
async fn a_queue_timeout_ends_only_an_execution_that_is_still_queued() {
    let parts = SchedulerParts::in_memory(Arc::new(EchoOrHang));
    // Manual: the test decides what is dispatched.
    let scheduler = Scheduler::new(parts, SchedulerConfig::default());
    scheduler.register_function(function("f")).await.unwrap();
    let f = FunctionName::parse("f").unwrap();
    let submit = |input| scheduler.submit(&f, request(input), SubmitOptions::default());
    let running = submit(json!({"hang": true})).await.unwrap().execution_id;
    let queued = submit(json!("later")).await.unwrap().execution_id;
    let _attempt = scheduler.tick_once(&f).await.unwrap().expect("dispatched");

    let queue_timeout = || Completion::Failure {
        state: ExecutionState::Timeout,
        error: ErrorInfo::new(ErrorCode::QueueTimeout, "queued too long"),
    };
    let outcome = scheduler
        .complete(
            &running,
            None,
            queue_timeout(),
            CompletionSource::QueueTimeout,
        )
        .await;
    assert_eq!(
        outcome,
        Ok(CompletionOutcome::Ignored(IgnoredBecause::NotQueued))
    );
    let record = scheduler.execution(&running).await.unwrap().unwrap();
    assert_eq!(
        record.state,
        ExecutionState::Running,
        "it keeps its attempt"
    );

    let outcome = scheduler
        .complete(
            &queued,
            None,
            queue_timeout(),
            CompletionSource::QueueTimeout,
        )
        .await;
    assert_eq!(
        outcome,
        Ok(CompletionOutcome::Applied(ExecutionState::Timeout))
    );
}

#[tokio::test(start_paused = true)]
async fn queued_inputs_stay_within_their_budget() {
    let config = SchedulerConfig {
        queued_input_budget: 100,
        ..SchedulerConfig::default()
    };
    let parts = SchedulerParts::in_memory(Arc::new(EchoOrHang));
    let scheduler = Scheduler::new(parts, config);
    scheduler.register_function(function("f")).await.unwrap();
    let f = FunctionName::parse("f").unwrap();
    let sixty_bytes = || request(json!("x".repeat(58)));

    let first = scheduler
        .submit(&f, sixty_bytes(), SubmitOptions::default())
        .await
        .unwrap();
    assert!(scheduler.queued_input_bytes() >= 60);
    let refused = scheduler
        .submit(&f, sixty_bytes(), SubmitOptions::default())
        .await;
    assert!(
        matches!(
            refused,
            Err(SubmitError::InputsFull {
                budget_bytes: 100,
                ..
            })
        ),
        "{refused:?}"
    );
    scheduler
        .tick_once(&f)
        .await
        .unwrap()
        .unwrap()
        .await
        .unwrap();
    assert_eq!(
        scheduler
            .execution(&first.execution_id)
            .await
            .unwrap()
            .unwrap()
            .state,
        ExecutionState::Success
    );
    assert_eq!(
        scheduler.queued_input_bytes(),
        0,
        "given back when it ended"
    );
    scheduler
        .submit(&f, sixty_bytes(), SubmitOptions::default())
        .await
        .expect("room again");
}

/// Makes finishing a record panic once armed (a bug in a store).
#[derive(Default)]
struct PanicsOnFinish {
    armed: AtomicBool,
}

impl WriteHook for PanicsOnFinish {
    fn before_insert(&self, execution: &StoredExecution) {
        // A sync invocation without a key is written once, finished.
        if execution.record.state.is_terminal() && self.armed.load(Ordering::SeqCst) {
            panic!("the store broke while finishing {}", execution.record.id);
        }
    }

    fn before_apply(&self, id: &ExecutionId, change: &RecordChange) {
        if matches!(change.kind, ChangeKind::Finished { .. }) && self.armed.load(Ordering::SeqCst) {
            panic!("the store broke while finishing {id}");
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_completion_that_panics_half_way_leaves_no_caller_waiting_forever() {
    let store = Arc::new(WatchedStore {
        inner: MemoryExecutionStore::new(DurationMs(60_000)),
        hook: PanicsOnFinish::default(),
    });
    let parts = SchedulerParts {
        executions: Arc::clone(&store) as Arc<dyn ExecutionStore>,
        ..SchedulerParts::in_memory(Arc::new(EchoOrHang))
    };
    let (scheduler, f) = started(parts, SchedulerConfig::default()).await;
    let options = SubmitOptions {
        wait: true,
        // Keyed, so every step is recorded: the record the waiter reads is the store's.
        idempotency_key: Some(IdempotencyKey::new("panics")),
        ..SubmitOptions::default()
    };
    let submitted = scheduler
        .submit(&f, request(json!({"hang": true})), options)
        .await
        .unwrap();
    let id = submitted.execution_id.clone();
    store.hook.armed.store(true, Ordering::SeqCst);

    let callback = scheduler.complete(
        &id,
        None,
        Completion::Success(DispatchSuccess::warm(Payload::string("done"))),
        CompletionSource::Callback,
    );
    let panicked = std::panic::AssertUnwindSafe(callback).catch_unwind().await;
    assert!(panicked.is_err(), "the store's panic reached the caller");

    let mut waiter = submitted.waiter.unwrap();
    let woken = tokio::time::timeout(Duration::from_secs(60), scheduler.wait(&mut waiter, None))
        .await
        .expect("the waiter is answered, not left hanging");
    let record = woken.expect("the record as the store has it");
    assert_eq!(
        record.state,
        ExecutionState::Running,
        "the write never landed"
    );
    assert_eq!(scheduler.waiters(&id), None, "the execution was let go");
}
