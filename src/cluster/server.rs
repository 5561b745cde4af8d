//! The gRPC server on `raft_listen`: routes `/strata.raft.Raft/<method>` to this node's Raft
//! (the Raft RPCs) or to the handlers below (forwarded proposals, joins, membership changes,
//! status). A request that only the leader can serve is passed on to the leader once by the
//! node that received it.

use std::collections::BTreeSet;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use openraft::error::{ClientWriteError, RaftError};
use openraft::{BasicNode, ChangeMembers, Raft, ServerState};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::net::TcpListener;
use tonic::body::Body;
use tonic::server::{Grpc, UnaryService};
use tonic::Status;

use super::rpc::{
    method, BytesCodec, NodeRequest, NodeStatus, Peers, Proposed, Refused, MAX_MESSAGE_BYTES,
};
use super::types::{MetadataCommand, TypeConfig};

/// How long a membership change may take on the leader (adding a voter first waits for it to
/// catch up as a learner).
pub const MEMBERSHIP_TIMEOUT: Duration = Duration::from_secs(30);

/// What the handlers need: this node's Raft and the channels to its peers.
pub struct Node {
    pub raft: Raft<TypeConfig>,
    pub peers: Arc<Peers>,
}

impl Node {
    /// The leader this node knows of, as (id, raft address).
    pub fn leader(&self) -> Option<(u64, String)> {
        let m = self.raft.metrics();
        let m = m.borrow();
        let id = m.current_leader?;
        let addr = m
            .membership_config
            .membership()
            .get_node(&id)
            .map(|n| n.addr.clone())?;
        Some((id, addr))
    }

    pub fn status(&self) -> NodeStatus {
        let m = self.raft.metrics();
        let m = m.borrow();
        let membership = m.membership_config.membership();
        let voters: BTreeSet<u64> = membership.voter_ids().collect();
        let mut status = NodeStatus {
            node_id: m.id,
            state: format!("{:?}", m.state),
            term: m.current_term,
            leader: m.current_leader,
            last_log_index: m.last_log_index,
            last_applied: m.last_applied.map(|l| l.index),
            snapshot_index: m.snapshot.map(|l| l.index),
            purged_index: m.purged.map(|l| l.index),
            voters: Default::default(),
            learners: Default::default(),
            replication: m.replication.as_ref().map(|r| {
                r.iter()
                    .map(|(id, log)| (*id, log.map(|l| l.index)))
                    .collect()
            }),
        };
        for (id, node) in membership.nodes() {
            let list = if voters.contains(id) {
                &mut status.voters
            } else {
                &mut status.learners
            };
            list.insert(*id, node.addr.clone());
        }
        status
    }
}

/// Serves the gRPC endpoint on `listener` until `stop` resolves.
pub async fn serve(
    listener: TcpListener,
    node: Arc<Node>,
    stop: impl Future<Output = ()> + Send + 'static,
) {
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    let res = tonic::transport::Server::builder()
        .serve_with_incoming_shutdown(Router { node }, incoming, stop)
        .await;
    if let Err(e) = res {
        tracing::error!(error = %e, "raft RPC server stopped");
    }
}

#[derive(Clone)]
struct Router {
    node: Arc<Node>,
}

impl tower_service::Service<http::Request<Body>> for Router {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        let method = req
            .uri()
            .path()
            .strip_prefix("/strata.raft.Raft/")
            .and_then(|m| method::ALL.iter().find(|known| **known == m).copied());
        let Some(method) = method else {
            let status = Status::unimplemented(format!("no method {}", req.uri().path()));
            return Box::pin(async move { Ok(status.into_http()) });
        };
        let call = Call {
            node: self.node.clone(),
            method,
        };
        Box::pin(async move {
            let mut grpc = Grpc::new(BytesCodec)
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES);
            Ok(grpc.unary(call, req).await)
        })
    }
}

struct Call {
    node: Arc<Node>,
    method: &'static str,
}

impl UnaryService<Bytes> for Call {
    type Response = Bytes;
    type Future = Pin<Box<dyn Future<Output = Result<tonic::Response<Bytes>, Status>> + Send>>;

    fn call(&mut self, request: tonic::Request<Bytes>) -> Self::Future {
        let (node, method) = (self.node.clone(), self.method);
        Box::pin(async move {
            handle(&node, method, request.into_inner())
                .await
                .map(tonic::Response::new)
        })
    }
}

fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, Status> {
    serde_json::from_slice(body).map_err(|e| Status::invalid_argument(e.to_string()))
}

fn encode<T: Serialize>(value: &T) -> Result<Bytes, Status> {
    serde_json::to_vec(value)
        .map(Bytes::from)
        .map_err(|e| Status::internal(e.to_string()))
}

async fn handle(node: &Arc<Node>, method: &str, body: Bytes) -> Result<Bytes, Status> {
    let raft = &node.raft;
    match method {
        method::APPEND_ENTRIES => encode(&raft.append_entries(decode(&body)?).await),
        method::VOTE => encode(&raft.vote(decode(&body)?).await),
        method::INSTALL_SNAPSHOT => encode(&raft.install_snapshot(decode(&body)?).await),
        method::PROPOSE => encode(&propose(raft, decode(&body)?).await),
        method::READ_INDEX => encode(&read_index(raft).await),
        method::JOIN | method::ADD_VOTER | method::REMOVE => {
            encode(&membership(node, method, decode(&body)?).await)
        }
        method::STATUS => encode(&node.status()),
        other => Err(Status::unimplemented(other.to_string())),
    }
}

fn not_leader(f: &openraft::error::ForwardToLeader<u64, BasicNode>) -> Refused {
    Refused::NotLeader {
        leader: f
            .leader_id
            .zip(f.leader_node.as_ref().map(|n| n.addr.clone())),
    }
}

async fn propose(raft: &Raft<TypeConfig>, cmd: MetadataCommand) -> Result<Proposed, Refused> {
    match raft.client_write(cmd).await {
        Ok(resp) => Ok(Proposed {
            index: resp.log_id.index,
            result: resp.data,
        }),
        Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => Err(not_leader(&f)),
        // Stopping (or stopped): not the leader any more, so the proposer looks for another.
        Err(RaftError::Fatal(_)) => Err(Refused::NotLeader { leader: None }),
        Err(e) => Err(Refused::Failed(e.to_string())),
    }
}

async fn read_index(raft: &Raft<TypeConfig>) -> Result<Option<u64>, Refused> {
    use openraft::error::CheckIsLeaderError;
    match raft.ensure_linearizable().await {
        Ok(log_id) => Ok(log_id.map(|l| l.index)),
        Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(f))) => Err(not_leader(&f)),
        Err(RaftError::Fatal(_)) => Err(Refused::NotLeader { leader: None }),
        Err(e) => Err(Refused::Failed(e.to_string())),
    }
}

type WriteError = RaftError<u64, ClientWriteError<u64, BasicNode>>;

/// Join (add as learner), AddVoter or Remove on the leader; elsewhere passed on to it.
async fn membership(node: &Arc<Node>, method: &str, req: NodeRequest) -> Result<String, Refused> {
    let local = tokio::time::timeout(MEMBERSHIP_TIMEOUT, change(node, method, &req)).await;
    let err = match local {
        Err(_) => {
            return Err(Refused::Failed(format!(
                "the membership change did not complete within {MEMBERSHIP_TIMEOUT:?}"
            )))
        }
        Ok(Ok(msg)) => return Ok(msg),
        Ok(Err(e)) => e,
    };
    let f = match err {
        ChangeError::Raft(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => f,
        ChangeError::Raft(RaftError::Fatal(_)) => return Err(Refused::NotLeader { leader: None }),
        ChangeError::Raft(e) => return Err(Refused::Failed(e.to_string())),
        ChangeError::Refused(r) => return Err(r),
    };
    let refused = not_leader(&f);
    let Refused::NotLeader {
        leader: Some((_, addr)),
    } = &refused
    else {
        return Err(refused);
    };
    if req.forwarded {
        return Err(refused);
    }
    let fwd = NodeRequest {
        forwarded: true,
        ..req
    };
    node.peers
        .call::<_, Result<String, Refused>>(addr, method, &fwd, MEMBERSHIP_TIMEOUT)
        .await
        .map_err(|e| Refused::Failed(format!("passing the request on to the leader: {e}")))?
}

enum ChangeError {
    Raft(WriteError),
    Refused(Refused),
}

impl From<WriteError> for ChangeError {
    fn from(e: WriteError) -> Self {
        ChangeError::Raft(e)
    }
}

async fn change(node: &Node, method: &str, req: &NodeRequest) -> Result<String, ChangeError> {
    let raft = &node.raft;
    let id = req.node_id;
    match method {
        method::JOIN => {
            raft.add_learner(id, BasicNode::new(&req.addr), false)
                .await?;
            tracing::info!(node_id = id, addr = %req.addr, "added a metadata learner");
            Ok(format!("node {id} is a learner"))
        }
        method::ADD_VOTER => {
            // Catch the node up as a learner first, so the quorum does not wait on it.
            raft.add_learner(id, BasicNode::new(&req.addr), true)
                .await?;
            raft.change_membership(ChangeMembers::AddVoterIds([id].into()), false)
                .await?;
            tracing::info!(node_id = id, addr = %req.addr, "added a metadata voter");
            Ok(format!("node {id} is a voter"))
        }
        method::REMOVE => {
            let status = node.status();
            let change = if status.voters.contains_key(&id) {
                ChangeMembers::RemoveVoters([id].into())
            } else if status.learners.contains_key(&id) {
                ChangeMembers::RemoveNodes([id].into())
            } else if status.state == format!("{:?}", ServerState::Leader) {
                return Err(ChangeError::Refused(Refused::Failed(format!(
                    "node {id} is not a member of the metadata quorum"
                ))));
            } else {
                // Let the leader, whose membership is authoritative, decide.
                ChangeMembers::RemoveNodes([id].into())
            };
            raft.change_membership(change, false).await?;
            tracing::info!(node_id = id, "removed a node from the metadata quorum");
            Ok(format!("node {id} removed"))
        }
        other => Err(ChangeError::Refused(Refused::Failed(format!(
            "not a membership method: {other}"
        )))),
    }
}
