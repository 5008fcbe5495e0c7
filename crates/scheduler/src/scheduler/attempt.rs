//! `tick_once` and the attempt it starts.

use super::*;

impl Scheduler {
    /// Takes at most one queued invocation of `function`, only if a concurrency slot is
    /// free, marks it running and starts its dispatch. `Ok(None)`: no free slot or no
    /// queued work. `Ok(Some(handle))`: the handle resolves only after the execution's
    /// record has been updated (terminal, or queued again for a retry) and the slot
    /// released. The background loop drops handles; `:drain-once` awaits them.
    pub async fn tick_once(
        &self,
        function: &FunctionName,
    ) -> Result<Option<JoinHandle<()>>, TickError> {
        let runtime = self
            .inner
            .functions
            .get(function)
            .map(|r| Arc::clone(&r))
            .ok_or_else(|| TickError::UnknownFunction(function.clone()))?;
        Ok(self.tick_runtime(&runtime))
    }

    /// [`tick_once`](Self::tick_once) for a function at hand. It does not await: the
    /// `running` write is made here when the store takes it at once (the memory store
    /// does, so the record says `running` when the handle is returned), and otherwise
    /// by the attempt's own task, before it dispatches; either way a caller that goes
    /// away right after cannot leave a record `running` with no attempt behind it.
    pub(super) fn tick_runtime(&self, runtime: &Arc<FunctionRuntime>) -> Option<JoinHandle<()>> {
        let inner = &self.inner;
        loop {
            let now = inner.parts.clock.now();
            let (slot, queued) = runtime
                .queue
                .take(now, inner.config.retry_backoff.longest())?;
            let (finished_tx, finished_rx) = oneshot::channel();
            let start = {
                let Some(mut live) = inner.live.get_mut(&queued.id) else {
                    continue;
                };
                if !matches!(live.phase, Phase::Queued) {
                    // Completed while queued (callback, removal, timeout): skip it.
                    continue;
                }
                live.version += 1;
                live.phase = Phase::Running(RunningAttempt {
                    _slot: slot,
                    _finished: finished_tx,
                });
                let started = RecordChange {
                    version: live.version,
                    kind: ChangeKind::Started {
                        attempt: live.attempt,
                        at: now,
                    },
                };
                complete::apply_to_live(&mut live.record, &started);
                let request = DispatchRequest {
                    execution_id: queued.id.clone(),
                    function: Arc::clone(&live.function.spec),
                    attempt: live.attempt,
                    input: live.input.clone(),
                    metadata: Arc::clone(&live.metadata),
                    trace_id: live.trace_id.clone(),
                    idempotency_key: if live.attempt == 1 {
                        live.idempotency_key.clone()
                    } else {
                        None
                    },
                    callback_url: inner.config.attempt_callback_url(
                        &queued.id,
                        live.attempt,
                        &live.function.spec,
                        now,
                    ),
                };
                (started, live.recording, request)
            };
            let (started, recording, request) = start;
            let attempt = request.attempt;
            let started_write = match recording {
                Recording::EachStep => {
                    let this = self.clone();
                    let written = queued.id.clone();
                    let mut started_write: OwnedWrite = Box::pin(async move {
                        this.write_durably(&written, complete::Write::Change(started), &mut None)
                            .await;
                    });
                    (&mut started_write)
                        .now_or_never()
                        .is_none()
                        .then_some(started_write)
                }
                Recording::AtTheEnd => None,
            };
            inner.parts.observer.on_event(SchedulerEvent::Dispatched {
                function: &runtime.spec.name,
                execution: &queued.id,
                attempt,
                queue_wait: now.since(queued.enqueued_at),
            });
            // DEBUG, not INFO: the fmt subscriber formats a span's fields when the span
            // is created, which at INFO (the default filter) cost ~9 % of a sync LOCAL
            // invocation's instructions for a span no event at INFO ever used. The
            // events of an attempt that show at INFO and above name the execution
            // themselves.
            let span = tracing::debug_span!(
                "execution",
                function = %runtime.spec.name,
                execution_id = %queued.id,
                attempt,
                trace_id = %request.trace_id,
            );
            let timeout = Duration::from_millis(runtime.spec.timeout_ms);
            let attempt_task = self
                .clone()
                .run_attempt(request, started_write, timeout, finished_rx)
                .instrument(span);
            return Some(self.spawn_owned(attempt_task));
        }
    }

    /// Runs one attempt to its end: the `running` write (committed before the
    /// dispatch when each step is recorded, so after a crash a restart knows this
    /// attempt was made and never sends it again), the dispatch under the
    /// function's timeout, then the completion path. If another completion wins first
    /// (a callback, a sync timeout, shutdown), the dispatch is dropped and the task
    /// ends once the winner has written the record and released the slot.
    pub(super) async fn run_attempt(
        self,
        request: DispatchRequest,
        started_write: Option<OwnedWrite>,
        timeout: Duration,
        mut settled: oneshot::Receiver<()>,
    ) {
        let id = request.execution_id.clone();
        if let Some(started_write) = started_write {
            started_write.await;
            if !matches!(settled.try_recv(), Err(oneshot::error::TryRecvError::Empty)) {
                // Ended while its `running` write was made (a sync timeout, shutdown).
                return;
            }
        }
        let attempt = request.attempt;
        let function = Arc::clone(&request.function);
        let dispatch = AssertUnwindSafe(self.inner.parts.dispatch.dispatch(request)).catch_unwind();
        let result = tokio::select! {
            biased;
            _ = &mut settled => return,
            result = tokio::time::timeout(timeout, dispatch) => result,
        };
        let (completion, source) = match result {
            Err(_elapsed) => {
                let error = ErrorInfo::new(
                    ErrorCode::DispatchTimeout,
                    format!("function did not answer within {} ms", timeout.as_millis()),
                );
                (
                    Completion::Failure {
                        state: ExecutionState::Timeout,
                        error,
                    },
                    CompletionSource::Dispatch,
                )
            }
            Ok(Err(panic)) => {
                let message = panic_message(panic.as_ref());
                tracing::error!(function = %function.name, execution_id = %id, attempt, %message, "dispatch panicked");
                let error = ErrorInfo::new(
                    ErrorCode::DispatchPanicked,
                    format!("dispatch panicked: {message}"),
                );
                (Completion::error(error), CompletionSource::DispatchPanic)
            }
            Ok(Ok(Ok(success))) => (Completion::Success(success), CompletionSource::Dispatch),
            Ok(Ok(Err(error))) => {
                let state = if error.has_code(ErrorCode::DispatchTimeout) {
                    ExecutionState::Timeout
                } else {
                    ExecutionState::Error
                };
                (
                    Completion::Failure { state, error },
                    CompletionSource::Dispatch,
                )
            }
        };
        match self.complete(&id, Some(attempt), completion, source).await {
            Ok(CompletionOutcome::Applied(_)) => {}
            // Someone else won, or the store refused this result for now (its owned
            // write keeps trying): resolve only once the record is written.
            Ok(CompletionOutcome::Ignored(_)) | Err(_) => {
                let _ = settled.await;
            }
        }
    }
}

/// A record write begun in place and finished by the task that owns it.
type OwnedWrite = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic payload".to_owned())
}
