//! Property: random segments -> Parquet -> record batches give back the same records.
//!
//! Inputs are encoded partly by kafka-protocol's `RecordBatchEncoder` (an independent
//! implementation) and partly by this crate's encoder (for what kafka-protocol cannot write:
//! duplicate header keys, a base timestamp that is not the minimum, sequences that wrap,
//! batches whose last offset delta reaches past their last record). Every codec, null keys and
//! values, null header values, control batches (transaction markers), idempotent and
//! transactional producers, and LogAppendTime (patched in as the broker does) are generated.
//!
//! Checks, for each case: kafka-protocol decodes input and output to equal `Record`s (offsets,
//! timestamps, keys, values, headers, producer id/epoch, sequence, control, transactional,
//! timestamp type, leader epoch); this crate's decoder sees equal batches apart from the codec
//! bits (base/max timestamps, last offset delta, base sequence, duplicate headers); every
//! output CRC is valid; uncompressed input rebuilt without recompression is byte-identical; a
//! read from a random offset returns exactly the batches that end at or after it.

use bytes::{Bytes, BytesMut};
use kafka_protocol::indexmap::IndexMap;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{
    Compression, Record as KRecord, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions,
    TimestampType as KTimestampType,
};
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;
use tiering::batch::{split_batches, Batch, Codec, Header, Record, TopicCompression};
use tiering::table::{batches_to_parquet, parquet_to_batches, WriteOptions};

#[derive(Debug, Clone)]
struct RecSpec {
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    headers: Vec<(String, Option<Vec<u8>>)>,
    ts_delta: i64,
    /// Offsets skipped before this record (compaction leaves gaps).
    gap: i32,
}

#[derive(Debug, Clone)]
struct BatchSpec {
    codec: Codec,
    control: bool,
    transactional: bool,
    /// (producer id, epoch, base sequence); `None` for a plain producer.
    producer: Option<(i64, i16, i32)>,
    log_append_time: Option<i64>,
    leader_epoch: i32,
    base_ts: i64,
    records: Vec<RecSpec>,
    /// Offsets after the last record that the batch still spans.
    trailing_gap: i32,
    /// Offsets skipped before this batch.
    gap_before: i64,
    kafka_protocol_encoder: bool,
}

fn codec() -> impl Strategy<Value = Codec> {
    prop::sample::select(Codec::ALL.to_vec())
}

fn bytes(max: usize) -> impl Strategy<Value = Option<Vec<u8>>> {
    prop::option::weighted(0.8, prop::collection::vec(any::<u8>(), 0..max))
}

fn rec() -> impl Strategy<Value = RecSpec> {
    (
        bytes(16),
        bytes(64),
        prop::collection::vec(
            (
                prop::sample::select(vec!["a", "b", "trace", "ключ", ""]).prop_map(String::from),
                bytes(8),
            ),
            0..4,
        ),
        -5_000i64..5_000,
        prop_oneof![4 => Just(0), 1 => 1i32..5],
    )
        .prop_map(|(key, value, headers, ts_delta, gap)| RecSpec {
            key,
            value,
            headers,
            ts_delta,
            gap,
        })
}

fn producer() -> impl Strategy<Value = Option<(i64, i16, i32)>> {
    prop::option::of((
        0i64..1_000,
        0i16..5,
        prop_oneof![0i32..1_000, (i32::MAX - 5)..=i32::MAX],
    ))
}

fn batch_spec() -> impl Strategy<Value = BatchSpec> {
    (
        codec(),
        prop::bool::weighted(0.15),
        any::<bool>(),
        producer(),
        prop::option::weighted(0.2, 1_600_000_000_000i64..1_900_000_000_000),
        0i32..4,
        1_500_000_000_000i64..1_800_000_000_000,
        prop::collection::vec(rec(), 1..8),
        prop_oneof![4 => Just(0), 1 => 1i32..4],
        prop_oneof![4 => Just(0i64), 1 => 1i64..10],
        any::<bool>(),
    )
        .prop_map(
            |(
                codec,
                control,
                transactional,
                producer,
                log_append_time,
                leader_epoch,
                base_ts,
                mut records,
                trailing_gap,
                gap_before,
                kafka_protocol_encoder,
            )| {
                let mut producer = producer;
                let mut transactional = transactional;
                if control {
                    // A transaction marker: one record, key = version + type, value = version +
                    // coordinator epoch, from a transactional producer.
                    let commit = records[0].ts_delta % 2 == 0;
                    records.truncate(1);
                    records[0] = RecSpec {
                        key: Some(vec![0, 0, 0, u8::from(commit)]),
                        value: Some(vec![0, 0, 0, 0, 0, 7]),
                        headers: vec![],
                        ts_delta: 0,
                        gap: 0,
                    };
                    transactional = true;
                    producer.get_or_insert((42, 1, 0));
                }
                if producer.is_none() {
                    transactional = false;
                }
                BatchSpec {
                    codec,
                    control,
                    transactional,
                    producer,
                    log_append_time,
                    leader_epoch,
                    base_ts,
                    records,
                    trailing_gap,
                    gap_before,
                    kafka_protocol_encoder,
                }
            },
        )
}

/// The batch a spec describes, in this crate's model.
fn to_batch(spec: &BatchSpec, base_offset: i64) -> Batch {
    let mut delta = 0i32;
    let mut records = Vec::new();
    for (i, r) in spec.records.iter().enumerate() {
        if i > 0 {
            delta += 1 + r.gap;
        }
        records.push(Record {
            attributes: 0,
            timestamp_delta: r.ts_delta,
            offset_delta: delta,
            key: r.key.clone().map(Bytes::from),
            value: r.value.clone().map(Bytes::from),
            headers: r
                .headers
                .iter()
                .map(|(k, v)| Header {
                    key: Bytes::from(k.clone()),
                    value: v.clone().map(Bytes::from),
                })
                .collect(),
        });
    }
    let (producer_id, producer_epoch, base_sequence) = spec.producer.unwrap_or((-1, -1, -1));
    let mut attributes = spec.codec.id();
    if spec.transactional {
        attributes |= 0x10;
    }
    if spec.control {
        attributes |= 0x20;
    }
    let max_ts = records
        .iter()
        .map(|r| spec.base_ts + r.timestamp_delta)
        .max()
        .unwrap();
    Batch {
        base_offset,
        partition_leader_epoch: spec.leader_epoch,
        attributes,
        last_offset_delta: delta + spec.trailing_gap,
        base_timestamp: spec.base_ts,
        max_timestamp: max_ts,
        producer_id,
        producer_epoch,
        base_sequence,
        records,
    }
}

fn kp_compression(codec: Codec) -> Compression {
    match codec {
        Codec::None => Compression::None,
        Codec::Gzip => Compression::Gzip,
        Codec::Snappy => Compression::Snappy,
        Codec::Lz4 => Compression::Lz4,
        Codec::Zstd => Compression::Zstd,
    }
}

/// Can kafka-protocol's encoder write this batch as one batch with these exact fields?
fn kafka_protocol_can_encode(b: &Batch) -> bool {
    let min_ts = b
        .records
        .iter()
        .map(|r| b.base_timestamp + r.timestamp_delta)
        .min()
        .unwrap();
    let unique_headers = b.records.iter().all(|r| {
        let mut keys: Vec<_> = r.headers.iter().map(|h| &h.key).collect();
        keys.sort();
        keys.dedup();
        keys.len() == r.headers.len()
    });
    let last = b.records.last().unwrap().offset_delta;
    b.records[0].offset_delta == 0
        && last == b.last_offset_delta
        && min_ts == b.base_timestamp
        && unique_headers
        // Its encoder does not wrap sequences the way Kafka does.
        && (b.base_sequence == -1 || b.base_sequence.checked_add(last).is_some())
}

fn encode_with_kafka_protocol(b: &Batch, codec: Codec, out: &mut Vec<u8>) {
    let records: Vec<KRecord> = b
        .records
        .iter()
        .map(|r| KRecord {
            transactional: b.attributes & 0x10 != 0,
            control: b.attributes & 0x20 != 0,
            delete_horizon: false,
            partition_leader_epoch: b.partition_leader_epoch,
            producer_id: b.producer_id,
            producer_epoch: b.producer_epoch,
            timestamp_type: KTimestampType::Creation,
            offset: b.base_offset + i64::from(r.offset_delta),
            sequence: b.base_sequence.wrapping_add(r.offset_delta),
            timestamp: b.base_timestamp + r.timestamp_delta,
            key: r.key.clone(),
            value: r.value.clone(),
            headers: r
                .headers
                .iter()
                .map(|h| {
                    (
                        StrBytes::from_string(String::from_utf8(h.key.to_vec()).unwrap()),
                        h.value.clone(),
                    )
                })
                .collect::<IndexMap<_, _>>(),
        })
        .collect();
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        &records,
        &RecordEncodeOptions {
            version: 2,
            compression: kp_compression(codec),
        },
    )
    .unwrap();
    out.extend_from_slice(&buf);
}

/// What the broker does for a LogAppendTime topic: set the timestamp-type bit and the max
/// timestamp, then fix the CRC.
fn patch_log_append_time(batch: &mut [u8], append_time: i64) {
    let attributes = i16::from_be_bytes([batch[21], batch[22]]) | 0x08;
    batch[21..23].copy_from_slice(&attributes.to_be_bytes());
    batch[35..43].copy_from_slice(&append_time.to_be_bytes());
    let crc = crc32c::crc32c(&batch[21..]);
    batch[17..21].copy_from_slice(&crc.to_be_bytes());
}

/// Encodes the specs as a segment.
fn segment(specs: &[BatchSpec]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut next = 0i64;
    for spec in specs {
        let b = to_batch(spec, next + spec.gap_before);
        next = b.base_offset + i64::from(b.last_offset_delta) + 1;
        let start = out.len();
        if spec.kafka_protocol_encoder && kafka_protocol_can_encode(&b) {
            encode_with_kafka_protocol(&b, spec.codec, &mut out);
        } else {
            b.encode(spec.codec, &mut out).unwrap();
        }
        if let Some(t) = spec.log_append_time {
            patch_log_append_time(&mut out[start..], t);
        }
    }
    out
}

fn decode_ours(buf: &[u8]) -> Vec<Batch> {
    split_batches(buf)
        .map(|raw| Batch::decode(&raw.expect("valid batch, CRC included")).unwrap())
        .collect()
}

fn decode_kafka_protocol(buf: &[u8]) -> Vec<Vec<KRecord>> {
    let mut bytes = Bytes::copy_from_slice(buf);
    RecordBatchDecoder::decode_all(&mut bytes)
        .expect("kafka-protocol decodes (and CRC-checks) every batch")
        .into_iter()
        .map(|set| set.records)
        .collect()
}

fn without_codec(mut b: Batch) -> Batch {
    b.attributes &= !0x07;
    b
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 256,
        // Relative to the package root, where cargo runs integration tests.
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(
            "proptest-regressions/roundtrip.txt"
        ))),
        ..ProptestConfig::default()
    })]

    #[test]
    fn parquet_round_trip_is_lossless(
        specs in prop::collection::vec(batch_spec(), 1..6),
        topic_codec in prop::option::of(codec()),
        row_group_max_rows in 1usize..20,
        from_pick in any::<prop::sample::Index>(),
    ) {
        let input = segment(&specs);
        let options = WriteOptions { row_group_max_rows, ..WriteOptions::default() };
        let (parquet, summary) = batches_to_parquet(&input, &options).unwrap();
        let parquet = Bytes::from(parquet);

        let ours_in = decode_ours(&input);
        let kp_in = decode_kafka_protocol(&input);
        prop_assert_eq!(summary.first_offset, ours_in[0].base_offset);
        prop_assert_eq!(summary.last_offset, ours_in.last().unwrap().last_offset());
        prop_assert_eq!(summary.batches as usize, ours_in.len());
        prop_assert_eq!(
            summary.records as usize,
            ours_in.iter().map(|b| b.records.len()).sum::<usize>()
        );
        let timestamps: Vec<i64> = ours_in
            .iter()
            .flat_map(|b| b.records.iter().map(|r| b.timestamp_of(r)))
            .collect();
        prop_assert_eq!(summary.min_timestamp, *timestamps.iter().min().unwrap());
        prop_assert_eq!(summary.max_timestamp, *timestamps.iter().max().unwrap());

        let compression = match topic_codec {
            None => TopicCompression::Producer,
            Some(c) => TopicCompression::Codec(c),
        };
        let output = parquet_to_batches(parquet.clone(), 0, compression).unwrap();
        let ours_out = decode_ours(&output);
        let kp_out = decode_kafka_protocol(&output);
        prop_assert_eq!(&kp_out, &kp_in);
        prop_assert_eq!(ours_out.len(), ours_in.len());
        for (a, b) in ours_in.iter().zip(&ours_out) {
            let want = topic_codec.unwrap_or(Codec::from_attributes(a.attributes).unwrap());
            prop_assert_eq!(b.attributes & 0x07, want.id());
            prop_assert_eq!(without_codec(a.clone()), without_codec(b.clone()));
        }
        let all_uncompressed = specs.iter().all(|s| s.codec == Codec::None);
        if all_uncompressed && matches!(topic_codec, None | Some(Codec::None)) {
            prop_assert!(output == input, "uncompressed rebuild is not byte-identical");
        }

        // A read from any offset in (or just around) the segment.
        let from = summary.first_offset - 1
            + from_pick.index((summary.last_offset - summary.first_offset + 3) as usize) as i64;
        let partial = parquet_to_batches(parquet, from, compression).unwrap();
        let expected: Vec<Batch> = ours_in
            .iter()
            .filter(|b| b.last_offset() >= from)
            .cloned()
            .map(without_codec)
            .collect();
        let got: Vec<Batch> = decode_ours(&partial).into_iter().map(without_codec).collect();
        prop_assert_eq!(got, expected);
    }
}
