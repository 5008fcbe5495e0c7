//! A deterministic simulation of the engine, in the manner of FoundationDB's and
//! TigerBeetle's: from a seed, a generator drives the real scheduler (in-memory stores,
//! a scripted dispatcher whose answers are drawn from the seed, tokio's paused clock
//! with the records' clock following it) through random interleavings of submissions
//! (sync and async, idempotent replays and reused keys), dispatch outcomes (success,
//! failure, hang, slow answers, panics), callbacks (current, stale, future and missing
//! attempts, duplicates, unknown executions), sync timeouts, `tick_once`, time passing,
//! function removal and registration, and finally shutdown. After every step it checks
//! the invariants of ARCHITECTURE.md against the scheduler's and the store's state.
//!
//! A failing seed is printed with the steps that led there and replays exactly:
//! `SIM_SEED=<seed> cargo test -p scheduler --test sim`. `SIM_SEEDS=<n>` runs `n` seeds
//! per test (`cargo xtask sim --seeds N` sets it).

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Duration;

use core_types::testing::SequentialIds;
use core_types::{
    DispatchSuccess, DurationMs, ErrorCode, ErrorInfo, ExecutionId, ExecutionState, FunctionName,
    FunctionSpec, IdempotencyKey, InvocationRequest, Payload,
};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use scheduler::{
    CompleteError, Completion, CompletionSource, LivePhase, RetryBackoff, Scheduler,
    SchedulerConfig, SchedulerParts, SubmitError, SubmitOptions, WaitError,
};
use store::{
    ExecutionRecord, ExecutionStore, IdempotencyStore, MemoryExecutionStore,
    MemoryFunctionRegistry, MemoryIdempotencyStore,
};

/// Seeds each test runs unless `SIM_SEEDS` says otherwise.
const DEFAULT_SEEDS: u64 = 500;

#[test]
fn simulated_seeds_first_quarter() {
    run_seeds(0);
}

#[test]
fn simulated_seeds_second_quarter() {
    run_seeds(1);
}

#[test]
fn simulated_seeds_third_quarter() {
    run_seeds(2);
}

#[test]
fn simulated_seeds_fourth_quarter() {
    run_seeds(3);
}

/// Runs the seeds of one of four interleaved shares (`share`, `share + 4`, ...), or
/// only `SIM_SEED` when set (in the first share).
fn run_seeds(share: u64) {
    quiet_scripted_panics();
    if let Some(seed) = env_number("SIM_SEED") {
        if share == 0 {
            simulate(seed);
        }
        return;
    }
    let count = env_number("SIM_SEEDS").unwrap_or(DEFAULT_SEEDS);
    for n in 0..count {
        simulate(n * 4 + share);
    }
}

fn env_number(name: &str) -> Option<u64> {
    let text = std::env::var(name).ok()?;
    Some(
        text.parse()
            .unwrap_or_else(|_| panic!("{name} must be a number, got {text:?}")),
    )
}

/// The scripted dispatcher panics on purpose; the scheduler catches it. Its message is
/// noise in a run of thousands of seeds.
fn quiet_scripted_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let scripted = info
                .payload()
                .downcast_ref::<&str>()
                .is_some_and(|m| m.starts_with(SCRIPTED_PANIC));
            if !scripted {
                default(info);
            }
        }));
    });
}

const SCRIPTED_PANIC: &str = "sim: scripted dispatcher panic";

/// One seed; panics with its trace if an invariant broke.
fn simulate(seed: u64) {
    let (outcome, trace) = run_seed(seed);
    if let Err(problem) = outcome {
        panic!(
            "simulation seed {seed} failed at step {}: {problem}\n  {}\n\
             replay: SIM_SEED={seed} cargo test -p scheduler --test sim",
            trace.len(),
            trace.join("\n  ")
        );
    }
}

/// One seed on a fresh single-threaded runtime with paused time: what happened, step
/// by step, and whether every invariant held.
fn run_seed(seed: u64) -> (Outcome, Vec<String>) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        let mut sim = Sim::new(seed);
        let outcome = sim.run().await;
        (outcome, sim.trace)
    })
}

#[test]
fn a_seed_replays_exactly() {
    quiet_scripted_panics();
    for seed in [7, 4242] {
        let (first, trace) = run_seed(seed);
        let (second, again) = run_seed(seed);
        assert_eq!(first, second);
        assert!(trace.len() > 40, "seed {seed} did something");
        assert_eq!(
            trace, again,
            "seed {seed} took another path the second time"
        );
    }
}

#[path = "support/watched_store.rs"]
mod watched_store;
#[path = "sim/world.rs"]
mod world;
use world::{CountingStore, SimClock, SimDispatch};

/// What a client future reports when it is done.
enum Done {
    /// A sync caller got its answer.
    Sync {
        id: ExecutionId,
        owner: bool,
        answer: Result<ExecutionRecord, WaitError>,
    },
    /// A `tick_once` handle resolved; the record as it was at that moment.
    Drain {
        id: ExecutionId,
        attempt: u32,
        record: Option<ExecutionRecord>,
    },
}

type Client = Pin<Box<dyn Future<Output = Done>>>;

type Outcome = Result<(), String>;

struct Sim {
    rng: fastrand::Rng,
    scheduler: Scheduler,
    store: Arc<CountingStore>,
    claims: Arc<MemoryIdempotencyStore>,
    background: bool,
    /// How the seed set the scheduler up, for the trace.
    setup: String,
    functions: [(FunctionName, bool); 2],
    executions: Vec<ExecutionId>,
    /// The first terminal record seen of each execution: it must never change.
    terminal: HashMap<ExecutionId, ExecutionRecord>,
    /// The highest attempt seen of each execution: attempts only grow.
    attempts: HashMap<ExecutionId, u32>,
    /// The model of idempotency: what each (function, key) was first used with.
    keys: HashMap<(usize, u8), (u8, ExecutionId)>,
    clients: FuturesUnordered<Client>,
    /// Sync callers not answered yet, by execution.
    waiting: HashMap<ExecutionId, usize>,
    /// `tick_once` handles not resolved yet, by execution and attempt.
    draining: HashMap<(ExecutionId, u32), usize>,
    trace: Vec<String>,
}

impl Sim {
    fn new(seed: u64) -> Self {
        let mut rng = fastrand::Rng::with_seed(seed);
        let day = DurationMs(24 * 60 * 60 * 1000);
        let store = Arc::new(CountingStore {
            inner: MemoryExecutionStore::new(day),
            hook: world::CountsRefusals::default(),
        });
        let claims = Arc::new(MemoryIdempotencyStore::new(day));
        let parts = SchedulerParts {
            dispatch: Arc::new(SimDispatch {
                rng: Mutex::new(fastrand::Rng::with_seed(seed ^ 0x5eed)),
            }),
            clock: Arc::new(SimClock {
                epoch: tokio::time::Instant::now(),
            }),
            ids: Arc::new(SequentialIds::default()),
            executions: Arc::clone(&store) as Arc<dyn ExecutionStore>,
            idempotency: Arc::clone(&claims) as Arc<dyn IdempotencyStore>,
            registry: Arc::new(MemoryFunctionRegistry::new()),
            observer: Arc::new(scheduler::NoObserver),
            deployments: None,
        };
        let retry_backoff = match rng.u8(0..3) {
            0 => RetryBackoff::NONE,
            1 => RetryBackoff::default(),
            _ => RetryBackoff {
                base: Duration::from_millis(rng.u64(1..50)),
                max: Duration::from_millis(rng.u64(50..500)),
            },
        };
        let config = SchedulerConfig {
            retry_backoff,
            waiters_drive_when_manual: rng.bool(),
            ..SchedulerConfig::default()
        };
        let setup = format!(
            "{retry_backoff:?}, waiters drive: {}",
            config.waiters_drive_when_manual
        );
        let scheduler = Scheduler::new(parts, config);
        let background = rng.bool();
        if background {
            scheduler.start_background();
        }
        let name = |n: &str| (FunctionName::parse(n).unwrap(), false);
        Self {
            rng,
            scheduler,
            store,
            claims,
            background,
            setup,
            functions: [name("alpha"), name("beta")],
            executions: Vec::new(),
            terminal: HashMap::new(),
            attempts: HashMap::new(),
            keys: HashMap::new(),
            clients: FuturesUnordered::new(),
            waiting: HashMap::new(),
            draining: HashMap::new(),
            trace: Vec::new(),
        }
    }

    fn log(&mut self, line: String) {
        self.trace.push(line);
    }

    async fn run(&mut self) -> Outcome {
        self.log(format!(
            "background loop: {}, {}",
            self.background, self.setup
        ));
        for index in 0..2 {
            self.register(index).await?;
        }
        let steps = self.rng.usize(40..220);
        for _ in 0..steps {
            self.step().await?;
            self.settle().await?;
            self.check().await?;
        }
        self.shut_down().await
    }

    async fn step(&mut self) -> Outcome {
        let function = self.rng.usize(0..2);
        match self.rng.u32(0..100) {
            0..20 => self.submit(function, true).await,
            20..40 => self.submit(function, false).await,
            40..55 => self.callback().await,
            55..68 => self.drain(function).await,
            68..88 => {
                let ms = match self.rng.u8(0..10) {
                    0 => self.rng.u64(1_000..5_000),
                    _ => self.rng.u64(1..300),
                };
                self.log(format!("advance {ms} ms"));
                tokio::time::advance(Duration::from_millis(ms)).await;
                Ok(())
            }
            88..92 => self.remove(function).await,
            _ => self.register(function).await,
        }
    }

    async fn register(&mut self, index: usize) -> Outcome {
        let (name, registered) = self.functions[index].clone();
        let spec = FunctionSpec::from_json(&serde_json::json!({
            "name": name.as_str(), "image": "sim", "executionMode": "POOL",
            "endpointUrl": "http://127.0.0.1:9/",
            "concurrency": self.rng.u32(1..4),
            "queueSize": self.rng.u32(2..8),
            "maxRetries": self.rng.u32(0..5),
            "timeoutMs": self.rng.u64(50..2_000),
        }))
        .expect("a valid spec");
        let result = self.scheduler.register_function(spec).await;
        self.log(format!("register {name}: {}", result.is_ok()));
        match (registered, result) {
            (false, Ok(_)) => self.functions[index].1 = true,
            (true, Err(scheduler::RegisterError::AlreadyRegistered(_))) => {}
            (registered, result) => {
                return Err(format!(
                    "registering {name} (registered: {registered}) gave {result:?}"
                ));
            }
        }
        Ok(())
    }

    async fn remove(&mut self, index: usize) -> Outcome {
        let (name, registered) = self.functions[index].clone();
        let result = self.scheduler.remove_function(&name).await;
        self.log(format!("remove {name}: {}", result.is_ok()));
        if result.is_ok() != registered {
            return Err(format!(
                "removing {name} (registered: {registered}) gave {result:?}"
            ));
        }
        self.functions[index].1 = false;
        Ok(())
    }

    async fn submit(&mut self, index: usize, sync: bool) -> Outcome {
        let (name, registered) = self.functions[index].clone();
        let key = self.rng.bool().then(|| self.rng.u8(0..4));
        let body = self.rng.u8(0..3);
        let options = SubmitOptions {
            idempotency_key: key.map(|k| IdempotencyKey::new(format!("key-{k}"))),
            wait: sync,
            ..SubmitOptions::default()
        };
        let request = InvocationRequest {
            input: Payload::from_value(&serde_json::json!(body)),
            metadata: Default::default(),
        };
        let result = self.scheduler.submit(&name, request, options).await;
        let known = key.and_then(|k| self.keys.get(&(index, k)).cloned());
        self.log(format!(
            "{} {name} key {key:?} body {body}: {}",
            if sync { "invoke" } else { "enqueue" },
            match &result {
                Ok(s) => format!("{} (replayed {})", s.execution_id, s.replayed),
                Err(e) => format!("refused: {e}"),
            }
        ));
        let submitted = match (result, registered, known) {
            (Err(SubmitError::UnknownFunction(_)), false, _) => return Ok(()),
            (Err(SubmitError::IdempotencyKeyReused(_)), true, Some((first, _)))
                if first != body =>
            {
                return Ok(());
            }
            (Err(SubmitError::QueueFull { .. }), true, None) => return Ok(()),
            (Ok(submitted), true, Some((first, id)))
                if first == body && submitted.replayed && submitted.execution_id == id =>
            {
                submitted
            }
            (Ok(submitted), true, None) if !submitted.replayed => {
                if let Some(k) = key {
                    self.keys
                        .insert((index, k), (body, submitted.execution_id.clone()));
                }
                self.executions.push(submitted.execution_id.clone());
                submitted
            }
            (result, registered, known) => {
                return Err(format!(
                    "submit to {name} (registered: {registered}, key {key:?} body {body}, \
                     key first used with {known:?}) gave {result:?}"
                ));
            }
        };
        if let Some(mut waiter) = submitted.waiter {
            let scheduler = self.scheduler.clone();
            let owner = !submitted.replayed;
            let id = submitted.execution_id.clone();
            let limit = Duration::from_millis(self.rng.u64(1..3_000));
            *self.waiting.entry(id.clone()).or_default() += 1;
            self.clients.push(Box::pin(async move {
                let answer = if owner {
                    scheduler.wait(&mut waiter, Some(limit)).await
                } else {
                    scheduler.wait_at_most(&mut waiter, limit).await
                };
                Done::Sync { id, owner, answer }
            }));
        }
        Ok(())
    }

    async fn callback(&mut self) -> Outcome {
        let unknown = ExecutionId::new("exec-never");
        let id = if self.executions.is_empty() || self.rng.u8(0..20) == 0 {
            unknown.clone()
        } else {
            self.executions[self.rng.usize(0..self.executions.len())].clone()
        };
        let current = self
            .scheduler
            .live_executions()
            .into_iter()
            .find(|live| live.id == id)
            .map(|live| live.attempt);
        let attempt = match (self.rng.u8(0..4), current) {
            (0, _) | (_, None) => None,
            (1, Some(n)) => Some(n),
            (2, Some(n)) => Some(n.saturating_sub(1).max(1)),
            (_, Some(n)) => Some(n + 1),
        };
        let completion = match self.rng.u8(0..3) {
            0 => Completion::Success(DispatchSuccess::warm(Payload::string("callback"))),
            1 => Completion::error(ErrorInfo::new(ErrorCode::RuntimeError, "sim: callback")),
            _ => Completion::Failure {
                state: ExecutionState::Timeout,
                error: ErrorInfo::new(ErrorCode::DispatchTimeout, "sim: callback timeout"),
            },
        };
        let result = self
            .scheduler
            .complete(&id, attempt, completion, CompletionSource::Callback)
            .await;
        self.log(format!("callback {id} attempt {attempt:?}: {result:?}"));
        match result {
            Err(CompleteError::UnknownExecution(_)) if id == unknown => Ok(()),
            Ok(_) if id != unknown => Ok(()),
            other => Err(format!("callback for {id} gave {other:?}")),
        }
    }

    async fn drain(&mut self, index: usize) -> Outcome {
        let (name, registered) = self.functions[index].clone();
        let running_before = self.running();
        let ticked = self.scheduler.tick_once(&name).await;
        let handle = match (ticked, registered) {
            (Ok(handle), true) => handle,
            (Err(_), false) => return Ok(()),
            (other, _) => {
                return Err(format!(
                    "tick_once({name}) with registered {registered}: {:?}",
                    other.map(|h| h.is_some())
                ));
            }
        };
        let Some(handle) = handle else {
            self.log(format!("drain {name}: nothing"));
            return Ok(());
        };
        let started: Vec<_> = self
            .running()
            .into_iter()
            .filter(|run| !running_before.contains(run))
            .collect();
        let [(id, attempt)] = started.as_slice() else {
            return Err(format!(
                "tick_once started {started:?}, not exactly one attempt"
            ));
        };
        self.log(format!("drain {name}: {id} attempt {attempt}"));
        let (id, attempt) = (id.clone(), *attempt);
        *self.draining.entry((id.clone(), attempt)).or_default() += 1;
        let scheduler = self.scheduler.clone();
        self.clients.push(Box::pin(async move {
            handle.await.expect("the attempt task ends");
            let record = scheduler.execution(&id).await.unwrap();
            Done::Drain {
                id,
                attempt,
                record,
            }
        }));
        Ok(())
    }

    fn running(&self) -> Vec<(ExecutionId, u32)> {
        self.scheduler
            .live_executions()
            .into_iter()
            .filter(|live| live.phase == LivePhase::Running)
            .map(|live| (live.id, live.attempt))
            .collect()
    }

    /// Lets the attempt tasks and the clients run until nothing moves: a few turns of
    /// the runtime (an attempt task's completion reaches its waiter within two), more
    /// while clients keep finishing.
    async fn settle(&mut self) -> Outcome {
        let mut quiet = 0;
        for _ in 0..64 {
            tokio::task::yield_now().await;
            let mut moved = false;
            while let Poll::Ready(Some(done)) = futures::poll!(self.clients.next()) {
                self.check_done(done).await?;
                moved = true;
            }
            quiet = if moved { 0 } else { quiet + 1 };
            if quiet == 4 {
                break;
            }
        }
        Ok(())
    }

    async fn check_done(&mut self, done: Done) -> Outcome {
        match done {
            Done::Sync { id, owner, answer } => {
                forget_one(&mut self.waiting, &id);
                self.log(format!(
                    "answered {} {id}: {:?}",
                    if owner { "owner of" } else { "replay of" },
                    answer.as_ref().map(|r| (r.state, r.attempt))
                ));
                let record = answer.map_err(|e| format!("a sync caller of {id} got {e}"))?;
                if owner && !record.state.is_terminal() {
                    return Err(format!("the owner of {id} was answered {}", record.state));
                }
                self.observe(&record)
            }
            Done::Drain {
                id,
                attempt,
                record,
            } => {
                forget_one(&mut self.draining, &(id.clone(), attempt));
                let record = record.ok_or_else(|| format!("no record of {id}"))?;
                let moved = record.state != ExecutionState::Running || record.attempt > attempt;
                if !moved {
                    return Err(format!(
                        "the handle of {id} attempt {attempt} resolved while its record says running attempt {}",
                        record.attempt
                    ));
                }
                self.observe(&record)
            }
        }
    }

    /// Terminal records never change; attempts only grow.
    fn observe(&mut self, record: &ExecutionRecord) -> Outcome {
        let seen = self.attempts.entry(record.id.clone()).or_default();
        if record.attempt < *seen {
            return Err(format!(
                "{} went back from attempt {seen} to {}",
                record.id, record.attempt
            ));
        }
        *seen = record.attempt;
        if let Some(first) = self.terminal.get(&record.id) {
            if first != record {
                return Err(format!(
                    "{} changed after it ended: {first:?} then {record:?}",
                    record.id
                ));
            }
        } else if record.state.is_terminal() {
            self.terminal.insert(record.id.clone(), record.clone());
        }
        Ok(())
    }

    /// The invariants, against the scheduler's and the store's state.
    async fn check(&mut self) -> Outcome {
        let refused = self.store.hook.refused.load(Ordering::Relaxed);
        if refused > 0 {
            return Err(format!("the store refused {refused} decided writes"));
        }
        let live = self.scheduler.live_executions();
        let mut running_per_queue: HashMap<usize, (usize, usize)> = HashMap::new();
        for execution in &live {
            let record = self
                .scheduler
                .execution(&execution.id)
                .await
                .unwrap()
                .ok_or_else(|| format!("live {} has no record", execution.id))?;
            let expected = match execution.phase {
                LivePhase::Queued => ExecutionState::Queued,
                LivePhase::Running => ExecutionState::Running,
                LivePhase::Finishing => {
                    return Err(format!("{} was left finishing", execution.id));
                }
            };
            if record.state != expected || record.attempt != execution.attempt {
                return Err(format!(
                    "{} is {:?} attempt {} in the scheduler but {} attempt {} in the store",
                    execution.id, execution.phase, execution.attempt, record.state, record.attempt
                ));
            }
            let slots = running_per_queue
                .entry(execution.queue)
                .or_insert((0, execution.queue_slots_taken));
            if execution.phase == LivePhase::Running {
                slots.0 += 1;
            }
        }
        for (queue, (running, taken)) in &running_per_queue {
            if running != taken {
                return Err(format!(
                    "queue {queue:#x}: {running} attempts running, {taken} slots taken"
                ));
            }
        }
        for (name, registered) in self.functions.clone() {
            let load = self.scheduler.queue_load(name.as_str());
            if load.is_some() != registered {
                return Err(format!("{name}: registered {registered}, queue {load:?}"));
            }
            // Every queued execution is in its queue, and nothing else is.
            if let (Some(load), Some(queue)) = (load, self.scheduler.queue_id(name.as_str())) {
                let queued = live
                    .iter()
                    .filter(|l| l.queue == queue && l.phase == LivePhase::Queued)
                    .count();
                if queued != load.depth {
                    return Err(format!(
                        "{name}: {queued} executions queued, the queue holds {}",
                        load.depth
                    ));
                }
            }
            // A queue none of whose executions is live holds no slot.
            if let (Some(load), Some(queue)) = (load, self.scheduler.queue_id(name.as_str()))
                && !running_per_queue.contains_key(&queue)
                && load.in_flight != 0
            {
                return Err(format!(
                    "{name}: {} slots taken, nothing running",
                    load.in_flight
                ));
            }
        }
        let live_ids: std::collections::HashSet<_> = live.iter().map(|l| l.id.clone()).collect();
        // Every waiter is answered when its execution ends, not later (a caller's own
        // deadline would answer it too, from the store, and hide a lost wake-up).
        if let Some(id) = self.waiting.keys().find(|id| !live_ids.contains(*id)) {
            return Err(format!("{id} ended but a sync caller is still waiting"));
        }
        let running: std::collections::HashSet<_> = self.running().into_iter().collect();
        if let Some((id, attempt)) = self.draining.keys().find(|run| !running.contains(*run)) {
            return Err(format!(
                "{id} attempt {attempt} ended but its tick_once handle has not resolved"
            ));
        }
        for id in self.executions.clone() {
            let record = self
                .scheduler
                .execution(&id)
                .await
                .unwrap()
                .ok_or_else(|| format!("{id}'s record is gone"))?;
            if !live_ids.contains(&id) && !record.state.is_terminal() {
                return Err(format!("{id} is {} with nobody to end it", record.state));
            }
            if !live_ids.contains(&id) && self.scheduler.waiters(&id).is_some() {
                return Err(format!("{id} ended but keeps subscriptions"));
            }
            self.observe(&record)?;
        }
        let claims = self.claims.stats();
        if self.claims.len() != claims.keys {
            return Err(format!(
                "{} claims held, {} published: a claim was left pending",
                self.claims.len(),
                claims.keys
            ));
        }
        Ok(())
    }

    async fn shut_down(&mut self) -> Outcome {
        let grace = Duration::from_millis(self.rng.u64(0..3_000));
        self.log(format!("shutdown, grace {grace:?}"));
        let scheduler = self.scheduler.clone();
        let mut shutdown = std::pin::pin!(scheduler.shutdown(grace));
        let limit = tokio::time::Instant::now() + grace + Duration::from_secs(60);
        loop {
            tokio::select! {
                biased;
                () = &mut shutdown => break,
                Some(done) = self.clients.next() => self.check_done(done).await?,
                () = tokio::time::sleep(Duration::from_millis(50)) => {}
            }
            if tokio::time::Instant::now() > limit {
                return Err("shutdown did not return".into());
            }
        }
        // Every caller is answered: none of them waits on anything any more.
        while let Some(done) = tokio::time::timeout(Duration::from_secs(600), self.clients.next())
            .await
            .map_err(|_| "a client was never answered after shutdown".to_owned())?
        {
            self.check_done(done).await?;
        }
        self.check().await?;
        if let Some(execution) = self.scheduler.live_executions().first() {
            return Err(format!("{} is still live after shutdown", execution.id));
        }
        if self.scheduler.queued_input_bytes() != 0 {
            return Err(format!(
                "{} input bytes still charged after shutdown",
                self.scheduler.queued_input_bytes()
            ));
        }
        let (name, registered) = self.functions[0].clone();
        if registered {
            let request = InvocationRequest {
                input: Payload::from_value(&serde_json::json!(0)),
                metadata: Default::default(),
            };
            let late = self
                .scheduler
                .submit(&name, request, SubmitOptions::default())
                .await;
            if !matches!(late, Err(SubmitError::NotAccepting(_))) {
                return Err(format!("a submission after shutdown gave {late:?}"));
            }
        }
        Ok(())
    }
}

fn forget_one<K: std::hash::Hash + Eq>(counts: &mut HashMap<K, usize>, key: &K) {
    if let Some(count) = counts.get_mut(key) {
        *count -= 1;
        if *count == 0 {
            counts.remove(key);
        }
    }
}
