//! AlterPartitionReassignments and ListPartitionReassignments (KIP-455): moving a partition's
//! replicas between brokers. The controller adds the new replicas, which catch up as
//! followers and join the ISR; once every target replica is in sync the old ones leave (and
//! delete their copy), and leadership moves into the target set if it was outside.

use std::sync::Arc;

use kafka_protocol::messages::alter_partition_reassignments_response::{
    ReassignablePartitionResponse, ReassignableTopicResponse,
};
use kafka_protocol::messages::list_partition_reassignments_response::{
    OngoingPartitionReassignment, OngoingTopicReassignment,
};
use kafka_protocol::messages::{
    AlterPartitionReassignmentsRequest, AlterPartitionReassignmentsResponse, BrokerId,
    ListPartitionReassignmentsRequest, ListPartitionReassignmentsResponse, TopicName,
};

use super::error::ServeError;
use super::{str_bytes, ApiError, Ctx, Reply};
use crate::broker::Broker;
use crate::cluster::MetadataCommand;

pub async fn alter(
    broker: &Arc<Broker>,
    ctx: &Ctx,
    req: AlterPartitionReassignmentsRequest,
) -> Result<Reply, ApiError> {
    let mut topics = Vec::with_capacity(req.topics.len());
    for t in req.topics {
        let name = t.name.0.to_string();
        let mut partitions = Vec::with_capacity(t.partitions.len());
        for p in t.partitions {
            let target = p
                .replicas
                .map(|rs| rs.into_iter().map(|b| b.0).collect::<Vec<i32>>());
            let outcome = reassign(broker, &name, p.partition_index, target).await;
            let mut r =
                ReassignablePartitionResponse::default().with_partition_index(p.partition_index);
            if let Err(e) = outcome {
                r = r
                    .with_error_code(e.code())
                    .with_error_message(Some(str_bytes(e.to_string())));
            }
            partitions.push(r);
        }
        topics.push(
            ReassignableTopicResponse::default()
                .with_name(t.name)
                .with_partitions(partitions),
        );
    }
    ctx.reply(&AlterPartitionReassignmentsResponse::default().with_responses(topics))
}

async fn reassign(
    broker: &Broker,
    topic: &str,
    partition: i32,
    target: Option<Vec<i32>>,
) -> Result<(), ServeError> {
    let image = broker.metadata.image();
    let meta = image
        .topic(topic)
        .filter(|m| (0..m.partitions).contains(&partition))
        .ok_or_else(|| ServeError::UnknownTopicOrPartition(format!("{topic}-{partition}")))?;
    let cmd = MetadataCommand::ReassignPartition {
        topic_id: meta.id,
        partition,
        target: target.clone(),
    };
    broker.metadata.propose(cmd).await?;
    match target {
        Some(t) => {
            tracing::info!(partition = %format!("{topic}-{partition}"), target = ?t, "reassignment started")
        }
        None => {
            tracing::info!(partition = %format!("{topic}-{partition}"), "reassignment cancelled")
        }
    }
    Ok(())
}

pub fn list(
    broker: &Arc<Broker>,
    ctx: &Ctx,
    req: ListPartitionReassignmentsRequest,
) -> Result<Reply, ApiError> {
    let image = broker.metadata.image();
    let wanted: Option<Vec<(String, Vec<i32>)>> = req.topics.map(|ts| {
        ts.into_iter()
            .map(|t| (t.name.0.to_string(), t.partition_indexes))
            .collect()
    });
    let ids = |v: &[i32]| v.iter().copied().map(BrokerId).collect::<Vec<_>>();
    let mut topics = Vec::new();
    for meta in image.topics.values() {
        let only: Option<&Vec<i32>> = match &wanted {
            Some(w) => match w.iter().find(|(n, _)| *n == meta.name) {
                Some((_, parts)) => Some(parts),
                None => continue,
            },
            None => None,
        };
        let partitions: Vec<OngoingPartitionReassignment> = meta
            .assignment
            .iter()
            .enumerate()
            .filter(|(i, p)| {
                (!p.adding.is_empty() || !p.removing.is_empty())
                    && only.is_none_or(|o| o.contains(&(*i as i32)))
            })
            .map(|(i, p)| {
                OngoingPartitionReassignment::default()
                    .with_partition_index(i as i32)
                    .with_replicas(ids(&p.replicas))
                    .with_adding_replicas(ids(&p.adding))
                    .with_removing_replicas(ids(&p.removing))
            })
            .collect();
        if !partitions.is_empty() {
            topics.push(
                OngoingTopicReassignment::default()
                    .with_name(TopicName(str_bytes(meta.name.clone())))
                    .with_partitions(partitions),
            );
        }
    }
    ctx.reply(&ListPartitionReassignmentsResponse::default().with_topics(topics))
}
