//! Batching records per partition: the pure part of a producer.
//!
//! Records go to one "sticky" partition until its batch is full (`batch_size_bytes`, as Kafka's
//! `batch.size`) or has waited `linger_ns`; then the batch is closed and the next partition
//! becomes sticky. So at most one batch is open at a time, every closed batch is as large as the
//! load allows, and partitions are filled round-robin. Times are ns since the run's start,
//! passed in, so this is tested without a clock.
//!
//! Invariant: a closed batch has at least one record, and its records' enqueue times are
//! non-decreasing (they are the order records were appended).

use anyhow::{Context, Result};
use bytes::Bytes;
use kafka_protocol::indexmap::IndexMap;
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};

/// Bytes of a v2 batch header (the frame included).
pub const BATCH_HEADER_BYTES: usize = 61;

/// A batch that is ready to send.
#[derive(Debug, Clone, PartialEq)]
pub struct Closed {
    pub partition: i32,
    pub values: Vec<Bytes>,
    /// (enqueue time in ns since start, records enqueued then): run-length encoded, since
    /// records appended in one burst share a time.
    pub enqueued: Vec<(u64, u32)>,
    /// Sum of the value sizes (what the reports count as bytes sent).
    pub payload_bytes: u64,
    /// Size of the uncompressed encoded batch.
    pub encoded_bytes: usize,
}

impl Closed {
    pub fn records(&self) -> usize {
        self.values.len()
    }
}

#[derive(Debug)]
struct Open {
    batch: Closed,
    first_ns: u64,
}

#[derive(Debug)]
pub struct Accumulator {
    partitions: Vec<i32>,
    sticky: usize,
    batch_size_bytes: usize,
    linger_ns: u64,
    open: Option<Open>,
}

fn varint_len(v: i64) -> usize {
    // Zig-zag, then 7 bits per byte.
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    let mut n = 1;
    while z >= 0x80 {
        z >>= 7;
        n += 1;
    }
    n
}

/// Encoded size of a record with no key and no headers, sharing the batch's timestamp.
pub fn record_bytes(offset_delta: usize, value_len: usize) -> usize {
    let body = 1 // attributes
        + varint_len(0) // timestamp delta
        + varint_len(offset_delta as i64)
        + varint_len(-1) // null key
        + varint_len(value_len as i64)
        + value_len
        + varint_len(0); // header count
    varint_len(body as i64) + body
}

impl Accumulator {
    /// `partitions` must be non-empty.
    pub fn new(partitions: Vec<i32>, batch_size_bytes: usize, linger_ns: u64) -> Self {
        assert!(!partitions.is_empty(), "a producer needs a partition");
        Self {
            partitions,
            sticky: 0,
            batch_size_bytes,
            linger_ns,
            open: None,
        }
    }

    /// Appends a record enqueued at `now_ns`; returns the batch it closed, if it filled one.
    pub fn append(&mut self, now_ns: u64, value: Bytes) -> Option<Closed> {
        let partition = self.partitions[self.sticky];
        let open = self.open.get_or_insert_with(|| Open {
            batch: Closed {
                partition,
                values: Vec::new(),
                enqueued: Vec::new(),
                payload_bytes: 0,
                encoded_bytes: BATCH_HEADER_BYTES,
            },
            first_ns: now_ns,
        });
        let b = &mut open.batch;
        let len = value.len();
        b.encoded_bytes += record_bytes(b.values.len(), len);
        b.payload_bytes += len as u64;
        b.values.push(value);
        match b.enqueued.last_mut() {
            Some((t, n)) if *t == now_ns => *n += 1,
            _ => b.enqueued.push((now_ns, 1)),
        }
        // Full when one more record of the same size would not fit.
        let next = record_bytes(b.values.len(), len);
        if b.encoded_bytes + next > self.batch_size_bytes {
            return self.close();
        }
        None
    }

    /// When the open batch must be sent even if not full.
    pub fn linger_deadline_ns(&self) -> Option<u64> {
        self.open
            .as_ref()
            .map(|o| o.first_ns.saturating_add(self.linger_ns))
    }

    /// The open batch, if it has lingered long enough by `now_ns`.
    pub fn poll_linger(&mut self, now_ns: u64) -> Option<Closed> {
        match self.linger_deadline_ns() {
            Some(deadline) if deadline <= now_ns => self.close(),
            _ => None,
        }
    }

    /// The open batch regardless of linger (end of the run).
    pub fn close(&mut self) -> Option<Closed> {
        let open = self.open.take()?;
        self.sticky = (self.sticky + 1) % self.partitions.len();
        debug_assert!(!open.batch.values.is_empty());
        debug_assert!(open.batch.enqueued.windows(2).all(|w| w[0].0 < w[1].0));
        Some(open.batch)
    }
}

/// Encodes a closed batch as one v2 record batch (CreateTime `timestamp_ms` for all records).
/// `scratch` is reused between calls to spare the allocation.
pub fn encode(
    batch: &Closed,
    compression: Compression,
    timestamp_ms: i64,
    scratch: &mut Vec<Record>,
) -> Result<Bytes> {
    scratch.clear();
    scratch.extend(batch.values.iter().enumerate().map(|(i, v)| Record {
        transactional: false,
        control: false,
        delete_horizon: false,
        partition_leader_epoch: -1,
        producer_id: -1,
        producer_epoch: -1,
        timestamp_type: TimestampType::Creation,
        offset: i as i64,
        // The encoder keeps records in one batch while offset - sequence is constant; this
        // makes the batch's base sequence -1 (no idempotence).
        sequence: i as i32 - 1,
        timestamp: timestamp_ms,
        key: None,
        value: Some(v.clone()),
        headers: IndexMap::new(),
    }));
    let mut buf = bufpool::take(batch.encoded_bytes);
    let options = RecordEncodeOptions {
        version: 2,
        compression,
    };
    RecordBatchEncoder::encode(&mut buf, scratch.iter(), &options)
        .with_context(|| format!("encoding a batch of {} records", batch.records()))?;
    scratch.clear();
    Ok(bufpool::freeze(buf))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::consume::batches::complete_batches;

    fn value(n: usize) -> Bytes {
        Bytes::from(vec![b'a'; n])
    }

    #[test]
    fn fills_batches_to_the_size_limit_round_robin() {
        let mut acc = Accumulator::new(vec![0, 1, 2], 1000, u64::MAX);
        let mut closed = Vec::new();
        for i in 0..36 {
            if let Some(b) = acc.append(i, value(100)) {
                closed.push(b);
            }
        }
        // 61 + 8 * 109 = 933 bytes; a ninth record would make 1042.
        assert_eq!(record_bytes(5, 100), 109);
        let shape: Vec<(i32, usize)> = closed.iter().map(|b| (b.partition, b.records())).collect();
        assert_eq!(shape, vec![(0, 8), (1, 8), (2, 8), (0, 8)]);
        assert!(closed.iter().all(|b| b.encoded_bytes <= 1000));
        let rest = acc.close().unwrap();
        assert_eq!((rest.partition, rest.records()), (1, 4));
        assert!(acc.close().is_none());
    }

    #[test]
    fn a_record_larger_than_the_batch_size_goes_alone() {
        let mut acc = Accumulator::new(vec![7], 100, u64::MAX);
        let b = acc.append(0, value(500)).expect("closed at once");
        assert_eq!(b.records(), 1);
        assert_eq!(b.partition, 7);
    }

    #[test]
    fn lingers_then_closes_and_moves_on() {
        let mut acc = Accumulator::new(vec![0, 1], 1 << 20, 5_000_000);
        assert_eq!(acc.linger_deadline_ns(), None);
        assert!(acc.append(1_000, value(10)).is_none());
        assert!(acc.append(1_000, value(10)).is_none());
        assert!(acc.append(2_000, value(10)).is_none());
        assert_eq!(acc.linger_deadline_ns(), Some(5_001_000));
        assert!(acc.poll_linger(5_000_999).is_none());
        let b = acc.poll_linger(5_001_000).unwrap();
        assert_eq!(b.enqueued, vec![(1_000, 2), (2_000, 1)]);
        assert_eq!(b.payload_bytes, 30);
        assert_eq!(acc.append(6_000_000, value(10)), None);
        assert_eq!(acc.close().unwrap().partition, 1);
    }

    #[test]
    fn size_estimate_is_the_encoded_size() {
        for (n, len) in [(1, 0), (3, 10), (200, 100), (130, 1024), (1, 70_000)] {
            let mut acc = Accumulator::new(vec![0], usize::MAX, u64::MAX);
            for _ in 0..n {
                acc.append(0, value(len));
            }
            let b = acc.close().unwrap();
            let bytes = encode(&b, Compression::None, 1_700_000_000_000, &mut Vec::new()).unwrap();
            assert_eq!(bytes.len(), b.encoded_bytes, "{n} records of {len} bytes");
        }
    }

    #[test]
    fn encoded_batches_decode_to_the_same_records() {
        for compression in [
            Compression::None,
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ] {
            let mut acc = Accumulator::new(vec![0], usize::MAX, u64::MAX);
            for i in 0..50u8 {
                acc.append(0, Bytes::from(vec![i; 64]));
            }
            let b = acc.close().unwrap();
            let bytes = encode(&b, compression, 42, &mut Vec::new()).unwrap();
            let batches = complete_batches(&bytes).unwrap();
            assert_eq!(batches.len(), 1, "{compression:?}: one batch");
            assert_eq!(batches[0].records, 50);
            assert_eq!(batches[0].last_offset, 49);
            let set =
                kafka_protocol::records::RecordBatchDecoder::decode(&mut bytes.clone()).unwrap();
            let values: Vec<Bytes> = set.records.into_iter().map(|r| r.value.unwrap()).collect();
            assert_eq!(values, b.values, "{compression:?}");
        }
    }
}
