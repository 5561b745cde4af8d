//! One consumer group under Kafka's classic membership protocol, as a pure state machine.
//!
//! Events in (JoinGroup, SyncGroup, Heartbeat, LeaveGroup, the passage of time), decisions out
//! ([`Output`]: responses to parked requests and "persist the group now"). No I/O, no clock,
//! no randomness: every call takes `now_ms`, member ids come from the caller, and the shell in
//! `coordinator` owns sockets, timers ([`Group::next_deadline_ms`] / [`Group::tick`]) and the
//! durable write of [`Group::snapshot`]. Behaviour follows Apache Kafka's `ClassicGroup` and
//! the classic-protocol half of `GroupMetadataManager` (KIP-394 member ids, KIP-345 static
//! membership, the initial rebalance delay, sync timeouts); deviations are marked `Deviation:`.
//!
//! Parked requests are identified by a [`Token`]. Every token handed to [`Group::join`] or
//! [`Group::sync`] is answered exactly once: immediately, when its rebalance phase completes,
//! or with an error when the member is removed, fenced, superseded or the group dies.
//!
//! Outputs are ordered: when [`Output::Persist`] precedes responses in one batch, the shell
//! should make the snapshot durable before sending them (Kafka answers only after the append).
//!
//! Invariants (checked by `validate` after every mutation in debug and test builds):
//! - `leader` is set iff there are members, and names a member;
//! - `static_members` maps each member's `group.instance.id` to it, and nothing else;
//! - pending (KIP-394) member ids are never members;
//! - Empty and Dead have no members; CompletingRebalance and Stable have members, a chosen
//!   protocol that every member supports, and a protocol type;
//! - a parked JoinGroup exists only in PreparingRebalance, a parked SyncGroup only in
//!   CompletingRebalance; PreparingRebalance always has a join timer, nothing else does;
//! - the sync timer is armed iff some member of this generation has not synced yet;
//! - a member without a session deadline has a parked request (Kafka's "satisfied heartbeat").
//!
//! Not here: offsets (this only validates an OffsetCommit's member and generation), group
//! lookup and creation, request decoding, and mapping [`GroupError`] to wire error codes.

mod invariants;
mod join;
mod member;
mod persist;
mod rebalance;
mod sync;
mod timers;
mod types;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use member::Member;
pub use types::{
    GroupDescription, GroupSnapshot, JoinMember, JoinRequest, JoinResponse, MemberDescription,
    MemberSnapshot, SyncRequest, SyncResponse,
};

/// Kafka's default `group.max.session.timeout.ms` and friends, one field per broker setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupConfig {
    /// `group.min.session.timeout.ms`
    pub min_session_timeout_ms: i32,
    /// `group.max.session.timeout.ms`
    pub max_session_timeout_ms: i32,
    /// `group.initial.rebalance.delay.ms`
    pub initial_rebalance_delay_ms: i32,
    /// `group.max.size`
    pub max_size: usize,
}

impl Default for GroupConfig {
    fn default() -> Self {
        GroupConfig {
            min_session_timeout_ms: 6_000,
            max_session_timeout_ms: 1_800_000,
            initial_rebalance_delay_ms: 3_000,
            max_size: i32::MAX as usize,
        }
    }
}

/// How long a brand-new member may sit in a parked JoinGroup before it is dropped (Kafka's
/// `group.classic.new.member.join.timeout.ms`): it has no member id to heartbeat with, and a
/// client that timed out and retried would otherwise leave a defunct member behind.
pub const NEW_MEMBER_JOIN_TIMEOUT_MS: i64 = 5 * 60 * 1000;

/// A request parked in the shell, waiting for an [`Output`] that names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Token(pub u64);

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum GroupState {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
    Dead,
}

impl GroupState {
    /// The name DescribeGroups and ListGroups report.
    pub fn as_str(self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
            GroupState::Dead => "Dead",
        }
    }
}

/// Why a group request was refused; the shell maps each to its Kafka error code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum GroupError {
    #[error("the member id is not known to the group")]
    UnknownMemberId,
    #[error("the generation id is not the group's current generation")]
    IllegalGeneration,
    #[error("the group is rebalancing; rejoin")]
    RebalanceInProgress,
    #[error("another member now holds this group.instance.id")]
    FencedInstanceId,
    #[error("rejoin with the member id given in this response")]
    MemberIdRequired,
    #[error("the protocol type or protocols do not match the group's")]
    InconsistentGroupProtocol,
    #[error("the session timeout is outside the broker's allowed range")]
    InvalidSessionTimeout,
    #[error("the group has reached group.max.size members")]
    GroupMaxSizeReached,
    #[error("the group is no longer served here")]
    CoordinatorNotAvailable,
    #[error("the group has members")]
    NonEmptyGroup,
    #[error("the group does not exist")]
    GroupIdNotFound,
    #[error("unexpected request for the member's state")]
    UnknownServerError,
}

/// A decision for the shell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Answer the parked JoinGroup `Token`.
    Join(Token, JoinResponse),
    /// Answer the parked SyncGroup `Token`.
    Sync(Token, SyncResponse),
    /// The persisted form changed: the shell writes [`Group::snapshot`] durably.
    Persist,
}

/// The join-phase timer: Kafka's `InitialDelayedJoin` for a group leaving Empty, else
/// `DelayedJoin` bounded by the largest rebalance timeout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum JoinTimer {
    Initial {
        deadline_ms: i64,
        delay_ms: i32,
        remaining_ms: i32,
    },
    Rebalance {
        deadline_ms: i64,
    },
}

impl JoinTimer {
    fn deadline_ms(self) -> i64 {
        match self {
            JoinTimer::Initial { deadline_ms, .. } | JoinTimer::Rebalance { deadline_ms } => {
                deadline_ms
            }
        }
    }
}

#[derive(Debug)]
pub struct Group {
    group_id: String,
    config: GroupConfig,
    state: GroupState,
    /// The state before the last transition: a PreparingRebalance entered from Empty is the
    /// initial rebalance, which only its timer completes.
    previous_state: GroupState,
    state_timestamp_ms: i64,
    protocol_type: Option<String>,
    protocol_name: Option<String>,
    generation_id: i32,
    leader: Option<String>,
    members: BTreeMap<String, Member>,
    /// Join order, for leader election and the member list; ids of removed members are not reused.
    next_seq: u64,
    /// group.instance.id -> member id.
    static_members: BTreeMap<String, String>,
    /// KIP-394: ids handed out with MEMBER_ID_REQUIRED -> when they expire unless used.
    pending_members: BTreeMap<String, i64>,
    /// Members of the current generation that have not sent SyncGroup yet.
    pending_sync: BTreeSet<String>,
    sync_deadline_ms: Option<i64>,
    join_timer: Option<JoinTimer>,
    /// A member joined during the initial delay: extend it (once per delay).
    new_member_added: bool,
    /// The last form handed to the shell with [`Output::Persist`] (or restored from).
    persisted: GroupSnapshot,
}

impl Group {
    pub fn new(group_id: String, config: GroupConfig) -> Self {
        let persisted = GroupSnapshot {
            group_id: group_id.clone(),
            protocol_type: None,
            protocol_name: None,
            generation_id: 0,
            leader: None,
            state_timestamp_ms: -1,
            members: Vec::new(),
        };
        Group {
            group_id,
            config,
            state: GroupState::Empty,
            previous_state: GroupState::Empty,
            state_timestamp_ms: -1,
            protocol_type: None,
            protocol_name: None,
            generation_id: 0,
            leader: None,
            members: BTreeMap::new(),
            next_seq: 0,
            static_members: BTreeMap::new(),
            pending_members: BTreeMap::new(),
            pending_sync: BTreeSet::new(),
            sync_deadline_ms: None,
            join_timer: None,
            new_member_added: false,
            persisted,
        }
    }

    pub fn group_id(&self) -> &str {
        &self.group_id
    }

    pub fn state(&self) -> GroupState {
        self.state
    }

    pub fn generation_id(&self) -> i32 {
        self.generation_id
    }

    pub fn protocol_type(&self) -> Option<&str> {
        self.protocol_type.as_deref()
    }

    pub fn protocol_name(&self) -> Option<&str> {
        self.protocol_name.as_deref()
    }

    pub fn leader(&self) -> Option<&str> {
        self.leader.as_deref()
    }

    /// When the group last changed state (Kafka's `currentStateTimestamp`; offsets of an Empty
    /// group expire relative to it). -1 for a group that never changed state.
    pub fn state_timestamp_ms(&self) -> i64 {
        self.state_timestamp_ms
    }

    /// No members (pending KIP-394 ids do not count).
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    pub fn member_count(&self) -> usize {
        self.members.len()
    }

    fn transition(&mut self, to: GroupState, now_ms: i64) {
        use GroupState::*;
        let valid = match to {
            PreparingRebalance => matches!(self.state, Stable | CompletingRebalance | Empty),
            CompletingRebalance => self.state == PreparingRebalance,
            Stable => self.state == CompletingRebalance,
            Empty => self.state == PreparingRebalance,
            Dead => true,
        };
        assert!(valid, "group {}: {:?} -> {to:?}", self.group_id, self.state);
        self.previous_state = self.state;
        self.state = to;
        self.state_timestamp_ms = now_ms;
    }

    fn check(&self) {
        if cfg!(debug_assertions) {
            self.validate();
        }
    }
}
