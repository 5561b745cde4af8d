//! `consume`: kafka-consumer-perf-test's job without a consumer group. Reads a topic from the
//! log start of every partition (ListOffsets) until `--messages` records are in, and prints that
//! tool's CSV header and row.
//!
//! data.consumed.in.MB counts record batch bytes as fetched (headers included, compressed
//! size when compressed); Kafka's tool counts key + value bytes after decompression.
//! rebalance.time.ms is the time spent on metadata and offsets before the first fetch.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde::Serialize;
use tokio::sync::watch;

use crate::client::cluster::{Cluster, EARLIEST, LATEST};
use crate::client::connection::MAX_RESPONSE_BYTES;
use crate::clock::Clock;
use crate::consume::ConsumerConfig;
use crate::stats::report::{self, Consumed};
use crate::stats::{spawn_reporter, Progress, Stats};

#[derive(clap::Args, Debug, Clone)]
pub struct ConsumeArgs {
    #[arg(long)]
    pub bootstrap_server: String,
    #[arg(long)]
    pub topic: String,
    /// Records to read.
    #[arg(long)]
    pub messages: u64,
    /// Fetch loops; the partitions are dealt out among them.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Only these partitions (comma-separated); all by default.
    #[arg(long, value_delimiter = ',')]
    pub partitions: Vec<i32>,
    /// Upper bound on one Fetch response.
    #[arg(long, default_value_t = 50 << 20)]
    pub fetch_max_bytes: i32,
    /// Upper bound per partition in one Fetch response.
    #[arg(long, default_value_t = 8 << 20)]
    pub partition_max_bytes: i32,
    /// Give up after this long without a record (kafka-consumer-perf-test's --timeout).
    #[arg(long, default_value_t = 10_000)]
    pub timeout_ms: u64,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct ConsumeReport {
    pub start_time: String,
    pub end_time: String,
    pub records: u64,
    pub bytes: u64,
    pub mib: f64,
    pub mib_per_sec: f64,
    pub records_per_sec: f64,
    pub rebalance_time_ms: u64,
    pub fetch_time_ms: u64,
    pub fetch_mib_per_sec: f64,
    pub fetch_records_per_sec: f64,
    /// Records between the log start and end offsets when the run began, per ListOffsets.
    pub available: u64,
    /// True if the run stopped for `--timeout-ms` before `--messages` were read.
    pub timed_out: bool,
    #[serde(skip)]
    pub csv: String,
}

pub async fn run(args: &ConsumeArgs) -> Result<ConsumeReport> {
    let limit = MAX_RESPONSE_BYTES as i32 - (1 << 20);
    if !(1..=limit).contains(&args.fetch_max_bytes)
        || !(1..=limit).contains(&args.partition_max_bytes)
    {
        bail!("--fetch-max-bytes and --partition-max-bytes must be between 1 and {limit}");
    }
    let clock = Clock::start();
    let start_unix_ms = clock.unix_now_ms();
    let mut cluster = Cluster::connect(&args.bootstrap_server).await?;
    let topic = cluster
        .wait_for_topic(&args.topic, Duration::from_secs(10))
        .await?;
    let partitions: Vec<i32> = if args.partitions.is_empty() {
        topic.partitions.iter().map(|p| p.index).collect()
    } else {
        args.partitions.clone()
    };
    let cluster = Arc::new(cluster);
    let start = cluster.list_offsets(&topic, &partitions, EARLIEST).await?;
    let end = cluster.list_offsets(&topic, &partitions, LATEST).await?;
    let available: u64 = partitions
        .iter()
        .map(|p| (end[p] - start[p]).max(0) as u64)
        .sum();

    let threads = args.threads.clamp(1, partitions.len().max(1));
    let stats = Stats::new();
    let (stop_tx, stop_rx) = watch::channel(false);
    let reporter = spawn_reporter(
        vec![(Progress::Consumed { latency: false }, stats.clone())],
        args.json,
        stop_rx.clone(),
    );
    let rebalance_ms = clock.unix_now_ms() - start_unix_ms;
    let mut tasks = Vec::new();
    for t in 0..threads {
        let assigned: BTreeMap<i32, i64> = partitions
            .iter()
            .enumerate()
            .filter(|(i, _)| i % threads == t)
            .map(|(_, p)| (*p, start[p]))
            .collect();
        let cfg = ConsumerConfig {
            topic: topic.clone(),
            start: assigned,
            max_wait_ms: 500,
            min_bytes: 1,
            fetch_max_bytes: args.fetch_max_bytes,
            partition_max_bytes: args.partition_max_bytes,
            stamped: false,
        };
        tasks.push(tokio::spawn(crate::consume::run(
            cluster.clone(),
            cfg,
            clock,
            stats.clone(),
            stop_rx.clone(),
        )));
    }

    // Stop at the target, or after --timeout-ms without progress, or when a fetch fails.
    let mut last = (0u64, clock.now_ns());
    let mut timed_out = false;
    loop {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let n = stats.records();
        if n >= args.messages || tasks.iter().any(|t| t.is_finished()) {
            break;
        }
        let now = clock.now_ns();
        if n > last.0 {
            last = (n, now);
        } else if now - last.1 >= args.timeout_ms * 1_000_000 {
            timed_out = true;
            break;
        }
    }
    let _ = stop_tx.send(true);
    for t in tasks {
        t.await.context("consumer task panicked")??;
    }
    let _ = reporter.await;

    let total = stats.total();
    let end_unix_ms = if timed_out || total.last_ns == 0 {
        clock.unix_now_ms()
    } else {
        clock.unix_ns(total.last_ns) / 1_000_000
    };
    let consumed = Consumed {
        start_unix_ms,
        end_unix_ms,
        bytes: total.bytes,
        records: total.records,
        rebalance_ms,
    };
    let elapsed_s = (end_unix_ms - start_unix_ms) as f64 / 1000.0;
    let fetch_ms = (end_unix_ms - start_unix_ms).saturating_sub(rebalance_ms);
    let mib = total.bytes as f64 / (1024.0 * 1024.0);
    let report = ConsumeReport {
        start_time: report::timestamp(start_unix_ms),
        end_time: report::timestamp(end_unix_ms),
        records: total.records,
        bytes: total.bytes,
        mib,
        mib_per_sec: mib / elapsed_s.max(1e-9),
        records_per_sec: total.records as f64 / elapsed_s.max(1e-9),
        rebalance_time_ms: rebalance_ms,
        fetch_time_ms: fetch_ms,
        fetch_mib_per_sec: mib / (fetch_ms as f64 / 1000.0).max(1e-9),
        fetch_records_per_sec: total.records as f64 / (fetch_ms as f64 / 1000.0).max(1e-9),
        available,
        timed_out,
        csv: format!(
            "{}\n{}",
            report::CONSUMER_HEADER,
            report::consumer_row(&consumed)
        ),
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!("{}", report::CONSUMER_HEADER);
        if timed_out {
            println!(
                "WARNING: Exiting before consuming the expected number of messages: timeout ({} ms) exceeded. \
                 You can use the --timeout-ms option to increase the timeout.",
                args.timeout_ms
            );
        }
        println!("{}", report::consumer_row(&consumed));
    }
    if timed_out && total.records == 0 && available > 0 {
        bail!("read nothing of the {available} records available");
    }
    Ok(report)
}
