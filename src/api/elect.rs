//! ElectLeaders: preferred leader election (the first replica takes leadership back when it
//! is live and in the ISR). Unclean election is not offered: a leader outside the ISR could
//! lose acknowledged writes.

use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::elect_leaders_response::{PartitionResult, ReplicaElectionResult};
use kafka_protocol::messages::{ElectLeadersRequest, ElectLeadersResponse, TopicName};

use super::error::ServeError;
use super::{str_bytes, ApiError, Ctx, Reply};
use crate::broker::Broker;
use crate::cluster::{ClusterError, MetadataCommand, MetadataError};

const PREFERRED: i8 = 0;

pub async fn handle(
    broker: &Arc<Broker>,
    ctx: &Ctx,
    req: ElectLeadersRequest,
) -> Result<Reply, ApiError> {
    let image = broker.metadata.image();
    // Null names every partition (Kafka's "all partitions").
    let wanted: Vec<(String, Vec<i32>)> = match &req.topic_partitions {
        Some(tps) => tps
            .iter()
            .map(|t| (t.topic.0.to_string(), t.partitions.clone()))
            .collect(),
        None => image
            .topics
            .values()
            .map(|t| (t.name.clone(), (0..t.partitions).collect()))
            .collect(),
    };
    let mut results = Vec::with_capacity(wanted.len());
    for (topic, partitions) in wanted {
        let mut out = Vec::with_capacity(partitions.len());
        for p in partitions {
            let outcome = elect(broker, &image, &topic, p, req.election_type).await;
            let mut r = PartitionResult::default().with_partition_id(p);
            if let Err((code, message)) = outcome {
                r = r
                    .with_error_code(code.code())
                    .with_error_message(Some(str_bytes(message)));
            }
            out.push(r);
        }
        results.push(
            ReplicaElectionResult::default()
                .with_topic(TopicName(str_bytes(topic)))
                .with_partition_result(out),
        );
    }
    ctx.reply(&ElectLeadersResponse::default().with_replica_election_results(results))
}

async fn elect(
    broker: &Broker,
    image: &crate::cluster::MetadataImage,
    topic: &str,
    partition: i32,
    election_type: i8,
) -> Result<(), (ResponseError, String)> {
    let name = format!("{topic}-{partition}");
    let meta = image
        .topic(topic)
        .filter(|t| (0..t.partitions).contains(&partition))
        .ok_or_else(|| {
            (
                ResponseError::UnknownTopicOrPartition,
                format!("{name} does not exist"),
            )
        })?;
    if election_type != PREFERRED {
        return Err((
            ResponseError::InvalidRequest,
            "only preferred leader election is offered; unclean election could lose \
             acknowledged writes"
                .into(),
        ));
    }
    let record = meta.partition(partition).ok_or_else(|| {
        (
            ResponseError::LeaderNotAvailable,
            format!("{name} is not placed yet"),
        )
    })?;
    if record.leader.is_some() && record.leader == record.replicas.first().copied() {
        return Err((
            ResponseError::ElectionNotNeeded,
            format!("{name} is already led by its preferred replica"),
        ));
    }
    let cmd = MetadataCommand::ElectPreferredLeader {
        topic_id: meta.id,
        partition,
    };
    match broker.metadata.propose(cmd).await {
        Ok(()) => {
            tracing::info!(partition = %name, "preferred leader elected");
            Ok(())
        }
        Err(ClusterError::Rejected(MetadataError::PreferredLeaderNotAvailable)) => Err((
            ResponseError::PreferredLeaderNotAvailable,
            format!("the preferred replica of {name} is not live and in sync"),
        )),
        Err(e) => {
            let e = ServeError::Cluster(e);
            Err((
                ResponseError::try_from_code(e.code()).unwrap_or(ResponseError::UnknownServerError),
                e.to_string(),
            ))
        }
    }
}
