//! The object-store side of tiering: opening a store from a URL, the keys archived segments
//! live under, and uploads that are atomic and idempotent.
//!
//! Everything here talks to `object_store::ObjectStore` only; which store (local directory,
//! in-memory, S3, GCS, Azure) is decided once, by [`open_store`]. Retries with backoff happen
//! inside object_store's HTTP client (configured by [`RetryOptions`]); concurrency is bounded
//! by a semaphore in front of the store (object_store's `LimitStore`). Must not know about
//! Parquet or record batches: it moves opaque bytes.

pub mod key;
pub mod open;
pub mod upload;

pub use key::{parse_segment_key, partition_prefix, segment_key, SegmentKey};
pub use open::{open_store, RetryOptions, S3Options, StoreOptions};
pub use upload::{upload, UploadOptions, Uploaded, Verify};

use object_store::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("invalid object store URL {url:?}: {reason}")]
    InvalidUrl { url: String, reason: &'static str },
    #[error("object store URL scheme {scheme}:// needs this crate's `{feature}` feature")]
    FeatureDisabled {
        scheme: String,
        feature: &'static str,
    },
    #[error("cannot create the local object directory {path}")]
    LocalDir {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot open object store {url}")]
    Open {
        url: String,
        #[source]
        source: object_store::Error,
    },
    #[error("invalid segment key: {0}")]
    InvalidKey(String),
    #[error("upload of {location} failed")]
    Upload {
        location: Path,
        #[source]
        source: object_store::Error,
    },
    #[error("{location} does not read back as written")]
    VerifyMismatch { location: Path },
}
