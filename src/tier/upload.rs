//! The background task of tiered storage. Every `tiering.upload_interval_ms`, for each tiered
//! partition: archive sealed data past the end of the remote manifest (convert, upload,
//! commit), delete local segments that are archived and past local retention, and expire
//! remote segments past total retention. Also watches free disk space and writes the status
//! file `strata tier status` reads.
//!
//! Order of effects, so a crash at any point loses nothing and serves nothing twice:
//! object PUT (atomic) -> manifest commit (Raft) -> local segment delete. Remote expiry:
//! manifest trim (Raft) -> object delete. A PUT not followed by a commit leaves an object no
//! reader sees; the same range is uploaded again to the same key, and the start-up sweep
//! deletes objects no manifest names.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt};
use tiering::{RemoteSegment, Retention, UploadOptions};
use uuid::Uuid;

use super::{TierError, TierMetrics, Tiering};
use crate::cluster::{Metadata, MetadataCommand, MetadataImage};
use crate::config::BrokerConfig;
use crate::storage::{LogManager, Partition, Role};

/// In a cluster another broker may have uploaded an object and not committed it yet: objects
/// no manifest names are deleted only once they are this old (a lone broker sweeps at start,
/// before any upload of its own, and needs no grace).
const ORPHAN_GRACE: Duration = Duration::from_secs(3600);

impl Tiering {
    /// Runs the upload and retention loop until the process ends.
    pub async fn run(
        self: Arc<Self>,
        config: BrokerConfig,
        metadata: Metadata,
        logs: Arc<LogManager>,
    ) {
        self.sweep_orphans(&metadata.image()).await;
        let mut known: HashMap<Uuid, String> = HashMap::new();
        let mut tick = tokio::time::interval(Duration::from_millis(self.config.upload_interval_ms));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            self.check_disk(&config);
            let partitions: Vec<Arc<Partition>> = logs
                .all_partitions()
                .into_iter()
                .filter(|p| !p.topic().starts_with("__"))
                .collect();
            futures::stream::iter(partitions)
                .for_each_concurrent(self.config.upload_concurrency, |p| {
                    let this = self.clone();
                    let metadata = metadata.clone();
                    let logs = logs.clone();
                    async move { this.tend(&metadata, &logs, &p).await }
                })
                .await;
            let image = metadata.image();
            self.sweep_deleted_topics(&image, &mut known).await;
            self.write_status(&config, &image, &logs);
        }
    }

    /// One partition's round: upload, then local retention, then remote retention.
    async fn tend(&self, metadata: &Metadata, logs: &LogManager, p: &Arc<Partition>) {
        let name = p.name();
        let config = p.config();
        let Some(topic_id) = logs.topic_id_of(p) else {
            // Deleted (or deleted and re-created) since this round began: not this topic's
            // data any more.
            return;
        };
        if metadata.image().topic(p.topic()).map(|m| m.id) != Some(topic_id) {
            return;
        }
        // Only the partition's leader uploads and trims the archive (the manifest in the
        // metadata tells every replica how far it got, so a new leader carries on from
        // there); every replica drops local segments the archive holds.
        let leader = matches!(p.role(), Role::Leader { .. });
        if leader {
            self.close_gap(metadata, topic_id, p).await;
        }
        if p.tiered() && leader {
            match self.upload_pending(metadata, logs, p, topic_id).await {
                Ok(()) => self.set_error(&name, None),
                Err(e) => {
                    TierMetrics::add(&self.metrics.upload_errors_total, 1);
                    tracing::warn!(partition = %name, error = %e, "upload failed; local data is kept and the upload retried");
                    self.set_error(&name, Some(e.to_string()));
                }
            }
        }
        let image = metadata.image();
        let Some(remote) = image.remote_log(&topic_id, p.index()) else {
            return;
        };
        let now = crate::now_ms();
        let uploaded_end = remote.manifest.end_offset().unwrap_or(i64::MIN);
        if p.tiered() {
            match tokio::task::block_in_place(|| p.apply_local_retention(now, uploaded_end)) {
                Ok(0) => {}
                Ok(n) => {
                    tracing::info!(partition = %name, segments = n, "local retention deleted archived segments")
                }
                Err(e) => tracing::warn!(partition = %name, error = %e, "local retention failed"),
            }
        }
        // Total retention covers both tiers; local data not archived yet counts towards size.
        let local_only: u64 = p
            .segment_spans()
            .iter()
            .filter(|(_, next, _)| *next > uploaded_end)
            .map(|(_, _, size)| size)
            .sum();
        let retention = Retention {
            retention_ms: config.retention_ms,
            retention_bytes: config.retention_bytes,
        };
        let expired = remote.manifest.expired(now, retention, local_only);
        if !leader {
            return;
        }
        if let Some(last) = expired.last() {
            let new_start = last.last_offset + 1;
            let count = expired.len();
            match self.trim(metadata, topic_id, p, new_start).await {
                Ok(()) => {
                    tracing::info!(partition = %name, segments = count, log_start = new_start, "retention expired archived segments")
                }
                Err(e) => tracing::warn!(partition = %name, error = %e, "remote retention failed"),
            }
        }
    }

    /// When the local log start moved past everything archived (DeleteRecords, or retention
    /// while tiering was off), the archived data is all below the log start: it goes, so the
    /// two tiers never leave a gap between them.
    async fn close_gap(&self, metadata: &Metadata, topic_id: Uuid, p: &Partition) {
        let image = metadata.image();
        let Some(end) = image
            .remote_log(&topic_id, p.index())
            .and_then(|r| r.start_offset().and(r.manifest.end_offset()))
        else {
            return;
        };
        let local_start = p.offsets().log_start;
        if end < local_start {
            tracing::info!(partition = %p.name(), remote_end = end, local_start, "archived data is below the log start; dropping it");
            if let Err(e) = self.trim(metadata, topic_id, p, local_start).await {
                tracing::warn!(partition = %p.name(), error = %e, "could not drop archived data below the log start");
            }
        }
    }

    /// Archives every sealed stretch of the log past the end of the manifest.
    async fn upload_pending(
        &self,
        metadata: &Metadata,
        logs: &LogManager,
        p: &Arc<Partition>,
        topic_id: Uuid,
    ) -> Result<(), TierError> {
        loop {
            let image = metadata.image();
            let remote = image.remote_log(&topic_id, p.index());
            let local_start = p.offsets().log_start;
            let next = match remote.and_then(|r| r.manifest.end_offset()) {
                Some(end) if end >= local_start => end,
                // A gap: close_gap drops the archive first, at the next round.
                Some(_) => return Ok(()),
                None => local_start,
            };
            let max = self.config.max_object_bytes as usize;
            let data = tokio::task::block_in_place(|| p.read_sealed(next, max))?;
            if data.is_empty() {
                return Ok(());
            }
            let started = Instant::now();
            let raw_bytes = data.len() as u64;
            let options = self.config.write_options();
            let (parquet, summary) =
                tokio::task::spawn_blocking(move || tiering::batches_to_parquet(&data, &options))
                    .await
                    .map_err(|e| TierError::Convert(e.to_string()))?
                    .map_err(|e| TierError::Convert(e.to_string()))?;
            let segment = RemoteSegment::from_summary(p.topic(), p.index(), &summary)?;
            let parquet_bytes = parquet.len() as u64;
            tiering::upload(
                self.store.as_ref(),
                &ObjectPath::from(segment.object_key.as_str()),
                Bytes::from(parquet),
                &UploadOptions::default(),
            )
            .await?;
            if logs.topic_id_of(p) != Some(topic_id) {
                // The topic went away during the upload; its objects are swept.
                return Ok(());
            }
            metadata
                .propose(MetadataCommand::CommitRemoteSegment {
                    topic_id,
                    segment: segment.clone(),
                    // Read now, not before the upload: a DeleteRecords meanwhile must hold.
                    log_start: p.offsets().log_start,
                })
                .await?;
            let ms = started.elapsed().as_millis() as u64;
            let m = &self.metrics;
            TierMetrics::add(&m.uploads_total, 1);
            TierMetrics::add(&m.uploaded_bytes_total, parquet_bytes);
            TierMetrics::add(&m.uploaded_segment_bytes_total, raw_bytes);
            TierMetrics::add(&m.upload_ms_total, ms);
            tracing::info!(
                partition = %p.name(), object = %segment.object_key,
                first_offset = segment.first_offset, last_offset = segment.last_offset,
                segment_bytes = raw_bytes, parquet_bytes, ms,
                "archived"
            );
        }
    }

    /// Raises a partition's remote log start to `log_start`: the manifest first, then the
    /// objects it no longer names, then local data below it.
    pub async fn trim(
        &self,
        metadata: &Metadata,
        topic_id: Uuid,
        p: &Partition,
        log_start: i64,
    ) -> Result<(), TierError> {
        let before: Vec<RemoteSegment> = metadata
            .image()
            .remote_log(&topic_id, p.index())
            .map(|r| r.manifest.segments.clone())
            .unwrap_or_default();
        metadata
            .propose(MetadataCommand::TrimRemoteLog {
                topic_id,
                partition: p.index(),
                log_start,
            })
            .await?;
        for s in before.iter().filter(|s| s.last_offset < log_start) {
            self.delete_object(&s.object_key).await;
        }
        let o = p.offsets();
        if o.log_start < log_start && log_start <= o.high_watermark {
            tokio::task::block_in_place(|| p.delete_records(log_start))?;
        }
        Ok(())
    }

    async fn delete_object(&self, key: &str) {
        match self.store.delete(&ObjectPath::from(key)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {
                TierMetrics::add(&self.metrics.objects_deleted_total, 1);
                tracing::debug!(object = %key, "deleted");
            }
            // Unreferenced: the next start-up sweep retries.
            Err(e) => {
                tracing::warn!(object = %key, error = %e, "could not delete an expired object")
            }
        }
    }

    /// Deletes archived objects that no manifest names: uploads whose commit never happened
    /// (a crash in between) and archives of topics deleted while the broker was down. Runs
    /// before this broker uploads anything; other brokers' uploads may be in flight, so in a
    /// cluster only objects older than [`ORPHAN_GRACE`] go.
    async fn sweep_orphans(&self, image: &MetadataImage) {
        let lone = image.brokers.len() <= 1;
        let named: BTreeSet<&str> = image
            .remote
            .values()
            .flat_map(|p| p.values())
            .flat_map(|r| r.manifest.segments.iter().map(|s| s.object_key.as_str()))
            .collect();
        // Only objects that cannot hold data a reader may need: outside the partition's
        // manifest range (an upload never committed, or a trimmed segment whose delete
        // failed), or of a topic the metadata does not know. An unnamed object inside a
        // manifest's range would mean the metadata and the store disagree: it is kept and
        // reported rather than deleted.
        let orphan = |key: &tiering::store::SegmentKey| {
            let Some(meta) = image.topic(&key.topic) else {
                return true;
            };
            match image
                .remote_log(&meta.id, key.partition)
                .and_then(|r| r.manifest.start_offset().zip(r.manifest.end_offset()))
            {
                Some((start, end)) => key.first_offset >= end || key.last_offset < start,
                None => true,
            }
        };
        let mut listing = self.store.list(Some(&ObjectPath::from("topics")));
        let mut orphans = Vec::new();
        while let Some(item) = listing.next().await {
            match item {
                Ok(meta) => {
                    let key = meta.location.to_string();
                    let Some(parsed) = tiering::store::parse_segment_key(&meta.location) else {
                        continue;
                    };
                    if named.contains(key.as_str()) {
                        continue;
                    }
                    let age_ms = crate::now_ms() - meta.last_modified.timestamp_millis();
                    if !lone && age_ms < ORPHAN_GRACE.as_millis() as i64 {
                        continue;
                    }
                    if orphan(&parsed) {
                        orphans.push(key);
                    } else {
                        tracing::warn!(object = %key, "an object inside an archived range is not in the manifest; left in place");
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot list the object store; orphaned objects are left for the next start");
                    return;
                }
            }
        }
        drop(listing);
        for key in &orphans {
            tracing::info!(object = %key, "deleting an object no manifest names");
            self.delete_object(key).await;
        }
    }

    /// Deletes the archives of topics deleted since the last round.
    async fn sweep_deleted_topics(&self, image: &MetadataImage, known: &mut HashMap<Uuid, String>) {
        let gone: Vec<(Uuid, String)> = known
            .iter()
            .filter(|(id, _)| !image.remote.contains_key(*id))
            .map(|(id, name)| (*id, name.clone()))
            .collect();
        for (id, name) in gone {
            known.remove(&id);
            // A topic re-created under the same name shares the prefix: keep what its
            // manifest names. No upload is in flight while this runs.
            let named: BTreeSet<String> = image
                .topic(&name)
                .and_then(|m| image.remote.get(&m.id))
                .into_iter()
                .flat_map(|parts| parts.values())
                .flat_map(|r| r.manifest.segments.iter().map(|s| s.object_key.clone()))
                .collect();
            let prefix = ObjectPath::from(format!("topics/{name}"));
            // In a cluster, a re-created topic's leader may be uploading under this prefix.
            let lone = image.brokers.len() <= 1;
            let keys: Vec<String> = self
                .store
                .list(Some(&prefix))
                .filter_map(|m| async move {
                    m.ok()
                        .filter(|m| tiering::store::parse_segment_key(&m.location).is_some())
                        .filter(|m| {
                            lone || crate::now_ms() - m.last_modified.timestamp_millis()
                                >= ORPHAN_GRACE.as_millis() as i64
                        })
                        .map(|m| m.location.to_string())
                })
                .filter(|k| std::future::ready(!named.contains(k)))
                .collect()
                .await;
            tracing::info!(topic = %name, objects = keys.len(), "deleting the archive of a deleted topic");
            for key in keys {
                self.delete_object(&key).await;
            }
        }
        for (id, partitions) in &image.remote {
            if let Some((_, r)) = partitions.iter().next() {
                known.entry(*id).or_insert_with(|| r.manifest.topic.clone());
            }
        }
    }

    /// Refuses produce while the data dir is short of free space.
    fn check_disk(&self, config: &BrokerConfig) {
        if config.log_dir_min_free_bytes == 0 {
            return;
        }
        let Ok(free) = fs4::available_space(&config.data_dir) else {
            return;
        };
        let low = free < config.log_dir_min_free_bytes;
        let was = self
            .disk_low
            .swap(low, std::sync::atomic::Ordering::Relaxed);
        if low && !was {
            tracing::error!(
                free_bytes = free,
                min_free_bytes = config.log_dir_min_free_bytes,
                "data dir is nearly full: produce requests are refused with KAFKA_STORAGE_ERROR \
                 until space is freed (check the object store if tiered uploads are failing)"
            );
        } else if was && !low {
            tracing::info!(
                free_bytes = free,
                "data dir has free space again: produce resumes"
            );
        }
    }
}
