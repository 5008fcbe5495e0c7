//! The function registry.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use async_trait::async_trait;
use core_types::{ExecutionMode, FunctionName, FunctionSpec, Timestamp};

use crate::StoreUnavailable;

/// A function as registered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegisteredFunction {
    /// The resolved spec; its `executionMode` is the one the user asked for, and for a
    /// provisioned `DEPLOYMENT` its `endpointUrl` is the provider's.
    pub spec: Arc<FunctionSpec>,
    /// How it actually runs: a `DEPLOYMENT` no provider runs, but which came with an
    /// `endpointUrl`, runs as `POOL`.
    pub effective_mode: ExecutionMode,
    /// When it was registered.
    pub created_at: Timestamp,
    /// Why it runs in another mode than it asked for (`degradationReason`).
    pub degradation_reason: Option<String>,
    /// For a function whose replicas a provider starts and stops: how many it is to
    /// run, as last decided (by the autoscaler or `PUT .../replicas`).
    pub replicas: Option<ReplicaTarget>,
}

impl RegisteredFunction {
    /// A function registered at `created_at` that runs as it asked, with no replicas
    /// of its own.
    pub fn new(spec: Arc<FunctionSpec>, created_at: Timestamp) -> Self {
        Self {
            effective_mode: spec.execution_mode,
            spec,
            created_at,
            degradation_reason: None,
            replicas: None,
        }
    }
}

/// The replica count a managed function is to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReplicaTarget {
    /// Replicas to run.
    pub desired: u32,
    /// Set by `PUT .../replicas` on an autoscaled function: the autoscaler leaves the
    /// count alone until the function is registered again.
    pub pinned: bool,
}

/// A function of that name exists already.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("function {0} exists already")]
pub struct AlreadyRegistered(pub FunctionName);

/// Why a function could not be registered in the registry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    /// The name is taken.
    #[error(transparent)]
    AlreadyRegistered(#[from] AlreadyRegistered),
    /// The store could not take it.
    #[error(transparent)]
    Unavailable(#[from] StoreUnavailable),
}

/// Where registered functions are kept: the record of what is registered, read in
/// full when the control plane starts. Every write returns after it is durable (in a
/// durable backend). The scheduler's own view of its functions serves every read
/// after that, so invocations never query it.
#[async_trait]
pub trait FunctionRegistry: Send + Sync + 'static {
    /// Registers a function; refuses a taken name.
    async fn register(&self, function: RegisteredFunction) -> Result<(), RegistryError>;
    /// Replaces a registered function (its deployment changed, e.g. its replicas).
    async fn replace(&self, function: RegisteredFunction) -> Result<(), StoreUnavailable>;
    /// Every function, sorted by name.
    async fn list(&self) -> Result<Vec<RegisteredFunction>, StoreUnavailable>;
    /// Unregisters a function, returning it.
    async fn remove(&self, name: &str) -> Result<Option<RegisteredFunction>, StoreUnavailable>;
}

/// In-memory registry: one `RwLock` over a sorted map (registration is rare).
#[derive(Debug, Default)]
pub struct MemoryFunctionRegistry {
    functions: RwLock<BTreeMap<FunctionName, RegisteredFunction>>,
}

impl MemoryFunctionRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl FunctionRegistry for MemoryFunctionRegistry {
    async fn register(&self, function: RegisteredFunction) -> Result<(), RegistryError> {
        let mut functions = self.functions.write().unwrap_or_else(|p| p.into_inner());
        let name = function.spec.name.clone();
        if functions.contains_key(&name) {
            return Err(AlreadyRegistered(name).into());
        }
        functions.insert(name, function);
        Ok(())
    }

    async fn replace(&self, function: RegisteredFunction) -> Result<(), StoreUnavailable> {
        self.functions
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(function.spec.name.clone(), function);
        Ok(())
    }

    async fn list(&self) -> Result<Vec<RegisteredFunction>, StoreUnavailable> {
        Ok(self
            .functions
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect())
    }

    async fn remove(&self, name: &str) -> Result<Option<RegisteredFunction>, StoreUnavailable> {
        Ok(self
            .functions
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn function(name: &str) -> RegisteredFunction {
        let spec = FunctionSpec::from_json(
            &serde_json::json!({"name": name, "image": "i", "executionMode": "LOCAL"}),
        )
        .unwrap();
        RegisteredFunction::new(Arc::new(spec), Timestamp::from_millis(0))
    }

    #[tokio::test]
    async fn functions_are_unique_and_listed_by_name() {
        let registry = MemoryFunctionRegistry::new();
        for name in ["b", "a", "c"] {
            registry.register(function(name)).await.unwrap();
        }
        assert_eq!(
            registry.register(function("a")).await,
            Err(AlreadyRegistered(FunctionName::parse("a").unwrap()).into())
        );
        let names: Vec<_> = registry
            .list()
            .await
            .unwrap()
            .into_iter()
            .map(|f| f.spec.name.to_string())
            .collect();
        assert_eq!(names, ["a", "b", "c"]);
        assert!(registry.remove("b").await.unwrap().is_some());
        assert!(registry.remove("b").await.unwrap().is_none());
        assert_eq!(registry.list().await.unwrap().len(), 2);
    }
}
