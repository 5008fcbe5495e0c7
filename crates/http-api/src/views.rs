//! The JSON answers this crate composes itself (the rest are core-types DTOs), as types
//! rather than `json!` literals so that the OpenAPI document describes exactly what the
//! handlers send.

use std::sync::Arc;

use core_types::{ExecutionMode, FunctionSpec, Timestamp};
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
}

impl FunctionView {
    pub(crate) fn of(function: &RegisteredFunction) -> Self {
        Self {
            spec: Arc::clone(&function.spec),
            requested_execution_mode: function.spec.execution_mode,
            effective_execution_mode: function.effective_mode,
            created_at: function.created_at,
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
