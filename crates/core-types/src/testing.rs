//! Deterministic implementations of the [`Clock`] and [`IdGenerator`] ports, for tests
//! that pin what they observe (snapshots, metrics after a known wait). Behind the
//! `testing` feature: nothing in a running control plane uses them.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::{Clock, ExecutionId, IdGenerator, Timestamp, TraceId};

/// A clock that moves only when told.
#[derive(Debug)]
pub struct ManualClock {
    start: Timestamp,
    elapsed_ms: AtomicU64,
}

impl ManualClock {
    /// 2026-01-01T00:00:00Z, where the default clock starts.
    pub const DEFAULT_START: Timestamp = Timestamp::from_millis(1_767_225_600_000);

    /// A clock reading `start` until advanced.
    pub fn starting_at(start: Timestamp) -> Self {
        Self {
            start,
            elapsed_ms: AtomicU64::new(0),
        }
    }

    /// Moves the clock `ms` forward.
    pub fn advance_ms(&self, ms: u64) {
        self.elapsed_ms.fetch_add(ms, Ordering::SeqCst);
    }

    /// Milliseconds from the clock's start to `at`, for rendering times as offsets.
    pub fn offset_of(&self, at: Timestamp) -> u64 {
        at.as_millis() - self.start.as_millis()
    }
}

impl Default for ManualClock {
    fn default() -> Self {
        Self::starting_at(Self::DEFAULT_START)
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        Timestamp::from_millis(self.start.as_millis() + self.elapsed_ms.load(Ordering::SeqCst))
    }
}

/// `exec-1`, `exec-2`, ... and `trace-1`, `trace-2`, ...
#[derive(Debug, Default)]
pub struct SequentialIds {
    executions: AtomicU64,
    traces: AtomicU64,
}

impl SequentialIds {
    /// Every execution id handed out so far, in order.
    pub fn issued(&self) -> Vec<ExecutionId> {
        (1..=self.executions.load(Ordering::SeqCst))
            .map(|n| ExecutionId::new(format!("exec-{n}")))
            .collect()
    }
}

impl IdGenerator for SequentialIds {
    fn execution_id(&self) -> ExecutionId {
        let n = self.executions.fetch_add(1, Ordering::SeqCst) + 1;
        ExecutionId::new(format!("exec-{n}"))
    }

    fn trace_id(&self) -> TraceId {
        let n = self.traces.fetch_add(1, Ordering::SeqCst) + 1;
        TraceId::new(format!("trace-{n}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_clock_moves_only_when_told() {
        let clock = ManualClock::default();
        let start = clock.now();
        assert_eq!(start, ManualClock::DEFAULT_START);
        assert_eq!(clock.now(), start);
        clock.advance_ms(250);
        assert_eq!(clock.offset_of(clock.now()), 250);
    }

    #[test]
    fn ids_count_up_and_are_remembered() {
        let ids = SequentialIds::default();
        assert_eq!(ids.execution_id().as_str(), "exec-1");
        assert_eq!(ids.execution_id().as_str(), "exec-2");
        assert_eq!(ids.trace_id().as_str(), "trace-1");
        let issued: Vec<String> = ids.issued().iter().map(|id| id.to_string()).collect();
        assert_eq!(issued, ["exec-1", "exec-2"]);
    }
}
