//! The deployment port: whoever runs the replicas of a `DEPLOYMENT` function
//! (local processes, Kubernetes, ...).
//!
//! A provider answers a registration with how the function is reached
//! ([`Provisioned`]): a fixed endpoint the scheduler dispatches to as `POOL` (a
//! Kubernetes Service), replicas that come and go whose ready count the provider reports
//! through [`DeploymentHooks::ready`] (the scheduler then lets `concurrency` dispatches
//! per ready replica through, and the provider's own `Dispatch` spreads them), or a
//! command run once per invocation. The port lives here, not beside the dispatchers,
//! because the scheduler (which must not know the dispatcher crate) makes registration
//! atomic around it, keeps the desired replica count and owns every task a provider
//! needs (through [`TaskOwner`]).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crate::{ErrorCode, FunctionName, FunctionSpec};

/// Runs the replicas of `DEPLOYMENT` functions and tells how they are reached.
#[async_trait::async_trait]
pub trait DeploymentProvider: Send + Sync + 'static {
    /// A short name for logs and errors (`"process"`, `"kubernetes"`).
    fn name(&self) -> &str;

    /// Why this provider cannot run `spec` (no `command`, a runtime mode it does not
    /// know, ...), or `None` when it can. The scheduler asks before provisioning and
    /// gives the reason as the function's `degradationReason` when it runs it as `POOL`
    /// instead.
    fn refuses(&self, spec: &FunctionSpec) -> Option<String> {
        let _ = spec;
        None
    }

    /// Starts the deployment of `spec` with `replicas` replicas and returns how it is
    /// reached, once every one of them is ready (a replica that never gets ready fails
    /// the provisioning, and nothing is left running). Must be idempotent for the same
    /// spec: a registration that failed half-way may be provisioned again.
    async fn provision(
        &self,
        spec: &Arc<FunctionSpec>,
        replicas: u32,
        hooks: DeploymentHooks,
    ) -> Result<Provisioned, ProvisionError>;

    /// Stops and removes everything provisioned for `function`, and returns once
    /// nothing of it runs. Removing a function that is not (or no longer) provisioned
    /// is not an error.
    async fn deprovision(&self, function: &FunctionName) -> Result<(), DeprovisionError>;

    /// Sets the replica count of `function` (0 stops every replica without removing
    /// the function). Returns once the change is under way: replicas started report
    /// through [`ReadyReplicas`] when they are ready; replicas stopped are no longer
    /// dispatched to when it returns.
    async fn set_replicas(
        &self,
        function: &FunctionName,
        replicas: u32,
    ) -> Result<(), SetReplicasError>;

    /// How the replicas of `function` are doing, if the provider runs it.
    fn status(&self, function: &FunctionName) -> Option<DeploymentStatus> {
        let _ = function;
        None
    }

    /// The last `tail` lines the replicas of `function` wrote (stdout and stderr), each
    /// prefixed with its replica, oldest first; `None` if the provider keeps none for
    /// it.
    fn logs(&self, function: &FunctionName, tail: usize) -> Option<Vec<String>> {
        let _ = (function, tail);
        None
    }

    /// Stops every replica of every function (the control plane is stopping) and
    /// returns once none runs; the tasks handed to [`TaskOwner`] end with them.
    async fn shutdown(&self) {}
}

/// How a provisioned function is reached.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Provisioned {
    /// At one endpoint that spreads the load itself (a Kubernetes Service): the
    /// scheduler stores it as the function's `endpointUrl` and dispatches as `POOL`.
    Endpoint(String),
    /// By replicas the provider starts and stops, dispatched to through the provider's
    /// own `Dispatch`; their ready count arrives through [`DeploymentHooks::ready`].
    Replicas,
    /// By a command run once per invocation (`STDIO` and `FILE` functions): no
    /// replicas, `concurrency` bounds the commands running at once.
    PerInvocation,
}

/// What the scheduler gives a provider with each provisioning.
#[derive(Clone)]
pub struct DeploymentHooks {
    /// Where the provider reports how many replicas of the function are ready.
    pub ready: Arc<dyn ReadyReplicas>,
    /// Who runs the provider's long-lived work (supervising replicas).
    pub tasks: Arc<dyn TaskOwner>,
    /// The `CALLBACK_URL` the function's replicas get (with a credential for the
    /// function when callbacks are signed); `None`: none.
    pub callback_url: Option<Arc<str>>,
}

impl std::fmt::Debug for DeploymentHooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeploymentHooks").finish_non_exhaustive()
    }
}

/// Told how many replicas of one function are ready to take dispatches.
pub trait ReadyReplicas: Send + Sync + 'static {
    /// `ready` replicas are ready now (cold starts are reported with the dispatch
    /// that met them, not here).
    fn set_ready(&self, ready: u32);
}

/// A future a provider hands to its owner to run.
pub type OwnedTask = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// Runs long-lived work on behalf of someone who must not spawn (a provider): every
/// task is tracked, and shutdown awaits it after [`DeploymentProvider::shutdown`].
pub trait TaskOwner: Send + Sync + 'static {
    /// Runs `task` to its end.
    fn run(&self, task: OwnedTask);
}

/// How the replicas of one function are doing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeploymentStatus {
    /// Replicas ready to take dispatches.
    pub ready: u32,
    /// Replicas started again after they exited or never got ready, since provisioning.
    pub restarts: u64,
    /// While replicas keep failing (exit or never ready, again and again): what the last
    /// failure was and when the next start is due. `None` once a replica is ready again.
    pub crash_loop: Option<String>,
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
    /// The provider (or what it drives, e.g. a replica that never got ready) failed.
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
