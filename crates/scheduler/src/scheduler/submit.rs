//! Accepting invocations: idempotency claims, the record, the queue.

use super::*;

impl Scheduler {
    /// Accepts an invocation and queues it. With an idempotency key, a request equal to
    /// an earlier one (same function, key and body) returns the earlier execution, even
    /// when both arrive at once; a different body under the same key is refused. A key
    /// whose execution has been forgotten (its record evicted after its TTL or under
    /// the memory budget) is forgotten with it: the request is a new one.
    ///
    /// What a submission promises is written before it returns: the record (with its
    /// input, so a restart can queue it again) and the key's claim are committed,
    /// except for a sync invocation without a key (`wait` and no key), which is
    /// written once, when it ends (committed before its caller is answered, so it can
    /// read it back; until then it is read from the scheduler). Once claimed, the rest runs to its end in
    /// a task the scheduler owns (in place when the stores answer at once), so a
    /// caller that goes away cannot leave a record or a claim half made.
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
            loop {
                let now = inner.parts.clock.now();
                match inner
                    .parts
                    .idempotency
                    .claim(function, key, fingerprint, now)
                    .await?
                {
                    ClaimOutcome::Existing(execution_id) => {
                        if let Some(replay) =
                            self.replay(execution_id.clone(), options.wait).await?
                        {
                            return Ok(replay);
                        }
                        inner
                            .parts
                            .idempotency
                            .forget(function, key, &execution_id)
                            .await?;
                    }
                    ClaimOutcome::Reused => {
                        return Err(SubmitError::IdempotencyKeyReused(key.clone()));
                    }
                    ClaimOutcome::Acquired(token) => {
                        claim = Some(ClaimGuard {
                            scheduler: self.clone(),
                            token: Some(token),
                        });
                        break;
                    }
                }
            }
        }

        // Charged before anything is stored: refused, nothing is left behind.
        let input_bytes = request.input.heap_size()
            + request
                .metadata
                .iter()
                .map(|(k, v)| k.len() + v.len())
                .sum::<usize>();
        let input = InputCharge::take(inner, input_bytes).ok_or(SubmitError::InputsFull {
            function: function.clone(),
            budget_bytes: inner.config.queued_input_budget,
        })?;
        let accept = self.clone().accept(runtime, request, options, claim, input);
        let mut accept = Box::pin(accept);
        if let std::task::Poll::Ready(accepted) = futures::poll!(accept.as_mut()) {
            return accepted;
        }
        self.run_owned(accept)
            .await
            .unwrap_or_else(|| Err(SubmitError::NotAccepting(function.clone())))
    }

    /// The part of a submission after its claim: record, claim published, queue.
    async fn accept(
        self,
        runtime: Arc<FunctionRuntime>,
        request: InvocationRequest,
        options: SubmitOptions,
        mut claim: Option<ClaimGuard>,
        input: InputCharge,
    ) -> Result<Submitted, SubmitError> {
        let inner = &self.inner;
        let function = &runtime.spec.name;
        let id = inner.parts.ids.execution_id();
        let now = inner.parts.clock.now();
        let recording = if options.wait && options.idempotency_key.is_none() {
            Recording::AtTheEnd
        } else {
            Recording::EachStep
        };
        let record = ExecutionRecord::queued(id.clone(), function.clone(), now);
        let metadata = Arc::new(request.metadata);
        let trace_id = options
            .trace_id
            .unwrap_or_else(|| inner.parts.ids.trace_id());
        let inserted = match recording {
            Recording::EachStep => {
                let stored = StoredExecution {
                    record: record.clone(),
                    work: ExecutionWork {
                        input: request.input.clone(),
                        metadata: Arc::clone(&metadata),
                        trace_id: trace_id.clone(),
                        idempotency_key: options.idempotency_key.clone(),
                    },
                };
                let executions = &inner.parts.executions;
                executions.insert(stored, Durability::Committed).await
            }
            Recording::AtTheEnd => Ok(()),
        };
        match inserted {
            Ok(()) => {}
            Err(store::InsertError::Unavailable(fault)) => return Err(fault.into()),
            Err(duplicate @ store::InsertError::Duplicate(_)) => {
                // Ids are generated unique; a duplicate is a broken id generator.
                return Err(StoreUnavailable::new(duplicate).into());
            }
        }
        // Published before the execution can be dispatched: a restart after its first
        // attempt still knows the key names it.
        if let Some(claim) = &mut claim {
            let token = claim
                .token
                .take()
                .expect("a guard holds its token until used");
            if let Err(fault) = inner
                .parts
                .idempotency
                .publish(token, id.clone(), now)
                .await
            {
                self.forget_unaccepted(&id, None).await;
                return Err(fault.into());
            }
        }
        let (waiters, waiter) = if options.wait {
            let (tx, rx) = oneshot::channel();
            (vec![tx], Some(Waiter::pending(id.clone(), rx)))
        } else {
            (Vec::new(), None)
        };
        let idempotency_key = options.idempotency_key;
        inner.live.insert(
            id.clone(),
            Live {
                function: Arc::clone(&runtime),
                attempt: 1,
                version: 0,
                phase: Phase::Queued,
                record,
                recording,
                input: request.input,
                metadata,
                trace_id,
                idempotency_key: idempotency_key.clone(),
                waiters,
                _input: input,
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
        if pushed.is_ok()
            && let Some(replicas) = &runtime.replicas
            && replicas.arrived()
        {
            self.scale_now();
        }
        if let Err(refused) = pushed {
            inner.live.remove(&id);
            let key = idempotency_key.as_ref().map(|key| (function, key));
            self.forget_unaccepted(&id, key).await;
            return Err(match refused {
                PushError::Full { function, capacity } => {
                    SubmitError::QueueFull { function, capacity }
                }
                PushError::Closed { function } => SubmitError::NotAccepting(function),
            });
        }
        inner.parts.observer.on_event(SchedulerEvent::Enqueued {
            function,
            execution: &id,
        });
        if dispatch_here {
            // The background loop owns what this starts, as if it had started it.
            drop(self.tick_runtime(&runtime));
        }
        Ok(Submitted {
            execution_id: id,
            replayed: false,
            record: None,
            waiter,
        })
    }

    /// Forgets an execution that was refused after its record was written (and the key
    /// that named it): a refused request leaves nothing behind. A key that cannot be
    /// forgotten is only logged (it names an execution that is gone, which a replay
    /// treats as forgotten). A record that cannot be removed yet is removed by an owned
    /// task that tries again until the store takes it: left there, a restart would run
    /// an execution nobody was promised. (A fault fails a whole group commit, so a
    /// removal, which needs no room, fails when it is grouped with inserts that do.)
    async fn forget_unaccepted(
        &self,
        id: &ExecutionId,
        key: Option<(&FunctionName, &IdempotencyKey)>,
    ) {
        let parts = &self.inner.parts;
        if let Some((function, key)) = key
            && let Err(fault) = parts.idempotency.forget(function, key, id).await
        {
            tracing::error!(execution_id = %id, %fault, "the key of a refused execution could not be forgotten");
        }
        if let Err(fault) = parts.executions.remove(id).await {
            tracing::warn!(execution_id = %id, %fault, "the record of a refused execution could not be removed yet; trying again");
            let this = self.clone();
            let id = id.clone();
            drop(self.spawn_owned(async move { this.remove_refused(id).await }));
        }
    }

    /// Removes the record of a refused execution, backing off between faults, until the
    /// store takes it or shutdown gives up on it.
    async fn remove_refused(&self, id: ExecutionId) {
        let mut pause = Duration::from_millis(10);
        loop {
            tokio::select! {
                () = self.inner.gave_up.cancelled() => {
                    tracing::error!(execution_id = %id, "the record of a refused execution could not be removed before shutdown; a restart will run it");
                    return;
                }
                () = tokio::time::sleep(pause) => {}
            }
            match self.inner.parts.executions.remove(&id).await {
                Ok(_) => return,
                Err(fault) => {
                    tracing::warn!(execution_id = %id, %fault, retry_in_ms = pause.as_millis() as u64, "the record of a refused execution could not be removed yet; trying again");
                }
            }
            pause = (pause * 2).min(Duration::from_secs(1));
        }
    }

    /// The answer to a request whose idempotency key names `id`, or `None` when that
    /// execution is forgotten (ended, and its record gone).
    async fn replay(
        &self,
        id: ExecutionId,
        wait: bool,
    ) -> Result<Option<Submitted>, StoreUnavailable> {
        // Subscribed before the record is read: an end between the two still arrives.
        let receiver = if wait { self.subscribe(&id) } else { None };
        let record = self.execution(&id).await?;
        // A live execution's record is never evicted, so no record and no
        // subscription means it has ended and been forgotten.
        if record.is_none() && receiver.is_none() {
            return Ok(None);
        }
        let waiter = wait.then(|| match receiver {
            Some(receiver) => Waiter::pending(id.clone(), receiver),
            None => Waiter::finished(id.clone(), record.clone()),
        });
        Ok(Some(Submitted {
            execution_id: id,
            replayed: true,
            record,
            waiter,
        }))
    }
}

/// The bytes of a live execution's input and metadata, charged to the scheduler's
/// queued-input budget while it lives (retries need them) and given back when it ends.
pub(super) struct InputCharge {
    total: Arc<AtomicUsize>,
    bytes: usize,
}

impl InputCharge {
    /// Charges an execution taken up again at start, over the budget if need be: it
    /// was accepted before.
    pub(super) fn restored(inner: &Inner, bytes: usize) -> Self {
        inner.queued_input_bytes.fetch_add(bytes, Ordering::AcqRel);
        Self {
            total: Arc::clone(&inner.queued_input_bytes),
            bytes,
        }
    }

    fn take(inner: &Inner, bytes: usize) -> Option<Self> {
        let budget = inner.config.queued_input_budget;
        inner
            .queued_input_bytes
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
                held.checked_add(bytes).filter(|total| *total <= budget)
            })
            .ok()?;
        Some(Self {
            total: Arc::clone(&inner.queued_input_bytes),
            bytes,
        })
    }
}

impl Drop for InputCharge {
    fn drop(&mut self) {
        self.total.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

/// Frees an idempotency claim unless it was published (also when the submitting future
/// is dropped half-way): in an owned task, since giving a claim up may await its store.
struct ClaimGuard {
    scheduler: Scheduler,
    token: Option<ClaimToken>,
}

impl Drop for ClaimGuard {
    fn drop(&mut self) {
        if let Some(token) = self.token.take() {
            let store: Arc<dyn IdempotencyStore> =
                Arc::clone(&self.scheduler.inner.parts.idempotency);
            drop(
                self.scheduler
                    .spawn_owned(async move { store.abandon(token).await }),
            );
        }
    }
}

/// A digest of what makes two requests "the same" for idempotency: the input as a JSON
/// value (however spelled) and the metadata, in core-types' fixed canonical encoding,
/// under SHA-256, so a digest is the same in every build and version (a durable claim
/// is compared with digests an older binary wrote).
pub(super) fn fingerprint(request: &InvocationRequest) -> Fingerprint {
    struct Digest(sha2::Sha256);
    impl core_types::ByteSink for Digest {
        fn put(&mut self, bytes: &[u8]) {
            sha2::Digest::update(&mut self.0, bytes);
        }
    }
    let mut digest = Digest(sha2::Digest::new_with_prefix(FINGERPRINT_DOMAIN));
    request.write_canonical(&mut digest);
    Fingerprint(sha2::Digest::finalize(digest.0).into())
}

/// Names the encoding and its version in every digest: a new encoding gets a new name,
/// so its digests can never equal an old one's by accident.
const FINGERPRINT_DOMAIN: &[u8] = b"nanofaas idempotency fingerprint v1\0";

#[cfg(test)]
mod tests {
    use super::*;

    fn request(body: serde_json::Value) -> InvocationRequest {
        serde_json::from_value(body).expect("a valid invocation body")
    }

    fn hex(fingerprint: Fingerprint) -> String {
        fingerprint.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn a_fingerprint_is_the_same_in_every_build() {
        // Pinned: a durable claim written by this version must match the next one's.
        // The value was checked against a separate implementation of the documented
        // encoding (Python's hashlib over the domain and the canonical bytes).
        let pinned = request(serde_json::json!({
            "input": {"order": 42, "items": ["a", "b"]},
            "metadata": {"tenant": "t1"},
        }));
        assert_eq!(
            hex(fingerprint(&pinned)),
            "8fd669c0a10b21d15c2f126f44595aa0200f8dfde36725aaefd2a3e1d58380ce"
        );
    }

    #[test]
    fn a_fingerprint_sees_the_value_and_the_metadata_not_the_spelling() {
        let spelled = |text: &str| InvocationRequest {
            input: core_types::Payload::from_json_text(text).unwrap(),
            metadata: std::collections::BTreeMap::new(),
        };
        assert_eq!(
            fingerprint(&spelled(r#"{"a":1,"b":[true]}"#)),
            fingerprint(&spelled(r#"{ "b": [ true ], "a": 1 }"#))
        );
        assert_ne!(
            fingerprint(&spelled(r#"{"a":1}"#)),
            fingerprint(&spelled(r#"{"a":2}"#))
        );
        let with_metadata = |key: &str, value: &str| {
            request(serde_json::json!({"input": 1, "metadata": {key: value}}))
        };
        assert_ne!(
            fingerprint(&with_metadata("ab", "c")),
            fingerprint(&with_metadata("a", "bc")),
            "keys and values are framed"
        );
        assert_ne!(
            fingerprint(&request(serde_json::json!({"input": 1}))),
            fingerprint(&with_metadata("a", "b"))
        );
    }
}
