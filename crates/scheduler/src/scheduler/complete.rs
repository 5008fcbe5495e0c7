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
    ///
    /// The record write that follows the decision runs to its end in a task the
    /// scheduler owns (in place when the store answers at once): a caller that goes
    /// away (a callback whose client disconnects) cannot leave the decision half
    /// carried out. A write the store refuses for a fault is tried again until it
    /// lands (or shutdown gives up on it); the caller is told at the first refusal
    /// ([`CompleteError::StoreUnavailable`]: not acknowledged).
    pub async fn complete(
        &self,
        id: &ExecutionId,
        attempt: Option<u32>,
        completion: Completion,
        source: CompletionSource,
    ) -> Result<CompletionOutcome, CompleteError> {
        let inner = &self.inner;
        let now = inner.parts.clock.now();
        let decision = match self.decide(id, attempt, completion, source, now) {
            Decision::Unknown => {
                return if inner.parts.executions.get(id).await?.is_some() {
                    Ok(self.ignored(id, source, IgnoredBecause::AlreadyFinished))
                } else {
                    Err(CompleteError::UnknownExecution(id.clone()))
                };
            }
            Decision::Ignore(because) => return Ok(self.ignored(id, source, because)),
            decision => decision,
        };
        let (fault_tx, fault_rx) = oneshot::channel();
        let carry_out = self
            .clone()
            .carry_out(id.clone(), decision, source, now, fault_tx);
        let mut carry_out = Box::pin(carry_out);
        if let std::task::Poll::Ready(outcome) = futures::poll!(carry_out.as_mut()) {
            return Ok(outcome);
        }
        let owned = self.spawn_owned(carry_out);
        tokio::select! {
            outcome = owned => match outcome {
                Ok(outcome) => Ok(outcome),
                Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
                Err(_cancelled) => Err(CompleteError::StoreUnavailable(StoreUnavailable::new(
                    "the control plane stopped before the completion was written",
                ))),
            },
            Ok(fault) = fault_rx => Err(CompleteError::StoreUnavailable(fault)),
        }
    }

    /// Carries out a decided retry or finish: the record write, then the release of the
    /// slot, the queue and the waiters.
    async fn carry_out(
        self,
        id: ExecutionId,
        decision: Decision,
        source: CompletionSource,
        now: Timestamp,
        fault: oneshot::Sender<StoreUnavailable>,
    ) -> CompletionOutcome {
        let inner = &self.inner;
        let mut fault = Some(fault);
        match decision {
            Decision::Unknown | Decision::Ignore(_) => {
                unreachable!("complete() answers these itself")
            }
            Decision::Retry {
                function,
                change,
                next_attempt,
                error,
                running,
            } => {
                // If anything below panics, the execution must not stay held in its
                // queue and live with nobody to end it.
                let mut abandon = Abandon::new(&self, &id, Some(&function.queue));
                if let Some(change) = change {
                    self.write_durably(&id, Write::Change(change), &mut fault)
                        .await;
                }
                // Only now may the retry be dispatched: its attempt's `running` write
                // is decided after this `queued` one has landed, so the two cannot land
                // in the wrong order (the store would refuse `running -> running` and
                // the record would keep the old attempt).
                let backoff = inner.config.retry_backoff.delay(&id, next_attempt);
                let due = now.plus(backoff);
                if function.queue.schedule_retry(&id, due, now) && due > now {
                    self.retry_due_at(due, &function.spec.name);
                }
                abandon.disarm();
                drop(running);
                inner.parts.observer.on_event(SchedulerEvent::Retried {
                    function: &function.spec.name,
                    execution: &id,
                    next_attempt,
                    error: &error,
                    backoff,
                });
                CompletionOutcome::Applied(ExecutionState::Queued)
            }
            Decision::Finish {
                write,
                record,
                running,
            } => {
                let mut abandon = Abandon::new(&self, &id, None);
                let mut running = running;
                let lazily = matches!(write, Write::Final(..));
                if lazily {
                    // Recorded lazily (a sync invocation without a key): its caller is
                    // answered and its slot freed before its one write is durable. The
                    // execution stays live (finishing) until the store has taken the
                    // write, and the store serves a write handed over behind at once, so
                    // a read right after the answer finds the record; a crash before
                    // the commit loses only what nobody was promised.
                    drop(running.take());
                    self.answer_waiters(&id, &record, source);
                }
                self.write_durably(&id, write, &mut fault).await;
                // Otherwise the slot and the attempt task are released only now, after
                // the write.
                drop(running);
                let waiters = inner
                    .live
                    .remove(&id)
                    .map(|(_, live)| live.waiters)
                    .unwrap_or_default();
                abandon.disarm();
                for waiter in waiters {
                    let _ = waiter.send(record.clone());
                }
                if !lazily {
                    inner.parts.observer.on_event(SchedulerEvent::Finished {
                        record: &record,
                        source,
                    });
                }
                CompletionOutcome::Applied(record.state)
            }
        }
    }

    /// Sends an execution's final record to every waiter it has now, and tells the
    /// observer it finished.
    fn answer_waiters(&self, id: &ExecutionId, record: &ExecutionRecord, source: CompletionSource) {
        let waiters = self
            .inner
            .live
            .get_mut(id)
            .map(|mut live| std::mem::take(&mut live.waiters))
            .unwrap_or_default();
        for waiter in waiters {
            let _ = waiter.send(record.clone());
        }
        self.inner
            .parts
            .observer
            .on_event(SchedulerEvent::Finished { record, source });
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
        let recording = live.recording;
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
                        let change = RecordChange {
                            version,
                            kind: ChangeKind::Requeued {
                                attempt: next_attempt,
                                at: now,
                            },
                        };
                        apply_to_live(&mut live.record, &change);
                        Decision::Retry {
                            function,
                            change: (recording == Recording::EachStep).then_some(change),
                            next_attempt,
                            error,
                            running,
                        }
                    }
                    Err(refused) => {
                        tracing::warn!(execution_id = %id, %refused, "retry could not be queued; the execution ends with its error");
                        let completion = Completion::Failure { state, error };
                        finish(&mut live, version, completion, now, source, Some(running))
                    }
                }
            }
            (completion, running) => finish(&mut live, version, completion, now, source, running),
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

    /// Makes a decided write until the store takes it: a fault is reported once
    /// through `fault` (the caller is not acknowledged) and the write tried again,
    /// backing off, until it lands or shutdown gives up. A stale change (a newer
    /// decision was written first) is dropped by design; any other refusal is a bug
    /// worth shouting about, not a reason to leave the execution hanging.
    pub(super) async fn write_durably(
        &self,
        id: &ExecutionId,
        write: Write,
        fault: &mut Option<oneshot::Sender<StoreUnavailable>>,
    ) {
        let executions = &self.inner.parts.executions;
        let mut pause = Duration::from_millis(10);
        loop {
            let refused = match &write {
                Write::Change(change) => match executions
                    .apply(id, change.clone(), Durability::Committed)
                    .await
                {
                    Ok(()) | Err(store::ApplyError::Stale { .. }) => return,
                    Err(store::ApplyError::Unavailable(refused)) => refused,
                    Err(error) => {
                        tracing::error!(execution_id = %id, %error, "execution record update refused");
                        return;
                    }
                },
                Write::Final(durability, execution) => match executions
                    .insert(StoredExecution::clone(execution), *durability)
                    .await
                {
                    Ok(()) => return,
                    Err(store::InsertError::Unavailable(refused)) => refused,
                    Err(error) => {
                        tracing::error!(execution_id = %id, %error, "final execution record refused");
                        return;
                    }
                },
            };
            if let Some(fault) = fault.take() {
                let _ = fault.send(refused.clone());
            }
            if self.inner.gave_up.is_cancelled() {
                tracing::error!(execution_id = %id, %refused, "execution record update given up at shutdown; a restart recovers the record as last written");
                return;
            }
            tracing::warn!(execution_id = %id, %refused, retry_in_ms = pause.as_millis() as u64, "execution record update failed; trying again");
            tokio::select! {
                () = self.inner.gave_up.cancelled() => {}
                () = tokio::time::sleep(pause) => {}
            }
            pause = (pause * 2).min(Duration::from_secs(1));
        }
    }
}

/// A write the scheduler makes for a decision.
pub(super) enum Write {
    /// A step of an execution recorded step by step, committed.
    Change(RecordChange),
    /// The whole final record of an execution recorded only at its end (boxed: a
    /// record and its work are most of a `Decision` otherwise), and how.
    Final(Durability, Box<StoredExecution>),
}

/// Applies a change the scheduler decided to its own copy of the record. The copy has
/// seen every decision, so the change always applies; if it did not, the store would
/// refuse it the same way and log it.
pub(super) fn apply_to_live(record: &mut ExecutionRecord, change: &RecordChange) {
    if let Err(error) = record.apply_change(change.clone()) {
        tracing::error!(execution_id = %record.id, %error, "the scheduler's record refused its own decision");
    }
}

/// The decision to end a live execution: its terminal change, applied to its record.
fn finish(
    live: &mut Live,
    version: u64,
    completion: Completion,
    now: Timestamp,
    source: CompletionSource,
    running: Option<RunningAttempt>,
) -> Decision {
    let kind = finished(completion, now);
    let change = RecordChange { version, kind };
    apply_to_live(&mut live.record, &change);
    let write = match live.recording {
        Recording::EachStep => Write::Change(change),
        // Its first write, and its last, handed over behind (readable at once, durable
        // soon after): its caller, answered now, may read it back at once, and a
        // crash loses only what nobody was promised. Committed when a callback ended
        // it: a 204 promises its result is kept.
        Recording::AtTheEnd => Write::Final(
            if source == CompletionSource::Callback {
                Durability::Committed
            } else {
                Durability::Behind
            },
            Box::new(StoredExecution {
                record: live.record.clone(),
                work: ExecutionWork {
                    input: live.input.clone(),
                    metadata: Arc::clone(&live.metadata),
                    trace_id: live.trace_id.clone(),
                    idempotency_key: live.idempotency_key.clone(),
                },
            }),
        ),
    };
    Decision::Finish {
        write,
        record: live.record.clone(),
        running,
    }
}

/// The terminal change a completion makes.
pub(super) fn finished(completion: Completion, at: Timestamp) -> ChangeKind {
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
    ChangeKind::Finished {
        state,
        at,
        output,
        error,
        cold_start,
        init_duration_ms,
    }
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
