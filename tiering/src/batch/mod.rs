//! Kafka magic v2 record batches: the fixed header, CRC checks, and a lossless decode/encode of
//! the records inside.
//!
//! Owns the byte layout only; pure functions over slices, no I/O. Layout (big-endian):
//! baseOffset i64 | batchLength i32 | partitionLeaderEpoch i32 | magic i8 | crc u32 |
//! attributes i16 | lastOffsetDelta i32 | baseTimestamp i64 | maxTimestamp i64 |
//! producerId i64 | producerEpoch i16 | baseSequence i32 | recordsCount i32 | records...
//! The CRC-32C covers `attributes` to the end of the batch.
//!
//! Why records are parsed here and not with `kafka_protocol::records`: its `Record` model is
//! lossy for a storage format. Headers live in a map (duplicate keys collapse), the encoder
//! drops the LogAppendTime attribute bit, recomputes the base timestamp as the minimum and the
//! base sequence from the first record, and cannot express a compacted batch whose
//! lastOffsetDelta reaches past its last record. The compression codecs *are* kafka-protocol's
//! (see [`codec`]), and the tests decode everything this module writes with kafka-protocol's
//! decoder as an independent check.

pub mod codec;
pub mod record;

use bytes::Bytes;

pub use codec::{Codec, TopicCompression};
pub use record::{Header, Record, RecordFormatError};

/// Size of the v2 batch header, records excluded.
pub const HEADER_LEN: usize = 61;
/// baseOffset + batchLength: the bytes `batchLength` does not count.
pub const LOG_OVERHEAD: usize = 12;
const MAGIC_AT: usize = 16;
const CRC_AT: usize = 17;
/// Start of the CRC-covered region.
const ATTRIBUTES_AT: usize = 21;

pub const MAGIC_V2: i8 = 2;
pub const TIMESTAMP_TYPE_FLAG: i16 = 0x08;
pub const TRANSACTIONAL_FLAG: i16 = 0x10;
pub const CONTROL_FLAG: i16 = 0x20;
/// "No sequence": the batch is not from an idempotent producer.
pub const NO_SEQUENCE: i32 = -1;

#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    #[error("batch at byte {position} (base offset {base_offset:?}) is truncated: {needed} bytes needed, {available} present")]
    Truncated {
        position: usize,
        base_offset: Option<i64>,
        needed: usize,
        available: usize,
    },
    #[error("batch at offset {base_offset} has magic {magic}; only magic 2 is supported")]
    UnsupportedMagic { base_offset: i64, magic: i8 },
    #[error("batch at offset {base_offset} has an invalid batch length {batch_length}")]
    InvalidLength { base_offset: i64, batch_length: i32 },
    #[error("batch at offset {base_offset} fails its CRC: stored {stored:#010x}, computed {computed:#010x}")]
    CrcMismatch {
        base_offset: i64,
        stored: u32,
        computed: u32,
    },
    #[error(
        "batch at offset {base_offset} uses compression codec id {id}, which Kafka does not define"
    )]
    UnknownCodec { base_offset: i64, id: i16 },
    #[error("batch at offset {base_offset}: {source}")]
    Records {
        base_offset: i64,
        #[source]
        source: RecordFormatError,
    },
    #[error("batch at offset {base_offset}: {reason}")]
    Invalid {
        base_offset: i64,
        reason: &'static str,
    },
    #[error("cannot decompress batch at offset {base_offset} ({codec})")]
    Decompress {
        base_offset: i64,
        codec: Codec,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("cannot compress records with {codec}")]
    Compress {
        codec: Codec,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("batch at offset {base_offset} is {size} bytes, more than a batch can hold")]
    TooLarge { base_offset: i64, size: usize },
    #[error("unknown compression.type {0:?}")]
    UnknownCompressionType(String),
}

/// Whether record timestamps are the producer's or the broker's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimestampType {
    CreateTime,
    LogAppendTime,
}

/// The fixed header of one v2 batch.
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

fn be_i16(b: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([b[at], b[at + 1]])
}
fn be_i32(b: &[u8], at: usize) -> i32 {
    i32::from_be_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}
fn be_i64(b: &[u8], at: usize) -> i64 {
    i64::from_be_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

impl BatchHeader {
    /// Parses the first [`HEADER_LEN`] bytes; the caller checked there are that many.
    fn parse(b: &[u8]) -> BatchHeader {
        BatchHeader {
            base_offset: be_i64(b, 0),
            batch_length: be_i32(b, 8),
            partition_leader_epoch: be_i32(b, 12),
            magic: b[MAGIC_AT] as i8,
            crc: be_i32(b, CRC_AT) as u32,
            attributes: be_i16(b, 21),
            last_offset_delta: be_i32(b, 23),
            base_timestamp: be_i64(b, 27),
            max_timestamp: be_i64(b, 35),
            producer_id: be_i64(b, 43),
            producer_epoch: be_i16(b, 51),
            base_sequence: be_i32(b, 53),
            records_count: be_i32(b, 57),
        }
    }

    /// The offset of the batch's last record as Kafka counts it (compaction may have removed
    /// that record; the batch still spans up to here).
    pub fn last_offset(&self) -> i64 {
        self.base_offset + i64::from(self.last_offset_delta)
    }

    pub fn timestamp_type(&self) -> TimestampType {
        timestamp_type(self.attributes)
    }

    pub fn is_control(&self) -> bool {
        self.attributes & CONTROL_FLAG != 0
    }

    pub fn is_transactional(&self) -> bool {
        self.attributes & TRANSACTIONAL_FLAG != 0
    }
}

pub fn timestamp_type(attributes: i16) -> TimestampType {
    if attributes & TIMESTAMP_TYPE_FLAG != 0 {
        TimestampType::LogAppendTime
    } else {
        TimestampType::CreateTime
    }
}

/// One whole batch inside a larger buffer, its CRC already verified.
#[derive(Debug, Clone, Copy)]
pub struct RawBatch<'a> {
    pub header: BatchHeader,
    /// The whole batch, header included.
    pub bytes: &'a [u8],
    /// Where the batch starts in the buffer it was split from.
    pub position: usize,
}

/// Splits concatenated batches (a segment file's contents) and verifies each one's magic,
/// length and CRC. Stops at the first bad batch: a segment handed to tiering is sealed, so a
/// damaged batch is corruption, never a torn tail to skip.
pub fn split_batches(buf: &[u8]) -> SplitBatches<'_> {
    SplitBatches {
        buf,
        position: 0,
        failed: false,
    }
}

pub struct SplitBatches<'a> {
    buf: &'a [u8],
    position: usize,
    failed: bool,
}

impl<'a> Iterator for SplitBatches<'a> {
    type Item = Result<RawBatch<'a>, BatchError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.position == self.buf.len() {
            return None;
        }
        let result = check_batch(self.buf, self.position);
        match &result {
            Ok(raw) => self.position += raw.bytes.len(),
            Err(_) => self.failed = true,
        }
        Some(result)
    }
}

fn check_batch(buf: &[u8], position: usize) -> Result<RawBatch<'_>, BatchError> {
    let rest = &buf[position..];
    let base_offset = (rest.len() >= 8).then(|| be_i64(rest, 0));
    if rest.len() < HEADER_LEN {
        return Err(BatchError::Truncated {
            position,
            base_offset,
            needed: HEADER_LEN,
            available: rest.len(),
        });
    }
    let header = BatchHeader::parse(rest);
    let base_offset = header.base_offset;
    if header.magic != MAGIC_V2 {
        return Err(BatchError::UnsupportedMagic {
            base_offset,
            magic: header.magic,
        });
    }
    if header.batch_length < (HEADER_LEN - LOG_OVERHEAD) as i32 {
        return Err(BatchError::InvalidLength {
            base_offset,
            batch_length: header.batch_length,
        });
    }
    let size = LOG_OVERHEAD + header.batch_length as usize;
    if rest.len() < size {
        return Err(BatchError::Truncated {
            position,
            base_offset: Some(base_offset),
            needed: size,
            available: rest.len(),
        });
    }
    let bytes = &rest[..size];
    let computed = crc32c::crc32c(&bytes[ATTRIBUTES_AT..]);
    if computed != header.crc {
        return Err(BatchError::CrcMismatch {
            base_offset,
            stored: header.crc,
            computed,
        });
    }
    if header.last_offset_delta < 0 || header.records_count < 0 {
        return Err(BatchError::Invalid {
            base_offset,
            reason: "negative lastOffsetDelta or recordsCount",
        });
    }
    Ok(RawBatch {
        header,
        bytes,
        position,
    })
}

/// A batch with its records decoded. Header fields are kept as stored, so encoding with the
/// original codec reproduces the original bytes (for uncompressed batches exactly; compressed
/// ones get the same records section, compressed by our codec implementation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    pub base_offset: i64,
    pub partition_leader_epoch: i32,
    /// As stored, codec bits included; [`Batch::encode`] replaces the codec bits.
    pub attributes: i16,
    pub last_offset_delta: i32,
    pub base_timestamp: i64,
    pub max_timestamp: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub records: Vec<Record>,
}

impl Batch {
    /// Decodes a CRC-checked batch: decompresses its records and parses every one of them.
    pub fn decode(raw: &RawBatch<'_>) -> Result<Batch, BatchError> {
        let h = raw.header;
        let codec = Codec::from_attributes(h.attributes).ok_or(BatchError::UnknownCodec {
            base_offset: h.base_offset,
            id: h.attributes & 0x07,
        })?;
        let section = Bytes::copy_from_slice(&raw.bytes[HEADER_LEN..]);
        let section = codec.decompress(section, h.base_offset)?;
        let records =
            record::decode_records(&section, h.records_count as usize).map_err(|source| {
                BatchError::Records {
                    base_offset: h.base_offset,
                    source,
                }
            })?;
        let batch = Batch {
            base_offset: h.base_offset,
            partition_leader_epoch: h.partition_leader_epoch,
            attributes: h.attributes,
            last_offset_delta: h.last_offset_delta,
            base_timestamp: h.base_timestamp,
            max_timestamp: h.max_timestamp,
            producer_id: h.producer_id,
            producer_epoch: h.producer_epoch,
            base_sequence: h.base_sequence,
            records,
        };
        batch.check_offsets()?;
        Ok(batch)
    }

    /// Offsets strictly increase and stay within `[base_offset, last offset]`; the Parquet
    /// table and the manifest rely on it.
    fn check_offsets(&self) -> Result<(), BatchError> {
        let mut previous: Option<i32> = None;
        for r in &self.records {
            if r.offset_delta < 0
                || r.offset_delta > self.last_offset_delta
                || previous.is_some_and(|p| r.offset_delta <= p)
            {
                return Err(BatchError::Invalid {
                    base_offset: self.base_offset,
                    reason: "record offsets are not increasing within the batch's offset range",
                });
            }
            previous = Some(r.offset_delta);
        }
        Ok(())
    }

    pub fn last_offset(&self) -> i64 {
        self.base_offset + i64::from(self.last_offset_delta)
    }

    pub fn timestamp_type(&self) -> TimestampType {
        timestamp_type(self.attributes)
    }

    pub fn is_control(&self) -> bool {
        self.attributes & CONTROL_FLAG != 0
    }

    pub fn offset_of(&self, r: &Record) -> i64 {
        self.base_offset + i64::from(r.offset_delta)
    }

    /// The timestamp a consumer sees: with LogAppendTime every record carries the batch's
    /// max timestamp (the append time), whatever its stored delta says.
    pub fn timestamp_of(&self, r: &Record) -> i64 {
        match self.timestamp_type() {
            TimestampType::LogAppendTime => self.max_timestamp,
            TimestampType::CreateTime => self.base_timestamp.wrapping_add(r.timestamp_delta),
        }
    }

    /// The record's producer sequence, as Kafka computes it (wrapping past i32::MAX to 0).
    pub fn sequence_of(&self, r: &Record) -> i32 {
        sequence_at(self.base_sequence, r.offset_delta)
    }

    /// Encodes the batch with `codec`, appending it to `out`. The CRC is computed; the codec
    /// bits of `attributes` are replaced, every other field is written as held.
    pub fn encode(&self, codec: Codec, out: &mut Vec<u8>) -> Result<(), BatchError> {
        let mut raw = Vec::new();
        for r in &self.records {
            r.encode(&mut raw);
        }
        let start = out.len();
        out.reserve(HEADER_LEN + raw.len());
        out.extend_from_slice(&self.base_offset.to_be_bytes());
        out.extend_from_slice(&[0; 4]); // batchLength, filled below
        out.extend_from_slice(&self.partition_leader_epoch.to_be_bytes());
        out.push(MAGIC_V2 as u8);
        out.extend_from_slice(&[0; 4]); // crc, filled below
        let attributes = (self.attributes & !0x07) | codec.id();
        out.extend_from_slice(&attributes.to_be_bytes());
        out.extend_from_slice(&self.last_offset_delta.to_be_bytes());
        out.extend_from_slice(&self.base_timestamp.to_be_bytes());
        out.extend_from_slice(&self.max_timestamp.to_be_bytes());
        out.extend_from_slice(&self.producer_id.to_be_bytes());
        out.extend_from_slice(&self.producer_epoch.to_be_bytes());
        out.extend_from_slice(&self.base_sequence.to_be_bytes());
        let count = i32::try_from(self.records.len()).map_err(|_| BatchError::TooLarge {
            base_offset: self.base_offset,
            size: self.records.len(),
        })?;
        out.extend_from_slice(&count.to_be_bytes());
        if let Err(e) = codec.compress(&raw, out) {
            out.truncate(start);
            return Err(e);
        }
        let size = out.len() - start;
        let Ok(batch_length) = i32::try_from(size - LOG_OVERHEAD) else {
            out.truncate(start);
            return Err(BatchError::TooLarge {
                base_offset: self.base_offset,
                size,
            });
        };
        out[start + 8..start + 12].copy_from_slice(&batch_length.to_be_bytes());
        let crc = crc32c::crc32c(&out[start + ATTRIBUTES_AT..]);
        out[start + CRC_AT..start + CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
        Ok(())
    }
}

/// Kafka's `DefaultRecordBatch.incrementSequence`: sequences wrap from i32::MAX to 0, and a
/// batch without a sequence gives every record "no sequence".
pub fn sequence_at(base_sequence: i32, offset_delta: i32) -> i32 {
    if base_sequence == NO_SEQUENCE {
        return NO_SEQUENCE;
    }
    if base_sequence > i32::MAX - offset_delta {
        offset_delta - (i32::MAX - base_sequence) - 1
    } else {
        base_sequence + offset_delta
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(records: usize) -> Batch {
        Batch {
            base_offset: 100,
            partition_leader_epoch: 3,
            attributes: 0,
            last_offset_delta: records as i32 - 1,
            base_timestamp: 1_700_000_000_000,
            max_timestamp: 1_700_000_000_009,
            producer_id: 7,
            producer_epoch: 1,
            base_sequence: 40,
            records: (0..records)
                .map(|i| Record {
                    attributes: 0,
                    timestamp_delta: i as i64,
                    offset_delta: i as i32,
                    key: Some(Bytes::from(format!("k{i}"))),
                    value: Some(Bytes::from(format!("v{i}"))),
                    headers: vec![],
                })
                .collect(),
        }
    }

    #[test]
    fn encode_then_split_and_decode() {
        let mut buf = Vec::new();
        batch(3).encode(Codec::None, &mut buf).unwrap();
        let mut b2 = batch(2);
        b2.base_offset = 103;
        b2.encode(Codec::Zstd, &mut buf).unwrap();
        let raws: Vec<_> = split_batches(&buf).collect::<Result<_, _>>().unwrap();
        assert_eq!(raws.len(), 2);
        assert_eq!(raws[1].header.base_offset, 103);
        assert_eq!(raws[1].header.attributes & 7, 4);
        assert_eq!(Batch::decode(&raws[0]).unwrap(), batch(3));
        let mut expect = b2;
        expect.attributes = 4;
        assert_eq!(Batch::decode(&raws[1]).unwrap(), expect);
    }

    #[test]
    fn crc_failure_names_the_offset() {
        let mut buf = Vec::new();
        batch(2).encode(Codec::None, &mut buf).unwrap();
        let last = buf.len() - 1;
        buf[last] ^= 1;
        let err = split_batches(&buf).next().unwrap().unwrap_err();
        assert!(matches!(
            err,
            BatchError::CrcMismatch {
                base_offset: 100,
                ..
            }
        ));
        assert!(err.to_string().contains("offset 100"), "{err}");
    }

    #[test]
    fn truncated_and_bad_magic() {
        let mut buf = Vec::new();
        batch(2).encode(Codec::None, &mut buf).unwrap();
        let err = split_batches(&buf[..buf.len() - 1])
            .next()
            .unwrap()
            .unwrap_err();
        assert!(matches!(
            err,
            BatchError::Truncated {
                base_offset: Some(100),
                ..
            }
        ));
        let mut v1 = buf.clone();
        v1[MAGIC_AT] = 1;
        let err = split_batches(&v1).next().unwrap().unwrap_err();
        assert!(matches!(err, BatchError::UnsupportedMagic { magic: 1, .. }));
        // Nothing is yielded after the first error.
        let mut two = buf.clone();
        two.extend_from_slice(&v1);
        assert_eq!(split_batches(&two).count(), 2);
    }

    #[test]
    fn sequences_wrap_like_kafka() {
        assert_eq!(sequence_at(5, 3), 8);
        assert_eq!(sequence_at(NO_SEQUENCE, 3), NO_SEQUENCE);
        assert_eq!(sequence_at(i32::MAX, 0), i32::MAX);
        assert_eq!(sequence_at(i32::MAX, 1), 0);
        assert_eq!(sequence_at(i32::MAX - 1, 3), 1);
    }

    #[test]
    fn log_append_time_records_see_the_batch_max_timestamp() {
        let mut b = batch(2);
        assert_eq!(b.timestamp_of(&b.records[1]), 1_700_000_000_001);
        b.attributes |= TIMESTAMP_TYPE_FLAG;
        assert_eq!(b.timestamp_of(&b.records[1]), 1_700_000_000_009);
    }
}
