//! Start-up: taking up again what a durable store kept.

use super::*;

/// What [`Scheduler::restore`] found and did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Restored {
    /// Functions registered again.
    pub functions: usize,
    /// Queued executions queued again (retries with their due time).
    pub queued: usize,
    /// Executions that were running, queued again as a new attempt.
    pub redispatched: usize,
    /// Executions ended: no attempt left, or their function is gone.
    pub ended: usize,
}

impl Scheduler {
    /// Takes up what the stores kept: every registered function (a managed
    /// `DEPLOYMENT` is provisioned again), then every unfinished execution, in the
    /// order its current attempt entered its queue. A queued one is queued as it was
    /// (a retry waiting out its backoff keeps its due time); a running one was cut
    /// short by the restart, so it is queued as a new attempt (`attempt + 1`: the
    /// attempt that was running is never sent again), or, with no attempt left, ends
    /// in `error` with `CONTROL_PLANE_RESTARTED`. Executions of a function no longer
    /// registered end with `FUNCTION_REMOVED`. The `Idempotency-Key` of each is made to
    /// name it again, in case the crash came between its record's commit and its key's
    /// (see `restore_key`). Call it once, before serving and before
    /// [`start_background`](Self::start_background).
    pub async fn restore(&self) -> Result<Restored, StoreUnavailable> {
        let inner = &self.inner;
        let mut restored = Restored::default();
        for registered in inner.parts.registry.list().await? {
            let (registered, queue, reach) = self.provision_again(registered).await;
            let runtime = self.install(registered, queue, reach);
            if let Some(managed) = runtime.replicas.clone() {
                // Started in the background: serving does not wait for replicas (work
                // for them waits in their queue until they are ready).
                let this = self.clone();
                self.spawn_owned(async move {
                    if let Err(error) = this.reconcile(&runtime, &managed).await {
                        tracing::error!(function = %runtime.spec.name, %error, "the replicas of a registered function could not be started again");
                    }
                });
            }
            restored.functions += 1;
        }
        let unfinished = inner.parts.executions.unfinished().await?;
        // Queues take back all they held, over their size if need be (a running
        // execution queued again did not count against it); new work waits until
        // they are within it again.
        let mut held: BTreeMap<FunctionName, usize> = BTreeMap::new();
        for stored in &unfinished {
            *held.entry(stored.record.function.clone()).or_default() += 1;
        }
        for (name, count) in &held {
            if let Some(runtime) = inner.functions.get(name) {
                let size = runtime.spec.queue_size as usize;
                runtime.queue.set_capacity(size + count);
            }
        }
        let now = inner.parts.clock.now();
        for stored in unfinished {
            self.restore_execution(stored, now, &mut restored).await?;
        }
        for name in held.keys() {
            if let Some(runtime) = inner.functions.get(name) {
                runtime.queue.set_capacity(runtime.spec.queue_size as usize);
            }
        }
        Ok(restored)
    }

    /// A managed deployment is the provider's to run again after a restart: it is
    /// provisioned with no replica, so start-up does not wait for replicas to get
    /// ready, and then scaled to the count it kept (by the caller's reconcile).
    async fn provision_again(
        &self,
        mut registered: RegisteredFunction,
    ) -> (RegisteredFunction, Arc<FunctionQueue>, functions::Reach) {
        let queue = self.new_queue(&registered.spec);
        let concurrency = registered.spec.concurrency as usize;
        let provider = match (&self.inner.parts.deployments, registered.effective_mode) {
            (Some(provider), ExecutionMode::Deployment) => Arc::clone(provider),
            _ => {
                queue.set_concurrency(concurrency);
                return (registered, queue, functions::Reach::Itself);
            }
        };
        let kept = registered.replicas;
        match self.provision(&provider, &mut registered, &queue, 0).await {
            Ok(reach) => {
                if let (
                    functions::Reach::Provider(functions::ProviderReach::Replicas(managed)),
                    Some(kept),
                ) = (&reach, kept)
                {
                    managed.restore_target(kept);
                }
                (registered, queue, reach)
            }
            Err(error) => {
                tracing::error!(function = %registered.spec.name, %error, "the deployment of a registered function could not be provisioned again; its dispatches fail until it is registered anew");
                queue.set_concurrency(concurrency);
                (registered, queue, functions::Reach::Itself)
            }
        }
    }

    async fn restore_execution(
        &self,
        stored: StoredExecution,
        now: Timestamp,
        restored: &mut Restored,
    ) -> Result<(), StoreUnavailable> {
        let inner = &self.inner;
        let StoredExecution { mut record, work } = stored;
        let id = record.id.clone();
        if let Some(key) = &work.idempotency_key {
            self.restore_key(&record, &work, key, now).await?;
        }
        let Some(runtime) = inner
            .functions
            .get(&record.function)
            .map(|r| Arc::clone(&r))
        else {
            let error = ErrorInfo::new(
                ErrorCode::FunctionRemoved,
                format!("function {} is no longer registered", record.function),
            );
            restored.ended += 1;
            return self.end_restored(&record, error, now).await;
        };
        let mut retry_due = None;
        match record.state {
            ExecutionState::Running if record.attempt < runtime.spec.max_attempts() => {
                let change = RecordChange {
                    version: record.version + 1,
                    kind: ChangeKind::Requeued {
                        attempt: record.attempt + 1,
                        at: now,
                    },
                };
                self.apply_restored(&id, &change).await?;
                complete::apply_to_live(&mut record, &change);
                restored.redispatched += 1;
            }
            ExecutionState::Running => {
                let error = ErrorInfo::new(
                    ErrorCode::ControlPlaneRestarted,
                    format!(
                        "the control plane restarted during attempt {} of {}, its last",
                        record.attempt,
                        runtime.spec.max_attempts()
                    ),
                );
                restored.ended += 1;
                return self.end_restored(&record, error, now).await;
            }
            ExecutionState::Queued => {
                if record.attempt > 1 {
                    let backoff = inner.config.retry_backoff.delay(&id, record.attempt);
                    retry_due = Some(record.enqueued_at.plus(backoff));
                }
                restored.queued += 1;
            }
            // A terminal record is not unfinished; nothing to take up.
            _ => return Ok(()),
        }
        let input_bytes = work.input.heap_size()
            + work
                .metadata
                .iter()
                .map(|(k, v)| k.len() + v.len())
                .sum::<usize>();
        let queued = QueuedExecution {
            id: id.clone(),
            enqueued_at: record.enqueued_at,
        };
        inner.live.insert(
            id.clone(),
            Live {
                function: Arc::clone(&runtime),
                attempt: record.attempt,
                version: record.version,
                phase: Phase::Queued,
                record,
                recording: Recording::EachStep,
                input: work.input,
                metadata: work.metadata,
                trace_id: work.trace_id,
                idempotency_key: work.idempotency_key,
                waiters: Vec::new(),
                _input: submit::InputCharge::restored(inner, input_bytes),
            },
        );
        let pushed = match retry_due {
            None => runtime.queue.push(queued),
            Some(due) => runtime.queue.hold_retry(queued).map(|()| {
                if runtime.queue.schedule_retry(&id, due, now) && due > now {
                    inner.retry_timer.add(due, runtime.spec.name.clone());
                }
            }),
        };
        if let Err(refused) = pushed {
            // Capacity was raised for every execution taken up; a closed queue would
            // be a function removed meanwhile, which nothing does during a restore.
            tracing::error!(execution_id = %id, %refused, "an execution taken up again could not be queued");
            inner.live.remove(&id);
        }
        Ok(())
    }

    /// Makes the key of an unfinished execution name it. A submission commits the
    /// record before the key, so a process that died between the two commits left an
    /// execution that is taken up and runs, but that no key names: without this, the
    /// client's retry with the same key (its request got no answer) would make a
    /// second execution for one key.
    async fn restore_key(
        &self,
        record: &ExecutionRecord,
        work: &ExecutionWork,
        key: &IdempotencyKey,
        now: Timestamp,
    ) -> Result<(), StoreUnavailable> {
        let idempotency = &self.inner.parts.idempotency;
        let request = InvocationRequest {
            input: work.input.clone(),
            metadata: BTreeMap::clone(&work.metadata),
        };
        let fingerprint = submit::fingerprint(&request);
        match idempotency
            .claim(&record.function, key, fingerprint, now)
            .await?
        {
            ClaimOutcome::Acquired(token) => {
                idempotency.publish(token, record.id.clone(), now).await
            }
            ClaimOutcome::Existing(named) if named == record.id => Ok(()),
            ClaimOutcome::Existing(_) | ClaimOutcome::Reused => {
                tracing::warn!(execution_id = %record.id, function = %record.function, "the idempotency key of an execution taken up again names another execution");
                Ok(())
            }
        }
    }

    /// Writes a change of an execution being taken up (committed: a restart right
    /// after this one must see it).
    async fn apply_restored(
        &self,
        id: &ExecutionId,
        change: &RecordChange,
    ) -> Result<(), StoreUnavailable> {
        match self
            .inner
            .parts
            .executions
            .apply(id, change.clone(), Durability::Committed)
            .await
        {
            Ok(()) | Err(store::ApplyError::Stale { .. }) => Ok(()),
            Err(store::ApplyError::Unavailable(fault)) => Err(fault),
            Err(error) => {
                tracing::error!(execution_id = %id, %error, "an execution taken up again refused its change");
                Ok(())
            }
        }
    }

    /// Ends an execution taken up again with `error` (committed).
    async fn end_restored(
        &self,
        record: &ExecutionRecord,
        error: ErrorInfo,
        now: Timestamp,
    ) -> Result<(), StoreUnavailable> {
        tracing::warn!(execution_id = %record.id, function = %record.function, code = %error.code, "an execution taken up again ends: {}", error.message);
        let change = RecordChange {
            version: record.version + 1,
            kind: complete::finished(Completion::error(error), now),
        };
        self.apply_restored(&record.id, &change).await
    }
}
