//! Metadata: brokers, controller, topics and their partitions' leaders. Auto-creates unknown
//! topics named in the request when `auto_create_topics_enable` and the client allow it.

use std::sync::Arc;

use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{BrokerId, MetadataRequest, MetadataResponse, TopicName};
use kafka_protocol::ResponseError;
use uuid::Uuid;

use super::error::ServeError;
use super::topics::{create_topic, validate_topic_name, NewTopic};
use super::{str_bytes, ApiError, Ctx, Reply};
use crate::broker::Broker;
use crate::cluster::TopicMeta;

pub async fn handle(
    broker: &Arc<Broker>,
    ctx: &Ctx,
    req: MetadataRequest,
) -> Result<Reply, ApiError> {
    let image = broker.metadata.image();
    // v0: an empty list means every topic; v1+: null means every topic.
    let all = match &req.topics {
        None => true,
        Some(t) => t.is_empty() && ctx.version == 0,
    };
    let auto_create = broker.config.auto_create_topics_enable
        && (ctx.version < 4 || req.allow_auto_topic_creation);
    let mut topics = Vec::new();
    if all {
        topics.extend(image.topics.values().map(|m| describe(broker, m)));
    } else {
        for t in req.topics.unwrap_or_default() {
            let by_name = t.name.as_ref().map(|n| n.0.to_string());
            let found = match &by_name {
                Some(name) => image.topic(name).cloned(),
                None => image.topic_by_id(&t.topic_id).cloned(),
            };
            let entry = match (found, by_name) {
                (Some(meta), _) => describe(broker, &meta),
                (None, None) => failed(
                    None,
                    t.topic_id,
                    ServeError::UnknownTopicId(t.topic_id.to_string()),
                ),
                (None, Some(name)) => match auto_create_or_fail(broker, &name, auto_create).await {
                    Ok(meta) => describe(broker, &meta),
                    Err(e) => failed(Some(name), Uuid::nil(), e),
                },
            };
            topics.push(entry);
        }
    }
    let image = broker.metadata.image();
    let mut brokers: Vec<MetadataResponseBroker> = image
        .brokers
        .values()
        .filter(|b| !b.fenced)
        .map(|b| {
            MetadataResponseBroker::default()
                .with_node_id(BrokerId(b.id))
                .with_host(str_bytes(b.host.clone()))
                .with_port(b.port)
                .with_rack(b.rack.clone().map(str_bytes))
        })
        .collect();
    if !brokers.iter().any(|b| b.node_id.0 == broker.node_id) {
        // Clients must always be able to reach the broker they asked, even while its own
        // registration is fenced or not yet applied.
        let (host, port) = broker.config.advertised();
        brokers.push(
            MetadataResponseBroker::default()
                .with_node_id(BrokerId(broker.node_id))
                .with_host(str_bytes(host))
                .with_port(port),
        );
    }
    let resp = MetadataResponse::default()
        .with_brokers(brokers)
        .with_cluster_id(Some(str_bytes(broker.cluster_id.clone())))
        // As in KRaft: any broker takes admin requests (they are forwarded to the quorum
        // leader), so clients are pointed at this one rather than made to chase the leader
        // through elections. DescribeCluster names the real controller.
        .with_controller_id(BrokerId(broker.node_id))
        .with_topics(topics);
    ctx.reply(&resp)
}

async fn auto_create_or_fail(
    broker: &Broker,
    name: &str,
    auto_create: bool,
) -> Result<TopicMeta, ServeError> {
    validate_topic_name(name)?;
    if !auto_create {
        return Err(ServeError::UnknownTopicOrPartition(name.to_string()));
    }
    let new = NewTopic {
        name,
        partitions: -1,
        replication_factor: -1,
        configs: Default::default(),
    };
    match create_topic(broker, new, false).await {
        Ok((meta, _)) => Ok(meta),
        // Another client created it between our read and our proposal.
        Err(ServeError::Cluster(crate::cluster::ClusterError::Rejected(
            crate::cluster::MetadataError::TopicExists(_),
        ))) => broker
            .metadata
            .image()
            .topic(name)
            .cloned()
            .ok_or_else(|| ServeError::UnknownTopicOrPartition(name.to_string())),
        Err(e) => Err(e),
    }
}

fn describe(broker: &Broker, meta: &TopicMeta) -> MetadataResponseTopic {
    let live = broker.metadata.image().live_brokers();
    let ids = |ids: &mut dyn Iterator<Item = i32>| ids.map(BrokerId).collect::<Vec<_>>();
    let partitions = (0..meta.partitions)
        .map(|i| {
            let out = MetadataResponsePartition::default().with_partition_index(i);
            let Some(p) = meta.partition(i) else {
                // Not placed yet (a topic from before placement, until a broker registers).
                return out
                    .with_error_code(ResponseError::LeaderNotAvailable.code())
                    .with_leader_id(BrokerId(-1));
            };
            let out = out
                .with_leader_id(BrokerId(p.leader.unwrap_or(-1)))
                .with_leader_epoch(p.epoch)
                .with_replica_nodes(ids(&mut p.replicas.iter().copied()))
                .with_isr_nodes(ids(&mut p.isr.iter().copied()))
                .with_offline_replicas(ids(&mut p
                    .replicas
                    .iter()
                    .copied()
                    .filter(|r| !live.contains(r))));
            if p.leader.is_none() {
                out.with_error_code(ResponseError::LeaderNotAvailable.code())
            } else {
                out
            }
        })
        .collect();
    MetadataResponseTopic::default()
        .with_name(Some(TopicName(str_bytes(meta.name.clone()))))
        .with_topic_id(meta.id)
        .with_is_internal(super::topics::is_internal(&meta.name))
        .with_partitions(partitions)
}

fn failed(name: Option<String>, id: Uuid, e: ServeError) -> MetadataResponseTopic {
    MetadataResponseTopic::default()
        .with_name(name.map(|n| TopicName(str_bytes(n))))
        .with_topic_id(id)
        .with_error_code(e.code())
}
