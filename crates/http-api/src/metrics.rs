//! The metrics of api.md's "Metrics" section, served as Prometheus text 0.0.4 on
//! `GET /actuator/prometheus`.
//!
//! Each [`Metrics`] owns its own `prometheus-client` [`Registry`]: several control planes
//! can live in one process (tests do) without sharing a series. It is fed twice: as the
//! scheduler's [`Observer`] (enqueues, dispatches, retries, finished executions), and by
//! admission (the sync-queue counters and waits). The two gauges are not fed at all:
//! they are read from the scheduler at scrape time, so they are always true and a
//! removed function's series disappear with it.
//!
//! It also keeps each function's observed completion rate, which sync-queue admission
//! turns into an estimated wait: the observer already sees every finished execution, so
//! nothing else has to.

use std::sync::{Arc, Mutex, PoisonError};

use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use core_types::{Clock, ExecutionState, FunctionName, Timestamp};
use dashmap::DashMap;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode_registry;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use scheduler::{Observer, Scheduler, SchedulerEvent};

use crate::{ApiError, AppState};

/// The content type of the Prometheus text exposition format 0.0.4.
pub const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Millisecond buckets from a fast local echo (1 ms) to the longest function timeout
/// (300 s).
const MS_BUCKETS: [f64; 16] = [
    1.0, 2.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1_000.0, 2_500.0, 5_000.0, 10_000.0,
    30_000.0, 60_000.0, 300_000.0,
];

/// The one label every series carries.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FunctionLabel {
    function: String,
}

type HistogramFamily = Family<FunctionLabel, Histogram, fn() -> Histogram>;

fn ms_histogram() -> Histogram {
    Histogram::new(MS_BUCKETS)
}

/// Every registered family.
#[derive(Debug)]
struct Families {
    enqueue: Family<FunctionLabel, Counter>,
    dispatch: Family<FunctionLabel, Counter>,
    success: Family<FunctionLabel, Counter>,
    error: Family<FunctionLabel, Counter>,
    retry: Family<FunctionLabel, Counter>,
    timeout: Family<FunctionLabel, Counter>,
    cold_start: Family<FunctionLabel, Counter>,
    warm_start: Family<FunctionLabel, Counter>,
    sync_admitted: Family<FunctionLabel, Counter>,
    sync_rejected: Family<FunctionLabel, Counter>,
    latency: HistogramFamily,
    queue_wait: HistogramFamily,
    e2e_latency: HistogramFamily,
    init_duration: HistogramFamily,
    sync_wait: HistogramFamily,
    retry_backoff: HistogramFamily,
}

impl Families {
    fn new() -> Self {
        let histograms = || HistogramFamily::new_with_constructor(ms_histogram);
        Self {
            enqueue: Family::default(),
            dispatch: Family::default(),
            success: Family::default(),
            error: Family::default(),
            retry: Family::default(),
            timeout: Family::default(),
            cold_start: Family::default(),
            warm_start: Family::default(),
            sync_admitted: Family::default(),
            sync_rejected: Family::default(),
            latency: histograms(),
            queue_wait: histograms(),
            e2e_latency: histograms(),
            init_duration: histograms(),
            sync_wait: histograms(),
            retry_backoff: histograms(),
        }
    }

    /// Counters are registered without `_total`: prometheus-client appends it to the
    /// samples itself (and refuses a name that already has it).
    fn register(&self, registry: &mut Registry) {
        let counters = [
            (
                "function_enqueue",
                "Invocations accepted and queued",
                &self.enqueue,
            ),
            (
                "function_dispatch",
                "Attempts dispatched to the function",
                &self.dispatch,
            ),
            (
                "function_success",
                "Executions that ended in success",
                &self.success,
            ),
            (
                "function_error",
                "Executions that ended in error",
                &self.error,
            ),
            (
                "function_retry",
                "Failed attempts queued again",
                &self.retry,
            ),
            (
                "function_timeout",
                "Executions that ended in timeout",
                &self.timeout,
            ),
            (
                "function_cold_start",
                "Successful executions whose runtime reported a cold start",
                &self.cold_start,
            ),
            (
                "function_warm_start",
                "Successful executions whose runtime was already warm",
                &self.warm_start,
            ),
            (
                "sync_queue_admitted",
                "Sync invocations admitted to the sync queue",
                &self.sync_admitted,
            ),
            (
                "sync_queue_rejected",
                "Sync invocations refused by sync-queue admission",
                &self.sync_rejected,
            ),
        ];
        for (name, help, family) in counters {
            registry.register(name, help, family.clone());
        }
        let histograms = [
            (
                "function_latency_ms",
                "Milliseconds from the start of an execution's last attempt to its end",
                &self.latency,
            ),
            (
                "function_queue_wait_ms",
                "Milliseconds an attempt waited from enqueue to dispatch",
                &self.queue_wait,
            ),
            (
                "function_e2e_latency_ms",
                "Milliseconds from an execution's creation to its end",
                &self.e2e_latency,
            ),
            (
                "function_init_duration_ms",
                "Runtime init time reported with a cold start, in milliseconds",
                &self.init_duration,
            ),
            (
                "sync_queue_wait_ms",
                "Milliseconds a sync caller admitted to the sync queue waited for its answer",
                &self.sync_wait,
            ),
            (
                "function_retry_backoff_ms",
                "Milliseconds a failed attempt's retry waited before it could be dispatched",
                &self.retry_backoff,
            ),
        ];
        for (name, help, family) in histograms {
            registry.register(name, help, family.clone());
        }
    }
}

/// One function's series, looked up once: the hot path then finds them by name without
/// building a label.
#[derive(Debug)]
struct FunctionSeries {
    enqueue: Counter,
    dispatch: Counter,
    success: Counter,
    error: Counter,
    retry: Counter,
    timeout: Counter,
    cold_start: Counter,
    warm_start: Counter,
    sync_admitted: Counter,
    sync_rejected: Counter,
    latency: Histogram,
    queue_wait: Histogram,
    e2e_latency: Histogram,
    init_duration: Histogram,
    sync_wait: Histogram,
    retry_backoff: Histogram,
    throughput: Mutex<Throughput>,
}

impl FunctionSeries {
    fn new(families: &Families, function: &FunctionName) -> Self {
        let label = FunctionLabel {
            function: function.as_str().to_owned(),
        };
        let counter =
            |family: &Family<FunctionLabel, Counter>| family.get_or_create(&label).clone();
        let histogram = |family: &HistogramFamily| family.get_or_create(&label).clone();
        Self {
            enqueue: counter(&families.enqueue),
            dispatch: counter(&families.dispatch),
            success: counter(&families.success),
            error: counter(&families.error),
            retry: counter(&families.retry),
            timeout: counter(&families.timeout),
            cold_start: counter(&families.cold_start),
            warm_start: counter(&families.warm_start),
            sync_admitted: counter(&families.sync_admitted),
            sync_rejected: counter(&families.sync_rejected),
            latency: histogram(&families.latency),
            queue_wait: histogram(&families.queue_wait),
            e2e_latency: histogram(&families.e2e_latency),
            init_duration: histogram(&families.init_duration),
            sync_wait: histogram(&families.sync_wait),
            retry_backoff: histogram(&families.retry_backoff),
            throughput: Mutex::new(Throughput::default()),
        }
    }
}

/// The control plane's metrics: the scheduler's observer, and what
/// `/actuator/prometheus` exposes. [`AppState::assemble`](crate::AppState::assemble) makes
/// them the observer of the scheduler it builds.
pub struct Metrics {
    clock: Arc<dyn Clock>,
    registry: Registry,
    families: Families,
    functions: DashMap<FunctionName, Arc<FunctionSeries>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics")
            .field("functions", &self.functions.len())
            .finish_non_exhaustive()
    }
}

impl Metrics {
    /// Metrics measuring completion rates, sync waits and the rate limit on `clock`;
    /// given the scheduler's clock so that all of them share one time line.
    pub(crate) fn with_clock(clock: Arc<dyn Clock>) -> Self {
        let families = Families::new();
        let mut registry = Registry::default();
        families.register(&mut registry);
        Self {
            clock,
            registry,
            families,
            functions: DashMap::new(),
        }
    }

    /// The clock admission reads too.
    pub(crate) fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    pub(crate) fn now(&self) -> Timestamp {
        self.clock.now()
    }

    fn series(&self, function: &FunctionName) -> Arc<FunctionSeries> {
        if let Some(series) = self.functions.get(function.as_str()) {
            return Arc::clone(&series);
        }
        let series = self
            .functions
            .entry(function.clone())
            .or_insert_with(|| Arc::new(FunctionSeries::new(&self.families, function)));
        Arc::clone(&series)
    }

    /// Completions per second of `function`, smoothed; `None` until a first full
    /// measuring window has passed since its first completion.
    pub(crate) fn completions_per_second(&self, function: &str) -> Option<f64> {
        let series = self.functions.get(function).map(|s| Arc::clone(&s))?;
        let now = self.now().as_millis();
        lock(&series.throughput).per_second(now)
    }

    pub(crate) fn sync_admitted(&self, function: &FunctionName) {
        self.series(function).sync_admitted.inc();
    }

    pub(crate) fn sync_rejected(&self, function: &FunctionName) {
        self.series(function).sync_rejected.inc();
    }

    pub(crate) fn sync_waited(&self, function: &FunctionName, since: Timestamp) {
        let waited = self.now().since(since);
        self.series(function).sync_wait.observe(ms(waited.0));
    }

    /// The exposition: the registry, then the gauges read from `scheduler` now.
    pub async fn render(&self, scheduler: &Scheduler) -> String {
        let depth = Family::<FunctionLabel, Gauge>::default();
        let in_flight = Family::<FunctionLabel, Gauge>::default();
        let desired = Family::<FunctionLabel, Gauge>::default();
        let ready = Family::<FunctionLabel, Gauge>::default();
        let restarts = Family::<FunctionLabel, Counter>::default();
        for function in scheduler.functions() {
            let name = function.spec.name.as_str();
            // Counters only: no lock taken, no id copied.
            let Some(queue) = scheduler.queue_load(name) else {
                continue; // removed since the listing
            };
            let label = FunctionLabel {
                function: name.to_owned(),
            };
            depth
                .get_or_create(&label)
                .set(i64::try_from(queue.depth).unwrap_or(i64::MAX));
            in_flight
                .get_or_create(&label)
                .set(i64::try_from(queue.in_flight).unwrap_or(i64::MAX));
            if let Some(replicas) = scheduler.replicas(name) {
                desired
                    .get_or_create(&label)
                    .set(i64::from(replicas.desired));
                ready.get_or_create(&label).set(i64::from(replicas.ready));
                let status = scheduler.deployment_status(&function.spec.name);
                restarts
                    .get_or_create(&label)
                    .inc_by(status.map_or(0, |status| status.restarts));
            }
        }
        let mut gauges = Registry::default();
        gauges.register(
            "function_queue_depth",
            "Executions waiting in the function's queue",
            depth,
        );
        gauges.register(
            "function_in_flight",
            "Attempts of the function being dispatched now",
            in_flight,
        );
        gauges.register(
            "function_replicas_desired",
            "Replicas the function is to run (autoscaler or manual count)",
            desired,
        );
        gauges.register(
            "function_replicas_ready",
            "Replicas of the function ready to take invocations",
            ready,
        );
        gauges.register(
            "function_replica_restarts",
            "Replicas of the function started again after they exited or never got ready",
            restarts,
        );
        let stats = scheduler.store_stats();
        let records = Gauge::<i64>::default();
        records.set(i64::try_from(stats.records).unwrap_or(i64::MAX));
        gauges.register(
            "execution_records",
            "Execution records held, live and finished",
            records,
        );
        let finished_bytes = Gauge::<i64>::default();
        finished_bytes.set(i64::try_from(stats.finished_bytes).unwrap_or(i64::MAX));
        gauges.register(
            "execution_records_finished_bytes",
            "Estimated bytes the finished execution records keep (bounded by the memory budget)",
            finished_bytes,
        );
        let evicted = Counter::<u64>::default();
        evicted.inc_by(stats.evicted_over_budget);
        gauges.register(
            "execution_records_evicted",
            "Finished execution records evicted before their TTL to stay within the memory budget",
            evicted,
        );

        let claims = scheduler.idempotency_stats();
        let keys = Gauge::<i64>::default();
        keys.set(i64::try_from(claims.keys).unwrap_or(i64::MAX));
        gauges.register("idempotency_keys", "Idempotency keys remembered", keys);
        let key_bytes = Gauge::<i64>::default();
        key_bytes.set(i64::try_from(claims.bytes).unwrap_or(i64::MAX));
        gauges.register(
            "idempotency_keys_bytes",
            "Estimated bytes the remembered idempotency keys keep (bounded by their memory budget)",
            key_bytes,
        );
        let keys_evicted = Counter::<u64>::default();
        keys_evicted.inc_by(claims.evicted_over_budget);
        gauges.register(
            "idempotency_keys_evicted",
            "Idempotency keys forgotten before their TTL to stay within the memory budget",
            keys_evicted,
        );
        let inputs = Gauge::<i64>::default();
        inputs.set(i64::try_from(scheduler.queued_input_bytes()).unwrap_or(i64::MAX));
        gauges.register(
            "queued_input_bytes",
            "Bytes of input held by queued and running executions (bounded by the queued-input budget)",
            inputs,
        );

        let mut text = String::new();
        // Writing to a String cannot fail.
        let _ = encode_registry(&mut text, &self.registry);
        let _ = encode_registry(&mut text, &gauges);
        to_text_format(&text)
    }
}

impl Observer for Metrics {
    fn on_event(&self, event: SchedulerEvent<'_>) {
        match event {
            SchedulerEvent::Enqueued { function, .. } => {
                self.series(function).enqueue.inc();
            }
            SchedulerEvent::Dispatched {
                function,
                queue_wait,
                ..
            } => {
                let series = self.series(function);
                series.dispatch.inc();
                series.queue_wait.observe(ms(queue_wait.0));
            }
            SchedulerEvent::Retried {
                function, backoff, ..
            } => {
                let series = self.series(function);
                series.retry.inc();
                series.retry_backoff.observe(ms(backoff.0));
            }
            SchedulerEvent::Finished { record, .. } => {
                let series = self.series(&record.function);
                match record.state {
                    ExecutionState::Success => {
                        series.success.inc();
                        // Only a runtime's answer says whether it started cold.
                        if record.cold_start {
                            series.cold_start.inc();
                        } else {
                            series.warm_start.inc();
                        }
                    }
                    ExecutionState::Error => {
                        series.error.inc();
                    }
                    ExecutionState::Timeout => {
                        series.timeout.inc();
                    }
                    ExecutionState::Queued | ExecutionState::Running => {}
                }
                if let Some(duration) = record.duration() {
                    series.latency.observe(ms(duration.0));
                }
                if let Some(finished) = record.finished_at {
                    series
                        .e2e_latency
                        .observe(ms(finished.since(record.created_at).0));
                }
                if let Some(init) = record.init_duration_ms {
                    series.init_duration.observe(ms(init));
                }
                lock(&series.throughput).record(self.now().as_millis());
            }
            SchedulerEvent::CompletionIgnored { .. } => {}
        }
    }
}

/// Exact for any span below 2^53 ms (285 000 years).
fn ms(millis: u64) -> f64 {
    millis as f64
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// prometheus-client writes OpenMetrics: a counter's `# HELP`/`# TYPE` name lacks the
/// `_total` its samples carry. Text format 0.0.4 names the family as its samples, so
/// the descriptor lines of every counter get the suffix. (The `# EOF` marker is not
/// written: only `encode_registry` is used.)
fn to_text_format(openmetrics: &str) -> String {
    let lines: Vec<&str> = openmetrics.lines().collect();
    let mut counters = Vec::new();
    for line in &lines {
        if let Some(name) = line
            .strip_prefix("# TYPE ")
            .and_then(|rest| rest.strip_suffix(" counter"))
        {
            counters.push(name);
        }
    }
    let mut text = String::with_capacity(openmetrics.len() + counters.len() * 12);
    for line in lines {
        let descriptor = ["# HELP ", "# TYPE "].into_iter().find_map(|prefix| {
            let rest = line.strip_prefix(prefix)?;
            let (name, tail) = rest.split_once(' ')?;
            counters
                .contains(&name)
                .then(|| format!("{prefix}{name}_total {tail}"))
        });
        match descriptor {
            Some(renamed) => text.push_str(&renamed),
            None => text.push_str(line),
        }
        text.push('\n');
    }
    text
}

/// `GET /actuator/prometheus`.
#[utoipa::path(
    get,
    path = "/actuator/prometheus",
    tag = "health",
    summary = "The metrics, in the Prometheus text format 0.0.4",
    responses(
        (status = 200, description = "Counters, gauges and histograms labelled by `function`", body = String, content_type = "text/plain; version=0.0.4; charset=utf-8"),
    )
)]
pub(crate) async fn scrape(State(state): State<AppState>) -> Result<Response, ApiError> {
    let text = state.metrics().render(state.scheduler()).await;
    let mut response = text.into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(PROMETHEUS_TEXT),
    );
    Ok(response)
}

/// Completions per second as an exponentially weighted moving average over one-second
/// windows: recent enough to follow a function slowing down, smooth enough that one
/// slow second does not close the door. Windows that pass without completions count as
/// zero, so a stalled function's rate decays towards zero.
#[derive(Debug, Default)]
struct Throughput {
    window_start: Option<u64>,
    in_window: u32,
    rate: Option<f64>,
}

impl Throughput {
    const WINDOW_MS: u64 = 1_000;
    /// Weight of the newest window.
    const ALPHA: f64 = 0.5;

    fn record(&mut self, now_ms: u64) {
        self.advance(now_ms);
        if self.window_start.is_none() {
            self.window_start = Some(now_ms);
        }
        self.in_window = self.in_window.saturating_add(1);
    }

    fn per_second(&mut self, now_ms: u64) -> Option<f64> {
        self.advance(now_ms);
        self.rate
    }

    /// Closes every window that ended by `now_ms`.
    fn advance(&mut self, now_ms: u64) {
        let Some(start) = self.window_start else {
            return;
        };
        let windows = now_ms.saturating_sub(start) / Self::WINDOW_MS;
        if windows == 0 {
            return;
        }
        let observed = f64::from(self.in_window) * 1_000.0 / ms(Self::WINDOW_MS);
        let mut rate = match self.rate {
            None => observed,
            Some(previous) => Self::ALPHA * observed + (1.0 - Self::ALPHA) * previous,
        };
        let idle = i32::try_from(windows - 1).unwrap_or(i32::MAX);
        rate *= (1.0 - Self::ALPHA).powi(idle);
        self.rate = Some(rate);
        self.in_window = 0;
        self.window_start = Some(start + windows * Self::WINDOW_MS);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counter_families_are_named_as_their_samples() {
        let openmetrics = "# HELP function_enqueue Invocations accepted and queued.\n\
                           # TYPE function_enqueue counter\n\
                           function_enqueue_total{function=\"f\"} 3\n\
                           # HELP function_queue_depth Executions waiting.\n\
                           # TYPE function_queue_depth gauge\n\
                           function_queue_depth{function=\"f\"} 1\n";
        let text = to_text_format(openmetrics);
        let expected = "# HELP function_enqueue_total Invocations accepted and queued.\n\
                        # TYPE function_enqueue_total counter\n\
                        function_enqueue_total{function=\"f\"} 3\n\
                        # HELP function_queue_depth Executions waiting.\n\
                        # TYPE function_queue_depth gauge\n\
                        function_queue_depth{function=\"f\"} 1\n";
        assert_eq!(text, expected);
    }

    #[test]
    fn throughput_is_unknown_until_a_window_has_passed() {
        let mut throughput = Throughput::default();
        assert_eq!(throughput.per_second(0), None);
        for _ in 0..4 {
            throughput.record(10_000);
        }
        assert_eq!(throughput.per_second(10_999), None);
        assert_eq!(throughput.per_second(11_000), Some(4.0));
    }

    #[test]
    fn throughput_follows_a_slowdown_and_decays_when_nothing_completes() {
        let mut throughput = Throughput::default();
        for _ in 0..4 {
            throughput.record(0);
        }
        // Second window: 2 completions -> 0.5 * 2 + 0.5 * 4.
        throughput.record(1_000);
        throughput.record(1_500);
        assert_eq!(throughput.per_second(2_000), Some(3.0));
        // Two silent windows halve it twice.
        assert_eq!(throughput.per_second(4_000), Some(0.75));
    }
}
