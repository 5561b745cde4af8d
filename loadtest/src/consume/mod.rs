//! A consumer without a group: reads assigned partitions with Fetch from given offsets, one
//! fetch loop per leader broker, until told to stop.
//!
//! Records are counted from batch headers (see [`batches`]); only when values carry send
//! stamps are batches decoded (and decompressed) to measure end-to-end latency.
//!
//! Like Kafka's Java consumer, a fetch loop keeps the next fetch in flight while it checks
//! and counts the records of the last one: the next offsets come from the batch frames alone.

pub mod batches;

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::{anyhow, bail, Context, Result};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::{ApiKey, FetchRequest, TopicName};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::RecordBatchDecoder;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::client::cluster::{error_name, Cluster, TopicInfo};
use crate::client::connection::Connection;
use crate::clock::Clock;
use crate::produce::payload::stamp_of;
use crate::stats::Stats;

#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    pub topic: TopicInfo,
    /// Partitions to read and the offset to start each at.
    pub start: BTreeMap<i32, i64>,
    pub max_wait_ms: i32,
    pub min_bytes: i32,
    pub fetch_max_bytes: i32,
    pub partition_max_bytes: i32,
    /// Decode values and record now - send stamp as end-to-end latency.
    pub stamped: bool,
}

/// Runs until `stop` becomes true (or a fetch fails).
pub async fn run(
    cluster: Arc<Cluster>,
    cfg: ConsumerConfig,
    clock: Clock,
    stats: Stats,
    stop: watch::Receiver<bool>,
) -> Result<()> {
    let mut by_leader: BTreeMap<i32, BTreeMap<i32, i64>> = BTreeMap::new();
    for (&p, &offset) in &cfg.start {
        let leader = cfg
            .topic
            .leader_of(p)
            .ok_or_else(|| anyhow!("{}-{p} does not exist", cfg.topic.name))?;
        by_leader.entry(leader).or_default().insert(p, offset);
    }
    let mut tasks = JoinSet::new();
    for (leader, offsets) in by_leader {
        let conn = cluster.connect_to(leader, 2).await?;
        let cfg = cfg.clone();
        let stats = stats.clone();
        let stop = stop.clone();
        tasks.spawn(fetch_loop(conn, cfg, offsets, clock, stats, stop));
    }
    while let Some(r) = tasks.join_next().await {
        r.context("fetch task panicked")??;
    }
    Ok(())
}

async fn fetch_loop(
    conn: Connection,
    cfg: ConsumerConfig,
    mut offsets: BTreeMap<i32, i64>,
    clock: Clock,
    stats: Stats,
    mut stop: watch::Receiver<bool>,
) -> Result<()> {
    let topic = TopicName(StrBytes::from_string(cfg.topic.name.clone()));
    let mut latencies = Vec::new();
    let request = |offsets: &BTreeMap<i32, i64>| {
        FetchRequest::default()
            .with_max_wait_ms(cfg.max_wait_ms)
            .with_min_bytes(cfg.min_bytes)
            .with_max_bytes(cfg.fetch_max_bytes)
            .with_topics(vec![FetchTopic::default()
                .with_topic(topic.clone())
                .with_partitions(
                    offsets
                        .iter()
                        .map(|(&p, &offset)| {
                            FetchPartition::default()
                                .with_partition(p)
                                .with_fetch_offset(offset)
                                .with_partition_max_bytes(cfg.partition_max_bytes)
                        })
                        .collect(),
                )])
    };
    let version = conn.version(ApiKey::Fetch)?;
    let mut pending = conn.send(&request(&offsets), version).await?;
    while !*stop.borrow() {
        let resp = tokio::select! {
            r = pending.wait() => r.with_context(|| format!("Fetch v{version} to {}", conn.addr()))?,
            _ = stop.changed() => break,
        };
        // Send the next fetch first: where it starts needs only the batch frames.
        let fetched_at = offsets.clone();
        for t in &resp.responses {
            for p in &t.partitions {
                if let (Some(offset), Some(records)) =
                    (offsets.get_mut(&p.partition_index), p.records.as_ref())
                {
                    *offset = batches::next_offset(records, *offset);
                }
            }
        }
        pending = conn.send(&request(&offsets), version).await?;
        let mut offsets = fetched_at;
        if resp.error_code != 0 {
            bail!(
                "Fetch from {}: {}",
                conn.addr(),
                error_name(resp.error_code)
            );
        }
        for t in resp.responses {
            for p in t.partitions {
                let index = p.partition_index;
                if p.error_code != 0 {
                    bail!(
                        "Fetch {}-{index}: {}",
                        cfg.topic.name,
                        error_name(p.error_code)
                    );
                }
                let Some(offset) = offsets.get_mut(&index) else {
                    continue;
                };
                let Some(records) = p.records else { continue };
                let found = batches::complete_batches(&records)
                    .with_context(|| format!("{}-{index} at offset {offset}", cfg.topic.name))?;
                let (mut count, mut bytes) = (0u64, 0u64);
                latencies.clear();
                for b in found {
                    if b.last_offset < *offset {
                        continue; // a batch before the one asked for (brokers may resend it)
                    }
                    bytes += b.data.len() as u64;
                    if cfg.stamped && b.records > 0 && b.is_plain() {
                        let now_unix = clock.unix_ns(clock.now_ns());
                        b.values_from(*offset, |v| {
                            let stamp = stamp_of(v).unwrap_or(now_unix);
                            latencies.push(now_unix.saturating_sub(stamp) / 1000);
                        })
                        .with_context(|| {
                            format!("reading {}-{index} at {}", cfg.topic.name, b.base_offset)
                        })?;
                    } else if cfg.stamped && b.records > 0 {
                        // Compressed: decode (and decompress) to reach the values.
                        let now_unix = clock.unix_ns(clock.now_ns());
                        let set =
                            RecordBatchDecoder::decode(&mut b.data.clone()).with_context(|| {
                                format!("decoding {}-{index} at {}", cfg.topic.name, b.base_offset)
                            })?;
                        for r in set.records.iter().filter(|r| r.offset >= *offset) {
                            let stamp = r.value.as_deref().and_then(stamp_of).unwrap_or(now_unix);
                            latencies.push(now_unix.saturating_sub(stamp) / 1000);
                        }
                    } else if b.base_offset >= *offset {
                        count += u64::from(b.records);
                    } else {
                        // Starting inside a batch: count its records from `offset` on.
                        count += u64::from(b.records).min((b.last_offset - *offset + 1) as u64);
                    }
                    *offset = b.last_offset + 1;
                }
                let now = clock.now_ns();
                if cfg.stamped {
                    stats.record_latencies(now, &latencies, bytes);
                } else if count > 0 || bytes > 0 {
                    stats.record_count(now, count, bytes);
                }
            }
        }
    }
    Ok(())
}
