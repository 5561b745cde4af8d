//! One record inside a v2 batch's records section, and the zigzag varints it is made of.
//!
//! Layout: length varint | attributes i8 | timestampDelta varlong | offsetDelta varint |
//! keyLength varint (-1 = null) | key | valueLength varint (-1 = null) | value |
//! headerCount varint | headers (keyLength varint | key | valueLength varint (-1 = null) | value).
//! `length` counts the bytes after itself. Kafka always writes minimal varints; so does this
//! encoder, which is what makes an uncompressed rebuild byte-identical.

use bytes::Bytes;

/// Why a records section could not be parsed. The batch-level error adds the base offset.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordFormatError {
    #[error("records section ends inside record {index}")]
    Truncated { index: usize },
    #[error("varint longer than its type allows in record {index}")]
    VarintOverflow { index: usize },
    #[error("record {index} declares length {declared} but its fields take {actual} bytes")]
    LengthMismatch {
        index: usize,
        declared: i64,
        actual: usize,
    },
    #[error("record {index} has a negative {what} length {len} (only -1, null, is allowed)")]
    NegativeLength {
        index: usize,
        what: &'static str,
        len: i32,
    },
    #[error("{trailing} bytes follow the last declared record")]
    TrailingBytes { trailing: usize },
}

/// One record header. Keys are bytes on the wire (Kafka clients treat them as UTF-8 strings);
/// duplicate keys are legal and their order is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub key: Bytes,
    pub value: Option<Bytes>,
}

/// One record as stored: deltas relative to its batch header, nothing derived.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Unused by Kafka (always 0), kept so a rebuild is exact.
    pub attributes: i8,
    pub timestamp_delta: i64,
    pub offset_delta: i32,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub headers: Vec<Header>,
}

impl Record {
    /// The bytes after the length prefix.
    fn body_len(&self) -> usize {
        let mut n = 1 + varlong_len(self.timestamp_delta) + varint_len(self.offset_delta);
        n += nullable_len(self.key.as_deref());
        n += nullable_len(self.value.as_deref());
        n += varint_len(self.headers.len() as i32);
        for h in &self.headers {
            n += varint_len(h.key.len() as i32) + h.key.len();
            n += nullable_len(h.value.as_deref());
        }
        n
    }

    /// Appends the record, length prefix included.
    pub fn encode(&self, out: &mut Vec<u8>) {
        put_varint(out, self.body_len() as i32);
        out.push(self.attributes as u8);
        put_varlong(out, self.timestamp_delta);
        put_varint(out, self.offset_delta);
        put_nullable(out, self.key.as_deref());
        put_nullable(out, self.value.as_deref());
        put_varint(out, self.headers.len() as i32);
        for h in &self.headers {
            put_varint(out, h.key.len() as i32);
            out.extend_from_slice(&h.key);
            put_nullable(out, h.value.as_deref());
        }
    }
}

/// Parses exactly `count` records from a (decompressed) records section. Keys, values and
/// headers are zero-copy slices of `section`.
pub fn decode_records(section: &Bytes, count: usize) -> Result<Vec<Record>, RecordFormatError> {
    // Each record takes at least 7 bytes, so a corrupt count cannot reserve unbounded memory.
    let mut records = Vec::with_capacity(count.min(section.len() / 7 + 1));
    let mut r = Reader {
        buf: section,
        pos: 0,
        index: 0,
    };
    for index in 0..count {
        r.index = index;
        let declared = r.varint()? as i64;
        let start = r.pos;
        let attributes = r.byte()? as i8;
        let timestamp_delta = r.varlong()?;
        let offset_delta = r.varint()?;
        let key = r.nullable("key")?;
        let value = r.nullable("value")?;
        let header_count = r.varint()?;
        if header_count < 0 {
            return Err(RecordFormatError::NegativeLength {
                index,
                what: "header count",
                len: header_count,
            });
        }
        // Each header takes at least 2 bytes.
        let mut headers = Vec::with_capacity((header_count as usize).min(r.remaining() / 2));
        for _ in 0..header_count {
            let key = r
                .nullable("header key")?
                .ok_or(RecordFormatError::NegativeLength {
                    index,
                    what: "header key",
                    len: -1,
                })?;
            let value = r.nullable("header value")?;
            headers.push(Header { key, value });
        }
        let actual = r.pos - start;
        if declared != actual as i64 {
            return Err(RecordFormatError::LengthMismatch {
                index,
                declared,
                actual,
            });
        }
        records.push(Record {
            attributes,
            timestamp_delta,
            offset_delta,
            key,
            value,
            headers,
        });
    }
    if r.remaining() != 0 {
        return Err(RecordFormatError::TrailingBytes {
            trailing: r.remaining(),
        });
    }
    Ok(records)
}

struct Reader<'a> {
    buf: &'a Bytes,
    pos: usize,
    index: usize,
}

impl Reader<'_> {
    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn byte(&mut self) -> Result<u8, RecordFormatError> {
        let b = *self
            .buf
            .get(self.pos)
            .ok_or(RecordFormatError::Truncated { index: self.index })?;
        self.pos += 1;
        Ok(b)
    }

    fn unsigned(&mut self, max_bytes: u32) -> Result<u64, RecordFormatError> {
        let mut value = 0u64;
        for i in 0..max_bytes {
            let b = self.byte()?;
            value |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(RecordFormatError::VarintOverflow { index: self.index })
    }

    fn varint(&mut self) -> Result<i32, RecordFormatError> {
        let u = self.unsigned(5)?;
        if u > u64::from(u32::MAX) {
            return Err(RecordFormatError::VarintOverflow { index: self.index });
        }
        let u = u as u32;
        Ok((u >> 1) as i32 ^ -((u & 1) as i32))
    }

    fn varlong(&mut self) -> Result<i64, RecordFormatError> {
        let u = self.unsigned(10)?;
        Ok((u >> 1) as i64 ^ -((u & 1) as i64))
    }

    fn nullable(&mut self, what: &'static str) -> Result<Option<Bytes>, RecordFormatError> {
        let len = self.varint()?;
        if len == -1 {
            return Ok(None);
        }
        if len < 0 {
            return Err(RecordFormatError::NegativeLength {
                index: self.index,
                what,
                len,
            });
        }
        let len = len as usize;
        if len > self.remaining() {
            return Err(RecordFormatError::Truncated { index: self.index });
        }
        let bytes = self.buf.slice(self.pos..self.pos + len);
        self.pos += len;
        Ok(Some(bytes))
    }
}

fn zigzag32(v: i32) -> u64 {
    u64::from(((v << 1) ^ (v >> 31)) as u32)
}

fn zigzag64(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unsigned_len(mut u: u64) -> usize {
    let mut n = 1;
    while u >= 0x80 {
        u >>= 7;
        n += 1;
    }
    n
}

fn put_unsigned(out: &mut Vec<u8>, mut u: u64) {
    while u >= 0x80 {
        out.push((u as u8) | 0x80);
        u >>= 7;
    }
    out.push(u as u8);
}

pub(crate) fn varint_len(v: i32) -> usize {
    unsigned_len(zigzag32(v))
}

pub(crate) fn varlong_len(v: i64) -> usize {
    unsigned_len(zigzag64(v))
}

pub(crate) fn put_varint(out: &mut Vec<u8>, v: i32) {
    put_unsigned(out, zigzag32(v));
}

pub(crate) fn put_varlong(out: &mut Vec<u8>, v: i64) {
    put_unsigned(out, zigzag64(v));
}

fn nullable_len(b: Option<&[u8]>) -> usize {
    match b {
        None => varint_len(-1),
        Some(b) => varint_len(b.len() as i32) + b.len(),
    }
}

fn put_nullable(out: &mut Vec<u8>, b: Option<&[u8]>) {
    match b {
        None => put_varint(out, -1),
        Some(b) => {
            put_varint(out, b.len() as i32);
            out.extend_from_slice(b);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Record {
        Record {
            attributes: 0,
            timestamp_delta: -5,
            offset_delta: 3,
            key: None,
            value: Some(Bytes::from_static(b"v")),
            headers: vec![
                Header {
                    key: Bytes::from_static(b"h"),
                    value: None,
                },
                Header {
                    key: Bytes::from_static(b"h"),
                    value: Some(Bytes::new()),
                },
            ],
        }
    }

    #[test]
    fn varints_match_kafka_examples() {
        // Values from Kafka's ByteUtilsTest (zigzag).
        for (v, bytes) in [
            (0i32, vec![0x00u8]),
            (-1, vec![0x01]),
            (1, vec![0x02]),
            (63, vec![0x7e]),
            (-64, vec![0x7f]),
            (64, vec![0x80, 0x01]),
            (i32::MAX, vec![0xfe, 0xff, 0xff, 0xff, 0x0f]),
            (i32::MIN, vec![0xff, 0xff, 0xff, 0xff, 0x0f]),
        ] {
            let mut out = Vec::new();
            put_varint(&mut out, v);
            assert_eq!(out, bytes, "{v}");
            assert_eq!(varint_len(v), bytes.len());
            let b = Bytes::from(bytes);
            let mut r = Reader {
                buf: &b,
                pos: 0,
                index: 0,
            };
            assert_eq!(r.varint().unwrap(), v);
        }
        for v in [0i64, -1, i64::MAX, i64::MIN, 1 << 40] {
            let mut out = Vec::new();
            put_varlong(&mut out, v);
            assert_eq!(varlong_len(v), out.len());
            let b = Bytes::from(out);
            let mut r = Reader {
                buf: &b,
                pos: 0,
                index: 0,
            };
            assert_eq!(r.varlong().unwrap(), v);
        }
    }

    #[test]
    fn record_round_trip_keeps_duplicate_headers_and_nulls() {
        let rec = sample();
        let mut out = Vec::new();
        rec.encode(&mut out);
        rec.encode(&mut out);
        let back = decode_records(&Bytes::from(out), 2).unwrap();
        assert_eq!(back, vec![rec.clone(), rec]);
    }

    #[test]
    fn malformed_sections_are_errors() {
        let mut out = Vec::new();
        sample().encode(&mut out);
        let full = Bytes::from(out.clone());
        assert!(matches!(
            decode_records(&full.slice(..out.len() - 1), 1),
            Err(RecordFormatError::Truncated { .. })
                | Err(RecordFormatError::LengthMismatch { .. })
        ));
        assert!(matches!(
            decode_records(&full, 2),
            Err(RecordFormatError::Truncated { index: 1 })
        ));
        let mut extra = out.clone();
        extra.push(0);
        assert_eq!(
            decode_records(&Bytes::from(extra), 1),
            Err(RecordFormatError::TrailingBytes { trailing: 1 })
        );
        let mut bad_len = out;
        bad_len[0] += 2; // declared length 1 too long
        assert!(decode_records(&Bytes::from(bad_len), 1).is_err());
        let overflow = Bytes::from_static(&[0xff, 0xff, 0xff, 0xff, 0xff, 0x01]);
        assert_eq!(
            decode_records(&overflow, 1),
            Err(RecordFormatError::VarintOverflow { index: 0 })
        );
        // A huge declared count over a tiny section fails without a huge allocation.
        assert!(decode_records(&Bytes::from_static(&[0x00]), usize::MAX >> 8).is_err());
    }
}
