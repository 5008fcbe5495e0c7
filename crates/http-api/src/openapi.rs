//! The API's OpenAPI 3 document (`GET /openapi.json`), generated from the handlers'
//! `#[utoipa::path]` annotations and the `ToSchema` of the wire types, and the one
//! behaviour read from it: the `Allow` header of a 405.
//!
//! Adding a route: register it in `router()`, annotate its handler with
//! `#[utoipa::path]`, list the handler in [`ApiDoc`]'s `paths(...)`, and add its row to
//! the table in `tests/openapi.rs`. That test fails until the table, the document and
//! the router agree; until the route is documented, a wrong method on it answers 404
//! instead of 405 with its `Allow`.
//!
//! Why some operations are added by hand ([`SharedHandlers`]): axum 0.8 routes with
//! matchit 0.8.4, which refuses a parameter followed by text in one segment
//! (`/v1/functions/{name}:invoke`). So the router registers `{name_action}` segments
//! and one handler serves several documented operations (`:invoke` and `:enqueue`; the
//! three health paths). `#[utoipa::path]` names its operation after the function, so
//! each extra operation carries its own `impl_for` type, listed here.

use std::sync::LazyLock;

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use core_types::{
    CompletionRequest, ErrorBody, ErrorCode, ErrorDetail, ErrorInfo, ExecutionStatus, FunctionSpec,
    FunctionView, InvocationRequest, InvocationResponse,
};
use utoipa::openapi::path::{HttpMethod, PathItem};
use utoipa::openapi::{OpenApi as Document, RefOr, Schema};
use utoipa::{Modify, OpenApi, Path};

use crate::views::{Drained, Health};
use crate::{ApiError, handlers};

/// `POST /v1/functions/{name}:invoke`, served by `function_action`.
pub(crate) struct InvokeOperation;
/// `POST /v1/functions/{name}:enqueue`, served by `function_action`.
pub(crate) struct EnqueueOperation;
/// `GET /actuator/health/liveness`, served by `health`.
pub(crate) struct LivenessOperation;
/// `GET /actuator/health/readiness`, served by `health`.
pub(crate) struct ReadinessOperation;

/// The request body of `POST /v1/functions`: a [`FunctionSpec`] of which only `name` and
/// `image` are required. `from_json` reads the body field by field, so there is no Rust
/// type of it; its schema is the spec's own, relaxed, so the two cannot drift.
pub(crate) struct FunctionSpecInput;

impl utoipa::PartialSchema for FunctionSpecInput {
    fn schema() -> RefOr<Schema> {
        let mut schema = <FunctionSpec as utoipa::PartialSchema>::schema();
        if let RefOr::T(Schema::Object(input)) = &mut schema {
            input.required = vec!["name".into(), "image".into()];
            input.description = Some(
                "A function to register. Only `name` and `image` are required; every other \
                 field has the default shown. Unknown fields are ignored; `timeoutMillis` and \
                 `url` are accepted as aliases of `timeoutMs` and `endpointUrl`. Every invalid \
                 field is reported at once (`VALIDATION_ERROR`, one detail per field)."
                    .into(),
            );
        }
        schema
    }
}

impl utoipa::ToSchema for FunctionSpecInput {
    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        <FunctionSpec as utoipa::ToSchema>::schemas(schemas);
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "nanofaas control plane",
        description = "The nanofaas-compatible control-plane HTTP API. Every 4xx/5xx answer \
                       is an `ErrorBody` with `Content-Type: application/json`."
    ),
    paths(
        handlers::register_function,
        handlers::list_functions,
        handlers::get_function,
        handlers::delete_function,
        handlers::set_replicas,
        handlers::function_logs,
        handlers::get_execution,
        handlers::execution_action,
        handlers::signed_execution_action,
        handlers::internal_function_action,
        handlers::health,
        crate::metrics::scrape,
        crate::runtime_config::get_config,
        crate::runtime_config::patch_config,
        crate::runtime_config::validate_config,
        openapi_json,
    ),
    components(schemas(
        FunctionSpec,
        FunctionView,
        InvocationRequest,
        InvocationResponse,
        ExecutionStatus,
        CompletionRequest,
        ErrorBody,
        ErrorDetail,
        ErrorCode,
        ErrorInfo,
        Drained,
        Health,
    )),
    modifiers(&SharedHandlers),
    tags(
        (name = "functions", description = "Registering and removing functions"),
        (name = "invocations", description = "Invoking functions and reading executions"),
        (name = "internal", description = "Runtime callbacks and operator controls"),
        (name = "health", description = "Liveness and readiness probes"),
        (name = "meta", description = "This document"),
    )
)]
struct ApiDoc;

/// Adds the operations whose handler serves more than one of them.
struct SharedHandlers;

impl Modify for SharedHandlers {
    fn modify(&self, document: &mut Document) {
        add_operation::<InvokeOperation>(document, "invocations");
        add_operation::<EnqueueOperation>(document, "invocations");
        add_operation::<LivenessOperation>(document, "health");
        add_operation::<ReadinessOperation>(document, "health");
    }
}

fn add_operation<P: Path>(document: &mut Document, tag: &str) {
    let mut operation = P::operation();
    operation.tags = Some(vec![tag.to_owned()]);
    document
        .paths
        .add_path_operation(P::path(), P::methods(), operation);
}

static DOCUMENT: LazyLock<Document> = LazyLock::new(ApiDoc::openapi);

/// The OpenAPI 3 document of this API.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "meta",
    responses((status = 200, description = "This document", body = serde_json::Value))
)]
pub(crate) async fn openapi_json() -> Json<&'static Document> {
    Json(&DOCUMENT)
}

/// RFC 9110: a 405 lists the methods the target resource supports. Whether the 405 came
/// from the router (a route without that method) or from a handler (`POST` on a function
/// without an action), the methods are those the document gives the path; `HEAD` comes
/// with `GET`, as axum serves it. A path the document knows no resource at is not a
/// resource at all (an unknown action, say): 404.
pub(crate) fn allow_on_405(path: &str, mut response: Response) -> Response {
    if response.status() != StatusCode::METHOD_NOT_ALLOWED {
        return response;
    }
    match allowed_methods(path) {
        Some(allow) => {
            response.headers_mut().insert(header::ALLOW, allow);
            response
        }
        None => ApiError::NotFound("no such route".into()).into_response(),
    }
}

/// The `Allow` value for a request path, from the documented paths that match it.
fn allowed_methods(path: &str) -> Option<HeaderValue> {
    const ORDER: [(HttpMethod, &str); 5] = [
        (HttpMethod::Get, "GET, HEAD"),
        (HttpMethod::Post, "POST"),
        (HttpMethod::Put, "PUT"),
        (HttpMethod::Patch, "PATCH"),
        (HttpMethod::Delete, "DELETE"),
    ];
    let items: Vec<&PathItem> = DOCUMENT
        .paths
        .paths
        .iter()
        .filter(|(template, _)| template_matches(template, path))
        .map(|(_, item)| item)
        .collect();
    let methods: Vec<&str> = ORDER
        .iter()
        .filter(|(method, _)| items.iter().any(|item| has_operation(item, method)))
        .map(|(_, names)| *names)
        .collect();
    if methods.is_empty() {
        return None;
    }
    HeaderValue::from_str(&methods.join(", ")).ok()
}

fn has_operation(item: &PathItem, method: &HttpMethod) -> bool {
    match method {
        HttpMethod::Get => item.get.is_some(),
        HttpMethod::Post => item.post.is_some(),
        HttpMethod::Put => item.put.is_some(),
        HttpMethod::Patch => item.patch.is_some(),
        HttpMethod::Delete => item.delete.is_some(),
        HttpMethod::Head => item.head.is_some(),
        HttpMethod::Options => item.options.is_some(),
        HttpMethod::Trace => item.trace.is_some(),
    }
}

/// Whether a request path is an instance of a documented path template. A parameter
/// takes a non-empty part of one segment without `:`, the separator of actions, the way
/// the handlers split `{name_action}` (function names cannot contain `:`).
fn template_matches(template: &str, path: &str) -> bool {
    let mut templates = template.split('/');
    let mut segments = path.split('/');
    loop {
        match (templates.next(), segments.next()) {
            (None, None) => return true,
            (Some(template), Some(segment)) if segment_matches(template, segment) => {}
            _ => return false,
        }
    }
}

fn segment_matches(template: &str, segment: &str) -> bool {
    let Some((_, suffix)) = template
        .strip_prefix('{')
        .and_then(|rest| rest.split_once('}'))
    else {
        return template == segment;
    };
    // The handlers see the percent-decoded segment, so `%3A` separates an action too.
    let segment = segment.replace("%3A", ":").replace("%3a", ":");
    segment
        .strip_suffix(suffix)
        .is_some_and(|value| !value.is_empty() && !value.contains(':'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_take_part_of_a_segment_up_to_an_action() {
        let invoke = "/v1/functions/{name}:invoke";
        let function = "/v1/functions/{name}";
        assert!(template_matches(invoke, "/v1/functions/echo:invoke"));
        assert!(template_matches(invoke, "/v1/functions/echo%3Ainvoke"));
        assert!(!template_matches(invoke, "/v1/functions/:invoke"));
        assert!(!template_matches(invoke, "/v1/functions/a:b:invoke"));
        assert!(!template_matches(invoke, "/v1/functions/echo"));
        assert!(template_matches(function, "/v1/functions/echo"));
        assert!(!template_matches(function, "/v1/functions/echo:invoke"));
        assert!(!template_matches(function, "/v1/functions/echo/x"));
        assert!(!template_matches(function, "/v1/functions/"));
        assert!(template_matches("/openapi.json", "/openapi.json"));
    }

    /// The reason the action routes are split in the handlers: if this starts failing,
    /// axum's matcher takes `{name}:invoke`, and each action can become its own route.
    #[test]
    fn axum_cannot_route_a_parameter_with_an_action_suffix() {
        let registered = std::panic::catch_unwind(|| {
            axum::Router::<()>::new().route("/f/{name}:invoke", axum::routing::post(|| async {}))
        });
        assert!(registered.is_err());
    }
}
