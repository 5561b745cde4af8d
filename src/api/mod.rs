//! Kafka API dispatch: decodes a request frame with the kafka-protocol codecs, runs the
//! handler for its API family, and encodes the reply.
//!
//! One module per API family. Handlers see decoded messages and the `Broker`; they never touch
//! sockets. Kafka error codes are chosen in `error.rs` only.

mod admin;
mod configs;
mod consumer_groups;
mod elect;
mod error;
mod fetch;
mod groups;
mod list_offsets;
mod log_dirs;
mod metadata;
mod offsets;
mod produce;
mod producer_ids;
mod reassign;
pub mod splice;
mod topics;
pub mod versions;

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use bytes::{BufMut, Bytes};
use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, StrBytes};

use crate::broker::Broker;
use crate::server::frame::HeaderPrefix;

pub use error::error_code;

/// What to send back for one request.
pub enum Reply {
    /// The encoded response frame.
    Now(Bytes),
    /// A response frame sent in pieces: encoded bytes and ranges of segment files sent as
    /// they are (a Fetch; see [`splice`]).
    Spliced(Vec<splice::Chunk>),
    /// A response that completes later (a write waiting for its fsync); sent in order.
    Later(Pin<Box<dyn Future<Output = Bytes> + Send>>),
    /// No response at all (Produce with acks=0).
    Nothing,
}

/// A request the broker will not answer; the connection is closed, as Kafka does.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("request header too short")]
    ShortHeader,
    #[error("unknown or unsupported API key {0}")]
    UnknownApi(i16),
    #[error("{api:?} version {version} is not supported (supported: {min}-{max})")]
    UnsupportedVersion {
        api: ApiKey,
        version: i16,
        min: i16,
        max: i16,
    },
    #[error("malformed {api:?} v{version} request: {source}")]
    Malformed {
        api: ApiKey,
        version: i16,
        source: anyhow::Error,
    },
    #[error("cannot encode {api:?} v{version} response: {source}")]
    Encode {
        api: ApiKey,
        version: i16,
        source: anyhow::Error,
    },
}

/// The decoded request context handlers need.
pub struct Ctx {
    pub api: ApiKey,
    pub version: i16,
    pub header: RequestHeader,
    /// The client's address (group members report it as their host).
    pub peer: SocketAddr,
}

impl Ctx {
    /// Encodes `resp` as a complete response frame (size prefix, header, body).
    pub fn encode<R: Encodable + HeaderVersion>(&self, resp: &R) -> Result<Bytes, ApiError> {
        encode_frame(self.api, self.version, self.header.correlation_id, resp)
    }

    pub fn reply<R: Encodable + HeaderVersion>(&self, resp: &R) -> Result<Reply, ApiError> {
        self.encode(resp).map(Reply::Now)
    }

    /// [`Ctx::reply`] for a response whose record sets include file ranges, each standing in
    /// the response as its marker (see [`splice`]). `flexible`: the version encodes record
    /// sets as compact bytes.
    pub fn reply_spliced<R: Encodable + HeaderVersion>(
        &self,
        resp: &R,
        flexible: bool,
        regions: Vec<(splice::Marker, crate::log::FileRegion)>,
    ) -> Result<Reply, ApiError> {
        let frame = self.encode(resp)?;
        if regions.is_empty() {
            return Ok(Reply::Now(frame));
        }
        splice::splice(&frame, flexible, regions)
            .map(Reply::Spliced)
            .map_err(|e| ApiError::Encode {
                api: self.api,
                version: self.version,
                source: anyhow::anyhow!(e),
            })
    }
}

fn encode_frame<R: Encodable + HeaderVersion>(
    api: ApiKey,
    version: i16,
    correlation_id: i32,
    resp: &R,
) -> Result<Bytes, ApiError> {
    let err = |source| ApiError::Encode {
        api,
        version,
        source,
    };
    let header = ResponseHeader::default().with_correlation_id(correlation_id);
    // Size the buffer once: a Fetch response can be tens of MiB.
    let body_size = resp.compute_size(version).map_err(err)?;
    let mut buf = crate::bufpool::take(4 + 8 + body_size);
    buf.put_i32(0);
    header
        .encode(&mut buf, R::header_version(version))
        .map_err(err)?;
    resp.encode(&mut buf, version).map_err(err)?;
    let size = (buf.len() - 4) as i32;
    buf[..4].copy_from_slice(&size.to_be_bytes());
    Ok(crate::bufpool::freeze(buf))
}

/// Decodes and serves one request frame (without its size prefix).
pub async fn handle(
    broker: &Arc<Broker>,
    frame: Bytes,
    peer: SocketAddr,
) -> Result<Reply, ApiError> {
    let prefix = HeaderPrefix::parse(&frame).ok_or(ApiError::ShortHeader)?;
    let api = ApiKey::try_from(prefix.api_key).map_err(|_| ApiError::UnknownApi(prefix.api_key))?;
    let range = versions::supported(api).ok_or(ApiError::UnknownApi(prefix.api_key))?;
    let version = prefix.api_version;
    if !(range.0..=range.1).contains(&version) {
        if api == ApiKey::ApiVersions {
            // KIP-511: answer with a v0 body listing our ranges; the client retries lower.
            return Ok(Reply::Now(versions::unsupported_version_reply(
                prefix.correlation_id,
            )?));
        }
        return Err(ApiError::UnsupportedVersion {
            api,
            version,
            min: range.0,
            max: range.1,
        });
    }
    let mut buf = frame;
    let malformed = |source| ApiError::Malformed {
        api,
        version,
        source,
    };
    let header =
        RequestHeader::decode(&mut buf, api.request_header_version(version)).map_err(malformed)?;
    let ctx = Ctx {
        api,
        version,
        header,
        peer,
    };
    macro_rules! body {
        () => {
            Decodable::decode(&mut buf, version).map_err(malformed)?
        };
    }
    match api {
        ApiKey::ApiVersions => versions::handle(&ctx, body!()),
        ApiKey::Metadata => metadata::handle(broker, &ctx, body!()).await,
        ApiKey::Produce => produce::handle(broker, &ctx, body!()).await,
        ApiKey::InitProducerId => producer_ids::init(broker, &ctx, body!()).await,
        ApiKey::Fetch => fetch::handle(broker, &ctx, body!()).await,
        ApiKey::ListOffsets => list_offsets::handle(broker, &ctx, body!()).await,
        ApiKey::CreateTopics => topics::create(broker, &ctx, body!()).await,
        ApiKey::DeleteTopics => topics::delete(broker, &ctx, body!()).await,
        ApiKey::CreatePartitions => topics::create_partitions(broker, &ctx, body!()).await,
        ApiKey::DescribeConfigs => configs::describe(broker, &ctx, body!()),
        ApiKey::AlterConfigs => configs::alter(broker, &ctx, body!()).await,
        ApiKey::IncrementalAlterConfigs => configs::incremental_alter(broker, &ctx, body!()).await,
        ApiKey::DescribeCluster => admin::describe_cluster(broker, &ctx, body!()),
        ApiKey::ElectLeaders => elect::handle(broker, &ctx, body!()).await,
        ApiKey::AlterPartitionReassignments => reassign::alter(broker, &ctx, body!()).await,
        ApiKey::ListPartitionReassignments => reassign::list(broker, &ctx, body!()),
        ApiKey::DeleteRecords => admin::delete_records(broker, &ctx, body!()).await,
        ApiKey::OffsetForLeaderEpoch => admin::offset_for_leader_epoch(broker, &ctx, body!()),
        ApiKey::DescribeLogDirs => log_dirs::describe(broker, &ctx, body!()),
        ApiKey::FindCoordinator => groups::find_coordinator(broker, &ctx, body!()),
        ApiKey::JoinGroup => groups::join(broker, &ctx, body!()).await,
        ApiKey::SyncGroup => groups::sync(broker, &ctx, body!()).await,
        ApiKey::Heartbeat => groups::heartbeat(broker, &ctx, body!()),
        ApiKey::LeaveGroup => groups::leave(broker, &ctx, body!()),
        ApiKey::ListGroups => groups::list(broker, &ctx, body!()),
        ApiKey::DescribeGroups => groups::describe(broker, &ctx, body!()),
        ApiKey::DeleteGroups => groups::delete(broker, &ctx, body!()).await,
        ApiKey::OffsetCommit => offsets::commit(broker, &ctx, body!()).await,
        ApiKey::OffsetFetch => offsets::fetch(broker, &ctx, body!()),
        ApiKey::OffsetDelete => offsets::delete(broker, &ctx, body!()).await,
        ApiKey::ConsumerGroupHeartbeat => consumer_groups::heartbeat(broker, &ctx, body!()).await,
        ApiKey::ConsumerGroupDescribe => consumer_groups::describe(broker, &ctx, body!()),
        _ => Err(ApiError::UnknownApi(prefix.api_key)),
    }
}

pub(crate) fn str_bytes(s: impl Into<String>) -> StrBytes {
    StrBytes::from_string(s.into())
}

/// Whether this broker leads `topic`-`index` in `image`, returning the leader epoch: a
/// client request for a partition led elsewhere gets NOT_LEADER_OR_FOLLOWER (and refreshes
/// its metadata), one with no leader LEADER_NOT_AVAILABLE. A client that names the leader
/// epoch it knows (`current_epoch`, -1 = none) gets FENCED_LEADER_EPOCH when that is older
/// than the partition's and UNKNOWN_LEADER_EPOCH when newer (KIP-320). Unknown topics and
/// partitions pass with epoch 0: the caller answers those.
pub(crate) fn check_leader(
    image: &crate::cluster::MetadataImage,
    topic: &str,
    index: i32,
    me: i32,
    current_epoch: i32,
) -> Result<i32, error::ServeError> {
    let Some(p) = image.topic(topic).and_then(|t| t.partition(index)) else {
        return Ok(0);
    };
    let name = || format!("{topic}-{index}");
    match p.leader {
        _ if current_epoch >= 0 && current_epoch < p.epoch => Err(
            error::ServeError::FencedLeaderEpoch(name(), current_epoch, p.epoch),
        ),
        _ if current_epoch > p.epoch => Err(error::ServeError::UnknownLeaderEpoch(
            name(),
            current_epoch,
            p.epoch,
        )),
        Some(leader) if leader == me => Ok(p.epoch),
        Some(_) => Err(error::ServeError::NotLeaderOrFollower(name())),
        None => Err(error::ServeError::LeaderNotAvailable(name())),
    }
}
