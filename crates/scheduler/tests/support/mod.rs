//! The deterministic harness of the completion-parity cases: a manual clock, sequential
//! ids, a scripted dispatcher and an event log, and a dump of everything a case can
//! observe, taken at named checkpoints and pinned as insta snapshots.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};

use core_types::testing::{ManualClock, SequentialIds};
use core_types::{
    Clock, Dispatch, DurationMs, ExecutionId, FunctionName, FunctionSpec, IdempotencyKey,
    InvocationRequest, Payload, Timestamp,
};
use scheduler::testing::ScriptedDispatch;
pub(crate) use scheduler::testing::{Step, gate};
use scheduler::{
    Observer, RetryBackoff, Scheduler, SchedulerConfig, SchedulerEvent, SchedulerParts,
    SubmitError, SubmitOptions,
};
use store::{MemoryExecutionStore, MemoryFunctionRegistry, MemoryIdempotencyStore};

/// The event log shared by the observer and the dispatcher.
#[derive(Clone, Default)]
pub(crate) struct EventLog(Arc<Mutex<Vec<String>>>);

impl EventLog {
    fn push(&self, line: String) {
        self.0.lock().unwrap().push(line);
    }

    fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

impl Observer for EventLog {
    fn on_event(&self, event: SchedulerEvent<'_>) {
        let line = match event {
            SchedulerEvent::Enqueued {
                function,
                execution,
            } => format!("enqueued {execution} for {function}"),
            SchedulerEvent::Dispatched {
                execution,
                attempt,
                queue_wait,
                ..
            } => {
                format!(
                    "dispatched {execution} attempt {attempt} after {}ms queued",
                    queue_wait.0
                )
            }
            SchedulerEvent::Retried {
                execution,
                next_attempt,
                error,
                backoff,
                ..
            } => {
                format!(
                    "retry {execution} as attempt {next_attempt} after {}, due in {}ms",
                    error.code, backoff.0
                )
            }
            SchedulerEvent::Finished { record, source } => {
                format!(
                    "finished {} {} (attempt {}) via {source}",
                    record.id, record.state, record.attempt
                )
            }
            SchedulerEvent::CompletionIgnored {
                execution,
                source,
                because,
            } => {
                format!("ignored {source} completion of {execution}: {because}")
            }
        };
        self.push(line);
    }
}

/// One parity case: a scheduler in manual mode over in-memory stores, its fakes, and
/// the snapshot directory `snapshots/<case>/`.
pub(crate) struct Case {
    pub(crate) name: &'static str,
    pub(crate) scheduler: Scheduler,
    pub(crate) clock: Arc<ManualClock>,
    dispatch: Arc<ScriptedDispatch>,
    log: EventLog,
    executions: Vec<ExecutionId>,
    functions: Vec<FunctionName>,
}

impl Case {
    /// A case that drives every dispatch itself with `tick_once`.
    pub(crate) fn new(name: &'static str) -> Self {
        Self::with_waiters_driving(name, false)
    }

    /// A manual-mode control plane as the binary runs it: sync waiters move the queue.
    pub(crate) fn waiters_drive(name: &'static str) -> Self {
        Self::with_waiters_driving(name, true)
    }

    fn with_waiters_driving(name: &'static str, waiters_drive_when_manual: bool) -> Self {
        let log = EventLog::default();
        let clock = Arc::new(ManualClock::default());
        let calls = log.clone();
        let dispatch = Arc::new(ScriptedDispatch::new(move |request| {
            let key = request
                .idempotency_key
                .as_ref()
                .map_or("-".to_owned(), ToString::to_string);
            calls.push(format!(
                "  call {} attempt {} (idempotency key {key}, trace {})",
                request.execution_id, request.attempt, request.trace_id
            ));
        }));
        let ttl = DurationMs(5 * 60 * 1000);
        let parts = SchedulerParts {
            dispatch: Arc::clone(&dispatch) as Arc<dyn Dispatch>,
            clock: Arc::clone(&clock) as Arc<dyn Clock>,
            ids: Arc::new(SequentialIds::default()),
            executions: Arc::new(MemoryExecutionStore::new(ttl)),
            idempotency: Arc::new(MemoryIdempotencyStore::new(ttl)),
            registry: Arc::new(MemoryFunctionRegistry::new()),
            observer: Arc::new(log.clone()),
            deployments: None,
        };
        let config = SchedulerConfig {
            callback_base_url: Some("http://127.0.0.1:8080/v1/internal/executions".into()),
            waiters_drive_when_manual,
            ..SchedulerConfig::default()
        };
        Self {
            name,
            scheduler: Scheduler::new(parts, config),
            clock,
            dispatch,
            log,
            executions: Vec::new(),
            functions: Vec::new(),
        }
    }

    /// Registers a function from a JSON spec (defaults filled in as the API does).
    pub(crate) async fn function(&mut self, spec: serde_json::Value) -> FunctionName {
        let spec = FunctionSpec::from_json(&spec).expect("valid spec");
        let name = spec.name.clone();
        self.scheduler
            .register_function(spec)
            .await
            .expect("new function");
        self.functions.push(name.clone());
        name
    }

    /// Appends steps to a function's script.
    pub(crate) fn script(&self, function: &FunctionName, steps: impl IntoIterator<Item = Step>) {
        self.dispatch.script(function.as_str(), steps);
    }

    /// Submits `input`, optionally with an idempotency key.
    pub(crate) async fn submit(
        &mut self,
        function: &FunctionName,
        input: serde_json::Value,
        key: Option<&str>,
    ) -> Result<ExecutionId, SubmitError> {
        let request = InvocationRequest {
            input: Payload::from_value(&input),
            metadata: BTreeMap::new(),
        };
        let options = SubmitOptions {
            idempotency_key: key.map(IdempotencyKey::new),
            ..SubmitOptions::default()
        };
        let submitted = self.scheduler.submit(function, request, options).await?;
        if !self.executions.contains(&submitted.execution_id) {
            self.executions.push(submitted.execution_id.clone());
        }
        Ok(submitted.execution_id)
    }

    /// `:drain-once`: one tick, awaited to the end. Returns whether it dispatched.
    pub(crate) async fn drain_once(&self, function: &FunctionName) -> bool {
        match self
            .scheduler
            .tick_once(function)
            .await
            .expect("known function")
        {
            Some(handle) => {
                handle.await.expect("attempt task");
                true
            }
            None => false,
        }
    }

    /// Moves the manual clock.
    pub(crate) fn advance_clock(&self, ms: u64) {
        self.clock.advance_ms(ms);
    }

    /// Moves the manual clock past the longest backoff of the retry that will be
    /// `next_attempt` (the cases run with the default backoff).
    pub(crate) fn advance_past_backoff(&self, next_attempt: u32) {
        self.advance_clock(RetryBackoff::default().ceiling(next_attempt).0);
    }

    /// Lets other tasks run until `id`'s record satisfies `done`; panics if it never
    /// does.
    pub(crate) async fn until_record(
        &self,
        id: &ExecutionId,
        mut done: impl FnMut(&store::ExecutionRecord) -> bool,
    ) {
        for _ in 0..10_000 {
            if let Some(record) = self.scheduler.execution(id).await.unwrap()
                && done(&record)
            {
                return;
            }
            tokio::task::yield_now().await;
        }
        panic!("the record of {id} never got there");
    }

    /// Pins the observable state as `snapshots/<case>/<checkpoint>.snap`.
    pub(crate) async fn checkpoint(&self, checkpoint: &str) {
        let dump = self.dump().await;
        insta::with_settings!({
            snapshot_path => format!("../snapshots/{}", self.name),
            prepend_module_to_snapshot => false,
            omit_expression => true,
        }, {
            insta::assert_snapshot!(checkpoint.to_owned(), dump);
        });
    }

    /// A readable dump: queues and slots, every record, and the events since the last
    /// checkpoint.
    pub(crate) async fn dump(&self) -> String {
        let mut out = String::new();
        writeln!(out, "queues:").unwrap();
        for function in &self.functions {
            match self.scheduler.queue_snapshot(function.as_str()) {
                Some(q) => {
                    let queued: Vec<_> = q.queued.iter().map(ToString::to_string).collect();
                    writeln!(
                        out,
                        "  {function}: queued [{}], slots {}/{} taken, capacity {}",
                        queued.join(", "),
                        q.in_flight,
                        q.concurrency,
                        q.capacity
                    )
                    .unwrap();
                }
                None => writeln!(out, "  {function}: (removed)").unwrap(),
            }
        }
        writeln!(out, "records:").unwrap();
        if self.executions.is_empty() {
            writeln!(out, "  (none)").unwrap();
        }
        for id in &self.executions {
            let Some(r) = self.scheduler.execution(id).await.unwrap() else {
                writeln!(out, "  {id}: (no record)").unwrap();
                continue;
            };
            let at = |t: Option<Timestamp>| {
                t.map_or("-".to_owned(), |t| {
                    format!("t+{}ms", self.clock.offset_of(t))
                })
            };
            writeln!(
                out,
                "  {id} ({}): {} attempt {}",
                r.function, r.state, r.attempt
            )
            .unwrap();
            writeln!(
                out,
                "    created {} started {} finished {}",
                at(Some(r.created_at)),
                at(r.started_at),
                at(r.finished_at)
            )
            .unwrap();
            if let Some(output) = &r.output {
                writeln!(out, "    output {}", output.json_text()).unwrap();
            }
            if let Some(error) = &r.error {
                writeln!(out, "    error {}: {}", error.code, error.message).unwrap();
            }
        }
        writeln!(
            out,
            "ignored completions: {}",
            self.scheduler.ignored_completions()
        )
        .unwrap();
        writeln!(out, "events since last checkpoint:").unwrap();
        let events = self.log.take();
        if events.is_empty() {
            writeln!(out, "  (none)").unwrap();
        }
        for event in events {
            writeln!(out, "  {event}").unwrap();
        }
        out
    }
}

/// A LOCAL-style function spec with overrides.
pub(crate) fn spec(name: &str, overrides: serde_json::Value) -> serde_json::Value {
    let mut spec = serde_json::json!({"name": name, "image": "nanofaas/test", "executionMode": "POOL", "endpointUrl": "http://127.0.0.1:9/"});
    for (k, v) in overrides.as_object().expect("object").clone() {
        spec[k] = v;
    }
    spec
}
