//! Every error the API answers with, and its one mapping to status + JSON body.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use core_types::{ErrorBody, ErrorCode, ErrorDetail};
use scheduler::{
    CompleteError, LogsError, RegisterError, RemoveError, ReplicasError, SubmitError, TickError,
    WaitError,
};

use crate::admission::Rejection;
use crate::runtime_config::ConfigChangeError;

/// Seconds a client is told to wait after a 429 (`Retry-After`).
const RETRY_AFTER_SECONDS: &str = "1";

/// A request the API refuses, or a fault inside it. [`IntoResponse`] turns it into the
/// contract's `{"error", "message", "details"?}` body with the matching status.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request is well-formed JSON but breaks a rule (400 `VALIDATION_ERROR`).
    #[error("{message}")]
    Validation {
        /// Summary.
        message: String,
        /// One entry per problem.
        details: Vec<ErrorDetail>,
    },
    /// The body is not JSON (400 `MALFORMED_JSON`).
    #[error("the request body is not valid JSON: {0}")]
    MalformedJson(String),
    /// The body is not declared as JSON (415 `UNSUPPORTED_MEDIA_TYPE`).
    #[error("expected a request with Content-Type: application/json")]
    UnsupportedMediaType,
    /// The body is over the configured limit (413 `PAYLOAD_TOO_LARGE`).
    #[error("the request body is over the limit of {limit} bytes")]
    PayloadTooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// The body could not be read (400 `MALFORMED_JSON`).
    #[error("the request body could not be read: {0}")]
    UnreadableBody(String),
    /// No such function, execution, route or action (404 `NOT_FOUND`).
    #[error("{0}")]
    NotFound(String),
    /// The route exists, the method does not (405 `METHOD_NOT_ALLOWED`).
    #[error("method not allowed on this route")]
    MethodNotAllowed,
    /// `POST /v1/functions` refused: a taken name (409 `FUNCTION_EXISTS`), or a
    /// `DEPLOYMENT` nothing can run (503 `PROVIDER_UNAVAILABLE`).
    #[error(transparent)]
    Register(#[from] RegisterError),
    /// `PUT /v1/functions/{name}/replicas` refused.
    #[error(transparent)]
    Replicas(#[from] ReplicasError),
    /// `GET /v1/functions/{name}/logs` refused.
    #[error(transparent)]
    Logs(#[from] LogsError),
    /// `:invoke` / `:enqueue` refused by the scheduler.
    #[error(transparent)]
    Submit(#[from] SubmitError),
    /// `DELETE /v1/functions/{name}` refused.
    #[error(transparent)]
    Remove(#[from] RemoveError),
    /// `:drain-once` refused.
    #[error(transparent)]
    Tick(#[from] TickError),
    /// `:complete` refused.
    #[error(transparent)]
    Complete(#[from] CompleteError),
    /// Waiting for a sync result failed.
    #[error(transparent)]
    Wait(#[from] WaitError),
    /// Turned away at the door (429 with its own `Retry-After`).
    #[error(transparent)]
    Admission(#[from] Rejection),
    /// A runtime-config change refused (422 invalid, 409 stale revision).
    #[error(transparent)]
    RuntimeConfig(#[from] ConfigChangeError),
    /// The store could not read or make durable what the request needs (503
    /// `STORE_UNAVAILABLE`): nothing was changed.
    #[error(transparent)]
    StoreUnavailable(#[from] store::StoreUnavailable),
    /// No token, an unknown one, or a callback credential that proves nothing (401
    /// `UNAUTHENTICATED`, with `WWW-Authenticate: Bearer`).
    #[error("{0}")]
    Unauthenticated(String),
    /// The token's role does not allow the route (403 `FORBIDDEN`).
    #[error("{0}")]
    Forbidden(String),
    /// A fault inside the control plane (500 `INTERNAL_ERROR`).
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    /// A validation error with one detail.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        let detail = ErrorDetail::new(field, message);
        Self::Validation {
            message: format!("invalid request: {}: {}", detail.field, detail.message),
            details: vec![detail],
        }
    }

    /// A validation error listing `details`.
    pub fn invalid_all(details: Vec<ErrorDetail>) -> Self {
        let parts: Vec<String> = details
            .iter()
            .map(|d| format!("{}: {}", d.field, d.message))
            .collect();
        Self::Validation {
            message: format!("invalid request: {}", parts.join("; ")),
            details,
        }
    }

    /// The status and wire code of this error.
    pub fn status_and_code(&self) -> (StatusCode, ErrorCode) {
        use StatusCode as S;
        match self {
            Self::Validation { .. } => (S::BAD_REQUEST, ErrorCode::ValidationError),
            Self::MalformedJson(_) | Self::UnreadableBody(_) => {
                (S::BAD_REQUEST, ErrorCode::MalformedJson)
            }
            Self::UnsupportedMediaType => {
                (S::UNSUPPORTED_MEDIA_TYPE, ErrorCode::UnsupportedMediaType)
            }
            Self::PayloadTooLarge { .. } => (S::PAYLOAD_TOO_LARGE, ErrorCode::PayloadTooLarge),
            Self::NotFound(_)
            | Self::Remove(RemoveError::UnknownFunction(_))
            | Self::Tick(TickError::UnknownFunction(_))
            | Self::Complete(CompleteError::UnknownExecution(_))
            | Self::Submit(SubmitError::UnknownFunction(_))
            | Self::Replicas(ReplicasError::UnknownFunction(_))
            | Self::Logs(LogsError::UnknownFunction(_)) => (S::NOT_FOUND, ErrorCode::NotFound),
            Self::MethodNotAllowed => (S::METHOD_NOT_ALLOWED, ErrorCode::MethodNotAllowed),
            Self::Register(RegisterError::AlreadyRegistered(_)) => {
                (S::CONFLICT, ErrorCode::FunctionExists)
            }
            Self::Register(RegisterError::NoProvider { .. } | RegisterError::Provision(_))
            | Self::Replicas(ReplicasError::Provider(_)) => {
                (S::SERVICE_UNAVAILABLE, ErrorCode::ProviderUnavailable)
            }
            Self::Replicas(ReplicasError::NotDeployment { .. })
            | Self::Logs(LogsError::NoReplicas(_)) => (S::BAD_REQUEST, ErrorCode::ValidationError),
            Self::Submit(SubmitError::QueueFull { .. } | SubmitError::InputsFull { .. }) => {
                (S::TOO_MANY_REQUESTS, ErrorCode::QueueFull)
            }
            Self::Submit(SubmitError::IdempotencyKeyReused(_)) => {
                (S::UNPROCESSABLE_ENTITY, ErrorCode::IdempotencyKeyReused)
            }
            Self::Submit(SubmitError::NotAccepting(_))
            | Self::Register(RegisterError::Interrupted)
            | Self::Remove(RemoveError::Interrupted) => {
                (S::SERVICE_UNAVAILABLE, ErrorCode::Shutdown)
            }
            Self::Admission(rejection) => (S::TOO_MANY_REQUESTS, rejection.code()),
            Self::RuntimeConfig(ConfigChangeError::Invalid(_)) => {
                (S::UNPROCESSABLE_ENTITY, ErrorCode::InvalidRuntimeConfig)
            }
            Self::RuntimeConfig(ConfigChangeError::RevisionMismatch { .. }) => {
                (S::CONFLICT, ErrorCode::RevisionMismatch)
            }
            Self::StoreUnavailable(_)
            | Self::Submit(SubmitError::StoreUnavailable(_))
            | Self::Register(RegisterError::StoreUnavailable(_))
            | Self::Remove(RemoveError::StoreUnavailable(_))
            | Self::Complete(CompleteError::StoreUnavailable(_))
            | Self::Wait(WaitError::StoreUnavailable(_))
            | Self::Replicas(ReplicasError::StoreUnavailable(_)) => {
                (S::SERVICE_UNAVAILABLE, ErrorCode::StoreUnavailable)
            }
            Self::Unauthenticated(_) => (S::UNAUTHORIZED, ErrorCode::Unauthenticated),
            Self::Forbidden(_) => (S::FORBIDDEN, ErrorCode::Forbidden),
            Self::Wait(WaitError::UnknownExecution(_)) | Self::Internal(_) => {
                (S::INTERNAL_SERVER_ERROR, ErrorCode::InternalError)
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        if status.is_server_error() {
            tracing::error!(error = %self, "request failed inside the control plane");
        } else {
            tracing::debug!(error = %self, %status, "request refused");
        }
        let mut body = ErrorBody::new(code, self.to_string());
        let mut extra = serde_json::Map::new();
        let mut retry_after = None;
        let mut reject_reason = None;
        match self {
            Self::Validation { details, .. } => body.details = Some(details),
            Self::Admission(rejection) => {
                retry_after = Some(rejection.retry_after());
                reject_reason = rejection.queue_reject_reason();
            }
            Self::RuntimeConfig(ConfigChangeError::Invalid(invalid)) => {
                let errors = invalid
                    .0
                    .iter()
                    .map(|p| format!("{}: {}", p.field, p.message).into())
                    .collect();
                extra.insert("errors".into(), serde_json::Value::Array(errors));
                body.details = Some(invalid.0);
            }
            Self::RuntimeConfig(ConfigChangeError::RevisionMismatch { current, .. }) => {
                extra.insert("currentRevision".into(), current.into());
            }
            _ => {}
        }
        let mut response = if extra.is_empty() {
            (status, axum::Json(body)).into_response()
        } else {
            let mut value = serde_json::to_value(body).unwrap_or_default();
            if let serde_json::Value::Object(fields) = &mut value {
                fields.extend(extra);
            }
            (status, axum::Json(value)).into_response()
        };
        let headers = response.headers_mut();
        if let Some(seconds) = retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        } else if matches!(
            status,
            StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE
        ) {
            headers.insert(
                header::RETRY_AFTER,
                HeaderValue::from_static(RETRY_AFTER_SECONDS),
            );
        }
        if let Some(reason) = reject_reason {
            headers.insert(
                core_types::headers::X_QUEUE_REJECT_REASON,
                HeaderValue::from_static(reason),
            );
        }
        if status == StatusCode::UNAUTHORIZED {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

/// Last line of defence: any 4xx/5xx response that is not JSON (a rejection produced
/// by axum itself somewhere this crate does not intercept it) gets the contract's body.
pub(crate) fn json_errors_only(response: Response) -> Response {
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if is_json {
        return response;
    }
    let code = match status {
        StatusCode::NOT_FOUND => ErrorCode::NotFound,
        StatusCode::METHOD_NOT_ALLOWED => ErrorCode::MethodNotAllowed,
        StatusCode::PAYLOAD_TOO_LARGE => ErrorCode::PayloadTooLarge,
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ErrorCode::UnsupportedMediaType,
        s if s.is_server_error() => ErrorCode::InternalError,
        _ => ErrorCode::ValidationError,
    };
    let (mut parts, _) = response.into_parts();
    parts.headers.remove(header::CONTENT_LENGTH);
    let message = status
        .canonical_reason()
        .unwrap_or("request failed")
        .to_owned();
    let body = axum::Json(ErrorBody::new(code, message)).into_response();
    let (body_parts, body) = body.into_parts();
    parts.headers.insert(
        header::CONTENT_TYPE,
        body_parts
            .headers
            .get(header::CONTENT_TYPE)
            .cloned()
            .unwrap_or(HeaderValue::from_static("application/json")),
    );
    Response::from_parts(parts, body)
}
