//! KIP-848 consumer groups: ConsumerGroupHeartbeat and ConsumerGroupDescribe, for clients
//! with `group.protocol=consumer`. The assignment is computed by the coordinator.

use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::consumer_group_describe_response::{
    self as describe, DescribedGroup, Member,
};
use kafka_protocol::messages::consumer_group_heartbeat_response::{self as hb_resp, Assignment};
use kafka_protocol::messages::{
    ConsumerGroupDescribeRequest, ConsumerGroupDescribeResponse, ConsumerGroupHeartbeatRequest,
    ConsumerGroupHeartbeatResponse, TopicName,
};

use super::error::ServeError;
use super::{str_bytes, ApiError, Ctx, Reply};
use crate::broker::Broker;
use crate::coordinator::consumer::{Heartbeat, TopicInfo, TopicPartitions};

pub async fn heartbeat(
    broker: &Arc<Broker>,
    ctx: &Ctx,
    req: ConsumerGroupHeartbeatRequest,
) -> Result<Reply, ApiError> {
    let hb = Heartbeat {
        member_id: req.member_id.to_string(),
        member_epoch: req.member_epoch,
        instance_id: req.instance_id.as_ref().map(|s| s.to_string()),
        rack_id: req.rack_id.as_ref().map(|s| s.to_string()),
        rebalance_timeout_ms: req.rebalance_timeout_ms,
        subscribed_topic_names: req
            .subscribed_topic_names
            .map(|ts| ts.into_iter().map(|t| t.0.to_string()).collect()),
        subscribed_topic_regex: req.subscribed_topic_regex.as_ref().map(|s| s.to_string()),
        server_assignor: req.server_assignor.as_ref().map(|s| s.to_string()),
        owned: req.topic_partitions.map(|tps| {
            tps.into_iter()
                .map(|tp| (tp.topic_id, tp.partitions))
                .collect()
        }),
        client_id: ctx
            .header
            .client_id
            .as_ref()
            .map(|c| c.to_string())
            .unwrap_or_default(),
        client_host: format!("/{}", ctx.peer.ip()),
    };
    let image = broker.metadata.image();
    let topics = |name: &str| {
        image.topic(name).map(|m| TopicInfo {
            name: m.name.clone(),
            id: m.id,
            partitions: m.partitions,
        })
    };
    let resp = match broker
        .coordinator
        .consumer_heartbeat(&req.group_id, hb, &topics)
        .await
    {
        Ok(r) => ConsumerGroupHeartbeatResponse::default()
            .with_member_id(Some(str_bytes(r.member_id)))
            .with_member_epoch(r.member_epoch)
            .with_heartbeat_interval_ms(r.heartbeat_interval_ms)
            .with_assignment(
                r.assignment
                    .map(|tps| Assignment::default().with_topic_partitions(wire_heartbeat(tps))),
            ),
        Err(e) => {
            let e = ServeError::from(e);
            ConsumerGroupHeartbeatResponse::default()
                .with_error_code(e.code())
                .with_error_message(Some(str_bytes(e.to_string())))
        }
    };
    ctx.reply(&resp)
}

fn wire_heartbeat(tps: TopicPartitions) -> Vec<hb_resp::TopicPartitions> {
    tps.into_iter()
        .map(|(id, ps)| {
            hb_resp::TopicPartitions::default()
                .with_topic_id(id)
                .with_partitions(ps)
        })
        .collect()
}

pub fn describe(
    broker: &Arc<Broker>,
    ctx: &Ctx,
    req: ConsumerGroupDescribeRequest,
) -> Result<Reply, ApiError> {
    let image = broker.metadata.image();
    let wire = |tps: TopicPartitions| {
        describe::Assignment::default().with_topic_partitions(
            tps.into_iter()
                .map(|(id, ps)| {
                    let name = image
                        .topic_by_id(&id)
                        .map(|m| m.name.clone())
                        .unwrap_or_default();
                    describe::TopicPartitions::default()
                        .with_topic_id(id)
                        .with_topic_name(TopicName(str_bytes(name)))
                        .with_partitions(ps)
                })
                .collect(),
        )
    };
    let groups = req
        .group_ids
        .into_iter()
        .map(|id| {
            let out = DescribedGroup::default().with_group_id(id.clone());
            match broker.coordinator.consumer_describe(&id) {
                Ok(Some(d)) => out
                    .with_group_state(str_bytes(d.state.as_str()))
                    .with_group_epoch(d.group_epoch)
                    .with_assignment_epoch(d.assignment_epoch)
                    .with_assignor_name(str_bytes(d.assignor_name))
                    .with_members(
                        d.members
                            .into_iter()
                            .map(|m| {
                                let mut member = Member::default()
                                    .with_member_id(str_bytes(m.member_id))
                                    .with_instance_id(m.instance_id.map(str_bytes))
                                    .with_rack_id(m.rack_id.map(str_bytes))
                                    .with_member_epoch(m.member_epoch)
                                    .with_client_id(str_bytes(m.client_id))
                                    .with_client_host(str_bytes(m.client_host))
                                    .with_subscribed_topic_names(
                                        m.subscribed_topic_names
                                            .into_iter()
                                            .map(|t| TopicName(str_bytes(t)))
                                            .collect(),
                                    )
                                    .with_assignment(wire(m.assignment))
                                    .with_target_assignment(wire(m.target_assignment));
                                if ctx.version >= 1 {
                                    // 1 = a member of the consumer protocol (not upgraded classic).
                                    member = member.with_member_type(1);
                                }
                                member
                            })
                            .collect(),
                    ),
                Ok(None) => out
                    .with_error_code(ResponseError::GroupIdNotFound.code())
                    .with_error_message(Some(str_bytes(format!("Group {} not found.", &*id)))),
                Err(e) => {
                    let e = ServeError::from(e);
                    out.with_error_code(e.code())
                        .with_error_message(Some(str_bytes(e.to_string())))
                }
            }
        })
        .collect();
    ctx.reply(&ConsumerGroupDescribeResponse::default().with_groups(groups))
}
