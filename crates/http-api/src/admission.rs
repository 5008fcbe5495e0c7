//! Admission of `:invoke` and `:enqueue` (api.md "Admission and rate limits"): the
//! global rate limit, and the sync queue that keeps sync callers from waiting on a line
//! they cannot get through.
//!
//! It runs after the request is validated and the function found, and before
//! `submit`: a refused request leaves no execution and no idempotency claim.
//!
//! - **Rate limit.** `rateMaxPerSecond` requests per second over `:invoke` and
//!   `:enqueue` together (GCRA, burst of the same size), on the control plane's clock.
//!   Over it: 429 `RATE_LIMITED`, `Retry-After` the whole seconds until a request fits.
//! - **Sync queue** (`syncQueueEnabled`). Every sync invocation (replays of an earlier
//!   one included: each is a caller waiting) takes a place in its function's sync queue
//!   and gives it back exactly once, whatever path its request ends on, when its
//!   [`Admitted`] guard drops (answered, timed out, refused further down, or the client
//!   gone and the handler dropped). While it is in force, `syncQueueMaxQueueWait` caps
//!   how long the invocation may stay queued before its dispatch: still queued then, it
//!   ends as `timeout` with `QUEUE_TIMEOUT`.
//! - **Sync-queue admission** (`syncQueueAdmissionEnabled` too). A sync invocation is
//!   refused with 429 `SYNC_QUEUE_REJECTED` and `X-Queue-Reject-Reason`:
//!   `depth` when the function's `queueSize` sync callers are already waiting (the
//!   most its queue could hold anyway), or `est_wait` when the callers ahead divided
//!   by the function's observed completion rate exceed `syncQueueMaxEstimatedWait`.
//!   Until a rate has been observed (a full second after the function's first
//!   completion) only the depth rule applies.
//!
//! `Retry-After` of a sync-queue rejection: for `est_wait` the seconds until the line
//! is short enough (estimated wait minus the allowed one), for `depth` the seconds until
//! one place frees (one completion), each at least `syncQueueRetryAfterSeconds` and at
//! most `syncQueueMaxQueueWait` (no admitted caller stays queued longer than that). A
//! full queue (429 `QUEUE_FULL`) gets the seconds until one completion, between 1 and
//! the function's `timeoutMs` (a running dispatch ends by then).

use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use core_types::{
    Clock, ErrorCode, ErrorInfo, ExecutionState, FunctionName, FunctionSpec, Timestamp,
};
use dashmap::DashMap;
use governor::clock::Clock as GovernorClock;
use governor::middleware::NoOpMiddleware;
use governor::nanos::Nanos;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use scheduler::{Completion, CompletionSource, Scheduler, SubmitError, WaitError, Waiter};
use store::ExecutionRecord;

use crate::ApiError;
use crate::metrics::Metrics;
use crate::runtime_config::{Applied, LiveConfig, RuntimeConfig};

/// Why a request was turned away at the door (429). Each carries its `Retry-After`.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum Rejection {
    /// Over the global rate limit.
    #[error("over the rate limit of {limit} invocations per second")]
    RateLimited {
        /// `rateMaxPerSecond` in force.
        limit: u32,
        /// Seconds until a request fits.
        retry_after: u64,
    },
    /// Too many sync invocations of the function are waiting.
    #[error("{waiting} sync invocations of {function} are already waiting (at most {limit})")]
    QueueDepth {
        /// The function.
        function: FunctionName,
        /// Sync callers waiting.
        waiting: usize,
        /// The depth limit (its `queueSize`).
        limit: usize,
        /// Seconds until a place is likely free.
        retry_after: u64,
    },
    /// The estimated wait is over `syncQueueMaxEstimatedWait`.
    #[error(
        "{ahead} sync invocations of {function} are ahead at {per_second:.2} completions/s: \
         an estimated wait of {estimated_seconds:.1} s, over the allowed {allowed_seconds:.1} s"
    )]
    EstimatedWait {
        /// The function.
        function: FunctionName,
        /// Sync callers ahead.
        ahead: usize,
        /// The observed completion rate.
        per_second: f64,
        /// `ahead / per_second`.
        estimated_seconds: f64,
        /// `syncQueueMaxEstimatedWait`.
        allowed_seconds: f64,
        /// Seconds until the line is likely short enough.
        retry_after: u64,
    },
    /// The inputs of unfinished executions fill the control plane's queued-input budget
    /// (refused by the scheduler after admission).
    #[error(
        "the inputs of queued and running executions already hold the budget of {budget_bytes} bytes"
    )]
    InputsFull {
        /// The function asked for.
        function: FunctionName,
        /// The budget.
        budget_bytes: usize,
        /// Seconds until room is likely.
        retry_after: u64,
    },
    /// The function's queue is full (refused by the scheduler after admission).
    #[error("the queue of {function} is full ({capacity} queued)")]
    QueueFull {
        /// The function.
        function: FunctionName,
        /// Its queue size.
        capacity: usize,
        /// Seconds until a place is likely free.
        retry_after: u64,
    },
}

impl Rejection {
    /// The wire code.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::RateLimited { .. } => ErrorCode::RateLimited,
            Self::QueueDepth { .. } | Self::EstimatedWait { .. } => ErrorCode::SyncQueueRejected,
            Self::QueueFull { .. } | Self::InputsFull { .. } => ErrorCode::QueueFull,
        }
    }

    /// The `Retry-After` seconds.
    pub fn retry_after(&self) -> u64 {
        match self {
            Self::RateLimited { retry_after, .. }
            | Self::QueueDepth { retry_after, .. }
            | Self::EstimatedWait { retry_after, .. }
            | Self::QueueFull { retry_after, .. }
            | Self::InputsFull { retry_after, .. } => *retry_after,
        }
    }

    /// The `X-Queue-Reject-Reason` of a sync-queue rejection.
    pub fn queue_reject_reason(&self) -> Option<&'static str> {
        match self {
            Self::QueueDepth { .. } => Some("depth"),
            Self::EstimatedWait { .. } => Some("est_wait"),
            Self::RateLimited { .. } | Self::QueueFull { .. } | Self::InputsFull { .. } => None,
        }
    }
}

/// The global rate limit, on the control plane's clock (so that tests drive it with
/// theirs). A wall clock stepping back only makes it stricter for that moment.
#[derive(Debug)]
pub(crate) struct RateLimit {
    limiter: RateLimiter<NotKeyed, InMemoryState, LimiterClock, NoOpMiddleware<Nanos>>,
    clock: LimiterClock,
    per_second: u32,
}

impl RateLimit {
    /// `per_second` requests per second, bursts of as many; 0 is taken as 1 (the
    /// configuration refuses it before it gets here).
    pub(crate) fn new(per_second: u32, clock: &Arc<dyn Clock>) -> Self {
        let burst = NonZeroU32::new(per_second).unwrap_or(NonZeroU32::MIN);
        let clock = LimiterClock(Arc::clone(clock));
        Self {
            limiter: RateLimiter::direct_with_clock(Quota::per_second(burst), clock.clone()),
            clock,
            per_second: burst.get(),
        }
    }

    fn check(&self) -> Result<(), Rejection> {
        self.limiter.check().map_err(|not_until| {
            let wait = not_until.wait_time_from(self.clock.now());
            Rejection::RateLimited {
                limit: self.per_second,
                retry_after: whole_seconds(wait.as_secs_f64(), 1, u64::MAX),
            }
        })
    }
}

/// governor's view of a [`Clock`].
#[derive(Clone)]
struct LimiterClock(Arc<dyn Clock>);

impl std::fmt::Debug for LimiterClock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LimiterClock")
    }
}

impl GovernorClock for LimiterClock {
    type Instant = Nanos;

    fn now(&self) -> Nanos {
        Nanos::from(self.0.now().as_millis().saturating_mul(1_000_000))
    }
}

/// The door: the configuration in force and every function's sync queue.
#[derive(Debug)]
pub(crate) struct Admission {
    live: LiveConfig,
    metrics: Arc<Metrics>,
    waiting: DashMap<FunctionName, Arc<AtomicUsize>>,
}

impl Admission {
    pub(crate) fn new(api: &crate::ApiConfig, metrics: Arc<Metrics>) -> Self {
        Self {
            live: LiveConfig::new(
                api.runtime.clone(),
                api.runtime_revision,
                Arc::clone(metrics.clock()),
                Arc::clone(&api.runtime_store.0),
            ),
            metrics,
            waiting: DashMap::new(),
        }
    }

    pub(crate) fn live(&self) -> &LiveConfig {
        &self.live
    }

    /// Sync invocations of `function` holding a place now.
    pub(crate) fn waiting(&self, function: &str) -> usize {
        self.waiting
            .get(function)
            .map_or(0, |count| count.load(Ordering::Acquire))
    }

    /// Lets a request of `function` in, or says why not. Keep the guard until the
    /// request's answer is decided: dropping it gives the sync-queue place back.
    pub(crate) fn admit(
        &self,
        function: &Arc<FunctionSpec>,
        sync: bool,
    ) -> Result<Admitted, Rejection> {
        let applied = self.live.current();
        applied.rate_limit.check()?;
        let place = if sync && applied.config.sync_queue_enabled {
            Some(self.take_place(function, &applied.config)?)
        } else {
            None
        };
        Ok(Admitted {
            applied,
            metrics: Arc::clone(&self.metrics),
            function: Arc::clone(function),
            place,
        })
    }

    fn take_place(
        &self,
        function: &FunctionSpec,
        config: &RuntimeConfig,
    ) -> Result<Place, Rejection> {
        let name = &function.name;
        let waiting = self.counter(name);
        if config.sync_queue_admission_enabled {
            let limit = function.queue_size as usize;
            let refused = self.check_estimate(function, config, waiting.load(Ordering::Acquire));
            let reserved = refused.map_or_else(
                || {
                    waiting
                        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                            (n < limit).then_some(n + 1)
                        })
                        .map_err(|full| self.depth_rejection(function, config, full))
                },
                Err,
            );
            if let Err(rejection) = reserved {
                self.metrics.sync_rejected(name);
                tracing::debug!(function = %name, %rejection, "sync invocation refused");
                return Err(rejection);
            }
        } else {
            waiting.fetch_add(1, Ordering::AcqRel);
        }
        self.metrics.sync_admitted(name);
        Ok(Place {
            waiting,
            metrics: Arc::clone(&self.metrics),
            function: function.name.clone(),
            since: self.metrics.now(),
        })
    }

    /// `Some` when the wait behind `ahead` callers is estimated over the allowed one.
    /// A line already at the depth limit is left to the depth rule.
    fn check_estimate(
        &self,
        function: &FunctionSpec,
        config: &RuntimeConfig,
        ahead: usize,
    ) -> Option<Rejection> {
        if ahead >= function.queue_size as usize {
            return None;
        }
        let per_second = self
            .metrics
            .completions_per_second(function.name.as_str())?;
        let estimated_seconds = estimated_wait(ahead, per_second);
        let allowed_seconds = config.sync_queue_max_estimated_wait.as_secs_f64();
        if estimated_seconds <= allowed_seconds {
            return None;
        }
        let (floor, ceiling) = sync_retry_bounds(config);
        Some(Rejection::EstimatedWait {
            function: function.name.clone(),
            ahead,
            per_second,
            estimated_seconds,
            allowed_seconds,
            retry_after: whole_seconds(estimated_seconds - allowed_seconds, floor, ceiling),
        })
    }

    fn depth_rejection(
        &self,
        function: &FunctionSpec,
        config: &RuntimeConfig,
        waiting: usize,
    ) -> Rejection {
        let (floor, ceiling) = sync_retry_bounds(config);
        let one_completion = self
            .metrics
            .completions_per_second(function.name.as_str())
            .map_or(0.0, |per_second| estimated_wait(1, per_second));
        Rejection::QueueDepth {
            function: function.name.clone(),
            waiting,
            limit: function.queue_size as usize,
            retry_after: whole_seconds(one_completion, floor, ceiling),
        }
    }

    fn counter(&self, function: &FunctionName) -> Arc<AtomicUsize> {
        if let Some(count) = self.waiting.get(function.as_str()) {
            return Arc::clone(&count);
        }
        Arc::clone(&self.waiting.entry(function.clone()).or_default())
    }
}

/// An admitted request. Dropping it gives its sync-queue place back (if it took one)
/// and records how long the sync caller waited.
#[derive(Debug)]
pub(crate) struct Admitted {
    applied: Arc<Applied>,
    metrics: Arc<Metrics>,
    function: Arc<FunctionSpec>,
    place: Option<Place>,
}

impl Admitted {
    /// The API's answer to a submission the scheduler refused; a full queue's (or
    /// input budget's) `Retry-After` comes from the function's completion rate.
    pub(crate) fn refused(&self, error: SubmitError) -> ApiError {
        let one_completion = |function: &FunctionName| {
            let wait = self
                .metrics
                .completions_per_second(function.as_str())
                .map_or(0.0, |per_second| estimated_wait(1, per_second));
            whole_seconds(wait, 1, self.function.timeout_ms.div_ceil(1_000))
        };
        match error {
            SubmitError::QueueFull { function, capacity } => Rejection::QueueFull {
                retry_after: one_completion(&function),
                function,
                capacity,
            }
            .into(),
            SubmitError::InputsFull {
                function,
                budget_bytes,
            } => Rejection::InputsFull {
                retry_after: one_completion(&function),
                function,
                budget_bytes,
            }
            .into(),
            other => other.into(),
        }
    }

    /// Waits for the execution's final record for at most `limit`. With the sync queue
    /// in force, an execution still queued (not dispatched) once `syncQueueMaxQueueWait`
    /// has passed is ended as `timeout` with `QUEUE_TIMEOUT`; one dispatched by then
    /// keeps its attempt (the scheduler decides that under the execution's lock).
    ///
    /// A `replayed` caller shares an execution whose first caller owns its deadlines:
    /// it only stops waiting, and gets the execution as it stands.
    pub(crate) async fn wait_for_result(
        &self,
        scheduler: &Scheduler,
        waiter: &mut Waiter,
        limit: Duration,
        replayed: bool,
    ) -> Result<ExecutionRecord, WaitError> {
        if replayed {
            return scheduler.wait_at_most(waiter, limit).await;
        }
        let cap = self.applied.config.sync_queue_max_queue_wait;
        if self.place.is_none() || cap >= limit {
            return scheduler.wait(waiter, Some(limit)).await;
        }
        if let Ok(finished) = tokio::time::timeout(cap, scheduler.wait(waiter, Some(limit))).await {
            return finished;
        }
        let error = ErrorInfo::new(
            ErrorCode::QueueTimeout,
            format!(
                "not dispatched within the sync queue's maximum wait of {} ms",
                cap.as_millis()
            ),
        );
        let completion = Completion::Failure {
            state: ExecutionState::Timeout,
            error,
        };
        // Applied only if it is still queued; whatever the outcome, the wait below
        // gets the final record.
        let _ = scheduler
            .complete(
                waiter.execution_id(),
                None,
                completion,
                CompletionSource::QueueTimeout,
            )
            .await;
        scheduler.wait(waiter, Some(limit - cap)).await
    }
}

/// A sync caller's place in its function's sync queue.
#[derive(Debug)]
struct Place {
    waiting: Arc<AtomicUsize>,
    metrics: Arc<Metrics>,
    function: FunctionName,
    since: Timestamp,
}

impl Drop for Place {
    fn drop(&mut self) {
        self.waiting.fetch_sub(1, Ordering::AcqRel);
        self.metrics.sync_waited(&self.function, self.since);
    }
}

/// Seconds until `ahead` callers are through at `per_second`; unbounded when nothing
/// completes.
fn estimated_wait(ahead: usize, per_second: f64) -> f64 {
    if ahead == 0 {
        0.0
    } else if per_second > 0.0 {
        // Exact: queue depths are far below 2^53.
        ahead as f64 / per_second
    } else {
        f64::INFINITY
    }
}

/// `syncQueueRetryAfterSeconds` up to `syncQueueMaxQueueWait`.
fn sync_retry_bounds(config: &RuntimeConfig) -> (u64, u64) {
    let floor = u64::from(config.sync_queue_retry_after_seconds);
    let ceiling = config.sync_queue_max_queue_wait.as_secs_f64().ceil();
    (floor, whole_seconds(ceiling, floor, u64::MAX))
}

/// `seconds` rounded up to whole seconds within `floor..=ceiling` (`ceiling` raised to
/// `floor` if below it; an unbounded estimate is `ceiling`).
fn whole_seconds(seconds: f64, floor: u64, ceiling: u64) -> u64 {
    let ceiling = ceiling.max(floor);
    if seconds.is_nan() || seconds >= ceiling as f64 {
        return ceiling;
    }
    // In range and finite here: the cast is exact after `ceil`.
    let rounded = seconds.ceil().max(0.0) as u64;
    rounded.clamp(floor, ceiling)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wait_is_the_line_over_the_completion_rate() {
        assert_eq!(estimated_wait(0, 0.0), 0.0);
        assert_eq!(estimated_wait(3, 2.0), 1.5);
        assert_eq!(estimated_wait(1, 0.0), f64::INFINITY);
    }

    #[test]
    fn retry_after_is_whole_seconds_within_its_bounds() {
        assert_eq!(whole_seconds(0.2, 1, 10), 1);
        assert_eq!(whole_seconds(2.1, 1, 10), 3);
        assert_eq!(whole_seconds(0.0, 2, 10), 2);
        assert_eq!(whole_seconds(f64::INFINITY, 2, 10), 10);
        assert_eq!(whole_seconds(50.0, 2, 10), 10);
        assert_eq!(whole_seconds(50.0, 20, 10), 20);
    }

    #[test]
    fn sync_rejections_wait_at_least_the_configured_seconds_and_at_most_the_queue_wait() {
        let config = RuntimeConfig {
            sync_queue_retry_after_seconds: 2,
            sync_queue_max_queue_wait: Duration::from_millis(4_500),
            ..RuntimeConfig::default()
        };
        assert_eq!(sync_retry_bounds(&config), (2, 5));
    }
}
