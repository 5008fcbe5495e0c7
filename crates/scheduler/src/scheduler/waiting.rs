//! Waiting for an execution's result: sync callers and replays.

use super::*;

impl Scheduler {
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
    pub(super) async fn woken(
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

    pub(super) fn subscribe(&self, id: &ExecutionId) -> Option<oneshot::Receiver<ExecutionRecord>> {
        let mut live = self.inner.live.get_mut(id)?;
        let (tx, rx) = oneshot::channel();
        live.waiters.push(tx);
        Some(rx)
    }

    pub(super) async fn final_record(
        &self,
        id: &ExecutionId,
    ) -> Result<ExecutionRecord, WaitError> {
        self.inner
            .parts
            .executions
            .get(id)
            .await
            .ok_or_else(|| WaitError::UnknownExecution(id.clone()))
    }
}
