//! The `process` deployment provider: runs the replicas of `DEPLOYMENT` functions as
//! local processes, and the commands of one-shot (`STDIO`, `FILE`) functions once per
//! invocation.
//!
//! Owns: starting a function's `command` (argv, no shell) in its own process group with
//! the replica environment, readiness (`GET /health`), restarting replicas that exit or
//! never get ready (exponential backoff, a crash loop reported in the function's
//! status), stopping them (SIGTERM, then SIGKILL after a grace), the ring of what they
//! wrote, and dispatching to the ready replicas (least in flight first). Nothing it
//! starts outlives the control plane: every child leads its own group, killed with it
//! when its owner lets go, and the kernel kills it if the control plane dies.
//!
//! Must not know: queues, records or stores (the scheduler keeps the desired count and
//! decides scaling), or HTTP routes. It spawns no task: its supervision runs in tasks
//! the scheduler owns, handed over through [`core_types::TaskOwner`].

mod child;
mod logs;
mod oneshot;
