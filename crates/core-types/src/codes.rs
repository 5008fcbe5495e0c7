//! The error codes the control plane reports, in executions and in HTTP error bodies.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A machine-readable error code (`SCREAMING_SNAKE`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ErrorCode {
    /// The function answered with a non-2xx status.
    FunctionError,
    /// The function could not be reached.
    DispatchError,
    /// The function did not answer within its `timeoutMs`.
    DispatchTimeout,
    /// The dispatcher itself panicked while dispatching.
    DispatchPanicked,
    /// The function was deleted while the execution was queued.
    FunctionRemoved,
    /// A sync caller stopped waiting; the execution ends as `timeout`.
    SyncTimeout,
    /// The control plane shut down before the execution could finish.
    Shutdown,
    /// An invocation was refused (429) because the function's queue is full, or the
    /// inputs of unfinished executions fill the queued-input budget. (A retry that finds
    /// the queue full ends with its failed attempt's own error, not this.)
    QueueFull,
    /// The runtime reported an error without a code of its own.
    RuntimeError,
    /// The request is invalid.
    ValidationError,
    /// The request body is not valid JSON.
    MalformedJson,
    /// The request's `Content-Type` is not JSON.
    UnsupportedMediaType,
    /// The request body is over the limit.
    PayloadTooLarge,
    /// No such function, execution or route.
    NotFound,
    /// Wrong HTTP method for this route.
    MethodNotAllowed,
    /// A function of that name exists already.
    FunctionExists,
    /// The same idempotency key came with a different request.
    IdempotencyKeyReused,
    /// The global rate limit is exceeded.
    RateLimited,
    /// Sync-queue admission refused the request.
    SyncQueueRejected,
    /// No deployment provider can run the function.
    ProviderUnavailable,
    /// A runtime-config patch's `expectedRevision` is stale.
    RevisionMismatch,
    /// A runtime-config change parses but breaks the configuration's rules.
    InvalidRuntimeConfig,
    /// An admitted sync invocation stayed queued past the sync queue's maximum wait.
    QueueTimeout,
    /// The request body did not arrive within the server's body read timeout.
    RequestTimeout,
    /// The request line and headers are over the server's limit.
    RequestHeaderFieldsTooLarge,
    /// Something failed inside the control plane.
    InternalError,
    /// The control plane restarted while the execution ran its last attempt.
    ControlPlaneRestarted,
    /// The store could not make a change durable (disk full, gone or read-only):
    /// nothing was changed.
    StoreUnavailable,
    /// No token, an unknown one, or a callback credential that proves nothing.
    Unauthenticated,
    /// The token's role does not allow the route.
    Forbidden,
}

impl ErrorCode {
    /// The code as it appears on the wire.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::FunctionError => "FUNCTION_ERROR",
            Self::DispatchError => "DISPATCH_ERROR",
            Self::DispatchTimeout => "DISPATCH_TIMEOUT",
            Self::DispatchPanicked => "DISPATCH_PANICKED",
            Self::FunctionRemoved => "FUNCTION_REMOVED",
            Self::SyncTimeout => "SYNC_TIMEOUT",
            Self::Shutdown => "SHUTDOWN",
            Self::QueueFull => "QUEUE_FULL",
            Self::RuntimeError => "RUNTIME_ERROR",
            Self::ValidationError => "VALIDATION_ERROR",
            Self::MalformedJson => "MALFORMED_JSON",
            Self::UnsupportedMediaType => "UNSUPPORTED_MEDIA_TYPE",
            Self::PayloadTooLarge => "PAYLOAD_TOO_LARGE",
            Self::NotFound => "NOT_FOUND",
            Self::MethodNotAllowed => "METHOD_NOT_ALLOWED",
            Self::FunctionExists => "FUNCTION_EXISTS",
            Self::IdempotencyKeyReused => "IDEMPOTENCY_KEY_REUSED",
            Self::RateLimited => "RATE_LIMITED",
            Self::SyncQueueRejected => "SYNC_QUEUE_REJECTED",
            Self::ProviderUnavailable => "PROVIDER_UNAVAILABLE",
            Self::RevisionMismatch => "REVISION_MISMATCH",
            Self::InvalidRuntimeConfig => "INVALID_RUNTIME_CONFIG",
            Self::QueueTimeout => "QUEUE_TIMEOUT",
            Self::RequestTimeout => "REQUEST_TIMEOUT",
            Self::RequestHeaderFieldsTooLarge => "REQUEST_HEADER_FIELDS_TOO_LARGE",
            Self::InternalError => "INTERNAL_ERROR",
            Self::ControlPlaneRestarted => "CONTROL_PLANE_RESTARTED",
            Self::StoreUnavailable => "STORE_UNAVAILABLE",
            Self::Unauthenticated => "UNAUTHENTICATED",
            Self::Forbidden => "FORBIDDEN",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_names_match_serde() {
        for code in [
            ErrorCode::FunctionError,
            ErrorCode::IdempotencyKeyReused,
            ErrorCode::Shutdown,
            ErrorCode::InvalidRuntimeConfig,
            ErrorCode::QueueTimeout,
            ErrorCode::RequestHeaderFieldsTooLarge,
            ErrorCode::ControlPlaneRestarted,
            ErrorCode::StoreUnavailable,
            ErrorCode::Unauthenticated,
            ErrorCode::Forbidden,
        ] {
            assert_eq!(serde_json::to_value(code).unwrap(), code.as_str());
        }
    }
}
