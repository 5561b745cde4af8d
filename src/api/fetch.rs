//! Fetch: serves stored batches as they are on disk (no per-record work), honouring
//! `max_bytes` (at least one whole batch, KIP-74), `partition_max_bytes`, and long-polling
//! with `min_bytes`/`max_wait_ms`. Fetch sessions (KIP-227) are declined (session id 0),
//! so every fetch is a full fetch.
//!
//! Offsets of a tiered partition below its local log start are read from the object store
//! (`crate::tier`), concurrently, after the local partitions of the request are read. A
//! remote read that has not finished by the fetch's wait (at least
//! `tiering.remote_fetch_max_wait_ms`) leaves its partition empty in this response and goes on
//! filling the cache, so the client's next fetch finds it; it never holds up the local
//! partitions longer than that.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::fetch_request::FetchTopic;
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::{FetchRequest, FetchResponse, TopicName};

use super::error::ServeError;
use super::splice::Marker;
use super::{ApiError, Ctx, Reply};
use crate::broker::Broker;
use crate::log::{FileRegion, LogError};
use crate::storage::Fetched;

/// Longest long-poll the broker will hold a fetch, whatever the client asks.
const MAX_WAIT_CAP_MS: i32 = 30_000;

pub async fn handle(broker: &Arc<Broker>, ctx: &Ctx, req: FetchRequest) -> Result<Reply, ApiError> {
    if req.session_id != 0 || req.session_epoch > 0 {
        // We never hand out sessions, so an incremental fetch names one we do not know.
        let resp =
            FetchResponse::default().with_error_code(ResponseError::FetchSessionIdNotFound.code());
        return ctx.reply(&resp);
    }
    let replica = if ctx.version >= 15 {
        req.replica_state.replica_id.0
    } else {
        req.replica_id.0
    };
    let mut changes = broker.logs.subscribe();
    let wait = Duration::from_millis(req.max_wait_ms.clamp(0, MAX_WAIT_CAP_MS) as u64);
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        changes.borrow_and_update();
        let mut pass = read_all(broker, ctx, &req, replica);
        if !pass.remote.is_empty() {
            let remote_wait = Duration::from_millis(broker.config.tiering.remote_fetch_max_wait_ms);
            let remote_deadline = deadline.max(tokio::time::Instant::now() + remote_wait);
            let remote = std::mem::take(&mut pass.remote);
            read_remote(broker, &mut pass.responses, remote, remote_deadline).await;
            return answer(ctx, pass);
        }
        let done = pass.bytes >= req.min_bytes.max(0) as usize
            || pass.errors
            || tokio::time::Instant::now() >= deadline;
        if done {
            return answer(ctx, pass);
        }
        // Wait for new data anywhere, then re-read: cheap, and correct under any interleaving.
        if tokio::time::timeout_at(deadline, changes.changed())
            .await
            .is_err()
        {
            return answer(ctx, read_all(broker, ctx, &req, replica));
        }
    }
}

/// The response to a pass over the request's partitions.
fn answer(ctx: &Ctx, pass: Pass) -> Result<Reply, ApiError> {
    let resp = FetchResponse::default().with_responses(pass.responses);
    ctx.reply_spliced(&resp, ctx.version >= 12, pass.regions)
}

/// One pass over every requested partition.
struct Pass {
    responses: Vec<FetchableTopicResponse>,
    /// Record bytes in the responses.
    bytes: usize,
    /// Some partition answered with an error.
    errors: bool,
    /// Partitions to read from the object store.
    remote: Vec<RemoteRead>,
    /// Record sets sent from the segment files, each standing in the responses as its marker.
    regions: Vec<(Marker, FileRegion)>,
}

/// A partition of the request to be read from the object store.
struct RemoteRead {
    topic_id: uuid::Uuid,
    topic: usize,
    partition: usize,
    segment: tiering::RemoteSegment,
    next: Option<tiering::RemoteSegment>,
    offset: i64,
    max_bytes: usize,
}

/// Runs the remote reads concurrently and fills their partitions' records; a read still
/// running at `deadline` is left to finish into the cache.
async fn read_remote(
    broker: &Arc<Broker>,
    responses: &mut [FetchableTopicResponse],
    reads: Vec<RemoteRead>,
    deadline: tokio::time::Instant,
) {
    let tasks: Vec<_> = reads
        .into_iter()
        .map(|r| {
            let tiering = broker.tiering.clone();
            let task = tokio::spawn(async move {
                tiering
                    .read(
                        &r.topic_id,
                        &r.segment,
                        r.next.as_ref(),
                        r.offset,
                        r.max_bytes,
                    )
                    .await
            });
            (r.topic, r.partition, task)
        })
        .collect();
    for (t, p, task) in tasks {
        let data = &mut responses[t].partitions[p];
        match tokio::time::timeout_at(deadline, task).await {
            Ok(Ok(Ok(records))) => data.records = Some(records),
            Ok(Ok(Err(e))) => data.error_code = ServeError::from(e).code(),
            Ok(Err(join)) => {
                tracing::error!(error = %join, "remote read task failed");
                data.error_code = ResponseError::KafkaStorageError.code();
            }
            // Still reading: an empty answer now, the cache later.
            Err(_) => {}
        }
    }
}

/// One pass over every requested partition. Consumers' record sets are sent from the
/// segment files where they can be (see [`super::splice`]); followers' are read.
fn read_all(broker: &Broker, ctx: &Ctx, req: &FetchRequest, replica: i32) -> Pass {
    let mut remote_reads = Vec::new();
    let mut regions = Vec::new();
    let mut remaining = req.max_bytes.max(0) as usize;
    let mut total = 0usize;
    let mut any_error = false;
    let image = broker.metadata.image();
    let mut out = Vec::with_capacity(req.topics.len());
    for (ti, t) in req.topics.iter().enumerate() {
        let name = topic_name(ctx, &image, t);
        let hosted = name.as_ref().and_then(|n| broker.logs.topic(n));
        let mut partitions = Vec::with_capacity(t.partitions.len());
        for (pi, p) in t.partitions.iter().enumerate() {
            let mut data = PartitionData::default()
                .with_partition_index(p.partition)
                .with_high_watermark(-1)
                .with_last_stable_offset(-1)
                .with_log_start_offset(-1)
                .with_preferred_read_replica(kafka_protocol::messages::BrokerId(-1))
                .with_records(Some(Bytes::new()));
            // No transactions yet: read_committed gets an empty list, read_uncommitted null.
            if req.isolation_level == 0 {
                data = data.with_aborted_transactions(None);
            }
            let partition = hosted
                .as_ref()
                .and_then(|h| h.partitions.get(&p.partition).cloned());
            let not_leader = name.as_deref().and_then(|n| {
                super::check_leader(
                    &image,
                    n,
                    p.partition,
                    broker.node_id,
                    p.current_leader_epoch,
                )
                .err()
            });
            let remote = hosted
                .as_ref()
                .and_then(|h| image.remote_log(&h.id, p.partition));
            if replica >= 0 {
                let limit = (p.partition_max_bytes.max(0) as usize)
                    .min(remaining.max(if total == 0 { 1 } else { 0 }));
                let result = read_for_replica(
                    broker,
                    &image,
                    name.as_deref(),
                    p,
                    partition.as_ref(),
                    replica,
                    limit,
                );
                match result {
                    Ok((bytes, offsets, diverging)) => {
                        total += bytes.len();
                        remaining = remaining.saturating_sub(bytes.len());
                        data = data
                            .with_high_watermark(offsets.high_watermark)
                            .with_last_stable_offset(offsets.high_watermark)
                            .with_log_start_offset(offsets.log_start)
                            .with_records(Some(bytes));
                        if let Some((epoch, end_offset)) = diverging {
                            // Answered at once: the follower truncates, then fetches again.
                            total = total.max(1);
                            data = data.with_diverging_epoch(
                                kafka_protocol::messages::fetch_response::EpochEndOffset::default()
                                    .with_epoch(epoch)
                                    .with_end_offset(end_offset),
                            );
                        }
                    }
                    Err(e) => {
                        any_error = true;
                        if let Some(o) = partition.as_ref().map(|p| p.offsets()) {
                            data = data
                                .with_high_watermark(o.high_watermark)
                                .with_last_stable_offset(o.high_watermark)
                                .with_log_start_offset(o.log_start);
                        }
                        data = data.with_error_code(e.code());
                    }
                }
                partitions.push(data);
                continue;
            }
            let mut limit = 0;
            let result =
                if let Some(e) = not_leader {
                    Err(e)
                } else if let Some(partition) = &partition {
                    // The first partition with data may exceed max_bytes by one batch (KIP-74).
                    limit = (p.partition_max_bytes.max(0) as usize)
                        .min(remaining.max(if total == 0 { 1 } else { 0 }));
                    if limit == 0 {
                        Ok((Fetched::Read(Bytes::new()), partition.offsets()))
                    } else {
                        partition
                            .read_for_send(p.fetch_offset, limit)
                            .map_err(ServeError::from)
                    }
                } else if name.is_none() {
                    Err(ServeError::UnknownTopicId(t.topic_id.to_string()))
                } else {
                    Err(ServeError::UnknownTopicOrPartition(format!(
                        "{}-{}",
                        name.clone().unwrap_or_default(),
                        p.partition
                    )))
                };
            // Below the local log start of a tiered partition: read from the object store.
            // The image is taken again: an upload committed after this fetch took its image
            // may have deleted the local copy of the offset since.
            let fresh = matches!(
                &result,
                Err(ServeError::Log(LogError::OffsetOutOfRange { .. }))
            )
            .then(|| broker.metadata.image());
            let remote = match (&fresh, &hosted) {
                (Some(img), Some(h)) => img.remote_log(&h.id, p.partition),
                _ => remote,
            };
            let archived = match (&result, remote) {
                (Err(ServeError::Log(LogError::OffsetOutOfRange { .. })), Some(r)) if limit > 0 => {
                    crate::tier::locate(r, p.fetch_offset)
                }
                _ => None,
            };
            match result {
                _ if archived.is_some() => {
                    let (segment, next) = archived.expect("checked");
                    let o = partition.as_ref().map(|p| p.offsets());
                    let hw = o.map_or(-1, |o| o.high_watermark);
                    remaining = remaining.saturating_sub(limit);
                    total += 1;
                    data = data
                        .with_high_watermark(hw)
                        .with_last_stable_offset(hw)
                        .with_log_start_offset(crate::tier::log_start(
                            remote,
                            o.map_or(0, |o| o.log_start),
                        ));
                    remote_reads.push(RemoteRead {
                        topic_id: hosted.as_ref().map(|h| h.id).unwrap_or_default(),
                        topic: ti,
                        partition: pi,
                        segment,
                        next,
                        offset: p.fetch_offset,
                        max_bytes: limit,
                    });
                }
                Ok((fetched, offsets)) => {
                    total += fetched.size();
                    remaining = remaining.saturating_sub(fetched.size());
                    let records = match fetched {
                        Fetched::Read(bytes) => bytes,
                        Fetched::Region(region) => {
                            let marker = Marker::random();
                            regions.push((marker, region));
                            marker.records()
                        }
                    };
                    data = data
                        .with_high_watermark(offsets.high_watermark)
                        .with_last_stable_offset(offsets.high_watermark)
                        .with_log_start_offset(crate::tier::log_start(remote, offsets.log_start))
                        .with_records(Some(records));
                }
                Err(e) => {
                    any_error = true;
                    if let Some(partition) = broker
                        .logs
                        .partition(name.as_deref().unwrap_or(""), p.partition)
                    {
                        let o = partition.offsets();
                        data = data
                            .with_high_watermark(o.high_watermark)
                            .with_last_stable_offset(o.high_watermark)
                            .with_log_start_offset(crate::tier::log_start(remote, o.log_start));
                    }
                    data = data.with_error_code(e.code());
                }
            }
            partitions.push(data);
        }
        let mut resp = FetchableTopicResponse::default()
            .with_topic_id(t.topic_id)
            .with_partitions(partitions);
        if ctx.version < 13 {
            resp = resp.with_topic(t.topic.clone());
        }
        out.push(resp);
    }
    Pass {
        responses: out,
        bytes: total,
        errors: any_error,
        remote: remote_reads,
        regions,
    }
}

/// What a follower's fetch of one partition gets: records, offsets, and where its log
/// diverged from the leader's (epoch, end offset) if it did.
type ReplicaRead = (Bytes, crate::storage::Offsets, Option<(i32, i64)>);

/// A follower's fetch of one partition: only live brokers that replicate the partition may
/// fetch as its replicas, and only from its leader at the current epoch. Their fetch offset
/// tells the leader how far they hold the log (and may move the high watermark); they read
/// up to the log end.
fn read_for_replica(
    broker: &Broker,
    image: &crate::cluster::MetadataImage,
    name: Option<&str>,
    p: &kafka_protocol::messages::fetch_request::FetchPartition,
    partition: Option<&Arc<crate::storage::Partition>>,
    replica: i32,
    limit: usize,
) -> Result<ReplicaRead, ServeError> {
    let name =
        name.ok_or_else(|| ServeError::UnknownTopicOrPartition("unknown topic id".into()))?;
    let replicas = image
        .topic(name)
        .and_then(|t| t.partition(p.partition))
        .map(|r| r.replicas.clone())
        .ok_or_else(|| ServeError::UnknownTopicOrPartition(format!("{name}-{}", p.partition)))?;
    let live = image.brokers.get(&replica).is_some_and(|b| !b.fenced);
    if !live || !replicas.contains(&replica) || replica == broker.node_id {
        return Err(ServeError::InvalidRequest(format!(
            "replica id {replica} is not a live replica of {name}-{}: only brokers that \
             replicate a partition may fetch as its replicas",
            p.partition
        )));
    }
    super::check_leader(
        image,
        name,
        p.partition,
        broker.node_id,
        p.current_leader_epoch,
    )?;
    let partition = partition
        .ok_or_else(|| ServeError::UnknownTopicOrPartition(format!("{name}-{}", p.partition)))?;
    // KIP-320/595: if the follower's last epoch ends earlier here than its fetch offset (or
    // this log never had that epoch), its log diverged: tell it where to truncate to.
    if p.last_fetched_epoch >= 0 {
        let diverged = match partition.end_offset_for_epoch(p.last_fetched_epoch) {
            Some((epoch, end)) if epoch != p.last_fetched_epoch || end < p.fetch_offset => {
                Some((epoch, end))
            }
            Some(_) => None,
            // Older than anything held here (the log start moved past it).
            None => None,
        };
        if let Some((epoch, end)) = diverged {
            return Ok((Bytes::new(), partition.offsets(), Some((epoch, end))));
        }
    }
    let read = partition.read_replica(p.fetch_offset, limit)?;
    let hw = partition.record_follower_fetch(replica, p.fetch_offset, std::time::Instant::now());
    let (bytes, mut offsets) = read;
    offsets.high_watermark = hw;
    Ok((bytes, offsets, None))
}

fn topic_name(ctx: &Ctx, image: &crate::cluster::MetadataImage, t: &FetchTopic) -> Option<String> {
    if ctx.version >= 13 {
        image.topic_by_id(&t.topic_id).map(|m| m.name.clone())
    } else {
        let TopicName(name) = &t.topic;
        Some(name.to_string())
    }
}
