//! Group-wide bookkeeping: the subscription metadata and group epoch, the target assignment
//! (Kafka's `TargetAssignmentBuilder`), who holds which partition, and removing members.

use std::collections::{BTreeMap, BTreeSet};

use uuid::Uuid;

use super::assignor::{self, MemberSpec};
use super::reconcile::Step;
use super::types::{Assignment, Assignor, MemberState, TopicInfo};
use super::{ConsumerGroup, TopicMeta};

impl ConsumerGroup {
    /// Topic metadata changed (partitions added, a subscribed topic created or deleted): when
    /// it changes what the group subscribes to, the group epoch goes up and the next heartbeat
    /// computes a new target assignment. Returns whether the group changed.
    pub fn on_metadata_change(&mut self, topics: &dyn Fn(&str) -> Option<TopicInfo>) -> bool {
        if self.dead {
            return false;
        }
        let changed = self.refresh_topics(topics);
        if changed {
            self.group_epoch += 1;
        }
        self.check();
        changed
    }

    /// Re-reads the metadata of every subscribed topic; true if it differs from what the group
    /// epoch was computed with.
    pub(super) fn refresh_topics(&mut self, lookup: &dyn Fn(&str) -> Option<TopicInfo>) -> bool {
        let fresh: BTreeMap<String, TopicMeta> = self
            .subscribed_topics()
            .into_iter()
            .filter_map(|name| {
                let t = lookup(&name)?;
                let meta = TopicMeta {
                    id: t.id,
                    partitions: t.partitions.max(0),
                };
                Some((name, meta))
            })
            .collect();
        let changed = fresh != self.topics;
        self.topics = fresh;
        changed
    }

    /// The assignor most members ask for (ties: the configured default, then by name), else
    /// the configured default (Kafka's `computePreferredServerAssignor`).
    pub(super) fn preferred_assignor(&self) -> Assignor {
        let mut counts: BTreeMap<Assignor, usize> = BTreeMap::new();
        for a in self.members.values().filter_map(|m| m.server_assignor) {
            *counts.entry(a).or_default() += 1;
        }
        let default = self.config.default_assignor;
        counts
            .into_iter()
            .max_by(|(a, x), (b, y)| {
                x.cmp(y)
                    .then((*a == default).cmp(&(*b == default)))
                    .then(b.cmp(a))
            })
            .map_or(default, |(a, _)| a)
    }

    /// A new target assignment for the current group epoch, from every member's subscription
    /// and its previous target.
    pub(super) fn compute_target(&mut self) {
        let partitions: BTreeMap<Uuid, i32> =
            self.topics.values().map(|t| (t.id, t.partitions)).collect();
        let empty = Assignment::new();
        let target = {
            let specs: Vec<MemberSpec<'_>> = self
                .members
                .values()
                .map(|m| MemberSpec {
                    member_id: &m.member_id,
                    instance_id: m.instance_id.as_deref(),
                    topics: m
                        .subscribed_topic_names
                        .iter()
                        .filter_map(|n| self.topics.get(n).map(|t| t.id))
                        .collect(),
                    current: self.target.get(&m.member_id).unwrap_or(&empty),
                })
                .collect();
            assignor::assign(self.preferred_assignor(), &specs, &partitions)
        };
        self.target = target;
        self.assignment_epoch = self.group_epoch;
    }

    /// Whether a member other than `member_id` holds the partition.
    pub(super) fn held_by_other(&self, member_id: &str, topic: Uuid, partition: i32) -> bool {
        self.holders
            .get(&(topic, partition))
            .is_some_and(|h| h != member_id)
    }

    /// Moves a member to its next reconciliation step, keeping `holders` in step. The
    /// revocation timer starts whenever the member enters (or re-enters) a revocation.
    pub(super) fn apply_step(&mut self, member_id: &str, step: Step, now_ms: i64) {
        let m = self
            .members
            .get_mut(member_id)
            .expect("reconciling a member of the group");
        for tp in m.held() {
            let was = self.holders.remove(&tp);
            debug_assert_eq!(was.as_deref(), Some(member_id));
        }
        if step.member_epoch != m.member_epoch {
            m.previous_member_epoch = m.member_epoch;
            m.member_epoch = step.member_epoch;
        }
        m.state = step.state;
        m.assigned = step.assigned;
        m.pending_revocation = step.pending_revocation;
        m.revocation_deadline_ms = (m.state == MemberState::UnrevokedPartitions)
            .then(|| now_ms.saturating_add(i64::from(m.rebalance_timeout_ms.max(0))));
        for tp in m.held() {
            let was = self.holders.insert(tp, member_id.to_string());
            assert!(
                was.is_none(),
                "group {}: partition {tp:?} handed to {member_id} while {was:?} holds it",
                self.group_id
            );
        }
    }

    /// Forgets every partition a member holds: it (re)joined declaring it owns nothing.
    pub(super) fn release_all(&mut self, member_id: &str) {
        let Some(m) = self.members.get_mut(member_id) else {
            return;
        };
        for tp in m.held() {
            self.holders.remove(&tp);
        }
        m.assigned.clear();
        m.pending_revocation.clear();
        m.state = MemberState::Stable;
        m.revocation_deadline_ms = None;
    }

    /// Removes a member for good (leave, expired session, revocation timeout): its partitions
    /// are free at once, and the group epoch goes up (Kafka's `consumerGroupFenceMember`).
    pub(super) fn remove_member(&mut self, member_id: &str) {
        let Some(m) = self.members.remove(member_id) else {
            return;
        };
        for tp in m.held() {
            self.holders.remove(&tp);
        }
        if let Some(instance) = &m.instance_id {
            if self.static_members.get(instance).map(String::as_str) == Some(member_id) {
                self.static_members.remove(instance);
            }
        }
        self.target.remove(member_id);
        let subscribed: BTreeSet<String> = self.subscribed_topics();
        self.topics.retain(|name, _| subscribed.contains(name));
        self.group_epoch += 1;
    }
}
