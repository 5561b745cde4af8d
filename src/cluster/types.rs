//! Raft type configuration and the metadata commands that travel through the Raft log.

use std::collections::BTreeMap;
use std::io::Cursor;

use serde::{Deserialize, Serialize};

use super::image::TopicMeta;

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
    CreatePartitions {
        name: String,
        count: i32,
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
}
