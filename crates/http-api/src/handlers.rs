//! The handlers, one per operation of the contract.

use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use core_types::{
    CallbackResult, CompletionRequest, DispatchSuccess, ExecutionId, ExecutionState, FunctionName,
    FunctionSpec, IdempotencyKey, InvocationRequest, InvocationResponse, TIMEOUT_RANGE_MS, TraceId,
};
use scheduler::{Completion, CompletionSource, SubmitOptions};
use serde_json::{Value, json};
use store::{ExecutionRecord, RegisteredFunction};

use crate::body::parse_json;
use crate::{ApiError, AppState};

use core_types::headers::{IDEMPOTENCY_KEY, X_DISPATCH_ATTEMPT, X_TIMEOUT_MS, X_TRACE_ID};

const X_EXECUTION_ID: HeaderName = HeaderName::from_static(core_types::headers::X_EXECUTION_ID);

// ----- functions ---------------------------------------------------------------------

/// The JSON view of a registered function: the resolved spec plus the modes and
/// `createdAt`.
fn function_view(function: &RegisteredFunction) -> Value {
    let mut view = serde_json::to_value(&*function.spec).unwrap_or_else(|_| json!({}));
    if let Value::Object(map) = &mut view {
        let mode = |mode| serde_json::to_value(mode).unwrap_or(Value::Null);
        map.insert(
            "requestedExecutionMode".into(),
            mode(function.spec.execution_mode),
        );
        map.insert(
            "effectiveExecutionMode".into(),
            mode(function.effective_mode),
        );
        map.insert(
            "createdAt".into(),
            serde_json::to_value(function.created_at).unwrap_or(Value::Null),
        );
    }
    view
}

fn function_not_found(name: &str) -> ApiError {
    ApiError::NotFound(format!("function {name} is not registered"))
}

/// A path segment that must be a function name; any other text names no function.
fn parse_name(text: &str) -> Result<FunctionName, ApiError> {
    FunctionName::parse(text).map_err(|_| function_not_found(text))
}

/// `POST /v1/functions`.
pub(crate) async fn register_function(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let value: Value = parse_json(&headers, body, state.config.max_body_bytes, |_| Vec::new())?;
    let spec = FunctionSpec::from_json(&value).map_err(|e| ApiError::invalid_all(e.0))?;
    let registered = state.scheduler.register_function(spec).await?;
    tracing::info!(function = %registered.spec.name, mode = ?registered.spec.execution_mode, "function registered");
    Ok((StatusCode::CREATED, Json(function_view(&registered))).into_response())
}

/// `GET /v1/functions`.
pub(crate) async fn list_functions(State(state): State<AppState>) -> Json<Vec<Value>> {
    let mut functions = state.scheduler.functions().await;
    functions.sort_by(|a, b| a.spec.name.cmp(&b.spec.name));
    Json(functions.iter().map(function_view).collect())
}

/// `GET /v1/functions/{name}`.
pub(crate) async fn get_function(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let function = state
        .scheduler
        .function(&name)
        .await
        .ok_or_else(|| function_not_found(&name))?;
    Ok(Json(function_view(&function)))
}

/// `DELETE /v1/functions/{name}`.
pub(crate) async fn delete_function(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    let name = parse_name(&name)?;
    state.scheduler.remove_function(&name).await?;
    tracing::info!(function = %name, "function removed");
    Ok(StatusCode::NO_CONTENT)
}

/// `PUT /v1/functions/{name}/replicas` with `{"replicas": n}`, `n >= 0`.
pub(crate) async fn set_replicas(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let name = parse_name(&name)?;
    let value: Value = parse_json(&headers, body, state.config.max_body_bytes, |_| Vec::new())?;
    let replicas = value
        .get("replicas")
        .and_then(Value::as_u64)
        .and_then(|n| u32::try_from(n).ok())
        .ok_or_else(|| ApiError::invalid("replicas", "must be an integer >= 0"))?;
    state.scheduler.set_replicas(&name, replicas).await?;
    tracing::info!(function = %name, replicas, "replicas set");
    Ok(Json(json!({ "function": name, "replicas": replicas })))
}

/// `POST /v1/functions/{name}:{action}` (`invoke`, `enqueue`).
pub(crate) async fn function_action(
    State(state): State<AppState>,
    Path(segment): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let Some((name, action)) = segment.rsplit_once(':') else {
        // `POST /v1/functions/{name}` is a known route without POST.
        return Err(ApiError::MethodNotAllowed);
    };
    let sync = match action {
        "invoke" => true,
        "enqueue" => false,
        other => {
            return Err(ApiError::NotFound(format!(
                "unknown function action {other:?} (expected invoke or enqueue)"
            )));
        }
    };
    let name = parse_name(name)?;
    let timeout = if sync { sync_timeout(&headers)? } else { None };
    let options = submit_options(&headers)?;
    let request: InvocationRequest = parse_json(
        &headers,
        body,
        state.config.max_body_bytes,
        InvocationRequest::problems,
    )?;
    request.validate().map_err(ApiError::invalid_all)?;

    // Fail fast on an unknown function before anything is queued.
    let Some(function) = state.scheduler.function(name.as_str()).await else {
        return Err(function_not_found(name.as_str()));
    };
    // Before submit: a refused request leaves no execution and no idempotency claim.
    let admitted = state.admission().admit(&function.spec, sync)?;
    let submitted =
        (state.scheduler.submit(&name, request, options).await).map_err(|e| admitted.refused(e))?;
    let id = submitted.execution_id;

    if !sync {
        // A replay answers the execution as it stands (it may have finished long ago);
        // only a record already evicted falls back to what the first answer said.
        let existing = match submitted.replayed {
            true => state.scheduler.execution(&id).await,
            false => None,
        };
        let body = existing.as_ref().map_or_else(
            || InvocationResponse {
                execution_id: id.clone(),
                status: ExecutionState::Queued,
                output: None,
                error: None,
            },
            invocation_response,
        );
        return Ok(with_execution_id(
            (StatusCode::ACCEPTED, Json(body)).into_response(),
            &id,
        ));
    }

    let limit = timeout.unwrap_or(Duration::from_millis(function.spec.timeout_ms));
    let record = admitted
        .wait_for_result(&state.scheduler, &id, limit, submitted.replayed)
        .await?;
    Ok(with_execution_id(
        (StatusCode::OK, Json(invocation_response(&record))).into_response(),
        &id,
    ))
}

fn invocation_response(record: &ExecutionRecord) -> InvocationResponse {
    InvocationResponse {
        execution_id: record.id.clone(),
        status: record.state,
        output: record.output.clone(),
        error: record.error.clone(),
    }
}

fn with_execution_id(mut response: Response, id: &ExecutionId) -> Response {
    if let Ok(value) = HeaderValue::from_str(id.as_str()) {
        response.headers_mut().insert(X_EXECUTION_ID, value);
    }
    response
}

fn header_text<'a>(headers: &'a HeaderMap, name: &str) -> Result<Option<&'a str>, ApiError> {
    match headers.get(name) {
        None => Ok(None),
        Some(value) => value
            .to_str()
            .map(|v| Some(v.trim()))
            .map_err(|_| ApiError::invalid(name, "must be visible ASCII text")),
    }
}

/// `X-Timeout-Ms`: 1..=300000 when present.
fn sync_timeout(headers: &HeaderMap) -> Result<Option<Duration>, ApiError> {
    let Some(text) = header_text(headers, X_TIMEOUT_MS)? else {
        return Ok(None);
    };
    match text.parse::<u64>() {
        Ok(ms) if TIMEOUT_RANGE_MS.contains(&ms) => Ok(Some(Duration::from_millis(ms))),
        _ => Err(ApiError::invalid(
            "X-Timeout-Ms",
            format!(
                "must be an integer in {}..={}, got {text:?}",
                TIMEOUT_RANGE_MS.start(),
                TIMEOUT_RANGE_MS.end()
            ),
        )),
    }
}

fn submit_options(headers: &HeaderMap) -> Result<SubmitOptions, ApiError> {
    let non_empty = |v: Option<&str>| v.filter(|t| !t.is_empty()).map(str::to_owned);
    Ok(SubmitOptions {
        idempotency_key: non_empty(header_text(headers, IDEMPOTENCY_KEY)?).map(IdempotencyKey::new),
        trace_id: non_empty(header_text(headers, X_TRACE_ID)?).map(TraceId::new),
    })
}

// ----- executions --------------------------------------------------------------------

/// `GET /v1/executions/{id}`.
pub(crate) async fn get_execution(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let record = state
        .scheduler
        .execution(&ExecutionId::new(id.as_str()))
        .await
        .ok_or_else(|| ApiError::NotFound(format!("no execution {id}")))?;
    Ok(Json(record.to_status()).into_response())
}

/// `POST /v1/internal/executions/{id}:complete`.
pub(crate) async fn execution_action(
    State(state): State<AppState>,
    Path(segment): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<StatusCode, ApiError> {
    let Some((id, "complete")) = segment.rsplit_once(':') else {
        return Err(ApiError::NotFound(format!(
            "no internal execution route {segment:?} (expected {{id}}:complete)"
        )));
    };
    let id = ExecutionId::new(id);
    let attempt = match header_text(&headers, X_DISPATCH_ATTEMPT)? {
        None => None,
        Some(text) => match text.parse::<u32>() {
            Ok(n) if n >= 1 => Some(n),
            _ => {
                return Err(ApiError::invalid(
                    "X-Dispatch-Attempt",
                    format!("must be an integer >= 1, got {text:?}"),
                ));
            }
        },
    };
    let request: CompletionRequest =
        parse_json(&headers, body, state.config.max_body_bytes, |_| Vec::new())?;
    let completion = match request.into_result().map_err(ApiError::invalid_all)? {
        CallbackResult::Success(output) => Completion::Success(DispatchSuccess::warm(output)),
        CallbackResult::Failure { state, error } => Completion::Failure { state, error },
    };
    let outcome = state
        .scheduler
        .complete(&id, attempt, completion, CompletionSource::Callback)
        .await?;
    tracing::debug!(execution = %id, ?outcome, "callback handled");
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /v1/internal/functions/{name}:drain-once`.
pub(crate) async fn internal_function_action(
    State(state): State<AppState>,
    Path(segment): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let Some((name, "drain-once")) = segment.rsplit_once(':') else {
        return Err(ApiError::NotFound(format!(
            "no internal function route {segment:?} (expected {{name}}:drain-once)"
        )));
    };
    let name = parse_name(name)?;
    let dispatched = match state.scheduler.tick_once(&name).await? {
        None => false,
        Some(handle) => {
            handle
                .await
                .map_err(|e| ApiError::Internal(format!("the dispatch task failed: {e}")))?;
            true
        }
    };
    Ok(Json(json!({ "dispatched": dispatched })))
}

// ----- health and fallbacks ----------------------------------------------------------

/// `GET /actuator/health` and its liveness/readiness variants.
pub(crate) async fn health() -> Json<Value> {
    Json(json!({ "status": "UP" }))
}

/// Any route that does not exist.
pub(crate) async fn not_found() -> ApiError {
    ApiError::NotFound("no such route".into())
}

/// A route that exists, with the wrong method.
pub(crate) async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}
