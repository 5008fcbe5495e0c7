//! The simulated world: a clock on tokio's paused time, a dispatcher answering from the
//! seed, and a store counting the writes it refuses.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use core_types::{
    Clock, Dispatch, DispatchOutcome, DispatchRequest, DispatchSuccess, ErrorCode, ErrorInfo,
    Timestamp,
};
use store::ApplyError;

use super::SCRIPTED_PANIC;
use super::watched_store::{WatchedStore, WriteHook};

/// Record times follow tokio's (paused) clock, so sleeps, timeouts and backoffs agree.
pub(super) struct SimClock {
    pub(super) epoch: tokio::time::Instant,
}

impl Clock for SimClock {
    fn now(&self) -> Timestamp {
        let elapsed = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        Timestamp::from_millis(1_767_225_600_000 + elapsed)
    }
}

/// Answers drawn from the seed: echo, fail, hang, answer late, or panic.
pub(super) struct SimDispatch {
    pub(super) rng: Mutex<fastrand::Rng>,
}

#[async_trait]
impl Dispatch for SimDispatch {
    async fn dispatch(&self, request: DispatchRequest) -> DispatchOutcome {
        let (roll, delay) = {
            let mut rng = self.rng.lock().unwrap();
            (rng.u32(0..100), rng.u64(1..400))
        };
        let failure = || Err(ErrorInfo::new(ErrorCode::FunctionError, "sim: failed"));
        match roll {
            0..45 => Ok(DispatchSuccess::warm(request.input)),
            45..62 => failure(),
            62..72 => std::future::pending().await,
            72..86 => {
                tokio::time::sleep(Duration::from_millis(delay)).await;
                Ok(DispatchSuccess::warm(request.input))
            }
            86..96 => {
                tokio::time::sleep(Duration::from_millis(delay)).await;
                failure()
            }
            _ => panic!("{SCRIPTED_PANIC}"),
        }
    }
}

/// Counts the writes the store refuses for a reason other than a newer decision having
/// landed first: each such refusal means decisions landed out of order.
#[derive(Default)]
pub(super) struct CountsRefusals {
    pub(super) refused: AtomicU64,
}

impl WriteHook for CountsRefusals {
    fn after_apply(&self, applied: &Result<(), ApplyError>) {
        if matches!(
            applied,
            Err(ApplyError::InvalidTransition(_) | ApplyError::Unknown(_))
        ) {
            self.refused.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The simulation's store.
pub(super) type CountingStore = WatchedStore<CountsRefusals>;
