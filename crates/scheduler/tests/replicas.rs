//! Functions whose replicas a provider runs: work waits for a ready replica, each
//! ready replica lets `concurrency` dispatches through, the desired count is kept in
//! the registry (a manual count pins an autoscaled function), a restart starts what was
//! kept, and the autoscaler scales from zero when work arrives and back to zero when
//! idle.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use core_types::testing::ManualClock;
use core_types::{
    DeploymentHooks, DeploymentProvider, DeprovisionError, Dispatch, DispatchOutcome,
    DispatchRequest, DispatchSuccess, ExecutionState, FunctionName, FunctionSpec,
    InvocationRequest, Payload, ProvisionError, Provisioned, SetReplicasError,
};
use scheduler::{
    AutoscalingConfig, ReplicaCounts, Scheduler, SchedulerConfig, SchedulerParts, SubmitOptions,
};
use serde_json::json;
use store::{FunctionRegistry, MemoryFunctionRegistry, ReplicaTarget};

struct Echo;

#[async_trait::async_trait]
impl Dispatch for Echo {
    async fn dispatch(&self, request: DispatchRequest) -> DispatchOutcome {
        Ok(DispatchSuccess::warm(request.input))
    }
}

/// A provider whose replicas are whatever the test says is ready.
#[derive(Default)]
struct FakeReplicas {
    calls: Mutex<Vec<String>>,
    hooks: Mutex<BTreeMap<String, DeploymentHooks>>,
}

impl FakeReplicas {
    fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }

    /// The provider reports `ready` replicas of `function`.
    fn report_ready(&self, function: &str, ready: u32) {
        let hooks = self.hooks.lock().unwrap()[function].clone();
        hooks.ready.set_ready(ready);
    }
}

#[async_trait::async_trait]
impl DeploymentProvider for FakeReplicas {
    fn name(&self) -> &str {
        "fake"
    }

    async fn provision(
        &self,
        spec: &Arc<FunctionSpec>,
        replicas: u32,
        hooks: DeploymentHooks,
    ) -> Result<Provisioned, ProvisionError> {
        self.calls
            .lock()
            .unwrap()
            .push(format!("provision {} with {replicas}", spec.name));
        self.hooks
            .lock()
            .unwrap()
            .insert(spec.name.to_string(), hooks);
        Ok(Provisioned::Replicas)
    }

    async fn deprovision(&self, function: &FunctionName) -> Result<(), DeprovisionError> {
        self.calls
            .lock()
            .unwrap()
            .push(format!("deprovision {function}"));
        Ok(())
    }

    async fn set_replicas(
        &self,
        function: &FunctionName,
        replicas: u32,
    ) -> Result<(), SetReplicasError> {
        self.calls
            .lock()
            .unwrap()
            .push(format!("scale {function} to {replicas}"));
        Ok(())
    }
}

struct World {
    scheduler: Scheduler,
    provider: Arc<FakeReplicas>,
    registry: Arc<MemoryFunctionRegistry>,
    clock: Arc<ManualClock>,
}

const WINDOW: Duration = Duration::from_secs(10);
const IDLE: Duration = Duration::from_secs(20);

fn world_over(registry: Arc<MemoryFunctionRegistry>) -> World {
    let provider = Arc::new(FakeReplicas::default());
    let clock = Arc::new(ManualClock::starting_at(
        core_types::Timestamp::from_millis(1_000),
    ));
    let mut parts = SchedulerParts::in_memory(Arc::new(Echo));
    parts.deployments = Some(Arc::clone(&provider) as Arc<dyn DeploymentProvider>);
    parts.registry = Arc::clone(&registry) as Arc<dyn FunctionRegistry>;
    parts.clock = Arc::clone(&clock) as Arc<dyn core_types::Clock>;
    let config = SchedulerConfig {
        autoscaling: AutoscalingConfig {
            interval: Duration::from_secs(1),
            scale_down_window: WINDOW,
            idle_to_zero: IDLE,
        },
        ..SchedulerConfig::default()
    };
    World {
        scheduler: Scheduler::new(parts, config),
        provider,
        registry,
        clock,
    }
}

fn world() -> World {
    world_over(Arc::new(MemoryFunctionRegistry::new()))
}

fn spec(scaling: serde_json::Value) -> FunctionSpec {
    FunctionSpec::from_json(&json!({
        "name": "f", "image": "img", "command": ["run"], "concurrency": 2,
        "scalingConfig": scaling
    }))
    .unwrap()
}

fn name() -> FunctionName {
    FunctionName::parse("f").unwrap()
}

fn input() -> InvocationRequest {
    InvocationRequest {
        input: Payload::from_value(&json!({"n": 1})),
        metadata: BTreeMap::new(),
    }
}

/// Yields (and lets paused time run) until `done` holds, a bounded number of times.
async fn until(what: &str, mut done: impl FnMut() -> bool) {
    for _ in 0..2_000 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("never happened: {what}");
}

#[tokio::test]
async fn work_for_a_function_with_no_ready_replica_waits_for_one() {
    let world = world();
    world
        .scheduler
        .register_function(spec(
            json!({"strategy": "NONE", "minReplicas": 0, "maxReplicas": 3}),
        ))
        .await
        .unwrap();
    assert_eq!(world.provider.calls(), ["provision f with 0"]);

    let submitted = world
        .scheduler
        .submit(&name(), input(), SubmitOptions::default())
        .await
        .unwrap();
    assert!(
        world.scheduler.tick_once(&name()).await.unwrap().is_none(),
        "no replica is ready: nothing is dispatched"
    );
    assert_eq!(
        world.scheduler.queue_load("f").unwrap().depth,
        1,
        "still queued"
    );

    world.provider.report_ready("f", 1);
    let handle = world.scheduler.tick_once(&name()).await.unwrap().unwrap();
    handle.await.unwrap();
    let record = world
        .scheduler
        .execution(&submitted.execution_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(record.state, ExecutionState::Success);
}

#[tokio::test]
async fn each_ready_replica_lets_concurrency_dispatches_through() {
    let world = world();
    world
        .scheduler
        .register_function(spec(
            json!({"strategy": "NONE", "minReplicas": 3, "maxReplicas": 3}),
        ))
        .await
        .unwrap();
    assert_eq!(world.scheduler.queue_snapshot("f").unwrap().concurrency, 0);
    world.provider.report_ready("f", 3);
    assert_eq!(world.scheduler.queue_snapshot("f").unwrap().concurrency, 6);
    world.provider.report_ready("f", 1);
    assert_eq!(world.scheduler.queue_snapshot("f").unwrap().concurrency, 2);
    assert_eq!(
        world.scheduler.replicas("f"),
        Some(ReplicaCounts {
            desired: 3,
            ready: 1,
            pinned: false
        })
    );
}

#[tokio::test]
async fn a_manual_count_pins_an_autoscaled_function_and_is_kept_for_a_restart() {
    let world = world();
    world
        .scheduler
        .register_function(spec(
            json!({"strategy": "INTERNAL", "minReplicas": 1, "maxReplicas": 5}),
        ))
        .await
        .unwrap();
    world.scheduler.set_replicas(&name(), 4).await.unwrap();
    assert_eq!(
        world.provider.calls(),
        ["provision f with 1", "scale f to 4"]
    );
    let pinned = Some(ReplicaTarget {
        desired: 4,
        pinned: true,
    });
    assert_eq!(world.scheduler.function("f").unwrap().replicas, pinned);
    assert_eq!(world.registry.list().await.unwrap()[0].replicas, pinned);

    // A restart over the same registry starts with none, then scales to what was kept.
    let again = world_over(Arc::clone(&world.registry));
    again.scheduler.restore().await.unwrap();
    until("the kept count to be asked for", || {
        again.provider.calls().len() == 2
    })
    .await;
    assert_eq!(
        again.provider.calls(),
        ["provision f with 0", "scale f to 4"]
    );
    assert_eq!(again.scheduler.function("f").unwrap().replicas, pinned);
}

#[tokio::test]
async fn a_fixed_count_is_set_by_hand_and_not_pinned() {
    let world = world();
    world
        .scheduler
        .register_function(spec(
            json!({"strategy": "NONE", "minReplicas": 2, "maxReplicas": 2}),
        ))
        .await
        .unwrap();
    world.scheduler.set_replicas(&name(), 0).await.unwrap();
    assert_eq!(
        world.scheduler.function("f").unwrap().replicas,
        Some(ReplicaTarget {
            desired: 0,
            pinned: false
        })
    );
    assert_eq!(
        world.provider.calls(),
        ["provision f with 2", "scale f to 0"]
    );
}

#[tokio::test(start_paused = true)]
async fn the_autoscaler_scales_from_zero_when_work_arrives_and_back_to_zero_when_idle() {
    let world = world();
    world
        .scheduler
        .register_function(spec(json!({
            "strategy": "INTERNAL", "minReplicas": 0, "maxReplicas": 4,
            "metrics": [{"type": "queue_depth", "target": "1"}]
        })))
        .await
        .unwrap();
    world.scheduler.start_background();

    let submitted = world
        .scheduler
        .submit(&name(), input(), SubmitOptions::default())
        .await
        .unwrap();
    until("a replica to be asked for", || {
        world.provider.calls().contains(&"scale f to 1".to_owned())
    })
    .await;
    world.provider.report_ready("f", 1);
    until("the waiting invocation to run", || {
        world.scheduler.queue_load("f").unwrap().depth == 0
            && world.scheduler.queue_load("f").unwrap().in_flight == 0
    })
    .await;
    let record = world
        .scheduler
        .execution(&submitted.execution_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(record.state, ExecutionState::Success);

    // Idle, but not yet for the idle period: still one replica.
    world.clock.advance_ms(IDLE.as_millis() as u64 / 2);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(!world.provider.calls().contains(&"scale f to 0".to_owned()));
    world
        .clock
        .advance_ms(IDLE.as_millis() as u64 + WINDOW.as_millis() as u64);
    until("the function to be scaled to zero", || {
        world.provider.calls().contains(&"scale f to 0".to_owned())
    })
    .await;
    assert_eq!(world.scheduler.replicas("f").unwrap().desired, 0);
    world.scheduler.shutdown(Duration::from_secs(1)).await;
}
