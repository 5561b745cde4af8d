//! Fetch responses whose record sets are sent from the segment files (Kafka's zero-copy
//! fetch): the response is encoded with the kafka-protocol codecs as usual, each such record
//! set standing in as a short random marker, and the encoded frame is then cut at the markers
//! into the encoded pieces and the file ranges to send between them (`sendfile`; see
//! `server::connection`). The records are never read into the broker's memory, and the
//! encoding stays the codecs' own for every version.

use bytes::{BufMut, Bytes, BytesMut};

use crate::log::FileRegion;

/// Bytes of a record set's stand-in.
const MARKER_LEN: usize = 16;

/// A record set's stand-in while the response is encoded: random, so no other bytes of the
/// response (topic names, offsets) can be taken for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Marker([u8; MARKER_LEN]);

impl Marker {
    pub fn random() -> Self {
        Self(*uuid::Uuid::new_v4().as_bytes())
    }

    /// What the response carries as the record set while it is encoded.
    pub fn records(&self) -> Bytes {
        Bytes::copy_from_slice(&self.0)
    }
}

/// One piece of a response frame on the wire.
#[derive(Debug)]
pub enum Chunk {
    Bytes(Bytes),
    File(FileRegion),
}

/// Cuts an encoded response frame (size prefix included) at its record-set markers, in the
/// order given, which must be the order they were encoded in. `flexible`: the response
/// version encodes record sets as compact bytes (an unsigned varint of length + 1) rather
/// than an int32 length. The frame's size prefix is rewritten for the real record sets.
pub fn splice(
    frame: &[u8],
    flexible: bool,
    regions: Vec<(Marker, FileRegion)>,
) -> Result<Vec<Chunk>, String> {
    let placeholder = length_prefix(MARKER_LEN, flexible);
    let size = regions
        .iter()
        .fold(frame.len() as u64 - 4, |size, (_, region)| {
            let prefix = length_prefix(region.len, flexible).len();
            size - (placeholder.len() + MARKER_LEN) as u64 + (prefix + region.len) as u64
        });
    let size = i32::try_from(size).map_err(|_| "response larger than 2 GiB".to_string())?;
    let mut chunks = Vec::with_capacity(2 * regions.len() + 1);
    let mut piece = BytesMut::with_capacity(frame.len());
    piece.put_i32(size);
    let mut at = 4;
    for (marker, region) in regions {
        let found = frame[at..]
            .windows(MARKER_LEN)
            .position(|w| w == marker.0)
            .map(|i| at + i)
            .ok_or("a record set's marker is missing from the encoded response")?;
        let prefix_at = found
            .checked_sub(placeholder.len())
            .filter(|&p| p >= at && frame[p..found] == placeholder[..])
            .ok_or("a record set's marker is not preceded by its length")?;
        piece.extend_from_slice(&frame[at..prefix_at]);
        piece.extend_from_slice(&length_prefix(region.len, flexible));
        chunks.push(Chunk::Bytes(piece.split().freeze()));
        chunks.push(Chunk::File(region));
        at = found + MARKER_LEN;
    }
    piece.extend_from_slice(&frame[at..]);
    chunks.push(Chunk::Bytes(piece.freeze()));
    Ok(chunks)
}

/// How a record set of `len` bytes announces its length.
fn length_prefix(len: usize, flexible: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(5);
    if flexible {
        let mut v = len as u64 + 1;
        while v >= 0x80 {
            out.push((v as u8 & 0x7f) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    } else {
        out.extend_from_slice(&(len as i32).to_be_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::Arc;

    use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
    use kafka_protocol::messages::{FetchResponse, TopicName};
    use kafka_protocol::protocol::StrBytes;

    use super::*;
    use crate::log::segment::test_region;

    fn response(version: i16, records: &[Option<Bytes>]) -> FetchResponse {
        let partitions = records
            .iter()
            .enumerate()
            .map(|(i, r)| {
                PartitionData::default()
                    .with_partition_index(i as i32)
                    .with_high_watermark(1000 + i as i64)
                    .with_records(r.clone())
            })
            .collect();
        let mut topic = FetchableTopicResponse::default()
            .with_topic_id(uuid::Uuid::from_u128(7))
            .with_partitions(partitions);
        if version < 13 {
            topic = topic.with_topic(TopicName(StrBytes::from_static_str("orders")));
        }
        FetchResponse::default().with_responses(vec![topic])
    }

    /// The encoded frame of a Fetch response carrying `records`.
    fn fetch_frame(version: i16, records: &[Option<Bytes>]) -> Bytes {
        let api = kafka_protocol::messages::ApiKey::Fetch;
        super::super::encode_frame(api, version, 42, &response(version, records)).unwrap()
    }

    /// The spliced frame, with each file region's bytes read back in.
    fn wire(chunks: &[Chunk]) -> Vec<u8> {
        let mut out = Vec::new();
        for c in chunks {
            match c {
                Chunk::Bytes(b) => out.extend_from_slice(b),
                Chunk::File(r) => {
                    let mut buf = vec![0; r.len];
                    std::os::unix::fs::FileExt::read_exact_at(&*r.file, &mut buf, r.pos).unwrap();
                    out.extend_from_slice(&buf);
                }
            }
        }
        out
    }

    #[test]
    fn spliced_frames_are_the_codecs_own_encoding_in_every_fetch_version() {
        let dir = tempfile::tempdir().unwrap();
        let mut f = std::fs::File::create(dir.path().join("seg")).unwrap();
        // Record sets around the varint boundaries of compact lengths (127, 16383 + 1).
        let sizes = [0usize, 1, 126, 127, 300, 16383, 70_000];
        let data: Vec<u8> = (0..sizes.iter().sum::<usize>() + 10)
            .map(|i| (i * 31) as u8)
            .collect();
        f.write_all(&data).unwrap();
        let file = Arc::new(std::fs::File::open(dir.path().join("seg")).unwrap());
        for version in 4..=16i16 {
            let mut pos = 5usize;
            let mut real = Vec::new();
            let mut stand_in = Vec::new();
            let mut regions = Vec::new();
            for (i, &len) in sizes.iter().enumerate() {
                // Every other partition carries bytes already in memory, as a copied read.
                if i % 2 == 1 {
                    let b = Bytes::copy_from_slice(&data[pos..pos + len]);
                    real.push(Some(b.clone()));
                    stand_in.push(Some(b));
                } else {
                    let marker = Marker::random();
                    real.push(Some(Bytes::copy_from_slice(&data[pos..pos + len])));
                    stand_in.push(Some(marker.records()));
                    regions.push((marker, test_region(file.clone(), pos as u64, len)));
                }
                pos += len;
            }
            real.push(None);
            stand_in.push(None);
            let expected = fetch_frame(version, &real);
            let frame = fetch_frame(version, &stand_in);
            let chunks = splice(&frame, version >= 12, regions).unwrap();
            assert_eq!(wire(&chunks), &expected[..], "fetch v{version}");
        }
    }

    #[test]
    fn a_missing_marker_is_an_error_not_a_wrong_frame() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("seg"), b"0123456789").unwrap();
        let file = Arc::new(std::fs::File::open(dir.path().join("seg")).unwrap());
        let frame = fetch_frame(12, &[Some(Bytes::from_static(b"abc"))]);
        let err = splice(
            &frame,
            true,
            vec![(Marker::random(), test_region(file, 0, 4))],
        )
        .unwrap_err();
        assert!(err.contains("missing"), "{err}");
    }

    #[test]
    fn compact_lengths_are_unsigned_varints_of_length_plus_one() {
        assert_eq!(length_prefix(0, true), [1]);
        assert_eq!(length_prefix(126, true), [127]);
        assert_eq!(length_prefix(127, true), [0x80, 1]);
        assert_eq!(length_prefix(1 << 20, true), [0x81, 0x80, 0x40]);
        assert_eq!(length_prefix(300, false), [0, 0, 1, 44]);
    }
}
