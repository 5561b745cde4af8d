//! Cluster metadata agreed through Raft (openraft).
//!
//! Owns the metadata state machine (topics, their ids, partition counts and configs, and the
//! producer id counter), the persistent Raft log under `<data_dir>/raft/`, the `Metadata`
//! handle the API layer uses to read the current image and to propose changes, and
//! [`ProducerIds`], which hands out producer ids from blocks reserved through the log. A
//! single broker runs a one-voter quorum, so a change is durable in the Raft log and applied
//! to the image before `propose` returns.
//!
//! Must not touch: partition logs (the storage layer reconciles itself from the image).

pub mod controller;
mod image;
mod network;
pub mod placement;
pub mod producer_ids;
mod state_machine;
mod store;
mod types;

pub use image::{BrokerRegistration, MetadataImage, RemoteLog, TopicMeta};
pub use producer_ids::ProducerIds;
pub use types::{Applied, MetadataCommand, MetadataError};

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use openraft::{BasicNode, Config, Raft};
use tokio::sync::watch;

use types::TypeConfig;

/// Errors from the metadata layer.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("raft storage: {0}")]
    Storage(String),
    #[error("raft: {0}")]
    Raft(String),
    #[error("metadata quorum has no leader after {0:?}; is a majority of voters running?")]
    NoLeader(Duration),
    #[error(transparent)]
    Rejected(#[from] MetadataError),
}

/// Read and change cluster metadata. Cheap to clone.
#[derive(Clone)]
pub struct Metadata {
    raft: Raft<TypeConfig>,
    image: Arc<RwLock<Arc<MetadataImage>>>,
    changes: watch::Receiver<u64>,
}

impl Metadata {
    /// Opens (or bootstraps) the one-voter metadata quorum stored under `dir`.
    pub async fn start(dir: &Path, node_id: u64, cluster_id: &str) -> Result<Self, ClusterError> {
        let config = Config {
            cluster_name: cluster_id.to_string(),
            heartbeat_interval: 100,
            election_timeout_min: 200,
            election_timeout_max: 400,
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(1000),
            max_in_snapshot_log_to_keep: 100,
            ..Default::default()
        };
        let config = Arc::new(
            config
                .validate()
                .map_err(|e| ClusterError::Raft(e.to_string()))?,
        );
        let log_store =
            store::LogStore::open(dir).map_err(|e| ClusterError::Storage(e.to_string()))?;
        let (tx, changes) = watch::channel(0u64);
        let sm = state_machine::StateMachine::open(dir, tx)
            .map_err(|e| ClusterError::Storage(e.to_string()))?;
        let image = sm.image_handle();
        let raft = Raft::new(node_id, config, network::Network, log_store, sm)
            .await
            .map_err(|e| ClusterError::Raft(e.to_string()))?;
        if !raft
            .is_initialized()
            .await
            .map_err(|e| ClusterError::Raft(e.to_string()))?
        {
            let mut members = BTreeMap::new();
            members.insert(node_id, BasicNode::default());
            raft.initialize(members)
                .await
                .map_err(|e| ClusterError::Raft(e.to_string()))?;
            tracing::info!(node_id, "bootstrapped a one-voter metadata quorum");
        }
        let wait = Duration::from_secs(10);
        raft.wait(Some(wait))
            .current_leader(node_id, "metadata leader elected")
            .await
            .map_err(|_| ClusterError::NoLeader(wait))?;
        // Make sure everything committed before a restart is applied before serving.
        let _ = raft.ensure_linearizable().await;
        Ok(Self {
            raft,
            image,
            changes,
        })
    }

    /// The current metadata image (a consistent snapshot; cheap).
    pub fn image(&self) -> Arc<MetadataImage> {
        match self.image.read() {
            Ok(g) => g.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// This node's id in the quorum.
    pub fn node_id(&self) -> u64 {
        self.raft.metrics().borrow().id
    }

    /// Whether this node currently leads the quorum (and so runs the controller).
    pub fn is_leader(&self) -> bool {
        let m = self.raft.metrics();
        let m = m.borrow();
        m.current_leader == Some(m.id)
    }

    /// The node id of the quorum's current leader (the controller), or -1 while none is
    /// known.
    pub fn controller_id(&self) -> i32 {
        self.raft
            .metrics()
            .borrow()
            .current_leader
            .map_or(-1, |id| id as i32)
    }

    /// A receiver that changes whenever a command is applied.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.clone()
    }

    /// Proposes a change; returns once it is committed and applied, or why it was rejected.
    pub async fn propose(&self, cmd: MetadataCommand) -> Result<(), ClusterError> {
        self.propose_for(cmd).await.map(|_| ())
    }

    /// Like [`propose`](Self::propose), returning what the command produced (the producer
    /// ids an `AllocateProducerIds` reserved).
    pub async fn propose_for(&self, cmd: MetadataCommand) -> Result<Applied, ClusterError> {
        let resp = self
            .raft
            .client_write(cmd)
            .await
            .map_err(|e| ClusterError::Raft(e.to_string()))?;
        resp.data.map_err(ClusterError::Rejected)
    }

    pub async fn shutdown(&self) {
        if let Err(e) = self.raft.shutdown().await {
            tracing::warn!(error = %e, "metadata quorum shutdown");
        }
    }
}
