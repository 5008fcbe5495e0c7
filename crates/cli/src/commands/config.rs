//! `config get` and `config patch --set key=value ...`: the runtime configuration,
//! changed with the revision check (`expectedRevision` is the revision read just before,
//! or `--revision`), so a change made meanwhile is refused rather than overwritten.

use core_types::{RuntimeConfigChange, RuntimeConfigView};
use reqwest::Method;
use serde_json::{Map, Number, Value};

use super::Session;
use crate::args::{ConfigCommand, ConfigPatchArgs, Format};
use crate::error::{CliError, Exit, Result};
use crate::output;

const PATH: &str = "/v1/admin/runtime-config";

/// Runs `config ...`.
pub(crate) async fn run(session: &Session, command: &ConfigCommand) -> Result<Exit> {
    match command {
        ConfigCommand::Get => {
            let config = read(session).await?;
            match session.format {
                Format::Text => anstream::print!("{}", describe(&config)),
                format => output::print_data(format, &config)?,
            }
            Ok(Exit::Success)
        }
        ConfigCommand::Patch(args) => patch(session, args).await,
    }
}

async fn read(session: &Session) -> Result<RuntimeConfigView> {
    session.api.get(PATH).await.map_err(admin_hint)
}

/// A 404 here is usually a control plane without `--admin-api`.
fn admin_hint(error: CliError) -> CliError {
    if error.code() == Some("NOT_FOUND") {
        error.with_hint("is the control plane started with --admin-api?")
    } else {
        error
    }
}

async fn patch(session: &Session, args: &ConfigPatchArgs) -> Result<Exit> {
    let mut body = Map::new();
    for item in &args.set {
        let (key, value) = item
            .split_once('=')
            .ok_or_else(|| CliError::usage(format!("--set takes KEY=VALUE, not {item:?}")))?;
        let key = key.trim();
        if key.is_empty() || key == "expectedRevision" || key == "revision" {
            return Err(CliError::usage(format!(
                "--set {item:?}: not a setting (the revision is --revision)"
            )));
        }
        body.insert(key.to_owned(), typed(value));
    }
    let revision = match args.revision {
        Some(revision) => revision,
        None => read(session).await?.revision,
    };
    body.insert("expectedRevision".to_owned(), Value::from(revision));
    let change: RuntimeConfigChange = session
        .api
        .send_json(Method::PATCH, PATH, &Value::Object(body))
        .await
        .map_err(|error| {
            if error.code() == Some("REVISION_MISMATCH") {
                error.with_hint(format!(
                    "it changed since revision {revision}: read it again \
                     (`nanofaas config get`) and repeat the change"
                ))
            } else {
                admin_hint(error)
            }
        })?;
    if session.format != Format::Text {
        output::print_data(session.format, &change)?;
        return Ok(Exit::Success);
    }
    anstream::println!("revision {} (was {revision})", change.revision);
    for warning in &change.warnings {
        anstream::eprintln!("warning: {warning}");
    }
    anstream::print!("{}", describe(&change.effective_config));
    Ok(Exit::Success)
}

/// A value as the JSON type it reads as: `true`/`false`, a number, else a string (so
/// ISO-8601 durations stay strings).
fn typed(value: &str) -> Value {
    let value = value.trim();
    match value {
        "true" => return Value::Bool(true),
        "false" => return Value::Bool(false),
        _ => {}
    }
    if let Ok(integer) = value.parse::<i64>() {
        return Value::from(integer);
    }
    if let Some(number) = value.parse::<f64>().ok().and_then(Number::from_f64)
        && value
            .chars()
            .all(|c| c.is_ascii_digit() || matches!(c, '.' | '-' | 'e' | 'E' | '+'))
    {
        return Value::Number(number);
    }
    Value::String(value.to_owned())
}

fn describe(config: &RuntimeConfigView) -> String {
    output::fields(&[
        ("revision", config.revision.to_string()),
        ("rateMaxPerSecond", config.rate_max_per_second.to_string()),
        ("syncQueueEnabled", config.sync_queue_enabled.to_string()),
        (
            "syncQueueAdmissionEnabled",
            config.sync_queue_admission_enabled.to_string(),
        ),
        (
            "syncQueueMaxEstimatedWait",
            config.sync_queue_max_estimated_wait.clone(),
        ),
        (
            "syncQueueMaxQueueWait",
            config.sync_queue_max_queue_wait.clone(),
        ),
        (
            "syncQueueRetryAfterSeconds",
            config.sync_queue_retry_after_seconds.to_string(),
        ),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_typed() {
        assert_eq!(typed("500"), Value::from(500));
        assert_eq!(typed("true"), Value::Bool(true));
        assert_eq!(typed("false"), Value::Bool(false));
        assert_eq!(typed("0.5"), serde_json::json!(0.5));
        assert_eq!(typed("PT2S"), Value::from("PT2S"));
        assert_eq!(typed("inf"), Value::from("inf"));
        assert_eq!(typed("NaN"), Value::from("NaN"));
    }
}
