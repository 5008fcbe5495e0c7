//! A store that is slow or failing: what a caller is told, and that the decision it was
//! told about is carried out all the same. A completion or submission whose caller goes
//! away while the store has not answered still lands whole; a write the store refuses
//! for a fault is not acknowledged, and lands by itself once the store is back; a
//! submission the store refuses leaves nothing behind, not even its idempotency key.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use core_types::testing::SequentialIds;
use core_types::{
    Dispatch, DispatchSuccess, DurationMs, ExecutionId, ExecutionState, FunctionName, FunctionSpec,
    IdGenerator, IdempotencyKey, InvocationRequest, Payload, Timestamp,
};
use futures::FutureExt;
use scheduler::testing::{ScriptedDispatch, Step, gate};
use scheduler::{
    CompleteError, Completion, CompletionOutcome, CompletionSource, Scheduler, SchedulerConfig,
    SchedulerParts, SubmitError, SubmitOptions,
};
use serde_json::json;
use store::{
    ApplyError, ClaimOutcome, ClaimToken, Durability, ExecutionRecord, ExecutionStore, Fingerprint,
    IdempotencyStore, InsertError, MemoryExecutionStore, MemoryIdempotencyStore, RecordChange,
    StoreUnavailable, StoredExecution,
};

/// Writes of one kind wait here while it is closed, until the test opens it.
#[derive(Default)]
struct Hold {
    closed: AtomicBool,
    opened: tokio::sync::Notify,
    /// How many writes have come to it while closed.
    reached: AtomicUsize,
}

impl Hold {
    fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
    }

    fn open(&self) {
        self.closed.store(false, Ordering::SeqCst);
        self.opened.notify_waiters();
    }

    fn reached(&self) -> usize {
        self.reached.load(Ordering::SeqCst)
    }

    async fn pass(&self) {
        if !self.closed.load(Ordering::SeqCst) {
            return;
        }
        self.reached.fetch_add(1, Ordering::SeqCst);
        loop {
            let opened = self.opened.notified();
            tokio::pin!(opened);
            opened.as_mut().enable();
            if !self.closed.load(Ordering::SeqCst) {
                return;
            }
            opened.await;
        }
    }
}

/// While on, writes of one kind are refused as by a disk that went away.
#[derive(Default)]
struct Fault {
    on: AtomicBool,
    refused: AtomicUsize,
}

impl Fault {
    fn set(&self, on: bool) {
        self.on.store(on, Ordering::SeqCst);
    }

    fn refused(&self) -> usize {
        self.refused.load(Ordering::SeqCst)
    }

    fn check(&self) -> Result<(), StoreUnavailable> {
        if !self.on.load(Ordering::SeqCst) {
            return Ok(());
        }
        self.refused.fetch_add(1, Ordering::SeqCst);
        Err(StoreUnavailable::new("the disk went away (test)"))
    }
}

/// The in-memory execution store, with its record changes held or its writes refused
/// on demand. Reads always answer.
struct UnsteadyRecords {
    inner: MemoryExecutionStore,
    changes: Hold,
    writes: Fault,
    removals: Fault,
}

#[async_trait]
impl ExecutionStore for UnsteadyRecords {
    async fn insert(
        &self,
        execution: StoredExecution,
        durability: Durability,
    ) -> Result<(), InsertError> {
        self.writes.check()?;
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
        self.changes.pass().await;
        self.writes.check()?;
        self.inner.apply(id, change, durability).await
    }

    async fn remove(&self, id: &ExecutionId) -> Result<bool, StoreUnavailable> {
        self.removals.check()?;
        self.inner.remove(id).await
    }

    async fn evict_expired(&self, now: Timestamp) -> Result<usize, StoreUnavailable> {
        self.inner.evict_expired(now).await
    }

    async fn unfinished(&self) -> Result<Vec<StoredExecution>, StoreUnavailable> {
        self.inner.unfinished().await
    }

    fn stats(&self) -> store::StoreStats {
        self.inner.stats()
    }
}

/// The in-memory idempotency store, with publication held or refused on demand (a
/// refused publication gives the claim up, as the port says).
struct UnsteadyClaims {
    inner: MemoryIdempotencyStore,
    publishing: Hold,
    publish: Fault,
}

#[async_trait]
impl IdempotencyStore for UnsteadyClaims {
    async fn claim(
        &self,
        function: &FunctionName,
        key: &IdempotencyKey,
        fingerprint: Fingerprint,
        now: Timestamp,
    ) -> Result<ClaimOutcome, StoreUnavailable> {
        self.inner.claim(function, key, fingerprint, now).await
    }

    async fn publish(
        &self,
        token: ClaimToken,
        execution: ExecutionId,
        now: Timestamp,
    ) -> Result<(), StoreUnavailable> {
        self.publishing.pass().await;
        if let Err(fault) = self.publish.check() {
            self.inner.abandon(token).await;
            return Err(fault);
        }
        self.inner.publish(token, execution, now).await
    }

    async fn abandon(&self, token: ClaimToken) {
        self.inner.abandon(token).await;
    }

    async fn forget(
        &self,
        function: &FunctionName,
        key: &IdempotencyKey,
        execution: &ExecutionId,
    ) -> Result<(), StoreUnavailable> {
        self.inner.forget(function, key, execution).await
    }

    async fn evict_expired(&self, now: Timestamp) -> Result<usize, StoreUnavailable> {
        self.inner.evict_expired(now).await
    }
}

/// What the dispatcher saw of one call: which attempt, and the record's state in the
/// store at that moment.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Seen {
    id: ExecutionId,
    attempt: u32,
    stored: Option<ExecutionState>,
    idempotency_key: Option<IdempotencyKey>,
}

/// A manual-mode scheduler (the test drives every dispatch) over the unsteady stores.
struct Harness {
    scheduler: Scheduler,
    records: Arc<UnsteadyRecords>,
    claims: Arc<UnsteadyClaims>,
    dispatch: Arc<ScriptedDispatch>,
    seen: Arc<Mutex<Vec<Seen>>>,
    ids: Arc<SequentialIds>,
    f: FunctionName,
}

impl Harness {
    async fn new(concurrency: u32) -> Self {
        let ttl = DurationMs(5 * 60 * 1000);
        let records = Arc::new(UnsteadyRecords {
            inner: MemoryExecutionStore::new(ttl),
            changes: Hold::default(),
            writes: Fault::default(),
            removals: Fault::default(),
        });
        let claims = Arc::new(UnsteadyClaims {
            inner: MemoryIdempotencyStore::new(ttl),
            publishing: Hold::default(),
            publish: Fault::default(),
        });
        let seen = Arc::new(Mutex::new(Vec::new()));
        let dispatch = {
            let (records, seen) = (Arc::clone(&records), Arc::clone(&seen));
            Arc::new(ScriptedDispatch::new(move |request| {
                // The memory store answers at once: what it holds as the call is made.
                let stored = records.inner.get(&request.execution_id).now_or_never();
                let stored = stored.and_then(Result::ok).flatten().map(|r| r.state);
                seen.lock().unwrap().push(Seen {
                    id: request.execution_id.clone(),
                    attempt: request.attempt,
                    stored,
                    idempotency_key: request.idempotency_key.clone(),
                });
            }))
        };
        let ids = Arc::new(SequentialIds::default());
        let parts = SchedulerParts {
            executions: Arc::clone(&records) as Arc<dyn ExecutionStore>,
            idempotency: Arc::clone(&claims) as Arc<dyn IdempotencyStore>,
            ids: Arc::clone(&ids) as Arc<dyn IdGenerator>,
            ..SchedulerParts::in_memory(Arc::clone(&dispatch) as Arc<dyn Dispatch>)
        };
        let config = SchedulerConfig {
            waiters_drive_when_manual: false,
            ..SchedulerConfig::default()
        };
        let scheduler = Scheduler::new(parts, config);
        let spec = FunctionSpec::from_json(&json!({
            "name": "f", "image": "i", "executionMode": "POOL",
            "endpointUrl": "http://127.0.0.1:9/", "timeoutMs": 300_000,
            "concurrency": concurrency, "maxRetries": 3,
        }))
        .unwrap();
        scheduler.register_function(spec).await.unwrap();
        Self {
            scheduler,
            records,
            claims,
            dispatch,
            seen,
            ids,
            f: FunctionName::parse("f").unwrap(),
        }
    }

    async fn submit(
        &self,
        input: &str,
        options: SubmitOptions,
    ) -> Result<scheduler::Submitted, SubmitError> {
        within(self.scheduler.submit(&self.f, request(input), options)).await
    }

    /// The record as the store has it (the memory store answers at once).
    fn stored(&self, id: &ExecutionId) -> Option<ExecutionRecord> {
        let stored = self.records.inner.get(id).now_or_never();
        stored.expect("answered at once").unwrap()
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// Lets the scheduler's tasks run until `done` holds; panics if it never does.
    async fn until(&self, what: &str, mut done: impl FnMut(&Self) -> bool) {
        for _ in 0..10_000 {
            if done(self) {
                return;
            }
            tokio::task::yield_now().await;
        }
        panic!("never happened: {what}");
    }

    /// Shuts down and checks that nothing is left queued or running.
    async fn shut_down(&self) {
        within(self.scheduler.shutdown(Duration::from_secs(5))).await;
        assert_eq!(self.scheduler.live_executions(), Vec::new(), "nothing live");
    }
}

/// Every wait in these tests is bounded (by the paused clock: a hang fails at once).
async fn within<T>(work: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(30), work)
        .await
        .expect("bounded wait ran out")
}

fn keyed(key: &str) -> SubmitOptions {
    SubmitOptions {
        idempotency_key: Some(IdempotencyKey::new(key)),
        ..SubmitOptions::default()
    }
}

/// A sync invocation with a key: every step of it is written (without a key, a sync
/// invocation may be written only at its end).
fn waiting(key: &str) -> SubmitOptions {
    SubmitOptions {
        wait: true,
        ..keyed(key)
    }
}

fn refused_for_a_fault(submitted: &Result<scheduler::Submitted, SubmitError>) {
    let refused = matches!(submitted, Err(SubmitError::StoreUnavailable(_)));
    assert!(refused, "{submitted:?}");
}

fn request(input: &str) -> InvocationRequest {
    InvocationRequest {
        input: Payload::string(input),
        metadata: Default::default(),
    }
}

fn success(output: &str) -> Completion {
    Completion::Success(DispatchSuccess::warm(Payload::string(output)))
}

#[tokio::test(start_paused = true)]
async fn a_callback_whose_caller_goes_away_before_the_store_answers_still_ends_the_execution() {
    let t = Harness::new(1).await;
    let (step, mut dispatch) = gate();
    t.dispatch.script("f", [step]);
    let submitted = t.submit("x", waiting("k")).await.unwrap();
    let id = submitted.execution_id.clone();
    let attempt = t.scheduler.tick_once(&t.f).await.unwrap().expect("work");
    within(dispatch.started()).await;

    // The store takes its time; the runtime's callback connection breaks meanwhile.
    t.records.changes.close();
    let mut callback =
        Box::pin(
            t.scheduler
                .complete(&id, Some(1), success("done"), CompletionSource::Callback),
        );
    assert!(
        futures::poll!(callback.as_mut()).is_pending(),
        "the store has not answered"
    );
    drop(callback);
    assert_eq!(t.records.changes.reached(), 1, "the end is being written");
    let stored = t.stored(&id).unwrap();
    assert_eq!(stored.state, ExecutionState::Running, "not written yet");

    // The sync caller (with its deadline far off) is not answered before the store is.
    let mut waiter = submitted.waiter.expect("subscribed");
    let mut wait = Box::pin(t.scheduler.wait(&mut waiter, Some(Duration::from_secs(60))));
    assert!(futures::poll!(wait.as_mut()).is_pending());

    t.records.changes.open();
    let answered = within(wait).await.expect("its record");
    assert_eq!(answered.state, ExecutionState::Success, "{answered:?}");
    assert_eq!(answered.output, Some(Payload::string("done")));
    assert_eq!(t.stored(&id).unwrap(), answered, "the store has it too");
    within(attempt).await.expect("the attempt's task ends");
    assert!(
        !dispatch.release(Ok(DispatchSuccess::warm(Payload::string("late")))),
        "the dispatch was dropped once the callback won"
    );
    t.shut_down().await;
}

#[tokio::test(start_paused = true)]
async fn attempts_whose_running_write_is_slow_are_dispatched_once_it_lands() {
    let t = Harness::new(2).await;
    t.dispatch.script("f", [Step::Echo, Step::Echo]);
    let dropped = t.submit("a", SubmitOptions::default()).await.unwrap();
    let kept = t.submit("b", SubmitOptions::default()).await.unwrap();

    t.records.changes.close();
    // As the background loop does: the handle is not looked at.
    drop(t.scheduler.tick_once(&t.f).await.unwrap().expect("work"));
    let attempt = t.scheduler.tick_once(&t.f).await.unwrap().expect("work");
    t.until("both running writes reach the store", |t| {
        t.records.changes.reached() == 2
    })
    .await;
    for _ in 0..100 {
        tokio::task::yield_now().await;
    }
    assert_eq!(
        t.seen(),
        Vec::new(),
        "nothing is dispatched before `running` lands"
    );
    assert!(!attempt.is_finished());
    for id in [&dropped.execution_id, &kept.execution_id] {
        let stored = t.stored(id).unwrap();
        assert_eq!(stored.state, ExecutionState::Queued);
    }

    t.records.changes.open();
    within(attempt).await.expect("the attempt's task ends");
    let kept_record = t.stored(&kept.execution_id).unwrap();
    assert_eq!(
        kept_record.state,
        ExecutionState::Success,
        "the handle resolves after the record is final"
    );
    t.until("the one whose handle was dropped ends too", |t| {
        t.stored(&dropped.execution_id).unwrap().state == ExecutionState::Success
    })
    .await;
    let mut seen = t.seen();
    seen.sort_by(|a, b| a.id.cmp(&b.id));
    let running_at_dispatch = |id: &ExecutionId| Seen {
        id: id.clone(),
        attempt: 1,
        stored: Some(ExecutionState::Running),
        idempotency_key: None,
    };
    assert_eq!(
        seen,
        [
            running_at_dispatch(&dropped.execution_id),
            running_at_dispatch(&kept.execution_id)
        ],
        "each was dispatched once, with its `running` record already in the store"
    );
    t.shut_down().await;
}

#[tokio::test(start_paused = true)]
async fn a_completion_the_store_refuses_is_not_acknowledged_and_lands_once_the_store_is_back() {
    let t = Harness::new(1).await;
    let (step, mut dispatch) = gate();
    t.dispatch.script("f", [step]);
    let submitted = t.submit("x", waiting("k")).await.unwrap();
    let id = submitted.execution_id.clone();
    let attempt = t.scheduler.tick_once(&t.f).await.unwrap().expect("work");
    within(dispatch.started()).await;

    t.records.writes.set(true);
    let answered =
        within(
            t.scheduler
                .complete(&id, Some(1), success("done"), CompletionSource::Callback),
        )
        .await;
    assert!(
        matches!(answered, Err(CompleteError::StoreUnavailable(_))),
        "told at the first refusal: {answered:?}"
    );
    let stored = t.stored(&id).unwrap();
    assert_eq!(stored.state, ExecutionState::Running, "as before");

    let mut waiter = submitted.waiter.expect("subscribed");
    let mut wait = Box::pin(
        t.scheduler
            .wait(&mut waiter, Some(Duration::from_secs(600))),
    );
    let refused_at_first = t.records.writes.refused();
    let meanwhile = tokio::time::timeout(Duration::from_secs(5), wait.as_mut()).await;
    assert!(meanwhile.is_err(), "no answer while the store refuses");
    let refused = t.records.writes.refused() - refused_at_first;
    assert!(
        (2..=20).contains(&refused),
        "tried again, backing off: {refused} more tries in 5 s"
    );
    assert_eq!(t.stored(&id).unwrap().state, ExecutionState::Running);

    t.records.writes.set(false);
    let answered = within(wait).await.expect("its record");
    assert_eq!(answered.state, ExecutionState::Success);
    assert_eq!(answered.output, Some(Payload::string("done")));
    assert_eq!(t.stored(&id).unwrap(), answered, "landed by itself");
    within(attempt).await.expect("the attempt's task ends");
    assert!(!dispatch.release(Ok(DispatchSuccess::warm(Payload::string("late")))));
    // A second callback for it is now a late one.
    let late = t
        .scheduler
        .complete(&id, Some(1), success("again"), CompletionSource::Callback)
        .await;
    assert!(
        matches!(late, Ok(CompletionOutcome::Ignored(_))),
        "{late:?}"
    );
    t.shut_down().await;
}

#[tokio::test(start_paused = true)]
async fn a_submission_the_store_refuses_leaves_nothing_behind_and_its_key_free() {
    let t = Harness::new(1).await;
    t.records.writes.set(true);
    let plain = t.submit("a", SubmitOptions::default()).await;
    refused_for_a_fault(&plain);
    let with_key = t.submit("b", keyed("k")).await;
    refused_for_a_fault(&with_key);

    assert_eq!(t.scheduler.live_executions(), Vec::new(), "nothing live");
    let refused_ids = t.ids.issued();
    for id in &refused_ids {
        let record = t.scheduler.execution(id).await.unwrap();
        assert_eq!(record, None, "no record of {id}");
    }
    assert_eq!(t.scheduler.store_stats().records, 0);
    assert_eq!(t.scheduler.queued_input_bytes(), 0);
    let queue = t.scheduler.queue_snapshot("f").unwrap();
    assert_eq!(queue.queued, Vec::new());
    assert!(t.scheduler.tick_once(&t.f).await.unwrap().is_none());

    t.records.writes.set(false);
    let first = t.submit("b", keyed("k")).await.expect("accepted now");
    assert!(!first.replayed, "the key was free again");
    assert!(
        !refused_ids.contains(&first.execution_id),
        "a new execution"
    );
    let again = t.submit("b", keyed("k")).await.unwrap();
    assert!(again.replayed);
    assert_eq!(again.execution_id, first.execution_id);
    t.shut_down().await;
}

#[tokio::test(start_paused = true)]
async fn a_key_that_cannot_be_published_refuses_its_submission_and_leaves_no_record() {
    let t = Harness::new(1).await;
    t.claims.publish.set(true);
    let refused = t.submit("x", keyed("k")).await;
    refused_for_a_fault(&refused);
    let [refused_id] = t.ids.issued().try_into().unwrap();
    assert_eq!(t.scheduler.execution(&refused_id).await.unwrap(), None);
    assert_eq!(
        t.scheduler.store_stats().records,
        0,
        "its record was removed"
    );
    assert_eq!(t.scheduler.live_executions(), Vec::new());
    assert!(t.scheduler.tick_once(&t.f).await.unwrap().is_none());

    t.claims.publish.set(false);
    let first = t.submit("x", keyed("k")).await.expect("accepted now");
    assert!(!first.replayed);
    assert_ne!(first.execution_id, refused_id);
    let again = t.submit("x", keyed("k")).await.unwrap();
    assert!(again.replayed);
    assert_eq!(again.execution_id, first.execution_id);
    t.shut_down().await;
}

#[tokio::test(start_paused = true)]
async fn the_record_of_a_refused_submission_that_cannot_be_removed_at_once_is_removed_later() {
    // A SQLite store fails a removal grouped in one commit with inserts the disk has no
    // room for: left there, a restart would run the refused execution.
    let t = Harness::new(1).await;
    t.claims.publish.set(true);
    t.records.removals.set(true);
    let refused = t.submit("x", keyed("k")).await;
    refused_for_a_fault(&refused);
    let [refused_id] = t.ids.issued().try_into().unwrap();
    assert_eq!(t.scheduler.live_executions(), Vec::new());
    within(async {
        while t.records.removals.refused() < 3 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(
        t.stored(&refused_id).is_some(),
        "not removed while it cannot be"
    );

    t.records.removals.set(false);
    within(async {
        while t.stored(&refused_id).is_some() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert_eq!(t.scheduler.store_stats().records, 0);
    assert!(t.scheduler.tick_once(&t.f).await.unwrap().is_none());
    t.shut_down().await;
}

#[tokio::test(start_paused = true)]
async fn a_keyed_submission_whose_caller_goes_away_is_still_accepted_whole() {
    let t = Harness::new(1).await;
    t.dispatch.script("f", [Step::Echo]);
    t.claims.publishing.close();
    let mut submit = Box::pin(t.scheduler.submit(&t.f, request("x"), keyed("k")));
    assert!(futures::poll!(submit.as_mut()).is_pending());
    drop(submit);
    t.until("the claim is being published", |t| {
        t.claims.publishing.reached() == 1
    })
    .await;
    let [id] = t.ids.issued().try_into().unwrap();
    let stored = t.stored(&id).expect("written with its work first");
    assert_eq!(stored.state, ExecutionState::Queued);
    assert!(
        t.scheduler.tick_once(&t.f).await.unwrap().is_none(),
        "not dispatchable before its key names it"
    );

    t.claims.publishing.open();
    t.until("the execution is accepted", |t| {
        t.scheduler.live_executions().len() == 1
    })
    .await;
    let replay = t.submit("x", keyed("k")).await.unwrap();
    assert!(replay.replayed, "the key names it");
    assert_eq!(replay.execution_id, id);
    let attempt = t.scheduler.tick_once(&t.f).await.unwrap().expect("work");
    within(attempt).await.unwrap();
    assert_eq!(
        t.seen(),
        [Seen {
            id: id.clone(),
            attempt: 1,
            stored: Some(ExecutionState::Running),
            idempotency_key: Some(IdempotencyKey::new("k")),
        }]
    );
    assert_eq!(t.stored(&id).unwrap().state, ExecutionState::Success);
    t.shut_down().await;
}
