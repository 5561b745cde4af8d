//! A producer: makes records on schedule (or as fast as the broker takes them), batches them
//! per partition, and hands batches to one sender per leader broker.
//!
//! ```text
//! producer task ── accumulator (pure) ── encode ──▶ [bounded channel] ──▶ sender (per broker)
//!                                                                        ├ Produce requests, pipelined
//!                                                                        └ completions ─▶ Stats
//! ```
//!
//! Back-pressure is the buffer memory (`buffer_bytes` of encoded batches not yet acknowledged):
//! when the broker falls behind, the producer waits in `dispatch`, as Kafka's producer waits in
//! `send()` for `buffer.memory`. Throttled runs follow a
//! [`Schedule`]; a stamped record carries its intended send time, so a stall is charged to
//! every record that should have gone out during it.

pub mod accumulator;
pub mod payload;
pub mod sender;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use kafka_protocol::records::Compression;
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinHandle;

use crate::client::cluster::{Cluster, TopicInfo};
use crate::clock::Clock;
use crate::schedule::Schedule;
use crate::stats::Stats;
use accumulator::{Accumulator, Closed};
use payload::Payloads;
use sender::{Ready, SenderConfig};

/// Records made between checks of the clock and the channel when unthrottled.
const UNTHROTTLED_CHUNK: u64 = 1024;
/// Ready batches queued per broker; `buffer_bytes` is what bounds the queue in practice.
const READY_QUEUE: usize = 1024;

#[derive(Debug, Clone)]
pub struct ProducerConfig {
    pub topic: TopicInfo,
    /// Partitions written, round-robin by batch (all of the topic's, usually).
    pub partitions: Vec<i32>,
    pub record_size: usize,
    /// Stop after this many records...
    pub max_records: Option<u64>,
    /// ...or after this long, whichever comes first.
    pub duration: Option<Duration>,
    pub schedule: Option<Schedule>,
    pub acks: i16,
    pub batch_size_bytes: usize,
    pub linger: Duration,
    pub compression: Compression,
    /// Write the intended send time into each value (for end-to-end latency).
    pub stamped: bool,
    pub max_in_flight: usize,
    pub max_request_bytes: usize,
    /// Encoded batches not yet acknowledged, at most (Kafka's buffer.memory).
    pub buffer_bytes: usize,
    pub request_timeout_ms: i32,
    pub seed: u64,
}

impl ProducerConfig {
    /// Records this producer will make, if bounded.
    pub fn planned_records(&self) -> Option<u64> {
        let by_time = match (self.schedule, self.duration) {
            (Some(s), Some(d)) => Some(s.records_in(d.as_nanos() as u64)),
            _ => None,
        };
        match (self.max_records, by_time) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

struct Senders {
    by_leader: BTreeMap<i32, mpsc::Sender<Ready>>,
    tasks: Vec<JoinHandle<Result<()>>>,
    memory: Arc<Semaphore>,
    memory_bytes: usize,
}

impl Senders {
    async fn finish(self) -> Result<()> {
        drop(self.by_leader);
        let mut first_err = None;
        for t in self.tasks {
            if let Err(e) = t.await.context("sender task panicked").and_then(|r| r) {
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }
}

/// Runs one producer to the end of its records or time; returns how many records it made.
pub async fn run(
    cluster: Arc<Cluster>,
    cfg: ProducerConfig,
    clock: Clock,
    stats: Stats,
) -> Result<u64> {
    let memory_bytes = cfg.buffer_bytes.clamp(1, Semaphore::MAX_PERMITS);
    let mut senders = Senders {
        by_leader: BTreeMap::new(),
        tasks: Vec::new(),
        memory: Arc::new(Semaphore::new(memory_bytes)),
        memory_bytes,
    };
    for &p in &cfg.partitions {
        let leader = cfg
            .topic
            .leader_of(p)
            .ok_or_else(|| anyhow!("{}-{p} does not exist", cfg.topic.name))?;
        if senders.by_leader.contains_key(&leader) {
            continue;
        }
        let conn = cluster.connect_to(leader, cfg.max_in_flight).await?;
        let (tx, rx) = mpsc::channel(READY_QUEUE);
        let sender_cfg = SenderConfig {
            topic: cfg.topic.name.clone(),
            acks: cfg.acks,
            timeout_ms: cfg.request_timeout_ms,
            max_request_bytes: cfg.max_request_bytes,
            max_in_flight: cfg.max_in_flight,
        };
        senders.tasks.push(tokio::spawn(sender::run(
            conn,
            sender_cfg,
            rx,
            clock,
            stats.clone(),
        )));
        senders.by_leader.insert(leader, tx);
    }
    let made = produce(&cfg, &mut senders, clock).await;
    let finished = senders.finish().await;
    match (made, finished) {
        (Ok(n), Ok(())) => Ok(n),
        // A sender's own error says more than "channel closed".
        (_, Err(e)) | (Err(e), Ok(())) => Err(e),
    }
}

async fn produce(cfg: &ProducerConfig, senders: &mut Senders, clock: Clock) -> Result<u64> {
    let mut acc = Accumulator::new(
        cfg.partitions.clone(),
        cfg.batch_size_bytes,
        cfg.linger.as_nanos() as u64,
    );
    let mut payloads = Payloads::new(cfg.record_size, cfg.stamped, cfg.seed);
    let mut scratch = Vec::new();
    let start_ns = clock.now_ns();
    let end_ns = cfg.duration.map(|d| start_ns + d.as_nanos() as u64);
    let limit = cfg.planned_records().unwrap_or(u64::MAX);
    let mut made = 0u64;
    while made < limit {
        let mut now = clock.now_ns();
        // A throttled run ends by count (its schedule's records for the duration), so records
        // that fell due before the end are still sent, late, and charged for it.
        if cfg.schedule.is_none() && end_ns.is_some_and(|end| now >= end) {
            break;
        }
        let due = match cfg.schedule {
            Some(s) => s.due_by(now - start_ns).min(limit),
            None => (made + UNTHROTTLED_CHUNK).min(limit),
        };
        if due <= made {
            let s = cfg.schedule.expect("only a schedule makes nothing due");
            let next = start_ns + s.intended_ns(made);
            let wake = acc.linger_deadline_ns().map_or(next, |d| d.min(next));
            tokio::time::sleep_until(clock.instant_at(wake).into()).await;
            if let Some(b) = acc.poll_linger(clock.now_ns()) {
                dispatch(b, cfg, senders, clock, &mut scratch).await?;
            }
            continue;
        }
        for i in made..due {
            let stamp = match cfg.schedule {
                Some(s) => clock.unix_ns(start_ns + s.intended_ns(i)),
                None => clock.unix_ns(now),
            };
            if let Some(b) = acc.append(now, payloads.next(stamp)) {
                dispatch(b, cfg, senders, clock, &mut scratch).await?;
                now = clock.now_ns();
            }
        }
        made = due;
        if let Some(b) = acc.poll_linger(now) {
            dispatch(b, cfg, senders, clock, &mut scratch).await?;
        }
        if cfg.schedule.is_none() {
            // Let the senders run on a busy runtime even when no channel is full.
            tokio::task::yield_now().await;
        }
    }
    if let Some(b) = acc.close() {
        dispatch(b, cfg, senders, clock, &mut scratch).await?;
    }
    Ok(made)
}

async fn dispatch(
    batch: Closed,
    cfg: &ProducerConfig,
    senders: &mut Senders,
    clock: Clock,
    scratch: &mut Vec<kafka_protocol::records::Record>,
) -> Result<()> {
    let timestamp_ms = (clock.unix_ns(clock.now_ns()) / 1_000_000) as i64;
    let data = accumulator::encode(&batch, cfg.compression, timestamp_ms, scratch)?;
    let leader = cfg
        .topic
        .leader_of(batch.partition)
        .expect("partitions were checked at start");
    // Waits while the buffer is full, as Kafka's send() does; a batch larger than the whole
    // buffer takes all of it.
    let want = data
        .len()
        .clamp(1, senders.memory_bytes)
        .min(u32::MAX as usize) as u32;
    let memory = senders
        .memory
        .clone()
        .acquire_many_owned(want)
        .await
        .expect("never closed");
    let ready = Ready {
        partition: batch.partition,
        data,
        records: batch.records() as u32,
        payload_bytes: batch.payload_bytes,
        enqueued: batch.enqueued,
        memory,
    };
    senders.by_leader[&leader]
        .send(ready)
        .await
        .map_err(|_| anyhow!("the sender for broker {leader} stopped"))
}
