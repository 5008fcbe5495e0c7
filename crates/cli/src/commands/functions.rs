//! `fn list`, `fn get`, `fn delete`, `fn scale`, `fn logs` (and `fn apply`, in
//! `apply.rs`).

use std::time::Duration;

use core_types::{FunctionView, ScalingConfig};
use reqwest::Method;
use serde_json::json;

use super::{Session, apply, function_name};
use crate::args::{Format, FunctionCommand, LogsArgs, ScaleArgs};
use crate::error::{CliError, Exit, Result};
use crate::output::{self, Table};

/// Runs `fn ...`.
pub(crate) async fn run(session: &Session, command: &FunctionCommand) -> Result<Exit> {
    match command {
        FunctionCommand::Apply(args) => apply::run(session, args).await,
        FunctionCommand::List => list(session).await,
        FunctionCommand::Get(args) => get(session, &args.name).await,
        FunctionCommand::Delete(args) => delete(session, &args.name).await,
        FunctionCommand::Scale(args) => scale(session, args).await,
        FunctionCommand::Logs(args) => logs(session, args).await,
    }
}

/// `/v1/functions/{name}`.
pub(crate) fn function_path(name: &core_types::FunctionName) -> String {
    format!("/v1/functions/{}", name.as_str())
}

async fn list(session: &Session) -> Result<Exit> {
    let functions: Vec<FunctionView> = session.api.get("/v1/functions").await?;
    if session.format != Format::Text {
        output::print_data(session.format, &functions)?;
        return Ok(Exit::Success);
    }
    if functions.is_empty() {
        anstream::println!("no functions registered (`nanofaas fn apply -f SPEC` adds one)");
        return Ok(Exit::Success);
    }
    let mut table = Table::new(&[
        "NAME",
        "MODE",
        "RUNTIME",
        "REPLICAS",
        "CONCURRENCY",
        "TIMEOUT",
        "AGE",
    ]);
    for view in &functions {
        let spec = &view.spec;
        table.row(vec![
            spec.name.as_str().to_owned(),
            mode(view),
            format!("{:?}", spec.runtime_mode).to_uppercase(),
            view.replicas
                .as_ref()
                .map_or_else(|| "-".to_owned(), |r| format!("{}/{}", r.ready, r.desired)),
            spec.concurrency.to_string(),
            output::millis(spec.timeout_ms),
            output::age(view.created_at),
        ]);
    }
    anstream::print!("{}", table.render());
    Ok(Exit::Success)
}

/// The mode it runs in, and the one it asked for when they differ.
fn mode(view: &FunctionView) -> String {
    let effective = mode_name(view.effective_execution_mode);
    if view.requested_execution_mode == view.effective_execution_mode {
        effective
    } else {
        format!(
            "{effective} (asked {})",
            mode_name(view.requested_execution_mode)
        )
    }
}

fn mode_name(mode: core_types::ExecutionMode) -> String {
    serde_json::to_value(mode)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

async fn get(session: &Session, name: &str) -> Result<Exit> {
    let name = function_name(name)?;
    let view: FunctionView = session.api.get(&function_path(&name)).await?;
    if session.format != Format::Text {
        output::print_data(session.format, &view)?;
        return Ok(Exit::Success);
    }
    anstream::print!("{}", describe(&view));
    Ok(Exit::Success)
}

/// A function as `key: value` lines.
pub(crate) fn describe(view: &FunctionView) -> String {
    let spec = &view.spec;
    let mut pairs = vec![
        ("name", spec.name.as_str().to_owned()),
        ("image", spec.image.clone()),
        ("mode", mode(view)),
    ];
    if let Some(reason) = &view.degradation_reason {
        pairs.push(("why", reason.clone()));
    }
    pairs.push((
        "runtime",
        serde_json::to_value(spec.runtime_mode)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default(),
    ));
    if let Some(url) = &spec.endpoint_url {
        pairs.push(("endpoint", url.clone()));
    }
    if !spec.command.is_empty() {
        pairs.push(("command", spec.command.join(" ")));
    }
    if !spec.env.is_empty() {
        let env: Vec<String> = spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
        pairs.push(("env", env.join(" ")));
    }
    pairs.extend([
        ("timeout", output::millis(spec.timeout_ms)),
        ("concurrency", spec.concurrency.to_string()),
        ("queue size", spec.queue_size.to_string()),
        ("attempts", spec.max_attempts().to_string()),
    ]);
    if let Some(scaling) = &spec.scaling_config {
        pairs.push(("scaling", scaling_text(scaling)));
    }
    if let Some(replicas) = &view.replicas {
        let mut text = format!("{} ready of {} desired", replicas.ready, replicas.desired);
        if replicas.pinned {
            text.push_str(", pinned");
        }
        if replicas.restarts > 0 {
            text.push_str(&format!(", {} restarts", replicas.restarts));
        }
        pairs.push(("replicas", text));
        if let Some(crash) = &replicas.crash_loop {
            pairs.push(("crash loop", crash.clone()));
        }
    }
    pairs.push((
        "created",
        format!(
            "{} ({} ago)",
            view.created_at.to_rfc3339(),
            output::age(view.created_at)
        ),
    ));
    output::fields(&pairs)
}

fn scaling_text(scaling: &ScalingConfig) -> String {
    let value = output::to_value(scaling).unwrap_or_default();
    let strategy = value["strategy"].as_str().unwrap_or("-");
    let range = match (value["minReplicas"].as_u64(), value["maxReplicas"].as_u64()) {
        (Some(min), Some(max)) => format!(" {min}..{max} replicas"),
        _ => String::new(),
    };
    let metrics: Vec<String> = value["metrics"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| {
            format!(
                "{}={}",
                m["type"].as_str().unwrap_or("?"),
                m["target"].as_str().unwrap_or("?")
            )
        })
        .collect();
    if metrics.is_empty() {
        format!("{strategy}{range}")
    } else {
        format!("{strategy}{range}, {}", metrics.join(" "))
    }
}

async fn delete(session: &Session, name: &str) -> Result<Exit> {
    let name = function_name(name)?;
    session
        .api
        .send(session.api.request(Method::DELETE, &function_path(&name)))
        .await?;
    match session.format {
        Format::Text => anstream::println!("{name}: deleted"),
        format => output::print_data(format, &json!({"name": name, "deleted": true}))?,
    }
    Ok(Exit::Success)
}

async fn scale(session: &Session, args: &ScaleArgs) -> Result<Exit> {
    let name = function_name(&args.name)?;
    let answer: serde_json::Value = session
        .api
        .send_json(
            Method::PUT,
            &format!("{}/replicas", function_path(&name)),
            &json!({"replicas": args.replicas}),
        )
        .await?;
    match session.format {
        Format::Text => {
            let plural = if args.replicas == 1 { "" } else { "s" };
            anstream::println!("{name}: scaled to {} replica{plural}", args.replicas);
        }
        format => output::print_data(format, &answer)?,
    }
    Ok(Exit::Success)
}

/// The most lines one logs request returns (the API's bound).
const MAX_TAIL: u32 = 10_000;

/// `--follow`'s polls: at once after new lines, then slower while nothing comes.
const FOLLOW_MIN: Duration = Duration::from_millis(200);
const FOLLOW_MAX: Duration = Duration::from_secs(2);

async fn logs(session: &Session, args: &LogsArgs) -> Result<Exit> {
    let name = function_name(&args.name)?;
    if !(1..=MAX_TAIL).contains(&args.tail) {
        return Err(CliError::usage(format!(
            "--tail must be from 1 to {MAX_TAIL}, not {}",
            args.tail
        )));
    }
    let path = format!("{}/logs", function_path(&name));
    // Following reads the whole window each time (the most the API gives), so each
    // read can be lined up with the one before; the first prints its last --tail lines.
    let tail = if args.follow { MAX_TAIL } else { args.tail };
    let mut interrupted = if args.follow {
        Some(super::interrupts()?)
    } else {
        None
    };
    let mut seen = fetch_logs(session, &path, tail).await?;
    let skip = seen.len().saturating_sub(args.tail as usize);
    for line in &seen[skip..] {
        anstream::println!("{line}");
    }
    let Some(interrupted) = interrupted.as_mut() else {
        return Ok(Exit::Success);
    };
    let mut pause = FOLLOW_MIN;
    loop {
        tokio::select! {
            _ = interrupted.recv() => return Ok(Exit::Success),
            () = tokio::time::sleep(pause) => {}
        }
        let now = fetch_logs(session, &path, tail).await?;
        let fresh = new_lines(&seen, &now);
        if fresh.is_empty() {
            pause = (pause * 2).min(FOLLOW_MAX);
        } else {
            for line in fresh {
                anstream::println!("{line}");
            }
            pause = FOLLOW_MIN;
        }
        seen = now;
    }
}

async fn fetch_logs(session: &Session, path: &str, tail: u32) -> Result<Vec<String>> {
    let response = session
        .api
        .send(
            session
                .api
                .request(Method::GET, &format!("{path}?tail={tail}")),
        )
        .await?;
    let text = response
        .text()
        .await
        .map_err(|e| session.api.transport(&e))?;
    Ok(text.lines().map(str::to_owned).collect())
}

/// The lines of `now` that came after `before`: both are windows (the last lines) of
/// one growing log, so `now` is a tail of `before` followed by what is new. The longest
/// such overlap is taken (lines repeat; a shorter one would print old lines again).
fn new_lines<'a>(before: &[String], now: &'a [String]) -> &'a [String] {
    for start in 0..before.len() {
        let kept = &before[start..];
        if kept.len() <= now.len() && now[..kept.len()] == *kept {
            return &now[kept.len()..];
        }
    }
    now
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(text: &str) -> Vec<String> {
        text.split_whitespace().map(str::to_owned).collect()
    }

    #[test]
    fn new_lines_are_what_follows_the_overlap() {
        let before = lines("a b c");
        assert_eq!(new_lines(&before, &lines("a b c d e")), lines("d e"));
        assert_eq!(new_lines(&before, &lines("b c d")), lines("d"));
        assert!(new_lines(&before, &lines("a b c")).is_empty());
        assert_eq!(new_lines(&before, &lines("x y")), lines("x y"));
        assert_eq!(new_lines(&[], &lines("x")), lines("x"));
        // Repeated lines: the longest overlap wins.
        assert_eq!(new_lines(&lines("x x"), &lines("x x x")), lines("x"));
    }
}
