//! The replicas of one function: each is supervised by one future (run by the
//! scheduler's [`TaskOwner`](core_types::TaskOwner)) that starts the command, waits for
//! it to get ready, watches it, starts it again with exponential backoff when it exits
//! or never gets ready, and stops it when asked (after its in-flight work drained).

use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use core_types::{DeploymentHooks, FunctionSpec};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::ProcessConfig;
use crate::child::{self, Launch};
use crate::health;
use crate::ledger::GroupLedger;
use crate::logs::LogRing;

/// The first wait between readiness probes of a starting replica; each next wait is
/// twice the last, up to [`PROBE_INTERVAL_MAX`]. A replica that is up within a few
/// milliseconds is seen ready within about as many more (its `initDurationMs`, and a
/// cold start's latency, are its own), and a slow one costs a probe every 20 ms.
const PROBE_INTERVAL_FIRST: Duration = Duration::from_millis(1);

/// The longest wait between readiness probes.
const PROBE_INTERVAL_MAX: Duration = Duration::from_millis(20);

/// The waits between a starting replica's readiness probes.
fn probe_waits() -> impl Iterator<Item = Duration> {
    std::iter::successors(Some(PROBE_INTERVAL_FIRST), |wait| {
        Some((*wait * 2).min(PROBE_INTERVAL_MAX))
    })
}

/// Failures in a row after which a function is said to be crash looping.
const CRASH_LOOP_AFTER: u32 = 2;

/// One function's replicas, as its provider keeps them.
#[derive(Debug)]
pub(crate) struct Deployment {
    pub(crate) spec: Arc<FunctionSpec>,
    hooks: DeploymentHooks,
    pub(crate) logs: LogRing,
    /// Where its replicas' process groups are recorded.
    ledger: Arc<GroupLedger>,
    /// Every supervised replica, stopping ones included until they end.
    replicas: Mutex<Vec<Arc<Replica>>>,
    next_replica: AtomicU64,
    restarts: AtomicU64,
    crash_loop: Mutex<Option<String>>,
    /// The first failure of a replica that was never ready (for provisioning).
    first_failure: Mutex<Option<String>>,
    /// Notified on every change of a replica's state.
    changed: Notify,
    /// Cancelled when the whole deployment is removed.
    removed: CancellationToken,
    /// Counts the supervisors still running, so removal can wait for them.
    supervisors: TaskTracker,
}

/// One replica.
#[derive(Debug)]
pub(crate) struct Replica {
    number: u64,
    state: Mutex<State>,
    in_flight: AtomicUsize,
    /// Notified when `in_flight` drops to zero (a stopping replica's drain waits).
    idle: Notify,
    /// Whether it has answered a dispatch yet (the first is a cold start).
    served: AtomicBool,
    stop: CancellationToken,
}

#[derive(Clone, Debug)]
enum State {
    Starting,
    Ready { endpoint: Arc<str>, init: Duration },
    Down,
}

/// A replica picked for a dispatch; holds its place in the replica's in-flight count.
#[derive(Debug)]
pub(crate) struct Picked {
    replica: Arc<Replica>,
    pub(crate) endpoint: Arc<str>,
    /// The replica's start-up time (start to ready).
    init: Duration,
}

impl Picked {
    /// The start-up time to report when this dispatch is the replica's first success.
    pub(crate) fn cold_start(&self) -> Option<Duration> {
        (!self.replica.served.swap(true, Ordering::AcqRel)).then_some(self.init)
    }
}

impl Drop for Picked {
    fn drop(&mut self) {
        if self.replica.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            // One waiter at most (its supervisor): a permit kept for it is never lost.
            self.replica.idle.notify_one();
        }
    }
}

impl Deployment {
    pub(crate) fn new(
        spec: Arc<FunctionSpec>,
        hooks: DeploymentHooks,
        log_lines: usize,
        ledger: Arc<GroupLedger>,
    ) -> Self {
        Self {
            spec,
            hooks,
            logs: LogRing::new(log_lines),
            ledger,
            replicas: Mutex::new(Vec::new()),
            next_replica: AtomicU64::new(1),
            restarts: AtomicU64::new(0),
            crash_loop: Mutex::new(None),
            first_failure: Mutex::new(None),
            changed: Notify::new(),
            removed: CancellationToken::new(),
            supervisors: TaskTracker::new(),
        }
    }

    fn replicas(&self) -> std::sync::MutexGuard<'_, Vec<Arc<Replica>>> {
        self.replicas.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn ready(&self) -> u32 {
        count_ready(&self.replicas())
    }

    pub(crate) fn restarts(&self) -> u64 {
        self.restarts.load(Ordering::Relaxed)
    }

    pub(crate) fn crash_loop(&self) -> Option<String> {
        self.crash_loop
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Reports the ready count to the scheduler and wakes whoever waits for a change.
    /// Called with the list locked, so reports reach the scheduler in order.
    fn publish(&self, replicas: &[Arc<Replica>]) {
        self.hooks.ready.set_ready(count_ready(replicas));
        self.changed.notify_waiters();
    }

    fn set_state(&self, replica: &Replica, state: State) {
        let replicas = self.replicas();
        *replica.state.lock().unwrap_or_else(|p| p.into_inner()) = state;
        self.publish(&replicas);
    }

    /// The ready replica with the least work in flight.
    pub(crate) fn pick(&self) -> Option<Picked> {
        let replicas = self.replicas();
        let (replica, endpoint, init) = replicas
            .iter()
            .filter(|r| !r.stop.is_cancelled())
            .filter_map(
                |r| match &*r.state.lock().unwrap_or_else(|p| p.into_inner()) {
                    State::Ready { endpoint, init } => Some((r, Arc::clone(endpoint), *init)),
                    State::Starting | State::Down => None,
                },
            )
            .min_by_key(|(r, _, _)| r.in_flight.load(Ordering::Acquire))?;
        replica.in_flight.fetch_add(1, Ordering::AcqRel);
        Some(Picked {
            replica: Arc::clone(replica),
            endpoint,
            init,
        })
    }

    /// Starts or stops replicas until `desired` run. Stopped ones are taken out of
    /// dispatch at once (not ready ones first, then the least busy) and end once their
    /// in-flight work is done.
    pub(crate) fn scale(self: &Arc<Self>, desired: u32, config: &Arc<ProcessConfig>) {
        let mut started = Vec::new();
        {
            let mut replicas = self.replicas();
            let running: Vec<_> = replicas
                .iter()
                .filter(|r| !r.stop.is_cancelled())
                .cloned()
                .collect();
            let desired = desired as usize;
            if running.len() > desired {
                let mut victims = running;
                victims.sort_by_key(|r| {
                    let ready = matches!(
                        *r.state.lock().unwrap_or_else(|p| p.into_inner()),
                        State::Ready { .. }
                    );
                    (ready, r.in_flight.load(Ordering::Acquire))
                });
                for victim in victims.iter().take(victims.len() - desired) {
                    victim.stop.cancel();
                }
            } else {
                for _ in running.len()..desired {
                    let replica = Arc::new(Replica {
                        number: self.next_replica.fetch_add(1, Ordering::Relaxed),
                        state: Mutex::new(State::Starting),
                        in_flight: AtomicUsize::new(0),
                        idle: Notify::new(),
                        served: AtomicBool::new(false),
                        stop: self.removed.child_token(),
                    });
                    replicas.push(Arc::clone(&replica));
                    started.push(replica);
                }
            }
            self.publish(&replicas);
        }
        for replica in started {
            let supervise = supervise(Arc::clone(self), replica, Arc::clone(config));
            self.hooks
                .tasks
                .run(Box::pin(self.supervisors.track_future(supervise)));
        }
    }

    /// Waits until `count` replicas are ready, or one failed before it ever was
    /// (its failure is the error).
    pub(crate) async fn wait_ready(&self, count: u32) -> Result<(), String> {
        loop {
            let changed = self.changed.notified();
            if let Some(failure) = self
                .first_failure
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone()
            {
                return Err(failure);
            }
            if self.ready() >= count {
                return Ok(());
            }
            changed.await;
        }
    }

    /// Stops every replica and returns once none runs.
    pub(crate) async fn remove(&self) {
        self.removed.cancel();
        self.supervisors.close();
        self.supervisors.wait().await;
    }

    fn failed(&self, replica: &Replica, failures: u32, what: &str, next: Duration) {
        self.restarts.fetch_add(1, Ordering::Relaxed);
        let name = &self.spec.name;
        let number = replica.number;
        let message = format!(
            "replica {number} {what}; {failures} failure(s) in a row, next start in {} ms",
            next.as_millis()
        );
        tracing::warn!(function = %name, replica = number, failures, "replica {what}; restarting in {} ms", next.as_millis());
        if failures >= CRASH_LOOP_AFTER {
            *self.crash_loop.lock().unwrap_or_else(|p| p.into_inner()) = Some(message.clone());
        }
        let mut first = self.first_failure.lock().unwrap_or_else(|p| p.into_inner());
        if first.is_none() {
            *first = Some(format!("replica {number} {what}"));
        }
        drop(first);
        self.changed.notify_waiters();
    }

    fn recovered(&self) {
        *self.crash_loop.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    fn ended(&self, replica: &Arc<Replica>) {
        let mut replicas = self.replicas();
        replicas.retain(|r| !Arc::ptr_eq(r, replica));
        self.publish(&replicas);
    }
}

fn count_ready(replicas: &[Arc<Replica>]) -> u32 {
    let ready = replicas
        .iter()
        .filter(|r| !r.stop.is_cancelled())
        .filter(|r| {
            matches!(
                *r.state.lock().unwrap_or_else(|p| p.into_inner()),
                State::Ready { .. }
            )
        })
        .count();
    u32::try_from(ready).unwrap_or(u32::MAX)
}

/// How one run of a replica's process ended.
enum Run {
    /// Asked to stop; the process is gone.
    Stopped,
    /// It failed (could not start, exited, or never got ready): start it again.
    Failed(String),
}

/// Supervises one replica until it is asked to stop.
async fn supervise(deployment: Arc<Deployment>, replica: Arc<Replica>, config: Arc<ProcessConfig>) {
    let mut failures = 0_u32;
    loop {
        match run_once(&deployment, &replica, &config).await {
            Run::Stopped => break,
            Run::Failed(what) => {
                deployment.set_state(&replica, State::Down);
                failures = failures.saturating_add(1);
                let backoff = config.restart_backoff(failures);
                deployment.failed(&replica, failures, &what, backoff);
                tokio::select! {
                    () = replica.stop.cancelled() => break,
                    () = tokio::time::sleep(backoff) => {}
                }
                deployment.set_state(&replica, State::Starting);
            }
        }
        // A replica that was ready and then failed starts counting again.
        if matches!(
            *replica.state.lock().unwrap_or_else(|p| p.into_inner()),
            State::Ready { .. }
        ) {
            failures = 0;
        }
    }
    deployment.ended(&replica);
}

/// Starts the replica's process once and follows it until it fails or is stopped.
async fn run_once(deployment: &Deployment, replica: &Arc<Replica>, config: &ProcessConfig) -> Run {
    let spec = &deployment.spec;
    let port = match health::free_port() {
        Ok(port) => port,
        Err(error) => return Run::Failed(format!("found no free port ({error})")),
    };
    let mut env = dispatcher::replica_env(spec, deployment.hooks.callback_url.as_deref());
    env.insert("PORT".to_owned(), port.to_string());
    env.insert("WARM_PORT".to_owned(), port.to_string());
    let started = Instant::now();
    let (mut process, group) = match child::spawn(Launch {
        argv: &spec.command,
        env: &env,
        dir: None,
        stdin: Stdio::null(),
        ledger: &deployment.ledger,
        die_with_parent: true,
    }) {
        Ok(spawned) => spawned,
        Err(error) => {
            return Run::Failed(format!(
                "could not be started: {} ({error})",
                spec.command[0]
            ));
        }
    };
    let prefix = format!("[replica {}]", replica.number);
    let stdout = process.stdout.take();
    let stderr = process.stderr.take();
    // Notified once both streams are closed; `notify_one` keeps the permit for the
    // one waiter, whenever it comes.
    let copied = Notify::new();
    let copy_logs = async {
        let out = async {
            if let Some(stdout) = stdout {
                deployment.logs.copy(&prefix, stdout).await;
            }
        };
        let err = async {
            if let Some(stderr) = stderr {
                deployment.logs.copy(&prefix, stderr).await;
            }
        };
        tokio::join!(out, err);
        copied.notify_one();
        // The streams closed; the process may still run. Nothing more to copy.
        std::future::pending::<()>().await;
    };
    tokio::pin!(copy_logs);
    // After an exit, what the process wrote last is copied before its failure is
    // reported (bounded: a child it left may hold the pipes open).
    macro_rules! finish_copying {
        () => {{
            let _ = tokio::time::timeout(Duration::from_secs(1), async {
                tokio::select! {
                    () = &mut copy_logs => {}
                    () = copied.notified() => {}
                }
            })
            .await;
        }};
    }

    let ready = async {
        let deadline = tokio::time::sleep(config.start_timeout);
        tokio::pin!(deadline);
        for wait in probe_waits() {
            if health::probe(port).await {
                return true;
            }
            tokio::select! {
                () = &mut deadline => return false,
                () = tokio::time::sleep(wait) => {}
            }
        }
        unreachable!("the waits between probes never end")
    };
    let became_ready = tokio::select! {
        () = replica.stop.cancelled() => None,
        status = process.wait() => {
            finish_copying!();
            return Run::Failed(exited_before_ready(status.ok()));
        }
        ready = ready => Some(ready),
        () = &mut copy_logs => unreachable!("copying logs never ends"),
    };
    match became_ready {
        None => {}
        Some(false) => {
            child::stop(&mut process, &group, config.stop_grace).await;
            return Run::Failed(format!(
                "was not ready within {} ms (GET /health on port {port})",
                config.start_timeout.as_millis()
            ));
        }
        Some(true) => {
            let init = started.elapsed();
            tracing::info!(function = %spec.name, replica = replica.number, port, init_ms = init.as_millis() as u64, "replica ready");
            deployment.recovered();
            deployment.set_state(
                replica,
                State::Ready {
                    endpoint: format!("http://127.0.0.1:{port}/invoke").into(),
                    init,
                },
            );
            let exited = tokio::select! {
                () = replica.stop.cancelled() => None,
                status = process.wait() => Some(status.ok()),
                () = &mut copy_logs => unreachable!("copying logs never ends"),
            };
            if let Some(status) = exited {
                finish_copying!();
                return Run::Failed(exited_while_ready(status));
            }
        }
    }
    // Asked to stop: out of dispatch already; let in-flight work finish (bounded by
    // the function's timeout), then stop the process.
    deployment.set_state(replica, State::Down);
    let drained = async {
        while replica.in_flight.load(Ordering::Acquire) > 0 {
            replica.idle.notified().await;
        }
    };
    let _ = tokio::time::timeout(Duration::from_millis(spec.timeout_ms), drained).await;
    tokio::select! {
        _ = child::stop(&mut process, &group, config.stop_grace) => {}
        () = &mut copy_logs => unreachable!("copying logs never ends"),
    }
    tracing::info!(function = %spec.name, replica = replica.number, "replica stopped");
    Run::Stopped
}

fn exited_before_ready(status: Option<ExitStatus>) -> String {
    format!("exited before it was ready ({})", describe(status))
}

fn exited_while_ready(status: Option<ExitStatus>) -> String {
    format!("exited ({})", describe(status))
}

fn describe(status: Option<ExitStatus>) -> String {
    use std::os::unix::process::ExitStatusExt;
    match status {
        Some(status) => match (status.code(), status.signal()) {
            (Some(code), _) => format!("status {code}"),
            (None, Some(signal)) => format!("killed by signal {signal}"),
            (None, None) => "unknown status".to_owned(),
        },
        None => "its status could not be read".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_probes_start_a_millisecond_apart_and_slow_to_every_20_ms() {
        let waits: Vec<u64> = probe_waits()
            .take(8)
            .map(|wait| u64::try_from(wait.as_millis()).unwrap())
            .collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 20, 20, 20]);
    }
}
