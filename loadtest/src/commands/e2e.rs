//! `e2e`: end-to-end latency at a fixed rate. Each record carries its *intended* send time
//! (from the schedule, not from when the producer got to it); consumers reading from the log end
//! charge `now - intended` to every record, so broker stalls show up in full (no coordinated
//! omission). Also the engine behind `workload`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde::Serialize;
use tokio::sync::watch;

use super::{run_producers, seed, ProduceReport, ProducerOpts, ProducerPlan};
use crate::client::cluster::{parse_configs, Cluster, LATEST};
use crate::clock::Clock;
use crate::consume::ConsumerConfig;
use crate::produce::payload::STAMP_BYTES;
use crate::produce::ProducerConfig;
use crate::stats::histogram::LatencySummary;
use crate::stats::report;
use crate::stats::{spawn_reporter, Progress, Stats};

#[derive(clap::Args, Debug, Clone)]
pub struct E2eArgs {
    #[arg(long)]
    pub bootstrap_server: String,
    #[arg(long)]
    pub topic: String,
    /// Records per second.
    #[arg(long)]
    pub rate: f64,
    /// Length of the run, seconds (fractions allowed).
    #[arg(long)]
    pub duration_secs: f64,
    /// Bytes per record value (at least 8: the send time).
    #[arg(long, default_value_t = 1024)]
    pub record_size: usize,
    /// Partitions of the topic when it has to be created.
    #[arg(long, default_value_t = 1)]
    pub partitions: u32,
    #[command(flatten)]
    pub producer: ProducerOpts,
    /// How long to wait for the last records after producing ends, seconds.
    #[arg(long, default_value_t = 30)]
    pub drain_timeout_secs: u64,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct E2eReport {
    pub sent: u64,
    pub received: u64,
    pub bytes: u64,
    pub elapsed_secs: f64,
    pub records_per_sec: f64,
    pub mib_per_sec: f64,
    pub latency_ms: LatencySummary,
}

impl E2eReport {
    pub fn line(&self) -> String {
        report::e2e_line(
            self.received,
            self.bytes,
            Duration::from_secs_f64(self.elapsed_secs),
            &self.latency_ms,
        )
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct LiveReport {
    pub produce: ProduceReport,
    pub e2e: E2eReport,
}

/// Producers and consumers of a live run; consumers read from where the log ended at setup.
pub(crate) struct Live {
    pub producers: Vec<ProducerConfig>,
    pub consumers: Vec<ConsumerConfig>,
    /// How many consumers read each record (subscriptions per topic).
    pub reads_per_record: u64,
    pub warmup: Duration,
    pub drain_timeout: Duration,
    pub json: bool,
}

pub(crate) async fn run_live(
    cluster: Arc<Cluster>,
    live: Live,
    clock: Clock,
) -> Result<LiveReport> {
    let produced = Stats::new();
    let consumed = Stats::new();
    let (stop_tx, stop_rx) = watch::channel(false);
    let reporter = spawn_reporter(
        vec![
            (Progress::Produced, produced.clone()),
            (Progress::Consumed { latency: true }, consumed.clone()),
        ],
        live.json,
        stop_rx.clone(),
    );
    let mut consumers = Vec::new();
    for cfg in live.consumers {
        consumers.push(tokio::spawn(crate::consume::run(
            cluster.clone(),
            cfg,
            clock,
            consumed.clone(),
            stop_rx.clone(),
        )));
    }

    let producing = {
        let (cluster, stats) = (cluster.clone(), produced.clone());
        tokio::spawn(async move { run_producers(&cluster, live.producers, clock, &stats).await })
    };
    let mut start_ns = clock.now_ns();
    if !live.warmup.is_zero() {
        tokio::time::sleep(live.warmup).await;
        produced.reset();
        consumed.reset();
        start_ns = clock.now_ns();
    }
    let made = producing.await.context("producers panicked")?;
    let produce_end_ns = clock.now_ns();

    // Drain: every record read by every subscription, a consumer failing, or the timeout.
    let want = made
        .as_ref()
        .map(|n| n * live.reads_per_record)
        .unwrap_or(0);
    let deadline = produce_end_ns + live.drain_timeout.as_nanos() as u64;
    while consumed.seen() < want
        && clock.now_ns() < deadline
        && !consumers.iter().any(|c| c.is_finished())
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let end_ns = clock
        .now_ns()
        .min(consumed.total().last_ns.max(produce_end_ns));
    let _ = stop_tx.send(true);
    for c in consumers {
        c.await.context("consumer panicked")??;
    }
    let _ = reporter.await;
    made?;

    let p = produced.total();
    let c = consumed.total();
    let produce = ProduceReport::new(&p, Duration::from_nanos(produce_end_ns - start_ns));
    let elapsed = Duration::from_nanos(end_ns.saturating_sub(start_ns));
    let secs = elapsed.as_secs_f64().max(1e-9);
    let e2e = E2eReport {
        sent: p.records,
        received: c.records,
        bytes: c.bytes,
        elapsed_secs: elapsed.as_secs_f64(),
        records_per_sec: c.records as f64 / secs,
        mib_per_sec: c.bytes as f64 / secs / (1024.0 * 1024.0),
        latency_ms: c.latency_ms,
    };
    let report = LiveReport { produce, e2e };
    if live.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!("{}", report.produce.line());
        println!("{}", report.e2e.line());
    }
    report.produce.check()?;
    if consumed.seen() < want {
        bail!(
            "only {} of {} records were read back within {:?} after producing ended",
            consumed.seen(),
            want,
            live.drain_timeout
        );
    }
    Ok(report)
}

pub async fn run(args: &E2eArgs) -> Result<LiveReport> {
    if args.record_size < STAMP_BYTES {
        bail!("--record-size must be at least {STAMP_BYTES} (the send time)");
    }
    let positive = |x: f64| x.is_finite() && x > 0.0;
    if !positive(args.rate) || !positive(args.duration_secs) {
        bail!("--rate and --duration-secs must be positive");
    }
    let clock = Clock::start();
    let mut cluster = Cluster::connect(&args.bootstrap_server).await?;
    let configs = parse_configs(&args.producer.topic_config)?;
    let topic = cluster
        .ensure_topic(&args.topic, args.partitions, &configs)
        .await?;
    let cluster = Arc::new(cluster);
    let partitions: Vec<i32> = topic.partitions.iter().map(|p| p.index).collect();
    let start: BTreeMap<i32, i64> = cluster.list_offsets(&topic, &partitions, LATEST).await?;

    let plan = ProducerPlan {
        opts: &args.producer,
        record_size: args.record_size,
        stamped: true,
    };
    let duration = Duration::from_secs_f64(args.duration_secs);
    let live = Live {
        producers: vec![plan.config(&topic, None, Some(duration), Some(args.rate), seed(0))],
        consumers: vec![ConsumerConfig {
            topic: topic.clone(),
            start,
            max_wait_ms: 500,
            min_bytes: 1,
            fetch_max_bytes: 50 << 20,
            partition_max_bytes: 8 << 20,
            stamped: true,
        }],
        reads_per_record: 1,
        warmup: Duration::ZERO,
        drain_timeout: Duration::from_secs(args.drain_timeout_secs),
        json: args.json,
    };
    run_live(cluster, live, clock).await
}
