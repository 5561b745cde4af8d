//! OffsetCommit, OffsetFetch (single- and multi-group forms) and OffsetDelete.

use std::sync::Arc;

use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::offset_delete_response::{
    OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
};
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use kafka_protocol::messages::{
    OffsetCommitRequest, OffsetCommitResponse, OffsetDeleteRequest, OffsetDeleteResponse,
    OffsetFetchRequest, OffsetFetchResponse, TopicName,
};

use super::error::ServeError;
use super::{str_bytes, ApiError, Ctx, Reply};
use crate::broker::Broker;
use crate::coordinator::records::CommittedOffset;
use crate::coordinator::CoordinatorError;

pub async fn commit(
    broker: &Arc<Broker>,
    ctx: &Ctx,
    req: OffsetCommitRequest,
) -> Result<Reply, ApiError> {
    let now = crate::now_ms();
    let mut topics = Vec::with_capacity(req.topics.len());
    // (topic index, partition index in response) of every valid entry, in request order.
    let mut valid = Vec::new();
    let mut offsets = Vec::new();
    for (ti, t) in req.topics.iter().enumerate() {
        let mut partitions = Vec::with_capacity(t.partitions.len());
        for p in &t.partitions {
            let mut r =
                OffsetCommitResponsePartition::default().with_partition_index(p.partition_index);
            if broker
                .logs
                .partition(&t.name.0, p.partition_index)
                .is_some()
            {
                valid.push((ti, partitions.len()));
                offsets.push((
                    t.name.0.to_string(),
                    p.partition_index,
                    CommittedOffset {
                        offset: p.committed_offset,
                        leader_epoch: p.committed_leader_epoch,
                        metadata: p.committed_metadata.as_ref().map(|m| m.to_string()),
                        commit_timestamp_ms: now,
                    },
                ));
            } else {
                r = r.with_error_code(
                    ServeError::UnknownTopicOrPartition(format!(
                        "{}-{}",
                        &*t.name.0, p.partition_index
                    ))
                    .code(),
                );
            }
            partitions.push(r);
        }
        topics.push(
            OffsetCommitResponseTopic::default()
                .with_name(t.name.clone())
                .with_partitions(partitions),
        );
    }
    if !offsets.is_empty() {
        let instance = req.group_instance_id.as_ref().map(|s| s.to_string());
        let member = (
            req.member_id.as_str(),
            instance.as_deref(),
            req.generation_id_or_member_epoch,
        );
        if let Err(e) = broker
            .coordinator
            .commit_offsets(&req.group_id, member, offsets)
            .await
        {
            let e = ServeError::from(e);
            tracing::debug!(group = %&*req.group_id, error = %e, "offset commit refused");
            for (ti, pi) in valid {
                topics[ti].partitions[pi].error_code = e.code();
            }
        }
    }
    ctx.reply(&OffsetCommitResponse::default().with_topics(topics))
}

type Wanted = Option<Vec<(String, Vec<i32>)>>;

/// (topic, partition, offset, leader epoch, metadata) rows, or the group-level error.
fn fetch_group(
    broker: &Broker,
    group: &str,
    wanted: Wanted,
) -> Result<Vec<(String, i32, CommittedOffset)>, ServeError> {
    let rows = broker.coordinator.fetch_offsets(group, wanted)?;
    Ok(rows
        .into_iter()
        .map(|(t, p, o)| {
            let o = o.unwrap_or(CommittedOffset {
                offset: -1,
                leader_epoch: -1,
                metadata: Some(String::new()),
                commit_timestamp_ms: -1,
            });
            (t, p, o)
        })
        .collect())
}

pub fn fetch(broker: &Arc<Broker>, ctx: &Ctx, req: OffsetFetchRequest) -> Result<Reply, ApiError> {
    if ctx.version >= 8 {
        let groups = req
            .groups
            .into_iter()
            .map(|g| {
                let wanted: Wanted = g.topics.map(|ts| {
                    ts.into_iter()
                        .map(|t| (t.name.0.to_string(), t.partition_indexes))
                        .collect()
                });
                let out = OffsetFetchResponseGroup::default().with_group_id(g.group_id.clone());
                match fetch_group(broker, &g.group_id, wanted) {
                    Ok(rows) => out.with_topics(group_rows(rows, |t, ps| {
                        OffsetFetchResponseTopics::default()
                            .with_name(TopicName(str_bytes(t)))
                            .with_partitions(
                                ps.into_iter()
                                    .map(|(p, o)| {
                                        OffsetFetchResponsePartitions::default()
                                            .with_partition_index(p)
                                            .with_committed_offset(o.offset)
                                            .with_committed_leader_epoch(o.leader_epoch)
                                            .with_metadata(o.metadata.map(str_bytes))
                                    })
                                    .collect(),
                            )
                    })),
                    Err(e) => out.with_error_code(e.code()),
                }
            })
            .collect();
        return ctx.reply(&OffsetFetchResponse::default().with_groups(groups));
    }
    let wanted: Wanted = req.topics.map(|ts| {
        ts.into_iter()
            .map(|t| (t.name.0.to_string(), t.partition_indexes))
            .collect()
    });
    let mut resp = OffsetFetchResponse::default();
    match fetch_group(broker, &req.group_id, wanted.clone()) {
        Ok(rows) => {
            resp.topics = group_rows(rows, |t, ps| {
                OffsetFetchResponseTopic::default()
                    .with_name(TopicName(str_bytes(t)))
                    .with_partitions(
                        ps.into_iter()
                            .map(|(p, o)| {
                                OffsetFetchResponsePartition::default()
                                    .with_partition_index(p)
                                    .with_committed_offset(o.offset)
                                    .with_committed_leader_epoch(o.leader_epoch)
                                    .with_metadata(o.metadata.map(str_bytes))
                            })
                            .collect(),
                    )
            });
        }
        Err(e) if ctx.version >= 2 => resp = resp.with_error_code(e.code()),
        Err(e) => {
            // v1 has no group-level error: report it on every requested partition.
            resp.topics = wanted
                .unwrap_or_default()
                .into_iter()
                .map(|(t, ps)| {
                    OffsetFetchResponseTopic::default()
                        .with_name(TopicName(str_bytes(t)))
                        .with_partitions(
                            ps.into_iter()
                                .map(|p| {
                                    OffsetFetchResponsePartition::default()
                                        .with_partition_index(p)
                                        .with_committed_offset(-1)
                                        .with_error_code(e.code())
                                })
                                .collect(),
                        )
                })
                .collect();
        }
    }
    ctx.reply(&resp)
}

/// Groups rows by topic, keeping first-seen topic order.
fn group_rows<T>(
    rows: Vec<(String, i32, CommittedOffset)>,
    make: impl Fn(String, Vec<(i32, CommittedOffset)>) -> T,
) -> Vec<T> {
    let mut order: Vec<(String, Vec<(i32, CommittedOffset)>)> = Vec::new();
    for (t, p, o) in rows {
        match order.iter_mut().find(|(name, _)| *name == t) {
            Some((_, ps)) => ps.push((p, o)),
            None => order.push((t, vec![(p, o)])),
        }
    }
    order.into_iter().map(|(t, ps)| make(t, ps)).collect()
}

pub async fn delete(
    broker: &Arc<Broker>,
    ctx: &Ctx,
    req: OffsetDeleteRequest,
) -> Result<Reply, ApiError> {
    let partitions: Vec<(String, i32)> = req
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions
                .iter()
                .map(move |p| (t.name.0.to_string(), p.partition_index))
        })
        .collect();
    let mut resp = OffsetDeleteResponse::default();
    match broker
        .coordinator
        .delete_offsets(&req.group_id, partitions)
        .await
    {
        Ok(results) => {
            let mut results = results.into_iter();
            resp.topics = req
                .topics
                .into_iter()
                .map(|t| {
                    let parts = t
                        .partitions
                        .iter()
                        .map(|p| {
                            let code = match results.next() {
                                Some(Err(e)) => ServeError::from(e).code(),
                                _ => 0,
                            };
                            OffsetDeleteResponsePartition::default()
                                .with_partition_index(p.partition_index)
                                .with_error_code(code)
                        })
                        .collect();
                    OffsetDeleteResponseTopic::default()
                        .with_name(t.name)
                        .with_partitions(parts)
                })
                .collect();
        }
        Err(e) => resp = resp.with_error_code(ServeError::from(e).code()),
    }
    ctx.reply(&resp)
}

impl From<CoordinatorError> for ServeError {
    fn from(e: CoordinatorError) -> Self {
        ServeError::Coordinator(e)
    }
}
