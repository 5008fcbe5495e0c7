//! A restart over the SQLite store: what a user notices when the control plane dies
//! and comes back. Functions are registered again; queued work runs in its order; an
//! attempt the crash cut short runs again as the next attempt (never the same one
//! twice), or ends if it was the last; a retry keeps its due time; idempotency keys
//! still name their executions. And shutdown over a durable store leaves committed work
//! to the restart instead of ending it.
//!
//! A crash is: the first scheduler is no longer used (nothing is shut down, its
//! attempts are left hanging), its store is closed (which only commits what it was
//! handed), and a second store and scheduler open the same directory. The records'
//! clock is a manual clock both lives share; tokio's clock is real, since the store
//! answers from its own thread (a paused clock would jump ahead while it does).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use core_types::testing::ManualClock;
use core_types::{
    Clock, Dispatch, DispatchSuccess, ErrorCode, ExecutionId, ExecutionState, FunctionName,
    FunctionSpec, IdGenerator, IdempotencyKey, InvocationRequest, Payload, TraceId,
};
use scheduler::testing::{Gate, ScriptedDispatch, Step, gate};
use scheduler::{
    Completion, CompletionOutcome, CompletionSource, IgnoredBecause, Restored, RetryBackoff,
    Scheduler, SchedulerConfig, SchedulerParts, SubmitError, SubmitOptions, Submitted,
};
use serde_json::json;
use store::{
    ExecutionRecord, ExecutionStore, FunctionRegistry, IdempotencyStore, RegisteredFunction,
    SqliteOptions, SqliteStore,
};
use tokio::task::JoinHandle;

/// Long enough that a retry's due time is far from the restart's.
const BACKOFF: RetryBackoff = RetryBackoff {
    base: Duration::from_secs(60),
    max: Duration::from_secs(60),
};

/// Ids of one life (`before-998`, `before-997`, ...): they sort against the order they
/// were issued in, so only the order the store kept can put executions right.
struct LifeIds {
    life: &'static str,
    next: AtomicU64,
}

impl IdGenerator for LifeIds {
    fn execution_id(&self) -> ExecutionId {
        let n = self.next.fetch_add(1, Ordering::SeqCst) + 1;
        ExecutionId::new(format!("{}-{:03}", self.life, 999 - n))
    }

    fn trace_id(&self) -> TraceId {
        TraceId::new(format!("trace-{}", self.life))
    }
}

/// What the dispatcher was asked.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Call {
    id: ExecutionId,
    attempt: u32,
    idempotency_key: Option<IdempotencyKey>,
}

/// The data directory and the records' clock, which outlive every life.
struct Disk {
    dir: tempfile::TempDir,
    clock: Arc<ManualClock>,
}

impl Disk {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
            clock: Arc::new(ManualClock::default()),
        }
    }

    fn open(&self) -> SqliteStore {
        SqliteStore::open(self.dir.path(), SqliteOptions::default(), self.clock.now())
            .expect("the store opens")
    }

    /// A control plane over the directory, in manual mode (the test drives every
    /// dispatch).
    fn start(&self, life: &'static str) -> Life {
        self.start_on(self.open(), life)
    }

    fn start_on(&self, store: SqliteStore, life: &'static str) -> Life {
        let calls = Arc::new(Mutex::new(Vec::new()));
        let dispatch = {
            let calls = Arc::clone(&calls);
            Arc::new(ScriptedDispatch::new(move |request| {
                calls.lock().unwrap().push(Call {
                    id: request.execution_id.clone(),
                    attempt: request.attempt,
                    idempotency_key: request.idempotency_key.clone(),
                });
            }))
        };
        let parts = SchedulerParts {
            clock: Arc::clone(&self.clock) as Arc<dyn Clock>,
            ids: Arc::new(LifeIds {
                life,
                next: AtomicU64::new(0),
            }),
            executions: Arc::new(store.clone()) as Arc<dyn ExecutionStore>,
            idempotency: Arc::new(store.clone()) as Arc<dyn IdempotencyStore>,
            registry: Arc::new(store.clone()) as Arc<dyn FunctionRegistry>,
            ..SchedulerParts::in_memory(Arc::clone(&dispatch) as Arc<dyn Dispatch>)
        };
        let config = SchedulerConfig {
            waiters_drive_when_manual: false,
            retry_backoff: BACKOFF,
            ..SchedulerConfig::default()
        };
        Life {
            store,
            scheduler: Scheduler::new(parts, config),
            dispatch,
            calls,
        }
    }
}

/// One run of the control plane.
struct Life {
    store: SqliteStore,
    scheduler: Scheduler,
    dispatch: Arc<ScriptedDispatch>,
    calls: Arc<Mutex<Vec<Call>>>,
}

impl Life {
    async fn register(&self, name: &str, overrides: serde_json::Value) -> RegisteredFunction {
        let mut spec = json!({
            "name": name, "image": "i", "executionMode": "POOL",
            "endpointUrl": "http://127.0.0.1:9/", "timeoutMs": 300_000,
        });
        for (field, value) in overrides.as_object().unwrap() {
            spec[field] = value.clone();
        }
        let spec = FunctionSpec::from_json(&spec).unwrap();
        within(self.scheduler.register_function(spec))
            .await
            .expect("registered")
    }

    async fn submit(&self, function: &str, input: &str, options: SubmitOptions) -> Submitted {
        self.try_submit(function, input, options)
            .await
            .expect("accepted")
    }

    async fn try_submit(
        &self,
        function: &str,
        input: &str,
        options: SubmitOptions,
    ) -> Result<Submitted, SubmitError> {
        let request = InvocationRequest {
            input: Payload::string(input),
            metadata: Default::default(),
        };
        let function = FunctionName::parse(function).unwrap();
        within(self.scheduler.submit(&function, request, options)).await
    }

    /// `:enqueue`.
    async fn enqueue(&self, function: &str, input: &str) -> ExecutionId {
        self.submit(function, input, SubmitOptions::default())
            .await
            .execution_id
    }

    async fn tick(&self, function: &str) -> Option<JoinHandle<()>> {
        let function = FunctionName::parse(function).unwrap();
        self.scheduler.tick_once(&function).await.unwrap()
    }

    /// `:drain-once`.
    async fn drain(&self, function: &str) {
        let attempt = self.tick(function).await.expect("work to dispatch");
        within(attempt).await.expect("the attempt's task ends");
    }

    /// What the store holds (what survives a crash).
    async fn stored(&self, id: &ExecutionId) -> ExecutionRecord {
        ExecutionStore::get(&self.store, id)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("no record of {id}"))
    }

    fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }

    async fn restore(&self) -> Restored {
        within(self.scheduler.restore()).await.expect("restored")
    }

    /// The process dies: nothing is shut down, and the store commits only what it was
    /// handed.
    async fn crash(&self) {
        self.store.close().await;
    }

    /// A clean stop (every waiter answered), then the store closes.
    async fn stop(&self) {
        within(self.scheduler.shutdown(Duration::from_secs(5))).await;
        assert_eq!(self.scheduler.live_executions(), Vec::new());
        self.store.close().await;
    }
}

async fn within<T>(work: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(30), work)
        .await
        .expect("bounded wait ran out")
}

/// A dispatch the test holds until the crash, and its gate.
async fn hold_dispatch(life: &Life, function: &str) -> (JoinHandle<()>, Gate) {
    let (step, mut gate) = gate();
    life.dispatch.script(function, [step]);
    let attempt = life.tick(function).await.expect("work to dispatch");
    within(gate.started()).await;
    (attempt, gate)
}

fn keyed(key: &str) -> SubmitOptions {
    SubmitOptions {
        idempotency_key: Some(IdempotencyKey::new(key)),
        ..SubmitOptions::default()
    }
}

fn answer(output: &str) -> DispatchSuccess {
    DispatchSuccess::warm(Payload::string(output))
}

fn first_attempt(id: &ExecutionId) -> Call {
    Call {
        id: id.clone(),
        attempt: 1,
        idempotency_key: None,
    }
}

#[tokio::test]
async fn functions_and_queued_executions_come_back_in_their_order() {
    let disk = Disk::new();
    let before = disk.start("before");
    let f = before
        .register(
            "f",
            json!({"concurrency": 1, "queueSize": 7, "maxRetries": 2, "env": {"A": "1"}}),
        )
        .await;
    let g = before.register("g", json!({})).await;
    let mut queued = Vec::new();
    for input in ["first", "second", "third"] {
        disk.clock.advance_ms(1);
        queued.push(before.enqueue("f", input).await);
    }
    before.crash().await;

    let after = disk.start("after");
    let restored = after.restore().await;
    let expected = Restored {
        functions: 2,
        queued: 3,
        ..Restored::default()
    };
    assert_eq!(restored, expected);
    assert_eq!(after.scheduler.function("f"), Some(f), "same spec");
    assert_eq!(after.scheduler.function("g"), Some(g));
    let queue = after.scheduler.queue_snapshot("f").unwrap();
    assert_eq!(queue.queued, queued, "in the order they were queued");
    assert_eq!(queue.capacity, 7);

    after
        .dispatch
        .script("f", [Step::Echo, Step::Echo, Step::Echo]);
    for _ in &queued {
        after.drain("f").await;
    }
    let calls: Vec<Call> = queued.iter().map(first_attempt).collect();
    assert_eq!(after.calls(), calls);
    for (id, input) in queued.iter().zip(["first", "second", "third"]) {
        let record = after.stored(id).await;
        assert_eq!(record.state, ExecutionState::Success);
        assert_eq!(
            record.output,
            Some(Payload::string(input)),
            "its input kept"
        );
    }
    after.stop().await;
}

#[tokio::test]
async fn an_attempt_cut_short_runs_again_as_the_next_attempt_never_as_the_same_one() {
    let disk = Disk::new();
    let before = disk.start("before");
    before.register("f", json!({"maxRetries": 3})).await;
    let id = before.submit("f", "x", keyed("order-7")).await.execution_id;
    let (_attempt, _cut_short) = hold_dispatch(&before, "f").await;
    let running = before.stored(&id).await;
    assert_eq!(
        (running.state, running.attempt),
        (ExecutionState::Running, 1),
        "committed before the dispatch"
    );
    before.crash().await;

    let after = disk.start("after");
    let restored = after.restore().await;
    let expected = Restored {
        functions: 1,
        redispatched: 1,
        ..Restored::default()
    };
    assert_eq!(restored, expected);
    let requeued = after.stored(&id).await;
    assert_eq!(
        (requeued.state, requeued.attempt),
        (ExecutionState::Queued, 2)
    );
    let replay = after.submit("f", "x", keyed("order-7")).await;
    assert!(replay.replayed, "the key still names it");
    assert_eq!(replay.execution_id, id);

    let (attempt, again) = hold_dispatch(&after, "f").await;
    let late = after
        .scheduler
        .complete(
            &id,
            Some(1),
            Completion::Success(answer("from attempt 1")),
            CompletionSource::Callback,
        )
        .await;
    let stale = IgnoredBecause::StaleAttempt {
        reported: 1,
        current: 2,
    };
    assert_eq!(late, Ok(CompletionOutcome::Ignored(stale)));
    assert_eq!(after.stored(&id).await.state, ExecutionState::Running);

    assert!(again.release(Ok(answer("from attempt 2"))));
    within(attempt).await.unwrap();
    let done = after.stored(&id).await;
    assert_eq!((done.state, done.attempt), (ExecutionState::Success, 2));
    assert_eq!(done.output, Some(Payload::string("from attempt 2")));
    let sent_before = Call {
        idempotency_key: Some(IdempotencyKey::new("order-7")),
        ..first_attempt(&id)
    };
    assert_eq!(before.calls(), [sent_before]);
    let sent_after = Call {
        attempt: 2,
        ..first_attempt(&id)
    };
    assert_eq!(after.calls(), [sent_after], "attempt 1 is never sent again");
    after.stop().await;
}

#[tokio::test]
async fn an_attempt_cut_short_in_its_last_try_ends_as_control_plane_restarted() {
    let disk = Disk::new();
    let before = disk.start("before");
    before.register("f", json!({"maxRetries": 1})).await;
    let id = before.enqueue("f", "x").await;
    let (_attempt, _cut_short) = hold_dispatch(&before, "f").await;
    before.crash().await;

    let after = disk.start("after");
    let restored = after.restore().await;
    let expected = Restored {
        functions: 1,
        ended: 1,
        ..Restored::default()
    };
    assert_eq!(restored, expected);
    let ended = after.stored(&id).await;
    assert_eq!((ended.state, ended.attempt), (ExecutionState::Error, 1));
    let error = ended.error.expect("why it ended");
    assert!(
        error.has_code(ErrorCode::ControlPlaneRestarted),
        "{error:?}"
    );
    assert_eq!(after.scheduler.live_executions(), Vec::new());
    assert!(after.tick("f").await.is_none(), "nothing to dispatch");
    assert_eq!(after.calls(), Vec::new());
    after.stop().await;
}

#[tokio::test]
async fn a_retry_waiting_out_its_backoff_keeps_its_due_time_across_a_restart() {
    let disk = Disk::new();
    let before = disk.start("before");
    before.register("f", json!({"maxRetries": 3})).await;
    before.dispatch.script("f", [Step::Http500]);
    let id = before.enqueue("f", "x").await;
    before.drain("f").await;
    let waiting = before.stored(&id).await;
    assert_eq!(
        (waiting.state, waiting.attempt),
        (ExecutionState::Queued, 2)
    );
    let due = waiting.enqueued_at.plus(BACKOFF.delay(&id, 2));
    before.crash().await;

    // The restart takes a while, less than the backoff.
    disk.clock.advance_ms(10_000);
    let after = disk.start("after");
    let restored = after.restore().await;
    let expected = Restored {
        functions: 1,
        queued: 1,
        ..Restored::default()
    };
    assert_eq!(restored, expected);
    after.dispatch.script("f", [Step::Echo]);

    disk.clock.advance_ms(due.since(disk.clock.now()).0 - 1);
    assert!(after.tick("f").await.is_none(), "not before its due time");
    assert_eq!(after.calls(), Vec::new());
    disk.clock.advance_ms(1);
    after.drain("f").await;
    let retried = Call {
        attempt: 2,
        ..first_attempt(&id)
    };
    assert_eq!(after.calls(), [retried], "dispatched once due");
    let done = after.stored(&id).await;
    assert_eq!((done.state, done.attempt), (ExecutionState::Success, 2));
    after.stop().await;
}

#[tokio::test]
async fn idempotency_keys_used_before_a_crash_name_the_same_executions_after_it() {
    let disk = Disk::new();
    let before = disk.start("before");
    before.register("f", json!({})).await;
    before.dispatch.script("f", [Step::Echo]);
    let finished = before.submit("f", "a", keyed("done")).await.execution_id;
    before.drain("f").await;
    let pending = before.submit("f", "b", keyed("pending")).await.execution_id;
    before.crash().await;

    let after = disk.start("after");
    after.restore().await;
    let replay = after.submit("f", "a", keyed("done")).await;
    assert!(replay.replayed);
    assert_eq!(replay.execution_id, finished);
    let record = replay.record.expect("its record");
    assert_eq!(record.state, ExecutionState::Success);
    assert_eq!(record.output, Some(Payload::string("a")));
    let replay = after.submit("f", "b", keyed("pending")).await;
    assert!(replay.replayed);
    assert_eq!(replay.execution_id, pending);
    let reused = after.try_submit("f", "other", keyed("done")).await;
    assert!(
        matches!(reused, Err(SubmitError::IdempotencyKeyReused(_))),
        "{reused:?}"
    );
    assert_eq!(
        after.scheduler.live_executions().len(),
        1,
        "no new execution"
    );
    after.stop().await;
}

#[tokio::test]
async fn executions_of_a_function_gone_from_the_registry_end_as_function_removed() {
    let disk = Disk::new();
    let before = disk.start("before");
    before.register("f", json!({"concurrency": 1})).await;
    before.register("g", json!({})).await;
    let running = before.enqueue("f", "a").await;
    let (_attempt, _cut_short) = hold_dispatch(&before, "f").await;
    let queued = before.enqueue("f", "b").await;
    let other = before.enqueue("g", "c").await;
    before.crash().await;

    let store = disk.open();
    let removed = FunctionRegistry::remove(&store, "f").await.unwrap();
    assert!(removed.is_some());
    let after = disk.start_on(store, "after");
    let restored = after.restore().await;
    let expected = Restored {
        functions: 1,
        queued: 1,
        ended: 2,
        ..Restored::default()
    };
    assert_eq!(restored, expected);
    assert_eq!(after.scheduler.function("f"), None);
    for id in [&running, &queued] {
        let ended = after.stored(id).await;
        assert_eq!(ended.state, ExecutionState::Error, "{id}");
        let error = ended.error.expect("why it ended");
        assert!(
            error.has_code(ErrorCode::FunctionRemoved),
            "{id}: {error:?}"
        );
    }
    assert_eq!(after.stored(&other).await.state, ExecutionState::Queued);
    after.dispatch.script("g", [Step::Echo]);
    after.drain("g").await;
    assert_eq!(after.calls(), [first_attempt(&other)]);
    after.stop().await;
}

#[tokio::test]
async fn shutdown_over_a_durable_store_leaves_committed_work_to_the_restart() {
    let disk = Disk::new();
    let before = disk.start("before");
    before
        .register("f", json!({"concurrency": 1, "maxRetries": 3}))
        .await;
    let running = before.enqueue("f", "a").await;
    let (_attempt, cut_short) = hold_dispatch(&before, "f").await;
    let queued = before.enqueue("f", "b").await;
    let sync_options = SubmitOptions {
        wait: true,
        ..SubmitOptions::default()
    };
    let sync = before.submit("f", "c", sync_options).await;
    let mut waiter = sync.waiter.expect("subscribed");

    // The held attempt never answers: the grace runs out.
    within(before.scheduler.shutdown(Duration::from_millis(200))).await;
    assert_eq!(before.scheduler.live_executions(), Vec::new());
    let answered = within(before.scheduler.wait(&mut waiter, None))
        .await
        .unwrap();
    assert_eq!(answered.state, ExecutionState::Error);
    let error = answered.error.as_ref().expect("why it ended");
    assert!(error.has_code(ErrorCode::Shutdown), "{error:?}");
    assert_eq!(
        before.stored(&sync.execution_id).await,
        answered,
        "its end is committed"
    );
    let left = before.stored(&queued).await;
    assert_eq!((left.state, left.attempt), (ExecutionState::Queued, 1));
    let left = before.stored(&running).await;
    assert_eq!((left.state, left.attempt), (ExecutionState::Running, 1));
    assert!(
        !cut_short.release(Ok(answer("late"))),
        "the attempt was let go"
    );
    before.store.close().await;

    let after = disk.start("after");
    let restored = after.restore().await;
    let expected = Restored {
        functions: 1,
        queued: 1,
        redispatched: 1,
        ended: 0,
    };
    assert_eq!(restored, expected);
    after.dispatch.script("f", [Step::Echo, Step::Echo]);
    after.drain("f").await;
    after.drain("f").await;
    let mut calls = after.calls();
    calls.sort_by_key(|call| call.attempt);
    let again = Call {
        attempt: 2,
        ..first_attempt(&running)
    };
    assert_eq!(calls, [first_attempt(&queued), again]);
    for id in [&running, &queued] {
        assert_eq!(after.stored(id).await.state, ExecutionState::Success);
    }
    after.stop().await;
}

#[tokio::test]
async fn a_key_whose_commit_a_crash_cut_off_still_names_its_execution_after_it() {
    // A submission commits the record, then the key. A crash between the two commits
    // leaves an execution that the restart takes up and runs, that no key names, and
    // whose client got no answer and so tries again with the same key.
    let disk = Disk::new();
    let before = disk.start("before");
    before.register("f", json!({})).await;
    let cut_off = before.submit("f", "a", keyed("cut-off")).await.execution_id;
    before.crash().await;
    let store = disk.open();
    let f = FunctionName::parse("f").unwrap();
    let key = IdempotencyKey::new("cut-off");
    IdempotencyStore::forget(&store, &f, &key, &cut_off)
        .await
        .unwrap();

    let after = disk.start_on(store, "after");
    after.restore().await;
    let retry = after.submit("f", "a", keyed("cut-off")).await;
    assert!(retry.replayed, "a second execution for one key");
    assert_eq!(retry.execution_id, cut_off);
    assert_eq!(after.scheduler.live_executions().len(), 1);
    after.stop().await;
}
