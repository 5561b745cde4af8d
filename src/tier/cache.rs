//! The remote-read cache: object footers (parsed row-group layouts) in memory, and rebuilt
//! row groups (ready-to-serve record batches) in a foyer hybrid cache, memory in front of a
//! local-disk tier. Concurrent misses of one key share one load.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use foyer::{
    BlockEngineConfig, Cache, CacheBuilder, DeviceBuilder, FsDeviceBuilder, HybridCache,
    HybridCacheBuilder, HybridCachePolicy, PsyncIoEngineConfig,
};
use object_store::path::Path as ObjectPath;
use object_store::ObjectStore;
use tiering::{ObjectLayout, RemoteSegment, TopicCompression};

use super::TierError;
use crate::config::tiering::TieringConfig;

/// Memory for parsed footers; each is a few KiB.
const LAYOUT_CACHE_BYTES: usize = 32 * 1024 * 1024;

/// An object's parsed footer, under the identity its cached row groups are keyed by: the
/// topic id and the object key, so a topic deleted and re-created under the same name (same
/// keys, other data) never meets the old topic's cache entries.
#[derive(Clone)]
pub struct Located {
    pub id: String,
    pub layout: Arc<ObjectLayout>,
}

pub struct RemoteCache {
    layouts: Cache<String, Arc<ObjectLayout>>,
    groups: HybridCache<String, Bytes>,
}

impl RemoteCache {
    pub async fn open(config: &TieringConfig, dir: &Path) -> anyhow::Result<Self> {
        let layouts = CacheBuilder::new(LAYOUT_CACHE_BYTES)
            .with_weighter(|k: &String, v: &Arc<ObjectLayout>| k.len() + v.memory_size())
            .build();
        let memory = HybridCacheBuilder::new()
            .with_name("strata-remote")
            .with_policy(HybridCachePolicy::WriteOnInsertion)
            .memory(config.cache_memory_bytes.max(1024 * 1024))
            .with_weighter(|k: &String, v: &Bytes| k.len() + v.len())
            .storage();
        let groups = if config.cache_disk_bytes == 0 {
            memory.build().await?
        } else {
            std::fs::create_dir_all(dir).map_err(|e| {
                anyhow::anyhow!("cannot create the cache dir {}: {e}", dir.display())
            })?;
            let device = FsDeviceBuilder::new(dir)
                .with_capacity(config.cache_disk_bytes)
                .build()
                .map_err(|e| {
                    anyhow::anyhow!("cannot open the disk cache {}: {e}", dir.display())
                })?;
            // Blocks must hold the largest row group (plus framing).
            let block = (config.row_group_bytes * 2).clamp(1 << 20, 64 << 20);
            memory
                .with_io_engine_config(PsyncIoEngineConfig::new())
                .with_engine_config(BlockEngineConfig::new(device).with_block_size(block))
                .build()
                .await?
        };
        Ok(RemoteCache { layouts, groups })
    }

    /// The row-group layout of a segment's object (footer read on a miss).
    pub async fn layout(
        &self,
        store: &Arc<dyn ObjectStore>,
        topic_id: &uuid::Uuid,
        segment: &RemoteSegment,
    ) -> Result<Located, TierError> {
        let key = format!("{topic_id}/{}", segment.object_key);
        let store = store.clone();
        let size = segment.size_bytes;
        let location = ObjectPath::from(segment.object_key.as_str());
        let entry = self
            .layouts
            .get_or_fetch(&key, move || async move {
                ObjectLayout::load(store, location, size)
                    .await
                    .map(Arc::new)
                    .map_err(|e| anyhow::anyhow!("{e}"))
            })
            .await
            .map_err(|e| object_error(&segment.object_key, e))?;
        Ok(Located {
            id: key,
            layout: entry.value().clone(),
        })
    }

    /// The rebuilt batches of one row group, and whether they came from the cache.
    pub async fn group(
        &self,
        store: &Arc<dyn ObjectStore>,
        located: &Located,
        group: usize,
    ) -> Result<(Bytes, bool), TierError> {
        let key = format!("{}#{group}", located.id);
        let store = store.clone();
        let layout = &located.layout;
        let fetch_layout = layout.clone();
        let loaded = Arc::new(AtomicBool::new(false));
        let flag = loaded.clone();
        let entry = self
            .groups
            .get_or_fetch(&key, move || async move {
                flag.store(true, Ordering::Relaxed);
                fetch_layout
                    .read_group(store, group, TopicCompression::Producer)
                    .await
                    .map(Bytes::from)
                    .map_err(|e| anyhow::anyhow!("{e}"))
            })
            .await
            .map_err(|e| object_error(layout.location.as_ref(), e))?;
        Ok((entry.value().clone(), !loaded.load(Ordering::Relaxed)))
    }

    /// Drops everything cached for an object (it was deleted or found corrupt).
    pub fn forget(&self, located: &Located) {
        self.layouts.remove(&located.id);
        for g in 0..located.layout.groups.len() {
            self.groups.remove(&format!("{}#{g}", located.id));
        }
    }

    pub async fn close(&self) {
        if let Err(e) = self.groups.close().await {
            tracing::warn!(error = %e, "closing the remote-read cache");
        }
    }
}

fn object_error(key: &str, e: impl std::fmt::Display) -> TierError {
    TierError::Object {
        key: key.to_owned(),
        reason: e.to_string(),
    }
}
