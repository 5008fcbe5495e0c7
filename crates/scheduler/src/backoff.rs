//! How long a failed attempt waits before its retry may be dispatched.

use std::time::Duration;

use core_types::{DurationMs, ExecutionId};

/// Exponential backoff with jitter: the retry that will be attempt `n` (`n >= 2`) waits
/// between half and all of `min(max, base * 2^(n-2))` ("equal jitter"), so a failing
/// downstream is not hammered at full speed and retries of executions that failed
/// together spread out instead of arriving together again.
///
/// The jitter is not random: it is drawn from a hash of the execution id and the
/// attempt, so one execution's retries always wait the same (a seeded simulation or a
/// parity case replays exactly) while different executions wait different times.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryBackoff {
    /// The wait before the first retry (before jitter). Zero: retries are due at once.
    pub base: Duration,
    /// The longest wait.
    pub max: Duration,
}

impl RetryBackoff {
    /// No waiting: a failed attempt's retry is due at once.
    pub const NONE: Self = Self {
        base: Duration::ZERO,
        max: Duration::ZERO,
    };

    /// How long the retry that will be `next_attempt` of `execution` waits.
    pub fn delay(&self, execution: &ExecutionId, next_attempt: u32) -> DurationMs {
        let DurationMs(ceiling) = self.ceiling(next_attempt);
        let half = ceiling / 2;
        let jitter = stable_hash(execution.as_str(), next_attempt) % (ceiling - half + 1);
        DurationMs(half + jitter)
    }
}

impl Default for RetryBackoff {
    /// 100 ms before the first retry, doubling, at most 10 s: fast enough that a sync
    /// caller's retries still fit in a few seconds, slow enough to let a struggling
    /// function breathe.
    fn default() -> Self {
        Self {
            base: Duration::from_millis(100),
            max: Duration::from_secs(10),
        }
    }
}

impl RetryBackoff {
    /// The longest the retry that will be `next_attempt` can wait (before jitter takes
    /// up to half of it off).
    pub fn ceiling(&self, next_attempt: u32) -> DurationMs {
        let doublings = next_attempt.saturating_sub(2).min(63);
        let base = millis(self.base);
        let grown = base
            .checked_shl(doublings)
            .filter(|grown| grown >> doublings == base)
            .unwrap_or(u64::MAX);
        DurationMs(grown.min(millis(self.max)))
    }

    /// The longest any retry waits.
    pub fn longest(&self) -> DurationMs {
        DurationMs(millis(self.max))
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// FNV-1a of the id and attempt, then murmur3's finaliser so ids that differ in one
/// character still land far apart: fixed across builds and platforms (unlike std's
/// hashers, which promise no stability), which pinned snapshots rely on.
fn stable_hash(text: &str, attempt: u32) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut hash = text
        .bytes()
        .chain(attempt.to_le_bytes())
        .fold(OFFSET, |hash, byte| {
            (hash ^ u64::from(byte)).wrapping_mul(PRIME)
        });
    hash ^= hash >> 33;
    hash = hash.wrapping_mul(0xff51_afd7_ed55_8ccd);
    hash ^= hash >> 33;
    hash = hash.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    hash ^ (hash >> 33)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backoff(base_ms: u64, max_ms: u64) -> RetryBackoff {
        RetryBackoff {
            base: Duration::from_millis(base_ms),
            max: Duration::from_millis(max_ms),
        }
    }

    #[test]
    fn waits_double_within_half_and_all_of_the_ceiling_up_to_the_max() {
        let b = backoff(100, 1_000);
        for n in 0..200 {
            let id = ExecutionId::new(format!("exec-{n}"));
            for (attempt, ceiling) in [
                (2, 100),
                (3, 200),
                (4, 400),
                (5, 800),
                (6, 1_000),
                (40, 1_000),
            ] {
                let DurationMs(wait) = b.delay(&id, attempt);
                assert!(
                    (ceiling / 2..=ceiling).contains(&wait),
                    "{id} attempt {attempt}: {wait} ms"
                );
            }
        }
    }

    #[test]
    fn one_execution_always_waits_the_same_and_executions_spread_out() {
        let b = RetryBackoff::default();
        let id = ExecutionId::new("exec-1");
        assert_eq!(b.delay(&id, 2), b.delay(&id, 2));
        let waits: std::collections::BTreeSet<_> = (0..50)
            .map(|n| b.delay(&ExecutionId::new(format!("exec-{n}")), 2).0)
            .collect();
        // 50 draws from the 51 waits 50..=100 ms: about 32 distinct ones if uniform.
        assert!(waits.len() > 25, "jitter spreads retries: {waits:?}");
    }

    #[test]
    fn no_backoff_means_due_at_once_and_huge_attempts_do_not_overflow() {
        let id = ExecutionId::new("e");
        assert_eq!(RetryBackoff::NONE.delay(&id, 2), DurationMs(0));
        assert_eq!(RetryBackoff::NONE.delay(&id, u32::MAX), DurationMs(0));
        let wait = backoff(u64::MAX / 2, u64::MAX).delay(&id, u32::MAX).0;
        assert!(wait >= u64::MAX / 2);
    }

    #[test]
    fn the_jitter_is_fixed_across_builds() {
        // Pinned: parity snapshots show these waits, so they must not move with a
        // toolchain or platform.
        assert_eq!(stable_hash("exec-1", 2), 0x61cc_7bdd_f129_1ba2);
        assert_eq!(
            RetryBackoff::default().delay(&ExecutionId::new("exec-1"), 2),
            DurationMs(95)
        );
    }
}
