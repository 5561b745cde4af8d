//! The partition log: Kafka magic v2 record batches stored in segment files.
//!
//! Owns everything under one partition directory (`<data>/<topic>-<partition>/`): the segment
//! files (`<base_offset:020>.log`), their sparse offset and time indexes, the
//! `log-start-offset` checkpoint, and the idempotent producers' state with its
//! `<offset:020>.snapshot` files. It knows nothing about replication or high watermarks;
//! callers pass the high watermark in where it bounds a read or a deletion.
//!
//! Layout, from the bytes up:
//! - [`batch`]: parsing, validating and patching record batch headers (pure).
//! - [`index`]: the sparse offset and time indexes (pure lookups plus file encoding).
//! - `scan`: walking a segment file batch by batch, checking CRCs.
//! - [`segment`]: one `.log` file and its indexes.
//! - [`pagecache`]: releasing data from the page cache that readers no longer need.
//! - [`policy`]: when to roll a segment and which segments retention deletes (pure).
//! - [`producer_state`]: producer ids, epochs and sequences: duplicate and gap detection
//!   (pure), and its snapshot files.
//! - [`partition`]: the ordered set of segments that forms one partition's log.
//!
//! Invariants kept here, checked by [`PartitionLog::validate`] after every change in debug
//! builds: `log_start_offset <= log_end_offset`; segments are sorted by base offset and
//! contiguous (each segment's next offset is the next segment's base offset); the last
//! segment is the only one written to; every stored batch passed its CRC check on the way in.
//! Batches are stored exactly as produced apart from the fields the broker owns (base offset,
//! partition leader epoch and, for `LogAppendTime` topics, the max timestamp).

pub mod batch;
mod checkpoint;
pub mod index;
pub mod pagecache;
pub mod partition;
pub mod policy;
pub mod producer_state;
pub mod records;
mod scan;
pub mod segment;
#[cfg(test)]
pub(crate) mod testutil;

use std::path::PathBuf;

pub use batch::{validate_produce_batches, BatchHeader, BatchInfo, BatchIter};
pub use partition::{partition_dir, AppendResult, PartitionLog, PlannedRead, ReadResult, Retired};
pub use policy::{retention_plan, should_roll, RollInput, SegmentSummary};
pub use segment::{FileRegion, ReadPlan, ReadSlice, Segment};

/// Everything that can go wrong in the log. Variants split into client errors (the produce
/// request was bad, or asked for an offset we do not have) and storage errors (the disk or
/// the files on it failed us); see [`LogError::is_storage_error`].
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// A batch from a client failed its CRC or has a malformed header.
    #[error("corrupt record batch: {0}")]
    CorruptBatch(String),
    /// Stored data failed a structural check outside the recoverable tail of the log.
    #[error("corrupt segment {path}: {detail}")]
    CorruptSegment { path: PathBuf, detail: String },
    #[error("unsupported record batch magic {0} (only magic 2 is accepted)")]
    UnsupportedMagic(i8),
    #[error("record batch of {size} bytes exceeds the limit of {max} bytes")]
    MessageTooLarge { size: usize, max: usize },
    #[error("offset {offset} is outside the log range [{log_start}, {log_end}]")]
    OffsetOutOfRange {
        offset: i64,
        log_start: i64,
        log_end: i64,
    },
    #[error("invalid record: {0}")]
    InvalidRecord(String),
    /// An idempotent producer's batch broke the epoch or sequence rules.
    #[error(transparent)]
    Producer(#[from] producer_state::ProducerError),
    /// A client append reached a replica that does not lead the partition.
    #[error("this broker does not lead {0}")]
    NotLeader(String),
}

impl LogError {
    /// Builds an [`LogError::Io`]; takes the context by value so callers can build it inside
    /// `map_err` closures and pay for the formatting only on the error path.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        LogError::Io {
            context: context.into(),
            source,
        }
    }

    /// True when the fault is in the broker's storage rather than in the request: the
    /// partition should be taken offline (Kafka's KAFKA_STORAGE_ERROR) while the rest of the
    /// broker keeps serving.
    pub fn is_storage_error(&self) -> bool {
        match self {
            LogError::Io { .. } | LogError::CorruptSegment { .. } => true,
            LogError::CorruptBatch(_)
            | LogError::UnsupportedMagic(_)
            | LogError::MessageTooLarge { .. }
            | LogError::OffsetOutOfRange { .. }
            | LogError::InvalidRecord(_)
            | LogError::Producer(_)
            | LogError::NotLeader(_) => false,
        }
    }
}

/// How record timestamps are assigned (Kafka's `message.timestamp.type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TimestampType {
    /// Keep the producer's timestamps.
    #[default]
    CreateTime,
    /// Overwrite each batch's max timestamp with the broker's clock at append.
    LogAppendTime,
}

/// Per-partition log settings, the subset of Kafka's topic configs the log itself enforces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    /// Roll the active segment before it would grow past this size (`segment.bytes`).
    pub segment_bytes: u64,
    /// Roll the active segment once it is older than this (`segment.ms`).
    pub segment_ms: i64,
    /// Bytes of log between sparse index entries (`index.interval.bytes`).
    pub index_interval_bytes: u32,
    /// Largest record batch accepted from a producer (`max.message.bytes`).
    pub max_message_bytes: usize,
    pub message_timestamp_type: TimestampType,
    /// Delete sealed segments whose newest record is older than this; -1 keeps them forever.
    pub retention_ms: i64,
    /// Delete the oldest sealed segments while the log is larger than this; -1 = unlimited.
    pub retention_bytes: i64,
    /// Forget an idempotent producer idle this long (Kafka's broker-wide
    /// `producer.id.expiration.ms`).
    pub producer_id_expiration_ms: i64,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_bytes: 1024 * 1024 * 1024,
            segment_ms: 7 * 24 * 60 * 60 * 1000,
            index_interval_bytes: 4096,
            max_message_bytes: 1_048_588,
            message_timestamp_type: TimestampType::CreateTime,
            retention_ms: 7 * 24 * 60 * 60 * 1000,
            retention_bytes: -1,
            producer_id_expiration_ms: 24 * 60 * 60 * 1000,
        }
    }
}
