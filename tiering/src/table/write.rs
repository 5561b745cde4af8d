//! Segment bytes -> Parquet: one row per record, row groups cut at batch boundaries.
//!
//! Every batch's CRC is verified before anything is converted, so a corrupt local segment is
//! never archived. Row groups hold whole batches (a batch is never split across two), which
//! lets the reader prune row groups by `batch_last_offset` statistics and rebuild any batch
//! from one row group.

use std::sync::Arc;

use arrow_array::builder::{
    BinaryBuilder, BooleanBuilder, Int16Builder, Int32Builder, Int64Builder, Int8Builder,
    ListBuilder, StringBuilder, StructBuilder, TimestampMillisecondBuilder,
};
use arrow_array::{ArrayRef, RecordBatch};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, Encoding, ZstdLevel};
use parquet::file::metadata::{KeyValue, SortingColumn};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;

use super::schema::{self as col, header_fields, header_item_field, schema};
use super::TableError;
use crate::batch::{split_batches, Batch, TimestampType};

/// How a segment is laid out in Parquet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteOptions {
    /// A row group is closed at the first batch boundary at or past this many rows.
    pub row_group_max_rows: usize,
    /// ... or past this many bytes of keys, values and headers (uncompressed). A remote read
    /// fetches whole row groups, so this bounds the bytes one fetch pulls from the store.
    pub row_group_max_bytes: usize,
    /// zstd level for every column (1-22).
    pub zstd_level: i32,
}

impl Default for WriteOptions {
    fn default() -> Self {
        WriteOptions {
            row_group_max_rows: 128 * 1024,
            row_group_max_bytes: 8 * 1024 * 1024,
            zstd_level: 3,
        }
    }
}

/// The leader epoch that wrote the batches from `start_offset` on (Kafka's epoch chain).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct EpochStart {
    pub epoch: i32,
    pub start_offset: i64,
}

/// What a converted segment holds; the manifest entry is made from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// Base offset of the first batch.
    pub first_offset: i64,
    /// Last offset of the last batch (base offset + lastOffsetDelta).
    pub last_offset: i64,
    /// Smallest and largest record timestamp as consumers see them.
    pub min_timestamp: i64,
    pub max_timestamp: i64,
    pub records: u64,
    pub batches: u64,
    pub row_groups: usize,
    pub segment_bytes: u64,
    pub parquet_bytes: u64,
    /// Leader epoch changes, in offset order.
    pub leader_epochs: Vec<EpochStart>,
}

impl Summary {
    /// The newest leader epoch in the segment.
    pub fn leader_epoch(&self) -> i32 {
        self.leader_epochs.last().map_or(-1, |e| e.epoch)
    }
}

/// Converts a sealed segment (concatenated magic-v2 batches, as stored) to a Parquet file.
///
/// The codec each batch was produced with stays in the `attributes` column; which codec a
/// rebuilt batch gets is decided when reading (see [`super::parquet_to_batches`]).
pub fn batches_to_parquet(
    segment: &[u8],
    options: &WriteOptions,
) -> Result<(Vec<u8>, Summary), TableError> {
    // Verify every CRC first: nothing is written for a segment that is damaged anywhere.
    let raws = split_batches(segment).collect::<Result<Vec<_>, _>>()?;
    let Some(first) = raws.first() else {
        return Err(TableError::EmptySegment);
    };
    let mut summary = Summary {
        first_offset: first.header.base_offset,
        last_offset: first.header.last_offset(),
        min_timestamp: i64::MAX,
        max_timestamp: i64::MIN,
        records: 0,
        batches: 0,
        row_groups: 0,
        segment_bytes: segment.len() as u64,
        parquet_bytes: 0,
        leader_epochs: Vec::new(),
    };

    let mut writer = ArrowWriter::try_new(Vec::new(), schema(), Some(writer_properties(options)?))?;
    let mut columns = Columns::new();
    let mut previous_last: Option<i64> = None;
    for raw in &raws {
        let batch = Batch::decode(raw)?;
        if batch.records.is_empty() {
            // Compaction can leave a batch with no records to keep producer state; a table
            // with one row per record has nowhere to put it. Refuse rather than drop it.
            return Err(TableError::EmptyBatch {
                base_offset: batch.base_offset,
            });
        }
        if previous_last.is_some_and(|p| batch.base_offset <= p) {
            return Err(TableError::OffsetsNotIncreasing {
                base_offset: batch.base_offset,
            });
        }
        previous_last = Some(batch.last_offset());
        if summary.leader_epochs.last().map(|e| e.epoch) != Some(batch.partition_leader_epoch) {
            summary.leader_epochs.push(EpochStart {
                epoch: batch.partition_leader_epoch,
                start_offset: batch.base_offset,
            });
        }
        summary.last_offset = batch.last_offset();
        summary.batches += 1;
        for r in &batch.records {
            let ts = batch.timestamp_of(r);
            summary.min_timestamp = summary.min_timestamp.min(ts);
            summary.max_timestamp = summary.max_timestamp.max(ts);
        }
        summary.records += batch.records.len() as u64;
        columns.append(&batch);
        if columns.rows >= options.row_group_max_rows
            || columns.payload_bytes >= options.row_group_max_bytes
        {
            writer.write(&columns.finish()?)?;
            writer.flush()?;
        }
    }
    if columns.rows > 0 {
        writer.write(&columns.finish()?)?;
        writer.flush()?;
    }
    summary.row_groups = writer.flushed_row_groups().len();
    let bytes = writer.into_inner()?;
    summary.parquet_bytes = bytes.len() as u64;
    Ok((bytes, summary))
}

fn writer_properties(options: &WriteOptions) -> Result<WriterProperties, TableError> {
    let level = ZstdLevel::try_new(options.zstd_level)?;
    let path = |name: &str| ColumnPath::new(vec![name.to_owned()]);
    let mut b = WriterProperties::builder()
        .set_compression(Compression::ZSTD(level))
        // Row groups are cut by us, at batch boundaries; never by the writer.
        .set_max_row_group_row_count(None)
        .set_max_row_group_bytes(None)
        .set_key_value_metadata(Some(vec![KeyValue::new(
            col::VERSION_KEY.to_owned(),
            col::VERSION.to_owned(),
        )]))
        .set_sorting_columns(Some(vec![SortingColumn {
            column_idx: 0,
            descending: false,
            nulls_first: false,
        }]))
        // Min/max of keys, values and headers would be truncated guesses that prune nothing.
        .set_statistics_enabled(EnabledStatistics::None);
    // Page-level statistics (and the page index) where readers seek: by offset and by time.
    for name in [
        col::OFFSET,
        col::TIMESTAMP,
        col::BATCH_BASE_OFFSET,
        col::BATCH_LAST_OFFSET,
    ] {
        b = b.set_column_statistics_enabled(path(name), EnabledStatistics::Page);
    }
    for name in [
        col::PRODUCER_ID,
        col::PRODUCER_EPOCH,
        col::SEQUENCE,
        col::ATTRIBUTES,
        col::IS_CONTROL,
        col::BATCH_MAX_TIMESTAMP,
        col::BATCH_LEADER_EPOCH,
    ] {
        b = b.set_column_statistics_enabled(path(name), EnabledStatistics::Chunk);
    }
    // Offsets, timestamps and sequences climb steadily: deltas encode them in a few bits, a
    // dictionary would only be abandoned after wasting a page.
    for name in [col::OFFSET, col::TIMESTAMP, col::SEQUENCE] {
        b = b
            .set_column_dictionary_enabled(path(name), false)
            .set_column_encoding(path(name), Encoding::DELTA_BINARY_PACKED);
    }
    b = b.set_column_dictionary_enabled(path(col::VALUE), false);
    Ok(b.build())
}

/// Column builders for the row group being filled.
struct Columns {
    rows: usize,
    payload_bytes: usize,
    offset: Int64Builder,
    timestamp: TimestampMillisecondBuilder,
    key: BinaryBuilder,
    value: BinaryBuilder,
    headers: ListBuilder<StructBuilder>,
    producer_id: Int64Builder,
    producer_epoch: Int16Builder,
    sequence: Int32Builder,
    batch_base_offset: Int64Builder,
    attributes: Int16Builder,
    is_control: BooleanBuilder,
    batch_last_offset: Int64Builder,
    batch_base_timestamp: Int64Builder,
    batch_max_timestamp: Int64Builder,
    batch_leader_epoch: Int32Builder,
    batch_base_sequence: Int32Builder,
    batch_record_count: Int32Builder,
    record_timestamp_delta: Int64Builder,
    record_attributes: Int8Builder,
}

impl Columns {
    fn new() -> Columns {
        let header_struct = StructBuilder::new(
            header_fields(),
            vec![
                Box::new(StringBuilder::new()),
                Box::new(BinaryBuilder::new()),
                Box::new(BinaryBuilder::new()),
            ],
        );
        Columns {
            rows: 0,
            payload_bytes: 0,
            offset: Int64Builder::new(),
            timestamp: TimestampMillisecondBuilder::new().with_timezone(col::TIME_ZONE),
            key: BinaryBuilder::new(),
            value: BinaryBuilder::new(),
            headers: ListBuilder::new(header_struct).with_field(header_item_field()),
            producer_id: Int64Builder::new(),
            producer_epoch: Int16Builder::new(),
            sequence: Int32Builder::new(),
            batch_base_offset: Int64Builder::new(),
            attributes: Int16Builder::new(),
            is_control: BooleanBuilder::new(),
            batch_last_offset: Int64Builder::new(),
            batch_base_timestamp: Int64Builder::new(),
            batch_max_timestamp: Int64Builder::new(),
            batch_leader_epoch: Int32Builder::new(),
            batch_base_sequence: Int32Builder::new(),
            batch_record_count: Int32Builder::new(),
            record_timestamp_delta: Int64Builder::new(),
            record_attributes: Int8Builder::new(),
        }
    }

    fn append(&mut self, batch: &Batch) {
        let log_append_time = batch.timestamp_type() == TimestampType::LogAppendTime;
        for r in &batch.records {
            self.rows += 1;
            self.payload_bytes += 64;
            self.offset.append_value(batch.offset_of(r));
            self.timestamp.append_value(batch.timestamp_of(r));
            self.key.append_option(r.key.as_deref());
            self.value.append_option(r.value.as_deref());
            self.payload_bytes += r.key.as_ref().map_or(0, |k| k.len());
            self.payload_bytes += r.value.as_ref().map_or(0, |v| v.len());
            let hs = self.headers.values();
            for h in &r.headers {
                self.payload_bytes += h.key.len() + h.value.as_ref().map_or(0, |v| v.len());
                let (key, raw) = match std::str::from_utf8(&h.key) {
                    Ok(s) => (std::borrow::Cow::Borrowed(s), None),
                    // Kafka header keys are strings, but the wire allows any bytes: keep the
                    // exact bytes beside a readable rendering.
                    Err(_) => (String::from_utf8_lossy(&h.key), Some(&h.key[..])),
                };
                field::<StringBuilder>(hs, 0).append_value(key);
                field::<BinaryBuilder>(hs, 1).append_option(h.value.as_deref());
                field::<BinaryBuilder>(hs, 2).append_option(raw);
                hs.append(true);
            }
            self.headers.append(true);
            self.producer_id.append_value(batch.producer_id);
            self.producer_epoch.append_value(batch.producer_epoch);
            self.sequence.append_value(batch.sequence_of(r));
            self.batch_base_offset.append_value(batch.base_offset);
            self.attributes.append_value(batch.attributes);
            self.is_control.append_value(batch.is_control());
            self.batch_last_offset.append_value(batch.last_offset());
            self.batch_base_timestamp.append_value(batch.base_timestamp);
            self.batch_max_timestamp.append_value(batch.max_timestamp);
            self.batch_leader_epoch
                .append_value(batch.partition_leader_epoch);
            self.batch_base_sequence.append_value(batch.base_sequence);
            self.batch_record_count
                .append_value(batch.records.len() as i32);
            // With CreateTime the delta is `timestamp - batch_base_timestamp`; only
            // LogAppendTime hides it behind the append time.
            self.record_timestamp_delta
                .append_option(log_append_time.then_some(r.timestamp_delta));
            self.record_attributes.append_value(r.attributes);
        }
    }

    /// Takes the rows gathered so far as one Arrow batch and resets the builders.
    fn finish(&mut self) -> Result<RecordBatch, TableError> {
        let columns: Vec<ArrayRef> = vec![
            Arc::new(self.offset.finish()),
            Arc::new(self.timestamp.finish()),
            Arc::new(self.key.finish()),
            Arc::new(self.value.finish()),
            Arc::new(self.headers.finish()),
            Arc::new(self.producer_id.finish()),
            Arc::new(self.producer_epoch.finish()),
            Arc::new(self.sequence.finish()),
            Arc::new(self.batch_base_offset.finish()),
            Arc::new(self.attributes.finish()),
            Arc::new(self.is_control.finish()),
            Arc::new(self.batch_last_offset.finish()),
            Arc::new(self.batch_base_timestamp.finish()),
            Arc::new(self.batch_max_timestamp.finish()),
            Arc::new(self.batch_leader_epoch.finish()),
            Arc::new(self.batch_base_sequence.finish()),
            Arc::new(self.batch_record_count.finish()),
            Arc::new(self.record_timestamp_delta.finish()),
            Arc::new(self.record_attributes.finish()),
        ];
        self.rows = 0;
        self.payload_bytes = 0;
        Ok(RecordBatch::try_new(schema(), columns)?)
    }
}

fn field<T: arrow_array::builder::ArrayBuilder>(s: &mut StructBuilder, i: usize) -> &mut T {
    s.field_builder::<T>(i)
        .expect("header struct builders are built in Columns::new with these types")
}
