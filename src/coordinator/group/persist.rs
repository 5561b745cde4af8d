//! The durable form and the DescribeGroups view. Kafka writes a group when a generation's
//! assignment is stored, when the group empties and when a static member is replaced in a
//! Stable group; a restored group is Stable with its members, or Empty.

use bytes::Bytes;

use super::member::Member;
use super::{
    Group, GroupConfig, GroupDescription, GroupSnapshot, GroupState, MemberDescription,
    MemberSnapshot, Output,
};

impl Group {
    /// The form last handed out with [`Output::Persist`] (or restored from); for a new group,
    /// an empty one at generation 0.
    pub fn snapshot(&self) -> GroupSnapshot {
        self.persisted.clone()
    }

    pub(super) fn persist(&mut self, out: &mut Vec<Output>) {
        debug_assert!(matches!(self.state, GroupState::Empty | GroupState::Stable));
        let protocol = self.protocol_name.as_deref().unwrap_or_default();
        let members = self
            .members_in_order()
            .into_iter()
            .map(|m| MemberSnapshot {
                member_id: m.member_id.clone(),
                group_instance_id: m.group_instance_id.clone(),
                client_id: m.client_id.clone(),
                client_host: m.client_host.clone(),
                rebalance_timeout_ms: m.rebalance_timeout_ms,
                session_timeout_ms: m.session_timeout_ms,
                subscription: m.metadata(protocol).map(|b| b.to_vec()).unwrap_or_default(),
                assignment: m.assignment.to_vec(),
            })
            .collect();
        self.persisted = GroupSnapshot {
            group_id: self.group_id.clone(),
            protocol_type: self.protocol_type.clone(),
            protocol_name: self.protocol_name.clone(),
            generation_id: self.generation_id,
            leader: self.leader.clone(),
            state_timestamp_ms: self.state_timestamp_ms,
            members,
        };
        out.push(Output::Persist);
    }

    /// Loads a persisted group: Stable with its members, whose sessions start at `now_ms`,
    /// or Empty. A member carries only the chosen protocol's metadata, as in Kafka. A group
    /// over `max_size` starts rebalancing at once so that members can commit and the excess
    /// is shed. A snapshot with members but no protocol (never written here) loads as Empty.
    pub fn restore(snapshot: GroupSnapshot, config: GroupConfig, now_ms: i64) -> Self {
        let mut g = Group::new(snapshot.group_id.clone(), config);
        g.generation_id = snapshot.generation_id;
        g.protocol_type = snapshot.protocol_type.clone();
        g.state_timestamp_ms = snapshot.state_timestamp_ms;
        let protocol = match (&snapshot.protocol_name, &snapshot.protocol_type) {
            (Some(p), Some(_)) => Some(p.clone()),
            _ => None,
        };
        if let Some(protocol) = &protocol {
            for ms in &snapshot.members {
                if g.members.contains_key(&ms.member_id)
                    || ms.member_id.is_empty()
                    || ms
                        .group_instance_id
                        .as_ref()
                        .is_some_and(|i| g.static_members.contains_key(i))
                {
                    continue;
                }
                let mut m = Member {
                    member_id: ms.member_id.clone(),
                    seq: 0,
                    group_instance_id: ms.group_instance_id.clone(),
                    client_id: ms.client_id.clone(),
                    client_host: ms.client_host.clone(),
                    rebalance_timeout_ms: ms.rebalance_timeout_ms,
                    session_timeout_ms: ms.session_timeout_ms,
                    protocols: vec![(protocol.clone(), Bytes::from(ms.subscription.clone()))],
                    assignment: Bytes::from(ms.assignment.clone()),
                    join_token: None,
                    sync_token: None,
                    is_new: false,
                    session_deadline_ms: None,
                };
                m.refresh_session(now_ms);
                g.add_member(m);
            }
        }
        if !g.members.is_empty() {
            g.protocol_name = protocol;
            if let Some(leader) = snapshot
                .leader
                .as_ref()
                .filter(|l| g.members.contains_key(*l))
            {
                g.leader = Some(leader.clone());
            }
            g.state = GroupState::Stable;
            g.previous_state = GroupState::Stable;
        }
        g.persisted = snapshot;
        if g.members.len() > g.config.max_size {
            let mut out = Vec::new();
            g.prepare_rebalance(now_ms, &mut out);
            debug_assert!(out.is_empty(), "nothing is parked in a restored group");
        }
        g.check();
        g
    }

    /// DescribeGroups. Protocol, metadata and assignments are reported only when Stable.
    pub fn describe(&self) -> GroupDescription {
        let stable = self.state == GroupState::Stable;
        let protocol = self.protocol_name.as_deref().unwrap_or_default();
        let members = self
            .members_in_order()
            .into_iter()
            .map(|m| MemberDescription {
                member_id: m.member_id.clone(),
                group_instance_id: m.group_instance_id.clone(),
                client_id: m.client_id.clone(),
                client_host: m.client_host.clone(),
                metadata: match stable {
                    true => m.metadata(protocol).cloned().unwrap_or_default(),
                    false => Bytes::new(),
                },
                assignment: match stable {
                    true => m.assignment.clone(),
                    false => Bytes::new(),
                },
            })
            .collect();
        GroupDescription {
            state: self.state,
            protocol_type: self.protocol_type.clone(),
            protocol_name: if stable {
                self.protocol_name.clone()
            } else {
                None
            },
            members,
        }
    }
}
