//! Follower fetchers: for every partition this broker follows, fetch from its leader with this
//! broker's replica id (Kafka's pull replication), one connection and one task per leader.
//!
//! Each round trip sends, per partition, the fetch offset (this replica's log end: the leader
//! takes it as everything below is held here), the epoch of the last batch held
//! (`last_fetched_epoch`, so the leader can say where the logs diverge) and the leader epoch
//! this broker knows. The answer is applied in order: a diverging epoch truncates the log to
//! where it agrees with the leader's, records are appended as sent and made durable (fsync
//! under the default flush policy) before the next fetch reports them, and the leader's high
//! watermark is adopted (capped at what is held here).
//!
//! The set of followed partitions comes from the metadata image; a change of leader, epoch or
//! leader address restarts that leader's task.
//!
//! Must not touch: partitions this broker leads (the storage layer refuses client appends to
//! followed ones and replica appends are only made here).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::{BrokerId, FetchRequest, TopicName};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use tokio::task::JoinHandle;

use super::client::BrokerClient;
use crate::cluster::Metadata;
use crate::storage::{LogManager, Partition};

/// The Fetch version followers speak: the first with `last_fetched_epoch` and diverging
/// epochs in the answer, still naming topics (not ids).
const FETCH_VERSION: i16 = 12;
/// Pause after an error before trying again.
const BACKOFF: Duration = Duration::from_millis(200);

/// Follower fetch settings (`replica_fetch_*`).
#[derive(Debug, Clone, Copy)]
pub struct FetchSettings {
    pub max_wait_ms: i32,
    pub partition_max_bytes: i32,
    pub response_max_bytes: i32,
}

/// One followed partition: its leader's epoch as this broker knows it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Followed {
    topic: String,
    partition: i32,
    epoch: i32,
}

/// What one leader's task was started for.
#[derive(PartialEq)]
struct Assignment {
    addr: String,
    partitions: Vec<Followed>,
}

/// Runs until the process ends: keeps one fetch task per leader this broker follows.
pub async fn run(metadata: Metadata, logs: Arc<LogManager>, me: i32, settings: FetchSettings) {
    let mut changes = metadata.subscribe();
    let mut tasks: HashMap<i32, (Assignment, JoinHandle<()>)> = HashMap::new();
    loop {
        let image = metadata.image();
        let mut want: BTreeMap<i32, Assignment> = BTreeMap::new();
        // Partitions the storage layer has not opened yet (it applies the same image
        // concurrently): look again shortly.
        let mut not_open = false;
        for t in image.topics.values() {
            for (i, p) in t.assignment.iter().enumerate() {
                let Some(leader) = p.leader.filter(|l| *l != me) else {
                    continue;
                };
                if !p.replicas.contains(&me) {
                    continue;
                }
                let Some(b) = image.brokers.get(&leader) else {
                    continue;
                };
                if logs.partition(&t.name, i as i32).is_none() {
                    not_open = true;
                    continue;
                }
                want.entry(leader)
                    .or_insert_with(|| Assignment {
                        addr: format!("{}:{}", b.host, b.port),
                        partitions: Vec::new(),
                    })
                    .partitions
                    .push(Followed {
                        topic: t.name.clone(),
                        partition: i as i32,
                        epoch: p.epoch,
                    });
            }
        }
        tasks.retain(|leader, (assignment, task)| {
            let keep = want.get(leader) == Some(assignment) && !task.is_finished();
            if !keep {
                task.abort();
            }
            keep
        });
        for (leader, assignment) in want {
            if tasks.contains_key(&leader) {
                continue;
            }
            let partitions: Vec<(Followed, Arc<Partition>)> = assignment
                .partitions
                .iter()
                .filter_map(|f| {
                    logs.partition(&f.topic, f.partition)
                        .map(|p| (f.clone(), p))
                })
                .collect();
            tracing::info!(
                leader,
                addr = %assignment.addr,
                partitions = partitions.len(),
                "following partitions of broker {leader}"
            );
            let task = tokio::spawn(follow(
                assignment.addr.clone(),
                me,
                partitions,
                logs.clone(),
                settings,
            ));
            tasks.insert(leader, (assignment, task));
        }
        tokio::select! {
            changed = changes.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            _ = tokio::time::sleep(Duration::from_millis(50)), if not_open => {}
        }
    }
}

/// Fetches `partitions` from the leader at `addr` until aborted.
async fn follow(
    addr: String,
    me: i32,
    partitions: Vec<(Followed, Arc<Partition>)>,
    logs: Arc<LogManager>,
    settings: FetchSettings,
) {
    if partitions.is_empty() {
        return;
    }
    let timeout =
        Duration::from_millis(settings.max_wait_ms.max(0) as u64) + Duration::from_secs(10);
    let mut failing = false;
    // The last error of each partition, so a lasting one is logged once, not every retry.
    let mut errors: HashMap<String, String> = HashMap::new();
    loop {
        let mut client =
            match BrokerClient::connect(&addr, format!("strata-replica-{me}"), timeout).await {
                Ok(c) => c,
                Err(e) => {
                    if !failing {
                        tracing::warn!(error = %e, "cannot reach the partition leader; retrying");
                        failing = true;
                    }
                    tokio::time::sleep(BACKOFF).await;
                    continue;
                }
            };
        loop {
            let req = fetch_request(me, &partitions, settings);
            let resp = match client.call(&req, FETCH_VERSION, timeout).await {
                Ok(r) => r,
                Err(e) => {
                    if !failing {
                        tracing::warn!(error = %e, "replica fetch failed; reconnecting");
                        failing = true;
                    }
                    tokio::time::sleep(BACKOFF).await;
                    break;
                }
            };
            if failing {
                tracing::info!(addr = %addr, "replica fetches flowing again");
                failing = false;
            }
            let mut pause = resp.error_code != 0;
            let mut flushes = Vec::new();
            for t in resp.responses {
                for pd in t.partitions {
                    let Some((_, p)) = partitions
                        .iter()
                        .find(|(f, _)| f.topic == *t.topic.0 && f.partition == pd.partition_index)
                    else {
                        continue;
                    };
                    match apply(p, &pd, &logs).await {
                        Ok(Some(rx)) => {
                            flushes.push((p.clone(), rx));
                            if errors.remove(&p.name()).is_some() {
                                tracing::info!(partition = %p.name(), "replica fetches applied again");
                            }
                        }
                        // Logged when the error changes, not on every retry.
                        Err(e) => {
                            if errors.get(&p.name()) != Some(&e) {
                                tracing::warn!(partition = %p.name(), error = %e, "replica fetch answer not applied; retrying");
                                errors.insert(p.name(), e);
                            }
                            pause = true;
                        }
                        Ok(None) => {
                            if errors.remove(&p.name()).is_some() {
                                tracing::info!(partition = %p.name(), "replica fetches applied again");
                            }
                        }
                    }
                }
            }
            for (p, rx) in flushes.drain(..) {
                if let Err(e) = crate::storage::Flusher::wait(rx).await {
                    tracing::warn!(partition = %p.name(), error = %e, "fsync of replicated data failed");
                    pause = true;
                }
            }
            if pause {
                tokio::time::sleep(BACKOFF).await;
            }
        }
    }
}

fn fetch_request(
    me: i32,
    partitions: &[(Followed, Arc<Partition>)],
    s: FetchSettings,
) -> FetchRequest {
    let mut topics: BTreeMap<&str, Vec<FetchPartition>> = BTreeMap::new();
    for (f, p) in partitions {
        let o = p.offsets();
        topics.entry(&f.topic).or_default().push(
            FetchPartition::default()
                .with_partition(f.partition)
                .with_current_leader_epoch(f.epoch)
                .with_fetch_offset(o.log_end)
                .with_last_fetched_epoch(p.latest_epoch().unwrap_or(-1))
                .with_log_start_offset(o.log_start)
                .with_partition_max_bytes(s.partition_max_bytes),
        );
    }
    FetchRequest::default()
        .with_replica_id(BrokerId(me))
        .with_max_wait_ms(s.max_wait_ms)
        .with_min_bytes(1)
        .with_max_bytes(s.response_max_bytes)
        .with_topics(
            topics
                .into_iter()
                .map(|(name, parts)| {
                    FetchTopic::default()
                        .with_topic(TopicName(StrBytes::from_string(name.to_string())))
                        .with_partitions(parts)
                })
                .collect(),
        )
}

type FlushWait = tokio::sync::oneshot::Receiver<crate::storage::FlushResult>;

/// Applies the leader's answer for one partition; returns the fsync to wait for before the
/// next fetch reports the appended data as held.
async fn apply(
    p: &Arc<Partition>,
    pd: &kafka_protocol::messages::fetch_response::PartitionData,
    logs: &LogManager,
) -> Result<Option<FlushWait>, String> {
    let mut flush = None;
    match pd.error_code {
        0 => {}
        code if code == ResponseError::OffsetOutOfRange.code() => {
            // Below the leader's log start (retention moved on while this replica was away):
            // start over from there. Above its log end cannot happen after truncation.
            let o = p.offsets();
            if o.log_end < pd.log_start_offset {
                tracing::info!(partition = %p.name(), from = o.log_end, to = pd.log_start_offset,
                    "replica is below the leader's log start; starting its log there");
                p.truncate_fully_and_start_at(pd.log_start_offset)
                    .map_err(|e| e.to_string())?;
                return Ok(None);
            }
            return Err(format!(
                "leader answered OFFSET_OUT_OF_RANGE at {}",
                o.log_end
            ));
        }
        code => {
            // NOT_LEADER_OR_FOLLOWER, FENCED/UNKNOWN_LEADER_EPOCH: the image will tell.
            let name = ResponseError::try_from_code(code)
                .map(|e| format!("{e:?}"))
                .unwrap_or_else(|| code.to_string());
            return Err(format!("leader answered {name}"));
        }
    }
    if pd.diverging_epoch.epoch >= 0 {
        // Truncate to where both logs agree: the end of the diverging epoch on the leader,
        // or of this replica's own copy of that epoch if shorter.
        // When this replica never had that epoch, its own end for the largest epoch below
        // it is where they can still agree; the next fetch (with that older epoch as its
        // last) checks again, until the logs agree (Kafka's rule).
        let mut to = pd.diverging_epoch.end_offset;
        if let Some((_, end)) = p.end_offset_for_epoch(pd.diverging_epoch.epoch) {
            to = to.min(end);
        }
        let from = p.offsets().log_end;
        tracing::info!(partition = %p.name(), from, to, epoch = pd.diverging_epoch.epoch,
            "truncating the replica's log to where it agrees with the leader's");
        p.truncate_to(to).map_err(|e| e.to_string())?;
        return Ok(None);
    }
    if let Some(records) = pd.records.as_ref().filter(|r| !r.is_empty()) {
        let appended = p
            .append_replica(records, crate::now_ms())
            .map_err(|e| e.to_string())?;
        if appended {
            // The next fetch reports the new log end as held: it must be durable first. The
            // caller waits for every partition's fsync together (one group-commit round).
            flush = Some(logs.flusher().submit(p.clone()).await);
        }
    }
    p.set_leader_high_watermark(pd.high_watermark);
    // DeleteRecords and retention on the leader move its log start: follow it (never past
    // what this replica may show), so a new leader does not bring deleted records back.
    let o = p.offsets();
    let start = pd.log_start_offset.min(o.high_watermark);
    if start > o.log_start {
        tokio::task::block_in_place(|| p.delete_records(start)).map_err(|e| e.to_string())?;
    }
    Ok(flush)
}
