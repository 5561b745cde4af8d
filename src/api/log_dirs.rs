//! DescribeLogDirs: the one log directory, its partitions' sizes, and its disk space; then,
//! when any partition is tiered, the object store as a second "log dir" (named by its URL)
//! with the archived size of each tiered partition, so `kafka-log-dirs` shows both tiers.

use std::sync::Arc;

use kafka_protocol::messages::describe_log_dirs_response::{
    DescribeLogDirsPartition, DescribeLogDirsResult, DescribeLogDirsTopic,
};
use kafka_protocol::messages::{DescribeLogDirsRequest, DescribeLogDirsResponse, TopicName};

use super::{str_bytes, ApiError, Ctx, Reply};
use crate::broker::Broker;

pub fn describe(
    broker: &Arc<Broker>,
    ctx: &Ctx,
    req: DescribeLogDirsRequest,
) -> Result<Reply, ApiError> {
    let image = broker.metadata.image();
    // null = every partition.
    let wanted: Vec<(String, Vec<i32>)> = match req.topics {
        None => image
            .topics
            .values()
            .map(|m| (m.name.clone(), (0..m.partitions).collect()))
            .collect(),
        Some(topics) => topics
            .into_iter()
            .map(|t| (t.topic.0.to_string(), t.partitions))
            .collect(),
    };
    let mut topics = Vec::new();
    let mut remote_topics = Vec::new();
    for (name, parts) in &wanted {
        let Some(meta) = image.topic(name) else {
            continue;
        };
        let partitions: Vec<_> = parts
            .iter()
            .filter_map(|i| image.remote_log(&meta.id, *i).map(|r| (*i, r)))
            .map(|(i, r)| {
                DescribeLogDirsPartition::default()
                    .with_partition_index(i)
                    .with_partition_size(r.manifest.size_bytes() as i64)
                    .with_offset_lag(0)
            })
            .collect();
        if !partitions.is_empty() {
            remote_topics.push(
                DescribeLogDirsTopic::default()
                    .with_name(TopicName(str_bytes(name.clone())))
                    .with_partitions(partitions),
            );
        }
    }
    for (name, parts) in wanted {
        let partitions: Vec<_> = parts
            .into_iter()
            .filter_map(|i| broker.logs.partition(&name, i))
            .map(|p| {
                DescribeLogDirsPartition::default()
                    .with_partition_index(p.index())
                    .with_partition_size(p.size_bytes() as i64)
                    .with_offset_lag(0)
            })
            .collect();
        if !partitions.is_empty() {
            topics.push(
                DescribeLogDirsTopic::default()
                    .with_name(TopicName(str_bytes(name)))
                    .with_partitions(partitions),
            );
        }
    }
    let dir = broker.logs.dir();
    let total = fs4::total_space(dir).map(|v| v as i64).unwrap_or(-1);
    let usable = fs4::available_space(dir).map(|v| v as i64).unwrap_or(-1);
    let result = DescribeLogDirsResult::default()
        .with_log_dir(str_bytes(dir.display().to_string()))
        .with_topics(topics)
        .with_total_bytes(total)
        .with_usable_bytes(usable);
    let mut results = vec![result];
    if !remote_topics.is_empty() {
        // An object store has no fixed capacity: -1 (unknown), as Kafka reports for a
        // directory whose size it cannot read.
        results.push(
            DescribeLogDirsResult::default()
                .with_log_dir(str_bytes(broker.tiering.url().to_owned()))
                .with_topics(remote_topics)
                .with_total_bytes(-1)
                .with_usable_bytes(-1),
        );
    }
    ctx.reply(&DescribeLogDirsResponse::default().with_results(results))
}
