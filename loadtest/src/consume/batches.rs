//! Reading the `records` of a Fetch response without decompressing anything: find the complete
//! record batches (a broker may cut the last one short at the size limit), and take each batch's
//! record count and offsets from its header via `RecordBatchDecoder::decode_batch_info`.
//!
//! Only the 12-byte frame in front of every batch (base offset, length) and the last-offset
//! delta are read here directly; they locate batches, the codec reads them.

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use kafka_protocol::records::RecordBatchDecoder;

/// Base offset (8) + batch length (4): what precedes every batch's counted length.
const FRAME: usize = 12;
/// Where the magic byte sits: base offset, length, partition leader epoch.
const MAGIC_AT: usize = 16;
/// Where lastOffsetDelta sits: ... magic (1), crc (4), attributes (2).
const LAST_OFFSET_DELTA_AT: usize = 23;
/// Where the attributes sit: ... magic (1), crc (4).
const ATTRIBUTES_AT: usize = 21;
/// The fixed part of a v2 batch header.
const HEADER: usize = 61;

/// One complete batch as fetched.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    /// The whole batch, frame included (what `RecordBatchDecoder::decode` takes).
    pub data: Bytes,
    pub base_offset: i64,
    pub last_offset: i64,
    /// Records in the batch (0 for control batches, which carry no user records).
    pub records: u32,
}

/// The batch length field of the batch at the front of `b` (at least `FRAME` bytes).
fn batch_length(b: &[u8]) -> i32 {
    i32::from_be_bytes(b[8..FRAME].try_into().expect("4 bytes"))
}

/// The lastOffsetDelta of the batch at the front of `b` (at least a header's bytes).
fn last_offset_delta(b: &[u8]) -> i32 {
    i32::from_be_bytes(
        b[LAST_OFFSET_DELTA_AT..LAST_OFFSET_DELTA_AT + 4]
            .try_into()
            .expect("4 bytes"),
    )
}

/// Where the next fetch of a partition starts after `records` fetched at `offset`: past the
/// last complete batch, read from the batch frames alone (no CRC, no decoding), so the next
/// fetch can go out before this one is checked. A malformed frame stops the walk there; the
/// full check ([`complete_batches`]) reports it.
pub fn next_offset(records: &[u8], offset: i64) -> i64 {
    let mut next = offset;
    let mut at = 0usize;
    while records.len() - at >= HEADER {
        let b = &records[at..];
        let base = i64::from_be_bytes(b[..8].try_into().expect("8 bytes"));
        let len = batch_length(b);
        let delta = last_offset_delta(b);
        if len < (HEADER - FRAME) as i32 || delta < 0 || b.len() < FRAME + len as usize {
            break;
        }
        next = next.max(base + i64::from(delta) + 1);
        at += FRAME + len as usize;
    }
    next
}

/// The complete batches at the front of `records`; a truncated tail is left for the next fetch.
pub fn complete_batches(records: &Bytes) -> Result<Vec<Batch>> {
    let mut out = Vec::new();
    let mut at = 0usize;
    while records.len() - at >= FRAME {
        let b = &records[at..];
        let len = batch_length(b);
        if len < (HEADER - FRAME) as i32 {
            bail!("record batch at byte {at} declares {len} bytes, less than a batch header");
        }
        let total = FRAME + len as usize;
        if b.len() < total {
            break; // cut short by the broker's size limit
        }
        if b[MAGIC_AT] != 2 {
            bail!(
                "record batch at byte {at} has magic {}; only v2 batches are supported",
                b[MAGIC_AT]
            );
        }
        let data = records.slice(at..at + total);
        let info = RecordBatchDecoder::decode_batch_info(&mut data.clone())
            .with_context(|| format!("record batch at byte {at}"))?;
        let info = info.first().context("empty batch info")?;
        let delta = last_offset_delta(b);
        if info.record_count < 0 || delta < 0 {
            bail!(
                "record batch at offset {} has a negative count or delta",
                info.min_offset
            );
        }
        out.push(Batch {
            data,
            base_offset: info.min_offset,
            last_offset: info.min_offset + i64::from(delta),
            records: if info.control {
                0
            } else {
                info.record_count as u32
            },
        });
        at += total;
    }
    Ok(out)
}

impl Batch {
    /// Whether the records are stored uncompressed (attributes bits 0-2 are 0), so
    /// [`values_from`](Self::values_from) can walk them in place.
    pub fn is_plain(&self) -> bool {
        self.data.len() >= HEADER
            && i16::from_be_bytes([self.data[ATTRIBUTES_AT], self.data[ATTRIBUTES_AT + 1]]) & 0x7
                == 0
    }

    /// Calls `f` with the value of every record at or after offset `from` of an uncompressed
    /// batch, walking the records in place (no decoding into owned records, no second CRC
    /// pass: [`complete_batches`] checked it). A null value is passed as empty.
    pub fn values_from(&self, from: i64, mut f: impl FnMut(&[u8])) -> Result<()> {
        if !self.is_plain() {
            bail!("batch at offset {} is compressed", self.base_offset);
        }
        let mut at = HEADER;
        let data = &self.data[..];
        for _ in 0..self.records {
            let len = varint(data, &mut at)?;
            let end = at
                .checked_add(usize::try_from(len).context("negative record length")?)
                .filter(|&e| e <= data.len())
                .context("record runs past its batch")?;
            let mut p = at + 1; // attributes
            varint(data, &mut p)?; // timestamp delta
            let offset_delta = varint(data, &mut p)?;
            let key_len = varint(data, &mut p)?;
            p += usize::try_from(key_len.max(0)).unwrap_or(0);
            let value_len = varint(data, &mut p)?;
            if self.base_offset + offset_delta >= from {
                let value = match usize::try_from(value_len) {
                    Ok(n) => data.get(p..p + n).context("value runs past its record")?,
                    Err(_) => &[][..], // null
                };
                f(value);
            }
            at = end;
        }
        Ok(())
    }
}

/// Reads a zigzag varint (Kafka's record fields) at `*at`, advancing it.
fn varint(data: &[u8], at: &mut usize) -> Result<i64> {
    let mut raw = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *data.get(*at).context("varint runs past its batch")?;
        *at += 1;
        raw |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Ok((raw >> 1) as i64 ^ -((raw & 1) as i64));
        }
    }
    bail!("varint longer than 10 bytes")
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;
    use kafka_protocol::indexmap::IndexMap;
    use kafka_protocol::records::{
        Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
    };

    pub(crate) fn batch(base: i64, n: usize, compression: Compression) -> Bytes {
        let records: Vec<Record> = (0..n)
            .map(|i| Record {
                transactional: false,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: 0,
                producer_id: -1,
                producer_epoch: -1,
                timestamp_type: TimestampType::Creation,
                offset: base + i as i64,
                sequence: i as i32 - 1,
                timestamp: 1_700_000_000_000,
                key: None,
                value: Some(Bytes::from(vec![b'x'; 100])),
                headers: IndexMap::new(),
            })
            .collect();
        let mut buf = BytesMut::new();
        let options = RecordEncodeOptions {
            version: 2,
            compression,
        };
        RecordBatchEncoder::encode(&mut buf, records.iter(), &options).unwrap();
        buf.freeze()
    }

    #[test]
    fn counts_records_from_headers_of_compressed_and_plain_batches() {
        let mut all = BytesMut::new();
        all.extend_from_slice(&batch(0, 10, Compression::None));
        all.extend_from_slice(&batch(10, 250, Compression::Lz4));
        all.extend_from_slice(&batch(260, 1, Compression::Zstd));
        let got = complete_batches(&all.freeze()).unwrap();
        let summary: Vec<(i64, i64, u32)> = got
            .iter()
            .map(|b| (b.base_offset, b.last_offset, b.records))
            .collect();
        assert_eq!(summary, vec![(0, 9, 10), (10, 259, 250), (260, 260, 1)]);
    }

    #[test]
    fn the_next_fetch_starts_past_the_last_complete_batch() {
        let one = batch(100, 5, Compression::None);
        let two = batch(105, 7, Compression::Lz4);
        let mut all = BytesMut::new();
        all.extend_from_slice(&one);
        all.extend_from_slice(&two);
        assert_eq!(next_offset(&all, 100), 112);
        // Asked from inside the first batch; a cut-off second batch is fetched again.
        assert_eq!(next_offset(&all[..all.len() - 3], 102), 105);
        // Nothing complete, or nothing at all: stay put.
        assert_eq!(next_offset(&one[..30], 100), 100);
        assert_eq!(next_offset(&[], 7), 7);
        // A batch before the offset asked for (a broker may resend it) never moves it back.
        assert_eq!(next_offset(&one, 200), 200);
    }

    #[test]
    fn leaves_a_truncated_tail_for_the_next_fetch() {
        let one = batch(0, 5, Compression::None);
        let two = batch(5, 5, Compression::None);
        let mut all = BytesMut::new();
        all.extend_from_slice(&one);
        all.extend_from_slice(&two[..two.len() - 7]);
        let got = complete_batches(&all.freeze()).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].data, one);
        // Fewer bytes than a frame: nothing, no error.
        assert!(complete_batches(&Bytes::from_static(&[0; 11]))
            .unwrap()
            .is_empty());
        assert!(complete_batches(&Bytes::new()).unwrap().is_empty());
    }

    #[test]
    fn walks_values_of_plain_batches_in_place() {
        let mut all = BytesMut::new();
        all.extend_from_slice(&batch(100, 300, Compression::None));
        all.extend_from_slice(&batch(400, 3, Compression::Lz4));
        let got = complete_batches(&all.freeze()).unwrap();
        assert!(got[0].is_plain() && !got[1].is_plain());
        let mut seen = Vec::new();
        got[0].values_from(250, |v| seen.push(v.to_vec())).unwrap();
        assert_eq!(seen.len(), 150, "offsets 250..400");
        assert!(seen.iter().all(|v| v == &vec![b'x'; 100]));
        assert!(got[1].values_from(0, |_| ()).is_err());
    }

    #[test]
    fn reads_zigzag_varints() {
        for v in [
            0i64,
            -1,
            1,
            63,
            -64,
            64,
            300,
            -300,
            i32::MAX as i64,
            i64::MIN,
            i64::MAX,
        ] {
            let mut enc = Vec::new();
            let mut z = ((v << 1) ^ (v >> 63)) as u64;
            while z >= 0x80 {
                enc.push((z as u8) | 0x80);
                z >>= 7;
            }
            enc.push(z as u8);
            let mut at = 0;
            assert_eq!(varint(&enc, &mut at).unwrap(), v);
            assert_eq!(at, enc.len());
        }
        assert!(varint(&[0x80], &mut 0).is_err());
    }

    #[test]
    fn refuses_corrupt_batches() {
        let mut bad = BytesMut::from(&batch(0, 3, Compression::None)[..]);
        let last = bad.len() - 1;
        bad[last] ^= 0xff;
        assert!(complete_batches(&bad.freeze()).is_err(), "crc mismatch");

        let mut old = BytesMut::from(&batch(0, 3, Compression::None)[..]);
        old[MAGIC_AT] = 1;
        assert!(complete_batches(&old.freeze()).is_err(), "magic 1");

        let mut short = BytesMut::from(&batch(0, 3, Compression::None)[..]);
        short[8..12].copy_from_slice(&10i32.to_be_bytes());
        assert!(
            complete_batches(&short.freeze()).is_err(),
            "length below header"
        );
    }
}
