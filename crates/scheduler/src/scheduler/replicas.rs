//! Functions whose replicas a provider starts and stops: their ready count (which
//! sets how many dispatches their queue lets through), their desired count (kept in
//! the registry, set by the autoscaler or `PUT .../replicas`), the reconciling of the
//! two with the provider, and the autoscaling loop.
//!
//! Who wins between the autoscaler and a manual count: `PUT .../replicas` on a
//! function whose strategy is `INTERNAL` pins it at that count (the autoscaler leaves a
//! pinned function alone) until the function is registered again; on `NONE` (and
//! `HPA`, which nothing runs here) it simply is the count.

use std::sync::Mutex;
use std::sync::atomic::AtomicU32;

use core_types::{DeploymentHooks, OwnedTask, ReadyReplicas, TaskOwner};
use store::ReplicaTarget;

use super::*;
use crate::scaling::{Autoscaler, ScalingPolicy, ScalingSignals, ScalingWindows};

/// How the autoscaler runs (control-plane flags).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AutoscalingConfig {
    /// How often every autoscaled function is looked at (and the period its `rps` is
    /// measured over). Work arriving for a function at zero replicas wakes it at once.
    pub interval: Duration,
    /// Scale down only to the highest count asked for over this long.
    pub scale_down_window: Duration,
    /// With `minReplicas: 0`, idle this long scales a function to zero.
    pub idle_to_zero: Duration,
}

impl Default for AutoscalingConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(1),
            scale_down_window: Duration::from_secs(30),
            idle_to_zero: Duration::from_secs(60),
        }
    }
}

/// A function's replicas as the scheduler sees them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReplicaCounts {
    /// Replicas it is to run.
    pub desired: u32,
    /// Replicas ready to take dispatches.
    pub ready: u32,
    /// Whether a manual count holds it (the autoscaler leaves it alone).
    pub pinned: bool,
}

/// The managed replicas of one function.
pub(super) struct Replicas {
    /// What it is to run; changed under this lock (never held across an await), then
    /// carried out by [`Scheduler::reconcile`].
    target: Mutex<ReplicaTarget>,
    /// What the registry and the provider were last told.
    applied: Mutex<Option<ReplicaTarget>>,
    /// Set while a reconcile runs; a change made meanwhile is picked up by it.
    reconciling: AtomicBool,
    ready: Arc<ReadyCount>,
    /// `None` unless its strategy is `INTERNAL`.
    autoscaler: Option<Mutex<Autoscaler>>,
    /// Invocations submitted, for the `rps` signal.
    arrivals: AtomicU64,
    /// `arrivals` when the autoscaler last looked, and when.
    last_look: Mutex<Option<(u64, Timestamp)>>,
}

impl std::fmt::Debug for Replicas {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replicas")
            .field("counts", &self.counts())
            .finish_non_exhaustive()
    }
}

impl Replicas {
    pub(super) fn counts(&self) -> ReplicaCounts {
        let target = *lock(&self.target);
        ReplicaCounts {
            desired: target.desired,
            ready: self.ready.ready.load(Ordering::Acquire),
            pinned: target.pinned,
        }
    }

    pub(super) fn target(&self) -> ReplicaTarget {
        *lock(&self.target)
    }

    /// After a restart: provisioned with none, it is to run what it kept.
    pub(super) fn restore_target(&self, kept: ReplicaTarget) {
        *lock(&self.target) = kept;
    }

    /// Counts an arrival; `true` when the function is at zero and nobody has asked for
    /// a replica yet (the autoscaler should look now, not at its next turn).
    pub(super) fn arrived(&self) -> bool {
        self.arrivals.fetch_add(1, Ordering::Relaxed);
        self.autoscaler.is_some() && lock(&self.target).desired == 0
    }
}

/// Where the provider reports ready replicas: each lets `concurrency` dispatches of
/// the function through its queue.
struct ReadyCount {
    ready: AtomicU32,
    queue: Arc<FunctionQueue>,
    per_replica: usize,
}

impl ReadyReplicas for ReadyCount {
    fn set_ready(&self, ready: u32) {
        self.ready.store(ready, Ordering::Release);
        self.queue
            .set_concurrency(self.per_replica.saturating_mul(ready as usize));
    }
}

/// Runs the provider's supervision in tasks the scheduler owns, tracked apart from
/// the attempts: shutdown stops the replicas only after the attempts using them end,
/// then awaits these.
pub(super) struct ProviderTasks {
    pub(super) tracker: TaskTracker,
}

impl TaskOwner for ProviderTasks {
    fn run(&self, task: OwnedTask) {
        #[expect(
            clippy::disallowed_methods,
            reason = "the scheduler owns every long-lived task: a provider's supervision is tracked by `provider_tasks`, which `shutdown` awaits after stopping the provider"
        )]
        tokio::spawn(self.tracker.track_future(task));
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

impl Scheduler {
    /// The hooks a provisioning of `spec` gets, and the replicas' state they feed.
    pub(super) fn replica_hooks(
        &self,
        registered: &RegisteredFunction,
        queue: &Arc<FunctionQueue>,
        target: ReplicaTarget,
    ) -> (DeploymentHooks, Arc<Replicas>) {
        let spec = &registered.spec;
        let ready = Arc::new(ReadyCount {
            ready: AtomicU32::new(0),
            queue: Arc::clone(queue),
            per_replica: spec.concurrency as usize,
        });
        let windows = ScalingWindows {
            scale_down_window: duration_ms(self.inner.config.autoscaling.scale_down_window),
            idle_to_zero: duration_ms(self.inner.config.autoscaling.idle_to_zero),
        };
        let replicas = Arc::new(Replicas {
            target: Mutex::new(target),
            applied: Mutex::new(Some(target)),
            reconciling: AtomicBool::new(false),
            ready: Arc::clone(&ready),
            autoscaler: ScalingPolicy::of(spec)
                .map(|policy| Mutex::new(Autoscaler::new(policy, windows))),
            arrivals: AtomicU64::new(0),
            last_look: Mutex::new(None),
        });
        let hooks = DeploymentHooks {
            ready,
            tasks: Arc::clone(&self.inner.provider_tasks) as Arc<dyn TaskOwner>,
            callback_url: self
                .inner
                .config
                .function_callback_url(&spec.name, registered.created_at),
        };
        (hooks, replicas)
    }

    /// The replicas a new registration of `spec` starts with: `minReplicas` (api.md's
    /// defaults give a `DEPLOYMENT` one).
    pub(super) fn initial_replicas(spec: &FunctionSpec) -> u32 {
        spec.scaling_config
            .as_ref()
            .map_or(1, |scaling| scaling.min_replicas)
    }

    /// Sets the replica count of a `DEPLOYMENT` function: for one whose replicas the
    /// provider runs, the count is kept in the registry (so a restart starts as many)
    /// and pins an autoscaled function; one reached at a provider's endpoint is
    /// scaled by the provider alone.
    pub async fn set_replicas(
        &self,
        name: &FunctionName,
        replicas: u32,
    ) -> Result<(), ReplicasError> {
        let runtime = self
            .inner
            .functions
            .get(name)
            .map(|r| Arc::clone(&r))
            .ok_or_else(|| ReplicasError::UnknownFunction(name.clone()))?;
        let provider = match (
            runtime.registered.effective_mode,
            &self.inner.parts.deployments,
        ) {
            (ExecutionMode::Deployment, Some(provider)) => Arc::clone(provider),
            (mode, _) => {
                return Err(ReplicasError::NotDeployment {
                    function: name.clone(),
                    mode,
                });
            }
        };
        let Some(managed) = runtime.replicas.clone() else {
            if runtime.spec.endpoint_url.is_none() {
                return Err(ReplicasError::NotDeployment {
                    function: name.clone(),
                    mode: ExecutionMode::Deployment,
                });
            }
            provider.set_replicas(name, replicas).await?;
            return Ok(());
        };
        let pinned = managed.autoscaler.is_some();
        *lock(&managed.target) = ReplicaTarget {
            desired: replicas,
            pinned,
        };
        tracing::info!(function = %name, replicas, pinned, "replica count set by hand");
        let this = self.clone();
        self.run_owned(async move { this.reconcile(&runtime, &managed).await })
            .await
            .unwrap_or(Ok(()))
    }

    /// Carries the desired count of `managed` to the registry and the provider, until
    /// what they were last told is the latest target. One reconcile at a time per
    /// function; a change made while one runs is taken up by it.
    pub(super) async fn reconcile(
        &self,
        runtime: &Arc<FunctionRuntime>,
        managed: &Arc<Replicas>,
    ) -> Result<(), ReplicasError> {
        let Some(provider) = self.inner.parts.deployments.clone() else {
            return Ok(());
        };
        let name = &runtime.spec.name;
        loop {
            if managed.reconciling.swap(true, Ordering::AcqRel) {
                return Ok(());
            }
            let result = loop {
                let target = managed.target();
                if *lock(&managed.applied) == Some(target) {
                    break Ok(());
                }
                // Kept first: a restart then starts what was last asked for.
                let mut registered = runtime.registered.clone();
                registered.replicas = Some(target);
                if let Err(fault) = self.inner.parts.registry.replace(registered).await {
                    break Err(ReplicasError::from(fault));
                }
                if let Err(refused) = provider.set_replicas(name, target.desired).await {
                    break Err(refused.into());
                }
                *lock(&managed.applied) = Some(target);
            };
            managed.reconciling.store(false, Ordering::Release);
            // A change made after the last look, while the flag was still set, would be
            // lost: look once more now that it is clear.
            let settled = *lock(&managed.applied) == Some(managed.target());
            if result.is_err() || settled {
                return result;
            }
        }
    }

    /// Starts the autoscaler: every `interval` (and at once when work arrives for a
    /// function at zero) it looks at each autoscaled function that no manual count
    /// pins, and changes its desired count as [`crate::scaling`] decides.
    pub(super) fn start_autoscaler(&self) {
        let this = self.clone();
        let every = self.inner.config.autoscaling.interval;
        let stopping = self.inner.stopping.clone();
        self.spawn_owned(async move {
            let mut ticks = tokio::time::interval(every);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = stopping.cancelled() => return,
                    _ = ticks.tick() => {}
                    () = this.inner.scale_now.notified() => {}
                }
                this.autoscale_once();
            }
        });
    }

    /// One look at every autoscaled function.
    fn autoscale_once(&self) {
        let now = self.inner.parts.clock.now();
        let runtimes: Vec<_> = self
            .inner
            .functions
            .iter()
            .filter(|r| r.replicas.as_ref().is_some_and(|m| m.autoscaler.is_some()))
            .map(|r| Arc::clone(r.value()))
            .collect();
        for runtime in runtimes {
            let Some(managed) = runtime.replicas.clone() else {
                continue;
            };
            let Some(autoscaler) = &managed.autoscaler else {
                continue;
            };
            let target = managed.target();
            if target.pinned {
                continue;
            }
            let signals = ScalingSignals {
                queue_depth: runtime.queue.depth() as u64,
                in_flight: runtime.queue.in_flight() as u64,
                rps: arrival_rate(&managed, now),
            };
            let decision = lock(autoscaler).decide(now, target.desired, signals);
            if decision.desired == target.desired {
                tracing::trace!(function = %runtime.spec.name, reason = %decision.reason, "replicas held");
                continue;
            }
            {
                let mut current = lock(&managed.target);
                if current.pinned {
                    continue;
                }
                current.desired = decision.desired;
            }
            tracing::info!(
                function = %runtime.spec.name,
                from = target.desired,
                to = decision.desired,
                reason = %decision.reason,
                "autoscaled"
            );
            let this = self.clone();
            self.spawn_owned(async move {
                if let Err(error) = this.reconcile(&runtime, &managed).await {
                    tracing::warn!(function = %runtime.spec.name, %error, "the new replica count could not be applied; trying again at the next decision");
                }
            });
        }
    }

    /// Wakes the autoscaler now (work arrived for a function at zero).
    pub(super) fn scale_now(&self) {
        self.inner.scale_now.notify_one();
    }

    /// The replicas of a managed function (`None`: not one).
    pub fn replicas(&self, name: &str) -> Option<ReplicaCounts> {
        let runtime = self.inner.functions.get(name)?;
        runtime.replicas.as_ref().map(|managed| managed.counts())
    }

    /// How the provider's replicas of `name` are doing (restarts, crash loop).
    pub fn deployment_status(&self, name: &FunctionName) -> Option<core_types::DeploymentStatus> {
        self.replicas(name.as_str())?;
        self.inner.parts.deployments.as_ref()?.status(name)
    }

    /// The last `tail` lines the replicas of `name` wrote.
    pub fn replica_logs(&self, name: &FunctionName, tail: usize) -> Result<Vec<String>, LogsError> {
        let runtime = self
            .inner
            .functions
            .get(name)
            .map(|r| Arc::clone(&r))
            .ok_or_else(|| LogsError::UnknownFunction(name.clone()))?;
        let provider = self.inner.parts.deployments.as_ref();
        let managed = runtime.replicas.is_some() || runtime.per_invocation;
        match provider
            .filter(|_| managed)
            .and_then(|p| p.logs(name, tail))
        {
            Some(lines) => Ok(lines),
            None => Err(LogsError::NoReplicas(name.clone())),
        }
    }
}

/// Arrivals per second since the autoscaler last looked.
fn arrival_rate(managed: &Replicas, now: Timestamp) -> f64 {
    let arrivals = managed.arrivals.load(Ordering::Relaxed);
    let mut last = lock(&managed.last_look);
    let rate = match *last {
        Some((before, at)) => {
            let seconds = now.since(at).0 as f64 / 1000.0;
            if seconds > 0.0 {
                arrivals.saturating_sub(before) as f64 / seconds
            } else {
                0.0
            }
        }
        None => 0.0,
    };
    *last = Some((arrivals, now));
    rate
}

fn duration_ms(duration: Duration) -> DurationMs {
    DurationMs(u64::try_from(duration.as_millis()).unwrap_or(u64::MAX))
}
