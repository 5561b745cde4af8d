//! The Parquet table an archived segment becomes, and the way back to record batches.
//!
//! Owns the column layout ([`schema`], documented in docs/TABLE.md), the conversion of a
//! sealed segment into one Parquet file ([`batches_to_parquet`]) and the rebuild of the
//! original batches from it ([`parquet_to_batches`], [`read_object`]). Pure CPU work over
//! bytes except `read_object`, which does ranged reads through an `ObjectStore`.
//!
//! Invariant: for every file written here, rebuilding from offset 0 with each batch's original
//! codec yields batches whose decoded records, offsets, timestamps and header fields equal the
//! input's; uncompressed input comes back byte for byte.

pub mod read;
pub mod remote;
pub mod schema;
pub mod write;

pub use read::{parquet_to_batches, read_batches, read_object, ReadOptions};
pub use remote::{GroupSpan, ObjectLayout};
pub use write::{batches_to_parquet, EpochStart, Summary, WriteOptions};

use crate::batch::BatchError;

#[derive(Debug, thiserror::Error)]
pub enum TableError {
    #[error(transparent)]
    Batch(#[from] BatchError),
    #[error("the segment holds no record batches")]
    EmptySegment,
    #[error("batch at offset {base_offset} holds no records; the table has no row for it")]
    EmptyBatch { base_offset: i64 },
    #[error("batch at offset {base_offset} does not start after the previous batch's last offset")]
    OffsetsNotIncreasing { base_offset: i64 },
    #[error("not a Strata table of a known layout (version {0:?})")]
    UnsupportedVersion(Option<String>),
    #[error("column {0} is missing")]
    MissingColumn(&'static str),
    #[error("column {0} has an unexpected type")]
    ColumnType(&'static str),
    #[error("corrupt table at offset {offset}: {reason}")]
    Corrupt { offset: i64, reason: &'static str },
    #[error("Parquet encoding or decoding failed")]
    Parquet(#[from] parquet::errors::ParquetError),
    #[error("Arrow array construction failed")]
    Arrow(#[from] arrow_schema::ArrowError),
}

impl TableError {
    /// The object was not in the store: deleted by retention, or never uploaded. The caller
    /// re-reads the manifest rather than reporting corruption.
    pub fn is_object_not_found(&self) -> bool {
        let mut next: Option<&(dyn std::error::Error + 'static)> = Some(self);
        while let Some(e) = next {
            if let Some(object_store::Error::NotFound { .. }) = e.downcast_ref() {
                return true;
            }
            next = e.source();
        }
        false
    }
}

#[cfg(test)]
mod tests;
