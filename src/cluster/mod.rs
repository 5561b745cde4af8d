//! Cluster metadata agreed through Raft (openraft).
//!
//! Owns the metadata state machine (topics, their ids, partition counts and configs, and the
//! producer id counter), the persistent Raft log under `<data_dir>/raft/`, the `Metadata`
//! handle the API layer uses to read the current image and to propose changes, the Raft
//! transport between brokers (gRPC on `raft_listen`, see [`rpc`] and `server.rs`), and
//! [`ProducerIds`], which hands out producer ids from blocks reserved through the log.
//!
//! A single broker runs a one-voter quorum. With `controller_quorum_voters` set, the listed
//! voters bootstrap one quorum together and any other broker joins it as a learner. Any
//! broker may propose: a follower or learner passes the command to the leader and returns once
//! its own state machine has applied it, so a change is durable in the Raft log and visible in
//! this broker's image before `propose` returns, wherever it was proposed.
//!
//! Must not touch: partition logs (the storage layer reconciles itself from the image).

pub mod admin;
mod bootstrap;
pub mod controller;
mod image;
mod network;
pub mod placement;
pub mod producer_ids;
#[cfg(test)]
mod quorum_tests;
pub mod rpc;
mod server;
mod state_machine;
mod store;
mod types;
pub mod voters;

pub use bootstrap::QuorumConfig;
pub use image::{BrokerRegistration, MetadataImage, RemoteLog, TopicMeta};
pub use producer_ids::ProducerIds;
pub use rpc::NodeStatus;
pub use types::{Applied, MetadataCommand, MetadataError};

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use openraft::error::{ClientWriteError, RaftError};
use openraft::Raft;
use tokio::sync::watch;

use rpc::{method, Proposed, Refused, RpcError};
use server::Node;
use types::TypeConfig;

/// How long a proposal on a follower keeps looking for a leader (an election in progress)
/// before it fails with [`ClusterError::NoLeader`].
const FORWARD_TIMEOUT: Duration = Duration::from_secs(10);
/// One forwarded proposal's round trip to the leader.
const FORWARD_RPC_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the proposer waits for its own state machine to apply a forwarded command.
const APPLY_TIMEOUT: Duration = Duration::from_secs(5);

/// Errors from the metadata layer.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("raft storage: {0}")]
    Storage(String),
    #[error("raft: {0}")]
    Raft(String),
    #[error("metadata quorum has no leader after {0:?}; is a majority of voters running?")]
    NoLeader(Duration),
    #[error("cannot listen for raft RPC on {addr} (raft_listen): {source}")]
    Listen {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Rpc(#[from] RpcError),
    #[error(transparent)]
    Rejected(#[from] MetadataError),
}

/// Read and change cluster metadata. Cheap to clone.
#[derive(Clone)]
pub struct Metadata {
    raft: Raft<TypeConfig>,
    node: Arc<Node>,
    image: Arc<RwLock<Arc<MetadataImage>>>,
    changes: watch::Receiver<u64>,
    /// Stops the raft RPC server.
    stop: Arc<watch::Sender<bool>>,
}

impl Metadata {
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

    /// This node's view of the quorum (leader, term, members, applied index).
    pub fn status(&self) -> NodeStatus {
        self.node.status()
    }

    /// Proposes a change; returns once it is committed and applied, or why it was rejected.
    pub async fn propose(&self, cmd: MetadataCommand) -> Result<(), ClusterError> {
        self.propose_for(cmd).await.map(|_| ())
    }

    /// Like [`propose`](Self::propose), returning what the command produced (the producer
    /// ids an `AllocateProducerIds` reserved).
    ///
    /// On a node that is not the leader the command is passed to the leader, and the answer
    /// returned once this node has applied the command too (read-your-writes for the API
    /// layer, which reads `image()` right after proposing). While no leader is known (an
    /// election) it retries for up to `FORWARD_TIMEOUT`. A leader that dies after receiving
    /// the command may or may not have committed it; the retry then sees the outcome (a
    /// `TopicExists`, say) rather than the original answer.
    pub async fn propose_for(&self, cmd: MetadataCommand) -> Result<Applied, ClusterError> {
        let started = Instant::now();
        let mut last_problem = String::from("no leader known");
        loop {
            let f = match self.raft.client_write(cmd.clone()).await {
                Ok(resp) => return resp.data.map_err(ClusterError::Rejected),
                Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => f,
                Err(e) => return Err(ClusterError::Raft(e.to_string())),
            };
            if let (Some(leader), Some(node)) = (f.leader_id, f.leader_node) {
                let reply: Result<Result<Proposed, Refused>, RpcError> = self
                    .node
                    .peers
                    .call(&node.addr, method::PROPOSE, &cmd, FORWARD_RPC_TIMEOUT)
                    .await;
                match reply {
                    Ok(Ok(p)) => {
                        self.wait_applied(p.index).await;
                        return p.result.map_err(ClusterError::Rejected);
                    }
                    Ok(Err(Refused::NotLeader { .. })) => {
                        last_problem = format!("node {leader} is no longer the leader");
                    }
                    Ok(Err(Refused::Failed(msg))) => return Err(ClusterError::Raft(msg)),
                    Err(e @ RpcError::Unreachable { .. }) => {
                        last_problem = format!("leader {leader}: {e}");
                    }
                    Err(e) => return Err(ClusterError::Rpc(e)),
                }
            }
            if started.elapsed() >= FORWARD_TIMEOUT {
                tracing::warn!(problem = %last_problem, "metadata proposal found no leader");
                return Err(ClusterError::NoLeader(FORWARD_TIMEOUT));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits (bounded) until this node's state machine has applied log `index`.
    async fn wait_applied(&self, index: u64) {
        if let Err(e) = self
            .raft
            .wait(Some(APPLY_TIMEOUT))
            .applied_index_at_least(Some(index), "forwarded proposal applied locally")
            .await
        {
            tracing::warn!(index, error = %e,
                "a forwarded metadata change is committed but not yet applied on this broker");
        }
    }

    pub async fn shutdown(&self) {
        let _ = self.stop.send(true);
        if let Err(e) = self.raft.shutdown().await {
            tracing::warn!(error = %e, "metadata quorum shutdown");
        }
    }
}
