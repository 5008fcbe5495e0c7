//! One module per command group; [`run`] picks the command and gives its exit status.

mod apply;
mod config;
mod context;
mod exec;
mod functions;
mod invoke;
mod up;

use std::process::ExitCode;

use clap::ArgMatches;
use core_types::FunctionName;

use crate::args::{Cli, Command, Format};
use crate::client::Api;
use crate::contexts;
use crate::error::{CliError, Exit, Result};

/// What a command talking to the control plane needs.
#[derive(Debug)]
pub(crate) struct Session {
    /// The API.
    pub(crate) api: Api,
    /// How to print.
    pub(crate) format: Format,
}

impl Session {
    fn new(cli: &Cli) -> Result<Self> {
        Ok(Self {
            api: Api::new(contexts::resolve(&cli.global)?)?,
            format: cli.global.output,
        })
    }
}

/// Runs `cli` (`matches` are its parsed arguments, to tell a flag from the
/// environment).
pub(crate) async fn run(cli: Cli, matches: &ArgMatches) -> Result<ExitCode> {
    let format = cli.global.output;
    let exit = match &cli.command {
        Command::Function(command) => functions::run(&Session::new(&cli)?, command).await?,
        Command::Invoke(args) => invoke::invoke(&Session::new(&cli)?, args).await?,
        Command::Enqueue(args) => invoke::enqueue(&Session::new(&cli)?, args).await?,
        Command::Exec(command) => exec::run(&Session::new(&cli)?, command).await?,
        Command::Config(command) => config::run(&Session::new(&cli)?, command).await?,
        Command::Context(command) => context::run(&cli.global, matches, format, command)?,
        Command::Completions(args) => {
            let shell = match args.shell {
                crate::args::Shell::Bash => clap_complete::Shell::Bash,
                crate::args::Shell::Zsh => clap_complete::Shell::Zsh,
                crate::args::Shell::Fish => clap_complete::Shell::Fish,
            };
            clap_complete::generate(
                shell,
                &mut crate::command(),
                "nanofaas",
                &mut std::io::stdout(),
            );
            Exit::Success
        }
        Command::Up(args) => return up::run(args).await,
    };
    Ok(exit.into())
}

/// SIGINT (Ctrl-C), listened for from now on: registered at once, so a Ctrl-C that comes
/// before the first wait is not the default action (the process killed).
pub(crate) fn interrupts() -> Result<tokio::signal::unix::Signal> {
    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
        .map_err(|e| CliError::local(format!("cannot listen for Ctrl-C: {e}")))
}

/// A function name given on the command line, checked as the API checks it.
pub(crate) fn function_name(name: &str) -> Result<FunctionName> {
    FunctionName::parse(name).map_err(|_| {
        CliError::usage(format!(
            "{name:?} is not a function name (a letter, then up to 62 letters, digits, \
             '.', '_' or '-')"
        ))
    })
}
