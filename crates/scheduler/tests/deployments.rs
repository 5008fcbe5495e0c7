//! `DEPLOYMENT` functions: registration provisions them atomically, removal and
//! scaling reach their provider, and without a provider they run as `POOL` only when
//! they brought their own endpoint.

use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

use core_types::{
    DeploymentHooks, DeploymentProvider, DeprovisionError, Dispatch, DispatchOutcome,
    DispatchRequest, DispatchSuccess, ExecutionMode, FunctionName, FunctionSpec, ProvisionError,
    Provisioned, SetReplicasError,
};
use scheduler::{RegisterError, ReplicasError, Scheduler, SchedulerParts};
use serde_json::json;

struct Echo;

#[async_trait::async_trait]
impl Dispatch for Echo {
    async fn dispatch(&self, request: DispatchRequest) -> DispatchOutcome {
        Ok(DispatchSuccess::warm(request.input))
    }
}

/// A provider that records what it is asked and can be told to fail provisioning, or
/// to hold provisioning and deprovisioning until the test lets them finish.
#[derive(Default)]
struct RecordingProvider {
    calls: Mutex<Vec<String>>,
    refuse_provisioning: bool,
    hold: Option<Arc<Hold>>,
}

/// Holds the provider's work: `started` fires when it is held, `release` lets it go on.
#[derive(Default)]
struct Hold {
    started: Notify,
    release: Notify,
}

impl RecordingProvider {
    fn holding() -> (Arc<Self>, Arc<Hold>) {
        let hold = Arc::new(Hold::default());
        let provider = Self {
            hold: Some(Arc::clone(&hold)),
            ..Self::default()
        };
        (Arc::new(provider), hold)
    }

    async fn held(&self, done: String) {
        if let Some(hold) = &self.hold {
            hold.started.notify_one();
            hold.release.notified().await;
            self.record(done);
        }
    }
}

impl RecordingProvider {
    fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }

    fn record(&self, call: String) {
        self.calls.lock().unwrap().push(call);
    }
}

#[async_trait::async_trait]
impl DeploymentProvider for RecordingProvider {
    fn name(&self) -> &str {
        "recording"
    }

    async fn provision(
        &self,
        spec: &Arc<FunctionSpec>,
        _replicas: u32,
        _hooks: DeploymentHooks,
    ) -> Result<Provisioned, ProvisionError> {
        self.record(format!("provision {}", spec.name));
        self.held(format!("provisioned {}", spec.name)).await;
        if self.refuse_provisioning {
            return Err(ProvisionError::Failed {
                provider: "recording".into(),
                function: spec.name.clone(),
                message: "no capacity".into(),
            });
        }
        Ok(Provisioned::Endpoint(format!(
            "http://fn-{}.test:8080/invoke",
            spec.name
        )))
    }

    async fn deprovision(&self, function: &FunctionName) -> Result<(), DeprovisionError> {
        self.record(format!("deprovision {function}"));
        self.held(format!("deprovisioned {function}")).await;
        Ok(())
    }

    async fn set_replicas(
        &self,
        function: &FunctionName,
        replicas: u32,
    ) -> Result<(), SetReplicasError> {
        self.record(format!("scale {function} to {replicas}"));
        Ok(())
    }
}

fn scheduler(provider: Option<Arc<RecordingProvider>>) -> Scheduler {
    let mut parts = SchedulerParts::in_memory(Arc::new(Echo));
    parts.deployments = provider.map(|p| p as Arc<dyn DeploymentProvider>);
    Scheduler::new(parts, Default::default())
}

fn deployment(extra: serde_json::Value) -> FunctionSpec {
    let mut spec = json!({"name": "resize", "image": "img", "executionMode": "DEPLOYMENT"});
    spec.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    FunctionSpec::from_json(&spec).unwrap()
}

fn name() -> FunctionName {
    FunctionName::parse("resize").unwrap()
}

#[tokio::test]
async fn a_provisioned_function_gets_the_provider_s_endpoint_and_is_removed_with_it() {
    let provider = Arc::new(RecordingProvider::default());
    let scheduler = scheduler(Some(Arc::clone(&provider)));

    let registered = scheduler
        .register_function(deployment(json!({})))
        .await
        .unwrap();
    assert_eq!(registered.effective_mode, ExecutionMode::Deployment);
    assert_eq!(
        registered.spec.endpoint_url.as_deref(),
        Some("http://fn-resize.test:8080/invoke")
    );

    scheduler.set_replicas(&name(), 3).await.unwrap();
    scheduler.remove_function(&name()).await.unwrap();
    assert_eq!(
        provider.calls(),
        [
            "provision resize",
            "scale resize to 3",
            "deprovision resize"
        ]
    );
}

#[tokio::test]
async fn a_failed_provisioning_leaves_nothing_registered() {
    let provider = Arc::new(RecordingProvider {
        refuse_provisioning: true,
        ..Default::default()
    });
    let scheduler = scheduler(Some(provider));

    let refused = scheduler.register_function(deployment(json!({}))).await;
    assert!(
        matches!(refused, Err(RegisterError::Provision(_))),
        "{refused:?}"
    );
    assert!(scheduler.function("resize").is_none());
    assert!(scheduler.queue_snapshot("resize").is_none());
}

#[tokio::test]
async fn a_taken_name_is_refused_before_anything_is_provisioned() {
    let provider = Arc::new(RecordingProvider::default());
    let scheduler = scheduler(Some(Arc::clone(&provider)));
    scheduler
        .register_function(deployment(json!({})))
        .await
        .unwrap();

    let again = scheduler.register_function(deployment(json!({}))).await;
    assert!(
        matches!(again, Err(RegisterError::AlreadyRegistered(_))),
        "{again:?}"
    );
    assert_eq!(
        provider.calls(),
        ["provision resize"],
        "the running deployment is untouched"
    );
}

#[tokio::test]
async fn without_a_provider_a_deployment_needs_its_own_endpoint_and_runs_as_pool() {
    let scheduler = scheduler(None);

    let refused = scheduler.register_function(deployment(json!({}))).await;
    assert_eq!(
        refused,
        Err(RegisterError::NoProvider {
            function: name(),
            reason: "no deployment provider runs functions here".into()
        })
    );
    assert!(scheduler.function("resize").is_none());

    let registered = scheduler
        .register_function(deployment(json!({"endpointUrl": "http://127.0.0.1:9/run"})))
        .await
        .unwrap();
    assert_eq!(
        registered.spec.execution_mode,
        ExecutionMode::Deployment,
        "as requested"
    );
    assert_eq!(registered.effective_mode, ExecutionMode::Pool);
    assert_eq!(
        registered.degradation_reason.as_deref(),
        Some("no deployment provider runs functions here: it runs as POOL at its endpointUrl")
    );
    assert_eq!(
        scheduler.set_replicas(&name(), 2).await,
        Err(ReplicasError::NotDeployment {
            function: name(),
            mode: ExecutionMode::Pool
        })
    );
}

#[tokio::test]
async fn replicas_of_unknown_or_non_deployment_functions_are_refused() {
    let provider = Arc::new(RecordingProvider::default());
    let scheduler = scheduler(Some(Arc::clone(&provider)));
    assert_eq!(
        scheduler.set_replicas(&name(), 1).await,
        Err(ReplicasError::UnknownFunction(name()))
    );
    let local = FunctionSpec::from_json(
        &json!({"name": "resize", "image": "img", "executionMode": "LOCAL"}),
    )
    .unwrap();
    scheduler.register_function(local).await.unwrap();
    assert!(matches!(
        scheduler.set_replicas(&name(), 1).await,
        Err(ReplicasError::NotDeployment { .. })
    ));
    assert!(provider.calls().is_empty());
}

/// Yields until `done` holds, at most a bounded number of times.
async fn until(what: &str, mut done: impl AsyncFnMut() -> bool) {
    for _ in 0..10_000 {
        if done().await {
            return;
        }
        tokio::task::yield_now().await;
    }
    panic!("never happened: {what}");
}

#[tokio::test]
async fn a_registration_whose_caller_goes_away_while_provisioning_still_completes() {
    let (provider, hold) = RecordingProvider::holding();
    let scheduler = scheduler(Some(Arc::clone(&provider)));
    let registering = scheduler.register_function(deployment(json!({})));
    // The client disconnects once provisioning has begun: its future is dropped.
    tokio::select! {
        _ = registering => panic!("provisioning is held"),
        () = hold.started.notified() => {}
    }
    hold.release.notify_one();
    until("the registration to finish", async || {
        scheduler.function("resize").is_some()
    })
    .await;
    assert_eq!(
        provider.calls(),
        ["provision resize", "provisioned resize"],
        "provisioned once, and registered: nothing leaked"
    );
    assert!(scheduler.queue_snapshot("resize").is_some());
}

#[tokio::test]
async fn a_removal_whose_caller_goes_away_still_removes_the_deployment() {
    let (provider, hold) = RecordingProvider::holding();
    let scheduler = scheduler(Some(Arc::clone(&provider)));
    let registering = scheduler.register_function(deployment(json!({})));
    let release = async {
        hold.started.notified().await;
        hold.release.notify_one();
    };
    let (registered, ()) = tokio::join!(registering, release);
    registered.unwrap();

    let function = name();
    let removing = scheduler.remove_function(&function);
    tokio::select! {
        _ = removing => panic!("deprovisioning is held"),
        () = hold.started.notified() => {}
    }
    hold.release.notify_one();
    until("the deployment to be removed", async || {
        provider.calls().last().map(String::as_str) == Some("deprovisioned resize")
    })
    .await;
    assert!(scheduler.function("resize").is_none());
}
