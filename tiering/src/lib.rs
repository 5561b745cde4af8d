//! Strata's tiered storage: sealed log segments become Parquet files in an object store, and
//! come back as record batches when a consumer reads offsets that are no longer local.
//!
//! - [`batch`]: magic v2 record batches as bytes: CRC checks, lossless decode and encode.
//! - [`table`]: segment -> Parquet (one row per record, docs/TABLE.md) and back.
//! - [`store`]: opening an `object_store::ObjectStore` from a URL, segment keys, atomic and
//!   idempotent uploads.
//! - [`manifest`]: which offsets live in which objects, with retention decisions.
//!
//! This crate never depends on the broker: it takes segment bytes and an `ObjectStore`, and
//! returns bytes, summaries and decisions. It does no scheduling and keeps no state of its own;
//! when to upload, when to commit a manifest entry and when to delete local data is the
//! broker's call.

pub mod batch;
pub mod manifest;
pub mod store;
pub mod table;

pub use batch::{Codec, TopicCompression};
pub use manifest::{RemoteManifest, RemoteSegment, Retention};
pub use store::{open_store, segment_key, upload, StoreOptions, UploadOptions};
pub use table::{
    batches_to_parquet, parquet_to_batches, read_object, ObjectLayout, Summary, WriteOptions,
};
