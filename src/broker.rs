//! The broker: identity (cluster id, node id), the metadata quorum, the hosted partitions,
//! and start-up/shutdown ordering. Shared by every connection through an `Arc`.

use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;

use crate::cluster::{
    ClusterError, Metadata, MetadataCommand, MetadataError, ProducerIds, TopicMeta,
};
use crate::config::BrokerConfig;
use crate::coordinator::Coordinator;
use crate::storage::LogManager;

pub struct Broker {
    pub config: BrokerConfig,
    pub node_id: i32,
    pub cluster_id: String,
    pub metadata: Metadata,
    pub logs: Arc<LogManager>,
    pub coordinator: Arc<Coordinator>,
    /// Hands out ids to idempotent producers (InitProducerId).
    pub producer_ids: ProducerIds,
    /// The object store tier: uploads, remote reads, their cache.
    pub tiering: Arc<crate::tier::Tiering>,
    /// Held for the broker's lifetime so two brokers never share a data dir.
    _dir_lock: File,
}

impl Broker {
    /// Opens the data dir, recovers metadata and partition logs, and starts background work.
    pub async fn start(config: BrokerConfig) -> anyhow::Result<Arc<Self>> {
        let data = config.data_dir.clone();
        std::fs::create_dir_all(&data)
            .with_context(|| format!("cannot create data dir {}", data.display()))?;
        let lock = File::create(data.join(".lock"))?;
        lock.try_lock().map_err(|_| {
            anyhow::anyhow!(
                "data dir {} is in use by another strata process; stop it or pick another --data-dir",
                data.display()
            )
        })?;
        let cluster_id = load_identity(&data, config.node_id)?;
        let metadata = Metadata::start(&data.join("raft"), &config.quorum()?, &cluster_id)
            .await
            .context("starting the metadata quorum")?;
        let logs = Arc::new(LogManager::new(&config).context("opening the log directory")?);
        let image = metadata.image();
        logs.remove_orphans(&image);
        let started = std::time::Instant::now();
        tokio::task::block_in_place(|| logs.reconcile(&image))
            .context("recovering partition logs")?;
        tracing::info!(
            topics = image.topics.len(),
            partitions = logs.all_partitions().len(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "partition logs recovered"
        );
        tokio::spawn(logs.clone().run_background());
        // Apply metadata changes made elsewhere (and any this broker made) to the local logs.
        let (m, l) = (metadata.clone(), logs.clone());
        let mut changes = metadata.subscribe();
        tokio::spawn(async move {
            while changes.changed().await.is_ok() {
                let image = m.image();
                if let Err(e) = tokio::task::block_in_place(|| l.reconcile(&image)) {
                    tracing::error!(error = %e, "applying metadata to partition logs");
                }
            }
        });
        ensure_offsets_topic(&metadata, &logs, &config).await?;
        let offsets_partitions = metadata
            .image()
            .topic(crate::coordinator::store::TOPIC)
            .map_or(config.offsets_topic_num_partitions, |t| t.partitions);
        let coordinator = Coordinator::new(&config, logs.clone(), offsets_partitions);
        // Replaying __consumer_offsets can take a while; groups answer
        // COORDINATOR_LOAD_IN_PROGRESS until their partition is loaded.
        let loader = coordinator.clone();
        tokio::task::spawn_blocking(move || loader.load_all());
        tokio::spawn(
            coordinator
                .clone()
                .run_timers(std::time::Duration::from_millis(
                    config.offsets_retention_check_interval_ms.max(100),
                )),
        );
        let producer_ids = ProducerIds::new(metadata.clone(), config.node_id);
        let tiering = crate::tier::Tiering::open(&config, &cluster_id)
            .await
            .context("opening tiered storage")?;
        tokio::spawn(
            tiering
                .clone()
                .run(config.clone(), metadata.clone(), logs.clone()),
        );
        Ok(Arc::new(Self {
            tiering,
            coordinator,
            producer_ids,
            node_id: config.node_id,
            config,
            cluster_id,
            metadata,
            logs,
            _dir_lock: lock,
        }))
    }

    /// Makes the local logs match the current metadata now (after this broker changed it).
    pub fn sync_logs(&self) -> Result<(), crate::log::LogError> {
        let image = self.metadata.image();
        tokio::task::block_in_place(|| self.logs.reconcile(&image))
    }

    pub async fn shutdown(&self) {
        tokio::task::block_in_place(|| self.logs.close());
        self.tiering.close().await;
        self.metadata.shutdown().await;
    }
}

/// Creates the internal `__consumer_offsets` topic on first start.
async fn ensure_offsets_topic(
    metadata: &Metadata,
    logs: &LogManager,
    config: &BrokerConfig,
) -> anyhow::Result<()> {
    let name = crate::coordinator::store::TOPIC;
    if metadata.image().topic(name).is_none() {
        let mut configs = std::collections::BTreeMap::new();
        // Small segments let compaction (coordinator/store.rs) free disk soon after it moves
        // the log start past old records.
        configs.insert("segment.bytes".to_string(), "16777216".to_string());
        let meta = TopicMeta {
            name: name.to_string(),
            id: uuid::Uuid::new_v4(),
            partitions: config.offsets_topic_num_partitions,
            configs,
        };
        match metadata.propose(MetadataCommand::CreateTopic(meta)).await {
            Ok(()) => tracing::info!(
                partitions = config.offsets_topic_num_partitions,
                "created {name}"
            ),
            // Another broker of the cluster created it first.
            Err(ClusterError::Rejected(MetadataError::TopicExists(_))) => {}
            Err(e) => return Err(e).context("creating __consumer_offsets"),
        }
    }
    let image = metadata.image();
    tokio::task::block_in_place(|| logs.reconcile(&image)).context("opening __consumer_offsets")?;
    Ok(())
}

/// Reads `meta.properties` (cluster.id, node.id), creating it on first start. A node id that
/// disagrees with the stored one means the wrong data dir: refuse to start.
fn load_identity(data: &Path, node_id: i32) -> anyhow::Result<String> {
    let path = data.join("meta.properties");
    if let Ok(text) = std::fs::read_to_string(&path) {
        let get = |key: &str| {
            text.lines()
                .filter_map(|l| l.split_once('='))
                .find(|(k, _)| k.trim() == key)
                .map(|(_, v)| v.trim().to_string())
        };
        let cluster_id = get("cluster.id").context("meta.properties has no cluster.id")?;
        let stored: i32 = get("node.id")
            .and_then(|v| v.parse().ok())
            .context("meta.properties has no valid node.id")?;
        anyhow::ensure!(
            stored == node_id,
            "data dir {} belongs to node {stored}, but node_id is {node_id}",
            data.display()
        );
        return Ok(cluster_id);
    }
    let cluster_id = uuid::Uuid::new_v4().simple().to_string();
    let text = format!("version=1\ncluster.id={cluster_id}\nnode.id={node_id}\n");
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text)?;
    File::open(&tmp)?.sync_all()?;
    std::fs::rename(&tmp, &path)?;
    tracing::info!(%cluster_id, "formatted a new data dir");
    Ok(cluster_id)
}
