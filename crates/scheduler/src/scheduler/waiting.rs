//! Waiting for an execution's result: sync callers and replays.

use super::*;

/// After a sync caller's deadline has ended its execution (or found it already ending),
/// how long it waits for the completion that won to finish writing. That completion
/// never awaits anything but its record write, so this bound is a guard against a
/// store that hangs, not a wait anyone should see.
const SETTLE_LIMIT: Duration = Duration::from_secs(5);

/// A subscription to one execution's final record. Taken when the execution is
/// submitted (or replayed, [`SubmitOptions::wait`]), it cannot miss the end however
/// soon that comes, and it carries the final record itself: a record evicted from the
/// store right after it finished still reaches its caller. Dropping it is fine: the
/// execution forgets abandoned subscriptions.
#[derive(Debug)]
pub struct Waiter {
    id: ExecutionId,
    state: WaitState,
}

#[derive(Debug)]
enum WaitState {
    /// The execution is live: its end is sent here.
    Pending(oneshot::Receiver<ExecutionRecord>),
    /// It had finished when the subscription was taken; its record, if it was known.
    Finished(Option<ExecutionRecord>),
}

impl Waiter {
    pub(super) fn pending(id: ExecutionId, receiver: oneshot::Receiver<ExecutionRecord>) -> Self {
        Self {
            id,
            state: WaitState::Pending(receiver),
        }
    }

    /// A waiter for an execution that had already finished.
    pub(super) fn finished(id: ExecutionId, record: Option<ExecutionRecord>) -> Self {
        Self {
            id,
            state: WaitState::Finished(record),
        }
    }

    /// The execution waited for.
    pub fn execution_id(&self) -> &ExecutionId {
        &self.id
    }
}

impl Scheduler {
    /// Subscribes to an execution's final record (see [`Waiter`]).
    pub fn waiter(&self, id: &ExecutionId) -> Waiter {
        match self.subscribe(id) {
            Some(receiver) => Waiter::pending(id.clone(), receiver),
            None => Waiter::finished(id.clone(), None),
        }
    }

    /// How many subscriptions a live execution holds (`None` once it has ended): for
    /// inspection and tests. Abandoned ones count until the list next prunes them.
    pub fn waiters(&self, id: &ExecutionId) -> Option<usize> {
        self.inner.live.get(id).map(|live| live.waiters.len())
    }

    /// Waits for an execution's final record; see [`Self::wait`].
    pub async fn wait_for_result(
        &self,
        id: &ExecutionId,
        timeout: Option<Duration>,
    ) -> Result<ExecutionRecord, WaitError> {
        let mut waiter = self.waiter(id);
        self.wait(&mut waiter, timeout).await
    }

    /// Waits for the final record `waiter` is subscribed to. With a `timeout`, an
    /// execution still unfinished when it runs out is ended as `timeout` (whatever
    /// state it was in; a queued one is never dispatched) and that final record is
    /// returned: this is the deadline of the caller that owns the execution. Any number
    /// of callers may wait on one execution; each is woken exactly once. Without a
    /// background loop the wait drives the function's queue itself (see
    /// [`Self::wait_at_most`]). Cancel-safe: `waiter` can be waited on again.
    pub async fn wait(
        &self,
        waiter: &mut Waiter,
        timeout: Option<Duration>,
    ) -> Result<ExecutionRecord, WaitError> {
        let id = waiter.id.clone();
        let receiver = match &mut waiter.state {
            WaitState::Finished(record) => return self.final_record(&id, record.clone()).await,
            WaitState::Pending(receiver) => receiver,
        };
        let woken = match timeout {
            None => self.woken(&id, receiver).await,
            Some(limit) => match tokio::time::timeout(limit, self.woken(&id, receiver)).await {
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
                    // Whatever won (this timeout or a result that beat it), the
                    // execution is ending now; its end reaches `receiver`.
                    let _ = self
                        .complete(&id, None, completion, CompletionSource::SyncTimeout)
                        .await;
                    match tokio::time::timeout(SETTLE_LIMIT, receiver).await {
                        Ok(woken) => woken,
                        Err(_) => {
                            tracing::error!(execution_id = %id, "the completion that ended this execution did not finish writing it");
                            return self.final_record(&id, None).await;
                        }
                    }
                }
            },
        };
        let record = woken.ok();
        // Settled into a record once received: waiting again answers the same.
        waiter.state = WaitState::Finished(record.clone());
        self.final_record(&id, record).await
    }

    /// Waits at most `limit` for the final record `waiter` is subscribed to, and then
    /// returns the record as it stands, finished or not, without changing the
    /// execution: for a caller that shares an execution it does not own (an idempotent
    /// replay), whose patience must not cut short the owner's. Without a background
    /// loop (manual mode) the wait drives the function's queue itself, in FIFO order,
    /// so a sync caller still gets its answer.
    pub async fn wait_at_most(
        &self,
        waiter: &mut Waiter,
        limit: Duration,
    ) -> Result<ExecutionRecord, WaitError> {
        let id = waiter.id.clone();
        match &mut waiter.state {
            WaitState::Finished(record) => self.final_record(&id, record.clone()).await,
            WaitState::Pending(receiver) => {
                match tokio::time::timeout(limit, self.woken(&id, receiver)).await {
                    Ok(woken) => {
                        let record = woken.ok();
                        waiter.state = WaitState::Finished(record.clone());
                        self.final_record(&id, record).await
                    }
                    Err(_) => self.final_record(&id, None).await,
                }
            }
        }
    }

    /// Resolves when `waiter` is woken. With no background loop, nobody else moves the
    /// queue, so this caller does: it takes queued work (its own execution or what is
    /// ahead of it) whenever a slot is free, and otherwise waits for one to be released
    /// or for a retry in the queue to come due.
    async fn woken(
        &self,
        id: &ExecutionId,
        waiter: &mut oneshot::Receiver<ExecutionRecord>,
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
            match self.tick_runtime(&runtime) {
                Some(attempt) => tokio::select! {
                    woken = &mut *waiter => return woken,
                    _ = attempt => {}
                },
                None => {
                    let next_due = runtime.queue.next_due();
                    let until_due = next_due.map(|due| due.since(self.inner.parts.clock.now()));
                    tokio::select! {
                        woken = &mut *waiter => return woken,
                        () = released => {}
                        () = sleep_for(until_due) => {}
                    }
                }
            }
        }
    }

    /// Adds a waiter to a live execution. Waiters whose caller has gone (a replay that
    /// stopped waiting) are dropped as the list grows, so a storm of short waits on one
    /// long execution cannot pile up: the list stays within twice the callers still
    /// waiting, at amortised O(1) per subscription.
    pub(super) fn subscribe(&self, id: &ExecutionId) -> Option<oneshot::Receiver<ExecutionRecord>> {
        let mut live = self.inner.live.get_mut(id)?;
        let waiters = &mut live.waiters;
        if waiters.len() >= 8 && waiters.len().is_power_of_two() {
            waiters.retain(|waiter| !waiter.is_closed());
        }
        let (tx, rx) = oneshot::channel();
        waiters.push(tx);
        Some(rx)
    }

    /// `received`, else the record as the store has it.
    async fn final_record(
        &self,
        id: &ExecutionId,
        received: Option<ExecutionRecord>,
    ) -> Result<ExecutionRecord, WaitError> {
        if let Some(record) = received {
            return Ok(record);
        }
        self.execution(id)
            .await?
            .ok_or_else(|| WaitError::UnknownExecution(id.clone()))
    }
}

/// Sleeps for `duration`; never resolves for `None`.
pub(super) async fn sleep_for(duration: Option<DurationMs>) {
    match duration {
        Some(DurationMs(ms)) => tokio::time::sleep(Duration::from_millis(ms)).await,
        None => std::future::pending().await,
    }
}
