//! The JSON answers this crate composes: the function view (a core-types type, which
//! clients read too) filled from the scheduler, and the few answers only this crate
//! speaks, as types rather than `json!` literals so that the OpenAPI document describes
//! exactly what the handlers send.

use std::sync::Arc;

use core_types::{FunctionView, ReplicasView};
use scheduler::Scheduler;
use serde::Serialize;
use store::RegisteredFunction;
use utoipa::ToSchema;

/// The answer for a registered function: its spec, how it runs, and its replicas as
/// the scheduler and the provider see them now.
pub(crate) fn function_view(function: &RegisteredFunction, scheduler: &Scheduler) -> FunctionView {
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
    FunctionView {
        spec: Arc::clone(&function.spec),
        requested_execution_mode: function.spec.execution_mode,
        effective_execution_mode: function.effective_mode,
        created_at: function.created_at,
        degradation_reason: function.degradation_reason.clone(),
        replicas,
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
