//! The HTTP face of the control plane: the nanofaas-compatible control-plane API of
//! `docs/api.md`.
//!
//! Owns: the axum router ([`router`], served as one [`Api`] service), its handlers,
//! reading request bodies with the contract's errors (415 wrong content type, 413 over
//! [`ApiConfig::max_body_bytes`], 400 malformed JSON or invalid fields), and the one
//! mapping of every error to the JSON error body `{"error", "message", "details"?}`
//! ([`ApiError`]), including axum's own rejections, unknown routes (404) and wrong
//! methods (405, with `Allow`). Also
//! [`management_router`], the `/actuator/health*` and `/actuator/prometheus` routes
//! the management port serves (the API port serves them too), and `GET /openapi.json`,
//! the OpenAPI document generated from the handlers (`openapi.rs` says how to document
//! a new route).
//!
//! The service around the operations: [`Metrics`] (the Prometheus exposition, fed as
//! the scheduler's observer), the runtime configuration and its admin routes
//! (`runtime_config`, mounted when [`ApiConfig::admin_api`] is on), and admission
//! (`admission`: the global rate limit and the sync queue, in front of every
//! `:invoke` and `:enqueue`).
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
//! use scheduler::{SchedulerConfig, SchedulerParts};
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
//! let state = AppState::assemble(
//!     SchedulerParts::in_memory(Arc::new(Echo)),
//!     SchedulerConfig::default(),
//!     ApiConfig::default(),
//! );
//! state.scheduler().start_background();
//! let app = router(state);
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
//! axum::serve(listener, axum::ServiceExt::into_make_service(app)).await.unwrap();
//! # }
//! ```

mod access;
mod admission;
mod body;
mod error;
mod handlers;
mod metrics;
mod openapi;
mod runtime_config;
mod views;

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

pub use access::{ApiAuth, Need, required};
pub use admission::Rejection;
use axum::Router;
use axum::extract::{DefaultBodyLimit, Request};
use axum::http::Uri;
use axum::response::Response;
use axum::routing::{get, post};
pub use error::ApiError;
pub use metrics::{Metrics, PROMETHEUS_TEXT};
pub use runtime_config::{
    ConfigChangeError, DEFAULT_RATE_MAX_PER_SECOND, InvalidRuntimeConfig, RuntimeConfig,
};
pub use scheduler::Scheduler;
use scheduler::{SchedulerConfig, SchedulerParts};
use tower::{Layer, Service};

/// The contract's default request body limit: 6 MiB.
pub const DEFAULT_MAX_BODY_BYTES: usize = 6 * 1024 * 1024;

/// Settings of the API.
#[derive(Clone, Debug)]
pub struct ApiConfig {
    /// Request bodies over this many bytes are refused with 413.
    pub max_body_bytes: usize,
    /// Serve `/v1/admin/runtime-config` (off: those routes are 404 like any unknown).
    pub admin_api: bool,
    /// The runtime configuration to start with.
    pub runtime: RuntimeConfig,
    /// Its revision (1 for a configuration no change was ever made to).
    pub runtime_revision: u64,
    /// Where changes to it are kept.
    pub runtime_store: RuntimeConfigStore,
    /// Who may call what (`None`: authentication off, everything open).
    pub auth: Option<Arc<ApiAuth>>,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            admin_api: false,
            runtime: RuntimeConfig::default(),
            runtime_revision: 1,
            runtime_store: RuntimeConfigStore::default(),
            auth: None,
        }
    }
}

/// Where changes to the runtime configuration are kept (in memory by default).
#[derive(Clone)]
pub struct RuntimeConfigStore(pub Arc<dyn store::ConfigStore>);

impl Default for RuntimeConfigStore {
    fn default() -> Self {
        Self(Arc::new(store::MemoryConfigStore::default()))
    }
}

impl std::fmt::Debug for RuntimeConfigStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RuntimeConfigStore")
    }
}

/// What every handler shares: the scheduler, the settings, the metrics and admission.
/// Cheap to clone.
#[derive(Clone, Debug)]
pub struct AppState {
    scheduler: Scheduler,
    config: Arc<ApiConfig>,
    metrics: Arc<Metrics>,
    admission: Arc<admission::Admission>,
}

impl AppState {
    /// The scheduler built from `parts` with `scheduler_config`, observed by the API's
    /// metrics (on the scheduler's clock, so completion rates, sync waits and the rate
    /// limit share its time line), and the state over it. The one place the API and
    /// the engine are put together: the binary and every test harness call it, so the
    /// metrics can never observe a different scheduler than the one they expose.
    /// `parts.observer` is replaced. `api.runtime` becomes the runtime
    /// configuration (at `api.runtime_revision`). The scheduler's loops are not started.
    pub fn assemble(
        mut parts: SchedulerParts,
        scheduler_config: SchedulerConfig,
        api: ApiConfig,
    ) -> Self {
        let metrics = Arc::new(Metrics::with_clock(Arc::clone(&parts.clock)));
        parts.observer = Arc::clone(&metrics) as Arc<dyn scheduler::Observer>;
        let scheduler = Scheduler::new(parts, scheduler_config);
        let admission = admission::Admission::new(&api, Arc::clone(&metrics));
        Self {
            scheduler,
            config: Arc::new(api),
            metrics,
            admission: Arc::new(admission),
        }
    }

    /// The metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// How many sync invocations of `function` hold a sync-queue place right now.
    pub fn sync_queue_waiting(&self, function: &str) -> usize {
        self.admission.waiting(function)
    }

    pub(crate) fn admission(&self) -> &admission::Admission {
        &self.admission
    }

    pub(crate) fn live_config(&self) -> &runtime_config::LiveConfig {
        self.admission.live()
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

/// The whole API (everything under `/v1`, plus the actuator routes).
pub fn router(state: AppState) -> Api {
    let limit = state.config.max_body_bytes;
    let mut api = Router::new()
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
        .route(
            "/v1/functions/{name}/replicas",
            axum::routing::put(handlers::set_replicas),
        )
        .route("/v1/functions/{name}/logs", get(handlers::function_logs))
        .route("/v1/executions/{id}", get(handlers::get_execution))
        .route(
            "/v1/internal/executions/{id_action}",
            post(handlers::execution_action),
        )
        .route(
            "/v1/internal/executions/{credential}/{id_action}",
            post(handlers::signed_execution_action),
        )
        .route(
            "/v1/internal/functions/{name_action}",
            post(handlers::internal_function_action),
        )
        .route("/openapi.json", get(openapi::openapi_json));
    if state.config.admin_api {
        api = api.merge(runtime_config::routes());
    }
    let auth = state.config.auth.clone();
    finish(api.merge(actuator_routes()).with_state(state), limit, auth)
}

/// Only the actuator routes, health and metrics (for the management port).
pub fn management_router(state: AppState) -> Api {
    let auth = state.config.auth.clone();
    finish(
        actuator_routes().with_state(state),
        DEFAULT_MAX_BODY_BYTES,
        auth,
    )
}

fn actuator_routes() -> Router<AppState> {
    Router::new()
        .route("/actuator/health", get(handlers::health))
        .route("/actuator/health/liveness", get(handlers::health))
        .route("/actuator/health/readiness", get(handlers::readiness))
        .route("/actuator/prometheus", get(metrics::scrape))
}

fn finish(router: Router, limit: usize, auth: Option<Arc<ApiAuth>>) -> Api {
    let routed = router
        .fallback(handlers::not_found)
        .method_not_allowed_fallback(handlers::method_not_allowed);
    Api {
        routes: DefaultBodyLimit::max(limit).layer(routed),
        auth,
    }
}

/// The routes behind the request body limit.
type Routes = <DefaultBodyLimit as Layer<Router>>::Service;

/// An HTTP surface of the control plane ([`router`], [`management_router`]) as one
/// tower service: the routes behind the body limit, and the two rules every answer
/// obeys, applied once around the whole router: an error is the JSON error body, and a
/// 405's `Allow` names the documented resource's methods. axum adds its own `Allow`
/// (every method of the matched route, which for a `{name_action}` route mixes the
/// function's and its actions' methods) after all of the router's own layers have run,
/// so only something around the router can replace it.
///
/// Written by hand instead of as axum layers (`Router::layer`, `middleware::from_fn`)
/// because those box and clone a service per route and per request: with them, routing
/// took ~19 % of the instructions of a sync LOCAL invocation.
///
/// Serve it with `axum::serve(listener, api.into_make_service())` (`axum::ServiceExt`).
#[derive(Clone, Debug)]
pub struct Api {
    routes: Routes,
    /// Checked before routing, when authentication is on.
    auth: Option<Arc<ApiAuth>>,
}

impl Service<Request> for Api {
    type Response = Response;
    type Error = Infallible;
    type Future = ApiFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        <Routes as Service<Request>>::poll_ready(&mut self.routes, cx)
    }

    fn call(&mut self, mut request: Request) -> Self::Future {
        // Only a 405 needs the path afterwards; cloning the URI shares its bytes.
        let uri = request.uri().clone();
        let mut audit = None;
        if let Some(auth) = &self.auth {
            match auth.admit(request.method(), uri.path(), request.headers()) {
                Ok(admitted) => {
                    if let Some(principal) = admitted.principal {
                        if admitted.audited {
                            audit = Some(Audit {
                                token: Arc::clone(&principal.name),
                                method: request.method().clone(),
                            });
                        }
                        request.extensions_mut().insert(principal);
                    }
                }
                Err(refusal) => {
                    return ApiFuture {
                        routed: None,
                        refused: Some(axum::response::IntoResponse::into_response(refusal)),
                        uri,
                        audit: None,
                    };
                }
            }
        }
        ApiFuture {
            routed: Some(self.routes.call(request)),
            refused: None,
            uri,
            audit,
        }
    }
}

/// A change an `admin` token asked for, logged with its answer.
#[derive(Debug)]
struct Audit {
    token: Arc<str>,
    method: axum::http::Method,
}

/// The answer of an [`Api`] call.
pub struct ApiFuture {
    routed: Option<<Routes as Service<Request>>::Future>,
    /// The answer when the request was refused before routing (401, 403).
    refused: Option<Response>,
    uri: Uri,
    audit: Option<Audit>,
}

impl std::fmt::Debug for ApiFuture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiFuture")
            .field("uri", &self.uri)
            .finish_non_exhaustive()
    }
}

impl Future for ApiFuture {
    type Output = Result<Response, Infallible>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if let Some(refused) = self.refused.take() {
            return Poll::Ready(Ok(refused));
        }
        let Some(routed) = self.routed.as_mut() else {
            unreachable!("an ApiFuture is either refused or routed, and polled until ready once")
        };
        let Ok(response) = ready!(Pin::new(routed).poll(cx));
        let response = error::json_errors_only(response);
        if let Some(audit) = self.audit.take() {
            tracing::info!(
                target: "audit",
                token = %audit.token,
                method = %audit.method,
                path = self.uri.path(),
                status = response.status().as_u16(),
                "change requested"
            );
        }
        Poll::Ready(Ok(openapi::allow_on_405(self.uri.path(), response)))
    }
}
