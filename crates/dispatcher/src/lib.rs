//! How one attempt of an invocation reaches its function.
//!
//! Owns:
//! - `LOCAL`: [`LocalDispatcher`], the built-in echo (output = input, warm, no network);
//! - `POOL`: [`PoolDispatcher`], one `POST <endpointUrl>` per attempt over a pooled
//!   keep-alive HTTP/1.1 connection (TLS for `https://`, trusting the platform's roots
//!   and any read by [`read_pem_certificates`]) that the dispatch itself drives (no
//!   connection tasks; idle ones are closed by `Dispatch::sweep_idle`), mapping the answer to an output or to a `FUNCTION_ERROR` /
//!   `DISPATCH_ERROR` (the runtime wire contract of `docs/api.md`); the deadline
//!   (`DISPATCH_TIMEOUT`) is the scheduler's, which drops the dispatch when it runs out;
//! - [`replica_env`], what the replicas of a `DEPLOYMENT` function are given, for
//!   whoever implements the [`DeploymentProvider`](core_types::DeploymentProvider) port;
//! - [`ModeRouter`], the [`Dispatch`](core_types::Dispatch) handed to the scheduler,
//!   which picks one of the above by the function's `executionMode`.
//!
//! Must not know: queues, stores, scheduling, retries, or the HTTP server. Every call is
//! exactly one attempt; whether it is retried, how its result is recorded, and who is
//! waiting for it are the scheduler's business. This crate depends on `core-types` and
//! external crates only, and spawns no tasks.
//!
//! ```
//! use std::{collections::BTreeMap, sync::Arc};
//! use core_types::{Dispatch, DispatchRequest, ExecutionId, FunctionSpec, Payload, TraceId};
//! use dispatcher::{ModeRouter, PoolDispatcher};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let router = ModeRouter::new(PoolDispatcher::new());
//! let function = FunctionSpec::from_json(&serde_json::json!({
//!     "name": "echo", "image": "nanofaas/echo", "executionMode": "LOCAL"
//! })).unwrap();
//! let request = DispatchRequest {
//!     execution_id: ExecutionId::new("exec-1"),
//!     function: Arc::new(function),
//!     attempt: 1,
//!     input: Payload::from_json_text(r#"{"hello": "world"}"#).unwrap(),
//!     metadata: Arc::new(BTreeMap::new()),
//!     trace_id: TraceId::new("trace-1"),
//!     idempotency_key: None,
//!     callback_url: None,
//! };
//! let success = router.dispatch(request).await.unwrap();
//! assert_eq!(success.output.json_text(), r#"{"hello": "world"}"#);
//! assert!(!success.cold_start);
//! # }
//! ```
//!
//! A `POOL` function goes over HTTP (this needs a function listening):
//!
//! ```no_run
//! # use std::{collections::BTreeMap, sync::Arc};
//! # use core_types::{Dispatch, DispatchRequest, ExecutionId, FunctionSpec, Payload, TraceId};
//! use dispatcher::{ModeRouter, PoolConfig, PoolDispatcher};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let pool = PoolDispatcher::with_config(PoolConfig::default());
//! let router = ModeRouter::new(pool);
//! let function = FunctionSpec::from_json(&serde_json::json!({
//!     "name": "resize", "image": "acme/resize", "executionMode": "POOL",
//!     "endpointUrl": "http://127.0.0.1:9000/invoke", "timeoutMs": 2000
//! })).unwrap();
//! # let request = DispatchRequest {
//! #     execution_id: ExecutionId::new("exec-2"), function: Arc::new(function), attempt: 1,
//! #     input: Payload::from_json_text("42").unwrap(), metadata: Arc::new(BTreeMap::new()),
//! #     trace_id: TraceId::new("trace-2"), idempotency_key: None,
//! #     callback_url: Some(Arc::from("http://127.0.0.1:8080/v1/internal/executions")),
//! # };
//! match router.dispatch(request).await {
//!     Ok(success) => println!("output {:?}, cold start {}", success.output, success.cold_start),
//!     Err(error) => println!("{}: {}", error.code, error.message),
//! }
//! # }
//! ```

mod connections;
mod local;
mod pool;
mod provider;
mod router;
mod tls;

pub use local::LocalDispatcher;
pub use pool::{DEFAULT_MAX_RESPONSE_BYTES, PoolConfig, PoolDispatcher};
pub use provider::replica_env;
pub use router::ModeRouter;
pub use rustls_pki_types::CertificateDer;
pub use tls::{CertificateFileError, read_pem_certificates};
