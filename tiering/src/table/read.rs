//! Parquet -> record batches: rebuilds the original magic-v2 batches from the rows.
//!
//! Rows are grouped by `batch_base_offset`; each group becomes one batch with the original
//! header fields, offsets, timestamps, keys, values, headers and producer metadata, compressed
//! with the codec the topic asks for, with a fresh CRC. A group must be complete
//! (`batch_record_count` rows) and agree on every batch-level column, or the file is corrupt.
//! Row groups whose `batch_last_offset` statistics end before the requested offset are never
//! read, so a remote read fetches only the row groups it needs.

use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{Int16Type, Int32Type, Int64Type, Int8Type, TimestampMillisecondType};
use arrow_array::{Array, BinaryArray, RecordBatch, StringArray};
use bytes::Bytes;
use futures::future::BoxFuture;
use futures::FutureExt;
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::ObjectStore;
use object_store::ObjectStoreExt;
use parquet::arrow::arrow_reader::ArrowReaderOptions;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::async_reader::AsyncFileReader;
use parquet::arrow::ParquetRecordBatchStreamBuilder;
use parquet::errors::ParquetError;
use parquet::file::metadata::ParquetMetaData;
use parquet::file::metadata::ParquetMetaDataReader;
use parquet::file::statistics::Statistics;
use std::ops::Range;

use super::schema as col;
use super::TableError;
use crate::batch::{Batch, Header, Record, TimestampType, TopicCompression};

/// What to rebuild from one Parquet file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadOptions {
    /// Start at the batch containing this offset (batches ending before it are skipped).
    pub from_offset: i64,
    /// The codec rebuilt batches get.
    pub compression: TopicCompression,
    /// Stop once this many bytes are rebuilt; the first batch is returned whole even if it is
    /// larger (KIP-74), later batches only if they fit.
    pub max_bytes: usize,
}

/// Rows per Arrow batch handed to the rebuilder; bounds the decoded working set.
pub(super) const READ_BATCH_ROWS: usize = 8192;

/// Rebuilds every batch that ends at or after `from_offset` from an in-memory Parquet file.
pub fn parquet_to_batches(
    parquet: Bytes,
    from_offset: i64,
    compression: TopicCompression,
) -> Result<Vec<u8>, TableError> {
    read_batches(
        parquet,
        &ReadOptions {
            from_offset,
            compression,
            max_bytes: usize::MAX,
        },
    )
}

/// [`parquet_to_batches`] with a byte limit.
pub fn read_batches(parquet: Bytes, options: &ReadOptions) -> Result<Vec<u8>, TableError> {
    let builder = ParquetRecordBatchReaderBuilder::try_new(parquet)?;
    let groups = select_row_groups(builder.metadata(), options.from_offset)?;
    let reader = builder
        .with_row_groups(groups)
        .with_batch_size(READ_BATCH_ROWS)
        .build()?;
    let mut rebuilder = Rebuilder::new(*options);
    for rows in reader {
        if rebuilder.push(&rows?)? {
            break;
        }
    }
    rebuilder.finish()
}

/// Rebuilds batches straight from an object in the store with ranged GETs: the footer, then
/// only the row groups at or after `from_offset`. `size`, when known (the manifest has it),
/// saves a HEAD request.
pub async fn read_object(
    store: Arc<dyn ObjectStore>,
    location: Path,
    size: Option<u64>,
    options: &ReadOptions,
) -> Result<Vec<u8>, TableError> {
    let reader = StoreReader::new(store, location, size);
    let builder = ParquetRecordBatchStreamBuilder::new(reader).await?;
    let groups = select_row_groups(builder.metadata(), options.from_offset)?;
    let mut stream = builder
        .with_row_groups(groups)
        .with_batch_size(READ_BATCH_ROWS)
        .build()?;
    let mut rebuilder = Rebuilder::new(*options);
    while let Some(rows) = stream.try_next().await? {
        if rebuilder.push(&rows)? {
            break;
        }
    }
    rebuilder.finish()
}

/// Parquet's async reader over an object: every read is a ranged GET.
pub(super) struct StoreReader {
    store: Arc<dyn ObjectStore>,
    location: Path,
    size: Option<u64>,
}

impl StoreReader {
    pub(super) fn new(store: Arc<dyn ObjectStore>, location: Path, size: Option<u64>) -> Self {
        StoreReader {
            store,
            location,
            size,
        }
    }
}

/// The footer and the metadata before it are fetched in one GET of this many trailing bytes
/// when they fit (they do for row groups of this table's size), else in two.
const FOOTER_PREFETCH_BYTES: usize = 64 * 1024;

fn store_error(e: object_store::Error) -> ParquetError {
    ParquetError::External(Box::new(e))
}

impl AsyncFileReader for StoreReader {
    fn get_bytes(&mut self, range: Range<u64>) -> BoxFuture<'_, parquet::errors::Result<Bytes>> {
        async move {
            self.store
                .get_range(&self.location, range)
                .await
                .map_err(store_error)
        }
        .boxed()
    }

    fn get_byte_ranges(
        &mut self,
        ranges: Vec<Range<u64>>,
    ) -> BoxFuture<'_, parquet::errors::Result<Vec<Bytes>>> {
        // object_store coalesces nearby ranges into fewer requests.
        async move {
            self.store
                .get_ranges(&self.location, &ranges)
                .await
                .map_err(store_error)
        }
        .boxed()
    }

    fn get_metadata<'a>(
        &'a mut self,
        _options: Option<&'a ArrowReaderOptions>,
    ) -> BoxFuture<'a, parquet::errors::Result<Arc<ParquetMetaData>>> {
        async move {
            let size = match self.size {
                Some(size) => size,
                None => {
                    let meta = self.store.head(&self.location).await.map_err(store_error)?;
                    self.size = Some(meta.size);
                    meta.size
                }
            };
            let meta = ParquetMetaDataReader::new()
                .with_prefetch_hint(Some(FOOTER_PREFETCH_BYTES))
                .load_and_finish(&mut *self, size)
                .await?;
            Ok(Arc::new(meta))
        }
        .boxed()
    }
}

/// Checks the layout version and picks the row groups that can hold batches ending at or
/// after `from_offset`.
fn select_row_groups(meta: &ParquetMetaData, from_offset: i64) -> Result<Vec<usize>, TableError> {
    check_version(meta)?;
    let last_offset_column = meta
        .file_metadata()
        .schema_descr()
        .columns()
        .iter()
        .position(|c| c.path().parts() == [col::BATCH_LAST_OFFSET])
        .ok_or(TableError::MissingColumn(col::BATCH_LAST_OFFSET))?;
    Ok(meta
        .row_groups()
        .iter()
        .enumerate()
        .filter(|(_, rg)| match rg.column(last_offset_column).statistics() {
            Some(Statistics::Int64(s)) => s.max_opt().is_none_or(|max| *max >= from_offset),
            // No usable statistics: read the group and let the rows decide.
            _ => true,
        })
        .map(|(i, _)| i)
        .collect())
}

/// Refuses files that are not of this table's layout version.
pub(super) fn check_version(meta: &ParquetMetaData) -> Result<(), TableError> {
    let version = meta
        .file_metadata()
        .key_value_metadata()
        .and_then(|kvs| kvs.iter().find(|kv| kv.key == col::VERSION_KEY))
        .and_then(|kv| kv.value.clone());
    if version.as_deref() != Some(col::VERSION) {
        return Err(TableError::UnsupportedVersion(version));
    }
    Ok(())
}

/// Batch-level fields every row of one batch repeats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct BatchFields {
    base_offset: i64,
    last_offset: i64,
    attributes: i16,
    base_timestamp: i64,
    max_timestamp: i64,
    leader_epoch: i32,
    base_sequence: i32,
    producer_id: i64,
    producer_epoch: i16,
    record_count: i32,
}

/// Turns a stream of Arrow row batches into encoded record batches.
pub(super) struct Rebuilder {
    options: ReadOptions,
    current: Option<(BatchFields, Vec<Record>)>,
    out: Vec<u8>,
    full: bool,
}

impl Rebuilder {
    pub(super) fn new(options: ReadOptions) -> Rebuilder {
        Rebuilder {
            options,
            current: None,
            out: Vec::new(),
            full: false,
        }
    }

    /// Adds rows; returns true once `max_bytes` is reached and no more rows are wanted.
    pub(super) fn push(&mut self, rows: &RecordBatch) -> Result<bool, TableError> {
        let c = RowColumns::new(rows)?;
        for i in 0..rows.num_rows() {
            let fields = c.batch_fields(i);
            let same = self
                .current
                .as_ref()
                .is_some_and(|(f, _)| f.base_offset == fields.base_offset);
            if !same {
                self.flush()?;
                if self.full {
                    return Ok(true);
                }
                self.current = Some((fields, Vec::new()));
            }
            let (current, records) = self.current.as_mut().expect("set above");
            if *current != fields {
                return Err(corrupt(
                    c.offset.value(i),
                    "batch-level columns differ between rows of one batch",
                ));
            }
            let record = c.record(i, current)?;
            if records
                .last()
                .is_some_and(|r| r.offset_delta >= record.offset_delta)
            {
                return Err(corrupt(
                    c.offset.value(i),
                    "offsets do not increase within a batch",
                ));
            }
            records.push(record);
        }
        Ok(false)
    }

    /// Encodes the batch being gathered, if it is wanted.
    fn flush(&mut self) -> Result<(), TableError> {
        let Some((f, records)) = self.current.take() else {
            return Ok(());
        };
        if records.len() != f.record_count as usize {
            return Err(corrupt(
                f.base_offset,
                "batch has a different number of rows than batch_record_count",
            ));
        }
        if f.last_offset < self.options.from_offset {
            return Ok(());
        }
        let batch = Batch {
            base_offset: f.base_offset,
            partition_leader_epoch: f.leader_epoch,
            attributes: f.attributes,
            last_offset_delta: (f.last_offset - f.base_offset) as i32,
            base_timestamp: f.base_timestamp,
            max_timestamp: f.max_timestamp,
            producer_id: f.producer_id,
            producer_epoch: f.producer_epoch,
            base_sequence: f.base_sequence,
            records,
        };
        let start = self.out.len();
        batch.encode(
            self.options.compression.codec_for(f.attributes),
            &mut self.out,
        )?;
        if start > 0 && self.out.len() > self.options.max_bytes {
            self.out.truncate(start);
            self.full = true;
        }
        Ok(())
    }

    pub(super) fn finish(mut self) -> Result<Vec<u8>, TableError> {
        if !self.full {
            self.flush()?;
        }
        Ok(self.out)
    }
}

fn corrupt(offset: i64, reason: &'static str) -> TableError {
    TableError::Corrupt { offset, reason }
}

/// Typed views of one Arrow row batch's columns, looked up by name.
struct RowColumns<'a> {
    offset: &'a arrow_array::PrimitiveArray<Int64Type>,
    timestamp: &'a arrow_array::PrimitiveArray<TimestampMillisecondType>,
    key: &'a BinaryArray,
    value: &'a BinaryArray,
    headers: &'a arrow_array::ListArray,
    header_key: &'a StringArray,
    header_value: &'a BinaryArray,
    header_key_raw: &'a BinaryArray,
    producer_id: &'a arrow_array::PrimitiveArray<Int64Type>,
    producer_epoch: &'a arrow_array::PrimitiveArray<Int16Type>,
    batch_base_offset: &'a arrow_array::PrimitiveArray<Int64Type>,
    attributes: &'a arrow_array::PrimitiveArray<Int16Type>,
    batch_last_offset: &'a arrow_array::PrimitiveArray<Int64Type>,
    batch_base_timestamp: &'a arrow_array::PrimitiveArray<Int64Type>,
    batch_max_timestamp: &'a arrow_array::PrimitiveArray<Int64Type>,
    batch_leader_epoch: &'a arrow_array::PrimitiveArray<Int32Type>,
    batch_base_sequence: &'a arrow_array::PrimitiveArray<Int32Type>,
    batch_record_count: &'a arrow_array::PrimitiveArray<Int32Type>,
    record_timestamp_delta: &'a arrow_array::PrimitiveArray<Int64Type>,
    record_attributes: &'a arrow_array::PrimitiveArray<Int8Type>,
}

fn column<'a>(rows: &'a RecordBatch, name: &'static str) -> Result<&'a dyn Array, TableError> {
    rows.column_by_name(name)
        .map(|a| a.as_ref())
        .ok_or(TableError::MissingColumn(name))
}

macro_rules! typed {
    ($rows:expr, $name:expr, $method:ident $(::<$t:ty>)?) => {
        column($rows, $name)?
            .$method $(::<$t>)? ()
            .ok_or(TableError::ColumnType($name))?
    };
}

impl<'a> RowColumns<'a> {
    fn new(rows: &'a RecordBatch) -> Result<RowColumns<'a>, TableError> {
        let headers = typed!(rows, col::HEADERS, as_list_opt::<i32>);
        let header_struct = headers
            .values()
            .as_struct_opt()
            .ok_or(TableError::ColumnType(col::HEADERS))?;
        let header_field = |name: &'static str| {
            header_struct
                .column_by_name(name)
                .ok_or(TableError::MissingColumn(name))
        };
        Ok(RowColumns {
            offset: typed!(rows, col::OFFSET, as_primitive_opt::<Int64Type>),
            timestamp: typed!(
                rows,
                col::TIMESTAMP,
                as_primitive_opt::<TimestampMillisecondType>
            ),
            key: typed!(rows, col::KEY, as_binary_opt::<i32>),
            value: typed!(rows, col::VALUE, as_binary_opt::<i32>),
            headers,
            header_key: header_field(col::HEADER_KEY)?
                .as_string_opt::<i32>()
                .ok_or(TableError::ColumnType(col::HEADER_KEY))?,
            header_value: header_field(col::HEADER_VALUE)?
                .as_binary_opt::<i32>()
                .ok_or(TableError::ColumnType(col::HEADER_VALUE))?,
            header_key_raw: header_field(col::HEADER_KEY_RAW)?
                .as_binary_opt::<i32>()
                .ok_or(TableError::ColumnType(col::HEADER_KEY_RAW))?,
            producer_id: typed!(rows, col::PRODUCER_ID, as_primitive_opt::<Int64Type>),
            producer_epoch: typed!(rows, col::PRODUCER_EPOCH, as_primitive_opt::<Int16Type>),
            batch_base_offset: typed!(rows, col::BATCH_BASE_OFFSET, as_primitive_opt::<Int64Type>),
            attributes: typed!(rows, col::ATTRIBUTES, as_primitive_opt::<Int16Type>),
            batch_last_offset: typed!(rows, col::BATCH_LAST_OFFSET, as_primitive_opt::<Int64Type>),
            batch_base_timestamp: typed!(
                rows,
                col::BATCH_BASE_TIMESTAMP,
                as_primitive_opt::<Int64Type>
            ),
            batch_max_timestamp: typed!(
                rows,
                col::BATCH_MAX_TIMESTAMP,
                as_primitive_opt::<Int64Type>
            ),
            batch_leader_epoch: typed!(
                rows,
                col::BATCH_LEADER_EPOCH,
                as_primitive_opt::<Int32Type>
            ),
            batch_base_sequence: typed!(
                rows,
                col::BATCH_BASE_SEQUENCE,
                as_primitive_opt::<Int32Type>
            ),
            batch_record_count: typed!(
                rows,
                col::BATCH_RECORD_COUNT,
                as_primitive_opt::<Int32Type>
            ),
            record_timestamp_delta: typed!(
                rows,
                col::RECORD_TIMESTAMP_DELTA,
                as_primitive_opt::<Int64Type>
            ),
            record_attributes: typed!(rows, col::RECORD_ATTRIBUTES, as_primitive_opt::<Int8Type>),
        })
    }

    fn batch_fields(&self, i: usize) -> BatchFields {
        BatchFields {
            base_offset: self.batch_base_offset.value(i),
            last_offset: self.batch_last_offset.value(i),
            attributes: self.attributes.value(i),
            base_timestamp: self.batch_base_timestamp.value(i),
            max_timestamp: self.batch_max_timestamp.value(i),
            leader_epoch: self.batch_leader_epoch.value(i),
            base_sequence: self.batch_base_sequence.value(i),
            producer_id: self.producer_id.value(i),
            producer_epoch: self.producer_epoch.value(i),
            record_count: self.batch_record_count.value(i),
        }
    }

    fn record(&self, i: usize, f: &BatchFields) -> Result<Record, TableError> {
        let offset = self.offset.value(i);
        let delta = offset - f.base_offset;
        if delta < 0
            || offset > f.last_offset
            || f.last_offset - f.base_offset > i64::from(i32::MAX)
        {
            return Err(corrupt(offset, "offset outside its batch's offset range"));
        }
        let timestamp_delta = match crate::batch::timestamp_type(f.attributes) {
            TimestampType::LogAppendTime => {
                if self.record_timestamp_delta.is_null(i) {
                    return Err(corrupt(
                        offset,
                        "LogAppendTime row without record_timestamp_delta",
                    ));
                }
                self.record_timestamp_delta.value(i)
            }
            TimestampType::CreateTime => self.timestamp.value(i).wrapping_sub(f.base_timestamp),
        };
        let binary =
            |a: &BinaryArray, j: usize| (!a.is_null(j)).then(|| Bytes::copy_from_slice(a.value(j)));
        let list = self.headers.value_offsets();
        let (start, end) = (list[i] as usize, list[i + 1] as usize);
        let headers = (start..end)
            .map(|j| Header {
                key: match binary(self.header_key_raw, j) {
                    Some(raw) => raw,
                    None => Bytes::copy_from_slice(self.header_key.value(j).as_bytes()),
                },
                value: binary(self.header_value, j),
            })
            .collect();
        Ok(Record {
            attributes: self.record_attributes.value(i),
            timestamp_delta,
            offset_delta: delta as i32,
            key: binary(self.key, i),
            value: binary(self.value, i),
            headers,
        })
    }
}
