//! Reading and writing the coordinator's records in `__consumer_offsets`, an internal topic
//! of ordinary partitions (so it gets the same segments, recovery and group commit as data).

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use indexmap::IndexMap;
use kafka_protocol::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};

use super::records::{OffsetStore, Replayed};
use crate::storage::{Flusher, LogManager, Partition};

pub const TOPIC: &str = "__consumer_offsets";

/// One record to write: key, and value (`None` = tombstone).
pub type KeyValue = (Vec<u8>, Option<Vec<u8>>);

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{TOPIC} partition {0} is not hosted here")]
    NotHosted(i32),
    #[error("cannot encode coordinator records: {0}")]
    Encode(String),
    #[error(transparent)]
    Log(#[from] crate::log::LogError),
    #[error("fsync of {TOPIC}: {0}")]
    Flush(Arc<std::io::Error>),
    #[error("{TOPIC} partition {0}: not replicated to its in-sync replicas in time")]
    NotReplicated(i32),
}

/// How long a coordinator write waits for its in-sync replicas (Kafka's
/// offsets.commit.timeout.ms).
const REPLICATION_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Appends `(key, value)` records (value `None` = tombstone) to one partition and waits
/// until they are durable.
pub async fn append(
    logs: &LogManager,
    partition: i32,
    records: Vec<KeyValue>,
) -> Result<(), StoreError> {
    let p = logs
        .partition(TOPIC, partition)
        .ok_or(StoreError::NotHosted(partition))?;
    let now = crate::now_ms();
    let records: Vec<Record> = records
        .into_iter()
        .enumerate()
        .map(|(i, (k, v))| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: 0,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            sequence: -1,
            timestamp: now,
            key: Some(Bytes::from(k)),
            value: v.map(Bytes::from),
            headers: IndexMap::new(),
        })
        .collect();
    let mut buf = BytesMut::new();
    let options = RecordEncodeOptions {
        version: 2,
        compression: Compression::None,
    };
    RecordBatchEncoder::encode(&mut buf, &records, &options)
        .map_err(|e| StoreError::Encode(e.to_string()))?;
    let appended = p.append(&buf, now)?;
    if appended.needs_flush {
        let rx = logs.flusher().submit(p.clone()).await;
        Flusher::wait(rx).await.map_err(StoreError::Flush)?;
    }
    // Like acks=all: a commit is answered once every in-sync replica has it, so it survives
    // the loss of the coordinator's broker.
    p.wait_for_high_watermark(
        appended.last_offset + 1,
        appended.leader_epoch,
        REPLICATION_TIMEOUT,
    )
    .await
    .map_err(|_| StoreError::NotReplicated(partition))?;
    Ok(())
}

/// Replays one partition from its log start into a fresh store. Unreadable records are
/// logged and skipped (they cannot have been written by this broker).
pub fn load(p: &Arc<Partition>) -> Result<OffsetStore, StoreError> {
    let mut store = OffsetStore::default();
    let mut offset = p.offsets().log_start;
    let mut records = 0u64;
    loop {
        // Up to the log end, not the high watermark: a new leader's high watermark may still
        // lag records its predecessor acknowledged (Kafka's coordinator loads to the end).
        let (bytes, offsets) = p.read_replica(offset, 1024 * 1024)?;
        if bytes.is_empty() {
            break;
        }
        let mut buf = bytes;
        let mut next = offset;
        while !buf.is_empty() {
            let set = match RecordBatchDecoder::decode(&mut buf) {
                Ok(set) => set,
                // A batch cut by the read limit: continue from it on the next read.
                Err(_) => break,
            };
            for r in set.records {
                next = next.max(r.offset + 1);
                if r.offset < offset || r.control {
                    continue;
                }
                let Some(key) = r.key else { continue };
                if let Replayed::Unreadable(why) = store.replay(&key, r.value.as_deref()) {
                    tracing::warn!(partition = %p.name(), offset = r.offset, why, "skipping unreadable coordinator record");
                }
                records += 1;
            }
        }
        if next <= offset || next >= offsets.log_end {
            break;
        }
        offset = next;
    }
    tracing::debug!(partition = %p.name(), records, "loaded coordinator state");
    Ok(store)
}

/// What one compaction did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Compacted {
    pub records_read: u64,
    pub live_records: u64,
    pub new_log_start: i64,
}

/// Compacts one partition the way Kafka's cleaner would leave it, in one pass: the newest
/// value of every key written before the current end is appended again (tombstoned keys are
/// dropped), then the log start moves past everything older, so replay reads only live
/// records and whole old segments are deleted.
///
/// The caller must hold the partition's write lock: a write landing between the scan and the
/// re-append could otherwise be overtaken by an older copy of its key.
pub async fn compact(logs: &LogManager, partition: i32) -> Result<Compacted, StoreError> {
    let p = logs
        .partition(TOPIC, partition)
        .ok_or(StoreError::NotHosted(partition))?;
    let end = p.offsets().high_watermark;
    let mut live: IndexMap<Vec<u8>, Option<Vec<u8>>> = IndexMap::new();
    let mut records_read = 0u64;
    let mut offset = p.offsets().log_start;
    while offset < end {
        let (bytes, _) = p.read(offset, 1024 * 1024)?;
        if bytes.is_empty() {
            break;
        }
        let mut buf = bytes;
        let mut next = offset;
        while !buf.is_empty() {
            let Ok(set) = RecordBatchDecoder::decode(&mut buf) else {
                break;
            };
            for r in set.records {
                next = next.max(r.offset + 1);
                if r.offset < offset || r.offset >= end || r.control {
                    continue;
                }
                let Some(key) = r.key else { continue };
                records_read += 1;
                // Re-inserting moves the key to the end: the map keeps last-write order.
                live.shift_remove(key.as_ref());
                live.insert(key.to_vec(), r.value.map(|v| v.to_vec()));
            }
        }
        if next <= offset {
            break;
        }
        offset = next;
    }
    let survivors: Vec<KeyValue> = live.into_iter().filter(|(_, v)| v.is_some()).collect();
    let live_records = survivors.len() as u64;
    // Batches of bounded size, each durable before the old copies go.
    let mut chunk = Vec::new();
    let mut chunk_bytes = 0usize;
    for kv in survivors {
        chunk_bytes += kv.0.len() + kv.1.as_ref().map_or(0, |v| v.len());
        chunk.push(kv);
        if chunk_bytes >= 512 * 1024 {
            append(logs, partition, std::mem::take(&mut chunk)).await?;
            chunk_bytes = 0;
        }
    }
    if !chunk.is_empty() {
        append(logs, partition, chunk).await?;
    }
    // Moving the log start writes its checkpoint (an fsync); the files go in the background.
    let new_log_start = tokio::task::block_in_place(|| p.delete_records(end))?;
    Ok(Compacted {
        records_read,
        live_records,
        new_log_start,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::cluster::{MetadataCommand, MetadataImage, TopicMeta};
    use crate::config::BrokerConfig;
    use crate::coordinator::records::{
        encode_key, encode_value, CommittedOffset, RecordKey, RecordValue,
    };

    fn offset_record(partition: i32, offset: i64) -> KeyValue {
        let key = RecordKey::Offset {
            group: "g".into(),
            topic: "t".into(),
            partition,
        };
        let value = RecordValue::Offset(CommittedOffset {
            offset,
            leader_epoch: -1,
            metadata: None,
            commit_timestamp_ms: 1,
        });
        (encode_key(&key), Some(encode_value(&value)))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn compaction_keeps_the_newest_value_of_each_key() {
        let dir = tempfile::tempdir().unwrap();
        let config = BrokerConfig {
            data_dir: dir.path().to_path_buf(),
            ..Default::default()
        };
        let logs = LogManager::new(&config).unwrap();
        let mut image = MetadataImage::default();
        let meta = TopicMeta::new(TOPIC.into(), BTreeMap::new(), vec![vec![config.node_id]]);
        image.apply(&MetadataCommand::CreateTopic(meta)).unwrap();
        logs.reconcile(&image).unwrap();

        for round in 0..50 {
            append(
                &logs,
                0,
                vec![offset_record(0, round), offset_record(1, round * 10)],
            )
            .await
            .unwrap();
        }
        let tombstone = encode_key(&RecordKey::Offset {
            group: "g".into(),
            topic: "t".into(),
            partition: 1,
        });
        append(&logs, 0, vec![(tombstone, None)]).await.unwrap();

        let c = compact(&logs, 0).await.unwrap();
        assert_eq!((c.records_read, c.live_records), (101, 1));
        let p = logs.partition(TOPIC, 0).unwrap();
        assert_eq!(p.offsets().log_start, c.new_log_start);
        let store = load(&p).unwrap();
        assert_eq!(store.offset("g", "t", 0).map(|o| o.offset), Some(49));
        assert!(store.offset("g", "t", 1).is_none());

        // A second compaction with nothing new keeps the same state.
        let again = compact(&logs, 0).await.unwrap();
        assert_eq!(again.live_records, 1);
        assert_eq!(
            load(&p).unwrap().offset("g", "t", 0).map(|o| o.offset),
            Some(49)
        );
    }
}
