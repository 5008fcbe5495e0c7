//! The background loop, the eviction sweep, owned tasks and shutdown.

use super::*;

impl Scheduler {
    pub(super) fn spawn_owned<F>(&self, task: F) -> JoinHandle<F::Output>
    where
        F: std::future::Future + Send + 'static,
        F::Output: Send + 'static,
    {
        #[expect(
            clippy::disallowed_methods,
            reason = "the scheduler owns every long-lived task: each is tracked by `tasks` and awaited by `shutdown`"
        )]
        tokio::spawn(self.inner.tasks.track_future(task))
    }

    /// Runs `work` to its end in an owned task, whatever becomes of the caller; `None`
    /// if the runtime dropped it (shutting down). A panic in `work` is the caller's.
    pub(super) async fn run_owned<T: Send + 'static>(
        &self,
        work: impl std::future::Future<Output = T> + Send + 'static,
    ) -> Option<T> {
        match self.spawn_owned(work).await {
            Ok(output) => Some(output),
            Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
            Err(_cancelled) => None,
        }
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
            let timer = &scheduler.inner.retry_timer;
            let clock = &scheduler.inner.parts.clock;
            loop {
                let until_due = timer.earliest().map(|due| due.since(clock.now()));
                let name = tokio::select! {
                    _ = stopping.cancelled() => return,
                    // An earlier retry than the one slept for: sleep again, shorter.
                    () = timer.changed.notified() => continue,
                    () = waiting::sleep_for(until_due) => {
                        for name in timer.take_due(clock.now()) {
                            if let Some(runtime) = scheduler.inner.functions.get(&name) {
                                runtime.queue.announce();
                            }
                        }
                        continue;
                    }
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
                if scheduler.tick_runtime(&runtime).is_some() {
                    // Back to the tail: one dispatch per function per turn.
                    runtime.queue.announce();
                }
            }
        });
    }

    /// Tells the background loop (if it runs) that a retry of `function` comes due at
    /// `due`. Without the loop nobody needs telling: `tick_once` and waiters look at
    /// due times themselves.
    pub(super) fn retry_due_at(&self, due: Timestamp, function: &FunctionName) {
        if self.inner.background.load(Ordering::Acquire) {
            self.inner.retry_timer.add(due, function.clone());
        }
    }

    /// Starts the periodic eviction of finished records and idempotency keys past
    /// their TTL, and the dispatcher's sweep of what it holds idle
    /// ([`Dispatch::sweep_idle`]: pooled connections), every `sweep_interval` (started
    /// by `start_background` too; call it alone in manual mode).
    pub fn start_sweeper(&self) {
        self.start_autoscaler();
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
                match (
                    parts.executions.evict_expired(now).await,
                    parts.idempotency.evict_expired(now).await,
                ) {
                    (Ok(records), Ok(keys)) if records + keys > 0 => {
                        tracing::debug!(records, keys, "evicted expired entries");
                    }
                    (Ok(_), Ok(_)) => {}
                    (Err(fault), _) | (_, Err(fault)) => {
                        tracing::warn!(%fault, "expired entries could not be evicted; trying again at the next sweep");
                    }
                }
                // Here because the dispatcher spawns nothing: its idle connections to
                // endpoints no longer used are closed only if someone asks.
                parts.dispatch.sweep_idle();
            }
        });
    }

    /// Whether [`shutdown`](Self::shutdown) has begun: from then on new invocations are
    /// refused (what a readiness probe reports).
    pub fn is_stopping(&self) -> bool {
        self.inner.stopping.is_cancelled()
    }

    /// Stops gracefully: accepts nothing new, ends every queued execution with
    /// `SHUTDOWN`, lets in-flight attempts finish for up to `grace`, then ends the rest
    /// with `SHUTDOWN` too. When it returns, no execution is queued or running in the
    /// scheduler and every waiter has its answer.
    ///
    /// With a store that outlives the process, an execution whose writes are committed
    /// (enqueued, or keyed) and that no caller is waiting for is not ended but left as
    /// the store has it: a restart queues it again (a queued one as it was, one whose
    /// attempt was cut short as a new attempt). Executions a caller waits for end with
    /// `SHUTDOWN`, so every waiting caller has its answer.
    pub async fn shutdown(&self, grace: Duration) {
        let inner = &self.inner;
        inner.stopping.cancel();
        let durable = inner.parts.executions.outlives_process();
        let runtimes: Vec<_> = inner
            .functions
            .iter()
            .map(|r| Arc::clone(r.value()))
            .collect();
        for runtime in runtimes {
            for queued in runtime.queue.close() {
                if durable && self.leave_for_restart(&queued.id) {
                    continue;
                }
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
            // Writes a faulty store still refuses are given up now: what was last
            // committed is what a restart recovers.
            inner.gave_up.cancel();
            let unfinished: Vec<ExecutionId> = inner.live.iter().map(|e| e.key().clone()).collect();
            for id in unfinished {
                if durable && self.leave_for_restart(&id) {
                    continue;
                }
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
        // Replicas are stopped only now that no attempt uses them any more; their
        // supervision ends with them.
        if let Some(provider) = &inner.parts.deployments {
            provider.shutdown().await;
        }
        inner.provider_tasks.tracker.close();
        inner.provider_tasks.tracker.wait().await;
    }
}

impl Scheduler {
    /// Lets go of a live execution whose record is committed and that nobody waits
    /// for, without writing anything: its slot and attempt are released, and the
    /// record stays as the store has it for a restart. `false` for one whose writes are
    /// recorded only at its end, one a caller is waiting for (it gets its answer: `SHUTDOWN`), or one
    /// whose end is being written.
    fn leave_for_restart(&self, id: &ExecutionId) -> bool {
        self.inner
            .live
            .remove_if(id, |_, live| {
                live.recording == Recording::EachStep
                    && !matches!(live.phase, Phase::Finishing)
                    && live.waiters.iter().all(oneshot::Sender::is_closed)
            })
            .is_some()
    }
}

/// The due times of retries waiting out their backoff, earliest first, for the
/// background loop to sleep on. An entry whose retry has ended meanwhile only costs a
/// wake-up that finds nothing due; each retry adds one entry, so they are bounded by the
/// queues.
#[derive(Debug, Default)]
pub(super) struct RetryTimer {
    due: std::sync::Mutex<
        std::collections::BinaryHeap<std::cmp::Reverse<(Timestamp, FunctionName)>>,
    >,
    /// The earliest due time in milliseconds (`u64::MAX`: none), read without the lock
    /// on every turn of the loop.
    earliest: AtomicU64,
    /// Notified when an entry earlier than every other arrives.
    pub(super) changed: tokio::sync::Notify,
}

impl RetryTimer {
    fn heap(
        &self,
    ) -> std::sync::MutexGuard<
        '_,
        std::collections::BinaryHeap<std::cmp::Reverse<(Timestamp, FunctionName)>>,
    > {
        self.due.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn add(&self, due: Timestamp, function: FunctionName) {
        let earlier = {
            let mut heap = self.heap();
            heap.push(std::cmp::Reverse((due, function)));
            let earliest = heap.peek().map_or(u64::MAX, |e| e.0.0.as_millis());
            self.earliest.swap(earliest, Ordering::AcqRel) != earliest
        };
        if earlier {
            // A stored permit if the loop is busy: it looks again before sleeping.
            self.changed.notify_one();
        }
    }

    fn earliest(&self) -> Option<Timestamp> {
        let millis = self.earliest.load(Ordering::Acquire);
        (millis != u64::MAX).then(|| Timestamp::from_millis(millis))
    }

    /// The functions with a retry due at `now`, each once.
    fn take_due(&self, now: Timestamp) -> Vec<FunctionName> {
        let mut heap = self.heap();
        let mut due = Vec::new();
        while heap.peek().is_some_and(|e| e.0.0 <= now) {
            let std::cmp::Reverse((_, function)) = heap.pop().expect("peeked");
            if !due.contains(&function) {
                due.push(function);
            }
        }
        let earliest = heap.peek().map_or(u64::MAX, |e| e.0.0.as_millis());
        self.earliest.store(earliest, Ordering::Release);
        due
    }
}
