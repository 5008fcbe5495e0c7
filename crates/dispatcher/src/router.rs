//! The router by execution mode.

use std::fmt;
use std::sync::Arc;

use core_types::{Dispatch, DispatchOutcome, DispatchRequest, ErrorCode, ErrorInfo, ExecutionMode};

use crate::{LocalDispatcher, PoolDispatcher};

/// The [`Dispatch`] the scheduler is given: picks the dispatcher by the function's
/// `executionMode`.
///
/// - `LOCAL` -> the local (echo) dispatcher;
/// - `POOL` -> the pool (HTTP) dispatcher;
/// - `DEPLOYMENT` -> the pool dispatcher when the function has an `endpointUrl` (set
///   by its deployment provider at registration, or given by the user), otherwise the
///   deployment provider's own dispatcher (its replicas, or its one-shot commands), and
///   without one a `DISPATCH_ERROR`.
#[derive(Clone)]
pub struct ModeRouter {
    local: Arc<dyn Dispatch>,
    pool: Arc<dyn Dispatch>,
    deployments: Option<Arc<dyn Dispatch>>,
}

impl ModeRouter {
    /// The production router: [`LocalDispatcher`] for `LOCAL`, `pool` for the rest.
    pub fn new(pool: PoolDispatcher) -> Self {
        Self::with_dispatchers(Arc::new(LocalDispatcher::new()), Arc::new(pool))
    }

    /// A router over any dispatchers (tests inject scripted ones).
    pub fn with_dispatchers(local: Arc<dyn Dispatch>, pool: Arc<dyn Dispatch>) -> Self {
        Self {
            local,
            pool,
            deployments: None,
        }
    }

    /// Sends `DEPLOYMENT` functions without an `endpointUrl` to `deployments` (the
    /// provider that runs their replicas).
    #[must_use]
    pub fn with_deployments(mut self, deployments: Arc<dyn Dispatch>) -> Self {
        self.deployments = Some(deployments);
        self
    }
}

impl fmt::Debug for ModeRouter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ModeRouter").finish_non_exhaustive()
    }
}

#[async_trait::async_trait]
impl Dispatch for ModeRouter {
    async fn dispatch(&self, request: DispatchRequest) -> DispatchOutcome {
        match request.function.execution_mode {
            ExecutionMode::Local => self.local.dispatch(request).await,
            ExecutionMode::Pool => self.pool.dispatch(request).await,
            ExecutionMode::Deployment if request.function.endpoint_url.is_some() => {
                self.pool.dispatch(request).await
            }
            ExecutionMode::Deployment => match &self.deployments {
                Some(deployments) => deployments.dispatch(request).await,
                None => Err(ErrorInfo::new(
                    ErrorCode::DispatchError,
                    "no deployment provider and no endpointUrl",
                )),
            },
        }
    }

    fn sweep_idle(&self) {
        self.local.sweep_idle();
        self.pool.sweep_idle();
        if let Some(deployments) = &self.deployments {
            deployments.sweep_idle();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use core_types::{DispatchSuccess, ExecutionId, FunctionSpec, Payload, TraceId};

    use super::*;

    /// Answers with its own name, so a test sees which dispatcher ran.
    struct Named(&'static str);

    #[async_trait::async_trait]
    impl Dispatch for Named {
        async fn dispatch(&self, _request: DispatchRequest) -> DispatchOutcome {
            Ok(DispatchSuccess::warm(Payload::string(self.0)))
        }
    }

    fn router() -> ModeRouter {
        ModeRouter::with_dispatchers(Arc::new(Named("local")), Arc::new(Named("pool")))
    }

    fn request(mode: &str, endpoint: Option<&str>) -> DispatchRequest {
        let mut spec = serde_json::json!({"name": "f", "image": "img", "executionMode": mode});
        if let Some(url) = endpoint {
            spec["endpointUrl"] = url.into();
        }
        DispatchRequest {
            execution_id: ExecutionId::new("e"),
            function: Arc::new(FunctionSpec::from_json(&spec).unwrap()),
            attempt: 1,
            input: Payload::from_json_text("1").unwrap(),
            metadata: Arc::new(BTreeMap::new()),
            trace_id: TraceId::new("t"),
            idempotency_key: None,
            callback_url: None,
        }
    }

    async fn routed_to(request: DispatchRequest) -> Result<String, ErrorInfo> {
        router()
            .dispatch(request)
            .await
            .map(|s| s.output.to_value().as_str().unwrap().to_owned())
    }

    #[tokio::test]
    async fn routes_by_execution_mode() {
        assert_eq!(routed_to(request("LOCAL", None)).await.unwrap(), "local");
        assert_eq!(
            routed_to(request("LOCAL", Some("http://h/x")))
                .await
                .unwrap(),
            "local"
        );
        assert_eq!(
            routed_to(request("POOL", Some("http://h/x")))
                .await
                .unwrap(),
            "pool"
        );
        assert_eq!(
            routed_to(request("DEPLOYMENT", Some("http://h/x")))
                .await
                .unwrap(),
            "pool"
        );
    }

    /// Counts the sweeps it is asked for.
    #[derive(Default)]
    struct Sweeps(std::sync::atomic::AtomicUsize);

    #[async_trait::async_trait]
    impl Dispatch for Sweeps {
        async fn dispatch(&self, _request: DispatchRequest) -> DispatchOutcome {
            Ok(DispatchSuccess::warm(Payload::string("swept")))
        }

        fn sweep_idle(&self) {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }

    #[test]
    fn a_sweep_reaches_every_dispatcher() {
        let (local, pool) = (Arc::new(Sweeps::default()), Arc::new(Sweeps::default()));
        let router = ModeRouter::with_dispatchers(local.clone(), pool.clone());
        router.sweep_idle();
        router.sweep_idle();
        for swept in [&local, &pool] {
            assert_eq!(swept.0.load(std::sync::atomic::Ordering::SeqCst), 2);
        }
    }

    #[tokio::test]
    async fn a_deployment_without_endpoint_goes_to_its_provider() {
        let router = router().with_deployments(Arc::new(Named("provider")));
        let routed = router.dispatch(request("DEPLOYMENT", None)).await.unwrap();
        assert_eq!(routed.output.to_value(), "provider");
        let routed = router
            .dispatch(request("DEPLOYMENT", Some("http://h/x")))
            .await
            .unwrap();
        assert_eq!(routed.output.to_value(), "pool", "its own endpoint wins");
    }

    #[tokio::test]
    async fn deployment_without_endpoint_is_a_dispatch_error() {
        let error = routed_to(request("DEPLOYMENT", None)).await.unwrap_err();
        assert!(error.has_code(ErrorCode::DispatchError));
        assert_eq!(error.message, "no deployment provider and no endpointUrl");
    }

    #[tokio::test]
    async fn the_production_router_echoes_local_functions() {
        let router = ModeRouter::new(PoolDispatcher::new());
        let mut request = request("LOCAL", None);
        request.input = Payload::from_json_text(r#"{"deep": [1, {"a": null}]}"#).unwrap();
        let success = router.dispatch(request).await.unwrap();
        assert_eq!(
            success,
            DispatchSuccess::warm(
                Payload::from_json_text(r#"{"deep": [1, {"a": null}]}"#).unwrap()
            )
        );
    }
}
