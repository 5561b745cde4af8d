//! Tiered storage in the broker: uploads sealed segments of tiered topics to the object store
//! as Parquet, commits them to the remote manifest in the Raft metadata, applies the local and
//! remote retention tiers, and serves offsets that are no longer local from the store through
//! a memory + disk cache.
//!
//! The `tiering` crate does the format and store work; this module decides when. Invariants:
//! - a local segment is deleted only once the manifest covers it (`upload` commits first);
//! - a reader only ever sees objects named by the manifest, so an object uploaded but not
//!   committed (a crash in between) is never served, and is re-uploaded or swept;
//! - a remote object is deleted only after the manifest stopped naming it.
//!
//! `reader` serves Fetch and ListOffsets; `upload` is the background task; `status` is what
//! `strata tier status` shows.

mod cache;
mod reader;
pub mod status;
mod upload;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use object_store::ObjectStore;

use crate::config::BrokerConfig;

pub use status::TierStatus;

/// The first offset readers may get from a partition: its remote log start when the remote
/// tier holds data that reaches the local log (no gap between the tiers), else the local log
/// start.
pub fn log_start(remote: Option<&crate::cluster::RemoteLog>, local_start: i64) -> i64 {
    remote
        .filter(|r| {
            r.manifest
                .end_offset()
                .is_some_and(|end| end >= local_start)
        })
        .and_then(|r| r.start_offset())
        .map_or(local_start, |s| s.min(local_start))
}

/// The archived segment holding `offset`, and the one after it, when `offset` is readable
/// from the remote tier (at or above its log start).
pub fn locate(
    remote: &crate::cluster::RemoteLog,
    offset: i64,
) -> Option<(tiering::RemoteSegment, Option<tiering::RemoteSegment>)> {
    if remote.start_offset().is_none_or(|start| offset < start) {
        return None;
    }
    let i = remote
        .manifest
        .segments
        .partition_point(|s| s.last_offset < offset);
    let segment = remote
        .manifest
        .segments
        .get(i)
        .filter(|s| s.contains(offset))?;
    Some((
        segment.clone(),
        remote.manifest.segments.get(i + 1).cloned(),
    ))
}

/// The object, at the store's prefix, naming the cluster that owns the archive there.
const CLUSTER_MARKER: &str = "strata-cluster.json";

/// Refuses a store (URL prefix) that another cluster's archive lives in: each cluster deletes
/// objects its own metadata does not name, so two clusters on one prefix would delete each
/// other's data. Writes the marker on first use. A store that cannot be reached now is not
/// checked (the broker must start during a store outage); the next start checks it.
async fn claim_store(store: &dyn ObjectStore, url: &str, cluster_id: &str) -> anyhow::Result<()> {
    use object_store::ObjectStoreExt;
    let marker = object_store::path::Path::from(CLUSTER_MARKER);
    let ours = serde_json::json!({ "cluster_id": cluster_id });
    // Bounded: a store that is down must not hold up the start through all its retries.
    let found = tokio::time::timeout(std::time::Duration::from_secs(5), store.get(&marker)).await;
    let Ok(found) = found else {
        tracing::warn!(store = %url, "object store did not answer at start; uploads wait for it");
        return Ok(());
    };
    match found {
        Ok(found) => {
            let bytes = found.bytes().await.unwrap_or_default();
            let theirs = serde_json::from_slice::<serde_json::Value>(&bytes)
                .ok()
                .and_then(|v| {
                    v.get("cluster_id")
                        .and_then(|c| c.as_str())
                        .map(str::to_owned)
                });
            match theirs {
                Some(id) if id == cluster_id => Ok(()),
                other => anyhow::bail!(
                    "the object store {url} holds the archive of another cluster ({}): give this \
                     cluster its own [tiering] url (bucket or prefix); two clusters on one prefix \
                     would delete each other's objects",
                    other.unwrap_or_else(|| "unreadable marker".into())
                ),
            }
        }
        Err(object_store::Error::NotFound { .. }) => {
            let body = serde_json::to_vec(&ours)?;
            if let Err(e) = store.put(&marker, body.into()).await {
                tracing::warn!(store = %url, error = %e, "cannot write the cluster marker; will retry at the next start");
            }
            Ok(())
        }
        Err(e) => {
            tracing::warn!(store = %url, error = %e, "object store unreachable at start; uploads wait for it");
            Ok(())
        }
    }
}

/// Why a remote read or an upload failed.
#[derive(Debug, thiserror::Error)]
pub enum TierError {
    #[error(transparent)]
    Store(#[from] tiering::store::StoreError),
    /// An archived object is missing, unreadable or corrupt: the partition's remote data
    /// cannot be served until an operator restores it.
    #[error("remote object {key}: {reason}")]
    Object { key: String, reason: String },
    #[error("segment conversion failed: {0}")]
    Convert(String),
    #[error(transparent)]
    Log(#[from] crate::log::LogError),
    #[error(transparent)]
    Cluster(#[from] crate::cluster::ClusterError),
    #[error("cache: {0}")]
    Cache(String),
}

/// Counters for `strata tier status` and the log.
#[derive(Debug, Default)]
pub struct TierMetrics {
    pub uploads_total: AtomicU64,
    pub upload_errors_total: AtomicU64,
    pub uploaded_bytes_total: AtomicU64,
    pub uploaded_segment_bytes_total: AtomicU64,
    pub upload_ms_total: AtomicU64,
    pub remote_reads_total: AtomicU64,
    pub remote_read_errors_total: AtomicU64,
    pub remote_read_ms_total: AtomicU64,
    pub remote_read_ms_max: AtomicU64,
    pub cache_hits: AtomicU64,
    pub cache_misses: AtomicU64,
    pub objects_deleted_total: AtomicU64,
}

impl TierMetrics {
    fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

/// The broker's tiered storage: the store, the remote-read cache, and upload state.
pub struct Tiering {
    store: Arc<dyn ObjectStore>,
    url: String,
    config: crate::config::tiering::TieringConfig,
    cache: cache::RemoteCache,
    pub metrics: TierMetrics,
    /// Last upload error per partition ("topic-partition"), cleared by a success.
    errors: Mutex<std::collections::HashMap<String, String>>,
    /// The data dir's file system is below `log_dir_min_free_bytes`: produce is refused.
    disk_low: AtomicBool,
}

impl Tiering {
    /// Opens the object store named by the config and the remote-read cache, and claims the
    /// store for this cluster (see `claim_store`).
    pub async fn open(config: &BrokerConfig, cluster_id: &str) -> anyhow::Result<Arc<Self>> {
        let t = &config.tiering;
        let url = t.store_url(&config.data_dir);
        let store = tiering::open_store(&url, &t.store_options())
            .map_err(|e| anyhow::anyhow!("cannot open the object store {url}: {e}"))?;
        claim_store(store.as_ref(), &url, cluster_id).await?;
        let cache = cache::RemoteCache::open(t, &t.cache_dir(&config.data_dir)).await?;
        tracing::info!(store = %url, "tiered storage ready");
        Ok(Arc::new(Tiering {
            store,
            url,
            config: t.clone(),
            cache,
            metrics: TierMetrics::default(),
            errors: Mutex::new(Default::default()),
            disk_low: AtomicBool::new(false),
        }))
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// True while the data dir has less free space than `log_dir_min_free_bytes`.
    pub fn disk_low(&self) -> bool {
        self.disk_low.load(Ordering::Relaxed)
    }

    fn set_error(&self, partition: &str, error: Option<String>) {
        let mut errors = self.errors.lock().unwrap_or_else(|p| p.into_inner());
        match error {
            Some(e) => {
                errors.insert(partition.to_owned(), e);
            }
            None => {
                errors.remove(partition);
            }
        }
    }

    fn error_of(&self, partition: &str) -> Option<String> {
        self.errors
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(partition)
            .cloned()
    }

    /// Flushes the disk cache (shutdown).
    pub async fn close(&self) {
        self.cache.close().await;
    }
}
