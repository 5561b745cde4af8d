//! Consumer groups (classic protocol): FindCoordinator, JoinGroup, SyncGroup, Heartbeat,
//! LeaveGroup, ListGroups, DescribeGroups, DeleteGroups. Membership decisions are the
//! coordinator's; this module only translates messages.

use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::{
    BrokerId, DeleteGroupsRequest, DeleteGroupsResponse, DescribeGroupsRequest,
    DescribeGroupsResponse, FindCoordinatorRequest, FindCoordinatorResponse, GroupId,
    HeartbeatRequest, HeartbeatResponse, JoinGroupRequest, JoinGroupResponse, LeaveGroupRequest,
    LeaveGroupResponse, ListGroupsRequest, ListGroupsResponse, SyncGroupRequest, SyncGroupResponse,
};
use kafka_protocol::protocol::StrBytes;

use super::error::ServeError;
use super::{str_bytes, ApiError, Ctx, Reply};
use crate::broker::Broker;
use crate::coordinator::group::{JoinRequest, SyncRequest};

const GROUP_KEY: i8 = 0;

fn opt(s: &Option<StrBytes>) -> Option<String> {
    s.as_ref().map(|v| v.to_string())
}

pub fn find_coordinator(
    broker: &Arc<Broker>,
    ctx: &Ctx,
    req: FindCoordinatorRequest,
) -> Result<Reply, ApiError> {
    let image = broker.metadata.image();
    // The coordinator of a group is the leader of its __consumer_offsets partition.
    let lookup = |key: &str| -> Result<(i32, String, i32), ServeError> {
        if req.key_type != GROUP_KEY {
            return Err(ServeError::CoordinatorUnavailable(
                "only group coordinators exist; transactions are not offered yet".into(),
            ));
        }
        if key.is_empty() {
            return Err(ServeError::Coordinator(
                crate::coordinator::CoordinatorError::InvalidGroupId,
            ));
        }
        let partition = broker.coordinator.partition_of(key);
        let leader = image
            .topic(crate::coordinator::store::TOPIC)
            .and_then(|t| t.leader(partition));
        if leader == Some(broker.node_id) || leader.is_none() && image.brokers.is_empty() {
            let (host, port) = broker.config.advertised();
            return Ok((broker.node_id, host, port));
        }
        leader
            .and_then(|id| image.brokers.get(&id))
            .filter(|b| !b.fenced)
            .map(|b| (b.id, b.host.clone(), b.port))
            .ok_or_else(|| {
                ServeError::CoordinatorUnavailable(format!(
                    "partition {partition} of {} has no leader",
                    crate::coordinator::store::TOPIC
                ))
            })
    };
    let mut resp = FindCoordinatorResponse::default();
    if ctx.version >= 4 {
        resp.coordinators = req
            .coordinator_keys
            .iter()
            .map(|key| {
                let c = Coordinator::default().with_key(key.clone());
                match lookup(key) {
                    Ok((id, host, port)) => c
                        .with_node_id(BrokerId(id))
                        .with_host(str_bytes(host))
                        .with_port(port),
                    Err(e) => c
                        .with_node_id(BrokerId(-1))
                        .with_port(-1)
                        .with_error_code(e.code())
                        .with_error_message(Some(str_bytes(e.to_string()))),
                }
            })
            .collect();
    } else {
        match lookup(&req.key) {
            Ok((id, host, port)) => {
                resp = resp
                    .with_node_id(BrokerId(id))
                    .with_host(str_bytes(host))
                    .with_port(port);
            }
            Err(e) => {
                resp = resp
                    .with_node_id(BrokerId(-1))
                    .with_port(-1)
                    .with_error_code(e.code());
                if ctx.version >= 1 {
                    resp = resp.with_error_message(Some(str_bytes(e.to_string())));
                }
            }
        }
    }
    ctx.reply(&resp)
}

pub async fn join(
    broker: &Arc<Broker>,
    ctx: &Ctx,
    req: JoinGroupRequest,
) -> Result<Reply, ApiError> {
    let member_id = req.member_id.to_string();
    let join = JoinRequest {
        member_id: member_id.clone(),
        group_instance_id: opt(&req.group_instance_id),
        client_id: ctx
            .header
            .client_id
            .as_ref()
            .map(|c| c.to_string())
            .unwrap_or_default(),
        client_host: format!("/{}", ctx.peer.ip()),
        session_timeout_ms: req.session_timeout_ms,
        // v0 has no rebalance timeout; Kafka uses the session timeout.
        rebalance_timeout_ms: if ctx.version == 0 {
            req.session_timeout_ms
        } else {
            req.rebalance_timeout_ms
        },
        protocol_type: req.protocol_type.to_string(),
        protocols: req
            .protocols
            .iter()
            .map(|p| (p.name.to_string(), p.metadata.clone()))
            .collect(),
        reason: opt(&req.reason),
        require_known_member_id: ctx.version >= 4,
    };
    let resp = match broker.coordinator.join(&req.group_id, join).await {
        Ok(r) => {
            let mut resp = JoinGroupResponse::default()
                .with_error_code(r.error.map_or(0, |e| {
                    ServeError::from(crate::coordinator::CoordinatorError::from(e)).code()
                }))
                .with_generation_id(r.generation_id)
                .with_protocol_name(Some(str_bytes(r.protocol_name.clone().unwrap_or_default())))
                .with_leader(str_bytes(r.leader))
                .with_member_id(str_bytes(r.member_id))
                .with_members(
                    r.members
                        .into_iter()
                        .map(|m| {
                            JoinGroupResponseMember::default()
                                .with_member_id(str_bytes(m.member_id))
                                .with_group_instance_id(m.group_instance_id.map(str_bytes))
                                .with_metadata(m.metadata)
                        })
                        .collect(),
                );
            if ctx.version >= 7 {
                resp = resp
                    .with_protocol_type(r.protocol_type.map(str_bytes))
                    .with_protocol_name(r.protocol_name.map(str_bytes));
            }
            if ctx.version >= 9 {
                resp = resp.with_skip_assignment(r.skip_assignment);
            }
            resp
        }
        Err(e) => JoinGroupResponse::default()
            .with_error_code(ServeError::from(e).code())
            .with_generation_id(-1)
            .with_protocol_name(if ctx.version >= 7 {
                None
            } else {
                Some(StrBytes::default())
            })
            .with_member_id(str_bytes(member_id)),
    };
    ctx.reply(&resp)
}

pub async fn sync(
    broker: &Arc<Broker>,
    ctx: &Ctx,
    req: SyncGroupRequest,
) -> Result<Reply, ApiError> {
    let sync = SyncRequest {
        member_id: req.member_id.to_string(),
        group_instance_id: opt(&req.group_instance_id),
        generation_id: req.generation_id,
        protocol_type: opt(&req.protocol_type),
        protocol_name: opt(&req.protocol_name),
        assignments: req
            .assignments
            .iter()
            .map(|a| (a.member_id.to_string(), a.assignment.clone()))
            .collect(),
    };
    let mut resp = SyncGroupResponse::default();
    match broker.coordinator.sync(&req.group_id, sync).await {
        Ok(r) => {
            resp = resp
                .with_error_code(r.error.map_or(0, |e| {
                    ServeError::from(crate::coordinator::CoordinatorError::from(e)).code()
                }))
                .with_assignment(r.assignment);
            if ctx.version >= 5 {
                resp = resp
                    .with_protocol_type(r.protocol_type.map(str_bytes))
                    .with_protocol_name(r.protocol_name.map(str_bytes));
            }
        }
        Err(e) => resp = resp.with_error_code(ServeError::from(e).code()),
    }
    ctx.reply(&resp)
}

pub fn heartbeat(
    broker: &Arc<Broker>,
    ctx: &Ctx,
    req: HeartbeatRequest,
) -> Result<Reply, ApiError> {
    let instance = opt(&req.group_instance_id);
    let code = match broker.coordinator.heartbeat(
        &req.group_id,
        &req.member_id,
        instance.as_deref(),
        req.generation_id,
    ) {
        Ok(()) => 0,
        Err(e) => ServeError::from(e).code(),
    };
    ctx.reply(&HeartbeatResponse::default().with_error_code(code))
}

pub fn leave(broker: &Arc<Broker>, ctx: &Ctx, req: LeaveGroupRequest) -> Result<Reply, ApiError> {
    let members: Vec<(String, Option<String>)> = if ctx.version >= 3 {
        req.members
            .iter()
            .map(|m| (m.member_id.to_string(), opt(&m.group_instance_id)))
            .collect()
    } else {
        vec![(req.member_id.to_string(), None)]
    };
    let mut resp = LeaveGroupResponse::default();
    match broker.coordinator.leave(&req.group_id, &members) {
        Ok(results) => {
            let codes: Vec<i16> = results
                .iter()
                .map(|r| {
                    r.as_ref().err().map_or(0, |e| {
                        ServeError::from(crate::coordinator::CoordinatorError::from(*e)).code()
                    })
                })
                .collect();
            if ctx.version >= 3 {
                resp.members = members
                    .into_iter()
                    .zip(&codes)
                    .map(|((id, inst), code)| {
                        MemberResponse::default()
                            .with_member_id(str_bytes(id))
                            .with_group_instance_id(inst.map(str_bytes))
                            .with_error_code(*code)
                    })
                    .collect();
            } else {
                resp = resp.with_error_code(codes.first().copied().unwrap_or(0));
            }
        }
        Err(e) => resp = resp.with_error_code(ServeError::from(e).code()),
    }
    ctx.reply(&resp)
}

pub fn list(broker: &Arc<Broker>, ctx: &Ctx, req: ListGroupsRequest) -> Result<Reply, ApiError> {
    let states: Vec<String> = req
        .states_filter
        .iter()
        .map(|s| s.to_ascii_lowercase())
        .collect();
    let types: Vec<String> = req
        .types_filter
        .iter()
        .map(|s| s.to_ascii_lowercase())
        .collect();
    let groups = broker
        .coordinator
        .list_groups()
        .into_iter()
        .filter(|g| states.is_empty() || states.contains(&g.state.to_ascii_lowercase()))
        .filter(|g| types.is_empty() || types.iter().any(|t| t == g.group_type))
        .map(|g| {
            let mut l = ListedGroup::default()
                .with_group_id(GroupId(str_bytes(g.group_id)))
                .with_protocol_type(str_bytes(g.protocol_type));
            if ctx.version >= 4 {
                l = l.with_group_state(str_bytes(g.state));
            }
            if ctx.version >= 5 {
                l = l.with_group_type(str_bytes(g.group_type));
            }
            l
        })
        .collect();
    ctx.reply(&ListGroupsResponse::default().with_groups(groups))
}

pub fn describe(
    broker: &Arc<Broker>,
    ctx: &Ctx,
    req: DescribeGroupsRequest,
) -> Result<Reply, ApiError> {
    let groups = req
        .groups
        .into_iter()
        .map(|id| {
            let d = DescribedGroup::default().with_group_id(id.clone());
            match broker.coordinator.describe(&id) {
                Ok(Some(desc)) => d
                    .with_group_state(str_bytes(desc.state.as_str()))
                    .with_protocol_type(str_bytes(desc.protocol_type.unwrap_or_default()))
                    .with_protocol_data(str_bytes(desc.protocol_name.unwrap_or_default()))
                    .with_members(
                        desc.members
                            .into_iter()
                            .map(|m| {
                                DescribedGroupMember::default()
                                    .with_member_id(str_bytes(m.member_id))
                                    .with_group_instance_id(m.group_instance_id.map(str_bytes))
                                    .with_client_id(str_bytes(m.client_id))
                                    .with_client_host(str_bytes(m.client_host))
                                    .with_member_metadata(m.metadata)
                                    .with_member_assignment(m.assignment)
                            })
                            .collect(),
                    ),
                // Kafka describes an unknown group as Dead with no error (before v6).
                Ok(None) if ctx.version < 6 => d.with_group_state(str_bytes("Dead")),
                Ok(None) => d
                    .with_group_state(str_bytes("Dead"))
                    .with_error_code(ResponseError::GroupIdNotFound.code()),
                Err(e) => d.with_error_code(ServeError::from(e).code()),
            }
        })
        .collect();
    ctx.reply(&DescribeGroupsResponse::default().with_groups(groups))
}

pub async fn delete(
    broker: &Arc<Broker>,
    ctx: &Ctx,
    req: DeleteGroupsRequest,
) -> Result<Reply, ApiError> {
    let mut results = Vec::with_capacity(req.groups_names.len());
    for id in req.groups_names {
        let code = match broker.coordinator.delete_group(&id).await {
            Ok(()) => 0,
            Err(e) => ServeError::from(e).code(),
        };
        results.push(
            DeletableGroupResult::default()
                .with_group_id(id)
                .with_error_code(code),
        );
    }
    ctx.reply(&DeleteGroupsResponse::default().with_results(results))
}
