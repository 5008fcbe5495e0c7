//! Reading JSON request bodies with the contract's errors (415, 413, 400).

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode, header};
use serde::de::DeserializeOwned;

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

/// Checks the content type and the body, then parses it as `T`. Every body of the API
/// is a JSON object. Text that is not JSON is `MALFORMED_JSON`; JSON of the wrong shape
/// (not an object, a field of the wrong type) is `VALIDATION_ERROR`, with `details` from
/// `describe` when it can say more than serde.
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
    let is_object = bytes.trim_ascii_start().first() == Some(&b'{');
    match serde_json::from_slice::<T>(&bytes) {
        Ok(value) if is_object => Ok(value),
        Ok(_) => Err(not_an_object()),
        // serde_json classifies some type mismatches (an enum given a number) as
        // syntax errors, so whether the text is JSON at all is asked separately.
        Err(e) => match serde_json::from_slice::<serde_json::Value>(&bytes) {
            Err(_) => Err(ApiError::MalformedJson(e.to_string())),
            Ok(_) if !is_object => Err(not_an_object()),
            Ok(value) => {
                let details = describe(&value);
                if details.is_empty() {
                    Err(ApiError::invalid("$", e.to_string()))
                } else {
                    Err(ApiError::invalid_all(details))
                }
            }
        },
    }
}

fn not_an_object() -> ApiError {
    ApiError::invalid("$", "the body must be a JSON object")
}
