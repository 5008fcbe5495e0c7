//! `nanofaas`, the command-line client of the control plane, with the command tree of
//! the nanofaas CLI: `fn apply/list/get/delete/scale/logs`, `invoke`, `enqueue`,
//! `exec get [--watch]`, `config get/patch`, `context add/use/list/delete`,
//! `completions`, and `up` (a local control plane for trying it out).
//!
//! Owns: the command line (`args.rs`, clap derive; the exit statuses in `error.rs`),
//! contexts and the config file holding endpoints and tokens (`contexts.rs`), the HTTP
//! client of the API with its error sentences (`client.rs`), the output formats and
//! tables (`output.rs`), and one module per command group under `commands/`.
//!
//! Must not know: the engine. It talks only HTTP to the control plane's API, reading
//! and writing the wire types of core-types (`FunctionSpec`, `FunctionView`,
//! `ExecutionStatus`, `InvocationResponse`, `RuntimeConfigView`, `ErrorBody`, ...); it
//! never depends on http-api, the scheduler, the stores or any other engine crate, so
//! the client stays as small as an HTTP client and a few formatters (`cargo xtask
//! tidy` checks the arrow). It spawns no task or thread: everything runs on one
//! current-thread runtime in `main`, the spinner ticked by the loop that polls.

mod args;
mod client;
mod commands;
mod contexts;
mod error;
mod output;

use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches};

pub use args::Cli;

use crate::error::{CliError, Exit};

/// The whole command tree, as clap sees it (the help texts, completions).
pub fn command() -> clap::Command {
    Cli::command()
}

/// Runs the command line of this process and gives its exit status.
pub fn main() -> ExitCode {
    let matches = match command().try_get_matches() {
        Ok(matches) => matches,
        Err(error) => {
            // --help and --version are "errors" that print to stdout and exit 0.
            let _ = error.print();
            return ExitCode::from(u8::try_from(error.exit_code()).unwrap_or(2));
        }
    };
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(error) => {
            let _ = error.print();
            return Exit::Usage.into();
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            output::print_error(&CliError::local(format!("cannot start: {e}")));
            return Exit::Local.into();
        }
    };
    match runtime.block_on(commands::run(cli, &matches)) {
        Ok(code) => code,
        Err(error) => {
            output::print_error(&error);
            error.exit().into()
        }
    }
}
