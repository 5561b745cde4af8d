//! One member of a consumer group (Kafka's `ConsumerGroupMember`): what it subscribed to, the
//! epoch it is at, and the partitions the coordinator considers it to hold.

use std::collections::BTreeSet;

use uuid::Uuid;

use super::types::{Assignment, Assignor, MemberState};

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Member {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub rack_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub rebalance_timeout_ms: i32,
    pub subscribed_topic_names: BTreeSet<String>,
    pub server_assignor: Option<Assignor>,
    pub state: MemberState,
    /// 0 only while a join is being handled; -2 while a static member is temporarily away.
    pub member_epoch: i32,
    /// The epoch before the last epoch change: a heartbeat that still carries it is accepted
    /// when the member owns no more than `assigned` (the response with the new epoch was lost).
    pub previous_member_epoch: i32,
    /// What the member may consume: its current assignment.
    pub assigned: Assignment,
    /// What the member was asked to give up and has not yet confirmed giving up. Still held:
    /// nobody else gets these partitions until it does.
    pub pending_revocation: Assignment,
    pub session_deadline_ms: i64,
    /// Set exactly while in `UnrevokedPartitions`: when the member is fenced for not revoking.
    pub revocation_deadline_ms: Option<i64>,
}

impl Member {
    /// A member that has not heartbeaten yet: no subscription, epoch 0, nothing held.
    pub fn new(member_id: String, now_ms: i64) -> Self {
        Member {
            member_id,
            instance_id: None,
            rack_id: None,
            client_id: String::new(),
            client_host: String::new(),
            rebalance_timeout_ms: 0,
            subscribed_topic_names: BTreeSet::new(),
            server_assignor: None,
            state: MemberState::Stable,
            member_epoch: 0,
            previous_member_epoch: 0,
            assigned: Assignment::new(),
            pending_revocation: Assignment::new(),
            session_deadline_ms: now_ms,
            revocation_deadline_ms: None,
        }
    }

    /// Kafka's `isReconciledTo`: at the target epoch with nothing left to do.
    pub fn is_reconciled_to(&self, assignment_epoch: i32) -> bool {
        self.state == MemberState::Stable && self.member_epoch == assignment_epoch
    }

    /// Every partition the coordinator counts as held by this member.
    pub fn held(&self) -> impl Iterator<Item = (Uuid, i32)> + '_ {
        self.assigned
            .iter()
            .chain(self.pending_revocation.iter())
            .flat_map(|(t, ps)| ps.iter().map(move |p| (*t, *p)))
    }
}
