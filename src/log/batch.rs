//! Kafka magic v2 record batch headers, over plain byte slices.
//!
//! Owns the wire layout of the 61-byte batch header and the rules a produced batch must meet
//! before it is stored. Never looks inside the records section: records may be compressed and
//! are passed through untouched. Everything here is pure; no I/O.
//!
//! Layout (all big-endian): baseOffset i64 | batchLength i32 | partitionLeaderEpoch i32 |
//! magic i8 | crc u32 | attributes i16 | lastOffsetDelta i32 | baseTimestamp i64 |
//! maxTimestamp i64 | producerId i64 | producerEpoch i16 | baseSequence i32 |
//! recordsCount i32 | records... The CRC (Castagnoli) covers `attributes` to the end of the
//! batch, so the broker may rewrite baseOffset and partitionLeaderEpoch without touching it.

use std::ops::Range;

use super::{LogError, TimestampType};

/// Size of the v2 batch header, records excluded.
pub const HEADER_LEN: usize = 61;
/// baseOffset + batchLength: the bytes not counted by `batchLength`.
pub const LOG_OVERHEAD: usize = 12;
/// Smallest legal `batchLength`: a header with no records.
const MIN_BATCH_LENGTH: i32 = (HEADER_LEN - LOG_OVERHEAD) as i32;

const BASE_OFFSET_AT: usize = 0;
const BATCH_LENGTH_AT: usize = 8;
const LEADER_EPOCH_AT: usize = 12;
const MAGIC_AT: usize = 16;
const CRC_AT: usize = 17;
/// Start of the CRC-covered region.
const ATTRIBUTES_AT: usize = 21;
const LAST_OFFSET_DELTA_AT: usize = 23;
const BASE_TIMESTAMP_AT: usize = 27;
const MAX_TIMESTAMP_AT: usize = 35;
const PRODUCER_ID_AT: usize = 43;
const PRODUCER_EPOCH_AT: usize = 51;
const BASE_SEQUENCE_AT: usize = 53;
const RECORDS_COUNT_AT: usize = 57;

const CURRENT_MAGIC: i8 = 2;
const COMPRESSION_MASK: i16 = 0x07;
/// Highest compression codec id Kafka defines (zstd).
const MAX_COMPRESSION_CODEC: i16 = 4;
const TIMESTAMP_TYPE_FLAG: i16 = 0x08;
const TRANSACTIONAL_FLAG: i16 = 0x10;
const CONTROL_FLAG: i16 = 0x20;

/// The decoded fixed header of one v2 record batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    pub base_offset: i64,
    pub batch_length: i32,
    pub partition_leader_epoch: i32,
    pub magic: i8,
    pub crc: u32,
    pub attributes: i16,
    pub last_offset_delta: i32,
    pub base_timestamp: i64,
    pub max_timestamp: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub records_count: i32,
}

/// One batch found by [`validate_produce_batches`]: its header and where it sits in the
/// request's bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchInfo {
    pub header: BatchHeader,
    pub range: Range<usize>,
}

fn read_i16(buf: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([buf[at], buf[at + 1]])
}

fn read_i32(buf: &[u8], at: usize) -> i32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(&buf[at..at + 4]);
    i32::from_be_bytes(b)
}

fn read_i64(buf: &[u8], at: usize) -> i64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&buf[at..at + 8]);
    i64::from_be_bytes(b)
}

impl BatchHeader {
    /// Parses the header at the start of `buf`. Checks the magic byte first (it sits at the
    /// same place in the legacy v0/v1 format, so old clients get `UnsupportedMagic`) and that
    /// `batchLength` is at least a bare header. Does not check the CRC or that the whole
    /// batch is present.
    pub fn parse(buf: &[u8]) -> Result<BatchHeader, LogError> {
        if buf.len() <= MAGIC_AT {
            return Err(LogError::CorruptBatch(format!(
                "{} bytes is too short for a batch header",
                buf.len()
            )));
        }
        let magic = buf[MAGIC_AT] as i8;
        if magic != CURRENT_MAGIC {
            return Err(LogError::UnsupportedMagic(magic));
        }
        if buf.len() < HEADER_LEN {
            return Err(LogError::CorruptBatch(format!(
                "{} bytes is too short for a v2 batch header",
                buf.len()
            )));
        }
        let batch_length = read_i32(buf, BATCH_LENGTH_AT);
        if batch_length < MIN_BATCH_LENGTH {
            return Err(LogError::CorruptBatch(format!(
                "batch length {batch_length} is below the minimum {MIN_BATCH_LENGTH}"
            )));
        }
        let mut crc = [0u8; 4];
        crc.copy_from_slice(&buf[CRC_AT..CRC_AT + 4]);
        Ok(BatchHeader {
            base_offset: read_i64(buf, BASE_OFFSET_AT),
            batch_length,
            partition_leader_epoch: read_i32(buf, LEADER_EPOCH_AT),
            magic,
            crc: u32::from_be_bytes(crc),
            attributes: read_i16(buf, ATTRIBUTES_AT),
            last_offset_delta: read_i32(buf, LAST_OFFSET_DELTA_AT),
            base_timestamp: read_i64(buf, BASE_TIMESTAMP_AT),
            max_timestamp: read_i64(buf, MAX_TIMESTAMP_AT),
            producer_id: read_i64(buf, PRODUCER_ID_AT),
            producer_epoch: read_i16(buf, PRODUCER_EPOCH_AT),
            base_sequence: read_i32(buf, BASE_SEQUENCE_AT),
            records_count: read_i32(buf, RECORDS_COUNT_AT),
        })
    }

    /// Size of the whole batch on the wire and on disk.
    pub fn total_size(&self) -> usize {
        // parse() guarantees batch_length >= MIN_BATCH_LENGTH > 0.
        LOG_OVERHEAD + self.batch_length.max(0) as usize
    }

    pub fn last_offset(&self) -> i64 {
        self.base_offset
            .saturating_add(i64::from(self.last_offset_delta))
    }

    /// The offset just past this batch.
    pub fn next_offset(&self) -> i64 {
        self.last_offset().saturating_add(1)
    }

    /// 0 none, 1 gzip, 2 snappy, 3 lz4, 4 zstd.
    pub fn compression_codec(&self) -> i16 {
        self.attributes & COMPRESSION_MASK
    }

    pub fn timestamp_type(&self) -> TimestampType {
        if self.attributes & TIMESTAMP_TYPE_FLAG != 0 {
            TimestampType::LogAppendTime
        } else {
            TimestampType::CreateTime
        }
    }

    pub fn is_transactional(&self) -> bool {
        self.attributes & TRANSACTIONAL_FLAG != 0
    }

    pub fn is_control(&self) -> bool {
        self.attributes & CONTROL_FLAG != 0
    }
}

/// CRC-32C over the covered region of a whole batch (`batch` starts at baseOffset).
pub fn compute_crc(batch: &[u8]) -> u32 {
    crc32c::crc32c(batch.get(ATTRIBUTES_AT..).unwrap_or_default())
}

/// Walks the concatenated batches of a produce request and checks each one: complete, magic
/// 2, CRC correct, no more than `max_batch_bytes`, a known codec, and a record count that
/// matches its offset range. Trailing bytes that do not form a whole batch are rejected
/// rather than ignored, because a producer never sends them.
///
/// Record bodies are not decoded, so a batch whose records disagree with `recordsCount` is
/// only caught by the consumer; Kafka decompresses to check, which costs CPU on every write.
pub fn validate_produce_batches(
    buf: &[u8],
    max_batch_bytes: usize,
) -> Result<Vec<BatchInfo>, LogError> {
    let mut infos = Vec::new();
    let mut pos = 0;
    while pos < buf.len() {
        let rest = &buf[pos..];
        let header = BatchHeader::parse(rest)?;
        let size = header.total_size();
        if size > rest.len() {
            return Err(LogError::CorruptBatch(format!(
                "batch at byte {pos} claims {size} bytes but only {} remain",
                rest.len()
            )));
        }
        if size > max_batch_bytes {
            return Err(LogError::MessageTooLarge {
                size,
                max: max_batch_bytes,
            });
        }
        let computed = compute_crc(&rest[..size]);
        if computed != header.crc {
            return Err(LogError::CorruptBatch(format!(
                "batch at byte {pos} has CRC {:#010x}, computed {computed:#010x}",
                header.crc
            )));
        }
        check_counts(&header)?;
        // Control batches are written by the broker itself (transaction markers), never by
        // producers; transactions are not offered (no AddPartitionsToTxn/EndTxn).
        if header.is_control() {
            return Err(LogError::InvalidRecord(format!(
                "batch at byte {pos} is a control batch; producers may not write those"
            )));
        }
        if header.is_transactional() {
            return Err(LogError::InvalidRecord(format!(
                "batch at byte {pos} is transactional; this broker does not offer transactions yet"
            )));
        }
        // Kafka's LogValidator: an idempotent batch must carry a sequence number.
        if header.producer_id >= 0 && header.base_sequence < 0 {
            return Err(LogError::InvalidRecord(format!(
                "batch at byte {pos} of producer {} has sequence {}",
                header.producer_id, header.base_sequence
            )));
        }
        if header.compression_codec() > MAX_COMPRESSION_CODEC {
            return Err(LogError::InvalidRecord(format!(
                "unknown compression codec {}",
                header.compression_codec()
            )));
        }
        infos.push(BatchInfo {
            header,
            range: pos..pos + size,
        });
        pos += size;
    }
    Ok(infos)
}

/// Walks record batches as a partition leader sent them in a Fetch response, for a follower
/// to append unchanged: each must be magic 2, CRC-correct, with a non-negative offset span
/// and a known codec. Unlike [`validate_produce_batches`], control and transactional
/// batches pass, and record counts may be below the offset span (compaction leaves such
/// batches, even empty ones). A final batch cut short by the fetch size limit is not an
/// error: the walk stops before it, and the follower fetches it again. Returns the complete
/// batches; the last one's range end is how many bytes they use.
pub fn validate_replica_batches(buf: &[u8]) -> Result<Vec<BatchInfo>, LogError> {
    let mut infos = Vec::new();
    let mut pos = 0;
    while pos < buf.len() {
        let rest = &buf[pos..];
        if rest.len() < HEADER_LEN {
            break;
        }
        let header = BatchHeader::parse(rest)?;
        let size = header.total_size();
        if size > rest.len() {
            break;
        }
        let computed = compute_crc(&rest[..size]);
        if computed != header.crc {
            return Err(LogError::CorruptBatch(format!(
                "replicated batch at byte {pos} has CRC {:#010x}, computed {computed:#010x}",
                header.crc
            )));
        }
        if header.last_offset_delta < 0 || header.records_count < 0 {
            return Err(LogError::CorruptBatch(format!(
                "replicated batch at byte {pos} has last offset delta {} and {} records",
                header.last_offset_delta, header.records_count
            )));
        }
        if header.compression_codec() > MAX_COMPRESSION_CODEC {
            return Err(LogError::CorruptBatch(format!(
                "replicated batch at byte {pos} has unknown compression codec {}",
                header.compression_codec()
            )));
        }
        infos.push(BatchInfo {
            header,
            range: pos..pos + size,
        });
        pos += size;
    }
    Ok(infos)
}

/// Kafka's rule for client batches: a positive record count equal to the offset span.
fn check_counts(header: &BatchHeader) -> Result<(), LogError> {
    if header.records_count <= 0 {
        return Err(LogError::InvalidRecord(format!(
            "batch has records count {}",
            header.records_count
        )));
    }
    if header.last_offset_delta < 0 {
        return Err(LogError::InvalidRecord(format!(
            "batch has negative last offset delta {}",
            header.last_offset_delta
        )));
    }
    if i64::from(header.records_count) != i64::from(header.last_offset_delta) + 1 {
        return Err(LogError::InvalidRecord(format!(
            "records count {} does not match last offset delta {}",
            header.records_count, header.last_offset_delta
        )));
    }
    Ok(())
}

/// The stored form of a batch's header: a copy of `batch`'s first [`HEADER_LEN`] bytes with
/// its base offset and partition leader epoch set and, for `LogAppendTime` topics, the
/// timestamp type and max timestamp replaced by the broker's clock (and the CRC recomputed,
/// over the new header fields and the unchanged records). The records after the header are
/// stored as they came, so an append writes this header and the rest of the request's bytes
/// without copying them.
pub fn patch_header(
    batch: &[u8],
    base_offset: i64,
    leader_epoch: i32,
    log_append_time: Option<i64>,
) -> Result<([u8; HEADER_LEN], BatchHeader), LogError> {
    let header = BatchHeader::parse(batch)?;
    if header.total_size() != batch.len() {
        return Err(LogError::CorruptBatch(format!(
            "batch claims {} bytes but the buffer holds {}",
            header.total_size(),
            batch.len()
        )));
    }
    let mut head = [0u8; HEADER_LEN];
    head.copy_from_slice(&batch[..HEADER_LEN]);
    head[BASE_OFFSET_AT..BASE_OFFSET_AT + 8].copy_from_slice(&base_offset.to_be_bytes());
    head[LEADER_EPOCH_AT..LEADER_EPOCH_AT + 4].copy_from_slice(&leader_epoch.to_be_bytes());
    if let Some(ts) = log_append_time {
        let attributes = header.attributes | TIMESTAMP_TYPE_FLAG;
        head[ATTRIBUTES_AT..ATTRIBUTES_AT + 2].copy_from_slice(&attributes.to_be_bytes());
        head[MAX_TIMESTAMP_AT..MAX_TIMESTAMP_AT + 8].copy_from_slice(&ts.to_be_bytes());
        let crc =
            crc32c::crc32c_append(crc32c::crc32c(&head[ATTRIBUTES_AT..]), &batch[HEADER_LEN..]);
        head[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
    }
    let patched = BatchHeader::parse(&head)?;
    Ok((head, patched))
}

/// [`patch_header`] applied in place (tests build stored batches with it).
#[cfg(test)]
pub fn patch_batch(
    buf: &mut [u8],
    base_offset: i64,
    leader_epoch: i32,
    log_append_time: Option<i64>,
) -> Result<BatchHeader, LogError> {
    let (head, header) = patch_header(buf, base_offset, leader_epoch, log_append_time)?;
    buf[..HEADER_LEN].copy_from_slice(&head);
    Ok(header)
}

/// Iterates the batches of stored log bytes, yielding each header and its byte range.
/// Stops quietly at a final batch that is cut short (reads end on a byte limit, and a
/// crashed write leaves a partial tail); yields one error and stops at a malformed header.
/// Does not check CRCs: stored batches were checked on the way in.
pub struct BatchIter<'a> {
    buf: &'a [u8],
    pos: usize,
    failed: bool,
}

impl<'a> BatchIter<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        BatchIter {
            buf,
            pos: 0,
            failed: false,
        }
    }

    /// Byte position just past the last batch yielded.
    pub fn position(&self) -> usize {
        self.pos
    }
}

impl Iterator for BatchIter<'_> {
    type Item = Result<(BatchHeader, Range<usize>), LogError>;

    fn next(&mut self) -> Option<Self::Item> {
        let rest = self.buf.get(self.pos..).unwrap_or_default();
        if self.failed || rest.len() < HEADER_LEN {
            return None;
        }
        let header = match BatchHeader::parse(rest) {
            Ok(h) => h,
            Err(e) => {
                self.failed = true;
                return Some(Err(e));
            }
        };
        let size = header.total_size();
        if size > rest.len() {
            return None;
        }
        let range = self.pos..self.pos + size;
        self.pos += size;
        Some(Ok((header, range)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::testutil::{test_batch, test_batch_with, Record};
    use proptest::collection::vec;
    use proptest::prelude::*;

    fn one(n: usize) -> Vec<u8> {
        let recs: Vec<Record<'_>> = (0..n).map(|_| (None, Some(&b"v"[..]))).collect();
        test_batch(&recs, 1_000)
    }

    #[test]
    fn parses_a_built_batch() {
        let b = test_batch(&[(Some(b"k"), Some(b"value")), (None, None)], 42);
        let h = BatchHeader::parse(&b).unwrap();
        assert_eq!(h.magic, 2);
        assert_eq!(h.total_size(), b.len());
        assert_eq!(h.records_count, 2);
        assert_eq!(h.last_offset_delta, 1);
        assert_eq!(h.max_timestamp, 42);
        assert_eq!(h.crc, compute_crc(&b));
        assert_eq!(h.timestamp_type(), TimestampType::CreateTime);
        assert!(!h.is_control() && !h.is_transactional());
    }

    #[test]
    fn validates_concatenated_batches() {
        let mut buf = one(3);
        let first_len = buf.len();
        buf.extend_from_slice(&one(1));
        let infos = validate_produce_batches(&buf, 1 << 20).unwrap();
        assert_eq!(infos.len(), 2);
        assert_eq!(infos[0].range, 0..first_len);
        assert_eq!(infos[1].range.end, buf.len());
    }

    #[test]
    fn rejects_crc_mismatch() {
        let mut b = one(2);
        let last = b.len() - 1;
        b[last] ^= 0xff;
        let err = validate_produce_batches(&b, 1 << 20).unwrap_err();
        assert!(matches!(err, LogError::CorruptBatch(_)), "{err}");
    }

    #[test]
    fn rejects_old_magic() {
        let mut b = one(1);
        b[MAGIC_AT] = 1;
        let err = validate_produce_batches(&b, 1 << 20).unwrap_err();
        assert!(matches!(err, LogError::UnsupportedMagic(1)), "{err}");
    }

    #[test]
    fn rejects_trailing_garbage_and_truncation() {
        let mut b = one(1);
        b.extend_from_slice(&[0u8; 5]);
        assert!(validate_produce_batches(&b, 1 << 20).is_err());
        let b = one(1);
        let err = validate_produce_batches(&b[..b.len() - 1], 1 << 20).unwrap_err();
        assert!(matches!(err, LogError::CorruptBatch(_)), "{err}");
    }

    #[test]
    fn rejects_oversize_batch() {
        let b = one(1);
        let err = validate_produce_batches(&b, b.len() - 1).unwrap_err();
        assert!(matches!(err, LogError::MessageTooLarge { .. }), "{err}");
    }

    #[test]
    fn rejects_bad_counts_and_short_length() {
        let b = test_batch_with(&[(None, Some(b"x"))], 0, |h| h.records_count = 0);
        assert!(matches!(
            validate_produce_batches(&b, 1 << 20),
            Err(LogError::InvalidRecord(_))
        ));
        let b = test_batch_with(&[(None, Some(b"x"))], 0, |h| h.last_offset_delta = 3);
        assert!(matches!(
            validate_produce_batches(&b, 1 << 20),
            Err(LogError::InvalidRecord(_))
        ));
        let mut b = one(1);
        b[BATCH_LENGTH_AT..BATCH_LENGTH_AT + 4].copy_from_slice(&10i32.to_be_bytes());
        assert!(matches!(
            BatchHeader::parse(&b),
            Err(LogError::CorruptBatch(_))
        ));
    }

    #[test]
    fn patch_sets_offset_epoch_and_append_time() {
        let mut b = one(3);
        let before = BatchHeader::parse(&b).unwrap();
        let h = patch_batch(&mut b, 77, 5, None).unwrap();
        assert_eq!((h.base_offset, h.partition_leader_epoch), (77, 5));
        assert_eq!(h.crc, before.crc, "CRC must not change for offset/epoch");
        assert_eq!(h.last_offset(), 79);
        let h = patch_batch(&mut b, 77, 5, Some(9_999)).unwrap();
        assert_eq!(h.max_timestamp, 9_999);
        assert_eq!(h.timestamp_type(), TimestampType::LogAppendTime);
        assert_eq!(validate_produce_batches(&b, 1 << 20).unwrap().len(), 1);
    }

    #[test]
    fn iter_stops_at_truncated_tail() {
        let mut buf = one(1);
        let first = buf.len();
        buf.extend_from_slice(&one(2));
        let cut = &buf[..buf.len() - 3];
        let mut it = BatchIter::new(cut);
        let (_, r) = it.next().unwrap().unwrap();
        assert_eq!(r, 0..first);
        assert!(it.next().is_none());
        assert_eq!(it.position(), first);
    }

    #[test]
    fn iter_reports_malformed_header_once() {
        let mut buf = one(1);
        let mut bad = one(1);
        bad[MAGIC_AT] = 0;
        buf.extend_from_slice(&bad);
        let items: Vec<_> = BatchIter::new(&buf).collect();
        assert_eq!(items.len(), 2);
        assert!(matches!(items[1], Err(LogError::UnsupportedMagic(0))));
    }

    #[test]
    fn replica_validation_accepts_control_and_stops_at_a_partial_tail() {
        let control = test_batch_with(&[(None, Some(b"m"))], 0, |h| {
            h.attributes = CONTROL_FLAG | TRANSACTIONAL_FLAG;
            h.producer_id = 4;
            h.producer_epoch = 0;
            h.base_sequence = -1;
        });
        let mut buf = one(2);
        buf.extend_from_slice(&control);
        let whole = buf.len();
        buf.extend_from_slice(&one(1)[..HEADER_LEN + 4]);
        let infos = validate_replica_batches(&buf).unwrap();
        assert_eq!(infos.len(), 2);
        assert_eq!(infos[1].range.end, whole);
        assert!(infos[1].header.is_control());
        // A header cut short is a partial tail too.
        assert_eq!(
            validate_replica_batches(&buf[..whole + 20]).unwrap().len(),
            2
        );
        assert!(validate_replica_batches(&[]).unwrap().is_empty());
        let mut bad = one(1);
        let n = bad.len();
        bad[n - 1] ^= 1;
        assert!(matches!(
            validate_replica_batches(&bad),
            Err(LogError::CorruptBatch(_))
        ));
        let mut old = one(1);
        old[MAGIC_AT] = 1;
        assert!(matches!(
            validate_replica_batches(&old),
            Err(LogError::UnsupportedMagic(1))
        ));
    }

    proptest! {
        #[test]
        fn patch_keeps_crc_valid(
            values in vec(vec(any::<u8>(), 0..64), 1..8),
            ts in any::<i64>(),
            base in 0i64..i64::MAX / 2,
            epoch in any::<i32>(),
            append_time in proptest::option::of(any::<i64>()),
        ) {
            let recs: Vec<Record<'_>> =
                values.iter().map(|v| (None, Some(v.as_slice()))).collect();
            let mut b = test_batch(&recs, ts);
            let h = patch_batch(&mut b, base, epoch, append_time).unwrap();
            prop_assert_eq!(h.crc, compute_crc(&b));
            prop_assert_eq!(h.base_offset, base);
            prop_assert_eq!(h.partition_leader_epoch, epoch);
            prop_assert_eq!(h.max_timestamp, append_time.unwrap_or(ts));
            prop_assert!(validate_produce_batches(&b, usize::MAX).is_ok());
        }
    }
}
