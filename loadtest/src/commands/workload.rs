//! `workload FILE.yaml`: an OpenMessaging Benchmark workload. Creates `topics` topics of
//! `partitionsPerTopic` partitions, runs `producersPerTopic` producers per topic at
//! `producerRate` records/s in total (unthrottled when <= 0) for `testDurationMinutes`, and
//! `subscriptionsPerTopic` x `consumerPerSubscription` consumers per topic; the consumers of one
//! subscription share its partitions. Prints the producer line and the end-to-end latency line.
//!
//! Defaults where OMB's Kafka driver sets them: acks=all, batch.size 1 MiB, linger.ms 1.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};

use super::e2e::{run_live, Live, LiveReport};
use super::{parse_acks, parse_compression, seed, ProducerOpts, ProducerPlan};
use crate::client::cluster::{parse_configs, Cluster, LATEST};
use crate::clock::Clock;
use crate::consume::ConsumerConfig;
use crate::produce::payload::STAMP_BYTES;
use crate::workload::{self, Workload};

#[derive(clap::Args, Debug, Clone)]
pub struct WorkloadArgs {
    /// The workload file (OMB YAML).
    pub file: PathBuf,
    #[arg(long)]
    pub bootstrap_server: String,
    /// Topic names are PREFIX-0, PREFIX-1, ...; a fresh prefix per run by default.
    #[arg(long)]
    pub topic_prefix: Option<String>,
    /// 0, 1, -1 or all.
    #[arg(long, default_value = "all", value_parser = parse_acks, allow_negative_numbers = true)]
    pub acks: i16,
    #[arg(long, default_value_t = 1 << 20)]
    pub batch_size: usize,
    #[arg(long, default_value_t = 1)]
    pub linger_ms: u64,
    #[arg(long, default_value = "none", value_parser = parse_compression)]
    pub compression: kafka_protocol::records::Compression,
    #[arg(long, default_value_t = 5)]
    pub max_in_flight: usize,
    /// Config for the topics this run creates, key=value; repeatable.
    #[arg(long = "topic-config")]
    pub topic_config: Vec<String>,
    #[arg(long, default_value_t = 30)]
    pub drain_timeout_secs: u64,
    #[arg(long)]
    pub json: bool,
}

fn minutes(m: f64) -> Duration {
    Duration::from_secs_f64(m * 60.0)
}

pub async fn run(args: &WorkloadArgs) -> Result<LiveReport> {
    let text = std::fs::read_to_string(&args.file)
        .with_context(|| format!("reading {}", args.file.display()))?;
    let w: Workload = workload::parse(&text).with_context(|| format!("{}", args.file.display()))?;
    if w.message_size < STAMP_BYTES {
        bail!("messageSize must be at least {STAMP_BYTES} (the send time)");
    }
    let prefix = args.topic_prefix.clone().unwrap_or_else(|| {
        let secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        format!("omb-{secs}")
    });
    let opts = ProducerOpts {
        acks: args.acks,
        batch_size: args.batch_size,
        linger_ms: args.linger_ms,
        compression: args.compression,
        max_in_flight: args.max_in_flight,
        max_request_size: (1 << 20).max(args.batch_size + 4096),
        buffer_memory: 32 << 20,
        topic_config: args.topic_config.clone(),
    };
    eprintln!(
        "workload {:?}: {} topic(s) x {} partitions, {} B records, {} producer(s) and {} consumer(s) per topic, \
         {} records/s, {} min (+{} min warm-up)",
        w.name,
        w.topics,
        w.partitions_per_topic,
        w.message_size,
        w.producers_per_topic,
        w.consumers_per_topic(),
        if w.producer_rate > 0.0 { w.producer_rate.to_string() } else { "max".into() },
        w.test_duration_minutes,
        w.warmup_duration_minutes,
    );

    let clock = Clock::start();
    let mut cluster = Cluster::connect(&args.bootstrap_server).await?;
    let configs = parse_configs(&args.topic_config)?;
    let mut topics = Vec::new();
    for i in 0..w.topics {
        let name = format!("{prefix}-{i}");
        topics.push(
            cluster
                .ensure_topic(&name, w.partitions_per_topic, &configs)
                .await?,
        );
    }
    let cluster = Arc::new(cluster);

    let plan = ProducerPlan {
        opts: &opts,
        record_size: w.message_size,
        stamped: true,
    };
    let duration = minutes(w.warmup_duration_minutes + w.test_duration_minutes);
    let mut producers = Vec::new();
    let mut consumers = Vec::new();
    for topic in &topics {
        for _ in 0..w.producers_per_topic {
            let cfg = plan.config(
                topic,
                None,
                Some(duration),
                w.rate_per_producer(),
                seed(producers.len()),
            );
            producers.push(cfg);
        }
        let partitions: Vec<i32> = topic.partitions.iter().map(|p| p.index).collect();
        let end = cluster.list_offsets(topic, &partitions, LATEST).await?;
        let per_sub = w.consumer_per_subscription.max(1) as usize;
        for _ in 0..w.subscriptions_per_topic {
            for c in 0..per_sub {
                let start: BTreeMap<i32, i64> = partitions
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| i % per_sub == c)
                    .map(|(_, p)| (*p, end[p]))
                    .collect();
                if start.is_empty() {
                    continue; // more consumers than partitions: this one idles, as in a group
                }
                consumers.push(ConsumerConfig {
                    topic: topic.clone(),
                    start,
                    max_wait_ms: 500,
                    min_bytes: 1,
                    fetch_max_bytes: 50 << 20,
                    partition_max_bytes: 8 << 20,
                    stamped: true,
                });
            }
        }
    }
    let live = Live {
        producers,
        consumers,
        reads_per_record: u64::from(w.subscriptions_per_topic),
        warmup: minutes(w.warmup_duration_minutes),
        drain_timeout: Duration::from_secs(args.drain_timeout_secs),
        json: args.json,
    };
    run_live(cluster, live, clock).await
}
