//! DescribeLogDirs: the one log directory, its partitions' sizes, and its disk space.

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
    ctx.reply(&DescribeLogDirsResponse::default().with_results(vec![result]))
}
