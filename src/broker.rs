//! The broker: identity (cluster id, node id), the metadata quorum, the hosted partitions,
//! and start-up/shutdown ordering. Shared by every connection through an `Arc`.

use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;

use crate::cluster::controller::{self, Leases};
use crate::cluster::{
    BrokerRegistration, ClusterError, Metadata, MetadataCommand, MetadataError, ProducerIds,
    TopicMeta,
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
    /// This start's registration with the quorum.
    pub registration: BrokerRegistration,
    /// The heartbeat task, stopped before a controlled shutdown fences this broker.
    heartbeats: tokio::task::AbortHandle,
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
        let local_id = load_identity(&data, config.node_id)?;
        let metadata = Metadata::start(&data.join("raft"), &config.quorum()?, &local_id)
            .await
            .context("starting the metadata quorum")?;
        // One id for the whole cluster: the first broker's, as agreed through the quorum.
        if metadata.image().cluster_id.is_none() {
            metadata
                .propose(MetadataCommand::ClaimClusterId(local_id.clone()))
                .await
                .context("agreeing on the cluster id")?;
        }
        let cluster_id = metadata
            .image()
            .cluster_id
            .clone()
            .unwrap_or(local_id.clone());
        if cluster_id != local_id {
            adopt_cluster_id(&data, config.node_id, &cluster_id)?;
        }
        let (host, port) = config.advertised();
        let registration = BrokerRegistration {
            id: config.node_id,
            incarnation: uuid::Uuid::new_v4(),
            host,
            port,
            rack: Some(config.broker_rack.clone()).filter(|r| !r.is_empty()),
            fenced: false,
            heartbeats: 0,
        };
        metadata
            .propose(MetadataCommand::RegisterBroker(registration.clone()))
            .await
            .context("registering this broker with the metadata quorum")?;
        let leases = Leases {
            heartbeat_interval: std::time::Duration::from_millis(
                config.broker_heartbeat_interval_ms,
            ),
            session_timeout: std::time::Duration::from_millis(config.broker_session_timeout_ms),
        };
        let heartbeats = tokio::spawn(controller::heartbeat(
            metadata.clone(),
            registration.clone(),
            leases,
        ))
        .abort_handle();
        tokio::spawn(controller::run(metadata.clone(), leases));
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
        // Replication: followers fetch from their leaders; leaders keep their ISR current.
        tokio::spawn(crate::replication::fetcher::run(
            metadata.clone(),
            logs.clone(),
            config.node_id,
            crate::replication::fetcher::FetchSettings {
                max_wait_ms: config.replica_fetch_max_wait_ms,
                partition_max_bytes: config.replica_fetch_max_bytes,
                response_max_bytes: config.replica_fetch_response_max_bytes,
            },
        ));
        tokio::spawn(crate::replication::isr::run(
            metadata.clone(),
            logs.clone(),
            std::time::Duration::from_millis(config.replica_lag_time_max_ms),
        ));
        ensure_offsets_topic(&metadata, &logs, &config).await?;
        let offsets_partitions = metadata
            .image()
            .topic(crate::coordinator::store::TOPIC)
            .map_or(config.offsets_topic_num_partitions, |t| t.partitions);
        let coordinator = Coordinator::new(&config, logs.clone(), offsets_partitions);
        // The coordinator serves the groups of the __consumer_offsets partitions this broker
        // leads, following leadership changes. Replaying a partition can take a while; its
        // groups answer COORDINATOR_LOAD_IN_PROGRESS until it is loaded.
        tokio::spawn(follow_offsets_leadership(
            metadata.clone(),
            coordinator.clone(),
            config.node_id,
        ));
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
            registration,
            heartbeats,
            _dir_lock: lock,
        }))
    }

    /// Makes the local logs match the current metadata now (after this broker changed it).
    pub fn sync_logs(&self) -> Result<(), crate::log::LogError> {
        let image = self.metadata.image();
        tokio::task::block_in_place(|| self.logs.reconcile(&image))
    }

    pub async fn shutdown(&self) {
        // Controlled shutdown: give up leadership through the quorum before going away, so
        // clients move to the new leaders at once instead of after the lease expires.
        self.heartbeats.abort();
        let fence = MetadataCommand::FenceBroker {
            id: self.node_id,
            incarnation: self.registration.incarnation,
        };
        match tokio::time::timeout(
            std::time::Duration::from_secs(5),
            self.metadata.propose(fence),
        )
        .await
        {
            Ok(Ok(())) => tracing::info!("controlled shutdown: partition leadership moved away"),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "controlled shutdown could not reach the quorum")
            }
            Err(_) => tracing::warn!("controlled shutdown timed out reaching the quorum"),
        }
        tokio::task::block_in_place(|| self.logs.close());
        self.tiering.close().await;
        self.metadata.shutdown().await;
    }
}

/// Keeps the coordinator's partitions equal to the `__consumer_offsets` partitions this
/// broker leads.
async fn follow_offsets_leadership(metadata: Metadata, coordinator: Arc<Coordinator>, me: i32) {
    let mut changes = metadata.subscribe();
    loop {
        let image = metadata.image();
        let led: std::collections::BTreeSet<i32> = image
            .topic(crate::coordinator::store::TOPIC)
            .map(|t| {
                (0..t.partitions)
                    .filter(|&p| t.leader(p) == Some(me))
                    .collect()
            })
            .unwrap_or_default();
        // Every change: a partition whose load failed (not opened yet) is retried.
        let (c, l) = (coordinator.clone(), led);
        if let Err(e) = tokio::task::spawn_blocking(move || c.sync_leadership(&l)).await {
            tracing::error!(error = %e, "loading coordinator partitions");
        }
        if changes.changed().await.is_err() {
            return;
        }
    }
}

/// How long the first start waits for `offsets_topic_replication_factor` brokers.
const OFFSETS_TOPIC_WAIT: std::time::Duration = std::time::Duration::from_secs(120);

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
        let mut waiting_since = None;
        let replicas = loop {
            match metadata.image().place(
                0,
                config.offsets_topic_num_partitions,
                config.offsets_topic_replication_factor,
            ) {
                Ok(replicas) => break replicas,
                // The cluster's other brokers are still starting: Kafka also waits for
                // offsets.topic.replication.factor brokers before creating the topic.
                Err(e) => {
                    let since = *waiting_since.get_or_insert_with(std::time::Instant::now);
                    if since.elapsed() > OFFSETS_TOPIC_WAIT {
                        anyhow::bail!(
                            "creating {name}: {e} after {OFFSETS_TOPIC_WAIT:?}; start more \
                             brokers or lower offsets_topic_replication_factor"
                        );
                    }
                    if metadata.image().topic(name).is_some() {
                        break Vec::new(); // another broker created it meanwhile
                    }
                    tracing::info!("waiting for brokers to create {name}: {e}");
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                }
            }
        };
        if !replicas.is_empty() {
            let meta = TopicMeta::new(name.to_string(), configs, replicas);
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
    }
    let image = metadata.image();
    tokio::task::block_in_place(|| logs.reconcile(&image)).context("opening __consumer_offsets")?;
    Ok(())
}

/// Records in `meta.properties` that this data dir belongs to cluster `cluster_id` (a broker
/// that joined a cluster formed by another).
fn adopt_cluster_id(data: &Path, node_id: i32, cluster_id: &str) -> anyhow::Result<()> {
    write_identity(&data.join("meta.properties"), node_id, cluster_id)?;
    tracing::info!(%cluster_id, "joined the cluster");
    Ok(())
}

fn write_identity(path: &Path, node_id: i32, cluster_id: &str) -> anyhow::Result<()> {
    let text = format!("version=1\ncluster.id={cluster_id}\nnode.id={node_id}\n");
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text)?;
    File::open(&tmp)?.sync_all()?;
    std::fs::rename(&tmp, path)?;
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
    write_identity(&path, node_id, &cluster_id)?;
    tracing::info!(%cluster_id, "formatted a new data dir");
    Ok(cluster_id)
}
