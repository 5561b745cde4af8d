use bytes::Bytes;
use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::file::statistics::Statistics;

use super::*;
use crate::batch::{
    split_batches, Batch, Codec, Header, Record, TopicCompression, CONTROL_FLAG,
    TIMESTAMP_TYPE_FLAG, TRANSACTIONAL_FLAG,
};

fn record(delta: i32, ts_delta: i64, size: usize) -> Record {
    Record {
        attributes: 0,
        timestamp_delta: ts_delta,
        offset_delta: delta,
        key: Some(Bytes::from(format!("key-{delta}"))),
        value: Some(Bytes::from(vec![b'x'; size])),
        headers: vec![Header {
            key: Bytes::from_static(b"trace"),
            value: Some(Bytes::from_static(b"abc")),
        }],
    }
}

fn batch(base: i64, n: i32, attributes: i16) -> Batch {
    Batch {
        base_offset: base,
        partition_leader_epoch: 2,
        attributes,
        last_offset_delta: n - 1,
        base_timestamp: 1_700_000_000_000 + base,
        max_timestamp: 1_700_000_000_000 + base + i64::from(n) - 1,
        producer_id: 9,
        producer_epoch: 0,
        base_sequence: base as i32,
        records: (0..n).map(|i| record(i, i64::from(i), 10)).collect(),
    }
}

fn segment(batches: &[Batch]) -> Vec<u8> {
    let mut out = Vec::new();
    for b in batches {
        b.encode(Codec::from_attributes(b.attributes).unwrap(), &mut out)
            .unwrap();
    }
    out
}

fn decode_all(buf: &[u8]) -> Vec<Batch> {
    split_batches(buf)
        .map(|raw| Batch::decode(&raw.unwrap()).unwrap())
        .collect()
}

#[test]
fn uncompressed_segment_comes_back_byte_identical() {
    let mut log_append = batch(5, 2, TIMESTAMP_TYPE_FLAG);
    log_append.max_timestamp = 1_800_000_000_000;
    let mut compacted = batch(7, 3, 0);
    compacted.records.remove(1);
    compacted.last_offset_delta = 5; // trailing records removed too
    let mut odd_key = batch(13, 1, 0);
    odd_key.records[0].headers.push(Header {
        key: Bytes::from_static(&[0xff, 0xfe, b'k']),
        value: None,
    });
    odd_key.records[0].headers.push(Header {
        key: Bytes::from_static(b"trace"),
        value: Some(Bytes::new()),
    });
    odd_key.records[0].key = None;
    odd_key.records[0].value = None;
    let mut control = batch(14, 1, CONTROL_FLAG | TRANSACTIONAL_FLAG);
    control.records[0].key = Some(Bytes::from_static(&[0, 0, 0, 1]));
    control.records[0].value = Some(Bytes::from_static(&[0, 0, 0, 0, 0, 3]));
    control.records[0].headers.clear();
    let input = segment(&[batch(0, 5, 0), log_append, compacted, odd_key, control]);

    let (parquet, summary) = batches_to_parquet(&input, &WriteOptions::default()).unwrap();
    assert_eq!(summary.first_offset, 0);
    assert_eq!(summary.last_offset, 14);
    assert_eq!(summary.records, 5 + 2 + 2 + 1 + 1);
    assert_eq!(summary.batches, 5);
    assert_eq!(summary.max_timestamp, 1_800_000_000_000);
    assert_eq!(summary.min_timestamp, 1_700_000_000_000);
    assert_eq!(summary.parquet_bytes, parquet.len() as u64);
    assert_eq!(summary.leader_epoch(), 2);

    let rebuilt = parquet_to_batches(Bytes::from(parquet), 0, TopicCompression::Producer).unwrap();
    assert_eq!(rebuilt, input);
}

#[test]
fn recompression_keeps_records_and_changes_only_the_codec() {
    let input = segment(&[batch(0, 4, Codec::Gzip.id()), batch(4, 3, Codec::None.id())]);
    let (parquet, _) = batches_to_parquet(&input, &WriteOptions::default()).unwrap();
    let parquet = Bytes::from(parquet);
    for codec in Codec::ALL {
        let out = parquet_to_batches(parquet.clone(), 0, TopicCompression::Codec(codec)).unwrap();
        let (a, b) = (decode_all(&input), decode_all(&out));
        assert_eq!(a.len(), b.len());
        for (x, y) in a.iter().zip(&b) {
            assert_eq!(y.attributes & 7, codec.id());
            let mut y = y.clone();
            y.attributes = x.attributes;
            assert_eq!(*x, y, "{codec}");
        }
    }
}

#[test]
fn row_groups_are_cut_at_batch_boundaries_and_pruned_on_read() {
    let batches: Vec<_> = (0..10).map(|i| batch(i * 3, 3, 0)).collect();
    let input = segment(&batches);
    let options = WriteOptions {
        row_group_max_rows: 4, // two batches (6 rows) per row group
        ..WriteOptions::default()
    };
    let (parquet, summary) = batches_to_parquet(&input, &options).unwrap();
    assert_eq!(summary.row_groups, 5);
    let parquet = Bytes::from(parquet);

    let reader = SerializedFileReader::new(parquet.clone()).unwrap();
    let meta = reader.metadata();
    assert_eq!(meta.num_row_groups(), 5);
    let columns = meta.file_metadata().schema_descr();
    let idx = |name: &str| {
        columns
            .columns()
            .iter()
            .position(|c| c.name() == name)
            .unwrap()
    };
    for (g, rg) in meta.row_groups().iter().enumerate() {
        assert_eq!(rg.num_rows(), 6);
        let Some(Statistics::Int64(s)) = rg.column(idx(schema::OFFSET)).statistics() else {
            panic!("offset statistics missing");
        };
        assert_eq!(
            (*s.min_opt().unwrap(), *s.max_opt().unwrap()),
            (g as i64 * 6, g as i64 * 6 + 5)
        );
        assert!(rg.column(idx(schema::TIMESTAMP)).statistics().is_some());
        assert!(rg.column(idx(schema::VALUE)).statistics().is_none());
    }
    // Page index (column and offset index) is written for offset lookups.
    assert!(meta
        .row_group(0)
        .column(idx(schema::OFFSET))
        .offset_index_offset()
        .is_some());

    // From the middle of a batch: that batch and everything after it.
    let out = parquet_to_batches(parquet.clone(), 13, TopicCompression::Producer).unwrap();
    let got = decode_all(&out);
    assert_eq!(got.first().unwrap().base_offset, 12);
    assert_eq!(got.len(), 6);
    assert_eq!(out, segment(&batches[4..]));
    // Past the end: nothing.
    assert!(
        parquet_to_batches(parquet.clone(), 30, TopicCompression::Producer)
            .unwrap()
            .is_empty()
    );
}

#[test]
fn byte_limit_returns_whole_batches_and_at_least_one() {
    let batches: Vec<_> = (0..4).map(|i| batch(i * 2, 2, 0)).collect();
    let input = segment(&batches);
    let one = segment(&batches[..1]).len();
    let (parquet, _) = batches_to_parquet(&input, &WriteOptions::default()).unwrap();
    let read = |max_bytes| {
        read_batches(
            Bytes::from(parquet.clone()),
            &ReadOptions {
                from_offset: 0,
                compression: TopicCompression::Producer,
                max_bytes,
            },
        )
        .unwrap()
    };
    assert_eq!(read(1), segment(&batches[..1]));
    assert_eq!(read(2 * one), segment(&batches[..2]));
    assert_eq!(read(2 * one + 1), segment(&batches[..2]));
    assert_eq!(read(usize::MAX), input);
}

#[test]
fn corrupt_or_unsupported_input_is_refused() {
    let mut input = segment(&[batch(0, 2, 0), batch(2, 2, 0)]);
    let last = input.len() - 1;
    input[last] ^= 0x40;
    let err = batches_to_parquet(&input, &WriteOptions::default()).unwrap_err();
    assert!(err.to_string().contains("offset 2"), "{err}");

    assert!(matches!(
        batches_to_parquet(&[], &WriteOptions::default()),
        Err(TableError::EmptySegment)
    ));
    let mut empty = batch(0, 1, 0);
    empty.records.clear();
    assert!(matches!(
        batches_to_parquet(&segment(&[empty]), &WriteOptions::default()),
        Err(TableError::EmptyBatch { base_offset: 0 })
    ));
    assert!(matches!(
        batches_to_parquet(
            &segment(&[batch(5, 2, 0), batch(6, 2, 0)]),
            &WriteOptions::default()
        ),
        Err(TableError::OffsetsNotIncreasing { base_offset: 6 })
    ));
    assert!(parquet_to_batches(
        Bytes::from_static(b"not parquet"),
        0,
        TopicCompression::Producer
    )
    .is_err());
}

#[test]
fn files_without_the_layout_version_are_refused() {
    use arrow_array::{Int64Array, RecordBatch};
    use std::sync::Arc;
    let rb = RecordBatch::try_from_iter([(
        "offset",
        Arc::new(Int64Array::from(vec![1i64])) as arrow_array::ArrayRef,
    )])
    .unwrap();
    let mut w = parquet::arrow::ArrowWriter::try_new(Vec::new(), rb.schema(), None).unwrap();
    w.write(&rb).unwrap();
    let bytes = w.into_inner().unwrap();
    assert!(matches!(
        parquet_to_batches(Bytes::from(bytes), 0, TopicCompression::Producer),
        Err(TableError::UnsupportedVersion(None))
    ));
}

#[tokio::test]
async fn object_layout_reads_row_groups_on_their_own() {
    use object_store::memory::InMemory;
    use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
    use std::sync::Arc;

    let batches: Vec<Batch> = (0..10).map(|i| batch(i * 4, 4, 0)).collect();
    let seg = segment(&batches);
    // Tiny row groups: a new one every other batch.
    let options = WriteOptions {
        row_group_max_rows: 8,
        ..Default::default()
    };
    let (parquet, summary) = batches_to_parquet(&seg, &options).unwrap();
    assert_eq!(summary.row_groups, 5);
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let location = object_store::path::Path::from("t/0.parquet");
    let size = parquet.len() as u64;
    store
        .put(&location, PutPayload::from(parquet))
        .await
        .unwrap();
    let layout = ObjectLayout::load(store.clone(), location, size)
        .await
        .unwrap();
    assert_eq!(layout.groups.len(), 5);
    assert_eq!(
        (layout.groups[1].first_offset, layout.groups[1].last_offset),
        (8, 15)
    );
    assert_eq!(layout.group_for_offset(0), Some(0));
    assert_eq!(layout.group_for_offset(15), Some(1));
    assert_eq!(layout.group_for_offset(16), Some(2));
    assert_eq!(layout.group_for_offset(40), None);
    // Group 0 holds timestamps up to base + 7.
    let first_ts = 1_700_000_000_000 + 8;
    assert_eq!(layout.group_for_timestamp(first_ts), Some(1));
    // Every group rebuilds alone, and together they are the whole segment.
    let mut all = Vec::new();
    for g in 0..layout.groups.len() {
        all.extend(
            layout
                .read_group(store.clone(), g, TopicCompression::Producer)
                .await
                .unwrap(),
        );
    }
    assert_eq!(all, seg, "uncompressed batches come back byte for byte");
}
