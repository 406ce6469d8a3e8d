//! The `noiseda` binary: logging, fault injection, `Cli::parse()`, then [`cli::run`]; an error
//! is printed as `error: …` and exits non-zero. The command line itself lives in `cli/`.

mod cli;

use clap::Parser;

fn main() -> std::process::ExitCode {
    noiseda::device::tune_allocator();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,noiseda=info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    // Fault injection for the crash tests (FAILPOINTS=name=action;...); inert when unset.
    let _faults = fail::FailScenario::setup();
    match cli::run(cli::Cli::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
