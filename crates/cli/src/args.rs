//! The command tree (clap derive): every command, flag and help text. `nanofaas --help`
//! and the completions are generated from it.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::error::EXIT_STATUS_HELP;

/// The command line.
#[derive(Debug, Parser)]
#[command(
    name = "nanofaas",
    version,
    about = "The command-line client of the nanofaas control plane",
    long_about = "The command-line client of the nanofaas control plane: register functions, \
                  invoke them, follow executions, change the runtime configuration. It talks \
                  to the control plane's HTTP API only.",
    after_long_help = EXIT_STATUS_HELP,
    propagate_version = true,
    disable_help_subcommand = true
)]
pub struct Cli {
    /// Where and how to reach the control plane, and how to print.
    #[command(flatten)]
    pub global: Global,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The heading of the flags every command takes.
const GLOBAL: &str = "Global options";

/// The flags every command takes.
#[derive(Debug, Args)]
pub struct Global {
    /// The control plane's API URL [default: the context's, else http://127.0.0.1:8080]
    #[arg(
        long,
        global = true,
        help_heading = GLOBAL,
        env = "NANOFAAS_ENDPOINT",
        value_name = "URL",
        hide_env_values = true
    )]
    pub endpoint: Option<String>,
    /// The bearer token to send [default: the context's, else none]
    #[arg(
        long,
        global = true,
        help_heading = GLOBAL,
        env = "NANOFAAS_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    pub token: Option<String>,
    /// Use this context instead of the current one
    #[arg(
        long,
        global = true,
        help_heading = GLOBAL,
        env = "NANOFAAS_CONTEXT",
        value_name = "NAME",
        hide_env_values = true
    )]
    pub context: Option<String>,
    /// How to print answers: text (tables, for people), json or yaml (for scripts)
    #[arg(
        short = 'o',
        long,
        global = true,
        help_heading = GLOBAL,
        value_enum,
        default_value_t = Format::Text
    )]
    pub output: Format,
}

/// How answers are printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Tables and sentences.
    Text,
    /// The API's JSON, pretty-printed.
    Json,
    /// The API's answer as YAML.
    Yaml,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Register, list, inspect, scale and remove functions
    #[command(name = "fn", subcommand)]
    Function(FunctionCommand),
    /// Invoke a function and wait for its output
    #[command(after_long_help = EXIT_STATUS_HELP)]
    Invoke(InvokeArgs),
    /// Enqueue an invocation and print its execution id
    #[command(after_long_help = EXIT_STATUS_HELP)]
    Enqueue(EnqueueArgs),
    /// Inspect executions
    #[command(subcommand)]
    Exec(ExecCommand),
    /// Read and change the runtime configuration (needs --admin-api on the control plane)
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Named control planes (endpoint and token) to talk to
    #[command(subcommand)]
    Context(ContextCommand),
    /// Print a shell completion script
    Completions(CompletionsArgs),
    /// Start a local control plane in the foreground, for trying things out
    #[command(
        long_about = "Start a local control plane in the foreground with its defaults, for trying \
                      things out: the `control-plane` binary next to this one, else the one on \
                      PATH. It prints where its data lives and the endpoint to use; Ctrl-C stops \
                      it (it finishes what is in flight first). Arguments after `--` go to \
                      control-plane (e.g. `nanofaas up -- --admin-api`)."
    )]
    Up(UpArgs),
}

/// `nanofaas fn ...`.
#[derive(Debug, Subcommand)]
pub enum FunctionCommand {
    /// Register functions from spec files, replacing those whose spec changed
    #[command(
        long_about = "Register functions from spec files (YAML or JSON, a directory of them, \
                      several YAML documents in one file). A function that does not exist is \
                      created; one whose spec differs from the control plane's is replaced \
                      (removed and registered again: its queued executions end with \
                      FUNCTION_REMOVED); one that is the same is left alone (\"unchanged\")."
    )]
    Apply(ApplyArgs),
    /// List the registered functions
    List,
    /// Show one function
    Get(NameArg),
    /// Remove a function (its queued executions end with FUNCTION_REMOVED)
    Delete(NameArg),
    /// Set how many replicas a DEPLOYMENT function runs (pins an autoscaled one)
    Scale(ScaleArgs),
    /// Print what a function's replicas wrote
    Logs(LogsArgs),
}

/// A function's name.
#[derive(Debug, Args)]
pub struct NameArg {
    /// The function's name
    pub name: String,
}

/// `fn apply`.
#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// A spec file (.yaml, .yml, .json) or a directory of them; `-` reads stdin
    #[arg(short = 'f', long = "file", value_name = "PATH", required = true)]
    pub files: Vec<PathBuf>,
}

/// `fn scale`.
#[derive(Debug, Args)]
pub struct ScaleArgs {
    /// The function's name
    pub name: String,
    /// How many replicas to run (0 stops them all)
    #[arg(long, value_name = "N")]
    pub replicas: u32,
}

/// `fn logs`.
#[derive(Debug, Args)]
pub struct LogsArgs {
    /// The function's name
    pub name: String,
    /// How many of the last lines to print (1..=10000)
    #[arg(long, value_name = "N", default_value_t = 100)]
    pub tail: u32,
    /// Keep printing new lines as they come, until Ctrl-C
    #[arg(short = 'f', long)]
    pub follow: bool,
}

/// What to invoke a function with.
#[derive(Debug, Args)]
pub struct InvocationArgs {
    /// The function's name
    pub name: String,
    /// The input, as JSON (`-d '{"a": 1}'`), or `@FILE` to read it from a file (`@-`:
    /// stdin). Without it the input is read from stdin
    #[arg(short = 'd', long = "data", value_name = "JSON|@FILE")]
    pub data: Option<String>,
    /// Metadata passed to the function, KEY=VALUE (repeatable)
    #[arg(long = "metadata", value_name = "KEY=VALUE")]
    pub metadata: Vec<String>,
    /// An idempotency key: the same key (and input) gives the same execution
    #[arg(long, value_name = "KEY")]
    pub idempotency_key: Option<String>,
    /// An extra request header, KEY=VALUE (repeatable), e.g. X-Trace-Id=abc
    #[arg(short = 'H', long = "header", value_name = "KEY=VALUE")]
    pub headers: Vec<String>,
}

/// `invoke`.
#[derive(Debug, Args)]
pub struct InvokeArgs {
    /// The invocation
    #[command(flatten)]
    pub invocation: InvocationArgs,
    /// How long the control plane waits for the end (500ms, 5s, 2m or PT5S; at most 5m)
    /// [default: the function's timeoutMs]
    #[arg(long, value_name = "DURATION")]
    pub timeout: Option<String>,
}

/// `enqueue`.
#[derive(Debug, Args)]
pub struct EnqueueArgs {
    /// The invocation
    #[command(flatten)]
    pub invocation: InvocationArgs,
    /// Follow the execution to its end and print its output, with invoke's exit statuses
    #[arg(long)]
    pub wait: bool,
}

/// `exec ...`.
#[derive(Debug, Subcommand)]
pub enum ExecCommand {
    /// Show an execution; --watch follows it to its end
    #[command(after_long_help = EXIT_STATUS_HELP)]
    Get(ExecGetArgs),
}

/// `exec get`.
#[derive(Debug, Args)]
pub struct ExecGetArgs {
    /// The execution id
    pub id: String,
    /// Show the state as it changes (queued, running with its attempt, the end) until the
    /// end, then the execution; exits with invoke's statuses
    #[arg(short = 'w', long)]
    pub watch: bool,
}

/// `config ...`.
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Show the runtime configuration and its revision
    Get,
    /// Change settings of the runtime configuration
    #[command(
        long_about = "Change settings of the runtime configuration. The change names the \
                      revision it was made against (read first, or --revision), so a change \
                      made meanwhile by someone else is refused instead of overwritten. \
                      Values are typed: true/false are booleans, numbers are numbers, \
                      anything else (ISO-8601 durations like PT2S) is a string."
    )]
    Patch(ConfigPatchArgs),
}

/// `config patch`.
#[derive(Debug, Args)]
pub struct ConfigPatchArgs {
    /// A setting to change, KEY=VALUE (repeatable), e.g. rateMaxPerSecond=500
    #[arg(long = "set", value_name = "KEY=VALUE", required = true)]
    pub set: Vec<String>,
    /// The revision the change is made against [default: the one read just before]
    #[arg(long, value_name = "N")]
    pub revision: Option<u64>,
}

/// `context ...`.
#[derive(Debug, Subcommand)]
pub enum ContextCommand {
    /// Add a context (or change one); the first one added becomes the current one
    #[command(
        long_about = "Add a context, or change one: `nanofaas context add NAME --endpoint URL \
                      [--token TOKEN]` (both given on the command line; the environment's \
                      NANOFAAS_ENDPOINT and NANOFAAS_TOKEN are not stored). The first context \
                      added becomes the current one. The config file holds tokens, so it is \
                      written readable by its owner only (0600)."
    )]
    Add(ContextAddArgs),
    /// Make a context the current one
    Use(ContextNameArg),
    /// List the contexts (* marks the current one)
    List,
    /// Remove a context
    Delete(ContextNameArg),
}

/// `context add`.
#[derive(Debug, Args)]
pub struct ContextAddArgs {
    /// Its name
    pub name: String,
}

/// A context's name.
#[derive(Debug, Args)]
pub struct ContextNameArg {
    /// The context's name
    pub name: String,
}

/// `completions`.
#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell
    #[arg(value_enum)]
    pub shell: Shell,
}

/// The shells completions are made for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Shell {
    /// bash (`source <(nanofaas completions bash)`)
    Bash,
    /// zsh (`nanofaas completions zsh > ~/.zfunc/_nanofaas`)
    Zsh,
    /// fish (`nanofaas completions fish > ~/.config/fish/completions/nanofaas.fish`)
    Fish,
}

/// `up`.
#[derive(Debug, Args)]
pub struct UpArgs {
    /// Arguments for control-plane (see `control-plane --help`)
    #[arg(last = true, value_name = "CONTROL_PLANE_ARGS")]
    pub args: Vec<String>,
}
