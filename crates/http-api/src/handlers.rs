//! The handlers, one per operation of the contract.

use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use core_types::{
    CallbackResult, CompletionRequest, DispatchSuccess, ExecutionId, ExecutionState, FunctionName,
    FunctionSpec, IdempotencyKey, InvocationRequest, InvocationResponse, TIMEOUT_RANGE_MS, TraceId,
};
use scheduler::{Completion, CompletionSource, SubmitOptions};
use serde_json::{Value, json};
use store::ExecutionRecord;

use crate::body::parse_json;
use crate::openapi::{
    EnqueueOperation, FunctionSpecInput, InvokeOperation, LivenessOperation, ReadinessOperation,
};
use crate::views::{Drained, Health, function_view};
use crate::{ApiError, AppState};
// Named by the `#[utoipa::path]` annotations.
use core_types::{ErrorBody, ExecutionStatus, FunctionView};

use core_types::headers::{IDEMPOTENCY_KEY, X_DISPATCH_ATTEMPT, X_TIMEOUT_MS, X_TRACE_ID};

const X_EXECUTION_ID: HeaderName = HeaderName::from_static(core_types::headers::X_EXECUTION_ID);

// ----- functions ---------------------------------------------------------------------

fn function_not_found(name: &str) -> ApiError {
    ApiError::NotFound(format!("function {} is not registered", shown(name)))
}

/// What a client sent, as quoted back in an error message: at most 64 characters, so a
/// hostile 10 000-character name does not come back whole.
fn shown(text: &str) -> String {
    const LIMIT: usize = 64;
    match text.char_indices().nth(LIMIT) {
        None => text.to_owned(),
        Some((cut, _)) => format!("{}...", &text[..cut]),
    }
}

/// A header's name as clients write it (`X-Timeout-Ms`), for error details; the
/// constants are lower case, as HTTP/2 sends them.
fn header_display_name(name: &str) -> String {
    name.split('-')
        .map(|part| {
            let mut chars = part.chars();
            chars.next().map_or_else(String::new, |first| {
                first.to_ascii_uppercase().to_string() + chars.as_str()
            })
        })
        .collect::<Vec<_>>()
        .join("-")
}

/// A path segment that must be a function name; any other text names no function.
fn parse_name(text: &str) -> Result<FunctionName, ApiError> {
    FunctionName::parse(text).map_err(|_| function_not_found(text))
}

/// `POST /v1/functions`.
#[utoipa::path(
    post,
    path = "/v1/functions",
    tag = "functions",
    summary = "Register a function",
    request_body = FunctionSpecInput,
    responses(
        (status = 201, description = "Registered; every default filled in", body = FunctionView),
        (status = 400, description = "`MALFORMED_JSON`, or `VALIDATION_ERROR` listing every invalid field", body = ErrorBody),
        (status = 409, description = "`FUNCTION_EXISTS`: the name is taken", body = ErrorBody),
        (status = 503, description = "`PROVIDER_UNAVAILABLE`: a `DEPLOYMENT` function no provider can run and without `endpointUrl`, or provisioning failed; nothing stays registered", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait before retrying"))),
        (status = 413, description = "`PAYLOAD_TOO_LARGE`", body = ErrorBody),
        (status = 415, description = "`UNSUPPORTED_MEDIA_TYPE`: the body is not declared as JSON", body = ErrorBody),
    )
)]
pub(crate) async fn register_function(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let value: Value = parse_json(&headers, body, state.config.max_body_bytes, |_| Vec::new())?;
    let spec = FunctionSpec::from_json(&value).map_err(|e| ApiError::invalid_all(e.0))?;
    let registered = state.scheduler.register_function(spec).await?;
    tracing::info!(function = %registered.spec.name, mode = ?registered.spec.execution_mode, "function registered");
    Ok((
        StatusCode::CREATED,
        Json(function_view(&registered, &state.scheduler)),
    )
        .into_response())
}

/// `GET /v1/functions`.
#[utoipa::path(
    get,
    path = "/v1/functions",
    tag = "functions",
    summary = "List the registered functions, sorted by name",
    responses((status = 200, description = "Every registered function", body = Vec<FunctionView>))
)]
pub(crate) async fn list_functions(State(state): State<AppState>) -> Json<Vec<FunctionView>> {
    // The registry lists functions sorted by name (its port's contract).
    let functions = state.scheduler.functions();
    Json(
        functions
            .iter()
            .map(|function| function_view(function, &state.scheduler))
            .collect(),
    )
}

/// `GET /v1/functions/{name}`.
#[utoipa::path(
    get,
    path = "/v1/functions/{name}",
    tag = "functions",
    summary = "Read a registered function",
    params(("name" = FunctionName, Path, description = "The function's name")),
    responses(
        (status = 200, description = "The function", body = FunctionView),
        (status = 404, description = "`NOT_FOUND`: no such function", body = ErrorBody),
    )
)]
pub(crate) async fn get_function(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<FunctionView>, ApiError> {
    let function = state
        .scheduler
        .function(&name)
        .ok_or_else(|| function_not_found(&name))?;
    Ok(Json(function_view(&function, &state.scheduler)))
}

/// `DELETE /v1/functions/{name}`.
#[utoipa::path(
    delete,
    path = "/v1/functions/{name}",
    tag = "functions",
    summary = "Remove a function",
    description = "Its queued executions end in `error` with `FUNCTION_REMOVED`; running ones finish.",
    params(("name" = FunctionName, Path, description = "The function's name")),
    responses(
        (status = 204, description = "Removed"),
        (status = 404, description = "`NOT_FOUND`: no such function", body = ErrorBody),
    )
)]
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
#[utoipa::path(
    put,
    path = "/v1/functions/{name}/replicas",
    tag = "functions",
    summary = "Set the replica count of a DEPLOYMENT function",
    params(("name" = FunctionName, Path, description = "The function's name")),
    request_body(content = Object, description = "`{\"replicas\": n}` with `n >= 0`"),
    responses(
        (status = 200, description = "`{\"function\": name, \"replicas\": n}`", body = Object),
        (status = 400, description = "`VALIDATION_ERROR`: a bad count, or the function has no managed deployment", body = ErrorBody),
        (status = 404, description = "`NOT_FOUND`: no such function", body = ErrorBody),
        (status = 415, description = "`UNSUPPORTED_MEDIA_TYPE`", body = ErrorBody),
        (status = 503, description = "`PROVIDER_UNAVAILABLE`: the deployment provider failed", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait before retrying"))),
    )
)]
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

/// The most lines one `GET .../logs` returns.
const MAX_LOG_TAIL: usize = 10_000;

/// `GET /v1/functions/{name}/logs?tail=N`.
#[utoipa::path(
    get,
    path = "/v1/functions/{name}/logs",
    tag = "functions",
    summary = "The last lines the function's replicas wrote",
    params(
        ("name" = FunctionName, Path, description = "The function's name"),
        ("tail" = Option<usize>, Query, description = "Lines to return, 1..=10000 (default 100)"),
    ),
    responses(
        (status = 200, description = "The lines, oldest first, each prefixed with its replica", body = String, content_type = "text/plain"),
        (status = 400, description = "`VALIDATION_ERROR`: a bad `tail`, or the function has no replicas the control plane runs", body = ErrorBody),
        (status = 404, description = "`NOT_FOUND`: no such function", body = ErrorBody),
    )
)]
pub(crate) async fn function_logs(
    State(state): State<AppState>,
    Path(name): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let name = parse_name(&name)?;
    let tail = log_tail(query.as_deref())?;
    let lines = state.scheduler.replica_logs(&name, tail)?;
    let mut text = lines.join("\n");
    if !text.is_empty() {
        text.push('\n');
    }
    Ok((
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; charset=utf-8",
        )],
        text,
    )
        .into_response())
}

/// The `tail` of a logs query: 100 unless given, then 1..=[`MAX_LOG_TAIL`].
fn log_tail(query: Option<&str>) -> Result<usize, ApiError> {
    let mut tail = 100;
    for pair in query.unwrap_or_default().split('&') {
        let Some(value) = pair.strip_prefix("tail=") else {
            continue;
        };
        tail = value
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=MAX_LOG_TAIL).contains(n))
            .ok_or_else(|| ApiError::invalid("tail", "must be an integer from 1 to 10000"))?;
    }
    Ok(tail)
}

/// `POST /v1/functions/{name}:{action}` (`invoke`, `enqueue`).
#[utoipa::path(
    post,
    path = "/v1/functions/{name}:invoke",
    impl_for = InvokeOperation,
    operation_id = "invoke",
    summary = "Invoke a function and wait for its result",
    description = "Queues the invocation like any other and waits for its end, at most \
                   `X-Timeout-Ms` (else the function's `timeoutMs`). Every finished invocation \
                   answers 200, whatever its status; a wait that runs out ends it as `timeout`.",
    params(
        ("name" = FunctionName, Path, description = "The function's name"),
        ("Idempotency-Key" = Option<String>, Header, nullable = false, max_length = 256, description = "Within the key's TTL the same key returns the same execution (shared with `:enqueue`, scoped per function)"),
        ("X-Trace-Id" = Option<String>, Header, nullable = false, max_length = 256, description = "Passed on to the function"),
        ("X-Timeout-Ms" = Option<u64>, Header, nullable = false, minimum = 1, maximum = 300000, description = "How long to wait for the result"),
    ),
    request_body = InvocationRequest,
    responses(
        (status = 200, description = "The invocation finished (`success`, `error` or `timeout`)", body = InvocationResponse,
            headers(("X-Execution-Id" = String, description = "The execution's id"))),
        (status = 400, description = "`MALFORMED_JSON`, or `VALIDATION_ERROR` (body or `X-Timeout-Ms`)", body = ErrorBody),
        (status = 404, description = "`NOT_FOUND`: no such function", body = ErrorBody),
        (status = 413, description = "`PAYLOAD_TOO_LARGE`", body = ErrorBody),
        (status = 415, description = "`UNSUPPORTED_MEDIA_TYPE`", body = ErrorBody),
        (status = 422, description = "`IDEMPOTENCY_KEY_REUSED` with a different request", body = ErrorBody),
        (status = 429, description = "`RATE_LIMITED`, `SYNC_QUEUE_REJECTED` (sync-queue admission; see `X-Queue-Reject-Reason`) or `QUEUE_FULL`; nothing was queued", body = ErrorBody,
            headers(
                ("Retry-After" = u64, description = "Seconds to wait before retrying"),
                ("X-Queue-Reject-Reason" = String, description = "`depth` or `est_wait`, on sync-queue rejections"),
            )),
        (status = 503, description = "`SHUTDOWN`: the control plane is stopping", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait before retrying"))),
    )
)]
#[utoipa::path(
    post,
    path = "/v1/functions/{name}:enqueue",
    impl_for = EnqueueOperation,
    operation_id = "enqueue",
    summary = "Queue an invocation of a function",
    params(
        ("name" = FunctionName, Path, description = "The function's name"),
        ("Idempotency-Key" = Option<String>, Header, nullable = false, max_length = 256, description = "Within the key's TTL the same key returns the same execution (shared with `:invoke`, scoped per function)"),
        ("X-Trace-Id" = Option<String>, Header, nullable = false, max_length = 256, description = "Passed on to the function"),
    ),
    request_body = InvocationRequest,
    responses(
        (status = 202, description = "Queued (`status` is `queued`)", body = InvocationResponse,
            headers(("X-Execution-Id" = String, description = "The execution's id"))),
        (status = 400, description = "`MALFORMED_JSON` or `VALIDATION_ERROR`", body = ErrorBody),
        (status = 404, description = "`NOT_FOUND`: no such function", body = ErrorBody),
        (status = 413, description = "`PAYLOAD_TOO_LARGE`", body = ErrorBody),
        (status = 415, description = "`UNSUPPORTED_MEDIA_TYPE`", body = ErrorBody),
        (status = 422, description = "`IDEMPOTENCY_KEY_REUSED` with a different request", body = ErrorBody),
        (status = 429, description = "`RATE_LIMITED` or `QUEUE_FULL`; no execution exists", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait before retrying"))),
        (status = 503, description = "`SHUTDOWN`: the control plane is stopping", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait before retrying"))),
    )
)]
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
    let options = submit_options(&headers, sync)?;
    let request: InvocationRequest = parse_json(
        &headers,
        body,
        state.config.max_body_bytes,
        InvocationRequest::problems,
    )?;
    request.validate().map_err(ApiError::invalid_all)?;

    // Fail fast on an unknown function before anything is queued.
    let Some(function) = state.scheduler.function(name.as_str()) else {
        return Err(function_not_found(name.as_str()));
    };
    // Before submit: a refused request leaves no execution and no idempotency claim.
    let admitted = state.admission().admit(&function.spec, sync)?;
    let submitted =
        (state.scheduler.submit(&name, request, options).await).map_err(|e| admitted.refused(e))?;
    let id = submitted.execution_id;

    let Some(mut waiter) = submitted.waiter else {
        // A replay answers the execution as it stands (it may have finished long ago).
        let body = submitted.record.as_ref().map_or_else(
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
    };

    let limit = timeout.unwrap_or(Duration::from_millis(function.spec.timeout_ms));
    let record = admitted
        .wait_for_result(&state.scheduler, &mut waiter, limit, submitted.replayed)
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
        Some(value) => value.to_str().map(|v| Some(v.trim())).map_err(|_| {
            ApiError::invalid(header_display_name(name), "must be visible ASCII text")
        }),
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
            header_display_name(X_TIMEOUT_MS),
            format!(
                "must be an integer in {}..={}, got {text:?}",
                TIMEOUT_RANGE_MS.start(),
                TIMEOUT_RANGE_MS.end()
            ),
        )),
    }
}

/// The submission's headers; a sync caller (`wait`) subscribes to the result as it
/// submits.
fn submit_options(headers: &HeaderMap, wait: bool) -> Result<SubmitOptions, ApiError> {
    Ok(SubmitOptions {
        idempotency_key: bounded_text(headers, IDEMPOTENCY_KEY, IdempotencyKey::MAX_BYTES)?
            .map(IdempotencyKey::new),
        trace_id: bounded_text(headers, X_TRACE_ID, TraceId::MAX_BYTES)?.map(TraceId::new),
        wait,
    })
}

/// A text header kept with the execution: absent when empty, refused when longer than
/// `max_bytes` (it would be remembered for a TTL).
fn bounded_text(
    headers: &HeaderMap,
    name: &str,
    max_bytes: usize,
) -> Result<Option<String>, ApiError> {
    match header_text(headers, name)? {
        None | Some("") => Ok(None),
        Some(text) if text.len() > max_bytes => Err(ApiError::invalid(
            header_display_name(name),
            format!("must be at most {max_bytes} bytes, got {}", text.len()),
        )),
        Some(text) => Ok(Some(text.to_owned())),
    }
}

// ----- executions --------------------------------------------------------------------

/// `GET /v1/executions/{id}`.
#[utoipa::path(
    get,
    path = "/v1/executions/{id}",
    tag = "invocations",
    summary = "Read an execution",
    description = "A finished execution stays readable for the execution TTL.",
    params(("id" = ExecutionId, Path, description = "The execution's id")),
    responses(
        (status = 200, description = "The execution", body = ExecutionStatus),
        (status = 404, description = "`NOT_FOUND`: no such execution (or its TTL has passed)", body = ErrorBody),
    )
)]
pub(crate) async fn get_execution(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let record = state
        .scheduler
        .execution(&ExecutionId::new(id.as_str()))
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no execution {}", shown(&id))))?;
    Ok(Json(record.to_status()).into_response())
}

/// `POST /v1/internal/executions/{id}:complete`.
#[utoipa::path(
    post,
    path = "/v1/internal/executions/{id}:complete",
    tag = "internal",
    operation_id = "complete",
    summary = "A runtime reports how an execution ended",
    description = "The first completion of the current attempt wins; later ones, and callbacks \
                   for older attempts, are ignored. Completing a queued execution removes it \
                   from its queue.",
    params(
        ("id" = ExecutionId, Path, description = "The execution's id"),
        ("X-Dispatch-Attempt" = Option<u32>, Header, nullable = false, minimum = 1, description = "The attempt this callback is for (1-based)"),
    ),
    request_body = CompletionRequest,
    responses(
        (status = 204, description = "Applied, or ignored because the execution already ended"),
        (status = 400, description = "`MALFORMED_JSON`, or `VALIDATION_ERROR` (body or `X-Dispatch-Attempt`)", body = ErrorBody),
        (status = 404, description = "`NOT_FOUND`: no such execution", body = ErrorBody),
        (status = 413, description = "`PAYLOAD_TOO_LARGE`", body = ErrorBody),
        (status = 415, description = "`UNSUPPORTED_MEDIA_TYPE`", body = ErrorBody),
    )
)]
pub(crate) async fn execution_action(
    State(state): State<AppState>,
    Path(segment): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<StatusCode, ApiError> {
    let id = completed_execution(&segment)?;
    let attempt = dispatch_attempt(&headers)?;
    complete(&state, &id, attempt, &headers, body).await
}

/// `POST /v1/internal/executions/{credential}/{id}:complete`: the callback URL of a
/// dispatch when authentication is on (`X-Callback-Url` and a replica's `CALLBACK_URL`
/// end in the credential, and the runtime appends `/{id}:complete`).
#[utoipa::path(
    post,
    path = "/v1/internal/executions/{credential}/{id}:complete",
    tag = "internal",
    operation_id = "complete_signed",
    summary = "A runtime reports how an execution ended, proving it was sent the dispatch",
    description = "As `complete`, with the callback credential the dispatch carried in its \
                   callback URL: one for this attempt of this execution (before its expiry), \
                   or one for this execution's function (a replica's `CALLBACK_URL`). With \
                   authentication off the credential is not checked.",
    params(
        ("credential" = String, Path, description = "The credential the dispatch's callback URL carried"),
        ("id" = ExecutionId, Path, description = "The execution's id"),
        ("X-Dispatch-Attempt" = Option<u32>, Header, nullable = false, minimum = 1, description = "The attempt this callback is for (1-based); a credential for one attempt names it itself"),
    ),
    request_body = CompletionRequest,
    responses(
        (status = 204, description = "Applied, or ignored because the execution already ended"),
        (status = 400, description = "`MALFORMED_JSON`, or `VALIDATION_ERROR` (body or `X-Dispatch-Attempt`)", body = ErrorBody),
        (status = 401, description = "`UNAUTHENTICATED`: the credential is missing, forged, expired, or for another execution or function", body = ErrorBody),
        (status = 404, description = "`NOT_FOUND`: no such execution", body = ErrorBody),
        (status = 413, description = "`PAYLOAD_TOO_LARGE`", body = ErrorBody),
        (status = 415, description = "`UNSUPPORTED_MEDIA_TYPE`", body = ErrorBody),
    )
)]
pub(crate) async fn signed_execution_action(
    State(state): State<AppState>,
    Path((credential, segment)): Path<(String, String)>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<StatusCode, ApiError> {
    let id = completed_execution(&segment)?;
    let mut attempt = dispatch_attempt(&headers)?;
    if let Some(auth) = &state.config.auth {
        let refused = |why: &str| ApiError::Unauthenticated(format!("callback refused: {why}"));
        let now = state.scheduler.now();
        match auth.key().verify(&credential, now) {
            Err(error) => return Err(refused(&error.to_string())),
            Ok(auth::Credential::Attempt {
                execution,
                attempt: signed,
                ..
            }) => {
                if execution != id {
                    return Err(refused("the credential is for another execution"));
                }
                if attempt.is_some_and(|named| named != signed) {
                    return Err(refused("the credential is for another attempt"));
                }
                attempt = Some(signed);
            }
            Ok(auth::Credential::Function {
                function,
                registered_at,
            }) => {
                let record = state.scheduler.execution(&id).await?;
                let Some(record) = record else {
                    return Err(ApiError::NotFound(format!(
                        "no execution {}",
                        shown(id.as_str())
                    )));
                };
                let registration = state.scheduler.function(record.function.as_str());
                let current = registration.is_some_and(|registered| {
                    registered.spec.name == function && registered.created_at == registered_at
                });
                if !current {
                    return Err(refused(
                        "the credential is for another function, or an earlier registration of it",
                    ));
                }
            }
        }
    }
    complete(&state, &id, attempt, &headers, body).await
}

/// The execution of a `{id}:complete` segment.
fn completed_execution(segment: &str) -> Result<ExecutionId, ApiError> {
    let Some((id, "complete")) = segment.rsplit_once(':') else {
        return Err(ApiError::NotFound(format!(
            "no internal execution route {segment:?} (expected {{id}}:complete)"
        )));
    };
    Ok(ExecutionId::new(id))
}

/// `X-Dispatch-Attempt`, if sent.
fn dispatch_attempt(headers: &HeaderMap) -> Result<Option<u32>, ApiError> {
    match header_text(headers, X_DISPATCH_ATTEMPT)? {
        None => Ok(None),
        Some(text) => match text.parse::<u32>() {
            Ok(n) if n >= 1 => Ok(Some(n)),
            _ => Err(ApiError::invalid(
                header_display_name(X_DISPATCH_ATTEMPT),
                format!("must be an integer >= 1, got {text:?}"),
            )),
        },
    }
}

/// Applies a callback's completion to `attempt` (`None`: the current one).
async fn complete(
    state: &AppState,
    id: &ExecutionId,
    attempt: Option<u32>,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<StatusCode, ApiError> {
    let request: CompletionRequest =
        parse_json(headers, body, state.config.max_body_bytes, |_| Vec::new())?;
    let completion = match request.into_result().map_err(ApiError::invalid_all)? {
        CallbackResult::Success(output) => Completion::Success(DispatchSuccess::warm(output)),
        CallbackResult::Failure { state, error } => Completion::Failure { state, error },
    };
    let outcome = state
        .scheduler
        .complete(id, attempt, completion, CompletionSource::Callback)
        .await?;
    tracing::debug!(execution = %id, ?outcome, "callback handled");
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /v1/internal/functions/{name}:drain-once`.
#[utoipa::path(
    post,
    path = "/v1/internal/functions/{name}:drain-once",
    tag = "internal",
    operation_id = "drain_once",
    summary = "Dispatch at most one queued invocation and wait for that attempt",
    description = "Respects the function's concurrency; answers only after the attempt has \
                   finished and the execution's state is updated (terminal, or queued again).",
    params(("name" = FunctionName, Path, description = "The function's name")),
    responses(
        (status = 200, description = "Whether an invocation was dispatched", body = Drained),
        (status = 404, description = "`NOT_FOUND`: no such function", body = ErrorBody),
        (status = 500, description = "`INTERNAL_ERROR`: the dispatch task failed", body = ErrorBody),
    )
)]
pub(crate) async fn internal_function_action(
    State(state): State<AppState>,
    Path(segment): Path<String>,
) -> Result<Json<Drained>, ApiError> {
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
    Ok(Json(Drained { dispatched }))
}

// ----- health and fallbacks ----------------------------------------------------------

/// `GET /actuator/health` and its liveness/readiness variants.
#[utoipa::path(
    get,
    path = "/actuator/health",
    tag = "health",
    summary = "Whether the process is up",
    responses((status = 200, description = "Up", body = Health))
)]
#[utoipa::path(
    get,
    path = "/actuator/health/liveness",
    impl_for = LivenessOperation,
    operation_id = "liveness",
    summary = "Liveness probe",
    responses((status = 200, description = "Up", body = Health))
)]
pub(crate) async fn health() -> Json<Health> {
    Json(Health::UP)
}

/// `GET /actuator/health/readiness`: `UP` while invocations are taken; once shutdown has
/// begun, 503 `OUT_OF_SERVICE`, so a load balancer stops sending new work while the
/// grace still takes runtimes' callbacks (liveness stays `UP`).
#[utoipa::path(
    get,
    path = "/actuator/health/readiness",
    impl_for = ReadinessOperation,
    operation_id = "readiness",
    summary = "Readiness probe",
    responses(
        (status = 200, description = "Up: invocations are taken", body = Health),
        (status = 503, description = "`OUT_OF_SERVICE`: shutting down, new invocations are refused", body = Health),
    )
)]
pub(crate) async fn readiness(State(state): State<AppState>) -> Response {
    if state.scheduler.is_stopping() {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(Health::OUT_OF_SERVICE),
        )
            .into_response()
    } else {
        Json(Health::UP).into_response()
    }
}

/// Any route that does not exist.
pub(crate) async fn not_found() -> ApiError {
    ApiError::NotFound("no such route".into())
}

/// A route that exists, with the wrong method.
pub(crate) async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_are_named_as_clients_write_them() {
        assert_eq!(header_display_name(X_TIMEOUT_MS), "X-Timeout-Ms");
        assert_eq!(header_display_name(IDEMPOTENCY_KEY), "Idempotency-Key");
    }

    #[test]
    fn what_a_client_sent_is_quoted_back_short() {
        assert_eq!(shown("echo"), "echo");
        let hostile = "ü".repeat(10_000);
        assert_eq!(shown(&hostile), format!("{}...", "ü".repeat(64)));
    }
}
