//! Fetch: serves stored batches as they are on disk (no per-record work), honouring
//! `max_bytes` (at least one whole batch, KIP-74), `partition_max_bytes`, and long-polling
//! with `min_bytes`/`max_wait_ms`. Fetch sessions (KIP-227) are declined (session id 0),
//! so every fetch is a full fetch.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::fetch_request::FetchTopic;
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::{FetchRequest, FetchResponse, TopicName};

use super::error::ServeError;
use super::{ApiError, Ctx, Reply};
use crate::broker::Broker;

/// Longest long-poll the broker will hold a fetch, whatever the client asks.
const MAX_WAIT_CAP_MS: i32 = 30_000;

pub async fn handle(broker: &Arc<Broker>, ctx: &Ctx, req: FetchRequest) -> Result<Reply, ApiError> {
    if req.session_id != 0 || req.session_epoch > 0 {
        // We never hand out sessions, so an incremental fetch names one we do not know.
        let resp =
            FetchResponse::default().with_error_code(ResponseError::FetchSessionIdNotFound.code());
        return ctx.reply(&resp);
    }
    let replica = if ctx.version >= 15 {
        req.replica_state.replica_id.0
    } else {
        req.replica_id.0
    };
    let mut changes = broker.logs.subscribe();
    let wait = Duration::from_millis(req.max_wait_ms.clamp(0, MAX_WAIT_CAP_MS) as u64);
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        changes.borrow_and_update();
        let (responses, bytes, errors) = read_all(broker, ctx, &req, replica);
        let done = bytes >= req.min_bytes.max(0) as usize
            || errors
            || tokio::time::Instant::now() >= deadline;
        if done {
            return ctx.reply(&FetchResponse::default().with_responses(responses));
        }
        // Wait for new data anywhere, then re-read: cheap, and correct under any interleaving.
        if tokio::time::timeout_at(deadline, changes.changed())
            .await
            .is_err()
        {
            let (responses, _, _) = read_all(broker, ctx, &req, replica);
            return ctx.reply(&FetchResponse::default().with_responses(responses));
        }
    }
}

/// One pass over every requested partition: (responses, record bytes, any error).
fn read_all(
    broker: &Broker,
    ctx: &Ctx,
    req: &FetchRequest,
    replica: i32,
) -> (Vec<FetchableTopicResponse>, usize, bool) {
    let mut remaining = req.max_bytes.max(0) as usize;
    let mut total = 0usize;
    let mut any_error = false;
    let image = broker.metadata.image();
    let mut out = Vec::with_capacity(req.topics.len());
    for t in &req.topics {
        let name = topic_name(ctx, &image, t);
        let hosted = name.as_ref().and_then(|n| broker.logs.topic(n));
        let mut partitions = Vec::with_capacity(t.partitions.len());
        for p in &t.partitions {
            let mut data = PartitionData::default()
                .with_partition_index(p.partition)
                .with_high_watermark(-1)
                .with_last_stable_offset(-1)
                .with_log_start_offset(-1)
                .with_preferred_read_replica(kafka_protocol::messages::BrokerId(-1))
                .with_records(Some(Bytes::new()));
            // No transactions yet: read_committed gets an empty list, read_uncommitted null.
            if req.isolation_level == 0 {
                data = data.with_aborted_transactions(None);
            }
            let partition = hosted.as_ref().and_then(|h| {
                h.partitions
                    .get(usize::try_from(p.partition).ok()?)
                    .cloned()
            });
            let result = if replica >= 0 {
                Err(ServeError::InvalidRequest(format!(
                    "replica id {replica}: only brokers may fetch as replicas"
                )))
            } else if let Some(partition) = partition {
                // The first partition with data may exceed max_bytes by one batch (KIP-74).
                let limit = (p.partition_max_bytes.max(0) as usize)
                    .min(remaining.max(if total == 0 { 1 } else { 0 }));
                if limit == 0 {
                    Ok((Bytes::new(), partition.offsets()))
                } else {
                    partition
                        .read(p.fetch_offset, limit)
                        .map_err(ServeError::from)
                }
            } else if name.is_none() {
                Err(ServeError::UnknownTopicId(t.topic_id.to_string()))
            } else {
                Err(ServeError::UnknownTopicOrPartition(format!(
                    "{}-{}",
                    name.clone().unwrap_or_default(),
                    p.partition
                )))
            };
            match result {
                Ok((bytes, offsets)) => {
                    total += bytes.len();
                    remaining = remaining.saturating_sub(bytes.len());
                    data = data
                        .with_high_watermark(offsets.high_watermark)
                        .with_last_stable_offset(offsets.high_watermark)
                        .with_log_start_offset(offsets.log_start)
                        .with_records(Some(bytes));
                }
                Err(e) => {
                    any_error = true;
                    if let Some(partition) = broker
                        .logs
                        .partition(name.as_deref().unwrap_or(""), p.partition)
                    {
                        let o = partition.offsets();
                        data = data
                            .with_high_watermark(o.high_watermark)
                            .with_last_stable_offset(o.high_watermark)
                            .with_log_start_offset(o.log_start);
                    }
                    data = data.with_error_code(e.code());
                }
            }
            partitions.push(data);
        }
        let mut resp = FetchableTopicResponse::default()
            .with_topic_id(t.topic_id)
            .with_partitions(partitions);
        if ctx.version < 13 {
            resp = resp.with_topic(t.topic.clone());
        }
        out.push(resp);
    }
    (out, total, any_error)
}

fn topic_name(ctx: &Ctx, image: &crate::cluster::MetadataImage, t: &FetchTopic) -> Option<String> {
    if ctx.version >= 13 {
        image.topic_by_id(&t.topic_id).map(|m| m.name.clone())
    } else {
        let TopicName(name) = &t.topic;
        Some(name.to_string())
    }
}
