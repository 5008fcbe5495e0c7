//! Reading JSON request bodies with the contract's errors (415, 413, 400).

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode, header};
use serde::de::DeserializeOwned;
use serde_json::error::Category;

use crate::ApiError;

/// Whether the request declares a JSON body.
fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(core_types::is_json_media_type)
}

/// Turns a body rejection into the contract's error.
pub(crate) fn body_error(rejection: &BytesRejection, limit: usize) -> ApiError {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::PayloadTooLarge { limit }
    } else {
        ApiError::UnreadableBody(rejection.body_text())
    }
}

/// Checks the content type and the body, then parses it as `T`. A syntax error is
/// `MALFORMED_JSON`; a value of the wrong shape is `VALIDATION_ERROR` (with `details`
/// from `describe` when it can say more than serde).
pub(crate) fn parse_json<T: DeserializeOwned>(
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
    limit: usize,
    describe: impl FnOnce(&serde_json::Value) -> Vec<core_types::ErrorDetail>,
) -> Result<T, ApiError> {
    if !is_json(headers) {
        return Err(ApiError::UnsupportedMediaType);
    }
    let bytes = body.map_err(|r| body_error(&r, limit))?;
    match serde_json::from_slice::<T>(&bytes) {
        Ok(value) => Ok(value),
        Err(e) if e.classify() == Category::Data => {
            let details = serde_json::from_slice::<serde_json::Value>(&bytes)
                .map(|v| describe(&v))
                .unwrap_or_default();
            if details.is_empty() {
                Err(ApiError::invalid("$", e.to_string()))
            } else {
                Err(ApiError::invalid_all(details))
            }
        }
        Err(e) => Err(ApiError::MalformedJson(e.to_string())),
    }
}
