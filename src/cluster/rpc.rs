//! The wire between brokers: unary gRPC calls on service `strata.raft.Raft`, each message one
//! JSON document (openraft's own serde types for the Raft RPCs, the types below for the rest)
//! carried by a raw-bytes codec. No protobuf schema: both ends are this crate.
//!
//! [`Peers`] keeps one lazily connected tonic `Channel` per peer address and maps transport
//! failures to [`RpcError`], telling "nothing answered at that address" (the call was not
//! delivered) from a timeout or a broken reply.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};

use super::types::{Applied, MetadataError};

/// Largest message either side accepts. Snapshots travel in chunks of at most
/// [`SNAPSHOT_CHUNK_BYTES`], which JSON (bytes as numbers) inflates up to ~4x.
pub const MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;
pub const SNAPSHOT_CHUNK_BYTES: u64 = 1024 * 1024;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// The gRPC methods; the path is `/strata.raft.Raft/<name>`.
pub mod method {
    pub const APPEND_ENTRIES: &str = "AppendEntries";
    pub const VOTE: &str = "Vote";
    pub const INSTALL_SNAPSHOT: &str = "InstallSnapshot";
    /// A metadata command, from a broker that is not the leader.
    pub const PROPOSE: &str = "Propose";
    /// The leader's commit index, confirmed with a quorum (for a follower to catch up to).
    pub const READ_INDEX: &str = "ReadIndex";
    /// A new broker asks to be added as a learner.
    pub const JOIN: &str = "Join";
    pub const ADD_VOTER: &str = "AddVoter";
    pub const REMOVE: &str = "Remove";
    /// This node's own view of the quorum.
    pub const STATUS: &str = "Status";

    pub const ALL: [&str; 9] = [
        APPEND_ENTRIES,
        VOTE,
        INSTALL_SNAPSHOT,
        PROPOSE,
        READ_INDEX,
        JOIN,
        ADD_VOTER,
        REMOVE,
        STATUS,
    ];
}

pub fn path(method: &str) -> String {
    format!("/strata.raft.Raft/{method}")
}

/// A command the leader applied: its log index (for the proposer to wait on locally) and what
/// the state machine answered.
#[derive(Debug, Serialize, Deserialize)]
pub struct Proposed {
    pub index: u64,
    pub result: Result<Applied, MetadataError>,
}

/// Why a node did not do what a forwarded request asked.
#[derive(Debug, Clone, Serialize, Deserialize, thiserror::Error)]
pub enum Refused {
    /// This node is not the leader; the leader it knows of, if any, as (id, raft address).
    #[error("not the metadata leader (leader: {leader:?})")]
    NotLeader { leader: Option<(u64, String)> },
    #[error("{0}")]
    Failed(String),
}

/// A node joining or being promoted: its id and raft address.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeRequest {
    pub node_id: u64,
    pub addr: String,
    /// Set by the node that passed the request on to the leader, so it is passed on once.
    #[serde(default)]
    pub forwarded: bool,
}

/// One node's view of the quorum, as `strata cluster status` shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeStatus {
    pub node_id: u64,
    /// Leader, Follower, Candidate or Learner.
    pub state: String,
    pub term: u64,
    pub leader: Option<u64>,
    pub last_log_index: Option<u64>,
    pub last_applied: Option<u64>,
    pub snapshot_index: Option<u64>,
    /// Log entries up to here are compacted away (covered by the snapshot).
    pub purged_index: Option<u64>,
    pub voters: BTreeMap<u64, String>,
    pub learners: BTreeMap<u64, String>,
    /// On the leader: the highest log index known replicated to each node.
    pub replication: Option<BTreeMap<u64, Option<u64>>>,
}

/// How a call to a peer failed.
#[derive(Debug, thiserror::Error)]
pub enum RpcError {
    /// Nothing answered at the address (refused, reset, no route, the node is going away):
    /// the request was most likely not processed.
    #[error("{addr} is unreachable: {message}")]
    Unreachable { addr: String, message: String },
    #[error("{addr} did not answer within {timeout:?}")]
    Timeout { addr: String, timeout: Duration },
    #[error("{addr} failed the call: {status}")]
    Failed { addr: String, status: Box<Status> },
    #[error("{addr} sent a reply that does not decode: {message}")]
    Decode { addr: String, message: String },
}

/// One lazily connected channel per peer address, shared by the Raft network, forwarding and
/// the admin tool.
#[derive(Default)]
pub struct Peers {
    channels: Mutex<HashMap<String, Channel>>,
}

impl Peers {
    fn channel(&self, addr: &str) -> Result<Channel, RpcError> {
        let mut map = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(ch) = map.get(addr) {
            return Ok(ch.clone());
        }
        let unreachable = |message: String| RpcError::Unreachable {
            addr: addr.to_string(),
            message,
        };
        if addr.is_empty() {
            return Err(unreachable("the node has no raft address".into()));
        }
        let ch = Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|e| unreachable(e.to_string()))?
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true)
            .connect_lazy();
        map.insert(addr.to_string(), ch.clone());
        Ok(ch)
    }

    /// Calls `method` on the node at `addr` with `req`, giving up after `timeout`.
    pub async fn call<Req, Resp>(
        &self,
        addr: &str,
        method: &str,
        req: &Req,
        timeout: Duration,
    ) -> Result<Resp, RpcError>
    where
        Req: Serialize + ?Sized,
        Resp: DeserializeOwned,
    {
        let body = Bytes::from(serde_json::to_vec(req).map_err(|e| RpcError::Decode {
            addr: addr.to_string(),
            message: format!("cannot encode the request: {e}"),
        })?);
        let channel = self.channel(addr)?;
        let path: http::uri::PathAndQuery = path(method).parse().expect("static method path");
        let call = async move {
            let mut grpc = tonic::client::Grpc::new(channel)
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES);
            grpc.ready()
                .await
                .map_err(|e| Status::unavailable(e.to_string()))?;
            grpc.unary(tonic::Request::new(body), path, BytesCodec)
                .await
                .map(|r| r.into_inner())
        };
        let reply = match tokio::time::timeout(timeout, call).await {
            Err(_) => {
                return Err(RpcError::Timeout {
                    addr: addr.to_string(),
                    timeout,
                })
            }
            // Connection-level failures: refused, reset, or a GOAWAY from a node shutting
            // down (which promises the request was not processed).
            Ok(Err(status))
                if status.code() == Code::Unavailable
                    || std::error::Error::source(&status)
                        .is_some_and(|s| s.is::<tonic::transport::Error>()) =>
            {
                return Err(RpcError::Unreachable {
                    addr: addr.to_string(),
                    message: status.message().to_string(),
                })
            }
            Ok(Err(status)) => {
                return Err(RpcError::Failed {
                    addr: addr.to_string(),
                    status: Box::new(status),
                })
            }
            Ok(Ok(bytes)) => bytes,
        };
        serde_json::from_slice(&reply).map_err(|e| RpcError::Decode {
            addr: addr.to_string(),
            message: e.to_string(),
        })
    }
}

/// Passes message bytes through unchanged; the JSON is done by the caller.
#[derive(Debug, Clone, Copy, Default)]
pub struct BytesCodec;

impl Codec for BytesCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = BytesCodec;
    type Decoder = BytesCodec;

    fn encoder(&mut self) -> Self::Encoder {
        BytesCodec
    }

    fn decoder(&mut self) -> Self::Decoder {
        BytesCodec
    }
}

impl Encoder for BytesCodec {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put(item);
        Ok(())
    }
}

impl Decoder for BytesCodec {
    type Item = Bytes;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        let len = src.remaining();
        Ok(Some(src.copy_to_bytes(len)))
    }
}
