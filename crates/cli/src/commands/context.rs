//! `context add/use/list/delete`: the named control planes of the config file.

use clap::ArgMatches;
use clap::parser::ValueSource;
use serde_json::json;

use crate::args::{ContextCommand, Format, Global};
use crate::contexts::{ConfigFile, Context, check_endpoint, config_path};
use crate::error::{CliError, Exit, Result};
use crate::output::{self, Table};

/// Runs `context ...`.
pub(crate) fn run(
    global: &Global,
    matches: &ArgMatches,
    format: Format,
    command: &ContextCommand,
) -> Result<Exit> {
    let path = config_path()?;
    let mut file = ConfigFile::load(&path)?;
    match command {
        ContextCommand::Add(args) => {
            check_name(&args.name)?;
            // Only what was typed: the environment's endpoint and token are not stored.
            let typed = |id: &str| matches.value_source(id) == Some(ValueSource::CommandLine);
            let endpoint = global
                .endpoint
                .as_deref()
                .filter(|_| typed("endpoint"))
                .ok_or_else(|| {
                    CliError::usage("context add needs --endpoint URL on the command line")
                })?;
            let endpoint = check_endpoint(endpoint)?;
            let token = global.token.clone().filter(|_| typed("token"));
            let existed = file
                .contexts
                .insert(args.name.clone(), Context { endpoint, token })
                .is_some();
            let mut made_current = false;
            if file.current.is_none() {
                file.current = Some(args.name.clone());
                made_current = true;
            }
            file.save(&path)?;
            let what = if existed { "updated" } else { "added" };
            let current = if made_current {
                " (now the current one)"
            } else {
                ""
            };
            anstream::println!("context {}: {what}{current}", args.name);
        }
        ContextCommand::Use(args) => {
            if !file.contexts.contains_key(&args.name) {
                return Err(unknown(&args.name, &path));
            }
            file.current = Some(args.name.clone());
            file.save(&path)?;
            anstream::println!("context {}: now the current one", args.name);
        }
        ContextCommand::Delete(args) => {
            if file.contexts.remove(&args.name).is_none() {
                return Err(unknown(&args.name, &path));
            }
            if file.current.as_deref() == Some(args.name.as_str()) {
                file.current = None;
            }
            file.save(&path)?;
            anstream::println!("context {}: deleted", args.name);
        }
        ContextCommand::List => list(&file, format)?,
    }
    Ok(Exit::Success)
}

fn list(file: &ConfigFile, format: Format) -> Result<()> {
    if format != Format::Text {
        // Tokens are never printed: only whether one is set.
        let contexts: Vec<_> = file
            .contexts
            .iter()
            .map(|(name, context)| {
                json!({
                    "name": name,
                    "endpoint": context.endpoint,
                    "hasToken": context.token.is_some(),
                    "current": file.current.as_deref() == Some(name.as_str()),
                })
            })
            .collect();
        return output::print_data(format, &contexts);
    }
    if file.contexts.is_empty() {
        anstream::println!("no contexts (`nanofaas context add NAME --endpoint URL` adds one)");
        return Ok(());
    }
    let mut table = Table::new(&["CURRENT", "NAME", "ENDPOINT", "TOKEN"]);
    for (name, context) in &file.contexts {
        let current = file.current.as_deref() == Some(name.as_str());
        table.row(vec![
            if current { "*" } else { "" }.to_owned(),
            name.clone(),
            context.endpoint.clone(),
            if context.token.is_some() { "set" } else { "-" }.to_owned(),
        ]);
    }
    anstream::print!("{}", table.render());
    Ok(())
}

fn check_name(name: &str) -> Result<()> {
    let valid = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if valid {
        Ok(())
    } else {
        Err(CliError::usage(format!(
            "{name:?} is not a context name (letters, digits, '-', '_', '.')"
        )))
    }
}

fn unknown(name: &str, path: &std::path::Path) -> CliError {
    CliError::usage(format!(
        "there is no context {name:?} in {} (`nanofaas context list` shows them)",
        path.display()
    ))
}
