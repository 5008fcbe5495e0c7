//! The deployment port: whoever runs the replicas of a `DEPLOYMENT` function
//! (Kubernetes, local processes, ...).
//!
//! A provider works at registration time, not on the dispatch path: `provision` returns
//! the endpoint URL, the scheduler stores it as the function's `endpointUrl`, and from
//! then on the function is dispatched exactly as a `POOL` one. The port lives here, not
//! beside the dispatchers, because the scheduler (which must not know the dispatcher
//! crate) makes registration atomic around it.

use crate::{ErrorCode, FunctionName, FunctionSpec};

/// Runs the replicas of `DEPLOYMENT` functions and tells where they listen.
#[async_trait::async_trait]
pub trait DeploymentProvider: Send + Sync + 'static {
    /// A short name for logs and errors (`"kubernetes"`, `"local-process"`).
    fn name(&self) -> &str;

    /// Whether this provider can run `spec` at all (right runtime mode, image
    /// available, ...). The registry asks before provisioning; the default is yes.
    fn supports(&self, spec: &FunctionSpec) -> bool {
        let _ = spec;
        true
    }

    /// Starts (or updates) the replicas of `spec` and returns the endpoint URL
    /// invocations are to be POSTed to. Must be idempotent for the same spec: a
    /// registration that failed half-way may be provisioned again.
    async fn provision(&self, spec: &FunctionSpec) -> Result<String, ProvisionError>;

    /// Removes everything provisioned for `function`. Removing a function that is not
    /// (or no longer) provisioned is not an error.
    async fn deprovision(&self, function: &FunctionName) -> Result<(), DeprovisionError>;

    /// Sets the replica count of `function` (0 stops it without removing it).
    async fn set_replicas(
        &self,
        function: &FunctionName,
        replicas: u32,
    ) -> Result<(), SetReplicasError>;
}

/// Why [`DeploymentProvider::provision`] failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProvisionError {
    /// The provider cannot run this function at all.
    #[error("provider {provider} cannot run function {function}: {reason}")]
    Unsupported {
        /// The provider's name.
        provider: String,
        /// The function.
        function: FunctionName,
        /// Why not.
        reason: String,
    },
    /// The provider (or what it drives, e.g. the Kubernetes API) failed.
    #[error("provider {provider} failed to provision function {function}: {message}")]
    Failed {
        /// The provider's name.
        provider: String,
        /// The function.
        function: FunctionName,
        /// What went wrong.
        message: String,
    },
}

impl ProvisionError {
    /// The error code a registration that failed this way reports
    /// (`PROVIDER_UNAVAILABLE`, answered as 503).
    pub const fn code(&self) -> ErrorCode {
        ErrorCode::ProviderUnavailable
    }
}

/// Why [`DeploymentProvider::deprovision`] failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("provider {provider} failed to deprovision function {function}: {message}")]
pub struct DeprovisionError {
    /// The provider's name.
    pub provider: String,
    /// The function.
    pub function: FunctionName,
    /// What went wrong.
    pub message: String,
}

/// Why [`DeploymentProvider::set_replicas`] failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SetReplicasError {
    /// The provider does not run this function.
    #[error("provider {provider} does not run function {function}")]
    NotProvisioned {
        /// The provider's name.
        provider: String,
        /// The function.
        function: FunctionName,
    },
    /// The provider (or what it drives) failed.
    #[error("provider {provider} failed to scale function {function} to {replicas}: {message}")]
    Failed {
        /// The provider's name.
        provider: String,
        /// The function.
        function: FunctionName,
        /// The replica count asked for.
        replicas: u32,
        /// What went wrong.
        message: String,
    },
}
