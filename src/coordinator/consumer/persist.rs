//! The durable form and the ConsumerGroupDescribe view.
//!
//! A snapshot holds what Kafka keeps in its consumer-group records: the group and assignment
//! epochs, the subscription metadata, and per member its subscription, epochs, reconciliation
//! state, current assignment and target. Timers are not stored: a restored group starts every
//! session afresh and restarts the revocation timer of members that were revoking, as Kafka
//! does when it loads a group.

use std::collections::BTreeMap;

use super::member::Member;
use super::types::{
    from_wire, to_wire, Assignment, ConsumerGroupConfig, ConsumerGroupDescription,
    ConsumerGroupSnapshot, ConsumerMemberSnapshot, MemberDescription, MemberState, TopicSnapshot,
};
use super::{ConsumerGroup, TopicMeta};

impl ConsumerGroup {
    pub fn snapshot(&self) -> ConsumerGroupSnapshot {
        ConsumerGroupSnapshot {
            group_id: self.group_id.clone(),
            group_epoch: self.group_epoch,
            assignment_epoch: self.assignment_epoch,
            topics: self
                .topics
                .iter()
                .map(|(name, t)| TopicSnapshot {
                    name: name.clone(),
                    id: t.id,
                    partitions: t.partitions,
                })
                .collect(),
            members: self
                .members
                .values()
                .map(|m| ConsumerMemberSnapshot {
                    member_id: m.member_id.clone(),
                    instance_id: m.instance_id.clone(),
                    rack_id: m.rack_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    rebalance_timeout_ms: m.rebalance_timeout_ms,
                    subscribed_topic_names: m.subscribed_topic_names.iter().cloned().collect(),
                    server_assignor: m.server_assignor,
                    state: m.state,
                    member_epoch: m.member_epoch,
                    previous_member_epoch: m.previous_member_epoch,
                    assigned: to_wire(&m.assigned),
                    pending_revocation: to_wire(&m.pending_revocation),
                    target: self
                        .target
                        .get(&m.member_id)
                        .map(to_wire)
                        .unwrap_or_default(),
                })
                .collect(),
        }
    }

    /// Loads a group written by [`ConsumerGroup::snapshot`]. Sessions start at `now_ms`.
    /// A damaged snapshot cannot make two members hold (or target) one partition: a partition
    /// already held or targeted by an earlier member (in member id order) is dropped from
    /// later ones, as is a duplicate instance id.
    pub fn restore(
        snapshot: ConsumerGroupSnapshot,
        config: ConsumerGroupConfig,
        now_ms: i64,
    ) -> Self {
        let mut g = ConsumerGroup::new(snapshot.group_id, config);
        g.group_epoch = snapshot.group_epoch.max(0);
        g.assignment_epoch = snapshot.assignment_epoch.clamp(0, g.group_epoch);
        g.topics = snapshot
            .topics
            .into_iter()
            .map(|t| {
                let meta = TopicMeta {
                    id: t.id,
                    partitions: t.partitions.max(0),
                };
                (t.name, meta)
            })
            .collect();
        let session_ms = i64::from(config.session_timeout_ms);
        let mut members = snapshot.members;
        members.sort_by(|a, b| a.member_id.cmp(&b.member_id));
        let mut targeted = BTreeMap::new();
        for s in members {
            if s.member_id.is_empty() || g.members.contains_key(&s.member_id) {
                continue;
            }
            let mut m = Member::new(s.member_id.clone(), now_ms);
            m.instance_id = s.instance_id;
            m.rack_id = s.rack_id;
            m.client_id = s.client_id;
            m.client_host = s.client_host;
            m.rebalance_timeout_ms = s.rebalance_timeout_ms;
            m.subscribed_topic_names = s.subscribed_topic_names.into_iter().collect();
            m.server_assignor = s.server_assignor;
            m.member_epoch = s.member_epoch;
            m.previous_member_epoch = s.previous_member_epoch;
            m.assigned = unheld(&g.holders, &from_wire(&s.assigned));
            m.pending_revocation = unheld(&g.holders, &from_wire(&s.pending_revocation));
            m.state = match (s.state, m.pending_revocation.is_empty()) {
                (_, false) => MemberState::UnrevokedPartitions,
                (MemberState::UnrevokedPartitions, true) => MemberState::Stable,
                (state, true) => state,
            };
            m.session_deadline_ms = now_ms.saturating_add(session_ms);
            m.revocation_deadline_ms = (m.state == MemberState::UnrevokedPartitions)
                .then(|| now_ms.saturating_add(i64::from(m.rebalance_timeout_ms.max(0))));
            for tp in m.held() {
                g.holders.insert(tp, m.member_id.clone());
            }
            match &m.instance_id {
                Some(instance) if g.static_members.contains_key(instance) => m.instance_id = None,
                Some(instance) => {
                    g.static_members
                        .insert(instance.clone(), m.member_id.clone());
                }
                None => {}
            }
            let target = unheld(&targeted, &from_wire(&s.target));
            for (t, ps) in &target {
                for p in ps {
                    targeted.insert((*t, *p), m.member_id.clone());
                }
            }
            if !target.is_empty() {
                g.target.insert(m.member_id.clone(), target);
            }
            g.members.insert(m.member_id.clone(), m);
        }
        let subscribed = g.subscribed_topics();
        g.topics.retain(|name, _| subscribed.contains(name));
        g.check();
        g
    }

    pub fn describe(&self) -> ConsumerGroupDescription {
        let empty = Assignment::new();
        ConsumerGroupDescription {
            group_id: self.group_id.clone(),
            state: self.state(),
            group_epoch: self.group_epoch,
            assignment_epoch: self.assignment_epoch,
            assignor_name: self.preferred_assignor().name().to_string(),
            members: self
                .members
                .values()
                .map(|m| MemberDescription {
                    member_id: m.member_id.clone(),
                    instance_id: m.instance_id.clone(),
                    rack_id: m.rack_id.clone(),
                    member_epoch: m.member_epoch,
                    state: m.state,
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    subscribed_topic_names: m.subscribed_topic_names.iter().cloned().collect(),
                    assignment: to_wire(&m.assigned),
                    target_assignment: to_wire(self.target.get(&m.member_id).unwrap_or(&empty)),
                })
                .collect(),
        }
    }
}

/// The part of `a` that nobody in `holders` holds.
fn unheld(holders: &BTreeMap<(uuid::Uuid, i32), String>, a: &Assignment) -> Assignment {
    let mut out = Assignment::new();
    for (t, ps) in a {
        let free: std::collections::BTreeSet<i32> = ps
            .iter()
            .copied()
            .filter(|p| !holders.contains_key(&(*t, *p)))
            .collect();
        if !free.is_empty() {
            out.insert(*t, free);
        }
    }
    out
}
