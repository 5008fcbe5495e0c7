//! The `nanofaas` binary: see the `cli` library for what it owns.

fn main() -> std::process::ExitCode {
    cli::main()
}
