//! The one place where internal errors become Kafka error codes.

use kafka_protocol::error::ResponseError;

use crate::cluster::rpc::RpcError;
use crate::cluster::{ClusterError, MetadataError};
use crate::config::topic::TopicConfigError;
use crate::coordinator::consumer::ConsumerError;
use crate::coordinator::group::GroupError;
use crate::coordinator::CoordinatorError;
use crate::log::producer_state::ProducerError;
use crate::log::LogError;

/// Why one topic or partition of a request failed.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Log(#[from] LogError),
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    #[error(transparent)]
    TopicConfig(#[from] TopicConfigError),
    #[error("{0}")]
    InvalidTopic(String),
    #[error("This server does not host this topic-partition: {0}")]
    UnknownTopicOrPartition(String),
    #[error("unknown topic id {0}")]
    UnknownTopicId(String),
    #[error("This broker is not the leader of {0}; refresh metadata")]
    NotLeaderOrFollower(String),
    #[error("{0} has no leader: its in-sync replicas are all offline")]
    LeaderNotAvailable(String),
    #[error("{0}: {1} in-sync replicas, fewer than min.insync.replicas = {2}")]
    NotEnoughReplicas(String, usize, usize),
    #[error("{0}: written, but the in-sync replicas fell below min.insync.replicas before it was replicated")]
    NotEnoughReplicasAfterAppend(String),
    #[error("{0}: not replicated to the in-sync replicas within the request timeout")]
    ReplicationTimedOut(String),
    #[error("{0}: leader epoch {1} is older than the current {2}")]
    FencedLeaderEpoch(String, i32, i32),
    #[error("{0}: leader epoch {1} is newer than the current {2}")]
    UnknownLeaderEpoch(String, i32, i32),
    #[error("{0}")]
    InvalidPartitions(String),
    #[error("{0}")]
    InvalidReplicationFactor(String),
    #[error("{0}")]
    InvalidRequest(String),
    #[error("{0}")]
    InvalidRequiredAcks(i16),
    #[error("fsync failed: {0}")]
    Flush(std::sync::Arc<std::io::Error>),
    #[error("{0}")]
    UnsupportedResource(String),
    #[error(transparent)]
    Coordinator(CoordinatorError),
    #[error("{0}")]
    CoordinatorUnavailable(String),
    /// A transactional producer: no broker here coordinates transactions yet.
    #[error("{0}")]
    TransactionsUnsupported(String),
    /// No producer id block could be reserved through the metadata quorum.
    #[error("cannot reserve producer ids: {0}")]
    ProducerIdsUnavailable(#[source] ClusterError),
    /// The object store tier failed this partition (a missing or corrupt archived object).
    #[error(transparent)]
    Tier(#[from] crate::tier::TierError),
    /// The data dir is below `log_dir_min_free_bytes`.
    #[error("the broker's disk is nearly full; writes are refused until space is freed")]
    DiskLow,
}

/// Maps an error to the Kafka code clients act on.
pub fn error_code(e: &ServeError) -> ResponseError {
    match e {
        ServeError::Log(e) => match e {
            LogError::Io { .. } | LogError::CorruptSegment { .. } => {
                ResponseError::KafkaStorageError
            }
            LogError::CorruptBatch(_) => ResponseError::CorruptMessage,
            LogError::UnsupportedMagic(_) => ResponseError::UnsupportedVersion,
            LogError::MessageTooLarge { .. } => ResponseError::MessageTooLarge,
            LogError::OffsetOutOfRange { .. } => ResponseError::OffsetOutOfRange,
            LogError::InvalidRecord(_) => ResponseError::InvalidRecord,
            LogError::NotLeader(_) => ResponseError::NotLeaderOrFollower,
            LogError::Producer(p) => match p {
                // Kafka 2.7+ answers a fenced epoch on produce with INVALID_PRODUCER_EPOCH
                // (not PRODUCER_FENCED), which idempotent clients recover from.
                ProducerError::InvalidEpoch { .. } => ResponseError::InvalidProducerEpoch,
                ProducerError::OutOfOrderSequence { .. } => ResponseError::OutOfOrderSequenceNumber,
            },
        },
        ServeError::Cluster(e) => match e {
            ClusterError::Rejected(MetadataError::TopicExists(_)) => {
                ResponseError::TopicAlreadyExists
            }
            ClusterError::Rejected(MetadataError::UnknownTopic(_)) => {
                ResponseError::UnknownTopicOrPartition
            }
            ClusterError::Rejected(MetadataError::InvalidPartitionCount { .. }) => {
                ResponseError::InvalidPartitions
            }
            ClusterError::Rejected(
                MetadataError::ProducerIdsExhausted { .. }
                | MetadataError::Manifest(_)
                | MetadataError::StaleBroker(_),
            ) => ResponseError::UnknownServerError,
            ClusterError::Rejected(MetadataError::Invalid(_)) => ResponseError::InvalidRequest,
            ClusterError::Rejected(MetadataError::StaleLeaderEpoch { .. }) => {
                ResponseError::FencedLeaderEpoch
            }
            ClusterError::Rejected(MetadataError::PreferredLeaderNotAvailable) => {
                ResponseError::PreferredLeaderNotAvailable
            }
            ClusterError::Rejected(MetadataError::InvalidReplicaAssignment(_)) => {
                ResponseError::InvalidReplicaAssignment
            }
            ClusterError::Rejected(MetadataError::NoReassignmentInProgress(_)) => {
                ResponseError::NoReassignmentInProgress
            }
            ClusterError::NoLeader(_) => ResponseError::NotController,
            // The leader went away mid-call: clients retry NOT_CONTROLLER and time-outs.
            ClusterError::Rpc(RpcError::Unreachable { .. }) => ResponseError::NotController,
            ClusterError::Rpc(RpcError::Timeout { .. }) => ResponseError::RequestTimedOut,
            ClusterError::Rpc(RpcError::Failed { .. } | RpcError::Decode { .. })
            | ClusterError::Storage(_)
            | ClusterError::Raft(_)
            | ClusterError::Listen { .. } => ResponseError::UnknownServerError,
        },
        ServeError::TopicConfig(_) => ResponseError::InvalidConfig,
        ServeError::InvalidTopic(_) => ResponseError::InvalidTopicException,
        ServeError::UnknownTopicOrPartition(_) => ResponseError::UnknownTopicOrPartition,
        ServeError::UnknownTopicId(_) => ResponseError::UnknownTopicId,
        ServeError::NotLeaderOrFollower(_) => ResponseError::NotLeaderOrFollower,
        ServeError::LeaderNotAvailable(_) => ResponseError::LeaderNotAvailable,
        ServeError::FencedLeaderEpoch(..) => ResponseError::FencedLeaderEpoch,
        ServeError::NotEnoughReplicas(..) => ResponseError::NotEnoughReplicas,
        ServeError::NotEnoughReplicasAfterAppend(_) => ResponseError::NotEnoughReplicasAfterAppend,
        ServeError::ReplicationTimedOut(_) => ResponseError::RequestTimedOut,
        ServeError::UnknownLeaderEpoch(..) => ResponseError::UnknownLeaderEpoch,
        ServeError::InvalidPartitions(_) => ResponseError::InvalidPartitions,
        ServeError::InvalidReplicationFactor(_) => ResponseError::InvalidReplicationFactor,
        ServeError::InvalidRequest(_) => ResponseError::InvalidRequest,
        ServeError::InvalidRequiredAcks(_) => ResponseError::InvalidRequiredAcks,
        ServeError::Flush(_) | ServeError::Tier(_) | ServeError::DiskLow => {
            ResponseError::KafkaStorageError
        }
        ServeError::UnsupportedResource(_) => ResponseError::InvalidRequest,
        ServeError::CoordinatorUnavailable(_) => ResponseError::CoordinatorNotAvailable,
        // What Kafka answers from a broker that is not the transaction's coordinator; see
        // api/producer_ids.rs for why this and not an authorization error.
        ServeError::TransactionsUnsupported(_) => ResponseError::NotCoordinator,
        ServeError::ProducerIdsUnavailable(e) => match e {
            // Kafka's answer while a producer id block cannot be had: clients retry it.
            ClusterError::NoLeader(_)
            | ClusterError::Raft(_)
            | ClusterError::Storage(_)
            | ClusterError::Rpc(_)
            | ClusterError::Listen { .. } => ResponseError::CoordinatorLoadInProgress,
            ClusterError::Rejected(_) => ResponseError::UnknownServerError,
        },
        ServeError::Coordinator(e) => match e {
            CoordinatorError::Loading => ResponseError::CoordinatorLoadInProgress,
            CoordinatorError::NotCoordinator => ResponseError::NotCoordinator,
            CoordinatorError::InvalidGroupId => ResponseError::InvalidGroupId,
            CoordinatorError::MetadataTooLarge(_) => ResponseError::OffsetMetadataTooLarge,
            CoordinatorError::SubscribedToTopic => ResponseError::GroupSubscribedToTopic,
            CoordinatorError::Consumer(c) => match c {
                ConsumerError::UnknownMemberId => ResponseError::UnknownMemberId,
                ConsumerError::FencedMemberEpoch => ResponseError::FencedMemberEpoch,
                ConsumerError::StaleMemberEpoch => ResponseError::StaleMemberEpoch,
                ConsumerError::UnreleasedInstanceId => ResponseError::UnreleasedInstanceId,
                ConsumerError::FencedInstanceId => ResponseError::FencedInstanceId,
                ConsumerError::UnsupportedAssignor => ResponseError::UnsupportedAssignor,
                ConsumerError::GroupMaxSizeReached => ResponseError::GroupMaxSizeReached,
                ConsumerError::InvalidRequest(_) => ResponseError::InvalidRequest,
                ConsumerError::GroupIdNotFound => ResponseError::GroupIdNotFound,
                ConsumerError::NonEmptyGroup => ResponseError::NonEmptyGroup,
            },
            // Kafka answers a failed write of coordinator records with a retriable error.
            CoordinatorError::Store(_) => ResponseError::CoordinatorNotAvailable,
            CoordinatorError::Group(g) => match g {
                GroupError::UnknownMemberId => ResponseError::UnknownMemberId,
                GroupError::IllegalGeneration => ResponseError::IllegalGeneration,
                GroupError::RebalanceInProgress => ResponseError::RebalanceInProgress,
                GroupError::FencedInstanceId => ResponseError::FencedInstanceId,
                GroupError::MemberIdRequired => ResponseError::MemberIdRequired,
                GroupError::InconsistentGroupProtocol => ResponseError::InconsistentGroupProtocol,
                GroupError::InvalidSessionTimeout => ResponseError::InvalidSessionTimeout,
                GroupError::GroupMaxSizeReached => ResponseError::GroupMaxSizeReached,
                GroupError::CoordinatorNotAvailable => ResponseError::CoordinatorNotAvailable,
                GroupError::NonEmptyGroup => ResponseError::NonEmptyGroup,
                GroupError::GroupIdNotFound => ResponseError::GroupIdNotFound,
                GroupError::UnknownServerError => ResponseError::UnknownServerError,
            },
        },
    }
}

impl ServeError {
    pub fn code(&self) -> i16 {
        error_code(self).code()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_clients_rely_on() {
        let cases: Vec<(ServeError, i16)> = vec![
            (LogError::CorruptBatch("crc".into()).into(), 2),
            (LogError::MessageTooLarge { size: 2, max: 1 }.into(), 10),
            (
                LogError::OffsetOutOfRange {
                    offset: 9,
                    log_start: 0,
                    log_end: 1,
                }
                .into(),
                1,
            ),
            (LogError::UnsupportedMagic(1).into(), 35),
            (ServeError::InvalidTopic("bad".into()), 17),
            (TopicConfigError::Unknown("x".into()).into(), 40),
            (
                ClusterError::Rejected(MetadataError::TopicExists("t".into())).into(),
                36,
            ),
            (ServeError::UnknownTopicOrPartition("t-9".into()), 3),
            (
                ServeError::Flush(std::sync::Arc::new(std::io::Error::other("disk"))),
                56,
            ),
            (ServeError::Coordinator(CoordinatorError::Loading), 14),
            (
                ServeError::Coordinator(CoordinatorError::InvalidGroupId),
                24,
            ),
            (
                ServeError::Coordinator(GroupError::IllegalGeneration.into()),
                22,
            ),
            (
                ServeError::Coordinator(GroupError::UnknownMemberId.into()),
                25,
            ),
            (
                ServeError::Coordinator(GroupError::RebalanceInProgress.into()),
                27,
            ),
            (
                ServeError::Coordinator(GroupError::MemberIdRequired.into()),
                79,
            ),
            (
                ServeError::Coordinator(GroupError::FencedInstanceId.into()),
                82,
            ),
            (
                ServeError::Coordinator(GroupError::NonEmptyGroup.into()),
                68,
            ),
            (
                ServeError::Coordinator(GroupError::GroupIdNotFound.into()),
                69,
            ),
            (
                ServeError::Coordinator(CoordinatorError::SubscribedToTopic),
                86,
            ),
            (
                LogError::from(ProducerError::InvalidEpoch {
                    producer_id: 1,
                    epoch: 0,
                    current: 1,
                })
                .into(),
                47,
            ),
            (
                LogError::from(ProducerError::OutOfOrderSequence {
                    producer_id: 1,
                    epoch: 0,
                    first_seq: 7,
                    last_seq: 4,
                })
                .into(),
                45,
            ),
            (ServeError::TransactionsUnsupported("tx".into()), 16),
            (
                ServeError::ProducerIdsUnavailable(ClusterError::NoLeader(
                    std::time::Duration::from_secs(1),
                )),
                14,
            ),
        ];
        for (err, code) in cases {
            assert_eq!(err.code(), code, "{err}");
        }
    }
}
