//! The `fleetmq` executable: command line → configuration → logging → runtime →
//! broker, until SIGINT or SIGTERM. Any error ends here, printed once, with exit code 1.

use std::io::Write;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use fleetmq::cli::{self, Cli, Command, ShutdownSignals};
use fleetmq::config::{Config, DEFAULT_CONFIG_TOML};

fn main() -> ExitCode {
    match run(Cli::parse().into_command()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("fleetmq: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::PrintDefaultConfig => print(DEFAULT_CONFIG_TOML),
        Command::CheckConfig(args) => {
            Config::from_file(&args.config)?;
            print(&format!("configuration OK: {}\n", args.config.display()))
        }
        Command::Serve(args) => {
            let config = args.load_config()?;
            cli::init_logging(&config.log)?;
            tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("cannot start the async runtime")?
                .block_on(serve(config))
        }
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let mut signals = ShutdownSignals::install()?;
    tracing::info!("fleetmq {} starting", env!("CARGO_PKG_VERSION"));
    let handle = fleetmq::server::start(config)
        .await
        .context("cannot start the broker")?;
    let addrs: Vec<String> = handle
        .listener_addrs()
        .iter()
        .map(|a| a.to_string())
        .collect();
    tracing::info!("ready, listening on {}", addrs.join(", "));
    let signal = signals.recv().await;
    tracing::info!("{signal} received, shutting down");
    handle.shutdown().await;
    tracing::info!("stopped");
    Ok(())
}

/// Writes to stdout, turning a closed pipe (`fleetmq print-default-config | head`) into
/// an error message instead of the panic `print!` would raise.
fn print(text: &str) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
        .context("cannot write to standard output")
}
