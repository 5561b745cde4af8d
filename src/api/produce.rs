//! Produce: validate and append each partition's record batches in request order, then (for
//! acks 1/-1) answer once a group-commit fsync covers them. acks=0 gets no response at all.
//! An idempotent producer's retry of batches already written is answered with the original
//! offsets (after the same fsync, since the original may still be waiting for it); the
//! producer state rules live in `log::producer_state`.

use std::sync::Arc;

use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse};
use tokio::sync::oneshot;

use super::error::ServeError;
use super::{str_bytes, ApiError, Ctx, Reply};
use crate::broker::Broker;
use crate::storage::{FlushResult, Flusher};

/// A partition's outcome before durability is known.
struct Pending {
    topic: usize,
    response: PartitionProduceResponse,
    flush: Option<oneshot::Receiver<FlushResult>>,
    /// acks=all: the partition and the offset its high watermark must reach.
    replicate: Option<(Arc<crate::storage::Partition>, i64, i32)>,
}

pub async fn handle(
    broker: &Arc<Broker>,
    ctx: &Ctx,
    req: ProduceRequest,
) -> Result<Reply, ApiError> {
    let acks = req.acks;
    let now = crate::now_ms();
    let started = std::time::Instant::now();
    let mut topics = Vec::with_capacity(req.topic_data.len());
    let mut pending = Vec::new();
    let image = broker.metadata.image();
    for (ti, t) in req.topic_data.into_iter().enumerate() {
        topics.push(TopicProduceResponse::default().with_name(t.name.clone()));
        let hosted = broker.logs.topic(&t.name.0);
        for pd in t.partition_data {
            let mut resp = PartitionProduceResponse::default()
                .with_index(pd.index)
                .with_base_offset(-1)
                .with_log_append_time_ms(-1)
                .with_log_start_offset(-1);
            let mut flush = None;
            let mut replicate = None;
            let partition = hosted
                .as_ref()
                .and_then(|h| h.partitions.get(&pd.index).cloned());
            let outcome = if !matches!(acks, -1..=1) {
                Err(ServeError::InvalidRequiredAcks(acks))
            } else if let Err(e) =
                super::check_leader(&image, &t.name.0, pd.index, broker.node_id, -1)
            {
                Err(e)
            } else if super::topics::is_internal(&t.name.0) {
                Err(ServeError::InvalidTopic(format!(
                    "Cannot append to internal topic {}",
                    &*t.name.0
                )))
            } else if broker.tiering.disk_low() && partition.is_some() {
                Err(ServeError::DiskLow)
            } else if let Some((isr, min)) = partition
                .as_ref()
                .map(|p| p.insync())
                .filter(|(isr, min)| acks == -1 && isr < min)
            {
                Err(ServeError::NotEnoughReplicas(
                    format!("{}-{}", &*t.name.0, pd.index),
                    isr,
                    min,
                ))
            } else if let Some(p) = partition {
                let records = pd.records.unwrap_or_default();
                match p.append(&records, now) {
                    Ok(a) => {
                        if a.duplicate {
                            tracing::debug!(topic = %&*t.name.0, partition = pd.index,
                                base_offset = a.base_offset, "duplicate produce answered with the original offset");
                        }
                        resp = resp
                            .with_base_offset(a.base_offset)
                            .with_log_append_time_ms(a.log_append_time.unwrap_or(-1))
                            .with_log_start_offset(a.log_start_offset);
                        if acks == -1 {
                            replicate = Some((p.clone(), a.last_offset + 1, a.leader_epoch));
                        }
                        if a.needs_flush && acks != 0 {
                            flush = Some(broker.logs.flusher().submit(p).await);
                        } else if a.needs_flush || a.flush_due {
                            broker.logs.flusher().flush_soon(p);
                        }
                        Ok(())
                    }
                    Err(e) => Err(ServeError::from(e)),
                }
            } else {
                Err(ServeError::UnknownTopicOrPartition(format!(
                    "{}-{}",
                    &*t.name.0, pd.index
                )))
            };
            if let Err(e) = outcome {
                tracing::debug!(topic = %&*t.name.0, partition = pd.index, error = %e, "produce rejected");
                resp = resp
                    .with_error_code(e.code())
                    .with_error_message(Some(str_bytes(e.to_string())));
            }
            pending.push(Pending {
                topic: ti,
                response: resp,
                flush,
                replicate,
            });
        }
    }
    if acks == 0 {
        return Ok(Reply::Nothing);
    }
    let (api, version, correlation_id) = (ctx.api, ctx.version, ctx.header.correlation_id);
    let timeout = std::time::Duration::from_millis(req.timeout_ms.max(0) as u64);
    let finish = async move {
        for p in pending {
            let mut resp = p.response;
            let mut failed = None;
            if let Some(rx) = p.flush {
                if let Err(e) = Flusher::wait(rx).await {
                    failed = Some(ServeError::Flush(e));
                }
            }
            // acks=all: the in-sync replicas must hold it too (the high watermark passes it).
            if let (None, Some((partition, end, epoch))) = (&failed, p.replicate) {
                match partition.wait_for_high_watermark(end, epoch, timeout).await {
                    Ok(()) => {}
                    Err(crate::storage::ReplicationWait::NotLeader) => {
                        failed = Some(ServeError::NotLeaderOrFollower(partition.name()));
                    }
                    Err(crate::storage::ReplicationWait::TimedOut) => {
                        let (isr, min) = partition.insync();
                        failed = Some(if isr < min {
                            ServeError::NotEnoughReplicasAfterAppend(partition.name())
                        } else {
                            ServeError::ReplicationTimedOut(partition.name())
                        });
                    }
                }
            }
            if let Some(e) = failed {
                resp = resp
                    .with_base_offset(-1)
                    .with_error_code(e.code())
                    .with_error_message(Some(str_bytes(e.to_string())));
            }
            topics[p.topic].partition_responses.push(resp);
        }
        let body = ProduceResponse::default().with_responses(topics);
        crate::storage::metrics::PRODUCE.record(started.elapsed());
        match super::encode_frame(api, version, correlation_id, &body) {
            Ok(bytes) => bytes,
            Err(e) => {
                // Encoding our own well-formed response cannot fail; if it does, it is a bug.
                tracing::error!(error = %e, "encoding produce response");
                bytes::Bytes::new()
            }
        }
    };
    Ok(Reply::Later(Box::pin(finish)))
}
