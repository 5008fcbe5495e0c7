//! What the edge answers itself, in the contract's JSON error body. Both close the
//! connection: the rest of what the client sends cannot be trusted to be a request.

use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use core_types::{ErrorBody, ErrorCode};

/// 408 `REQUEST_TIMEOUT`: the body did not arrive within the body read timeout.
pub(crate) fn body_too_slow(timeout: Duration) -> Response {
    refuse(
        StatusCode::REQUEST_TIMEOUT,
        ErrorCode::RequestTimeout,
        format!("the request body did not arrive within {timeout:?}"),
    )
}

/// 431 `REQUEST_HEADER_FIELDS_TOO_LARGE`: the head is over the limit.
pub(crate) fn head_too_large(limit: usize) -> Response {
    refuse(
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        ErrorCode::RequestHeaderFieldsTooLarge,
        format!("the request line and headers are over the limit of {limit} bytes"),
    )
}

fn refuse(status: StatusCode, code: ErrorCode, message: String) -> Response {
    let body = serde_json::to_vec(&ErrorBody::new(code, message))
        .expect("an error body always serializes");
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}
