//! `cargo xtask soak [--invocations N] [--kills K] [--seed S]`: the conservation test
//! (`tests/tests/durability.rs`) at a size CI does not run: more invocations, more
//! `kill -9`s of the control plane, optionally one seed replayed.

use std::path::Path;

use crate::Result;
use crate::util::{cargo, display_command};

/// The test it runs.
const TEST: &str = "every_accepted_execution_survives_kill_9_and_ends_exactly_once";

/// `cargo xtask soak`.
pub(crate) fn run(root: &Path, invocations: u64, kills: u64, seed: Option<u64>) -> Result<()> {
    let mut command = cargo(root);
    command
        .args([
            "test",
            "--locked",
            "--package",
            "tests",
            "--test",
            "durability",
        ])
        .args([TEST, "--", "--exact", "--nocapture"])
        .env("CONSERVATION_INVOCATIONS", invocations.to_string())
        .env("CONSERVATION_KILLS", kills.to_string());
    if let Some(seed) = seed {
        command.env("CONSERVATION_SEED", seed.to_string());
    }
    println!("soak: {}", display_command(&command));
    let status = command.status()?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("the conservation test failed ({status}); its output names the seed").into())
    }
}
