//! One consumer group under the KIP-848 `consumer` protocol (ConsumerGroupHeartbeat), as a
//! pure state machine with server-side assignors.
//!
//! Requests in, responses out: no I/O, no clock, no randomness. Every call takes `now_ms`,
//! topic metadata comes from the caller, new member ids come from the caller, and the shell
//! owns timers ([`ConsumerGroup::next_deadline_ms`] / [`ConsumerGroup::tick`]) and the durable
//! write of [`ConsumerGroup::snapshot`] after any call that changed the group. Behaviour follows
//! Apache Kafka's group coordinator (`GroupMetadataManager.consumerGroupHeartbeat`,
//! `ConsumerGroup`, `CurrentAssignmentBuilder`, `TargetAssignmentBuilder`, the `uniform` and
//! `range` assignors); deviations are marked `Deviation:`.
//!
//! The protocol in one paragraph: a member joins with epoch 0 and its subscription. Whenever
//! membership, a subscription, or a subscribed topic's partitions change, the group epoch goes
//! up; the next heartbeat computes a new target assignment for that epoch (the assignment
//! epoch catches up). Each member then walks to its target on its own heartbeats (see
//! `reconcile`): it gives up what it must, confirms by no longer reporting it, then gets the
//! target epoch and whatever of its target nobody else still holds.
//!
//! Invariants (checked by `validate` after every mutation in debug and test builds):
//! - no partition is held (assigned or pending revocation) by two members, and `holders` is
//!   exactly the members' held partitions; a member's assigned and pending sets are disjoint;
//! - `assignment_epoch <= group_epoch`; every member's epoch is in `1..=assignment_epoch`,
//!   or -2 for a static member that left temporarily; `previous_member_epoch <= member_epoch`;
//! - a member is `UnrevokedPartitions` iff it has partitions pending revocation, iff its
//!   revocation deadline is set;
//! - `static_members` maps each member's instance id to it, and nothing else;
//! - target assignments belong to members and are pairwise disjoint;
//! - the subscription metadata only names topics some member subscribes to;
//! - a Dead group has no members.
//!
//! Not here: request decoding, group lookup and creation (a heartbeat with a non-zero epoch for
//! a group that does not exist is GROUP_ID_NOT_FOUND in the shell), offsets, and mapping
//! [`ConsumerError`] to wire error codes.

mod assignment;
mod assignor;
mod heartbeat;
mod invariants;
mod member;
mod persist;
mod reconcile;
mod timers;
mod types;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};

use uuid::Uuid;

use member::Member;
pub use types::{
    from_wire, partition_count, to_wire, Assignment, Assignor, ConsumerError, ConsumerGroupConfig,
    ConsumerGroupDescription, ConsumerGroupSnapshot, ConsumerGroupState, ConsumerMemberSnapshot,
    Heartbeat, HeartbeatResponse, MemberDescription, MemberState, TopicInfo, TopicPartitions,
    TopicSnapshot, LEAVE_GROUP_MEMBER_EPOCH, LEAVE_GROUP_STATIC_MEMBER_EPOCH,
};

/// A subscribed topic as it was when the group epoch was last computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct TopicMeta {
    id: Uuid,
    partitions: i32,
}

#[derive(Debug)]
pub struct ConsumerGroup {
    group_id: String,
    config: ConsumerGroupConfig,
    dead: bool,
    group_epoch: i32,
    /// The epoch of `target`.
    assignment_epoch: i32,
    members: BTreeMap<String, Member>,
    /// instance id -> member id.
    static_members: BTreeMap<String, String>,
    /// Target assignment by member id.
    target: BTreeMap<String, Assignment>,
    /// Kafka's subscription metadata: subscribed topic name -> what it was at the group epoch.
    topics: BTreeMap<String, TopicMeta>,
    /// Who holds each partition (Kafka's current partition epochs, keyed to the member).
    holders: BTreeMap<(Uuid, i32), String>,
}

impl ConsumerGroup {
    pub fn new(group_id: String, config: ConsumerGroupConfig) -> Self {
        ConsumerGroup {
            group_id,
            config,
            dead: false,
            group_epoch: 0,
            assignment_epoch: 0,
            members: BTreeMap::new(),
            static_members: BTreeMap::new(),
            target: BTreeMap::new(),
            topics: BTreeMap::new(),
            holders: BTreeMap::new(),
        }
    }

    pub fn group_id(&self) -> &str {
        &self.group_id
    }

    pub fn group_epoch(&self) -> i32 {
        self.group_epoch
    }

    pub fn assignment_epoch(&self) -> i32 {
        self.assignment_epoch
    }

    pub fn state(&self) -> ConsumerGroupState {
        if self.dead {
            ConsumerGroupState::Dead
        } else if self.members.is_empty() {
            ConsumerGroupState::Empty
        } else if self.group_epoch > self.assignment_epoch {
            ConsumerGroupState::Assigning
        } else if self
            .members
            .values()
            .any(|m| !m.is_reconciled_to(self.assignment_epoch))
        {
            ConsumerGroupState::Reconciling
        } else {
            ConsumerGroupState::Stable
        }
    }

    /// No members (a static member away with epoch -2 still counts).
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    pub fn member_count(&self) -> usize {
        self.members.len()
    }

    /// Every topic name some member subscribes to (OffsetDelete refuses these).
    pub fn subscribed_topics(&self) -> BTreeSet<String> {
        self.members
            .values()
            .flat_map(|m| m.subscribed_topic_names.iter().cloned())
            .collect()
    }

    /// OffsetCommit for this group (Kafka's `ConsumerGroup.validateOffsetCommit`): a negative
    /// epoch commits as admin and only while the group is empty; otherwise the member must
    /// exist (UNKNOWN_MEMBER_ID) and name exactly its current epoch (STALE_MEMBER_EPOCH).
    pub fn validate_offset_commit(
        &self,
        member_id: &str,
        member_epoch: i32,
    ) -> Result<(), ConsumerError> {
        if member_epoch < 0 && self.members.is_empty() {
            return Ok(());
        }
        self.validate_member_epoch(member_id, member_epoch)
    }

    /// OffsetFetch for this group (Kafka's `validateOffsetFetch`): a request without a member
    /// id and with a negative epoch (admin, or a client outside the group) is always allowed.
    pub fn validate_offset_fetch(
        &self,
        member_id: Option<&str>,
        member_epoch: i32,
    ) -> Result<(), ConsumerError> {
        match member_id {
            None if member_epoch < 0 => Ok(()),
            _ => self.validate_member_epoch(member_id.unwrap_or_default(), member_epoch),
        }
    }

    fn validate_member_epoch(&self, member_id: &str, epoch: i32) -> Result<(), ConsumerError> {
        let m = self
            .members
            .get(member_id)
            .ok_or(ConsumerError::UnknownMemberId)?;
        if m.member_epoch != epoch {
            return Err(ConsumerError::StaleMemberEpoch);
        }
        Ok(())
    }

    /// DeleteGroups: only an Empty group may go.
    pub fn validate_delete(&self) -> Result<(), ConsumerError> {
        match self.state() {
            ConsumerGroupState::Empty => Ok(()),
            ConsumerGroupState::Dead => Err(ConsumerError::GroupIdNotFound),
            _ => Err(ConsumerError::NonEmptyGroup),
        }
    }

    /// Marks a deleted (validated Empty) group Dead: every later heartbeat is GROUP_ID_NOT_FOUND.
    pub fn mark_dead(&mut self) -> Result<(), ConsumerError> {
        self.validate_delete()?;
        self.dead = true;
        self.check();
        Ok(())
    }

    fn check(&self) {
        if cfg!(debug_assertions) {
            self.validate();
        }
    }
}
