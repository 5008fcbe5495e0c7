//! Repository automation for the control-plane workspace, run as `cargo xtask <command>`
//! (an alias in `.cargo/config.toml` for `cargo run --locked --package xtask --`).
//!
//! Commands:
//!
//! - `ci`: everything CI checks, in order, stopping at the first failure: `cargo fmt
//!   --check`, `tidy`, clippy with `-D warnings`, the test suite (nextest when installed,
//!   else `cargo test`) with `CI=true INSTA_UPDATE=no`, doc tests, `cargo doc` with
//!   `RUSTDOCFLAGS=-D warnings`, and last `parity`. `.ci/run` calls this.
//! - `tidy`: repository rules read from `cargo metadata` and the file tree: the allowed
//!   arrows between crates (the crate table of the design doc), a `//!` header on every
//!   crate root, no pending snapshot files, `publish = false` everywhere. Every problem
//!   is reported at once. The same rules run as `#[test]`s in `cargo test -p xtask`.
//! - `parity`: runs every completion-parity snapshot case (integration test targets
//!   named `parity`, test functions named `case_*`), one `PASS`/`FAIL` line per case and
//!   a closing `N passed, N failed` line.
//! - `snap accept` / `snap list`: accept or list pending insta snapshots (`*.snap.new`)
//!   without `cargo-insta`.
//! - `bench [--quick]`: builds the release binaries and measures the control plane on
//!   loopback against this package's own echo endpoint (`bench-echo`) with its own load
//!   generator (`loadgen`); writes `target/bench/bench.{json,md}`. `--quick` is the smoke
//!   run CI does. `--instructions` counts the control plane's instructions per sync
//!   invocation under callgrind instead (`target/bench/instructions.{json,md}`).
//! - `sim [--seeds N | --seed S]`: the engine's deterministic simulation over `N` seeds
//!   (release build), or one seed replayed; the test suite runs 2000.
//! - `soak [--invocations N] [--kills K] [--seed S]`: the conservation test (kill -9 and
//!   restart of the real binary under load) at a size CI does not run.
//! - `bench --store sqlite|memory`, `--stores` (both stores in one run), `--startup`
//!   (restart after a crash with a million retained and 100 000 queued executions).

mod bench;
mod ci;
mod graph;
mod parity;
#[allow(
    dead_code,
    reason = "shared with loadgen and spawn-floor; the bench reads only the parent field"
)]
mod proc_stat;
mod sim;
mod snap;
mod soak;
mod tidy;
mod util;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Errors of the xtask commands: a message for the person at the terminal.
pub(crate) type Error = Box<dyn std::error::Error + Send + Sync>;
pub(crate) type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, Parser)]
#[command(
    name = "cargo xtask",
    bin_name = "cargo xtask",
    about = "Repository automation for the control-plane workspace"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run every check CI runs, in order, stopping at the first failure.
    Ci,
    /// Check the repository rules (crate graph, doc headers, snapshots, publish = false).
    Tidy,
    /// Run every completion-parity snapshot case and print one line per case.
    Parity,
    /// Manage pending insta snapshots without cargo-insta.
    Snap {
        #[command(subcommand)]
        action: SnapAction,
    },
    /// Measure the control plane against a direct echo (release builds, loopback).
    Bench {
        /// A smoke run of seconds (CI runs it): one repetition, concurrency 1 and 16.
        #[arg(long)]
        quick: bool,
        /// Instead: count the control plane's instructions per sync invocation under
        /// valgrind's callgrind (repeatable on a noisy machine; needs valgrind).
        #[arg(long, conflicts_with = "quick")]
        instructions: bool,
        /// The store of the control plane under test (`sqlite`: durable, in a fresh
        /// data directory under target/bench).
        #[arg(long, value_enum, default_value = "memory")]
        store: bench::Store,
        /// Instead: compare the two stores in one run (sync POOL, async POOL and
        /// `:enqueue` at the highest concurrency; `target/bench/stores.{json,md}`).
        #[arg(long, conflicts_with_all = ["instructions", "store"])]
        stores: bool,
        /// Instead: fill a SQLite store with a million finished and a hundred thousand
        /// queued executions (`--quick`: a hundredth), kill the control plane and
        /// measure its restart (`target/bench/startup.{json,md}`).
        #[arg(long, conflicts_with_all = ["instructions", "store", "stores"])]
        startup: bool,
    },
    /// Run the conservation test (kill -9 of the real binary under load) at a size CI
    /// does not: every accepted execution must end exactly once.
    Soak {
        /// How many invocations the clients send.
        #[arg(long, default_value_t = 20_000)]
        invocations: u64,
        /// How many times the control plane is killed and restarted.
        #[arg(long, default_value_t = 12)]
        kills: u64,
        /// Replay this seed (as a failure names it).
        #[arg(long)]
        seed: Option<u64>,
    },
    /// Run the engine's deterministic simulation over many seeds, or replay one.
    Sim {
        /// How many seeds (at least; spread over the simulation's four tests).
        #[arg(long, default_value_t = 20_000)]
        seeds: u64,
        /// Replay only this seed (as a failure names it).
        #[arg(long, conflicts_with = "seeds")]
        seed: Option<u64>,
    },
}

#[derive(Debug, Subcommand)]
enum SnapAction {
    /// Rename every `*.snap.new` to `*.snap` and delete `*.pending-snap` files.
    Accept,
    /// List the pending snapshot files.
    List,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let root = util::repo_root();
    let result = match cli.command {
        Command::Ci => ci::run(&root),
        Command::Tidy => tidy::run_and_report(&root),
        Command::Parity => parity::run_and_report(&root),
        Command::Snap {
            action: SnapAction::Accept,
        } => snap::accept(&root),
        Command::Snap {
            action: SnapAction::List,
        } => snap::list(&root),
        Command::Bench {
            instructions: true, ..
        } => bench::run_instructions(&root),
        Command::Soak {
            invocations,
            kills,
            seed,
        } => soak::run(&root, invocations, kills, seed),
        Command::Sim {
            seed: Some(seed), ..
        } => sim::run(&root, sim::Seeds::One(seed)),
        Command::Sim { seeds, seed: None } => sim::run(&root, sim::Seeds::Count(seeds)),
        Command::Bench {
            quick,
            stores: true,
            ..
        } => bench::run_stores(&root, bench::Mode::of(quick)),
        Command::Bench {
            quick,
            startup: true,
            ..
        } => bench::run_startup(&root, bench::Mode::of(quick)),
        Command::Bench { quick, store, .. } => bench::run(&root, bench::Mode::of(quick), store),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::Cli;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }
}
