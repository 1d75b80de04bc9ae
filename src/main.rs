//! `shoal`: the one binary of Shoal, a WebAssembly-native orchestrator.
//!
//! `main` is thin: logging, argument parsing, dispatch. Each subcommand lives in its own file
//! under [`commands`] with one `execute`.

mod commands;
mod connect;
mod jsonpath;
mod output;
mod period;
mod targets;

use clap::Parser;

/// Shoal: run WebAssembly workloads across a cluster, declared in YAML.
#[derive(Parser)]
#[command(name = "shoal", version, about, propagate_version = true)]
pub struct Cli {
    #[command(flatten)]
    connection: connect::ConnectionArgs,
    #[command(subcommand)]
    command: commands::Command,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SHOAL_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,openraft=error")),
        )
        .with_writer(std::io::stderr)
        .init();
    shoal_api::client::install_crypto_provider();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(cli.command.execute(&cli.connection)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
