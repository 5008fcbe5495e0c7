//! The background loop, the eviction sweep, owned tasks and shutdown.

use super::*;

impl Scheduler {
    pub(super) fn spawn_owned<F>(&self, task: F) -> JoinHandle<()>
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        #[expect(
            clippy::disallowed_methods,
            reason = "the scheduler owns every long-lived task: each is tracked by `tasks` and awaited by `shutdown`"
        )]
        tokio::spawn(self.inner.tasks.track_future(task))
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
            loop {
                let name = tokio::select! {
                    _ = stopping.cancelled() => return,
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
                if scheduler.tick_runtime(&runtime).await.is_some() {
                    // Back to the tail: one dispatch per function per turn.
                    runtime.queue.announce();
                }
            }
        });
    }

    /// Starts the periodic eviction of finished records and idempotency keys past
    /// their TTL (started by `start_background` too; call it alone in manual mode).
    pub fn start_sweeper(&self) {
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
                let records = parts.executions.evict_expired(now).await;
                let keys = parts.idempotency.evict_expired(now).await;
                if records + keys > 0 {
                    tracing::debug!(records, keys, "evicted expired entries");
                }
            }
        });
    }

    /// Stops gracefully: accepts nothing new, ends every queued execution with
    /// `SHUTDOWN`, lets in-flight attempts finish for up to `grace`, then ends the rest
    /// with `SHUTDOWN` too. When it returns, no execution is queued or running and every
    /// waiter has its answer.
    pub async fn shutdown(&self, grace: Duration) {
        let inner = &self.inner;
        inner.stopping.cancel();
        let runtimes: Vec<_> = inner
            .functions
            .iter()
            .map(|r| Arc::clone(r.value()))
            .collect();
        for runtime in runtimes {
            for queued in runtime.queue.close() {
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
            let unfinished: Vec<ExecutionId> = inner.live.iter().map(|e| e.key().clone()).collect();
            for id in unfinished {
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
    }
}
