//! How answers are printed: `-o json` and `-o yaml` give the API's own answer for
//! scripts; text gives aligned tables and `key: value` blocks for people. Colour goes
//! through anstream, which drops it when the stream is not a terminal, under
//! `NO_COLOR`, or with `CLICOLOR=0`.

use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use clap::builder::styling::{AnsiColor, Style};
use core_types::{ExecutionState, Timestamp};
use serde::Serialize;
use serde_json::Value;

use crate::args::Format;
use crate::error::{CliError, Result};

/// Bold, for headers and labels.
pub(crate) const BOLD: Style = Style::new().bold();

/// The colour of an execution's state.
pub(crate) fn state_style(state: ExecutionState) -> Style {
    match state {
        ExecutionState::Success => AnsiColor::Green.on_default(),
        ExecutionState::Error => AnsiColor::Red.on_default(),
        ExecutionState::Timeout => AnsiColor::Yellow.on_default(),
        ExecutionState::Running => AnsiColor::Cyan.on_default(),
        ExecutionState::Queued => Style::new(),
    }
}

/// `text` in `style` (anstream strips it where colour is off).
pub(crate) fn paint(style: Style, text: impl std::fmt::Display) -> String {
    format!("{style}{text}{style:#}")
}

/// A value as the API's JSON (through its JSON text, so payloads kept as raw JSON read
/// as the values they are).
pub(crate) fn to_value(value: &impl Serialize) -> Result<Value> {
    let text = serde_json::to_string(value)
        .map_err(|e| CliError::local(format!("cannot show the answer: {e}")))?;
    serde_json::from_str(&text).map_err(|e| CliError::local(format!("cannot show the answer: {e}")))
}

/// `value` as `format` (json or yaml) text, ending with a newline.
pub(crate) fn render_data(format: Format, value: &impl Serialize) -> Result<String> {
    let value = to_value(value)?;
    let text = match format {
        Format::Yaml => yaml_serde::to_string(&value)
            .map_err(|e| CliError::local(format!("cannot show the answer as YAML: {e}")))?,
        Format::Json | Format::Text => {
            let mut text = serde_json::to_string_pretty(&value)
                .map_err(|e| CliError::local(format!("cannot show the answer: {e}")))?;
            text.push('\n');
            text
        }
    };
    Ok(text)
}

/// Prints `value` as `format` (json or yaml) on stdout.
pub(crate) fn print_data(format: Format, value: &impl Serialize) -> Result<()> {
    anstream::print!("{}", render_data(format, value)?);
    Ok(())
}

/// A JSON value as a person reads it: a string as its text, anything else as JSON.
pub(crate) fn plain(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        other => serde_json::to_string_pretty(other).unwrap_or_default(),
    }
}

/// A table with aligned columns and a bold header.
#[derive(Debug)]
pub(crate) struct Table {
    headers: Vec<&'static str>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column headers.
    pub(crate) fn new(headers: &[&'static str]) -> Self {
        Self {
            headers: headers.to_vec(),
            rows: Vec::new(),
        }
    }

    /// Adds a row (one cell per header).
    pub(crate) fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// The text, each line ending with a newline; cells may carry styles, which do not
    /// count towards the width.
    pub(crate) fn render(&self) -> String {
        let columns = self.headers.len();
        let mut widths: Vec<usize> = self.headers.iter().map(|h| h.len()).collect();
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate().take(columns) {
                widths[i] = widths[i].max(visible_width(cell));
            }
        }
        let mut out = String::new();
        let line = |out: &mut String, cells: &mut dyn Iterator<Item = (usize, String)>| {
            let mut text = String::new();
            for (i, cell) in cells {
                if i + 1 < columns {
                    let pad = widths[i].saturating_sub(visible_width(&cell));
                    let _ = write!(text, "{cell}{}   ", " ".repeat(pad));
                } else {
                    text.push_str(&cell);
                }
            }
            out.push_str(text.trim_end());
            out.push('\n');
        };
        line(
            &mut out,
            &mut self
                .headers
                .iter()
                .enumerate()
                .map(|(i, h)| (i, paint(BOLD, h))),
        );
        for row in &self.rows {
            line(&mut out, &mut row.iter().cloned().enumerate());
        }
        out
    }
}

/// `key: value` lines with the values aligned.
pub(crate) fn fields(pairs: &[(&str, String)]) -> String {
    let width = pairs.iter().map(|(k, _)| k.len()).max().unwrap_or(0) + 1;
    let mut out = String::new();
    for (key, value) in pairs {
        let label = format!("{key}:");
        let _ = writeln!(
            out,
            "{}{} {value}",
            paint(BOLD, &label),
            " ".repeat(width - label.len())
        );
    }
    out
}

/// The width of `text` on a terminal, without its escape sequences.
fn visible_width(text: &str) -> usize {
    let mut width = 0;
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ ... final byte in @..~
            if chars.next() == Some('[') {
                for c in chars.by_ref() {
                    if ('@'..='~').contains(&c) {
                        break;
                    }
                }
            }
        } else {
            width += 1;
        }
    }
    width
}

/// How long ago `then` was, briefly (`12s`, `5m`, `3h`, `2d`).
pub(crate) fn age(then: Timestamp) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0);
    let seconds = now.saturating_sub(then.as_millis()) / 1000;
    match seconds {
        0..60 => format!("{seconds}s"),
        60..3600 => format!("{}m", seconds / 60),
        3600..86_400 => format!("{}h", seconds / 3600),
        _ => format!("{}d", seconds / 86_400),
    }
}

/// Milliseconds as a person reads them (`250ms`, `1.5s`, `2m3s`).
pub(crate) fn millis(ms: u64) -> String {
    match ms {
        0..1000 => format!("{ms}ms"),
        1000..60_000 => {
            let tenths = ms / 100;
            if tenths.is_multiple_of(10) {
                format!("{}s", tenths / 10)
            } else {
                format!("{}.{}s", tenths / 10, tenths % 10)
            }
        }
        _ => format!("{}m{}s", ms / 60_000, (ms % 60_000) / 1000),
    }
}

/// Prints a failure on stderr: `error: <sentence>`.
pub(crate) fn print_error(error: &CliError) {
    let label = paint(AnsiColor::Red.on_default().bold(), "error:");
    anstream::eprintln!("{label} {error}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_what_is_visible() {
        let mut table = Table::new(&["NAME", "STATUS"]);
        table.row(vec!["a-long-name".into(), paint(BOLD, "ok")]);
        table.row(vec!["b".into(), "error".into()]);
        let text = table.render();
        let plain: Vec<String> = text
            .lines()
            .map(|l| {
                let mut s = String::new();
                let mut skip = false;
                for c in l.chars() {
                    if c == '\u{1b}' {
                        skip = true;
                    } else if skip && ('@'..='~').contains(&c) && c != '[' {
                        skip = false;
                    } else if !skip {
                        s.push(c);
                    }
                }
                s
            })
            .collect();
        assert_eq!(
            plain,
            [
                "NAME          STATUS",
                "a-long-name   ok",
                "b             error"
            ]
        );
    }

    #[test]
    fn durations_read_briefly() {
        assert_eq!(millis(250), "250ms");
        assert_eq!(millis(1500), "1.5s");
        assert_eq!(millis(2000), "2s");
        assert_eq!(millis(123_000), "2m3s");
    }

    #[test]
    fn yaml_shows_payloads_as_values() {
        let value = serde_json::json!({"output": {"a": [1, "x"]}});
        assert_eq!(
            render_data(Format::Yaml, &value).unwrap(),
            "output:\n  a:\n  - 1\n  - x\n"
        );
    }
}
