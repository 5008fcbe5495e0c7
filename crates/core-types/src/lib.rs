//! The vocabulary every other crate of the control plane speaks.
//!
//! Owns: id newtypes ([`FunctionName`], [`ExecutionId`], ...), [`FunctionSpec`] with
//! the defaults and validation rules of the HTTP contract, [`ExecutionState`] and its
//! checked transition table, the request/response DTOs and the answers both sides of
//! the API read ([`FunctionView`], [`RuntimeConfigView`], ISO-8601 durations), the
//! error codes, and the
//! ports the engine is written against: [`Dispatch`] (how an invocation reaches a
//! function), [`Clock`] (what time it is), [`IdGenerator`], [`DeploymentProvider`]
//! (who runs `DEPLOYMENT` replicas), and [`CallbackSigner`] (the credential a dispatch's
//! callback URL carries).
//!
//! Must not know: queues, storage, HTTP servers or clients, async runtimes. It depends
//! only on serde, serde_json, thiserror, async-trait and jiff (for RFC 3339 and
//! ISO-8601 text), so every other crate can build on it. The optional `openapi` feature
//! (for http-api's OpenAPI document) adds utoipa and `ToSchema` on the wire types.
//!
//! ```
//! use core_types::{ExecutionState, FunctionSpec};
//!
//! let spec = FunctionSpec::from_json(&serde_json::json!({
//!     "name": "echo", "image": "nanofaas/echo", "executionMode": "LOCAL"
//! })).unwrap();
//! assert_eq!(spec.timeout_ms, 30_000);
//! assert_eq!(spec.max_retries, 3);
//!
//! assert!(ExecutionState::Queued.check_transition(ExecutionState::Running).is_ok());
//! assert!(ExecutionState::Success.check_transition(ExecutionState::Running).is_err());
//! ```

mod codes;
mod deployment;
mod dto;
mod duration;
mod execution;
mod function;
mod ids;
mod payload;
mod ports;
#[cfg(feature = "testing")]
pub mod testing;
mod time;
mod views;
mod wire;

pub use codes::ErrorCode;
pub use deployment::{
    DeploymentHooks, DeploymentProvider, DeploymentStatus, DeprovisionError, OwnedTask,
    ProvisionError, Provisioned, ReadyReplicas, SetReplicasError, TaskOwner,
};
pub use dto::{
    CallbackResult, CompletionRequest, ErrorBody, ErrorDetail, ExecutionStatus, InvocationRequest,
    InvocationResponse,
};
pub use duration::{DurationError, format_iso_duration, parse_iso_duration};
pub use execution::{ALLOWED_TRANSITIONS, ErrorInfo, ExecutionState, InvalidTransition};
pub use function::{
    ExecutionMode, FunctionSpec, Resources, RuntimeMode, ScalingConfig, ScalingMetric,
    ScalingMetricType, ScalingStrategy, TIMEOUT_RANGE_MS, ValidationErrors,
};
pub use ids::{ExecutionId, FunctionName, IdempotencyKey, InvalidName, TraceId};
pub use payload::{ByteSink, InvalidPayload, Payload};
pub use ports::{
    CallbackSigner, Clock, Dispatch, DispatchFailure, DispatchOutcome, DispatchRequest,
    DispatchSuccess, IdGenerator, SystemClock,
};
pub use time::{DurationMs, Timestamp};
pub use views::{FunctionView, ReplicasView, RuntimeConfigChange, RuntimeConfigView};
pub use wire::{headers, is_json_media_type};
