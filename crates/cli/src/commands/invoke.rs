//! `invoke` (sync: waits for the end) and `enqueue` (async: the execution id, or with
//! `--wait` the end), their input (`-d JSON`, `-d @FILE`, stdin), headers and timeout,
//! and how an execution's end becomes output and an exit status.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Read};
use std::time::Duration;

use core_types::{ErrorInfo, ExecutionState, InvocationResponse, TIMEOUT_RANGE_MS, headers};
use reqwest::Method;
use reqwest::header::{HeaderName, HeaderValue};
use serde_json::{Value, json};

use super::{Session, exec, function_name};
use crate::args::{EnqueueArgs, Format, InvocationArgs, InvokeArgs};
use crate::error::{CliError, Exit, Result};
use crate::output;

/// Runs `invoke`.
pub(crate) async fn invoke(session: &Session, args: &InvokeArgs) -> Result<Exit> {
    let timeout = args.timeout.as_deref().map(parse_timeout).transpose()?;
    let mut request = prepare(session, &args.invocation, "invoke")?;
    if let Some(timeout) = timeout {
        request = request.header(headers::X_TIMEOUT_MS, timeout.as_millis().to_string());
    }
    // The control plane bounds the wait (this timeout, else the function's, at most
    // 5 minutes); the client waits a little longer so that its answer arrives.
    let wait = timeout.unwrap_or(Duration::from_millis(*TIMEOUT_RANGE_MS.end()));
    let request = request.timeout(wait + Duration::from_secs(30));
    let response = session.api.send(request).await?;
    let answer: InvocationResponse = session.api.read(response).await?;
    finish(
        session.format,
        &answer,
        answer.execution_id.as_str(),
        answer.status,
        answer.output.as_ref().map(|o| o.to_value()),
        answer.error.as_ref(),
    )
}

/// Runs `enqueue`.
pub(crate) async fn enqueue(session: &Session, args: &EnqueueArgs) -> Result<Exit> {
    let request = prepare(session, &args.invocation, "enqueue")?;
    let response = session.api.send(request).await?;
    let answer: InvocationResponse = session.api.read(response).await?;
    if args.wait {
        return exec::follow(session, answer.execution_id.as_str(), false).await;
    }
    match session.format {
        Format::Text => anstream::println!("{}", answer.execution_id),
        format => output::print_data(format, &answer)?,
    }
    Ok(Exit::Success)
}

/// The request of `:action` with its body and headers.
fn prepare(
    session: &Session,
    args: &InvocationArgs,
    action: &str,
) -> Result<reqwest::RequestBuilder> {
    let name = function_name(&args.name)?;
    let input = read_input(args.data.as_deref())?;
    let metadata = pairs(&args.metadata, "--metadata")?;
    let mut request = session
        .api
        .request(Method::POST, &format!("/v1/functions/{name}:{action}"))
        .json(&json!({"input": input, "metadata": metadata}));
    if let Some(key) = &args.idempotency_key {
        request = request.header(
            headers::IDEMPOTENCY_KEY,
            header_value(key, "--idempotency-key")?,
        );
    }
    for (key, value) in pairs(&args.headers, "--header")? {
        let name = HeaderName::from_bytes(key.as_bytes())
            .map_err(|_| CliError::usage(format!("--header: {key:?} is not a header name")))?;
        request = request.header(name, header_value(&value, "--header")?);
    }
    Ok(request)
}

fn header_value(value: &str, flag: &str) -> Result<HeaderValue> {
    HeaderValue::from_str(value)
        .map_err(|_| CliError::usage(format!("{flag}: {value:?} cannot be sent in a header")))
}

/// `KEY=VALUE` arguments as pairs, in key order.
fn pairs(items: &[String], flag: &str) -> Result<BTreeMap<String, String>> {
    items
        .iter()
        .map(|item| {
            let (key, value) = item
                .split_once('=')
                .ok_or_else(|| CliError::usage(format!("{flag} takes KEY=VALUE, not {item:?}")))?;
            if key.is_empty() {
                return Err(CliError::usage(format!("{flag}: {item:?} has no key")));
            }
            Ok((key.to_owned(), value.to_owned()))
        })
        .collect()
}

/// The input: `-d JSON`, `-d @FILE` (`@-`: stdin), or stdin when it is not a terminal.
fn read_input(data: Option<&str>) -> Result<Value> {
    let (text, from) = match data {
        Some(path) if path.starts_with('@') => {
            let path = &path[1..];
            if path == "-" {
                (read_stdin()?, "stdin".to_owned())
            } else {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| CliError::local(format!("cannot read the input {path}: {e}")))?;
                (text, path.to_owned())
            }
        }
        Some(text) => {
            return serde_json::from_str(text).map_err(|e| {
                CliError::usage(format!(
                    "-d is not JSON ({e}); a string is quoted: -d '\"hello\"'"
                ))
            });
        }
        None if std::io::stdin().is_terminal() => {
            return Err(CliError::usage(
                "no input: give -d JSON, -d @FILE, or pipe the JSON on stdin",
            ));
        }
        None => (read_stdin()?, "stdin".to_owned()),
    };
    if text.trim().is_empty() {
        return Err(CliError::local(format!(
            "the input from {from} is empty (it must be JSON)"
        )));
    }
    serde_json::from_str(&text)
        .map_err(|e| CliError::local(format!("the input from {from} is not JSON: {e}")))
}

fn read_stdin() -> Result<String> {
    let mut text = String::new();
    std::io::stdin()
        .read_to_string(&mut text)
        .map_err(|e| CliError::local(format!("cannot read stdin: {e}")))?;
    Ok(text)
}

/// A duration given as `500ms`, `5s`, `2m`, `1h` or ISO-8601 (`PT5S`), within the
/// contract's 1 ms ..= 5 min.
pub(crate) fn parse_timeout(text: &str) -> Result<Duration> {
    let bad = || {
        CliError::usage(format!(
            "--timeout {text:?}: give a duration like 500ms, 5s, 2m or PT5S"
        ))
    };
    // jiff reads both the friendly form (`500ms`, `5s`, `2m`) and ISO 8601 (`PT5S`).
    let signed: jiff::SignedDuration = text.parse().map_err(|_| bad())?;
    let duration = Duration::try_from(signed).map_err(|_| bad())?;
    let millis = u64::try_from(duration.as_millis()).unwrap_or(u64::MAX);
    if !TIMEOUT_RANGE_MS.contains(&millis) {
        return Err(CliError::usage(format!(
            "--timeout {text:?}: must be from 1ms to 5m"
        )));
    }
    Ok(Duration::from_millis(millis))
}

/// Prints how an execution ended (`answer` is what `-o json|yaml` shows) and gives its
/// exit status: its output on success, a sentence on stderr otherwise.
pub(crate) fn finish(
    format: Format,
    answer: &impl serde::Serialize,
    id: &str,
    status: ExecutionState,
    output: Option<Value>,
    error: Option<&ErrorInfo>,
) -> Result<Exit> {
    if format != Format::Text {
        output::print_data(format, answer)?;
    }
    let reason = || {
        error.map_or_else(String::new, |e| {
            if e.message.is_empty() {
                format!(": {}", e.code)
            } else {
                format!(": {} ({})", e.message, e.code)
            }
        })
    };
    let sentence = match status {
        ExecutionState::Success => {
            if format == Format::Text {
                anstream::println!("{}", output::plain(&output.unwrap_or(Value::Null)));
            }
            return Ok(Exit::Success);
        }
        ExecutionState::Error => format!("execution {id} ended in error{}", reason()),
        ExecutionState::Timeout => format!("execution {id} timed out{}", reason()),
        ExecutionState::Queued | ExecutionState::Running => format!(
            "execution {id} is still {status} (`nanofaas exec get {id} --watch` follows it)"
        ),
    };
    output::print_error(&CliError::local(sentence));
    Ok(Exit::of_state(status))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_read_friendly_and_iso_forms() {
        assert_eq!(parse_timeout("5s").unwrap(), Duration::from_secs(5));
        assert_eq!(parse_timeout("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_timeout("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_timeout("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_timeout("PT5S").unwrap(), Duration::from_secs(5));
        for bad in ["5", "", "s", "5x", "0s", "6m", "-1s", "PT", "1h"] {
            assert!(parse_timeout(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn pairs_need_a_key_and_an_equals_sign() {
        let got = pairs(&["a=1".into(), "b=x=y".into()], "--metadata").unwrap();
        assert_eq!(got["b"], "x=y");
        assert!(pairs(&["novalue".into()], "--metadata").is_err());
        assert!(pairs(&["=v".into()], "--metadata").is_err());
    }

    #[test]
    fn inline_input_must_be_json() {
        assert_eq!(read_input(Some("{\"a\": 1}")).unwrap(), json!({"a": 1}));
        assert!(read_input(Some("hello")).is_err());
        assert!(read_input(Some("@/nonexistent/input.json")).is_err());
    }
}
