//! The answers of the function and runtime-configuration routes, as both sides of the
//! API read them: the server builds and serializes them, a client (the CLI)
//! deserializes them. They are types rather than `json!` literals so that the OpenAPI
//! document describes exactly what is sent.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::{ExecutionMode, FunctionSpec, Timestamp};

/// A registered function: its resolved spec (every default filled in) plus how it is
/// run and when it was registered.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct FunctionView {
    /// The resolved spec (its fields at the top level of the answer).
    #[serde(flatten)]
    #[cfg_attr(feature = "openapi", schema(value_type = FunctionSpec))]
    pub spec: Arc<FunctionSpec>,
    /// The mode the spec asked for.
    pub requested_execution_mode: ExecutionMode,
    /// The mode invocations actually run in.
    pub effective_execution_mode: ExecutionMode,
    /// When the function was registered.
    pub created_at: Timestamp,
    /// Why it runs in another mode than it asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub degradation_reason: Option<String>,
    /// For a function whose replicas the control plane runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<ReplicasView>,
}

/// A managed function's replicas.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct ReplicasView {
    /// Replicas it is to run (the autoscaler's or a manual count).
    pub desired: u32,
    /// Replicas ready to take invocations.
    pub ready: u32,
    /// Whether a manual count (`PUT .../replicas`) holds an autoscaled function.
    pub pinned: bool,
    /// Replicas started again after they exited or never got ready.
    pub restarts: u64,
    /// While replicas keep failing: the last failure and when the next start is due.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crash_loop: Option<String>,
}

/// `GET /v1/admin/runtime-config`: the configuration in force and its revision.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct RuntimeConfigView {
    /// Its revision: a `PATCH` names it as `expectedRevision`.
    pub revision: u64,
    /// Global limit on `:invoke` + `:enqueue` per second.
    pub rate_max_per_second: u32,
    /// Sync invocations hold a place in their function's sync queue.
    pub sync_queue_enabled: bool,
    /// Refuse sync invocations when the line is too deep or the wait too long.
    pub sync_queue_admission_enabled: bool,
    /// Longest estimated wait admitted (ISO-8601).
    #[cfg_attr(feature = "openapi", schema(example = "PT2S"))]
    pub sync_queue_max_estimated_wait: String,
    /// Longest an admitted sync invocation stays queued (ISO-8601).
    #[cfg_attr(feature = "openapi", schema(example = "PT2S"))]
    pub sync_queue_max_queue_wait: String,
    /// The least `Retry-After` of a sync-queue rejection.
    pub sync_queue_retry_after_seconds: u32,
}

/// The answer to an applied `PATCH /v1/admin/runtime-config`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct RuntimeConfigChange {
    /// The new revision.
    pub revision: u64,
    /// The configuration now in force.
    pub effective_config: RuntimeConfigView,
    /// When it was applied.
    pub applied_at: Timestamp,
    /// The change's id, as the log shows it.
    pub change_id: String,
    /// Settings accepted that will not do what the caller probably wants.
    pub warnings: Vec<String>,
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_function_answer_reads_back_as_it_was_sent() {
        let spec = FunctionSpec::from_json(&json!({
            "name": "greet", "image": "python:3", "executionMode": "DEPLOYMENT",
            "command": ["python3", "app.py"], "env": {"LANG": "C"},
            "scalingConfig": {"strategy": "INTERNAL", "minReplicas": 0, "maxReplicas": 3},
        }))
        .expect("a valid spec");
        let view = FunctionView {
            spec: Arc::new(spec),
            requested_execution_mode: ExecutionMode::Deployment,
            effective_execution_mode: ExecutionMode::Pool,
            created_at: Timestamp::from_millis(1_795_780_800_250),
            degradation_reason: Some("no provider".to_owned()),
            replicas: Some(ReplicasView {
                desired: 2,
                ready: 1,
                pinned: false,
                restarts: 3,
                crash_loop: Some("exited with status 1".to_owned()),
            }),
        };
        let text = serde_json::to_string(&view).expect("serializes");
        let back: FunctionView = serde_json::from_str(&text).expect("deserializes");
        assert_eq!(back, view);
    }

    #[test]
    fn a_configuration_change_reads_back_as_it_was_sent() {
        let change = RuntimeConfigChange {
            revision: 4,
            effective_config: RuntimeConfigView {
                revision: 4,
                rate_max_per_second: 10,
                sync_queue_enabled: true,
                sync_queue_admission_enabled: false,
                sync_queue_max_estimated_wait: "PT1S".to_owned(),
                sync_queue_max_queue_wait: "PT2S".to_owned(),
                sync_queue_retry_after_seconds: 2,
            },
            applied_at: Timestamp::from_millis(7),
            change_id: "c-1".to_owned(),
            warnings: vec!["w".to_owned()],
        };
        let text = serde_json::to_string(&change).expect("serializes");
        assert_eq!(
            serde_json::from_str::<RuntimeConfigChange>(&text).expect("deserializes"),
            change
        );
    }
}
