//! The engine's moving part: takes queued invocations to their functions and brings
//! every execution to its end.
//!
//! Owns: [`Scheduler::tick_once`] and its JoinHandle contract (the handle resolves only
//! after the execution's record is updated and its slot released), the background loop
//! (event-driven through the queues' readiness signal, round-robin across functions),
//! the one completion path ([`Scheduler::complete`]) shared by dispatch results, runtime
//! callbacks, timeouts, function removal and shutdown, retries, sync waiters, the
//! eviction sweep, and every long-lived task (nothing else in the workspace spawns).
//!
//! Must not know: HTTP, how a function is reached (it calls the
//! [`Dispatch`](core_types::Dispatch) port), or how records are stored (it calls the
//! `store` ports).
//!
//! ```
//! use std::sync::Arc;
//! use core_types::{Dispatch, DispatchOutcome, DispatchRequest, DispatchSuccess, ExecutionState, FunctionSpec, InvocationRequest, Payload};
//! use scheduler::{Scheduler, SchedulerParts, SubmitOptions};
//!
//! struct Echo;
//! #[async_trait::async_trait]
//! impl Dispatch for Echo {
//!     async fn dispatch(&self, request: DispatchRequest) -> DispatchOutcome {
//!         Ok(DispatchSuccess::warm(request.input))
//!     }
//! }
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let scheduler = Scheduler::new(SchedulerParts::in_memory(Arc::new(Echo)), Default::default());
//! let spec = FunctionSpec::from_json(&serde_json::json!({"name": "echo", "image": "i", "executionMode": "LOCAL"})).unwrap();
//! scheduler.register_function(spec).await.unwrap();
//!
//! let name = core_types::FunctionName::parse("echo").unwrap();
//! let request = InvocationRequest { input: Payload::from_value(&serde_json::json!({"hi": 1})), metadata: Default::default() };
//! let submitted = scheduler.submit(&name, request, SubmitOptions::default()).await.unwrap();
//!
//! // Manual driving: the handle resolves once the execution's record is final.
//! let handle = scheduler.tick_once(&name).await.unwrap().expect("work was queued");
//! handle.await.unwrap();
//! let record = scheduler.execution(&submitted.execution_id).await.unwrap().expect("a record");
//! assert_eq!(record.state, ExecutionState::Success);
//! assert_eq!(record.output.unwrap().to_value(), serde_json::json!({"hi": 1}));
//! # });
//! ```

mod backoff;
mod completion;
mod events;
mod ids;
mod scaling;
mod scheduler;
#[cfg(feature = "testing")]
pub mod testing;

pub use backoff::RetryBackoff;
pub use completion::{Completion, CompletionOutcome, CompletionSource, IgnoredBecause};
pub use events::{NoObserver, Observer, SchedulerEvent};
pub use ids::UuidV7Ids;
pub use scheduler::{
    AutoscalingConfig, CALLBACK_CREDENTIAL_SLACK, CallbackSigning, CompleteError, LogsError,
    MemoryLimits, QueueLoad, QueueSnapshot, RegisterError, RemoveError, ReplicaCounts,
    ReplicasError, Restored, Scheduler, SchedulerConfig, SchedulerParts, SubmitError,
    SubmitOptions, Submitted, TickError, WaitError, Waiter,
};
#[cfg(feature = "testing")]
pub use scheduler::{LiveExecution, LivePhase};
