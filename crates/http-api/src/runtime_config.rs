//! The runtime configuration (api.md "Runtime configuration (admin)"): the rate limit
//! and the sync-queue settings, changeable while the control plane serves traffic, and
//! the admin routes that read, change and validate it.
//!
//! A change is a compare-and-swap on the revision: the patch names the revision it was
//! written against, and applies only if that is still the current one. The whole
//! configuration, with the rate limiter built for it, is swapped as one `Arc` under a
//! lock held only for the swap (never across an `.await`), so a request sees either the
//! old settings or the new ones, never half of each, and the next request after a
//! change already runs under it.
//!
//! Error codes: a body that is not JSON is 400 `MALFORMED_JSON`; a field of the wrong
//! type, a duration that is not ISO-8601 (or is negative) and a missing
//! `expectedRevision` are 400 `VALIDATION_ERROR` with one detail per problem; values
//! that parse but do not make sense together are 422 `INVALID_RUNTIME_CONFIG`, listing
//! every problem in `details` and, as text, in `errors`; a stale `expectedRevision` is
//! 409 `REVISION_MISMATCH` with `currentRevision`.

use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::HeaderMap;
use axum::routing::{get, post};
use core_types::ErrorBody;
use core_types::{
    Clock, ErrorDetail, RuntimeConfigChange, RuntimeConfigView, format_iso_duration,
    parse_iso_duration,
};
use serde_json::{Map, Value, json};

use store::{ConfigStore, StoredConfig};

use crate::admission::RateLimit;
use crate::body::parse_json;
use crate::{ApiError, AppState};

/// The default global rate limit: far above what one control plane serves (a benchmark
/// at ~50k invocations per second never meets it), so it guards against floods without
/// ever being the bottleneck.
pub const DEFAULT_RATE_MAX_PER_SECOND: u32 = 100_000;

/// The settings admission runs under. Revision 1 is what the control plane starts with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuntimeConfig {
    /// Global limit on `:invoke` + `:enqueue` requests per second (burst: the same
    /// number).
    pub rate_max_per_second: u32,
    /// Sync invocations take a place in their function's sync queue while they wait:
    /// they are counted, their wait is measured, and `sync_queue_max_queue_wait` applies.
    pub sync_queue_enabled: bool,
    /// With the sync queue on, refuse a sync invocation when the line is too deep or
    /// its estimated wait too long.
    pub sync_queue_admission_enabled: bool,
    /// Longest estimated wait admission lets a sync invocation into.
    pub sync_queue_max_estimated_wait: Duration,
    /// Longest an admitted sync invocation may stay queued before its dispatch; then it
    /// ends as `timeout` with `QUEUE_TIMEOUT`.
    pub sync_queue_max_queue_wait: Duration,
    /// The least `Retry-After` a sync-queue rejection gives.
    pub sync_queue_retry_after_seconds: u32,
}

impl Default for RuntimeConfig {
    /// The nanofaas defaults: the sync queue off, a 2-second wait budget, retry after 2
    /// seconds.
    fn default() -> Self {
        Self {
            rate_max_per_second: DEFAULT_RATE_MAX_PER_SECOND,
            sync_queue_enabled: false,
            sync_queue_admission_enabled: false,
            sync_queue_max_estimated_wait: Duration::from_secs(2),
            sync_queue_max_queue_wait: Duration::from_secs(2),
            sync_queue_retry_after_seconds: 2,
        }
    }
}

impl RuntimeConfig {
    /// Checks the rules that tie values together, listing every broken one.
    pub fn validate(&self) -> Result<(), InvalidRuntimeConfig> {
        let mut problems = Vec::new();
        if self.rate_max_per_second == 0 {
            problems.push(ErrorDetail::new("rateMaxPerSecond", "must be positive"));
        }
        if self.sync_queue_retry_after_seconds == 0 {
            problems.push(ErrorDetail::new(
                "syncQueueRetryAfterSeconds",
                "must be at least 1",
            ));
        }
        if self.sync_queue_max_estimated_wait > self.sync_queue_max_queue_wait {
            problems.push(ErrorDetail::new(
                "syncQueueMaxEstimatedWait",
                format!(
                    "must not exceed syncQueueMaxQueueWait ({}), got {}",
                    format_iso_duration(self.sync_queue_max_queue_wait),
                    format_iso_duration(self.sync_queue_max_estimated_wait)
                ),
            ));
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(InvalidRuntimeConfig(problems))
        }
    }
}

/// Values that parse but break the configuration's rules (422).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid runtime configuration: {}", describe(.0))]
pub struct InvalidRuntimeConfig(pub Vec<ErrorDetail>);

fn describe(problems: &[ErrorDetail]) -> String {
    problems
        .iter()
        .map(|p| format!("{}: {}", p.field, p.message))
        .collect::<Vec<_>>()
        .join("; ")
}

/// Why a parsed change was refused; it changed nothing.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigChangeError {
    /// The result would break the configuration's rules (422).
    #[error(transparent)]
    Invalid(#[from] InvalidRuntimeConfig),
    /// The patch was written against another revision (409).
    #[error("expectedRevision is {expected}, but the current revision is {current}")]
    RevisionMismatch {
        /// The patch's `expectedRevision`.
        expected: u64,
        /// The revision in force.
        current: u64,
    },
}

/// The configuration in force, with the rate limiter built for it.
#[derive(Debug)]
pub(crate) struct Applied {
    pub(crate) revision: u64,
    pub(crate) config: RuntimeConfig,
    pub(crate) rate_limit: Arc<RateLimit>,
}

/// Holds the configuration in force and swaps it on a change, once the change is kept
/// by its store.
pub(crate) struct LiveConfig {
    current: RwLock<Arc<Applied>>,
    clock: Arc<dyn Clock>,
    store: Arc<dyn ConfigStore>,
}

impl std::fmt::Debug for LiveConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveConfig")
            .field("current", &self.current)
            .finish_non_exhaustive()
    }
}

impl LiveConfig {
    /// `config` as `revision`, changes kept by `store`.
    pub(crate) fn new(
        config: RuntimeConfig,
        revision: u64,
        clock: Arc<dyn Clock>,
        store: Arc<dyn ConfigStore>,
    ) -> Self {
        let rate_limit = Arc::new(RateLimit::new(config.rate_max_per_second, &clock));
        Self {
            current: RwLock::new(Arc::new(Applied {
                revision,
                config,
                rate_limit,
            })),
            clock,
            store,
        }
    }

    pub(crate) fn current(&self) -> Arc<Applied> {
        Arc::clone(&self.current.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// Applies `patch` if the revision in force is still `expected`: the new revision
    /// is kept by the store first (a compare-and-swap there too, so two changes
    /// written against one revision cannot both be kept, whichever process made
    /// them), and only then put in force. A store fault changes nothing. The rate
    /// limiter is rebuilt only when the rate changes, so an unrelated change does not
    /// hand out a fresh burst. Also says whether the values stayed as they were.
    async fn change(&self, expected: u64, patch: &Patch) -> Result<(Arc<Applied>, bool), ApiError> {
        let current = self.current();
        let mismatch = |current: u64| ConfigChangeError::RevisionMismatch { expected, current };
        if current.revision != expected {
            return Err(mismatch(current.revision).into());
        }
        let config = patch
            .apply_to(&current.config)
            .map_err(ConfigChangeError::from)?;
        let rate_limit = if config.rate_max_per_second == current.config.rate_max_per_second {
            Arc::clone(&current.rate_limit)
        } else {
            Arc::new(RateLimit::new(config.rate_max_per_second, &self.clock))
        };
        let unchanged = config == current.config;
        let applied = Arc::new(Applied {
            revision: current.revision + 1,
            config,
            rate_limit,
        });
        let kept = StoredConfig {
            revision: applied.revision,
            document: applied.config.to_document(),
        };
        if !self.store.save(kept, expected).await? {
            return Err(mismatch(self.current().revision.max(expected + 1)).into());
        }
        let mut current = self.current.write().unwrap_or_else(PoisonError::into_inner);
        if current.revision != expected {
            // Only one change of `expected` can have been kept; a different one in
            // force means the store and this process disagree. Say so and keep what
            // the store says.
            tracing::error!(
                expected,
                in_force = current.revision,
                "a kept runtime configuration lost to another in force"
            );
        }
        *current = Arc::clone(&applied);
        Ok((applied, unchanged))
    }
}

impl RuntimeConfig {
    /// The configuration as the JSON document a store keeps (the admin API's field
    /// names, without the revision).
    pub fn to_document(&self) -> String {
        let mut view = json!(config_view(self, 0));
        if let Some(fields) = view.as_object_mut() {
            fields.remove("revision");
        }
        view.to_string()
    }

    /// A configuration kept as [`to_document`](Self::to_document) wrote it.
    pub fn from_document(document: &str) -> Result<Self, String> {
        let value: Value = serde_json::from_str(document).map_err(|e| e.to_string())?;
        let patch = Patch::from_json(&value, false).map_err(|problems| {
            problems
                .iter()
                .map(|p| format!("{}: {}", p.field, p.message))
                .collect::<Vec<_>>()
                .join("; ")
        })?;
        patch
            .apply_to(&Self::default())
            .map_err(|invalid| invalid.to_string())
    }
}

/// A `PATCH` or `validate` body: the fields it sets.
#[derive(Debug, Default)]
struct Patch {
    expected_revision: Option<u64>,
    rate_max_per_second: Option<i64>,
    sync_queue_enabled: Option<bool>,
    sync_queue_admission_enabled: Option<bool>,
    sync_queue_max_estimated_wait: Option<Duration>,
    sync_queue_max_queue_wait: Option<Duration>,
    sync_queue_retry_after_seconds: Option<i64>,
}

impl Patch {
    /// Reads every field, listing every one of the wrong type at once. Unknown fields
    /// are ignored, as everywhere in the API.
    fn from_json(value: &Value, revision_required: bool) -> Result<Self, Vec<ErrorDetail>> {
        let Some(fields) = value.as_object() else {
            return Err(vec![ErrorDetail::new("$", "must be a JSON object")]);
        };
        let mut problems = Vec::new();
        let mut patch = Self::default();
        match fields.get("expectedRevision") {
            None if revision_required => problems.push(ErrorDetail::new(
                "expectedRevision",
                "is required: the revision this change was written against",
            )),
            None => {}
            Some(v) => match v.as_u64() {
                Some(revision) => patch.expected_revision = Some(revision),
                None => problems.push(ErrorDetail::new(
                    "expectedRevision",
                    "must be a non-negative integer",
                )),
            },
        }
        patch.rate_max_per_second = read(fields, "rateMaxPerSecond", &mut problems, |v| {
            v.as_i64().ok_or_else(|| "must be an integer".to_owned())
        });
        patch.sync_queue_enabled = read(fields, "syncQueueEnabled", &mut problems, boolean);
        patch.sync_queue_admission_enabled =
            read(fields, "syncQueueAdmissionEnabled", &mut problems, boolean);
        patch.sync_queue_max_estimated_wait =
            read(fields, "syncQueueMaxEstimatedWait", &mut problems, duration);
        patch.sync_queue_max_queue_wait =
            read(fields, "syncQueueMaxQueueWait", &mut problems, duration);
        patch.sync_queue_retry_after_seconds =
            read(fields, "syncQueueRetryAfterSeconds", &mut problems, |v| {
                v.as_i64().ok_or_else(|| "must be an integer".to_owned())
            });
        if problems.is_empty() {
            Ok(patch)
        } else {
            Err(problems)
        }
    }

    /// `base` with this patch's fields, if the result is valid.
    fn apply_to(&self, base: &RuntimeConfig) -> Result<RuntimeConfig, InvalidRuntimeConfig> {
        let mut problems = Vec::new();
        let mut config = base.clone();
        if let Some(rate) = self.rate_max_per_second {
            match u32::try_from(rate) {
                Ok(rate) => config.rate_max_per_second = rate,
                Err(_) if rate <= 0 => {
                    problems.push(ErrorDetail::new("rateMaxPerSecond", "must be positive"));
                }
                Err(_) => problems.push(ErrorDetail::new(
                    "rateMaxPerSecond",
                    format!("must be at most {}", u32::MAX),
                )),
            }
        }
        if let Some(seconds) = self.sync_queue_retry_after_seconds {
            match u32::try_from(seconds) {
                Ok(seconds) => config.sync_queue_retry_after_seconds = seconds,
                Err(_) if seconds < 1 => problems.push(ErrorDetail::new(
                    "syncQueueRetryAfterSeconds",
                    "must be at least 1",
                )),
                Err(_) => problems.push(ErrorDetail::new(
                    "syncQueueRetryAfterSeconds",
                    format!("must be at most {}", u32::MAX),
                )),
            }
        }
        if let Some(enabled) = self.sync_queue_enabled {
            config.sync_queue_enabled = enabled;
        }
        if let Some(enabled) = self.sync_queue_admission_enabled {
            config.sync_queue_admission_enabled = enabled;
        }
        if let Some(wait) = self.sync_queue_max_estimated_wait {
            config.sync_queue_max_estimated_wait = wait;
        }
        if let Some(wait) = self.sync_queue_max_queue_wait {
            config.sync_queue_max_queue_wait = wait;
        }
        if let Err(InvalidRuntimeConfig(more)) = config.validate() {
            // A field refused above kept its old, valid value: report it once.
            for problem in more {
                if !problems.iter().any(|p| p.field == problem.field) {
                    problems.push(problem);
                }
            }
        }
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(InvalidRuntimeConfig(problems))
        }
    }
}

fn read<T>(
    fields: &Map<String, Value>,
    name: &str,
    problems: &mut Vec<ErrorDetail>,
    parse: impl FnOnce(&Value) -> Result<T, String>,
) -> Option<T> {
    let value = fields.get(name)?;
    parse(value)
        .map_err(|message| problems.push(ErrorDetail::new(name, message)))
        .ok()
}

fn boolean(value: &Value) -> Result<bool, String> {
    value
        .as_bool()
        .ok_or_else(|| "must be true or false".to_owned())
}

fn duration(value: &Value) -> Result<Duration, String> {
    let text = value
        .as_str()
        .ok_or_else(|| "must be an ISO-8601 duration string like PT2S".to_owned())?;
    parse_iso_duration(text).map_err(|e| format!("{e}, got {text:?}"))
}

impl From<&Applied> for RuntimeConfigView {
    fn from(applied: &Applied) -> Self {
        config_view(&applied.config, applied.revision)
    }
}

fn config_view(config: &RuntimeConfig, revision: u64) -> RuntimeConfigView {
    RuntimeConfigView {
        revision,
        rate_max_per_second: config.rate_max_per_second,
        sync_queue_enabled: config.sync_queue_enabled,
        sync_queue_admission_enabled: config.sync_queue_admission_enabled,
        sync_queue_max_estimated_wait: format_iso_duration(config.sync_queue_max_estimated_wait),
        sync_queue_max_queue_wait: format_iso_duration(config.sync_queue_max_queue_wait),
        sync_queue_retry_after_seconds: config.sync_queue_retry_after_seconds,
    }
}

/// Settings that are accepted but will not do what the caller probably wants.
fn warnings(config: &RuntimeConfig, unchanged: bool) -> Vec<String> {
    let mut warnings = Vec::new();
    if unchanged {
        warnings.push("the patch changes no value; only the revision moved".to_owned());
    }
    if config.sync_queue_admission_enabled && !config.sync_queue_enabled {
        warnings.push(
            "syncQueueAdmissionEnabled has no effect while syncQueueEnabled is false".to_owned(),
        );
    }
    warnings
}

/// The admin routes; mounted only when [`ApiConfig::admin_api`](crate::ApiConfig) is on.
pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/v1/admin/runtime-config",
            get(get_config).patch(patch_config),
        )
        .route("/v1/admin/runtime-config/validate", post(validate_config))
}

/// `GET /v1/admin/runtime-config`.
#[utoipa::path(
    get,
    path = "/v1/admin/runtime-config",
    tag = "admin",
    summary = "The runtime configuration in force (only with --admin-api)",
    responses(
        (status = 200, description = "The configuration and its revision", body = RuntimeConfigView),
    )
)]
pub(crate) async fn get_config(State(state): State<AppState>) -> Json<Value> {
    let applied = state.live_config().current();
    Json(json!(RuntimeConfigView::from(&*applied)))
}

/// `PATCH /v1/admin/runtime-config`.
#[utoipa::path(
    patch,
    path = "/v1/admin/runtime-config",
    tag = "admin",
    summary = "Change the runtime configuration (only with --admin-api)",
    description = "`expectedRevision` is required and must be the current revision; any of \
                   the configuration's fields may be given (durations as ISO-8601 strings). \
                   Applies to live traffic at once; a refused patch changes nothing.",
    request_body = Object,
    responses(
        (status = 200, description = "Applied", body = RuntimeConfigChange),
        (status = 400, description = "`MALFORMED_JSON`, or `VALIDATION_ERROR` (wrong type, bad duration, missing `expectedRevision`)", body = ErrorBody),
        (status = 409, description = "`REVISION_MISMATCH`; the body also carries `currentRevision`", body = ErrorBody),
        (status = 413, description = "`PAYLOAD_TOO_LARGE`", body = ErrorBody),
        (status = 415, description = "`UNSUPPORTED_MEDIA_TYPE`", body = ErrorBody),
        (status = 422, description = "`INVALID_RUNTIME_CONFIG`; the body also lists every problem in `errors`", body = ErrorBody),
    )
)]
pub(crate) async fn patch_config(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let value: Value = parse_json(&headers, body, state.config().max_body_bytes, |_| {
        Vec::new()
    })?;
    let patch = Patch::from_json(&value, true).map_err(ApiError::invalid_all)?;
    let expected = patch.expected_revision.unwrap_or_default();
    let (applied, unchanged) = state.live_config().change(expected, &patch).await?;
    let change = RuntimeConfigChange {
        revision: applied.revision,
        effective_config: RuntimeConfigView::from(&*applied),
        applied_at: state.metrics().now(),
        change_id: uuid::Uuid::now_v7().to_string(),
        warnings: warnings(&applied.config, unchanged),
    };
    tracing::info!(
        revision = change.revision,
        change_id = %change.change_id,
        config = ?applied.config,
        "runtime configuration changed"
    );
    Ok(Json(json!(change)))
}

/// `POST /v1/admin/runtime-config/validate`: the same body as `PATCH`
/// (`expectedRevision` optional and not compared), checked against the configuration
/// in force and applied to nothing.
#[utoipa::path(
    post,
    path = "/v1/admin/runtime-config/validate",
    tag = "admin",
    summary = "Check a runtime-configuration patch without applying it (only with --admin-api)",
    request_body = Object,
    responses(
        (status = 200, description = "`{\"valid\": true}`", body = Object),
        (status = 400, description = "`MALFORMED_JSON` or `VALIDATION_ERROR`", body = ErrorBody),
        (status = 413, description = "`PAYLOAD_TOO_LARGE`", body = ErrorBody),
        (status = 415, description = "`UNSUPPORTED_MEDIA_TYPE`", body = ErrorBody),
        (status = 422, description = "`INVALID_RUNTIME_CONFIG`; the body also lists every problem in `errors`", body = ErrorBody),
    )
)]
pub(crate) async fn validate_config(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let value: Value = parse_json(&headers, body, state.config().max_body_bytes, |_| {
        Vec::new()
    })?;
    let patch = Patch::from_json(&value, false).map_err(ApiError::invalid_all)?;
    patch
        .apply_to(&state.live_config().current().config)
        .map_err(ConfigChangeError::from)?;
    Ok(Json(json!({ "valid": true })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_patch_reports_every_semantic_problem_at_once() {
        let patch = Patch::from_json(
            &json!({
                "expectedRevision": 1,
                "rateMaxPerSecond": 0,
                "syncQueueRetryAfterSeconds": 0,
                "syncQueueMaxEstimatedWait": "PT3S",
            }),
            true,
        )
        .unwrap();
        let InvalidRuntimeConfig(problems) = patch.apply_to(&RuntimeConfig::default()).unwrap_err();
        let fields: Vec<&str> = problems.iter().map(|p| p.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "rateMaxPerSecond",
                "syncQueueRetryAfterSeconds",
                "syncQueueMaxEstimatedWait"
            ]
        );
    }

    #[test]
    fn a_patch_reports_every_field_of_the_wrong_type_at_once() {
        let problems = Patch::from_json(
            &json!({
                "rateMaxPerSecond": "fast",
                "syncQueueEnabled": 1,
                "syncQueueMaxQueueWait": "2 seconds",
            }),
            true,
        )
        .unwrap_err();
        let fields: Vec<&str> = problems.iter().map(|p| p.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "expectedRevision",
                "rateMaxPerSecond",
                "syncQueueEnabled",
                "syncQueueMaxQueueWait"
            ]
        );
    }
}
