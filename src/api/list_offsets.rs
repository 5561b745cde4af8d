//! ListOffsets: latest (= high watermark), earliest (= log start, remote tier included),
//! earliest local (KIP-405), max timestamp, and the first offset at or after a timestamp,
//! looked up in the remote tier first for tiered partitions (it holds the older records).

use std::sync::Arc;

use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::{ListOffsetsRequest, ListOffsetsResponse};

use super::error::ServeError;
use super::{ApiError, Ctx, Reply};
use crate::broker::Broker;
use crate::storage::Partition;

const LATEST: i64 = -1;
const EARLIEST: i64 = -2;
const MAX_TIMESTAMP: i64 = -3;
const EARLIEST_LOCAL: i64 = -4;

pub async fn handle(
    broker: &Arc<Broker>,
    ctx: &Ctx,
    req: ListOffsetsRequest,
) -> Result<Reply, ApiError> {
    let mut topics = Vec::with_capacity(req.topics.len());
    let image = broker.metadata.image();
    for t in req.topics {
        let mut partitions = Vec::with_capacity(t.partitions.len());
        for p in t.partitions {
            let mut r = ListOffsetsPartitionResponse::default()
                .with_partition_index(p.partition_index)
                .with_timestamp(-1)
                .with_offset(-1);
            // leader_epoch exists from v4; older versions refuse a non-default value.
            let current_epoch = if ctx.version >= 4 {
                p.current_leader_epoch
            } else {
                -1
            };
            let leader = super::check_leader(
                &image,
                &t.name.0,
                p.partition_index,
                broker.node_id,
                current_epoch,
            );
            if let (Ok(epoch), true) = (&leader, ctx.version >= 4) {
                r = r.with_leader_epoch(*epoch);
            }
            let outcome = match (leader, broker.logs.partition(&t.name.0, p.partition_index)) {
                (Err(e), _) => Err(e),
                (Ok(_), Some(partition)) => lookup(broker, &partition, p.timestamp).await,
                (Ok(_), None) => Err(ServeError::UnknownTopicOrPartition(format!(
                    "{}-{}",
                    &*t.name.0, p.partition_index
                ))),
            };
            match outcome {
                Ok(Some((offset, ts))) => r = r.with_offset(offset).with_timestamp(ts),
                Ok(None) => {}
                Err(e) => r = r.with_error_code(e.code()).with_leader_epoch(-1),
            }
            partitions.push(r);
        }
        topics.push(
            ListOffsetsTopicResponse::default()
                .with_name(t.name)
                .with_partitions(partitions),
        );
    }
    ctx.reply(&ListOffsetsResponse::default().with_topics(topics))
}

/// (offset, timestamp) for one ListOffsets query; `None` when no record matches.
async fn lookup(
    broker: &Arc<Broker>,
    p: &Partition,
    timestamp: i64,
) -> Result<Option<(i64, i64)>, ServeError> {
    let o = p.offsets();
    let image = broker.metadata.image();
    let topic_id = image.topic(p.topic()).map(|m| m.id).unwrap_or_default();
    // The remote tier counts only while it reaches the local log (see tier::log_start).
    let remote = image
        .remote_log(&topic_id, p.index())
        .filter(|r| crate::tier::log_start(Some(r), o.log_start) < o.log_start);
    let start = crate::tier::log_start(remote, o.log_start);
    Ok(match timestamp {
        LATEST => Some((o.high_watermark, -1)),
        EARLIEST => Some((start, -1)),
        EARLIEST_LOCAL => Some((o.log_start, -1)),
        MAX_TIMESTAMP => {
            let local = p.max_timestamp()?;
            let archived = match remote {
                Some(r) => broker.tiering.max_timestamp(&topic_id, r, start).await?,
                None => None,
            };
            // The first record with the largest timestamp: remote records come first.
            match (archived, local) {
                (Some(a), Some(l)) if l.1 > a.1 => Some(l),
                (Some(a), _) => Some(a),
                (None, l) => l,
            }
        }
        ts if ts >= 0 => {
            let archived = match remote {
                Some(r) => {
                    broker
                        .tiering
                        .offset_for_timestamp(&topic_id, r, ts, start)
                        .await?
                }
                None => None,
            };
            match archived {
                Some(found) => Some(found),
                // A batch may straddle the log start after DeleteRecords; never answer below it.
                None => p
                    .offset_for_timestamp(ts)?
                    .map(|(off, ts)| (off.max(o.log_start), ts)),
            }
        }
        other => {
            return Err(ServeError::InvalidRequest(format!(
                "unknown ListOffsets timestamp {other}"
            )))
        }
    })
}
