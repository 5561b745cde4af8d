//! Bringing the metadata quorum up: open the Raft log and state machine, start the raft RPC
//! server, then bootstrap (a one-voter quorum, or every configured voter with the same voter
//! set) or join (a broker that is not a voter asks a voter to add it as a learner), and wait,
//! bounded, until a leader is known and this node has applied everything committed before.
//!
//! The voter list only matters on a fresh data dir: afterwards the membership in the Raft log
//! is authoritative (changed with `strata cluster add-voter` / `remove`).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::error::{InitializeError, RaftError};
use openraft::{BasicNode, Config, Raft, ServerState};
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::network::Network;
use super::rpc::{self, method, NodeRequest, NodeStatus, Peers, Refused};
use super::server::{self, Node};
use super::{state_machine, store, ClusterError, Metadata};

/// How often a node waiting for the quorum says so.
const WAIT_LOG_INTERVAL: Duration = Duration::from_secs(2);
/// One bring-up RPC (join, read index, reachability probe).
const BRING_UP_RPC_TIMEOUT: Duration = Duration::from_secs(2);

/// Who is in the quorum and how to reach this node.
#[derive(Debug, Clone)]
pub struct QuorumConfig {
    pub node_id: u64,
    /// Address the raft RPC server binds. Empty = no server (a one-voter quorum only).
    pub raft_listen: String,
    /// Voters by node id -> raft address. Empty = this node alone is the voter.
    pub voters: BTreeMap<u64, String>,
    /// Take a snapshot (and compact the log) after this many applied entries.
    pub snapshot_interval_entries: u64,
    /// How long start-up waits for a leader (and a learner for the quorum to accept it)
    /// before failing with [`ClusterError::NoLeader`].
    pub quorum_timeout: Duration,
}

impl QuorumConfig {
    /// A one-voter quorum without an RPC server.
    pub fn single(node_id: u64) -> Self {
        Self {
            node_id,
            raft_listen: String::new(),
            voters: BTreeMap::new(),
            snapshot_interval_entries: 1000,
            quorum_timeout: Duration::from_secs(60),
        }
    }

    fn multi(&self) -> bool {
        !self.voters.is_empty()
    }

    /// The raft address peers reach this node at.
    fn advertised(&self) -> &str {
        self.voters
            .get(&self.node_id)
            .map_or(&self.raft_listen, |a| a)
    }
}

impl Metadata {
    /// Opens the metadata quorum stored under `dir`, bootstrapping or joining it on first
    /// start (see the module doc).
    pub async fn start(
        dir: &Path,
        quorum: &QuorumConfig,
        cluster_id: &str,
    ) -> Result<Self, ClusterError> {
        let multi = quorum.multi();
        // Over a network, heartbeats and elections get more slack than in-process.
        let (heartbeat, election) = if multi {
            (150, (750, 1500))
        } else {
            (100, (200, 400))
        };
        let config = Config {
            cluster_name: cluster_id.to_string(),
            heartbeat_interval: heartbeat,
            election_timeout_min: election.0,
            election_timeout_max: election.1,
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(
                quorum.snapshot_interval_entries,
            ),
            max_in_snapshot_log_to_keep: quorum.snapshot_interval_entries.min(100),
            snapshot_max_chunk_size: rpc::SNAPSHOT_CHUNK_BYTES,
            ..Default::default()
        };
        let config = Arc::new(
            config
                .validate()
                .map_err(|e| ClusterError::Raft(e.to_string()))?,
        );
        let listener = match quorum.raft_listen.as_str() {
            "" => None,
            addr => match TcpListener::bind(addr).await {
                Ok(l) => Some(l),
                Err(source) if multi => {
                    return Err(ClusterError::Listen {
                        addr: addr.to_string(),
                        source,
                    })
                }
                Err(e) => {
                    // A lone broker needs no peers; as with http_listen, run without it.
                    tracing::warn!(raft_listen = addr, error = %e,
                        "cannot listen for raft RPC; running without it (strata cluster commands will not reach this broker)");
                    None
                }
            },
        };
        let log_store =
            store::LogStore::open(dir).map_err(|e| ClusterError::Storage(e.to_string()))?;
        let (tx, changes) = watch::channel(0u64);
        let sm = state_machine::StateMachine::open(dir, tx)
            .map_err(|e| ClusterError::Storage(e.to_string()))?;
        let image = sm.image_handle();
        let peers = Arc::new(Peers::default());
        let network = Network {
            peers: peers.clone(),
        };
        let raft = Raft::new(quorum.node_id, config, network, log_store, sm)
            .await
            .map_err(|e| ClusterError::Raft(e.to_string()))?;
        let node = Arc::new(Node {
            raft: raft.clone(),
            peers,
        });
        let (stop, mut stopped) = watch::channel(false);
        if let Some(listener) = listener {
            tracing::info!(raft_listen = %quorum.raft_listen, "raft RPC ready");
            let stopped = async move {
                let _ = stopped.wait_for(|s| *s).await;
            };
            tokio::spawn(server::serve(listener, node.clone(), stopped));
        }
        let metadata = Self {
            raft,
            node,
            image,
            changes,
            stop: Arc::new(stop),
        };
        let up = if multi {
            metadata.bring_up(quorum).await
        } else {
            metadata.bring_up_alone(quorum).await
        };
        if let Err(e) = up {
            metadata.shutdown().await;
            return Err(e);
        }
        Ok(metadata)
    }

    /// The one-voter quorum.
    async fn bring_up_alone(&self, quorum: &QuorumConfig) -> Result<(), ClusterError> {
        let node_id = quorum.node_id;
        if !self.initialized().await? {
            let mut members = BTreeMap::new();
            members.insert(node_id, BasicNode::new(&quorum.raft_listen));
            self.raft
                .initialize(members)
                .await
                .map_err(|e| ClusterError::Raft(e.to_string()))?;
            tracing::info!(node_id, "bootstrapped a one-voter metadata quorum");
        }
        let wait = Duration::from_secs(10);
        self.raft
            .wait(Some(wait))
            .current_leader(node_id, "metadata leader elected")
            .await
            .map_err(|_| ClusterError::NoLeader(wait))?;
        // Make sure everything committed before a restart is applied before serving.
        let _ = self.raft.ensure_linearizable().await;
        Ok(())
    }

    async fn initialized(&self) -> Result<bool, ClusterError> {
        self.raft
            .is_initialized()
            .await
            .map_err(|e| ClusterError::Raft(e.to_string()))
    }

    /// A node of a multi-voter quorum.
    async fn bring_up(&self, quorum: &QuorumConfig) -> Result<(), ClusterError> {
        let node_id = quorum.node_id;
        let deadline = Instant::now() + quorum.quorum_timeout;
        if !self.initialized().await? {
            if quorum.voters.contains_key(&node_id) {
                let members: BTreeMap<u64, BasicNode> = quorum
                    .voters
                    .iter()
                    .map(|(id, addr)| (*id, BasicNode::new(addr)))
                    .collect();
                // Every voter initializes with the same set, so voters that start together
                // agree. A voter that starts after the others formed the quorum waits to be
                // replicated to instead: its own election would only disturb the leader.
                if let Some(peer) = self.formed_by_peer(quorum).await {
                    tracing::info!(
                        node_id,
                        peer,
                        "metadata quorum already formed; waiting for the leader to reach this node"
                    );
                    return self.catch_up(quorum, deadline).await;
                }
                match self.raft.initialize(members).await {
                    Ok(()) => tracing::info!(
                        node_id,
                        voters = ?quorum.voters,
                        "bootstrapped a metadata quorum"
                    ),
                    Err(RaftError::APIError(InitializeError::NotAllowed(_))) => {
                        tracing::info!(node_id, "metadata quorum already formed by a peer")
                    }
                    Err(e) => return Err(ClusterError::Raft(e.to_string())),
                }
            } else {
                self.join_as_learner(quorum, deadline).await?;
            }
        }
        self.catch_up(quorum, deadline).await
    }

    /// A voter that already belongs to an initialized quorum, if any answers.
    async fn formed_by_peer(&self, quorum: &QuorumConfig) -> Option<u64> {
        let peers = &self.node.peers;
        let probes = quorum
            .voters
            .iter()
            .filter(|(id, _)| **id != quorum.node_id)
            .map(|(id, addr)| async move {
                let reply: Result<NodeStatus, _> = peers
                    .call(addr, method::STATUS, &(), BRING_UP_RPC_TIMEOUT)
                    .await;
                reply.ok().filter(|s| !s.voters.is_empty()).map(|_| *id)
            });
        futures::future::join_all(probes)
            .await
            .into_iter()
            .flatten()
            .next()
    }

    /// Asks the voters, one after another, to add this node as a learner, until one does.
    async fn join_as_learner(
        &self,
        quorum: &QuorumConfig,
        deadline: Instant,
    ) -> Result<(), ClusterError> {
        let req = NodeRequest {
            node_id: quorum.node_id,
            addr: quorum.advertised().to_string(),
            forwarded: false,
        };
        let mut next_log = Instant::now() + WAIT_LOG_INTERVAL;
        loop {
            let mut last = String::new();
            for addr in quorum.voters.values() {
                let reply: Result<Result<String, Refused>, _> = self
                    .node
                    .peers
                    .call(addr, method::JOIN, &req, BRING_UP_RPC_TIMEOUT)
                    .await;
                match reply {
                    Ok(Ok(_)) => {
                        tracing::info!(node_id = quorum.node_id, via = %addr,
                            "joined the metadata quorum as a learner");
                        return Ok(());
                    }
                    Ok(Err(r)) => last = format!("{addr}: {r}"),
                    Err(e) => last = e.to_string(),
                }
            }
            if Instant::now() >= deadline {
                tracing::error!(last_error = %last, "no voter added this node as a learner");
                return Err(ClusterError::NoLeader(quorum.quorum_timeout));
            }
            if Instant::now() >= next_log {
                tracing::info!(last_error = %last,
                    "waiting for the metadata quorum to accept this node as a learner");
                next_log = Instant::now() + WAIT_LOG_INTERVAL;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    /// Waits until a leader is known and confirms its commit index, then until this node has
    /// applied up to it, so the broker starts from current metadata.
    async fn catch_up(&self, quorum: &QuorumConfig, deadline: Instant) -> Result<(), ClusterError> {
        let mut metrics = self.raft.metrics();
        let mut next_log = Instant::now() + WAIT_LOG_INTERVAL;
        let mut last = String::from("no leader elected yet");
        loop {
            let (state, leader) = {
                let m = metrics.borrow_and_update();
                (m.state, m.current_leader)
            };
            let read_index = if state == ServerState::Leader {
                match self.raft.ensure_linearizable().await {
                    Ok(log_id) => Some(log_id.map(|l| l.index)),
                    Err(e) => {
                        last = e.to_string();
                        None
                    }
                }
            } else if let Some((id, addr)) = leader.and(self.node.leader()) {
                let reply: Result<Result<Option<u64>, Refused>, _> = self
                    .node
                    .peers
                    .call(&addr, method::READ_INDEX, &(), BRING_UP_RPC_TIMEOUT)
                    .await;
                match reply {
                    Ok(Ok(index)) => Some(index),
                    Ok(Err(r)) => {
                        last = format!("leader {id}: {r}");
                        None
                    }
                    Err(e) => {
                        last = format!("leader {id}: {e}");
                        None
                    }
                }
            } else {
                None
            };
            if let Some(index) = read_index {
                let left = deadline.saturating_duration_since(Instant::now());
                self.raft
                    .wait(Some(left.max(Duration::from_secs(1))))
                    .applied_index_at_least(index, "caught up with the metadata leader")
                    .await
                    .map_err(|_| ClusterError::NoLeader(quorum.quorum_timeout))?;
                let status = self.node.status();
                tracing::info!(
                    node_id = quorum.node_id,
                    leader = ?status.leader,
                    term = status.term,
                    state = %status.state,
                    applied = ?status.last_applied,
                    "metadata quorum ready"
                );
                return Ok(());
            }
            if Instant::now() >= deadline {
                tracing::error!(last_error = %last, "metadata quorum not ready");
                return Err(ClusterError::NoLeader(quorum.quorum_timeout));
            }
            if Instant::now() >= next_log {
                self.log_quorum_wait(quorum, &last).await;
                next_log = Instant::now() + WAIT_LOG_INTERVAL;
            }
            let _ = tokio::time::timeout(Duration::from_millis(200), metrics.changed()).await;
        }
    }

    /// Says how many voters answer, so an operator sees what the start-up is waiting for.
    async fn log_quorum_wait(&self, quorum: &QuorumConfig, last: &str) {
        let status = self.node.status();
        let voters = if status.voters.is_empty() {
            quorum.voters.clone()
        } else {
            status.voters
        };
        let needed = voters.len() / 2 + 1;
        let peers = &self.node.peers;
        let probes = voters.iter().map(|(id, addr)| async move {
            if *id == quorum.node_id {
                return (*id, true);
            }
            let reply: Result<NodeStatus, _> = peers
                .call(addr, method::STATUS, &(), BRING_UP_RPC_TIMEOUT)
                .await;
            (*id, reply.is_ok())
        });
        let answers = futures::future::join_all(probes).await;
        let reachable = answers.iter().filter(|(_, ok)| *ok).count();
        let missing: Vec<u64> = answers
            .iter()
            .filter(|(_, ok)| !*ok)
            .map(|(id, _)| *id)
            .collect();
        tracing::info!(
            unreachable_voters = ?missing,
            waiting_for = %last,
            "waiting for metadata quorum: {reachable} of {} voters reachable, {needed} needed",
            voters.len()
        );
    }
}
