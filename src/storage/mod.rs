//! The partitions this broker hosts: opening them from the data dir, reconciling them with
//! the metadata image (create, grow, reconfigure, delete), group commit, and the background
//! retention and relaxed-flush tasks.
//!
//! Layout: `<data_dir>/logs/<topic>-<partition>/` holding Kafka-style segment files.
//! Must not touch: metadata (it only reads the image it is given).

mod flusher;
pub mod metrics;
mod partition;

pub use flusher::{FlushResult, Flusher};
pub use partition::{
    Appended, Fetched, FollowerProgress, Offsets, Partition, ReplicationWait, Role,
};

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::sync::watch;
use uuid::Uuid;

use crate::cluster::MetadataImage;
use crate::config::topic::TopicConfig;
use crate::config::BrokerConfig;
use crate::log::{LogConfig, LogError, PartitionLog};

/// One topic's partitions that have a replica on this broker, by index.
#[derive(Clone)]
pub struct HostedTopic {
    pub id: Uuid,
    pub partitions: BTreeMap<i32, Arc<Partition>>,
}

/// Whether partition `index` of `meta` has a replica on broker `node_id`. Partitions of a
/// topic from before placement existed (no assignment yet) are on the one broker they were
/// written on.
fn hosts(meta: &crate::cluster::TopicMeta, index: i32, node_id: i32) -> bool {
    meta.partition(index)
        .is_none_or(|p| p.replicas.contains(&node_id))
}

/// Broker `node_id`'s role in partition `index` of `meta`.
fn role_of(meta: &crate::cluster::TopicMeta, index: i32, node_id: i32) -> Role {
    match meta.partition(index) {
        Some(p) if p.leader == Some(node_id) => Role::Leader {
            node: node_id,
            epoch: p.epoch,
            replicas: p.replicas.clone(),
            isr: p.isr.clone(),
        },
        Some(p) => Role::Follower {
            leader: p.leader,
            epoch: p.epoch,
        },
        None => Role::Leader {
            node: node_id,
            epoch: 0,
            replicas: vec![node_id],
            isr: [node_id].into(),
        },
    }
}

pub struct LogManager {
    dir: PathBuf,
    broker: BrokerConfig,
    topics: RwLock<HashMap<String, HostedTopic>>,
    flusher: Flusher,
    data_changed: watch::Sender<u64>,
}

pub fn log_config(c: &TopicConfig) -> LogConfig {
    LogConfig {
        segment_bytes: c.segment_bytes as u64,
        segment_ms: c.segment_ms,
        index_interval_bytes: c.index_interval_bytes.max(0) as u32,
        max_message_bytes: c.max_message_bytes.max(0) as usize,
        message_timestamp_type: c.timestamp_type,
        retention_ms: c.retention_ms,
        retention_bytes: c.retention_bytes,
        producer_id_expiration_ms: c.producer_id_expiration_ms,
    }
}

impl TopicConfig {
    pub fn to_log_config(&self) -> LogConfig {
        log_config(self)
    }
}

impl LogManager {
    pub fn new(broker: &BrokerConfig) -> std::io::Result<Self> {
        let dir = broker.data_dir.join("logs");
        std::fs::create_dir_all(&dir)?;
        Ok(Self {
            dir,
            broker: broker.clone(),
            topics: RwLock::new(HashMap::new()),
            flusher: Flusher::start(),
            data_changed: watch::channel(0).0,
        })
    }

    pub fn flusher(&self) -> &Flusher {
        &self.flusher
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Changes whenever new data becomes visible to readers.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.data_changed.subscribe()
    }

    pub fn topic(&self, name: &str) -> Option<HostedTopic> {
        self.topics
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .cloned()
    }

    pub fn partition(&self, topic: &str, index: i32) -> Option<Arc<Partition>> {
        let topics = self.topics.read().unwrap_or_else(|p| p.into_inner());
        topics.get(topic)?.partitions.get(&index).cloned()
    }

    /// The id of the topic `p` is hosted for, if `p` is still the hosted partition of that
    /// name (not one of a topic deleted since).
    pub fn topic_id_of(&self, p: &Arc<Partition>) -> Option<Uuid> {
        let topics = self.topics.read().unwrap_or_else(|p| p.into_inner());
        let hosted = topics.get(p.topic())?;
        let current = hosted.partitions.get(&p.index())?;
        Arc::ptr_eq(current, p).then_some(hosted.id)
    }

    pub fn all_partitions(&self) -> Vec<Arc<Partition>> {
        let topics = self.topics.read().unwrap_or_else(|p| p.into_inner());
        topics
            .values()
            .flat_map(|t| t.partitions.values().cloned())
            .collect()
    }

    /// Brings hosted partitions in line with `image`: opens new ones, applies config changes,
    /// and deletes the logs of topics that no longer exist. Idempotent.
    pub fn reconcile(&self, image: &MetadataImage) -> Result<(), LogError> {
        let now = crate::now_ms();
        let mut failed = None;
        let mut topics = self.topics.write().unwrap_or_else(|p| p.into_inner());
        let gone: Vec<String> = topics
            .iter()
            .filter(|(name, t)| image.topic(name).map(|m| m.id) != Some(t.id))
            .map(|(name, _)| name.clone())
            .collect();
        for name in gone {
            if let Some(t) = topics.remove(&name) {
                for p in t.partitions.values() {
                    remove_partition_dir(p.dir());
                }
                tracing::info!(topic = %name, "deleted topic logs");
            }
        }
        for meta in image.topics.values() {
            let config = TopicConfig::resolve(&self.broker, &meta.configs).unwrap_or_else(|e| {
                tracing::error!(topic = %meta.name, error = %e, "invalid stored topic config; using defaults");
                TopicConfig::resolve(&self.broker, &Default::default())
                    .expect("broker defaults were validated at startup")
            });
            let hosted = topics
                .entry(meta.name.clone())
                .or_insert_with(|| HostedTopic {
                    id: meta.id,
                    partitions: BTreeMap::new(),
                });
            for p in hosted.partitions.values() {
                if p.config() != config {
                    p.set_config(config.clone());
                }
            }
            let name: Arc<str> = meta.name.as_str().into();
            for index in 0..meta.partitions {
                if hosted.partitions.contains_key(&index)
                    || !hosts(meta, index, self.broker.node_id)
                {
                    continue;
                }
                let dir = self.dir.join(format!("{}-{}", meta.name, index));
                // One partition that cannot be opened must not stop the others from being
                // opened or getting their roles: report it, and try again next time.
                let log = match PartitionLog::open(&dir, log_config(&config)) {
                    Ok(log) => log,
                    Err(e) => {
                        tracing::error!(dir = %dir.display(), error = %e, "cannot open partition log");
                        failed.get_or_insert(e);
                        continue;
                    }
                };
                hosted.partitions.insert(
                    index,
                    Arc::new(
                        Partition::new(
                            name.clone(),
                            index,
                            dir,
                            log,
                            config.clone(),
                            self.data_changed.clone(),
                            now,
                        )
                        .with_page_cache_window(self.broker.log_page_cache_window_bytes),
                    ),
                );
            }
            // Replicas moved to other brokers (a finished reassignment) go from here.
            let moved: Vec<i32> = hosted
                .partitions
                .keys()
                .copied()
                .filter(|&i| i >= meta.partitions || !hosts(meta, i, self.broker.node_id))
                .collect();
            for index in moved {
                if let Some(p) = hosted.partitions.remove(&index) {
                    let _ = p.close();
                    remove_partition_dir(p.dir());
                    tracing::info!(partition = %p.name(), "replica moved to other brokers; deleted its log here");
                }
            }
            for (&index, p) in &hosted.partitions {
                p.set_role(role_of(meta, index, self.broker.node_id));
            }
        }
        failed.map_or(Ok(()), Err)
    }

    /// Removes partition directories on disk that belong to no topic in `image` (a topic
    /// deleted while the broker was down).
    pub fn remove_orphans(&self, image: &MetadataImage) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().to_string();
            let known = name.rsplit_once('-').is_some_and(|(topic, p)| {
                p.parse::<i32>().is_ok_and(|p| {
                    image
                        .topic(topic)
                        .is_some_and(|m| p < m.partitions && hosts(m, p, self.broker.node_id))
                })
            });
            if !known {
                remove_partition_dir(&entry.path());
            }
        }
    }

    /// Periodic work: retention, producer id expiry and relaxed-policy flushes. Runs until
    /// the process ends.
    pub async fn run_background(self: Arc<Self>) {
        let retention_every =
            Duration::from_millis(self.broker.log_retention_check_interval_ms.max(100));
        let mut retention = tokio::time::interval(retention_every);
        let mut flush = tokio::time::interval(Duration::from_millis(100));
        loop {
            tokio::select! {
                _ = retention.tick() => {
                    let now = crate::now_ms();
                    for p in self.all_partitions() {
                        // Tiered partitions: local and total retention are applied by the
                        // tiering task, which knows what has been archived.
                        let retention = if p.tiered() {
                            Ok(0)
                        } else {
                            tokio::task::block_in_place(|| p.apply_retention(now))
                        };
                        match retention {
                            Ok(0) => {}
                            Ok(n) => tracing::info!(partition = %p.name(), segments = n, "retention deleted segments"),
                            Err(e) => tracing::warn!(partition = %p.name(), error = %e, "retention failed"),
                        }
                        let expired = p.remove_expired_producers(now);
                        if expired > 0 {
                            tracing::debug!(partition = %p.name(), producers = expired, "expired producer ids");
                        }
                    }
                }
                _ = flush.tick() => {
                    let now = crate::now_ms();
                    for p in self.all_partitions() {
                        if p.flush_overdue(now) {
                            self.flusher.flush_soon(p);
                        }
                    }
                }
            }
        }
    }

    /// Flushes and closes every partition (clean shutdown).
    pub fn close(&self) {
        for p in self.all_partitions() {
            if let Err(e) = p.close() {
                tracing::error!(partition = %p.name(), error = %e, "closing partition");
            }
        }
    }
}

fn remove_partition_dir(dir: &Path) {
    // Rename first so a crash mid-delete never leaves a half-deleted live partition.
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let doomed = dir.with_file_name(format!("{name}.{}-delete", Uuid::new_v4().simple()));
    let target = match std::fs::rename(dir, &doomed) {
        Ok(()) => doomed,
        Err(_) => dir.to_path_buf(),
    };
    if let Err(e) = std::fs::remove_dir_all(&target) {
        tracing::warn!(dir = %target.display(), error = %e, "could not delete partition dir");
    }
}
