//! Random access to one archived object for a remote reader: its row-group layout (from the
//! footer, one ranged GET) and the record batches of one row group at a time.
//!
//! Row groups hold whole batches (see [`super::write`]), so a row group rebuilds on its own and
//! is the natural unit of a read cache: a consumer reading sequentially fetches the row group
//! holding its offset, then the next.

use std::sync::Arc;

use futures::TryStreamExt;
use object_store::path::Path;
use object_store::ObjectStore;
use parquet::arrow::arrow_reader::{ArrowReaderMetadata, ArrowReaderOptions};
use parquet::arrow::async_reader::AsyncFileReader;
use parquet::arrow::ParquetRecordBatchStreamBuilder;
use parquet::file::metadata::ParquetMetaData;
use parquet::file::statistics::Statistics;

use super::read::{check_version, Rebuilder, StoreReader, READ_BATCH_ROWS};
use super::schema as col;
use super::{ReadOptions, TableError};
use crate::batch::TopicCompression;

/// The offsets and newest timestamp one row group holds, from its column statistics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupSpan {
    /// Base offset of the group's first batch.
    pub first_offset: i64,
    /// Last offset of the group's last batch.
    pub last_offset: i64,
    /// Largest batch max timestamp (the consumer-visible timestamps are at most this).
    pub max_timestamp: i64,
    pub rows: i64,
}

/// An object's footer, parsed once and kept by the reader's cache.
#[derive(Debug, Clone)]
pub struct ObjectLayout {
    pub location: Path,
    pub size: u64,
    pub groups: Vec<GroupSpan>,
    metadata: ArrowReaderMetadata,
}

impl ObjectLayout {
    /// Reads and checks the footer of `location` (`size` bytes long, from the manifest).
    pub async fn load(
        store: Arc<dyn ObjectStore>,
        location: Path,
        size: u64,
    ) -> Result<ObjectLayout, TableError> {
        let mut reader = StoreReader::new(store, location.clone(), Some(size));
        let meta = reader.get_metadata(None).await?;
        let groups = group_spans(&meta)?;
        let metadata = ArrowReaderMetadata::try_new(meta, ArrowReaderOptions::new())?;
        Ok(ObjectLayout {
            location,
            size,
            groups,
            metadata,
        })
    }

    /// The first row group with a batch ending at or after `offset`.
    pub fn group_for_offset(&self, offset: i64) -> Option<usize> {
        let i = self.groups.partition_point(|g| g.last_offset < offset);
        (i < self.groups.len()).then_some(i)
    }

    /// The first row group (in offset order) whose newest timestamp reaches `timestamp`.
    pub fn group_for_timestamp(&self, timestamp: i64) -> Option<usize> {
        self.groups
            .iter()
            .position(|g| g.max_timestamp >= timestamp)
    }

    /// Bytes of footer metadata kept in memory, for cache accounting.
    pub fn memory_size(&self) -> usize {
        self.metadata.metadata().memory_size()
    }

    /// Rebuilds every batch of row group `group` with ranged GETs of its column chunks only.
    pub async fn read_group(
        &self,
        store: Arc<dyn ObjectStore>,
        group: usize,
        compression: TopicCompression,
    ) -> Result<Vec<u8>, TableError> {
        if group >= self.groups.len() {
            return Err(TableError::Corrupt {
                offset: -1,
                reason: "row group index past the end of the object",
            });
        }
        let reader = StoreReader::new(store, self.location.clone(), Some(self.size));
        let mut stream =
            ParquetRecordBatchStreamBuilder::new_with_metadata(reader, self.metadata.clone())
                .with_row_groups(vec![group])
                .with_batch_size(READ_BATCH_ROWS)
                .build()?;
        let mut rebuilder = Rebuilder::new(ReadOptions {
            from_offset: i64::MIN,
            compression,
            max_bytes: usize::MAX,
        });
        while let Some(rows) = stream.try_next().await? {
            rebuilder.push(&rows)?;
        }
        rebuilder.finish()
    }
}

fn group_spans(meta: &ParquetMetaData) -> Result<Vec<GroupSpan>, TableError> {
    check_version(meta)?;
    let columns = meta.file_metadata().schema_descr();
    let position = |name: &'static str| {
        columns
            .columns()
            .iter()
            .position(|c| c.path().parts() == [name])
            .ok_or(TableError::MissingColumn(name))
    };
    let base = position(col::BATCH_BASE_OFFSET)?;
    let last = position(col::BATCH_LAST_OFFSET)?;
    let max_ts = position(col::BATCH_MAX_TIMESTAMP)?;
    let mut spans = Vec::with_capacity(meta.num_row_groups());
    for rg in meta.row_groups() {
        let stat = |column: usize, max: bool| match rg.column(column).statistics() {
            Some(Statistics::Int64(s)) => if max { s.max_opt() } else { s.min_opt() }.copied(),
            _ => None,
        };
        let (Some(first_offset), Some(last_offset), Some(max_timestamp)) =
            (stat(base, false), stat(last, true), stat(max_ts, true))
        else {
            return Err(TableError::Corrupt {
                offset: -1,
                reason: "a row group lacks offset or timestamp statistics",
            });
        };
        spans.push(GroupSpan {
            first_offset,
            last_offset,
            max_timestamp,
            rows: rg.num_rows(),
        });
    }
    if spans
        .windows(2)
        .any(|w| w[1].first_offset <= w[0].last_offset)
    {
        return Err(TableError::Corrupt {
            offset: -1,
            reason: "row groups are not in increasing offset order",
        });
    }
    Ok(spans)
}
