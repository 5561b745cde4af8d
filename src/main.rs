//! The `strata` command line: `strata serve` (the default) runs a broker; `strata tier ...`
//! inspects tiered storage; `strata cluster ...` shows and changes the metadata quorum.

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
    /// Tiered storage: upload state, sizes per tier, and SQL over the Parquet archive.
    #[command(subcommand)]
    Tier(TierCommand),
    /// The metadata quorum: status, and adding or removing nodes. Talks to a broker's raft
    /// address (its `raft_listen`); membership changes are passed on to the leader.
    #[command(subcommand)]
    Cluster(ClusterCommand),
}

#[derive(Subcommand)]
enum ClusterCommand {
    /// Leader, term, voters and learners, and each node's log and applied index.
    Status {
        /// Raft address (host:port) of any broker of the cluster.
        #[arg(long)]
        bootstrap: String,
        /// Print the raw JSON.
        #[arg(long)]
        json: bool,
    },
    /// Make a node a voter: it is added as a learner, caught up, then promoted. The node
    /// should be running (typically started as a learner) so it can catch up.
    AddVoter {
        /// The node's node_id.
        #[arg(long)]
        node_id: u64,
        /// The node's raft address (host:port) as the other brokers reach it.
        #[arg(long)]
        raft_addr: String,
        /// Raft address (host:port) of any broker of the cluster.
        #[arg(long)]
        bootstrap: String,
    },
    /// Remove a voter or learner from the quorum.
    Remove {
        /// The node's node_id.
        #[arg(long)]
        node_id: u64,
        /// Raft address (host:port) of any broker of the cluster.
        #[arg(long)]
        bootstrap: String,
    },
}

#[derive(Subcommand)]
enum TierCommand {
    /// Per-partition offsets and sizes in each tier, upload lag and errors, cache and remote
    /// read figures, as last written by the running broker (every tiering.upload_interval_ms).
    Status {
        #[command(flatten)]
        broker: BrokerArgs,
        /// Print the raw JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print SQL that queries a topic's archive in place (one row per record).
    Sql {
        #[command(flatten)]
        broker: BrokerArgs,
        /// The topic.
        #[arg(long)]
        topic: String,
        /// duckdb or spark.
        #[arg(long, default_value = "duckdb")]
        engine: String,
    },
}

/// Which broker to inspect: its config file and/or data dir.
#[derive(clap::Args)]
struct BrokerArgs {
    /// The broker's TOML config file.
    #[arg(long)]
    config: Option<PathBuf>,
    /// The broker's data dir (overrides `data_dir`).
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

impl BrokerArgs {
    fn load(&self) -> anyhow::Result<BrokerConfig> {
        let overrides = Overrides {
            data_dir: self.data_dir.clone(),
            ..Default::default()
        };
        Ok(BrokerConfig::load(
            self.config.as_deref(),
            std::env::vars(),
            &overrides,
        )?)
    }
}

fn cluster(command: ClusterCommand) -> anyhow::Result<()> {
    use strata::cluster::admin;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        match command {
            ClusterCommand::Status { bootstrap, json } => {
                let status = admin::status(&bootstrap)
                    .await
                    .with_context(|| format!("asking {bootstrap} for the quorum status"))?;
                if json {
                    println!("{}", serde_json::to_string_pretty(&status)?);
                } else {
                    print!("{}", admin::render(&status));
                }
            }
            ClusterCommand::AddVoter {
                node_id,
                raft_addr,
                bootstrap,
            } => {
                let msg = admin::add_voter(&bootstrap, node_id, &raft_addr)
                    .await
                    .with_context(|| format!("adding voter {node_id} through {bootstrap}"))?;
                println!("{msg}");
            }
            ClusterCommand::Remove { node_id, bootstrap } => {
                let msg = admin::remove(&bootstrap, node_id)
                    .await
                    .with_context(|| format!("removing node {node_id} through {bootstrap}"))?;
                println!("{msg}");
            }
        }
        Ok(())
    })
}

fn tier(command: TierCommand) -> anyhow::Result<()> {
    use strata::tier::status;
    match command {
        TierCommand::Status { broker, json } => {
            let config = broker.load()?;
            let path = status::path(&config.data_dir);
            let text = std::fs::read_to_string(&path).with_context(|| {
                format!(
                    "cannot read {}: is a broker running with this data dir? It writes the file every tiering.upload_interval_ms",
                    path.display()
                )
            })?;
            if json {
                println!("{text}");
            } else {
                let parsed: status::TierStatus = serde_json::from_str(&text)
                    .with_context(|| format!("{} is not a tier status file", path.display()))?;
                print!("{}", status::render(&parsed, strata::now_ms()));
            }
        }
        TierCommand::Sql {
            broker,
            topic,
            engine,
        } => {
            let config = broker.load()?;
            let url = config.tiering.store_url(&config.data_dir);
            println!(
                "{}",
                status::sql(&url, &topic, &engine).map_err(|e| anyhow::anyhow!(e))?
            );
        }
    }
    Ok(())
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
        Some(Command::Tier(command)) => return tier(command),
        Some(Command::Cluster(command)) => return cluster(command),
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
    tokio::pin!(stop);
    let listener = TcpListener::bind(&config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    // Start-up can wait a while for the metadata quorum; a signal meanwhile stops it.
    let broker = tokio::select! {
        broker = Broker::start(config) => broker?,
        _ = &mut stop => {
            tracing::info!("stopped during start-up");
            return Ok(());
        }
    };
    let (host, port) = broker.config.advertised();
    tracing::info!(
        listen = %broker.config.listen,
        advertised = %format!("{host}:{port}"),
        data_dir = %broker.config.data_dir.display(),
        cluster_id = %broker.cluster_id,
        node_id = broker.node_id,
        "strata broker ready"
    );
    if !broker.config.http_listen.is_empty() {
        match TcpListener::bind(&broker.config.http_listen).await {
            Ok(http) => {
                tracing::info!(http = %broker.config.http_listen, "admin HTTP ready: /metrics, /v1/tier/status, /health");
                tokio::spawn(strata::http::serve(http, broker.clone()));
            }
            Err(e) => tracing::warn!(
                http = %broker.config.http_listen, error = %e,
                "cannot listen for admin HTTP; running without /metrics (set http_listen to a free address, or empty)"
            ),
        }
    }
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
