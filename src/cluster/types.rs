//! Raft type configuration and the metadata commands that travel through the Raft log.

use std::collections::BTreeMap;
use std::io::Cursor;

use serde::{Deserialize, Serialize};

use super::image::{BrokerRegistration, TopicMeta};
use crate::replication::IsrProposal;

openraft::declare_raft_types!(
    /// openraft types for the metadata quorum.
    pub TypeConfig:
        D = MetadataCommand,
        R = Result<Applied, MetadataError>,
        NodeId = u64,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
);

/// A change to cluster metadata. Validated by the proposer and again when applied, so a
/// command that raced with another (two creates of one name) is rejected deterministically.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum MetadataCommand {
    CreateTopic(TopicMeta),
    DeleteTopic {
        name: String,
    },
    /// Grows a topic to `count` partitions; `replicas` places the new ones (absent only in
    /// logs written before placement existed).
    CreatePartitions {
        name: String,
        count: i32,
        #[serde(default)]
        replicas: Vec<Vec<i32>>,
    },
    /// Replaces the topic's whole set of config overrides.
    SetTopicConfigs {
        name: String,
        configs: BTreeMap<String, String>,
    },
    /// Reserves the next `block_size` producer ids for `broker_id` to hand out (Kafka's
    /// AllocateProducerIds). The image only keeps the next unreserved id, so an id is never
    /// handed out twice, across restarts and brokers; ids of a block a broker did not use up
    /// before it stopped are simply never used.
    AllocateProducerIds {
        broker_id: i32,
        block_size: i64,
    },
    /// Adds an uploaded object to a partition's remote manifest. Proposed only after the
    /// object is durable in the store; refused unless it directly follows the manifest's last
    /// segment. `log_start` seeds the remote log start of a partition's first segment.
    CommitRemoteSegment {
        topic_id: uuid::Uuid,
        segment: tiering::RemoteSegment,
        log_start: i64,
    },
    /// Sets the cluster id if none is set yet: the first broker to start proposes the id of
    /// its data dir, and every broker then adopts the quorum's.
    ClaimClusterId(String),
    /// A broker (re)starting: replaces any earlier registration of its id, unfenced. The
    /// first broker ever registered adopts topics created before placement existed.
    RegisterBroker(BrokerRegistration),
    /// A broker's periodic proof of life; unfences it when its lease had expired.
    BrokerHeartbeat {
        id: i32,
        incarnation: uuid::Uuid,
    },
    /// The controller found the broker's lease expired (or the broker is shutting down): it
    /// leaves every ISR it is not the last member of, and its partitions elect new leaders
    /// from their live ISR at the next leader epoch. Ignored for another incarnation.
    FenceBroker {
        id: i32,
        incarnation: uuid::Uuid,
    },
    /// A partition leader changes its ISR (Kafka's AlterPartition); refused from anyone but
    /// the leader at the current leader epoch.
    AlterPartition {
        topic_id: uuid::Uuid,
        partition: i32,
        leader: i32,
        proposal: IsrProposal,
    },
    /// Moves the partition to the `target` replicas (AlterPartitionReassignments), or
    /// cancels an ongoing move with `None`. New replicas catch up and join the ISR; then the
    /// old ones leave.
    ReassignPartition {
        topic_id: uuid::Uuid,
        partition: i32,
        target: Option<Vec<i32>>,
    },
    /// Moves leadership to the partition's first replica (ElectLeaders, preferred).
    ElectPreferredLeader {
        topic_id: uuid::Uuid,
        partition: i32,
    },
    /// Raises a partition's remote log start and drops the segments wholly below it
    /// (retention, DeleteRecords). Their objects are deleted after this is applied.
    TrimRemoteLog {
        topic_id: uuid::Uuid,
        partition: i32,
        log_start: i64,
    },
}

/// What an applied command produced, for the proposer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Applied {
    Done,
    /// Producer ids `first..first + count` are reserved for the proposer.
    ProducerIds {
        first: i64,
        count: i64,
    },
}

/// Why the state machine refused a command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum MetadataError {
    #[error("topic '{0}' already exists")]
    TopicExists(String),
    #[error("topic '{0}' does not exist")]
    UnknownTopic(String),
    #[error(
        "topic '{name}' has {current} partitions; the new count must be larger, got {requested}"
    )]
    InvalidPartitionCount {
        name: String,
        current: i32,
        requested: i32,
    },
    #[error("cannot reserve {block_size} more producer ids after {next}")]
    ProducerIdsExhausted { next: i64, block_size: i64 },
    #[error("remote manifest refused the segment: {0}")]
    Manifest(String),
    #[error("{0}")]
    Invalid(String),
    #[error("broker {0} is not registered with this incarnation; it must register again")]
    StaleBroker(i32),
    #[error("leader epoch {epoch} is stale; the partition is at epoch {current}")]
    StaleLeaderEpoch { epoch: i32, current: i32 },
    #[error("the preferred leader is not live, not in the ISR, or already leads")]
    PreferredLeaderNotAvailable,
    #[error("{0}")]
    InvalidReplicaAssignment(String),
    #[error("no reassignment is in progress for {0}")]
    NoReassignmentInProgress(String),
}
