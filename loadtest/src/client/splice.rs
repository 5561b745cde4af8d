//! Produce requests sent without copying their record batches into the request frame.
//!
//! The request is encoded by the codecs with a small marker ([`marker`]) as each partition's
//! records; the encoded frame is then cut at the markers and the batches go between the
//! pieces, each after its real length prefix, so one vectored write sends the frame with
//! every batch read straight from the buffer it was built in. Without this, every byte
//! produced was copied once more, a seventh of the tool's CPU at 1 KiB records.

use anyhow::{bail, Result};
use bytes::{BufMut, Bytes};

/// Bytes of a marker.
pub const MARKER_LEN: usize = 16;

/// The stand-in for the `i`-th record set of a request. Its first twelve bytes are not ASCII
/// and not a plausible run of small integers, so they never occur in the rest of a Produce
/// frame (a header, a topic name and a few small numbers); the last four are `i`.
pub fn marker(i: usize) -> Bytes {
    let mut m = Vec::with_capacity(MARKER_LEN);
    m.extend_from_slice(&[
        0xF5, 0xA3, 0x9C, 0xE1, 0xB7, 0xD4, 0x8E, 0xC2, 0xFA, 0x91, 0xAB, 0xEC,
    ]);
    m.put_u32(i as u32);
    Bytes::from(m)
}

/// Cuts `frame` (size-prefixed, encoded with `marker(i)` as the `i`-th record set) into the
/// pieces of the frame that carries `sets` instead: the size prefix and each set's length
/// prefix are rewritten; everything else is the encoded bytes. `flexible`: the request
/// version uses compact (varint) lengths.
pub fn splice(frame: Bytes, flexible: bool, sets: Vec<Bytes>) -> Result<Vec<Bytes>> {
    if sets.is_empty() {
        return Ok(vec![frame]);
    }
    let mut old_prefix = Vec::new();
    length_prefix(MARKER_LEN, flexible, &mut old_prefix);
    let mut pieces = Vec::with_capacity(2 * sets.len() + 1);
    let mut glue = Vec::with_capacity(64);
    let mut pos = 4;
    for (i, set) in sets.into_iter().enumerate() {
        let m = marker(i);
        let Some(at) = find(&frame[pos..], &m).map(|at| pos + at) else {
            bail!("record set {i} is missing from the encoded request");
        };
        let start = at - old_prefix.len();
        if start < pos || frame[start..at] != old_prefix[..] {
            bail!("record set {i} is not where a record set goes in the encoded request");
        }
        glue.extend_from_slice(&frame[pos..start]);
        length_prefix(set.len(), flexible, &mut glue);
        pieces.push(Bytes::from(std::mem::take(&mut glue)));
        pieces.push(set);
        pos = at + MARKER_LEN;
    }
    pieces.push(frame.slice(pos..));
    let size: usize = pieces.iter().map(Bytes::len).sum();
    let Ok(size) = i32::try_from(size) else {
        bail!("request of {size} bytes is too large for a frame");
    };
    let mut first = Vec::with_capacity(4 + pieces[0].len());
    first.put_i32(size);
    first.extend_from_slice(&pieces[0]);
    pieces[0] = Bytes::from(first);
    Ok(pieces)
}

/// A bytes field's length as the request version writes it: compact (unsigned varint of the
/// length + 1) or a 32-bit integer.
fn length_prefix(len: usize, flexible: bool, out: &mut Vec<u8>) {
    if flexible {
        put_uvarint(len as u64 + 1, out);
    } else {
        out.put_i32(len as i32);
    }
}

fn put_uvarint(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
    use kafka_protocol::messages::{ProduceRequest, RequestHeader, TopicName};
    use kafka_protocol::protocol::{Encodable, HeaderVersion, StrBytes};

    fn request(sets: &[Bytes]) -> ProduceRequest {
        let partitions = sets
            .iter()
            .enumerate()
            .map(|(i, s)| {
                PartitionProduceData::default()
                    .with_index(i as i32 * 7)
                    .with_records(Some(s.clone()))
            })
            .collect();
        ProduceRequest::default()
            .with_acks(-1)
            .with_timeout_ms(30_000)
            .with_topic_data(vec![TopicProduceData::default()
                .with_name(TopicName(StrBytes::from_static_str("load-test_topic.1")))
                .with_partition_data(partitions)])
    }

    fn encode(req: &ProduceRequest, version: i16) -> Bytes {
        let header = RequestHeader::default()
            .with_request_api_key(0)
            .with_request_api_version(version)
            .with_correlation_id(42)
            .with_client_id(Some(StrBytes::from_static_str("strata-loadtest")));
        let hv = ProduceRequest::header_version(version);
        let size = header.compute_size(hv).unwrap() + req.compute_size(version).unwrap();
        let mut buf = Vec::new();
        buf.put_i32(size as i32);
        header.encode(&mut buf, hv).unwrap();
        req.encode(&mut buf, version).unwrap();
        Bytes::from(buf)
    }

    #[test]
    fn spliced_frames_are_the_encoded_frames() {
        // Lengths either side of the varint steps (127/128 and 16383/16384 after the +1).
        let lengths = [
            0usize,
            1,
            15,
            16,
            17,
            126,
            127,
            128,
            16_382,
            16_383,
            16_384,
            1 << 20,
        ];
        for version in 3..=11 {
            let flexible = ProduceRequest::header_version(version) >= 2;
            for n in 1..=3 {
                for (k, _) in lengths.iter().enumerate() {
                    let sets: Vec<Bytes> = (0..n)
                        .map(|i| {
                            let len = lengths[(k + i) % lengths.len()];
                            Bytes::from((0..len).map(|b| (b * 31 + i) as u8).collect::<Vec<_>>())
                        })
                        .collect();
                    let want = encode(&request(&sets), version);
                    let markers: Vec<Bytes> = (0..n).map(marker).collect();
                    let pieces =
                        splice(encode(&request(&markers), version), flexible, sets).unwrap();
                    assert_eq!(pieces.concat(), want[..], "v{version}, {n} sets from {k}");
                }
            }
        }
    }

    #[test]
    fn a_missing_marker_is_an_error() {
        let sets = vec![Bytes::from_static(b"abc")];
        let frame = encode(&request(&sets), 9);
        assert!(splice(frame, true, sets).is_err());
    }
}
