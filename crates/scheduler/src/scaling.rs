//! The autoscaler's arithmetic and windows for `scalingConfig.strategy: INTERNAL`.
//!
//! Owns the rule, as a pure function of time and signals: the recommendation is the
//! largest `ceil(value / target)` over the configured metrics (`queue_depth`,
//! `in_flight`, `rps`), never fewer than the replicas the in-flight work needs, at
//! least one while any work waits or runs, zero only after `idle_to_zero` of complete
//! idleness (before that, one), clamped to `[minReplicas, maxReplicas]`. Up at once;
//! down only to the highest recommendation of the last `scale_down_window`, so a
//! function reaches zero no earlier than both windows allow.
//!
//! Must not know: queues, providers, tokio (time comes in as a [`Timestamp`]).

use std::collections::VecDeque;

use core_types::{
    DurationMs, ExecutionMode, FunctionSpec, ScalingMetricType, ScalingStrategy, Timestamp,
};

/// The scaling windows (control-plane flags).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ScalingWindows {
    /// Scale down only to the highest count asked for over this long.
    pub(crate) scale_down_window: DurationMs,
    /// With `minReplicas: 0`: idle this long scales to zero.
    pub(crate) idle_to_zero: DurationMs,
}

/// What the autoscaler looks at, for one function, at one moment.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct ScalingSignals {
    pub(crate) queue_depth: u64,
    pub(crate) in_flight: u64,
    /// Invocations arriving per second over the last interval.
    pub(crate) rps: f64,
}

impl ScalingSignals {
    fn idle(&self) -> bool {
        self.queue_depth == 0 && self.in_flight == 0 && self.rps <= 0.0
    }
}

/// A function's `INTERNAL` policy, read from its spec.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct ScalingPolicy {
    min_replicas: u32,
    max_replicas: u32,
    targets: Vec<(ScalingMetricType, f64)>,
    per_replica_concurrency: u32,
}

impl ScalingPolicy {
    /// `None` unless `spec` is a `DEPLOYMENT` whose strategy is `INTERNAL`.
    pub(crate) fn of(spec: &FunctionSpec) -> Option<Self> {
        if spec.execution_mode != ExecutionMode::Deployment {
            return None;
        }
        let scaling = spec.scaling_config.as_ref()?;
        if scaling.strategy != ScalingStrategy::Internal {
            return None;
        }
        let targets = scaling
            .metrics
            .iter()
            .filter_map(|metric| {
                let target: f64 = metric.target.trim().parse().ok()?;
                (target.is_finite() && target > 0.0).then_some((metric.metric_type, target))
            })
            .collect();
        Some(Self {
            min_replicas: scaling.min_replicas,
            max_replicas: scaling.max_replicas.max(scaling.min_replicas),
            targets,
            per_replica_concurrency: spec.concurrency.max(1),
        })
    }
}

/// One decision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ScalingDecision {
    /// The replica count to run (equal to the current one when nothing changes).
    pub(crate) desired: u32,
    /// Why, naming the numbers.
    pub(crate) reason: String,
}

/// Per-function autoscaler state: the idle stretch and the scale-down window.
#[derive(Debug)]
pub(crate) struct Autoscaler {
    policy: ScalingPolicy,
    windows: ScalingWindows,
    idle_since: Option<Timestamp>,
    /// The window's recommendations as a sliding maximum: times increase, values
    /// decrease, so the front is the window's highest and memory stays small.
    window: VecDeque<(Timestamp, u32)>,
}

impl Autoscaler {
    pub(crate) fn new(policy: ScalingPolicy, windows: ScalingWindows) -> Self {
        Self {
            policy,
            windows,
            idle_since: None,
            window: VecDeque::new(),
        }
    }

    /// How many samples the window keeps (bounded by the distinct values in it).
    #[cfg(test)]
    fn samples(&self) -> usize {
        self.window.len()
    }

    /// The recommendation at `now`, and why.
    fn recommend(
        &mut self,
        now: Timestamp,
        current: u32,
        signals: ScalingSignals,
    ) -> (u32, String) {
        let policy = &self.policy;
        // The metric asking for the most replicas names the reason.
        let mut raw: Option<u32> = None;
        let mut why = String::from("no metric asks for a replica");
        for (metric, target) in &policy.targets {
            let (name, value) = match metric {
                ScalingMetricType::QueueDepth => ("queue_depth", signals.queue_depth as f64),
                ScalingMetricType::InFlight => ("in_flight", signals.in_flight as f64),
                ScalingMetricType::Rps => ("rps", signals.rps),
                ScalingMetricType::Cpu | ScalingMetricType::Memory => continue,
            };
            let wanted = (value / target).ceil().clamp(0.0, f64::from(u32::MAX)) as u32;
            if raw.is_none_or(|highest| wanted > highest) {
                raw = Some(wanted);
                why = format!("{name} {value} / target {target} -> {wanted}");
            }
        }
        let mut raw = raw.unwrap_or(0);
        let busy = signals
            .in_flight
            .div_ceil(u64::from(policy.per_replica_concurrency));
        let busy = u32::try_from(busy).unwrap_or(u32::MAX);
        if busy > raw {
            raw = busy;
            why = format!("{} in flight need {busy}", signals.in_flight);
        }
        if raw == 0 && (signals.queue_depth > 0 || signals.in_flight > 0) {
            raw = 1;
            why = "work is waiting: at least one".to_owned();
        }
        if signals.idle() {
            let since = *self.idle_since.get_or_insert(now);
            let idle_for = now.since(since);
            if raw == 0 && current > 0 && idle_for < self.windows.idle_to_zero {
                raw = 1;
                why = format!("idle for {} ms, not yet for the idle period", idle_for.0);
            } else if raw == 0 {
                why = format!("idle for {} ms", idle_for.0);
            }
        } else {
            self.idle_since = None;
        }
        let clamped = raw.clamp(policy.min_replicas, policy.max_replicas);
        if clamped != raw {
            why = format!(
                "{why}, clamped to [{}, {}]",
                policy.min_replicas, policy.max_replicas
            );
        }
        (clamped, why)
    }

    /// Decides the replica count at `now`, given the count desired now and the signals.
    pub(crate) fn decide(
        &mut self,
        now: Timestamp,
        current: u32,
        signals: ScalingSignals,
    ) -> ScalingDecision {
        let (recommended, why) = self.recommend(now, current, signals);
        while self.window.back().is_some_and(|(_, v)| *v <= recommended) {
            self.window.pop_back();
        }
        self.window.push_back((now, recommended));
        let window = self.windows.scale_down_window;
        while self
            .window
            .front()
            .is_some_and(|(at, _)| now.since(*at) >= window && self.window.len() > 1)
        {
            self.window.pop_front();
        }
        let highest = self.window.front().map_or(recommended, |(_, v)| *v);
        if recommended > current {
            ScalingDecision {
                desired: recommended,
                reason: format!("{why}: up from {current} at once"),
            }
        } else if highest < current {
            ScalingDecision {
                desired: highest,
                reason: format!("{why}: down from {current} to the window's highest, {highest}"),
            }
        } else {
            ScalingDecision {
                desired: current,
                reason: format!("{why}: holding {current} (window's highest: {highest})"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WINDOWS: ScalingWindows = ScalingWindows {
        scale_down_window: DurationMs(10_000),
        idle_to_zero: DurationMs(30_000),
    };

    fn policy(scaling: serde_json::Value) -> ScalingPolicy {
        let spec = FunctionSpec::from_json(&serde_json::json!({
            "name": "f", "image": "i", "concurrency": 2, "scalingConfig": scaling
        }))
        .unwrap();
        ScalingPolicy::of(&spec).expect("INTERNAL")
    }

    fn t(ms: u64) -> Timestamp {
        Timestamp::from_millis(ms)
    }

    fn load(queue_depth: u64, in_flight: u64, rps: f64) -> ScalingSignals {
        ScalingSignals {
            queue_depth,
            in_flight,
            rps,
        }
    }

    const IDLE: ScalingSignals = ScalingSignals {
        queue_depth: 0,
        in_flight: 0,
        rps: 0.0,
    };

    fn to_zero() -> Autoscaler {
        Autoscaler::new(
            policy(
                serde_json::json!({"strategy": "INTERNAL", "minReplicas": 0, "maxReplicas": 10,
                "metrics": [{"type": "queue_depth", "target": "5"}, {"type": "rps", "target": "0.5"}]}),
            ),
            WINDOWS,
        )
    }

    #[test]
    fn a_burst_scales_up_at_once_to_the_largest_metric() {
        let mut scaler = to_zero();
        assert_eq!(scaler.decide(t(0), 1, load(42, 0, 0.0)).desired, 9);
        assert_eq!(
            scaler.decide(t(1), 9, load(0, 0, 2.5)).desired,
            9,
            "rps 2.5 / 0.5 = 5 < 9: held"
        );
        let mut scaler = to_zero();
        assert_eq!(scaler.decide(t(0), 1, load(0, 0, 2.5)).desired, 5);
        assert_eq!(
            scaler.decide(t(0), 1, load(500, 0, 0.0)).desired,
            10,
            "clamped to max"
        );
    }

    #[test]
    fn the_first_queued_invocation_scales_from_zero() {
        let mut scaler = to_zero();
        let decision = scaler.decide(t(0), 0, load(1, 0, 0.0));
        assert_eq!(decision.desired, 1, "{}", decision.reason);
    }

    #[test]
    fn work_in_flight_keeps_its_replicas() {
        let mut scaler = to_zero();
        assert_eq!(
            scaler.decide(t(0), 4, load(0, 7, 0.0)).desired,
            4,
            "7 in flight at 2 each need 4"
        );
        assert_eq!(scaler.decide(t(60_000), 4, load(0, 7, 0.0)).desired, 4);
    }

    #[test]
    fn scaling_down_waits_for_the_window_and_a_spike_in_it_holds_the_count() {
        let mut scaler = Autoscaler::new(
            policy(
                serde_json::json!({"strategy": "INTERNAL", "minReplicas": 1, "maxReplicas": 10,
                "metrics": [{"type": "queue_depth", "target": "1"}]}),
            ),
            WINDOWS,
        );
        assert_eq!(scaler.decide(t(0), 1, load(6, 0, 0.0)).desired, 6);
        assert_eq!(scaler.decide(t(5_000), 6, load(2, 0, 0.0)).desired, 6);
        assert_eq!(
            scaler.decide(t(9_999), 6, load(2, 0, 0.0)).desired,
            6,
            "one ms before the window"
        );
        assert_eq!(
            scaler.decide(t(10_000), 6, load(2, 0, 0.0)).desired,
            2,
            "at the window"
        );
        assert_eq!(
            scaler.decide(t(12_000), 2, load(4, 0, 0.0)).desired,
            4,
            "up at once"
        );
        assert_eq!(
            scaler.decide(t(20_000), 4, load(1, 0, 0.0)).desired,
            4,
            "the spike is in the window"
        );
        assert_eq!(scaler.decide(t(22_000), 4, load(1, 0, 0.0)).desired, 1);
    }

    #[test]
    fn zero_comes_only_after_the_idle_period_and_never_above_min() {
        let mut scaler = to_zero();
        assert_eq!(scaler.decide(t(0), 1, IDLE).desired, 1);
        assert_eq!(scaler.decide(t(29_999), 1, IDLE).desired, 1);
        assert_eq!(
            scaler.decide(t(15_000 + 15_000), 1, IDLE).desired,
            1,
            "the window still holds the 1s"
        );
        assert_eq!(scaler.decide(t(40_000), 1, IDLE).desired, 0);
        assert_eq!(
            scaler.decide(t(41_000), 0, IDLE).desired,
            0,
            "zero stays zero while idle"
        );

        let mut kept = Autoscaler::new(
            policy(serde_json::json!({"strategy": "INTERNAL", "minReplicas": 1, "maxReplicas": 3})),
            WINDOWS,
        );
        assert_eq!(kept.decide(t(0), 1, IDLE).desired, 1);
        assert_eq!(kept.decide(t(1_000_000), 1, IDLE).desired, 1);
    }

    #[test]
    fn activity_resets_the_idle_stretch() {
        let mut scaler = to_zero();
        scaler.decide(t(0), 1, IDLE);
        scaler.decide(t(25_000), 1, load(0, 1, 0.0));
        assert_eq!(
            scaler.decide(t(45_000), 1, IDLE).desired,
            1,
            "idle only since 45 s"
        );
        assert_eq!(scaler.decide(t(75_000), 1, IDLE).desired, 0);
    }

    #[test]
    fn only_internal_deployments_are_autoscaled() {
        for spec in [
            serde_json::json!({"name": "f", "image": "i", "scalingConfig": {"strategy": "NONE"}}),
            serde_json::json!({"name": "f", "image": "i", "scalingConfig": {"strategy": "HPA"}}),
            serde_json::json!({"name": "f", "image": "i", "executionMode": "POOL", "endpointUrl": "http://h/x"}),
        ] {
            assert_eq!(
                ScalingPolicy::of(&FunctionSpec::from_json(&spec).unwrap()),
                None
            );
        }
        let default =
            FunctionSpec::from_json(&serde_json::json!({"name": "f", "image": "i"})).unwrap();
        assert!(
            ScalingPolicy::of(&default).is_some(),
            "a DEPLOYMENT defaults to INTERNAL"
        );
    }

    #[test]
    fn the_window_keeps_few_samples_however_often_it_decides() {
        let mut scaler = to_zero();
        for ms in 0..1_000_000 {
            scaler.decide(t(ms), 2, load(ms % 7, 0, 0.0));
        }
        assert!(scaler.samples() <= 4, "{}", scaler.samples());
    }
}
