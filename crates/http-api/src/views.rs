//! The JSON answers this crate composes itself (the rest are core-types DTOs), as types
//! rather than `json!` literals so that the OpenAPI document describes exactly what the
//! handlers send.

use std::sync::Arc;

use core_types::{ExecutionMode, FunctionSpec, Timestamp};
use scheduler::Scheduler;
use serde::Serialize;
use store::RegisteredFunction;
use utoipa::ToSchema;

/// A registered function: its resolved spec (every default filled in) plus how it is
/// run and when it was registered.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct FunctionView {
    #[serde(flatten)]
    #[schema(value_type = FunctionSpec)]
    spec: Arc<FunctionSpec>,
    /// The mode the spec asked for.
    requested_execution_mode: ExecutionMode,
    /// The mode invocations actually run in.
    effective_execution_mode: ExecutionMode,
    /// When the function was registered.
    created_at: Timestamp,
    /// Why it runs in another mode than it asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    degradation_reason: Option<String>,
    /// For a function whose replicas the control plane runs.
    #[serde(skip_serializing_if = "Option::is_none")]
    replicas: Option<ReplicasView>,
}

/// A managed function's replicas.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ReplicasView {
    /// Replicas it is to run (the autoscaler's or a manual count).
    desired: u32,
    /// Replicas ready to take invocations.
    ready: u32,
    /// Whether a manual count (`PUT .../replicas`) holds an autoscaled function.
    pinned: bool,
    /// Replicas started again after they exited or never got ready.
    restarts: u64,
    /// While replicas keep failing: the last failure and when the next start is due.
    #[serde(skip_serializing_if = "Option::is_none")]
    crash_loop: Option<String>,
}

impl FunctionView {
    pub(crate) fn of(function: &RegisteredFunction, scheduler: &Scheduler) -> Self {
        let name = &function.spec.name;
        let replicas = scheduler.replicas(name.as_str()).map(|counts| {
            let status = scheduler.deployment_status(name).unwrap_or_default();
            ReplicasView {
                desired: counts.desired,
                ready: counts.ready,
                pinned: counts.pinned,
                restarts: status.restarts,
                crash_loop: status.crash_loop,
            }
        });
        Self {
            spec: Arc::clone(&function.spec),
            requested_execution_mode: function.spec.execution_mode,
            effective_execution_mode: function.effective_mode,
            created_at: function.created_at,
            degradation_reason: function.degradation_reason.clone(),
            replicas,
        }
    }
}

/// The answer of `:drain-once`.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Drained {
    /// Whether a queued invocation was dispatched (and has finished that attempt).
    pub(crate) dispatched: bool,
}

/// The answer of the health routes.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Health {
    /// `UP` while the process answers; the readiness probe says `OUT_OF_SERVICE` once
    /// shutdown has begun.
    #[schema(example = "UP")]
    pub(crate) status: &'static str,
}

impl Health {
    pub(crate) const UP: Self = Self { status: "UP" };
    pub(crate) const OUT_OF_SERVICE: Self = Self {
        status: "OUT_OF_SERVICE",
    };
}
