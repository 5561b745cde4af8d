//! `produce`: kafka-producer-perf-test's job. N records of B bytes at a target rate (or
//! unthrottled) from K producers; progress every 5 s and the final line in that tool's form.

use std::sync::Arc;

use anyhow::Result;
use tokio::sync::watch;

use super::{run_producers, seed, ProduceReport, ProducerOpts, ProducerPlan};
use crate::client::cluster::{parse_configs, Cluster};
use crate::clock::Clock;
use crate::stats::{spawn_reporter, Progress, Stats};

#[derive(clap::Args, Debug, Clone)]
pub struct ProduceArgs {
    /// host:port[,host:port...] of any broker in the cluster.
    #[arg(long)]
    pub bootstrap_server: String,
    #[arg(long)]
    pub topic: String,
    /// Records to send, over all producers.
    #[arg(long)]
    pub num_records: u64,
    /// Bytes per record value.
    #[arg(long)]
    pub record_size: usize,
    /// Records per second over all producers; -1 for as fast as possible.
    #[arg(long, default_value_t = -1.0, allow_negative_numbers = true)]
    pub throughput: f64,
    /// Partitions of the topic when it has to be created.
    #[arg(long, default_value_t = 1)]
    pub partitions: u32,
    /// Concurrent producers, each with its own connection per broker.
    #[arg(long, default_value_t = 1)]
    pub producers: usize,
    #[command(flatten)]
    pub producer: ProducerOpts,
    /// Print the results as JSON on stdout (progress goes to stderr).
    #[arg(long)]
    pub json: bool,
}

pub async fn run(args: &ProduceArgs) -> Result<ProduceReport> {
    let clock = Clock::start();
    let mut cluster = Cluster::connect(&args.bootstrap_server).await?;
    let configs = parse_configs(&args.producer.topic_config)?;
    let topic = cluster
        .ensure_topic(&args.topic, args.partitions, &configs)
        .await?;
    let cluster = Arc::new(cluster);

    let k = args.producers.max(1);
    let plan = ProducerPlan {
        opts: &args.producer,
        record_size: args.record_size,
        stamped: false,
    };
    let producers = (0..k)
        .map(|i| {
            let share =
                args.num_records / k as u64 + u64::from((i as u64) < args.num_records % k as u64);
            let rate = (args.throughput > 0.0).then(|| args.throughput / k as f64);
            plan.config(&topic, Some(share), None, rate, seed(i))
        })
        .collect();

    let stats = Stats::new();
    let (stop_tx, stop_rx) = watch::channel(false);
    let reporter = spawn_reporter(
        vec![(Progress::Produced, stats.clone())],
        args.json,
        stop_rx,
    );
    let start_ns = clock.now_ns();
    let made = run_producers(&cluster, producers, clock, &stats).await;
    let elapsed = std::time::Duration::from_nanos(clock.now_ns() - start_ns);
    let _ = stop_tx.send(true);
    let _ = reporter.await;
    made?;

    let report = ProduceReport::new(&stats.total(), elapsed);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!("{}", report.line());
    }
    report.check()?;
    Ok(report)
}
