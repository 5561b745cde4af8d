//! The `strata` command line: `strata serve` (the default) runs a broker.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tokio::net::TcpListener;
use tracing_subscriber::EnvFilter;

use strata::broker::Broker;
use strata::config::{BrokerConfig, Overrides};

#[derive(Parser)]
#[command(
    name = "strata",
    version,
    about = "Kafka-compatible, tiered-storage log service"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run a broker (the default when no command is given).
    Serve(ServeArgs),
}

#[derive(clap::Args, Default)]
struct ServeArgs {
    /// TOML config file; see config/strata.toml for every key and its default.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Directory for all local state (overrides `data_dir`).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Kafka listener address, host:port (overrides `listen`).
    #[arg(long)]
    listen: Option<String>,
    /// host:port given to clients in Metadata (overrides `advertised_listener`).
    #[arg(long)]
    advertised_listener: Option<String>,
}

fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("strata: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("STRATA_LOG")
                .unwrap_or_else(|_| EnvFilter::new("info,openraft=warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let args = match cli.command {
        Some(Command::Serve(args)) => args,
        None => ServeArgs::default(),
    };
    let overrides = Overrides {
        data_dir: args.data_dir,
        listen: args.listen,
        advertised_listener: args.advertised_listener,
    };
    let config = BrokerConfig::load(args.config.as_deref(), std::env::vars(), &overrides)?;
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(serve(config))
}

async fn serve(config: BrokerConfig) -> anyhow::Result<()> {
    let stop = shutdown_signal()?;
    let listener = TcpListener::bind(&config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let broker = Broker::start(config).await?;
    let (host, port) = broker.config.advertised();
    tracing::info!(
        listen = %broker.config.listen,
        advertised = %format!("{host}:{port}"),
        data_dir = %broker.config.data_dir.display(),
        cluster_id = %broker.cluster_id,
        node_id = broker.node_id,
        "strata broker ready"
    );
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let server = tokio::spawn(strata::server::serve(listener, broker.clone(), stop_rx));
    stop.await;
    tracing::info!("shutting down");
    let _ = stop_tx.send(true);
    let _ = server.await;
    broker.shutdown().await;
    tracing::info!("shutdown complete");
    Ok(())
}

/// Resolves on SIGTERM or Ctrl-C. Created before anything else starts, so a signal that
/// arrives during start-up is not lost (the default action would kill the process).
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot watch SIGINT")?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    })
}
