//! CreateTopics, DeleteTopics, CreatePartitions, and the topic creation shared with
//! Metadata's auto-creation. Every topic in a request gets its own result and error.

use std::collections::BTreeMap;
use std::sync::Arc;

use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::create_topics_response::{
    CreatableTopicConfigs, CreatableTopicResult,
};
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::{
    CreatePartitionsRequest, CreatePartitionsResponse, CreateTopicsRequest, CreateTopicsResponse,
    DeleteTopicsRequest, DeleteTopicsResponse, TopicName,
};
use uuid::Uuid;

use super::error::ServeError;
use super::{str_bytes, ApiError, Ctx, Reply};
use crate::broker::Broker;
use crate::cluster::{MetadataCommand, MetadataImage, TopicMeta};
use crate::config::topic::{self, TopicConfig};

/// Most partitions one topic may have; each is a directory of open files.
const MAX_PARTITIONS: i32 = 10_000;

/// The coordinator's internal topic: clients may read it but not write, grow or delete it.
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";

pub fn is_internal(name: &str) -> bool {
    name == OFFSETS_TOPIC
}

/// Kafka's topic name rules.
pub fn validate_topic_name(name: &str) -> Result<(), ServeError> {
    let bad = |why: &str| {
        Err(ServeError::InvalidTopic(format!(
            "Invalid topic name '{name}': {why}"
        )))
    };
    if name.is_empty() {
        return bad("the empty string is not allowed");
    }
    if name == "." || name == ".." {
        return bad("'.' and '..' are not allowed");
    }
    if name.len() > 249 {
        return bad("longer than 249 characters");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return bad("only ASCII alphanumerics, '.', '_' and '-' are allowed");
    }
    Ok(())
}

pub struct NewTopic<'a> {
    pub name: &'a str,
    pub partitions: i32,
    pub replication_factor: i16,
    pub configs: BTreeMap<String, String>,
}

/// Validates and (unless `validate_only`) creates a topic through the metadata quorum.
pub async fn create_topic(
    broker: &Broker,
    t: NewTopic<'_>,
    validate_only: bool,
) -> Result<(TopicMeta, TopicConfig), ServeError> {
    validate_topic_name(t.name)?;
    let partitions = if t.partitions == -1 {
        broker.config.num_partitions
    } else {
        t.partitions
    };
    if !(1..=MAX_PARTITIONS).contains(&partitions) {
        return Err(ServeError::InvalidPartitions(format!(
            "Number of partitions must be between 1 and {MAX_PARTITIONS}, got {partitions}"
        )));
    }
    let rf = if t.replication_factor == -1 {
        broker.config.default_replication_factor
    } else {
        t.replication_factor
    };
    let config = TopicConfig::resolve(&broker.config, &t.configs)?;
    let image = broker.metadata.image();
    if image.topic(t.name).is_some() {
        return Err(crate::cluster::ClusterError::Rejected(
            crate::cluster::MetadataError::TopicExists(t.name.to_string()),
        )
        .into());
    }
    let replicas = place_replicas(&image, 0, partitions, rf)?;
    let meta = TopicMeta::new(t.name.to_string(), t.configs, replicas);
    if !validate_only {
        broker
            .metadata
            .propose(MetadataCommand::CreateTopic(meta.clone()))
            .await?;
        broker.sync_logs()?;
        tracing::info!(topic = %meta.name, partitions, "created topic");
    }
    Ok((meta, config))
}

/// Replica lists for new partitions `first..first + count` on the live brokers.
fn place_replicas(
    image: &MetadataImage,
    first: i32,
    count: i32,
    replication_factor: i16,
) -> Result<Vec<Vec<i32>>, ServeError> {
    image.place(first, count, replication_factor).map_err(|e| {
        ServeError::InvalidReplicationFactor(format!(
            "Replication factor: {replication_factor} larger than available brokers: {}.",
            e.available
        ))
    })
}

pub async fn create(
    broker: &Arc<Broker>,
    ctx: &Ctx,
    req: CreateTopicsRequest,
) -> Result<Reply, ApiError> {
    let mut results = Vec::with_capacity(req.topics.len());
    for t in req.topics {
        let name = t.name.0.to_string();
        let mut result = CreatableTopicResult::default().with_name(t.name.clone());
        let mut configs = BTreeMap::new();
        let mut dup = None;
        for c in &t.configs {
            let value = c.value.as_ref().map(|v| v.to_string()).unwrap_or_default();
            if configs.insert(c.name.to_string(), value).is_some() {
                dup = Some(c.name.to_string());
            }
        }
        let outcome = match dup {
            Some(d) => Err(ServeError::InvalidRequest(format!(
                "config {d} given twice"
            ))),
            None if !t.assignments.is_empty()
                && t.assignments
                    .iter()
                    .any(|a| a.broker_ids.iter().any(|b| b.0 != broker.node_id)) =>
            {
                Err(ServeError::InvalidRequest(format!(
                    "replica assignment names a broker other than {}",
                    broker.node_id
                )))
            }
            None => {
                let partitions = if t.assignments.is_empty() {
                    t.num_partitions
                } else {
                    t.assignments.len() as i32
                };
                let new = NewTopic {
                    name: &name,
                    partitions,
                    replication_factor: if t.assignments.is_empty() {
                        t.replication_factor
                    } else {
                        1
                    },
                    configs,
                };
                create_topic(broker, new, req.validate_only).await
            }
        };
        match outcome {
            Ok((meta, _config)) => {
                result = result
                    .with_topic_id(meta.id)
                    .with_num_partitions(meta.partitions)
                    .with_replication_factor(1)
                    .with_configs(Some(described_configs(broker, &meta.configs)));
            }
            Err(e) => {
                result = result
                    .with_error_code(e.code())
                    .with_error_message(Some(str_bytes(e.to_string())))
                    .with_num_partitions(-1)
                    .with_replication_factor(-1);
            }
        }
        results.push(result);
    }
    ctx.reply(&CreateTopicsResponse::default().with_topics(results))
}

fn described_configs(
    broker: &Broker,
    overrides: &BTreeMap<String, String>,
) -> Vec<CreatableTopicConfigs> {
    topic::effective(&broker.config, overrides)
        .into_iter()
        .map(|(name, (value, source))| {
            CreatableTopicConfigs::default()
                .with_name(str_bytes(name))
                .with_value(Some(str_bytes(value)))
                .with_config_source(source as i8)
        })
        .collect()
}

pub async fn delete(
    broker: &Arc<Broker>,
    ctx: &Ctx,
    req: DeleteTopicsRequest,
) -> Result<Reply, ApiError> {
    // v6 names topics by name or id; earlier versions by name only.
    let mut targets: Vec<(Option<String>, Uuid)> = req
        .topic_names
        .iter()
        .map(|n| (Some(n.0.to_string()), Uuid::nil()))
        .collect();
    targets.extend(
        req.topics
            .iter()
            .map(|t| (t.name.as_ref().map(|n| n.0.to_string()), t.topic_id)),
    );
    let mut results = Vec::with_capacity(targets.len());
    for (name, id) in targets {
        let image = broker.metadata.image();
        let found = match &name {
            Some(n) => image.topic(n).cloned(),
            None => image.topic_by_id(&id).cloned(),
        };
        let outcome = match found {
            Some(meta) if is_internal(&meta.name) => Err(ServeError::InvalidTopic(format!(
                "{} is an internal topic and cannot be deleted",
                meta.name
            ))),
            Some(meta) => {
                let res = broker
                    .metadata
                    .propose(MetadataCommand::DeleteTopic {
                        name: meta.name.clone(),
                    })
                    .await;
                match res {
                    Ok(()) => {
                        tracing::info!(topic = %meta.name, "deleted topic");
                        broker.sync_logs().map(|_| meta).map_err(ServeError::from)
                    }
                    Err(e) => Err(e.into()),
                }
            }
            None if name.is_none() => Err(ServeError::UnknownTopicId(id.to_string())),
            None => Err(ServeError::UnknownTopicOrPartition(
                name.clone().unwrap_or_default(),
            )),
        };
        let mut r = DeletableTopicResult::default()
            .with_name(name.map(|n| TopicName(str_bytes(n))))
            .with_topic_id(id);
        match outcome {
            Ok(meta) => {
                r = r
                    .with_topic_id(meta.id)
                    .with_name(Some(TopicName(str_bytes(meta.name))))
            }
            Err(e) => {
                r = r
                    .with_error_code(e.code())
                    .with_error_message(Some(str_bytes(e.to_string())))
            }
        }
        results.push(r);
    }
    ctx.reply(&DeleteTopicsResponse::default().with_responses(results))
}

pub async fn create_partitions(
    broker: &Arc<Broker>,
    ctx: &Ctx,
    req: CreatePartitionsRequest,
) -> Result<Reply, ApiError> {
    let mut results = Vec::with_capacity(req.topics.len());
    for t in req.topics {
        let name = t.name.0.to_string();
        let image = broker.metadata.image();
        let outcome = match image.topic(&name) {
            None => Err(ServeError::UnknownTopicOrPartition(name.clone())),
            Some(_) if is_internal(&name) => {
                Err(ServeError::InvalidTopic(format!("{name} is an internal topic; its partition count is fixed")))
            }
            Some(meta) if t.count <= meta.partitions => Err(ServeError::InvalidPartitions(format!(
                "Topic currently has {} partitions, which is higher than or equal to the requested {}",
                meta.partitions, t.count
            ))),
            Some(_) if t.count > MAX_PARTITIONS => Err(ServeError::InvalidPartitions(format!(
                "at most {MAX_PARTITIONS} partitions per topic"
            ))),
            Some(meta) => {
                let rf = meta.partition(0).map_or(1, |p| p.replicas.len() as i16);
                match place_replicas(&image, meta.partitions, t.count - meta.partitions, rf) {
                    Err(e) => Err(e),
                    Ok(_) if req.validate_only => Ok(()),
                    Ok(replicas) => {
                        let grow = MetadataCommand::CreatePartitions { name: name.clone(), count: t.count, replicas };
                        match broker.metadata.propose(grow).await {
                            Ok(()) => broker.sync_logs().map_err(ServeError::from),
                            Err(e) => Err(e.into()),
                        }
                    }
                }
            }
        };
        let mut r = CreatePartitionsTopicResult::default().with_name(t.name);
        if let Err(e) = outcome {
            r = r
                .with_error_code(e.code())
                .with_error_message(Some(str_bytes(e.to_string())));
        }
        results.push(r);
    }
    ctx.reply(&CreatePartitionsResponse::default().with_results(results))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names() {
        for ok in ["orders", "a.b_c-d", &"x".repeat(249)] {
            assert!(validate_topic_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", ".", "..", "bad topic!", "é", &"x".repeat(250), "a/b"] {
            assert!(validate_topic_name(bad).is_err(), "{bad}");
        }
    }
}
