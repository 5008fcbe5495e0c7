//! What the control plane remembers: execution records, idempotency claims and the
//! function registry.
//!
//! Owns: the [`ExecutionStore`], [`IdempotencyStore`] and [`FunctionRegistry`] ports
//! and their in-memory backends. The ports are async and speak in whole operations
//! (insert, a versioned [`RecordChange`], claim/publish/abandon), so a durable embedded
//! backend (SQLite) or a shared one (PostgreSQL: conditional `UPDATE ... WHERE version <
//! $v`, `INSERT ... ON CONFLICT` claims) can be added behind them without the scheduler
//! changing.
//!
//! Must not know: queues, dispatching, HTTP, or when things happen (callers pass `now`).
//!
//! ```
//! use core_types::{DurationMs, ExecutionId, ExecutionState, FunctionName, Timestamp};
//! use store::{ChangeKind, ExecutionRecord, ExecutionStore, MemoryExecutionStore, RecordChange};
//!
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! let store = MemoryExecutionStore::new(DurationMs(60_000));
//! let id = ExecutionId::new("e-1");
//! let t0 = Timestamp::from_millis(1_000);
//! store.insert(ExecutionRecord::queued(id.clone(), FunctionName::parse("echo").unwrap(), t0)).await.unwrap();
//! let running = store
//!     .apply(&id, RecordChange { version: 1, kind: ChangeKind::Started { attempt: 1, at: t0 } })
//!     .await
//!     .unwrap();
//! assert_eq!(running.state, ExecutionState::Running);
//! # });
//! ```

mod executions;
mod idempotency;
mod registry;

pub use executions::{
    ApplyError, ChangeKind, ExecutionRecord, ExecutionStore, InsertError, MemoryExecutionStore,
    RecordChange, StoreStats,
};
pub use idempotency::{
    ClaimOutcome, ClaimToken, Fingerprint, IdempotencyStore, MemoryIdempotencyStore,
};
pub use registry::{
    AlreadyRegistered, FunctionRegistry, MemoryFunctionRegistry, RegisteredFunction,
};
