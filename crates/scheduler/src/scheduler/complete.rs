//! The one completion path: decide under the execution's lock, then write.

use super::*;

impl Scheduler {
    /// The one completion path. Dispatch results, runtime callbacks (`attempt` from
    /// `X-Dispatch-Attempt`), sync timeouts, function removal and shutdown all come
    /// here. The first completion of the current attempt wins; later ones and those
    /// naming another attempt are ignored and counted. A failed attempt reported by its
    /// dispatch or callback is retried (same id, `attempt + 1`, tail of the queue) until
    /// the function's `maxRetries` total attempts; a retry that cannot be queued ends
    /// the execution with the attempt's error. A completion of a queued execution takes
    /// it out of the queue, so it is never dispatched.
    pub async fn complete(
        &self,
        id: &ExecutionId,
        attempt: Option<u32>,
        completion: Completion,
        source: CompletionSource,
    ) -> Result<CompletionOutcome, CompleteError> {
        let inner = &self.inner;
        let now = inner.parts.clock.now();
        match self.decide(id, attempt, completion, source, now) {
            Decision::Unknown => {
                if inner.parts.executions.get(id).await.is_some() {
                    Ok(self.ignored(id, source, IgnoredBecause::AlreadyFinished))
                } else {
                    Err(CompleteError::UnknownExecution(id.clone()))
                }
            }
            Decision::Ignore(because) => Ok(self.ignored(id, source, because)),
            Decision::Retry {
                function,
                version,
                next_attempt,
                error,
                running,
            } => {
                // If anything below panics, the execution must not stay held in its
                // queue and live with nobody to end it.
                let mut abandon = Abandon::new(self, id, Some(&function.queue));
                let kind = ChangeKind::Requeued {
                    attempt: next_attempt,
                    at: now,
                };
                self.write(id, RecordChange { version, kind }).await;
                // Only now may the retry be dispatched: its attempt's `running` write
                // is decided after this `queued` one has landed, so the two cannot land
                // in the wrong order (the store would refuse `running -> running` and
                // the record would keep the old attempt).
                let backoff = inner.config.retry_backoff.delay(id, next_attempt);
                let due = now.plus(backoff);
                if function.queue.schedule_retry(id, due, now) && due > now {
                    self.retry_due_at(due, &function.spec.name);
                }
                abandon.disarm();
                drop(running);
                inner.parts.observer.on_event(SchedulerEvent::Retried {
                    function: &function.spec.name,
                    execution: id,
                    next_attempt,
                    error: &error,
                    backoff,
                });
                Ok(CompletionOutcome::Applied(ExecutionState::Queued))
            }
            Decision::Finish {
                version,
                completion,
                running,
            } => {
                let mut abandon = Abandon::new(self, id, None);
                let (state, kind) = finished(completion, now);
                let record = self.write(id, RecordChange { version, kind }).await;
                // Slot and the attempt task are released only now, after the write.
                drop(running);
                let waiters = inner
                    .live
                    .remove(id)
                    .map(|(_, live)| live.waiters)
                    .unwrap_or_default();
                abandon.disarm();
                if let Some(record) = &record {
                    for waiter in waiters {
                        let _ = waiter.send(record.clone());
                    }
                    inner
                        .parts
                        .observer
                        .on_event(SchedulerEvent::Finished { record, source });
                }
                Ok(CompletionOutcome::Applied(state))
            }
        }
    }

    /// Decides, under the execution's lock and without awaiting, what a completion does.
    pub(super) fn decide(
        &self,
        id: &ExecutionId,
        attempt: Option<u32>,
        completion: Completion,
        source: CompletionSource,
        now: Timestamp,
    ) -> Decision {
        let Some(mut live) = self.inner.live.get_mut(id) else {
            return Decision::Unknown;
        };
        if let Some(reported) = attempt
            && reported != live.attempt
        {
            return Decision::Ignore(IgnoredBecause::StaleAttempt {
                reported,
                current: live.attempt,
            });
        }
        if source == CompletionSource::QueueTimeout && !matches!(live.phase, Phase::Queued) {
            // Only a queued execution can time out in the queue; one dispatched (or
            // ending) since its caller looked keeps its attempt.
            return Decision::Ignore(IgnoredBecause::NotQueued);
        }
        let function = Arc::clone(&live.function);
        let running = match std::mem::replace(&mut live.phase, Phase::Finishing) {
            Phase::Finishing => return Decision::Ignore(IgnoredBecause::AlreadyFinished),
            Phase::Queued => {
                function.queue.remove(id);
                None
            }
            Phase::Running(running) => Some(running),
        };
        live.version += 1;
        let version = live.version;
        match (completion, running) {
            (Completion::Failure { state, error }, Some(running))
                if source.may_retry() && live.attempt < function.spec.max_attempts() =>
            {
                let retry = QueuedExecution {
                    id: id.clone(),
                    enqueued_at: now,
                };
                // Held: it keeps its place (and is refused here if there is none) but
                // cannot be dispatched until its `queued` record is written.
                match function.queue.hold_retry(retry) {
                    Ok(()) => {
                        live.attempt += 1;
                        live.phase = Phase::Queued;
                        let next_attempt = live.attempt;
                        Decision::Retry {
                            function,
                            version,
                            next_attempt,
                            error,
                            running,
                        }
                    }
                    Err(refused) => {
                        tracing::warn!(execution_id = %id, %refused, "retry could not be queued; the execution ends with its error");
                        let completion = Completion::Failure { state, error };
                        Decision::Finish {
                            version,
                            completion,
                            running: Some(running),
                        }
                    }
                }
            }
            (completion, running) => Decision::Finish {
                version,
                completion,
                running,
            },
        }
    }

    pub(super) fn ignored(
        &self,
        id: &ExecutionId,
        source: CompletionSource,
        because: IgnoredBecause,
    ) -> CompletionOutcome {
        self.inner
            .ignored_completions
            .fetch_add(1, Ordering::Relaxed);
        tracing::debug!(execution_id = %id, %source, %because, "completion ignored");
        self.inner
            .parts
            .observer
            .on_event(SchedulerEvent::CompletionIgnored {
                execution: id,
                source,
                because,
            });
        CompletionOutcome::Ignored(because)
    }

    /// Applies a decided change. A stale change (a newer decision was written first) is
    /// dropped by design; anything else is a bug worth shouting about, not a reason to
    /// leave the execution hanging.
    pub(super) async fn write(
        &self,
        id: &ExecutionId,
        change: RecordChange,
    ) -> Option<ExecutionRecord> {
        match self.inner.parts.executions.apply(id, change).await {
            Ok(record) => Some(record),
            Err(store::ApplyError::Stale { .. }) => None,
            Err(error) => {
                tracing::error!(execution_id = %id, %error, "execution record update refused");
                None
            }
        }
    }
}

/// The terminal change a completion makes, and the state it ends in.
fn finished(completion: Completion, at: Timestamp) -> (ExecutionState, ChangeKind) {
    let (state, output, error, cold_start, init_duration_ms) = match completion {
        Completion::Success(success) => (
            ExecutionState::Success,
            Some(success.output),
            None,
            success.cold_start,
            success.init_duration_ms,
        ),
        Completion::Failure { state, error } => (state, None, Some(error), false, None),
    };
    (
        state,
        ChangeKind::Finished {
            state,
            at,
            output,
            error,
            cold_start,
            init_duration_ms,
        },
    )
}

/// Cleans up after a completion that panicked half-way (a store or observer bug): the
/// execution leaves its queue and the `live` map, so its waiters wake (their senders
/// drop) and read the record as the store has it, instead of waiting for a clean-up
/// that will never come. Disarmed once the completion is through.
struct Abandon<'a> {
    scheduler: &'a Scheduler,
    id: &'a ExecutionId,
    queue: Option<&'a FunctionQueue>,
    armed: bool,
}

impl<'a> Abandon<'a> {
    fn new(
        scheduler: &'a Scheduler,
        id: &'a ExecutionId,
        queue: Option<&'a FunctionQueue>,
    ) -> Self {
        Self {
            scheduler,
            id,
            queue,
            armed: true,
        }
    }

    fn disarm(&mut self) {
        self.armed = false;
    }
}

impl Drop for Abandon<'_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        tracing::error!(execution_id = %self.id, "completing the execution failed half-way; it is abandoned");
        if let Some(queue) = self.queue {
            queue.remove(self.id);
        }
        self.scheduler.inner.live.remove(self.id);
    }
}
