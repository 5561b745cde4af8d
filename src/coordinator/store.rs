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
}

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
        let rx = logs.flusher().submit(p).await;
        Flusher::wait(rx).await.map_err(StoreError::Flush)?;
    }
    Ok(())
}

/// Replays one partition from its log start into a fresh store. Unreadable records are
/// logged and skipped (they cannot have been written by this broker).
pub fn load(p: &Arc<Partition>) -> Result<OffsetStore, StoreError> {
    let mut store = OffsetStore::default();
    let mut offset = p.offsets().log_start;
    let mut records = 0u64;
    loop {
        let (bytes, offsets) = p.read(offset, 1024 * 1024)?;
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
        if next <= offset || next >= offsets.high_watermark {
            break;
        }
        offset = next;
    }
    tracing::debug!(partition = %p.name(), records, "loaded coordinator state");
    Ok(store)
}
