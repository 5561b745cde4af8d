//! The values that cross the boundary of [`super::ConsumerGroup`]: configuration, requests,
//! responses, errors, the DescribeGroups view and the durable snapshot.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The partitions of a member, by topic id. Topics with no partitions are never stored.
pub type Assignment = BTreeMap<Uuid, BTreeSet<i32>>;

/// An assignment as the wire carries it: topic id and partition indexes, both ascending.
pub type TopicPartitions = Vec<(Uuid, Vec<i32>)>;

/// Member epoch of a ConsumerGroupHeartbeat that leaves the group for good.
pub const LEAVE_GROUP_MEMBER_EPOCH: i32 = -1;
/// Member epoch of a static member that leaves and intends to come back within its session.
pub const LEAVE_GROUP_STATIC_MEMBER_EPOCH: i32 = -2;

/// One field per broker setting (`group.consumer.*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConsumerGroupConfig {
    /// `group.consumer.session.timeout.ms`
    pub session_timeout_ms: i32,
    /// `group.consumer.heartbeat.interval.ms`
    pub heartbeat_interval_ms: i32,
    /// `group.consumer.max.size`
    pub max_size: usize,
    /// The first of `group.consumer.assignors`: used unless members ask for another.
    pub default_assignor: Assignor,
}

impl Default for ConsumerGroupConfig {
    fn default() -> Self {
        ConsumerGroupConfig {
            session_timeout_ms: 45_000,
            heartbeat_interval_ms: 5_000,
            max_size: i32::MAX as usize,
            default_assignor: Assignor::Uniform,
        }
    }
}

/// The server-side assignors (KIP-848 `group.consumer.assignors`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Assignor {
    Uniform,
    Range,
}

impl Assignor {
    pub fn name(self) -> &'static str {
        match self {
            Assignor::Uniform => "uniform",
            Assignor::Range => "range",
        }
    }

    /// The assignor a client names in `ServerAssignor`; `None` for a name this broker lacks.
    pub fn from_name(name: &str) -> Option<Assignor> {
        match name {
            "uniform" => Some(Assignor::Uniform),
            "range" => Some(Assignor::Range),
            _ => None,
        }
    }
}

/// Current metadata of one topic, as the shell knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicInfo {
    pub name: String,
    pub id: Uuid,
    pub partitions: i32,
}

/// One ConsumerGroupHeartbeat request. `None` (and -1 for the rebalance timeout) means
/// "unchanged since my last heartbeat", as on the wire; `Default` is such a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heartbeat {
    /// Empty on a version-0 join: the coordinator names the member.
    pub member_id: String,
    /// 0 to join, -1 to leave, -2 for a static member's temporary leave, else the epoch the
    /// member was last given.
    pub member_epoch: i32,
    pub instance_id: Option<String>,
    pub rack_id: Option<String>,
    pub rebalance_timeout_ms: i32,
    pub subscribed_topic_names: Option<Vec<String>>,
    /// Regex subscriptions are not supported: a request with one is INVALID_REQUEST.
    pub subscribed_topic_regex: Option<String>,
    pub server_assignor: Option<String>,
    /// The partitions the member owns right now (`None`: not reported in this request).
    pub owned: Option<TopicPartitions>,
    pub client_id: String,
    pub client_host: String,
}

impl Default for Heartbeat {
    fn default() -> Self {
        Heartbeat {
            member_id: String::new(),
            member_epoch: 0,
            instance_id: None,
            rack_id: None,
            rebalance_timeout_ms: -1,
            subscribed_topic_names: None,
            subscribed_topic_regex: None,
            server_assignor: None,
            owned: None,
            client_id: String::new(),
            client_host: String::new(),
        }
    }
}

/// A successful ConsumerGroupHeartbeat response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeartbeatResponse {
    pub member_id: String,
    pub member_epoch: i32,
    /// 0 in the answer to a leave, as in Kafka.
    pub heartbeat_interval_ms: i32,
    /// The member's whole assignment, present only when the member needs it: on a join or any
    /// full request, when it changed, or when the member reported owning something else.
    pub assignment: Option<TopicPartitions>,
}

/// Why a request was refused; the shell maps each to its Kafka error code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConsumerError {
    #[error("the member id is not known to the group")]
    UnknownMemberId,
    #[error("the member epoch is fenced; abandon all partitions and rejoin with epoch 0")]
    FencedMemberEpoch,
    #[error("the member epoch is not the member's current epoch")]
    StaleMemberEpoch,
    #[error("the instance id is still held by an active member")]
    UnreleasedInstanceId,
    #[error("another member holds this instance id")]
    FencedInstanceId,
    #[error("the server assignor is not supported")]
    UnsupportedAssignor,
    #[error("the group has reached group.consumer.max.size members")]
    GroupMaxSizeReached,
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    #[error("the group does not exist")]
    GroupIdNotFound,
    #[error("the group has members")]
    NonEmptyGroup,
}

/// Kafka's `ConsumerGroupState`, derived from the epochs and the members.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ConsumerGroupState {
    /// No members.
    Empty,
    /// The group epoch moved past the target assignment; the next heartbeat computes it.
    Assigning,
    /// Some member has not reached the target assignment yet.
    Reconciling,
    Stable,
    /// Deleted; the shell drops it.
    Dead,
}

impl ConsumerGroupState {
    /// The name ListGroups and ConsumerGroupDescribe report.
    pub fn as_str(self) -> &'static str {
        match self {
            ConsumerGroupState::Empty => "Empty",
            ConsumerGroupState::Assigning => "Assigning",
            ConsumerGroupState::Reconciling => "Reconciling",
            ConsumerGroupState::Stable => "Stable",
            ConsumerGroupState::Dead => "Dead",
        }
    }
}

/// Where a member is on its way to the target assignment (Kafka's `MemberState`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MemberState {
    /// At its target assignment for its epoch.
    Stable,
    /// Must stop consuming some partitions before it can move to a newer epoch.
    UnrevokedPartitions,
    /// At the newest epoch, waiting for partitions that other members still hold.
    UnreleasedPartitions,
}

/// One member as ConsumerGroupDescribe shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberDescription {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub rack_id: Option<String>,
    pub member_epoch: i32,
    pub state: MemberState,
    pub client_id: String,
    pub client_host: String,
    pub subscribed_topic_names: Vec<String>,
    pub assignment: TopicPartitions,
    pub target_assignment: TopicPartitions,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerGroupDescription {
    pub group_id: String,
    pub state: ConsumerGroupState,
    pub group_epoch: i32,
    pub assignment_epoch: i32,
    pub assignor_name: String,
    /// In member id order.
    pub members: Vec<MemberDescription>,
}

/// The durable form of a group: what Kafka keeps in its consumer-group records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsumerGroupSnapshot {
    pub group_id: String,
    pub group_epoch: i32,
    pub assignment_epoch: i32,
    /// The subscribed topics as they were when the group epoch was last computed.
    pub topics: Vec<TopicSnapshot>,
    pub members: Vec<ConsumerMemberSnapshot>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicSnapshot {
    pub name: String,
    pub id: Uuid,
    pub partitions: i32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsumerMemberSnapshot {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub rack_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub rebalance_timeout_ms: i32,
    pub subscribed_topic_names: Vec<String>,
    pub server_assignor: Option<Assignor>,
    pub state: MemberState,
    pub member_epoch: i32,
    pub previous_member_epoch: i32,
    pub assigned: TopicPartitions,
    pub pending_revocation: TopicPartitions,
    pub target: TopicPartitions,
}

/// The wire form of an assignment.
pub fn to_wire(a: &Assignment) -> TopicPartitions {
    a.iter()
        .map(|(t, ps)| (*t, ps.iter().copied().collect()))
        .collect()
}

/// An assignment from its wire form; duplicate topics merge and empty topics vanish.
pub fn from_wire(tps: &[(Uuid, Vec<i32>)]) -> Assignment {
    let mut a = Assignment::new();
    for (t, ps) in tps {
        if !ps.is_empty() {
            a.entry(*t).or_default().extend(ps.iter().copied());
        }
    }
    a
}

/// Number of partitions in an assignment.
pub fn partition_count(a: &Assignment) -> usize {
    a.values().map(BTreeSet::len).sum()
}
