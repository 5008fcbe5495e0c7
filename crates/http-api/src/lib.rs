//! The HTTP face of the control plane: the nanofaas-compatible control-plane API of
//! `docs/api.md`.
//!
//! Owns: the axum router ([`router`]), its handlers, reading request bodies with the
//! contract's errors (415 wrong content type, 413 over [`ApiConfig::max_body_bytes`],
//! 400 malformed JSON or invalid fields), and the one mapping of every error to the
//! JSON error body `{"error", "message", "details"?}` ([`ApiError`]), including axum's
//! own rejections, unknown routes (404) and wrong methods (405, with `Allow`). Also
//! [`health_router`], the `/actuator/health*` routes the management port serves, and
//! `GET /openapi.json`, the OpenAPI document generated from the handlers (`openapi.rs`
//! says how to document a new route).
//!
//! Must not know: how functions are reached (no dependency on `dispatcher`; the
//! binary hands the [`Scheduler`] a `Dispatch`), how records are stored (the scheduler
//! talks to the `store` ports), or anything about sockets (the binary binds and serves).
//! It spawns no tasks: sync invokes wait on the scheduler, `:drain-once` awaits the
//! `tick_once` handle.
//!
//! ```no_run
//! use std::sync::Arc;
//! use core_types::{Dispatch, DispatchOutcome, DispatchRequest, DispatchSuccess};
//! use http_api::{ApiConfig, AppState, router};
//! use scheduler::{Scheduler, SchedulerParts};
//!
//! struct Echo;
//! #[async_trait::async_trait]
//! impl Dispatch for Echo {
//!     async fn dispatch(&self, request: DispatchRequest) -> DispatchOutcome {
//!         Ok(DispatchSuccess::warm(request.input))
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let scheduler = Scheduler::new(SchedulerParts::in_memory(Arc::new(Echo)), Default::default());
//! scheduler.start_background();
//! let app = router(AppState::new(scheduler.clone(), ApiConfig::default()));
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
//! axum::serve(listener, app).await.unwrap();
//! # }
//! ```

mod body;
mod error;
mod handlers;
mod openapi;
mod views;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
pub use error::ApiError;
pub use scheduler::Scheduler;

/// The contract's default request body limit: 6 MiB.
pub const DEFAULT_MAX_BODY_BYTES: usize = 6 * 1024 * 1024;

/// Settings of the API.
#[derive(Clone, Debug)]
pub struct ApiConfig {
    /// Request bodies over this many bytes are refused with 413.
    pub max_body_bytes: usize,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
        }
    }
}

/// What every handler shares: the scheduler and the settings. Cheap to clone.
#[derive(Clone, Debug)]
pub struct AppState {
    scheduler: Scheduler,
    config: ApiConfig,
}

impl AppState {
    /// State over `scheduler` with `config`.
    pub fn new(scheduler: Scheduler, config: ApiConfig) -> Self {
        Self { scheduler, config }
    }

    /// The scheduler the handlers talk to.
    pub fn scheduler(&self) -> &Scheduler {
        &self.scheduler
    }

    /// The settings.
    pub fn config(&self) -> &ApiConfig {
        &self.config
    }
}

/// The whole API (everything under `/v1`, plus the health routes).
pub fn router(state: AppState) -> Router {
    let limit = state.config.max_body_bytes;
    let api = Router::new()
        .route(
            "/v1/functions",
            get(handlers::list_functions).post(handlers::register_function),
        )
        .route(
            "/v1/functions/{name_action}",
            get(handlers::get_function)
                .delete(handlers::delete_function)
                .post(handlers::function_action),
        )
        .route("/v1/executions/{id}", get(handlers::get_execution))
        .route(
            "/v1/internal/executions/{id_action}",
            post(handlers::execution_action),
        )
        .route(
            "/v1/internal/functions/{name_action}",
            post(handlers::internal_function_action),
        )
        .route("/openapi.json", get(openapi::openapi_json))
        .with_state(state);
    finish(api.merge(health_routes()), limit)
}

/// Only the `/actuator/health*` routes (for the management port).
pub fn health_router() -> Router {
    finish(health_routes(), DEFAULT_MAX_BODY_BYTES)
}

fn health_routes() -> Router {
    Router::new()
        .route("/actuator/health", get(handlers::health))
        .route("/actuator/health/liveness", get(handlers::health))
        .route("/actuator/health/readiness", get(handlers::health))
}

fn finish(router: Router, limit: usize) -> Router {
    let routed = router
        .fallback(handlers::not_found)
        .method_not_allowed_fallback(handlers::method_not_allowed)
        .layer(DefaultBodyLimit::max(limit))
        .layer(axum::middleware::map_response(error::json_errors_only));
    // axum adds its own `Allow` (every method of the registered route, which for a
    // `{name_action}` route mixes the function's and its actions' methods) after every
    // layer of `routed` has run; only a layer around the whole router sees it and can
    // replace it with the documented resource's methods.
    Router::new()
        .fallback_service(routed)
        .layer(axum::middleware::from_fn(openapi::allow_on_405))
}
