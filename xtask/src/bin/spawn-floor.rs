//! `spawn-floor`: the floor of a one-shot `STDIO` invocation, for `cargo xtask bench`.
//!
//! It does what the control plane's `process` provider must do for every invocation of a
//! `STDIO` function, and nothing else: start the program with stdin and stdout piped,
//! write the input, close stdin, read stdout to its end and wait for the exit. `--count`
//! times, with `--concurrency` threads taking the next iteration as soon as their last
//! one ended (a closed loop, like loadgen's), after `--warmup` iterations that are not
//! measured. Each output must be the input back (the program is an echo such as `cat`)
//! and each exit a success, or the iteration counts as an error.
//!
//! It is a binary of its own, not code in the bench, so that the bench can pin it to the
//! servers' core with `taskset` as it pins the control plane: then the floor's spawns,
//! like the control plane's, share one core with the programs they start, and it runs
//! release-built like the control plane. std's `Command` is the plainest way to start a
//! process from Rust (it uses `posix_spawn` where it can), which is what a floor is.
//!
//! Prints one JSON report: iterations, errors, the measured window, iterations per
//! second, latency percentiles (microseconds, from an HDR histogram of nanoseconds), and
//! the CPU time of the measured window from `/proc/self/stat`, its own (utime + stime)
//! and its waited-for children's (cutime + cstime).
//!
//! Usage: `spawn-floor --count N [--concurrency C] [--warmup W] [--input TEXT]
//! [--timeout-secs S] -- PROGRAM [ARG...]`.

#[path = "../proc_stat.rs"]
#[allow(dead_code, reason = "shared with the bench and loadgen")]
mod proc_stat;

use std::io::{Read, Write};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use hdrhistogram::Histogram;
use proc_stat::{CpuTicks, ticks_per_second};
use serde::Serialize;

#[derive(Debug, Parser)]
#[command(
    name = "spawn-floor",
    about = "The spawn + exit floor of a one-shot invocation"
)]
struct Cli {
    /// Measured iterations.
    #[arg(long)]
    count: u64,
    /// Threads, each running one iteration at a time.
    #[arg(long, default_value_t = 1)]
    concurrency: usize,
    /// Iterations before the measured ones, not counted (errors excepted).
    #[arg(long, default_value_t = 0)]
    warmup: u64,
    /// What each iteration writes to the program's stdin, and expects back on stdout.
    #[arg(long, default_value = "")]
    input: String,
    /// Give up (and fail) when the iterations have not all ended after this long.
    #[arg(long, default_value_t = 120.0)]
    timeout_secs: f64,
    /// The program and its arguments.
    #[arg(last = true, required = true)]
    command: Vec<String>,
}

/// Latency percentiles, in microseconds.
#[derive(Debug, Serialize)]
struct LatencyUs {
    p50: f64,
    p99: f64,
    max: f64,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Report {
    iterations: u64,
    errors: u64,
    concurrency: usize,
    window_secs: f64,
    per_sec: f64,
    latency_us: LatencyUs,
    self_cpu_secs: f64,
    children_cpu_secs: f64,
}

type Error = Box<dyn std::error::Error + Send + Sync>;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli) {
        Ok(report) => match serde_json::to_string(&report) {
            Ok(json) => {
                println!("{json}");
                ExitCode::SUCCESS
            }
            Err(error) => {
                eprintln!("spawn-floor: {error}");
                ExitCode::FAILURE
            }
        },
        Err(error) => {
            eprintln!("spawn-floor: {error}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: &Cli) -> Result<Report, Error> {
    if cli.concurrency == 0 {
        return Err("--concurrency must be at least 1".into());
    }
    let deadline = Instant::now() + Duration::from_secs_f64(cli.timeout_secs);
    let warmup = phase(cli, cli.warmup, deadline)?;
    let ticks = ticks_per_second();
    let before = own_cpu_ticks()?;
    let started = Instant::now();
    let measured = phase(cli, cli.count, deadline)?;
    let window_secs = started.elapsed().as_secs_f64();
    let after = own_cpu_ticks()?;
    let us = |ns: u64| ns as f64 / 1_000.0;
    let histogram = &measured.latencies;
    Ok(Report {
        iterations: histogram.len(),
        errors: warmup.errors + measured.errors,
        concurrency: cli.concurrency,
        window_secs,
        per_sec: if window_secs > 0.0 {
            histogram.len() as f64 / window_secs
        } else {
            0.0
        },
        latency_us: LatencyUs {
            p50: us(histogram.value_at_quantile(0.50)),
            p99: us(histogram.value_at_quantile(0.99)),
            max: us(histogram.max()),
        },
        self_cpu_secs: after.own.saturating_sub(before.own) as f64 / ticks,
        children_cpu_secs: after.children.saturating_sub(before.children) as f64 / ticks,
    })
}

/// What one phase (warm-up or measured) gave.
struct Phase {
    /// The latency of every iteration that succeeded, in nanoseconds.
    latencies: Histogram<u64>,
    errors: u64,
}

/// `count` iterations on `concurrency` threads; each thread takes the next iteration
/// when its last one ended, until none is left or `deadline` has passed.
fn phase(cli: &Cli, count: u64, deadline: Instant) -> Result<Phase, Error> {
    let next = AtomicU64::new(0);
    let threads: Vec<Result<Phase, Error>> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..cli.concurrency)
            .map(|_| {
                scope.spawn(|| {
                    let mut phase = Phase {
                        latencies: Histogram::new(3)?,
                        errors: 0,
                    };
                    while next.fetch_add(1, Ordering::Relaxed) < count {
                        if Instant::now() >= deadline {
                            return Err::<Phase, Error>(
                                format!("not done after {} s", cli.timeout_secs).into(),
                            );
                        }
                        let started = Instant::now();
                        match once(&cli.command, cli.input.as_bytes()) {
                            Ok(()) => {
                                let ns = started.elapsed().as_nanos();
                                phase.latencies.record(u64::try_from(ns)?)?;
                            }
                            Err(error) => {
                                if phase.errors == 0 {
                                    eprintln!("spawn-floor: an iteration failed: {error}");
                                }
                                phase.errors += 1;
                            }
                        }
                    }
                    Ok(phase)
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|worker| {
                worker
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            })
            .collect()
    });
    let mut all = Phase {
        latencies: Histogram::new(3)?,
        errors: 0,
    };
    for thread in threads {
        let thread = thread?;
        all.latencies.add(&thread.latencies)?;
        all.errors += thread.errors;
    }
    Ok(all)
}

/// One iteration: start, write `input`, close stdin, read stdout to its end, wait.
fn once(command: &[String], input: &[u8]) -> Result<(), Error> {
    let (program, args) = command.split_first().ok_or("no program")?;
    let child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    // Killed and reaped on every way out of here, so no iteration leaves a process.
    let mut child = Reaped(child);
    let mut stdin = child.0.stdin.take().ok_or("no stdin pipe")?;
    stdin.write_all(input)?;
    drop(stdin);
    let mut output = Vec::with_capacity(input.len());
    child
        .0
        .stdout
        .take()
        .ok_or("no stdout pipe")?
        .read_to_end(&mut output)?;
    let status = child.0.wait()?;
    if !status.success() {
        return Err(format!("{program} exited with {status}").into());
    }
    if output != input {
        return Err(format!(
            "{program} wrote {:?}, not the input back",
            String::from_utf8_lossy(&output)
        )
        .into());
    }
    Ok(())
}

/// A child that is killed (if still running) and waited for when dropped.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
        }
        let _ = self.0.wait();
    }
}

/// This process's CPU time so far.
fn own_cpu_ticks() -> Result<CpuTicks, Error> {
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    proc_stat::cpu_ticks(&stat).ok_or_else(|| format!("cannot read /proc/self/stat: {stat}").into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_echo_gives_its_input_back_and_a_failure_is_an_error() {
        let cat = ["cat".to_owned()];
        assert!(once(&cat, br#"{"input":{"message":"hello"},"metadata":{}}"#).is_ok());
        let wrong = [
            "sh".to_owned(),
            "-c".to_owned(),
            "cat >/dev/null; echo no".to_owned(),
        ];
        assert!(once(&wrong, b"hello").is_err());
        let failing = ["sh".to_owned(), "-c".to_owned(), "cat; exit 3".to_owned()];
        assert!(once(&failing, b"hello").is_err());
    }
}
