//! Record-level lookups inside one stored batch. These decompress the batch (with the
//! kafka-protocol record decoder), so they serve only rare queries such as ListOffsets by
//! timestamp, never the produce or fetch path.

use bytes::Bytes;
use kafka_protocol::records::RecordBatchDecoder;

use super::batch::BatchHeader;
use super::{LogError, TimestampType};

/// The batch's records as (offset, timestamp, is_control). With LogAppendTime every record
/// carries the batch's max timestamp, as Kafka defines it.
fn decode(batch: &Bytes) -> Result<Vec<(i64, i64, bool)>, LogError> {
    let header = BatchHeader::parse(batch)?;
    let mut buf = batch.clone();
    let set = RecordBatchDecoder::decode(&mut buf)
        .map_err(|e| LogError::CorruptBatch(format!("cannot decode stored batch: {e}")))?;
    let append_time = header.timestamp_type() == TimestampType::LogAppendTime;
    Ok(set
        .records
        .into_iter()
        .map(|r| {
            (
                r.offset,
                if append_time {
                    header.max_timestamp
                } else {
                    r.timestamp
                },
                r.control,
            )
        })
        .collect())
}

/// (offset, timestamp) of the first record with a timestamp at or after `ts`, among records
/// at or after `min_offset`.
pub fn first_at_or_after(
    batch: &Bytes,
    ts: i64,
    min_offset: i64,
) -> Result<Option<(i64, i64)>, LogError> {
    Ok(decode(batch)?
        .into_iter()
        .filter(|(offset, _, control)| *offset >= min_offset && !control)
        .map(|(offset, t, _)| (offset, t))
        .find(|(_, t)| *t >= ts))
}

/// (offset, timestamp) of the first record holding the batch's largest timestamp.
pub fn max_timestamp_record(
    batch: &Bytes,
    min_offset: i64,
) -> Result<Option<(i64, i64)>, LogError> {
    let mut best: Option<(i64, i64)> = None;
    for (offset, t, control) in decode(batch)? {
        if offset >= min_offset && !control && best.is_none_or(|(_, b)| t > b) {
            best = Some((offset, t));
        }
    }
    Ok(best)
}
