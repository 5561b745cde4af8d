//! One producer's link to one broker: drains ready batches into Produce requests and keeps up
//! to `max_in_flight` of them on the wire; a completion task takes the responses in order and
//! charges each record its latency (enqueue to acknowledgement, or to the socket for acks=0).
//!
//! A request holds at most one batch per partition (Kafka refuses more) and at most
//! `max_request_bytes`; a second batch for a partition waits in `held` for the next request.
//! Each batch carries its share of the producer's buffer memory, released on completion.

use std::collections::VecDeque;

use anyhow::{Context, Result};
use bytes::Bytes;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{ApiKey, ProduceRequest, ProduceResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use tokio::sync::{mpsc, OwnedSemaphorePermit};

use crate::client::cluster::error_name;
use crate::client::connection::{Connection, Pending, Written};
use crate::client::splice;
use crate::clock::Clock;
use crate::stats::Stats;

/// A batch encoded and ready for the wire.
#[derive(Debug)]
pub struct Ready {
    pub partition: i32,
    pub data: Bytes,
    pub records: u32,
    pub payload_bytes: u64,
    pub enqueued: Vec<(u64, u32)>,
    /// The batch's bytes of the producer's buffer memory.
    pub memory: OwnedSemaphorePermit,
}

/// What the completion task needs to know about one batch in a request.
struct Sent {
    partition: i32,
    records: u32,
    payload_bytes: u64,
    enqueued: Vec<(u64, u32)>,
    _memory: OwnedSemaphorePermit,
}

enum InFlight {
    Acked(Pending<ProduceResponse>, Vec<Sent>),
    Unacked(Written, Vec<Sent>),
}

pub struct SenderConfig {
    pub topic: String,
    pub acks: i16,
    pub timeout_ms: i32,
    pub max_request_bytes: usize,
    pub max_in_flight: usize,
}

/// Runs until `rx` closes and every request sent has completed.
pub async fn run(
    conn: Connection,
    cfg: SenderConfig,
    mut rx: mpsc::Receiver<Ready>,
    clock: Clock,
    stats: Stats,
) -> Result<()> {
    let version = conn.version(ApiKey::Produce)?;
    let topic = TopicName(StrBytes::from_string(cfg.topic.clone()));
    let (done_tx, done_rx) = mpsc::channel(cfg.max_in_flight.max(1));
    let completer = tokio::spawn(complete(done_rx, clock, stats.clone()));
    let mut held: VecDeque<Ready> = VecDeque::new();
    let result: Result<()> = async {
        loop {
            let first = match held.pop_front() {
                Some(b) => b,
                None => match rx.recv().await {
                    Some(b) => b,
                    None => break,
                },
            };
            let mut bytes = first.data.len();
            let mut batch = vec![first];
            let mut i = 0;
            while i < held.len() && bytes < cfg.max_request_bytes {
                if batch.iter().any(|b| b.partition == held[i].partition) {
                    i += 1;
                } else {
                    let b = held.remove(i).expect("index checked");
                    bytes += b.data.len();
                    batch.push(b);
                }
            }
            // Take more while they are for other partitions; the first repeat waits for the
            // next request (so `held` never holds more than one batch taken here).
            while bytes < cfg.max_request_bytes {
                let Ok(b) = rx.try_recv() else { break };
                if batch.iter().any(|x| x.partition == b.partition) {
                    held.push_back(b);
                    break;
                }
                bytes += b.data.len();
                batch.push(b);
            }
            let mut sent = Vec::with_capacity(batch.len());
            let mut data = Vec::with_capacity(batch.len());
            let mut sets = Vec::with_capacity(batch.len());
            for b in batch {
                // The batch goes on the wire from its own buffer, not copied into the frame.
                data.push(
                    PartitionProduceData::default()
                        .with_index(b.partition)
                        .with_records(Some(splice::marker(sets.len()))),
                );
                sets.push(b.data);
                sent.push(Sent {
                    partition: b.partition,
                    records: b.records,
                    payload_bytes: b.payload_bytes,
                    enqueued: b.enqueued,
                    _memory: b.memory,
                });
            }
            let req = ProduceRequest::default()
                .with_acks(cfg.acks)
                .with_timeout_ms(cfg.timeout_ms)
                .with_topic_data(vec![TopicProduceData::default()
                    .with_name(topic.clone())
                    .with_partition_data(data)]);
            let in_flight = if cfg.acks == 0 {
                InFlight::Unacked(conn.send_no_response(&req, version, sets).await?, sent)
            } else {
                InFlight::Acked(conn.send_spliced(&req, version, sets).await?, sent)
            };
            if done_tx.send(in_flight).await.is_err() {
                break; // the completion task failed; its error is reported below
            }
        }
        Ok(())
    }
    .await;
    drop(done_tx);
    let completed = completer.await.context("completion task panicked")?;
    result.and(completed)
}

async fn complete(mut rx: mpsc::Receiver<InFlight>, clock: Clock, stats: Stats) -> Result<()> {
    while let Some(in_flight) = rx.recv().await {
        match in_flight {
            InFlight::Unacked(written, sent) => match written.wait().await {
                Ok(at) => {
                    let ns = clock.ns_at(at);
                    for s in &sent {
                        stats.record(ns, &s.enqueued, s.payload_bytes);
                    }
                }
                Err(e) => return Err(fail_all(&stats, &sent, e)),
            },
            InFlight::Acked(pending, sent) => match pending.wait().await {
                Ok(resp) => {
                    let ns = clock.now_ns();
                    for s in &sent {
                        let code = resp
                            .responses
                            .iter()
                            .flat_map(|t| t.partition_responses.iter())
                            .find(|p| p.index == s.partition)
                            .map(|p| p.error_code);
                        match code {
                            Some(0) => stats.record(ns, &s.enqueued, s.payload_bytes),
                            Some(code) => {
                                stats.record_failed(u64::from(s.records), error_name(code))
                            }
                            None => stats.record_failed(
                                u64::from(s.records),
                                "partition missing from the Produce response".into(),
                            ),
                        }
                    }
                }
                Err(e) => return Err(fail_all(&stats, &sent, e)),
            },
        }
    }
    Ok(())
}

fn fail_all(stats: &Stats, sent: &[Sent], e: anyhow::Error) -> anyhow::Error {
    for s in sent {
        stats.record_failed(u64::from(s.records), format!("{e:#}"));
    }
    e
}
