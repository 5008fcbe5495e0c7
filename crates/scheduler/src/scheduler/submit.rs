//! Accepting invocations: idempotency claims, the record, the queue.

use super::*;

impl Scheduler {
    /// Accepts an invocation and queues it. With an idempotency key, a request equal to
    /// an earlier one (same function, key and body) returns the earlier execution, even
    /// when both arrive at once; a different body under the same key is refused.
    pub async fn submit(
        &self,
        function: &FunctionName,
        request: InvocationRequest,
        options: SubmitOptions,
    ) -> Result<Submitted, SubmitError> {
        let inner = &self.inner;
        let runtime = inner
            .functions
            .get(function)
            .map(|r| Arc::clone(&r))
            .ok_or_else(|| SubmitError::UnknownFunction(function.clone()))?;
        if inner.stopping.is_cancelled() {
            return Err(SubmitError::NotAccepting(function.clone()));
        }

        let mut claim = None;
        if let Some(key) = &options.idempotency_key {
            let fingerprint = fingerprint(&request);
            match inner
                .parts
                .idempotency
                .claim(function, key, fingerprint, inner.parts.clock.now())
                .await
            {
                ClaimOutcome::Existing(execution_id) => {
                    return Ok(Submitted {
                        execution_id,
                        replayed: true,
                    });
                }
                ClaimOutcome::Reused => return Err(SubmitError::IdempotencyKeyReused(key.clone())),
                ClaimOutcome::Acquired(token) => {
                    claim = Some(ClaimGuard {
                        store: Arc::clone(&inner.parts.idempotency),
                        token: Some(token),
                    });
                }
            }
        }

        let id = inner.parts.ids.execution_id();
        let now = inner.parts.clock.now();
        inner
            .parts
            .executions
            .insert(ExecutionRecord::queued(id.clone(), function.clone(), now))
            .await
            .map_err(|e| SubmitError::Store(e.to_string()))?;
        inner.live.insert(
            id.clone(),
            Live {
                function: Arc::clone(&runtime),
                attempt: 1,
                version: 0,
                phase: Phase::Queued,
                input: request.input,
                metadata: Arc::new(request.metadata),
                trace_id: options
                    .trace_id
                    .unwrap_or_else(|| inner.parts.ids.trace_id()),
                idempotency_key: options.idempotency_key,
                waiters: Vec::new(),
            },
        );
        // With the background loop running, the submitting task starts the dispatch
        // itself when a slot is free, instead of waking the loop to do it: one task
        // hand-off less per invocation. If no slot is free, the release of a taken one
        // announces the queue to the loop as usual. Without the loop (manual mode)
        // queued work waits for `tick_once`.
        let dispatch_here = inner.background.load(Ordering::Acquire);
        let queued = QueuedExecution {
            id: id.clone(),
            enqueued_at: now,
        };
        let pushed = if dispatch_here {
            runtime.queue.push_unannounced(queued)
        } else {
            runtime.queue.push(queued)
        };
        if let Err(refused) = pushed {
            inner.live.remove(&id);
            inner.parts.executions.remove(&id).await;
            // `claim` drops here and abandons the key: a refused request leaves no claim.
            return Err(match refused {
                PushError::Full { function, capacity } => {
                    SubmitError::QueueFull { function, capacity }
                }
                PushError::Closed { function } => SubmitError::NotAccepting(function),
            });
        }
        if let Some(mut claim) = claim {
            let token = claim
                .token
                .take()
                .expect("a guard holds its token until used");
            inner
                .parts
                .idempotency
                .publish(token, id.clone(), now)
                .await;
        }
        inner.parts.observer.on_event(SchedulerEvent::Enqueued {
            function,
            execution: &id,
        });
        if dispatch_here {
            // The background loop owns what this starts, as if it had started it.
            drop(self.tick_runtime(&runtime).await);
        }
        Ok(Submitted {
            execution_id: id,
            replayed: false,
        })
    }
}

/// Frees an idempotency claim unless it was published (also when the submitting future
/// is dropped half-way).
struct ClaimGuard {
    store: Arc<dyn IdempotencyStore>,
    token: Option<ClaimToken>,
}

impl Drop for ClaimGuard {
    fn drop(&mut self) {
        if let Some(token) = self.token.take() {
            self.store.abandon(token);
        }
    }
}

/// A digest of what makes two requests "the same" for idempotency: the input as a JSON
/// value (however spelled) and the metadata.
fn fingerprint(request: &InvocationRequest) -> Fingerprint {
    // DefaultHasher::new() uses fixed keys: stable within a build, which is all an
    // in-memory claim needs. A shared backend would want a hash fixed across builds.
    let mut hasher = DefaultHasher::new();
    request.input.hash_value(&mut hasher);
    request.metadata.hash(&mut hasher);
    Fingerprint(hasher.finish())
}
