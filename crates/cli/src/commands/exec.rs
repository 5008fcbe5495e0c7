//! `exec get ID [--watch]`, and following an execution to its end (also `enqueue
//! --wait`): polls with a bounded backoff, shows each change of state (queued, running
//! with its attempt, the end) as a spinner with the elapsed time when stderr is a
//! terminal and as plain lines when it is not, and stops on Ctrl-C.

use std::io::IsTerminal;
use std::time::Duration;

use core_types::{ExecutionState, ExecutionStatus};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::time::Instant;

use super::Session;
use super::invoke::finish;
use crate::args::{ExecCommand, Format};
use crate::error::{CliError, Exit, Result};
use crate::output::{self, paint, state_style};

/// The first poll's pause, doubled while nothing changes, up to [`POLL_MAX`].
const POLL_MIN: Duration = Duration::from_millis(50);
const POLL_MAX: Duration = Duration::from_secs(1);
/// How often the spinner turns.
const TICK: Duration = Duration::from_millis(100);

/// Runs `exec ...`.
pub(crate) async fn run(session: &Session, command: &ExecCommand) -> Result<Exit> {
    match command {
        ExecCommand::Get(args) if args.watch => follow(session, &args.id, true).await,
        ExecCommand::Get(args) => {
            let status = fetch(session, &check_id(&args.id)?).await?;
            match session.format {
                Format::Text => anstream::print!("{}", describe(&status)),
                format => output::print_data(format, &status)?,
            }
            Ok(Exit::Success)
        }
    }
}

/// An execution id as given (the control plane's are UUIDs): anything that is safe in
/// a URL path.
fn check_id(id: &str) -> Result<String> {
    let safe = !id.is_empty()
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '~'));
    if safe {
        Ok(id.to_owned())
    } else {
        Err(CliError::usage(format!("{id:?} is not an execution id")))
    }
}

async fn fetch(session: &Session, id: &str) -> Result<ExecutionStatus> {
    session.api.get(&format!("/v1/executions/{id}")).await
}

/// What a state is, in words.
fn state_text(status: &ExecutionStatus) -> String {
    match status.status {
        ExecutionState::Queued if status.attempt > 1 => {
            format!("queued (retry, attempt {})", status.attempt)
        }
        ExecutionState::Running => format!("running (attempt {})", status.attempt),
        state => state.to_string(),
    }
}

/// Follows execution `id` to its end, showing its changes on stderr (`describe`: and
/// the execution itself at the end, as `exec get` does; else its output, as `invoke`
/// does), and gives invoke's exit status.
pub(crate) async fn follow(session: &Session, id: &str, describe_end: bool) -> Result<Exit> {
    let id = check_id(id)?;
    let mut interrupted = super::interrupts()?;
    let started = Instant::now();
    let mut display = Display::new();
    let mut last: Option<(ExecutionState, u32)> = None;
    let mut pause = POLL_MIN;
    let status = loop {
        let status = fetch(session, &id).await?;
        let now = (status.status, status.attempt);
        if last != Some(now) {
            display.change(&status, started.elapsed());
            last = Some(now);
            pause = POLL_MIN;
        } else {
            pause = (pause * 2).min(POLL_MAX);
        }
        if status.status.is_terminal() {
            break status;
        }
        let next = Instant::now() + pause;
        while Instant::now() < next {
            tokio::select! {
                _ = interrupted.recv() => {
                    display.stop();
                    return Err(CliError::Interrupted(format!(
                        "stopped watching execution {id}; it goes on \
                         (`nanofaas exec get {id} --watch` follows it again)"
                    )));
                }
                () = tokio::time::sleep_until(next.min(Instant::now() + TICK)) => {}
            }
            display.tick(started.elapsed());
        }
    };
    display.stop();
    if describe_end {
        if session.format == Format::Text {
            anstream::print!("{}", describe(&status));
        } else {
            output::print_data(session.format, &status)?;
        }
        return Ok(Exit::of_state(status.status));
    }
    finish(
        session.format,
        &status,
        status.execution_id.as_str(),
        status.status,
        status.output.as_ref().map(|o| o.to_value()),
        status.error.as_ref(),
    )
}

/// Where changes are shown: a spinner on a terminal, plain lines otherwise (both on
/// stderr, so stdout holds only the answer).
enum Display {
    Spinner {
        bar: ProgressBar,
        state: String,
        /// Whether colour is on for stderr (the spinner writes to the terminal itself,
        /// not through anstream, so `NO_COLOR` is honoured here).
        colour: bool,
    },
    Lines,
}

impl Display {
    fn new() -> Self {
        if !std::io::stderr().is_terminal() {
            return Self::Lines;
        }
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template("{spinner} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        let colour =
            anstream::AutoStream::choice(&std::io::stderr()) != anstream::ColorChoice::Never;
        Self::Spinner {
            bar,
            state: String::new(),
            colour,
        }
    }

    fn change(&mut self, status: &ExecutionStatus, elapsed: Duration) {
        let text = state_text(status);
        match self {
            Self::Lines => {
                if status.status.is_terminal() {
                    anstream::eprintln!(
                        "{} after {}",
                        paint(state_style(status.status), &text),
                        seconds(elapsed)
                    );
                } else {
                    anstream::eprintln!("{text}");
                }
            }
            Self::Spinner { bar, state, colour } => {
                if !state.is_empty() {
                    // The state before, kept above the spinner.
                    bar.println(state.clone());
                }
                *state = if *colour {
                    paint(state_style(status.status), &text)
                } else {
                    text
                };
                if status.status.is_terminal() {
                    bar.finish_and_clear();
                    anstream::eprintln!("{state} after {}", seconds(elapsed));
                } else {
                    bar.set_message(format!("{state} {}", seconds(elapsed)));
                }
            }
        }
    }

    fn tick(&self, elapsed: Duration) {
        if let Self::Spinner { bar, state, .. } = self {
            bar.set_message(format!("{state} {}", seconds(elapsed)));
            bar.tick();
        }
    }

    fn stop(&self) {
        if let Self::Spinner { bar, .. } = self
            && !bar.is_finished()
        {
            bar.abandon();
        }
    }
}

fn seconds(elapsed: Duration) -> String {
    format!("{:.1}s", elapsed.as_secs_f64())
}

/// An execution as `key: value` lines.
pub(crate) fn describe(status: &ExecutionStatus) -> String {
    let mut pairs = vec![
        ("execution", status.execution_id.as_str().to_owned()),
        ("function", status.function_name.as_str().to_owned()),
        (
            "status",
            paint(state_style(status.status), status.status.to_string()),
        ),
        ("attempt", status.attempt.to_string()),
        ("created", status.created_at.to_rfc3339()),
    ];
    if let Some(at) = status.started_at {
        pairs.push(("started", at.to_rfc3339()));
    }
    if let Some(at) = status.finished_at {
        pairs.push(("finished", at.to_rfc3339()));
    }
    if let Some(ms) = status.queue_wait_ms {
        pairs.push(("queue wait", output::millis(ms)));
    }
    if let Some(ms) = status.duration_ms {
        pairs.push(("duration", output::millis(ms)));
    }
    if status.cold_start {
        let init = status
            .init_duration_ms
            .map_or_else(String::new, |ms| format!(" (init {})", output::millis(ms)));
        pairs.push(("cold start", format!("yes{init}")));
    }
    if let Some(out) = &status.output {
        pairs.push(("output", output::plain(&out.to_value())));
    }
    if let Some(error) = &status.error {
        pairs.push(("error", format!("{}: {}", error.code, error.message)));
    }
    output::fields(&pairs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_must_be_safe_in_a_path() {
        assert!(check_id("0190a2b4-7c1e-7d3a-9f00-1234567890ab").is_ok());
        for bad in ["", "../x", "a b", "a?b", "a/b"] {
            assert!(check_id(bad).is_err(), "{bad}");
        }
    }
}
