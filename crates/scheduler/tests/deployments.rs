//! `DEPLOYMENT` functions: registration provisions them atomically, removal and
//! scaling reach their provider, and without a provider they run as `POOL` only when
//! they brought their own endpoint.

use std::sync::{Arc, Mutex};

use core_types::{
    DeploymentProvider, DeprovisionError, Dispatch, DispatchOutcome, DispatchRequest,
    DispatchSuccess, ExecutionMode, FunctionName, FunctionSpec, ProvisionError, SetReplicasError,
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

/// A provider that records what it is asked and can be told to fail provisioning.
#[derive(Default)]
struct RecordingProvider {
    calls: Mutex<Vec<String>>,
    refuse_provisioning: bool,
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

    async fn provision(&self, spec: &FunctionSpec) -> Result<String, ProvisionError> {
        self.record(format!("provision {}", spec.name));
        if self.refuse_provisioning {
            return Err(ProvisionError::Failed {
                provider: "recording".into(),
                function: spec.name.clone(),
                message: "no capacity".into(),
            });
        }
        Ok(format!("http://fn-{}.test:8080/invoke", spec.name))
    }

    async fn deprovision(&self, function: &FunctionName) -> Result<(), DeprovisionError> {
        self.record(format!("deprovision {function}"));
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
    assert!(scheduler.function("resize").await.is_none());
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
    assert_eq!(refused, Err(RegisterError::NoProvider(name())));
    assert!(scheduler.function("resize").await.is_none());

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
