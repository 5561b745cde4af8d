//! Builders for real v2 record batches (uncompressed, varint-encoded records) used by the
//! log's unit tests. Test-only.

use super::batch::{BatchHeader, HEADER_LEN, LOG_OVERHEAD};

fn put_varlong(out: &mut Vec<u8>, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    loop {
        let byte = (z & 0x7f) as u8;
        z >>= 7;
        if z == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

fn put_bytes(out: &mut Vec<u8>, b: Option<&[u8]>) {
    match b {
        None => put_varlong(out, -1),
        Some(b) => {
            put_varlong(out, b.len() as i64);
            out.extend_from_slice(b);
        }
    }
}

/// A record's key and value.
pub(crate) type Record<'a> = (Option<&'a [u8]>, Option<&'a [u8]>);

/// A producer-style batch (base offset 0, no producer id) whose records all carry `ts`.
pub(crate) fn test_batch(records: &[Record<'_>], ts: i64) -> Vec<u8> {
    test_batch_with(records, ts, |_| {})
}

/// Like [`test_batch`], letting the test bend header fields before the length and CRC are
/// filled in.
pub(crate) fn test_batch_with(
    records: &[Record<'_>],
    ts: i64,
    mutate: impl FnOnce(&mut BatchHeader),
) -> Vec<u8> {
    let mut body = Vec::new();
    for (i, (key, value)) in records.iter().enumerate() {
        let mut rec = vec![0u8]; // attributes
        put_varlong(&mut rec, 0); // timestamp delta
        put_varlong(&mut rec, i as i64); // offset delta
        put_bytes(&mut rec, *key);
        put_bytes(&mut rec, *value);
        put_varlong(&mut rec, 0); // headers
        put_varlong(&mut body, rec.len() as i64);
        body.extend_from_slice(&rec);
    }
    let mut h = BatchHeader {
        base_offset: 0,
        batch_length: 0,
        partition_leader_epoch: -1,
        magic: 2,
        crc: 0,
        attributes: 0,
        last_offset_delta: records.len() as i32 - 1,
        base_timestamp: ts,
        max_timestamp: ts,
        producer_id: -1,
        producer_epoch: -1,
        base_sequence: -1,
        records_count: records.len() as i32,
    };
    mutate(&mut h);
    h.batch_length = (HEADER_LEN - LOG_OVERHEAD + body.len()) as i32;
    let mut out = Vec::with_capacity(HEADER_LEN + body.len());
    out.extend_from_slice(&h.base_offset.to_be_bytes());
    out.extend_from_slice(&h.batch_length.to_be_bytes());
    out.extend_from_slice(&h.partition_leader_epoch.to_be_bytes());
    out.push(h.magic as u8);
    out.extend_from_slice(&[0u8; 4]); // CRC, filled below
    out.extend_from_slice(&h.attributes.to_be_bytes());
    out.extend_from_slice(&h.last_offset_delta.to_be_bytes());
    out.extend_from_slice(&h.base_timestamp.to_be_bytes());
    out.extend_from_slice(&h.max_timestamp.to_be_bytes());
    out.extend_from_slice(&h.producer_id.to_be_bytes());
    out.extend_from_slice(&h.producer_epoch.to_be_bytes());
    out.extend_from_slice(&h.base_sequence.to_be_bytes());
    out.extend_from_slice(&h.records_count.to_be_bytes());
    out.extend_from_slice(&body);
    let crc = super::batch::compute_crc(&out);
    out[17..21].copy_from_slice(&crc.to_be_bytes());
    out
}

/// A batch of `n` records with `value_len`-byte values at timestamp `ts`.
pub(crate) fn batch_of(n: usize, value_len: usize, ts: i64) -> Vec<u8> {
    let value = vec![b'x'; value_len];
    let recs: Vec<Record<'_>> = (0..n).map(|_| (None, Some(value.as_slice()))).collect();
    test_batch(&recs, ts)
}
