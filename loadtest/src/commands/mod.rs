//! The subcommands: each parses its arguments (clap), sets up topics and offsets, runs producer
//! and consumer tasks, and prints its report. Each `run` also returns the report as a value, so
//! tests and other programs use the tool as a library.

pub mod consume;
pub mod e2e;
pub mod produce;
pub mod workload;

use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use kafka_protocol::records::Compression;
use serde::Serialize;
use tokio::task::JoinSet;

use crate::client::cluster::Cluster;
use crate::clock::Clock;
use crate::produce::ProducerConfig;
use crate::stats::report::{self, Total};
use crate::stats::{SideTotal, Stats};

/// `--acks`: 0, 1, -1 or all.
pub fn parse_acks(s: &str) -> Result<i16, String> {
    match s {
        "all" | "-1" => Ok(-1),
        "0" => Ok(0),
        "1" => Ok(1),
        _ => Err(format!("acks must be 0, 1, -1 or all, not {s:?}")),
    }
}

/// `--compression`: none, gzip, snappy, lz4 or zstd.
pub fn parse_compression(s: &str) -> Result<Compression, String> {
    Ok(match s {
        "none" => Compression::None,
        "gzip" => Compression::Gzip,
        "snappy" => Compression::Snappy,
        "lz4" => Compression::Lz4,
        "zstd" => Compression::Zstd,
        _ => {
            return Err(format!(
                "compression must be none, gzip, snappy, lz4 or zstd, not {s:?}"
            ))
        }
    })
}

/// Producer settings shared by the commands that produce.
#[derive(clap::Args, Debug, Clone)]
pub struct ProducerOpts {
    /// 0, 1, -1 or all.
    #[arg(long, default_value = "1", value_parser = parse_acks, allow_negative_numbers = true)]
    pub acks: i16,
    /// Upper bound on a record batch (Kafka's batch.size).
    #[arg(long, default_value_t = 16384)]
    pub batch_size: usize,
    /// How long a batch may wait to fill (Kafka's linger.ms).
    #[arg(long, default_value_t = 5)]
    pub linger_ms: u64,
    /// none, gzip, snappy, lz4 or zstd.
    #[arg(long, default_value = "none", value_parser = parse_compression)]
    pub compression: Compression,
    /// Produce requests on the wire per connection.
    #[arg(long, default_value_t = 5)]
    pub max_in_flight: usize,
    /// Upper bound on one Produce request (Kafka's max.request.size).
    #[arg(long, default_value_t = 1 << 20)]
    pub max_request_size: usize,
    /// Bytes of batches each producer may have unacknowledged (Kafka's buffer.memory).
    #[arg(long, default_value_t = 32 << 20)]
    pub buffer_memory: usize,
    /// Config for a topic this run creates, key=value; repeatable (e.g. flush.messages=100000).
    #[arg(long = "topic-config")]
    pub topic_config: Vec<String>,
}

/// Settings of one run's producers (one connection per broker each).
pub(crate) struct ProducerPlan<'a> {
    pub opts: &'a ProducerOpts,
    pub record_size: usize,
    pub stamped: bool,
}

impl ProducerPlan<'_> {
    pub fn config(
        &self,
        topic: &crate::client::cluster::TopicInfo,
        max_records: Option<u64>,
        duration: Option<Duration>,
        rate: Option<f64>,
        seed: u64,
    ) -> ProducerConfig {
        ProducerConfig {
            topic: topic.clone(),
            partitions: topic.partitions.iter().map(|p| p.index).collect(),
            record_size: self.record_size,
            max_records,
            duration,
            schedule: rate.and_then(crate::schedule::Schedule::from_rate),
            acks: self.opts.acks,
            batch_size_bytes: self.opts.batch_size,
            linger: Duration::from_millis(self.opts.linger_ms),
            compression: self.opts.compression,
            stamped: self.stamped,
            max_in_flight: self.opts.max_in_flight.max(1),
            max_request_bytes: self.opts.max_request_size,
            buffer_bytes: self.opts.buffer_memory,
            request_timeout_ms: 30_000,
            seed,
        }
    }
}

/// Spawns producers and returns the records they made.
pub(crate) async fn run_producers(
    cluster: &Arc<Cluster>,
    configs: Vec<ProducerConfig>,
    clock: Clock,
    stats: &Stats,
) -> Result<u64> {
    let mut tasks = JoinSet::new();
    for cfg in configs {
        tasks.spawn(crate::produce::run(
            cluster.clone(),
            cfg,
            clock,
            stats.clone(),
        ));
    }
    let mut made = 0;
    while let Some(r) = tasks.join_next().await {
        made += r.context("producer task panicked")??;
    }
    Ok(made)
}

/// A produce run's totals, as printed and as JSON.
#[derive(Debug, Clone, Serialize)]
pub struct ProduceReport {
    pub records: u64,
    pub failed: u64,
    pub errors: std::collections::BTreeMap<String, u64>,
    pub bytes: u64,
    pub elapsed_secs: f64,
    pub records_per_sec: f64,
    pub mib_per_sec: f64,
    pub latency_ms: crate::stats::histogram::LatencySummary,
}

impl ProduceReport {
    pub fn new(t: &SideTotal, elapsed: Duration) -> Self {
        let secs = elapsed.as_secs_f64().max(1e-9);
        Self {
            records: t.records,
            failed: t.failed,
            errors: t.errors.clone(),
            bytes: t.bytes,
            elapsed_secs: elapsed.as_secs_f64(),
            records_per_sec: t.records as f64 / secs,
            mib_per_sec: t.bytes as f64 / secs / (1024.0 * 1024.0),
            latency_ms: t.latency_ms,
        }
    }

    /// `kafka-producer-perf-test`'s final line.
    pub fn line(&self) -> String {
        report::total_line(&Total {
            records: self.records,
            bytes: self.bytes,
            elapsed: Duration::from_secs_f64(self.elapsed_secs),
            latency: self.latency_ms,
        })
    }

    /// An error if any record failed, naming the causes.
    pub fn check(&self) -> Result<()> {
        if self.failed > 0 {
            let causes: Vec<String> = self
                .errors
                .iter()
                .map(|(e, n)| format!("{n} x {e}"))
                .collect();
            bail!("{} records failed: {}", self.failed, causes.join("; "));
        }
        Ok(())
    }
}

/// A seed per producer that differs between runs' producers but is reproducible per index.
pub(crate) fn seed(index: usize) -> u64 {
    0x5eed_0000 + index as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acks_and_compression_values() {
        assert_eq!(parse_acks("all"), Ok(-1));
        assert_eq!(parse_acks("-1"), Ok(-1));
        assert_eq!(parse_acks("0"), Ok(0));
        assert_eq!(parse_acks("1"), Ok(1));
        assert!(parse_acks("2").is_err());
        assert_eq!(parse_compression("zstd"), Ok(Compression::Zstd));
        assert_eq!(parse_compression("none"), Ok(Compression::None));
        assert!(parse_compression("brotli").is_err());
    }
}
