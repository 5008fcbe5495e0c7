//! The control plane's store in the bench: which one a run uses (`--store`), and
//! `--stores`, the comparison of the two in one run: sync POOL, async POOL completions
//! and durable `:enqueue` at the highest concurrency, memory and SQLite alternating in
//! each repetition (so a slow phase of the machine touches both), as ratios of SQLite
//! to memory from the same run.

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::{Bench, Echo, Mode, Plan, RunResult, Scenario, Servers, median, write_reports};
use crate::Result;

/// The store a bench control plane keeps its state in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Store {
    /// `--store memory`: nothing written anywhere (today's figures).
    Memory,
    /// `--store sqlite` in a fresh data directory under the report directory.
    Sqlite,
}

impl Store {
    /// The control plane's flags for this store, and a data directory named after
    /// `log_name`, emptied first so every control plane starts from nothing. The memory
    /// store gets one too: the control plane keeps more there than the database (the
    /// `process` provider's ledger of process groups, locked by one control plane at a
    /// time), and the default, `./data` of the shell's directory, is nobody's to take.
    pub(super) fn args(self, out: &Path, log_name: &str) -> Result<Vec<String>> {
        let dir = data_dir(out, log_name);
        if dir.exists() {
            std::fs::remove_dir_all(&dir)
                .map_err(|error| format!("cannot empty {}: {error}", dir.display()))?;
        }
        Ok(vec![
            "--store".into(),
            self.name().into(),
            "--data-dir".into(),
            dir.display().to_string(),
        ])
    }

    fn name(self) -> &'static str {
        match self {
            Store::Memory => "memory",
            Store::Sqlite => "sqlite",
        }
    }
}

fn data_dir(out: &Path, log_name: &str) -> PathBuf {
    out.join(format!("data-{}", log_name.trim_end_matches(".log")))
}

/// One row of the comparison.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
struct Comparison {
    what: &'static str,
    memory: Option<f64>,
    sqlite: Option<f64>,
    ratio: Option<f64>,
    target: &'static str,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Report {
    concurrency: usize,
    repetitions: usize,
    rows: Vec<Comparison>,
    runs: Vec<(Store, RunResult)>,
}

/// `cargo xtask bench --stores [--quick]`.
pub(crate) fn compare(root: &Path, mode: Mode) -> Result<()> {
    let plan = Plan::of(mode);
    let concurrency = plan.concurrencies.iter().copied().max().unwrap_or(1);
    let bench = Bench::prepare(root, plan, Store::Memory)?;
    let echo = bench.start_echo()?;
    let proxy = bench.start_proxy(echo.port)?;
    let mut runs = Vec::new();
    let mut proxy: Option<Echo> = Some(proxy);
    let mut echo: Option<Echo> = Some(echo);
    for repetition in 1..=bench.plan.repetitions {
        for store in [Store::Memory, Store::Sqlite] {
            let log = format!("control-plane-{}.log", store.name());
            let control_plane = bench.start_control_plane_with(&log, store)?;
            bench.register(&control_plane, echo.as_ref().map(|echo| echo.port))?;
            let mut servers = Servers {
                control_plane,
                echo: echo
                    .take()
                    .expect("the echo is handed back after each store"),
                proxy: proxy.take().expect("so is the proxy"),
            };
            for scenario in [Scenario::SyncPool, Scenario::AsyncPool] {
                let run = bench
                    .run_one(scenario, concurrency, repetition, &servers)
                    .map_err(|error| servers.exited().unwrap_or(error))?;
                println!(
                    "bench: [{repetition}/{}] {:<7} {:<11} c={concurrency:<3} {:>9.0} req/s  enqueue {:>9.0}/s  errors {}",
                    bench.plan.repetitions,
                    store.name(),
                    scenario.name(),
                    run.req_per_sec,
                    run.enqueue_per_sec.unwrap_or(0.0),
                    run.errors
                );
                runs.push((store, run));
            }
            let Servers {
                control_plane,
                echo: kept_echo,
                proxy: kept_proxy,
            } = servers;
            drop(control_plane);
            echo = Some(kept_echo);
            proxy = Some(kept_proxy);
        }
    }
    let rows = comparisons(&runs);
    let report = Report {
        concurrency,
        repetitions: bench.plan.repetitions,
        rows,
        runs,
    };
    write_reports(root, &bench.out, "stores", &report, &markdown(&report))?;
    Ok(())
}

fn comparisons(runs: &[(Store, RunResult)]) -> Vec<Comparison> {
    let median_of = |store: Store, scenario: Scenario, value: fn(&RunResult) -> Option<f64>| {
        let values: Vec<f64> = runs
            .iter()
            .filter(|(s, run)| *s == store && run.scenario == scenario)
            .filter_map(|(_, run)| value(run))
            .collect();
        median(&values)
    };
    let row = |what, scenario, value: fn(&RunResult) -> Option<f64>, target| {
        let memory = median_of(Store::Memory, scenario, value);
        let sqlite = median_of(Store::Sqlite, scenario, value);
        Comparison {
            what,
            memory,
            sqlite,
            ratio: memory.zip(sqlite).map(|(m, s)| s / m),
            target,
        }
    };
    vec![
        row(
            "sync POOL req/s",
            Scenario::SyncPool,
            |run| Some(run.req_per_sec),
            ">= 0.8x",
        ),
        row(
            "async POOL completions/s",
            Scenario::AsyncPool,
            |run| Some(run.req_per_sec),
            ">= 0.6x",
        ),
        row(
            ":enqueue answers/s",
            Scenario::AsyncPool,
            |run| run.enqueue_per_sec,
            ">= 15000/s (sqlite)",
        ),
    ]
}

fn markdown(report: &Report) -> String {
    let cell = |value: Option<f64>| value.map_or("-".to_owned(), |v| format!("{v:.0}"));
    let mut text = format!(
        "## Stores: memory vs SQLite (concurrency {}, medians of {})\n\n| what | memory | sqlite | sqlite / memory | target |\n|---|---|---|---|---|\n",
        report.concurrency, report.repetitions
    );
    for row in &report.rows {
        text.push_str(&format!(
            "| {} | {} | {} | {} | {} |\n",
            row.what,
            cell(row.memory),
            cell(row.sqlite),
            row.ratio.map_or("-".to_owned(), |r| format!("{r:.2}")),
            row.target
        ));
    }
    text
}
