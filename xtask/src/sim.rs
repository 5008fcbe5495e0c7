//! `cargo xtask sim`: the engine's deterministic simulation (`crates/scheduler/tests/
//! sim.rs`) over more seeds than the test suite runs, or one seed replayed.
//!
//! The test suite runs four shares of 500 seeds each in debug builds; a long run is
//! built in release (a few times faster per seed) and spread over the same four tests,
//! which the test harness runs in parallel.

use std::path::Path;
use std::process::Command;

use crate::Result;
use crate::util::{cargo, display_command};

/// The simulation test runs its seeds in this many interleaved shares.
const SHARES: u64 = 4;

/// What to simulate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Seeds {
    /// At least this many seeds in all.
    Count(u64),
    /// Exactly this seed (a failure's replay).
    One(u64),
}

/// The cargo command of a simulation run.
pub(crate) fn command(root: &Path, seeds: Seeds) -> Command {
    let mut command = cargo(root);
    command.args([
        "test",
        "--locked",
        "--release",
        "--package",
        "scheduler",
        "--test",
        "sim",
    ]);
    match seeds {
        Seeds::Count(total) => {
            command.env("SIM_SEEDS", total.div_ceil(SHARES).max(1).to_string());
        }
        Seeds::One(seed) => {
            command.env("SIM_SEED", seed.to_string());
        }
    }
    command
}

/// `cargo xtask sim`.
pub(crate) fn run(root: &Path, seeds: Seeds) -> Result<()> {
    let mut command = command(root, seeds);
    println!("sim: {}", display_command(&command));
    let status = command.status()?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("the simulation failed ({status}); its output names the seed").into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_are_spread_over_the_shares_and_a_seed_replays_alone() {
        let shown = |seeds| display_command(&command(Path::new("/repo"), seeds));
        assert_eq!(
            shown(Seeds::Count(10_000)),
            "SIM_SEEDS=2500 cargo test --locked --release --package scheduler --test sim"
        );
        assert_eq!(
            shown(Seeds::Count(5)),
            "SIM_SEEDS=2 cargo test --locked --release --package scheduler --test sim"
        );
        assert_eq!(
            shown(Seeds::One(42)),
            "SIM_SEED=42 cargo test --locked --release --package scheduler --test sim"
        );
    }
}
