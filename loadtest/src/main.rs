//! `strata-loadtest`: the command line over the `loadtest` library.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use loadtest::commands::{consume, e2e, produce, workload};

/// Load generator for Kafka-compatible brokers.
#[derive(Parser, Debug)]
#[command(name = "strata-loadtest", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Produce N records and report throughput and latency (kafka-producer-perf-test's output).
    Produce(produce::ProduceArgs),
    /// Read a topic from the start and report throughput (kafka-consumer-perf-test's output).
    Consume(consume::ConsumeArgs),
    /// Produce at a fixed rate while consuming; report end-to-end latency percentiles.
    E2e(e2e::E2eArgs),
    /// Run an OpenMessaging Benchmark workload file.
    Workload(workload::WorkloadArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match &cli.command {
            Command::Produce(a) => produce::run(a).await.map(drop),
            Command::Consume(a) => consume::run(a).await.map(drop),
            Command::E2e(a) => e2e::run(a).await.map(drop),
            Command::Workload(a) => workload::run(a).await.map(drop),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
