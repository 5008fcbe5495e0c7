//! Why operations of the scheduler are refused, one error type per operation.

use super::*;

/// Why a submission was refused. A refused submission leaves no record and no claim.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubmitError {
    /// No such function.
    #[error("function {0} is not registered")]
    UnknownFunction(FunctionName),
    /// The function's queue is full.
    #[error("the queue of {function} is full ({capacity} queued)")]
    QueueFull {
        /// The function.
        function: FunctionName,
        /// Its queue size.
        capacity: usize,
    },
    /// The inputs of unfinished executions already fill the queued-input budget.
    #[error(
        "the inputs of queued and running executions already hold the control plane's budget of {budget_bytes} bytes; {function} cannot take more now"
    )]
    InputsFull {
        /// The function asked for.
        function: FunctionName,
        /// The budget.
        budget_bytes: usize,
    },
    /// The idempotency key was used with a different request.
    #[error("idempotency key {0} was used with a different request")]
    IdempotencyKeyReused(IdempotencyKey),
    /// The control plane is shutting down or the function is being removed.
    #[error("not accepting invocations of {0}: shutting down or removed")]
    NotAccepting(FunctionName),
    /// The store could not take the execution (or its idempotency claim): nothing
    /// was accepted.
    #[error(transparent)]
    StoreUnavailable(#[from] StoreUnavailable),
}

/// Why a function could not be registered. A refused registration leaves nothing
/// registered and nothing provisioned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegisterError {
    /// The name is taken (or being registered right now).
    #[error(transparent)]
    AlreadyRegistered(#[from] AlreadyRegistered),
    /// A `DEPLOYMENT` function without `endpointUrl`, and no provider can run it.
    #[error("function {function} asks for DEPLOYMENT, but {reason}, and it has no endpointUrl")]
    NoProvider {
        /// The function.
        function: FunctionName,
        /// Why no provider can run it.
        reason: String,
    },
    /// The provider could not provision it.
    #[error(transparent)]
    Provision(#[from] ProvisionError),
    /// The control plane stopped before the registration finished.
    #[error("the control plane stopped before the registration finished")]
    Interrupted,
    /// The registry could not keep it: nothing was registered.
    #[error(transparent)]
    StoreUnavailable(#[from] StoreUnavailable),
}

/// Why a function's replica count could not be set.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplicasError {
    /// No such function.
    #[error("function {0} is not registered")]
    UnknownFunction(FunctionName),
    /// The function has no managed deployment.
    #[error(
        "function {function} runs as {mode:?}, not as a managed DEPLOYMENT: it has no replicas to set"
    )]
    NotDeployment {
        /// The function.
        function: FunctionName,
        /// How it runs.
        mode: ExecutionMode,
    },
    /// The provider failed.
    #[error(transparent)]
    Provider(#[from] SetReplicasError),
    /// The registry could not keep the new count: the provider was not told.
    #[error(transparent)]
    StoreUnavailable(#[from] StoreUnavailable),
}

/// Why a function's replica logs could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LogsError {
    /// No such function.
    #[error("function {0} is not registered")]
    UnknownFunction(FunctionName),
    /// Nothing runs it here: its replicas (if any) are someone else's.
    #[error("function {0} has no replicas the control plane runs, so it keeps no logs of it")]
    NoReplicas(FunctionName),
}

/// Why `tick_once` could not look at a function.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TickError {
    /// No such function.
    #[error("function {0} is not registered")]
    UnknownFunction(FunctionName),
}

/// Why a completion could not be applied at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CompleteError {
    /// No such execution (never existed, or evicted).
    #[error("no execution {0}")]
    UnknownExecution(ExecutionId),
    /// The completion was decided but the store could not make it durable yet: it is
    /// not acknowledged (the scheduler keeps trying to write it).
    #[error(transparent)]
    StoreUnavailable(#[from] StoreUnavailable),
}

/// Why waiting for a result failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WaitError {
    /// No such execution (never existed, or evicted).
    #[error("no execution {0}")]
    UnknownExecution(ExecutionId),
    /// The store could not be read.
    #[error(transparent)]
    StoreUnavailable(#[from] StoreUnavailable),
}

/// Why a function could not be removed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RemoveError {
    /// No such function.
    #[error("function {0} is not registered")]
    UnknownFunction(FunctionName),
    /// The control plane stopped before the removal finished.
    #[error("the control plane stopped before the removal finished")]
    Interrupted,
    /// The registry could not forget it: nothing was removed.
    #[error(transparent)]
    StoreUnavailable(#[from] StoreUnavailable),
}
