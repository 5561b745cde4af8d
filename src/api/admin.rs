//! DescribeCluster, DeleteRecords and OffsetForLeaderEpoch.

use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsTopicResult,
};
use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::offset_for_leader_epoch_response::{
    EpochEndOffset, OffsetForLeaderTopicResult,
};
use kafka_protocol::messages::{
    BrokerId, DeleteRecordsRequest, DeleteRecordsResponse, DescribeClusterRequest,
    DescribeClusterResponse, OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse,
};

use super::error::ServeError;
use super::{str_bytes, ApiError, Ctx, Reply};
use crate::broker::Broker;
use crate::log::LogError;

pub fn describe_cluster(
    broker: &Arc<Broker>,
    ctx: &Ctx,
    _req: DescribeClusterRequest,
) -> Result<Reply, ApiError> {
    let image = broker.metadata.image();
    let brokers = image
        .brokers
        .values()
        .filter(|b| !b.fenced)
        .map(|b| {
            DescribeClusterBroker::default()
                .with_broker_id(BrokerId(b.id))
                .with_host(str_bytes(b.host.clone()))
                .with_port(b.port)
                .with_rack(b.rack.clone().map(str_bytes))
        })
        .collect();
    let resp = DescribeClusterResponse::default()
        .with_cluster_id(str_bytes(broker.cluster_id.clone()))
        .with_controller_id(BrokerId(broker.metadata.controller_id()))
        .with_endpoint_type(1)
        .with_brokers(brokers);
    ctx.reply(&resp)
}

pub async fn delete_records(
    broker: &Arc<Broker>,
    ctx: &Ctx,
    req: DeleteRecordsRequest,
) -> Result<Reply, ApiError> {
    let mut topics = Vec::with_capacity(req.topics.len());
    let image = broker.metadata.image();
    for t in req.topics {
        let mut partitions = Vec::with_capacity(t.partitions.len());
        for p in t.partitions {
            let leader =
                super::check_leader(&image, &t.name.0, p.partition_index, broker.node_id, -1);
            let outcome = match (leader, broker.logs.partition(&t.name.0, p.partition_index)) {
                (Err(e), _) => Err(e),
                (Ok(_), Some(partition)) => {
                    delete_partition_records(broker, &partition, p.offset).await
                }
                (Ok(_), None) => Err(ServeError::UnknownTopicOrPartition(format!(
                    "{}-{}",
                    &*t.name.0, p.partition_index
                ))),
            };
            let r = DeleteRecordsPartitionResult::default().with_partition_index(p.partition_index);
            partitions.push(match outcome {
                Ok(low) => {
                    tracing::info!(topic = %&*t.name.0, partition = p.partition_index, log_start = low, "deleted records");
                    r.with_low_watermark(low)
                }
                Err(e) => r.with_low_watermark(-1).with_error_code(e.code()),
            });
        }
        topics.push(
            DeleteRecordsTopicResult::default()
                .with_name(t.name)
                .with_partitions(partitions),
        );
    }
    ctx.reply(&DeleteRecordsResponse::default().with_topics(topics))
}

/// DeleteRecords of one partition: moves the log start to `offset` (-1 = high watermark) in
/// both tiers. Returns the new log start (low watermark).
async fn delete_partition_records(
    broker: &Arc<Broker>,
    partition: &crate::storage::Partition,
    offset: i64,
) -> Result<i64, ServeError> {
    let image = broker.metadata.image();
    let topic_id = image.topic(partition.topic()).map(|m| m.id);
    let remote = topic_id.and_then(|id| image.remote_log(&id, partition.index()));
    let Some((topic_id, remote)) = topic_id.zip(remote.filter(|r| r.start_offset().is_some()))
    else {
        return tokio::task::block_in_place(|| partition.delete_records(offset))
            .map_err(ServeError::from);
    };
    let o = partition.offsets();
    let start = crate::tier::log_start(Some(remote), o.log_start);
    let target = if offset == -1 {
        o.high_watermark
    } else {
        offset
    };
    if target < start || target > o.high_watermark {
        return Err(LogError::OffsetOutOfRange {
            offset: target,
            log_start: start,
            log_end: o.high_watermark,
        }
        .into());
    }
    if target > o.log_start {
        tokio::task::block_in_place(|| partition.delete_records(target))?;
    }
    broker
        .tiering
        .trim(&broker.metadata, topic_id, partition, target)
        .await?;
    Ok(target)
}

pub fn offset_for_leader_epoch(
    broker: &Arc<Broker>,
    ctx: &Ctx,
    req: OffsetForLeaderEpochRequest,
) -> Result<Reply, ApiError> {
    let mut topics = Vec::with_capacity(req.topics.len());
    let image = broker.metadata.image();
    for t in req.topics {
        let mut partitions = Vec::with_capacity(t.partitions.len());
        for p in t.partitions {
            let mut r = EpochEndOffset::default()
                .with_partition(p.partition)
                .with_leader_epoch(-1)
                .with_end_offset(-1);
            let leader = super::check_leader(
                &image,
                &t.topic.0,
                p.partition,
                broker.node_id,
                p.current_leader_epoch,
            );
            match (leader, broker.logs.partition(&t.topic.0, p.partition)) {
                (Err(e), _) => r = r.with_error_code(e.code()),
                (Ok(_), None) => {
                    r = r.with_error_code(ResponseError::UnknownTopicOrPartition.code())
                }
                // The largest epoch at or below the one asked for, and where it ends (Kafka's
                // answer); epochs before any this log holds are undefined (-1, -1).
                (Ok(_), Some(partition)) => {
                    if let Some((epoch, end)) = partition.end_offset_for_epoch(p.leader_epoch) {
                        r = r.with_leader_epoch(epoch).with_end_offset(end);
                    }
                }
            }
            partitions.push(r);
        }
        topics.push(
            OffsetForLeaderTopicResult::default()
                .with_topic(t.topic)
                .with_partitions(partitions),
        );
    }
    ctx.reply(&OffsetForLeaderEpochResponse::default().with_topics(topics))
}
