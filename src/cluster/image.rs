//! The metadata image: the state machine's view of topics. Pure data, no I/O.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use tiering::RemoteManifest;

use super::placement::{self, Candidate, NotEnoughBrokers};
use super::types::{Applied, MetadataCommand, MetadataError};
use crate::replication::PartitionRecord;

/// One topic as agreed by the quorum.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicMeta {
    pub name: String,
    pub id: Uuid,
    pub partitions: i32,
    /// Topic-level config overrides (Kafka names); unset keys take broker defaults.
    pub configs: BTreeMap<String, String>,
    /// Each partition's replicas, leader, leader epoch and ISR, by partition index. Shorter
    /// than `partitions` only for topics created before placement existed, until the first
    /// broker registers and adopts them.
    #[serde(default)]
    pub assignment: Vec<PartitionRecord>,
}

impl TopicMeta {
    /// A new topic whose partition `i` has the replicas `replicas[i]` (the first leads).
    pub fn new(
        name: String,
        configs: BTreeMap<String, String>,
        replicas: Vec<Vec<i32>>,
    ) -> TopicMeta {
        TopicMeta {
            name,
            id: Uuid::new_v4(),
            partitions: replicas.len() as i32,
            configs,
            assignment: replicas.into_iter().map(PartitionRecord::new).collect(),
        }
    }

    pub fn partition(&self, index: i32) -> Option<&PartitionRecord> {
        usize::try_from(index)
            .ok()
            .and_then(|i| self.assignment.get(i))
    }

    /// The partition's leader, if it has one.
    pub fn leader(&self, index: i32) -> Option<i32> {
        self.partition(index).and_then(|p| p.leader)
    }
}

/// A broker as registered with the quorum (Kafka's BrokerRegistration).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerRegistration {
    pub id: i32,
    /// Chosen at each start; a registration or heartbeat from an older incarnation of the
    /// same id is stale.
    pub incarnation: Uuid,
    /// The advertised Kafka listener.
    pub host: String,
    pub port: i32,
    pub rack: Option<String>,
    /// Fenced brokers (lease expired, or shut down) lead nothing and leave ISRs.
    #[serde(default)]
    pub fenced: bool,
    /// Heartbeats applied for this incarnation; the controller watches it move to tell
    /// a live broker from one whose lease is running out.
    #[serde(default)]
    pub heartbeats: u64,
}

/// A partition's archived data: the manifest of its objects in the object store, and the
/// lowest offset readers may see.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteLog {
    pub manifest: RemoteManifest,
    /// Offsets below this are gone (retention, DeleteRecords), even where an object that is
    /// still listed holds some of them.
    pub log_start: i64,
}

impl RemoteLog {
    /// The first offset a reader may get from the remote tier, if it holds any.
    pub fn start_offset(&self) -> Option<i64> {
        self.manifest
            .start_offset()
            .map(|s| s.max(self.log_start))
            .filter(|s| self.manifest.end_offset().is_some_and(|end| *s < end))
    }
}

/// Every topic, by name and by id, and the producer id counter.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MetadataImage {
    pub topics: BTreeMap<String, TopicMeta>,
    /// The lowest producer id not yet reserved by any broker; every id below it has been
    /// handed to some broker. Absent from snapshots written before producer ids existed.
    #[serde(default)]
    pub next_producer_id: i64,
    /// Archived data of tiered partitions, by topic id then partition. Shared per partition:
    /// applying a command clones the image, and an upload's commit then copies one
    /// partition's manifest, not every archive.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub remote: BTreeMap<Uuid, BTreeMap<i32, Arc<RemoteLog>>>,
    /// Registered brokers by id.
    #[serde(default)]
    pub brokers: BTreeMap<i32, BrokerRegistration>,
    /// The cluster's id, shared by every broker (Kafka's cluster.id).
    #[serde(default)]
    pub cluster_id: Option<String>,
    #[serde(skip)]
    ids: HashMap<Uuid, String>,
}

impl MetadataImage {
    pub fn topic(&self, name: &str) -> Option<&TopicMeta> {
        self.topics.get(name)
    }

    pub fn topic_by_id(&self, id: &Uuid) -> Option<&TopicMeta> {
        self.ids.get(id).and_then(|n| self.topics.get(n))
    }

    pub fn remote_log(&self, topic_id: &Uuid, partition: i32) -> Option<&RemoteLog> {
        self.remote.get(topic_id)?.get(&partition).map(|l| &**l)
    }

    /// Brokers whose lease is current: they may lead and be in ISRs.
    pub fn live_brokers(&self) -> BTreeSet<i32> {
        self.brokers
            .values()
            .filter(|b| !b.fenced)
            .map(|b| b.id)
            .collect()
    }

    /// Replica lists for new partitions `first..first + count` on the live brokers (see
    /// [`placement`](super::placement)); each new topic starts the rotation one broker on.
    pub fn place(
        &self,
        first: i32,
        count: i32,
        replication_factor: i16,
    ) -> Result<Vec<Vec<i32>>, NotEnoughBrokers> {
        let live: Vec<Candidate> = self
            .brokers
            .values()
            .filter(|b| !b.fenced)
            .map(|b| Candidate {
                id: b.id,
                rack: b.rack.clone(),
            })
            .collect();
        let rf = usize::try_from(replication_factor).unwrap_or(0);
        placement::place(&live, first, count, rf, self.topics.len())
    }

    /// Applies `change` to every partition that has `broker` among its replicas.
    fn for_replicas_of(&mut self, broker: i32, mut change: impl FnMut(&mut PartitionRecord)) {
        for topic in self.topics.values_mut() {
            for p in topic.assignment.iter_mut() {
                if p.replicas.contains(&broker) {
                    change(p);
                }
            }
        }
    }

    fn partition_mut(
        &mut self,
        topic_id: &Uuid,
        partition: i32,
    ) -> Result<&mut PartitionRecord, MetadataError> {
        let unknown = || MetadataError::UnknownTopic(format!("{topic_id}-{partition}"));
        let name = self.ids.get(topic_id).ok_or_else(unknown)?;
        self.topics
            .get_mut(name)
            .and_then(|t| {
                usize::try_from(partition)
                    .ok()
                    .and_then(|i| t.assignment.get_mut(i))
            })
            .ok_or_else(unknown)
    }

    /// Rebuilds derived indexes after deserialisation.
    pub fn reindex(&mut self) {
        self.ids = self
            .topics
            .values()
            .map(|t| (t.id, t.name.clone()))
            .collect();
    }

    /// Applies one command: the deterministic core of the state machine.
    pub fn apply(&mut self, cmd: &MetadataCommand) -> Result<Applied, MetadataError> {
        match cmd {
            MetadataCommand::CreateTopic(meta) => {
                if self.topics.contains_key(&meta.name) {
                    return Err(MetadataError::TopicExists(meta.name.clone()));
                }
                // Only topics from before placement existed come without one, and only
                // before any broker registered.
                if meta.assignment.len() != meta.partitions as usize
                    && !(meta.assignment.is_empty() && self.brokers.is_empty())
                {
                    return Err(MetadataError::Invalid(format!(
                        "topic '{}' has {} partitions but {} replica assignments",
                        meta.name,
                        meta.partitions,
                        meta.assignment.len()
                    )));
                }
                self.ids.insert(meta.id, meta.name.clone());
                self.topics.insert(meta.name.clone(), meta.clone());
            }
            MetadataCommand::DeleteTopic { name } => {
                let meta = self
                    .topics
                    .remove(name)
                    .ok_or_else(|| MetadataError::UnknownTopic(name.clone()))?;
                self.ids.remove(&meta.id);
                self.remote.remove(&meta.id);
            }
            MetadataCommand::CreatePartitions {
                name,
                count,
                replicas,
            } => {
                let legacy = self.brokers.is_empty();
                let meta = self
                    .topics
                    .get_mut(name)
                    .ok_or_else(|| MetadataError::UnknownTopic(name.clone()))?;
                if *count <= meta.partitions {
                    return Err(MetadataError::InvalidPartitionCount {
                        name: name.clone(),
                        current: meta.partitions,
                        requested: *count,
                    });
                }
                let added = (*count - meta.partitions) as usize;
                if replicas.len() != added && !(legacy && replicas.is_empty()) {
                    return Err(MetadataError::Invalid(format!(
                        "{added} new partitions of '{name}' but {} replica assignments",
                        replicas.len()
                    )));
                }
                if meta.assignment.len() == meta.partitions as usize {
                    meta.assignment
                        .extend(replicas.iter().cloned().map(PartitionRecord::new));
                }
                meta.partitions = *count;
            }
            MetadataCommand::ClaimClusterId(id) => {
                self.cluster_id.get_or_insert_with(|| id.clone());
            }
            MetadataCommand::RegisterBroker(reg) => {
                if self.brokers.is_empty() {
                    // The first broker of a cluster whose topics predate placement adopts
                    // them: they were all on the one broker that wrote them.
                    for topic in self.topics.values_mut() {
                        for _ in topic.assignment.len()..topic.partitions as usize {
                            topic.assignment.push(PartitionRecord::new(vec![reg.id]));
                        }
                    }
                }
                let id = reg.id;
                // A new incarnation of a broker that was never fenced (a quick restart):
                // its previous run is over, so first fence it as the controller would have
                // (leadership moves at a new epoch, it leaves ISRs), then let it back in. It
                // rejoins ISRs once it has caught up, like any follower.
                let replaced = self
                    .brokers
                    .get(&id)
                    .is_some_and(|b| b.incarnation != reg.incarnation && !b.fenced);
                if replaced {
                    if let Some(b) = self.brokers.get_mut(&id) {
                        b.fenced = true;
                    }
                    let live = self.live_brokers();
                    self.for_replicas_of(id, |p| {
                        p.on_broker_fenced(id, &live);
                    });
                }
                let mut reg = reg.clone();
                reg.fenced = false;
                reg.heartbeats = 0;
                self.brokers.insert(id, reg);
                let live = self.live_brokers();
                self.for_replicas_of(id, |p| {
                    p.on_broker_unfenced(&live);
                });
            }
            MetadataCommand::BrokerHeartbeat { id, incarnation } => {
                let reg = self
                    .brokers
                    .get_mut(id)
                    .filter(|b| b.incarnation == *incarnation)
                    .ok_or(MetadataError::StaleBroker(*id))?;
                reg.heartbeats += 1;
                if reg.fenced {
                    reg.fenced = false;
                    let live = self.live_brokers();
                    self.for_replicas_of(*id, |p| {
                        p.on_broker_unfenced(&live);
                    });
                }
            }
            MetadataCommand::FenceBroker { id, incarnation } => {
                let Some(reg) = self
                    .brokers
                    .get_mut(id)
                    .filter(|b| b.incarnation == *incarnation && !b.fenced)
                else {
                    return Ok(Applied::Done); // already fenced, or re-registered since
                };
                reg.fenced = true;
                let live = self.live_brokers();
                self.for_replicas_of(*id, |p| {
                    p.on_broker_fenced(*id, &live);
                });
            }
            MetadataCommand::AlterPartition {
                topic_id,
                partition,
                leader,
                proposal,
            } => {
                let live = self.live_brokers();
                let p = self.partition_mut(topic_id, *partition)?;
                // ISR members must be replicas and live (a fenced broker cannot rejoin).
                if !proposal
                    .isr
                    .iter()
                    .all(|r| p.replicas.contains(r) && live.contains(r))
                {
                    return Err(MetadataError::Invalid(format!(
                        "ISR {:?} names a broker that is not a live replica of {topic_id}-{partition}",
                        proposal.isr
                    )));
                }
                if p.alter_isr_and_reassign(*leader, proposal, &live).is_none() {
                    return Err(MetadataError::StaleLeaderEpoch {
                        epoch: proposal.leader_epoch,
                        current: p.epoch,
                    });
                }
            }
            MetadataCommand::ReassignPartition {
                topic_id,
                partition,
                target,
            } => {
                let live = self.live_brokers();
                if let Some(t) = target {
                    let distinct: BTreeSet<i32> = t.iter().copied().collect();
                    if t.is_empty() || distinct.len() != t.len() {
                        return Err(MetadataError::InvalidReplicaAssignment(format!(
                            "replicas {t:?} must be distinct and at least one"
                        )));
                    }
                    if let Some(unknown) = t.iter().find(|r| !self.brokers.contains_key(r)) {
                        return Err(MetadataError::InvalidReplicaAssignment(format!(
                            "broker {unknown} is not registered"
                        )));
                    }
                }
                let p = self.partition_mut(topic_id, *partition)?;
                if target.is_none() && p.adding.is_empty() && p.removing.is_empty() {
                    return Err(MetadataError::NoReassignmentInProgress(format!(
                        "{topic_id}-{partition}"
                    )));
                }
                p.reassign(target.as_deref(), &live);
            }
            MetadataCommand::ElectPreferredLeader {
                topic_id,
                partition,
            } => {
                let live = self.live_brokers();
                let p = self.partition_mut(topic_id, *partition)?;
                if !p.elect_preferred(&live) {
                    return Err(MetadataError::PreferredLeaderNotAvailable);
                }
            }
            MetadataCommand::SetTopicConfigs { name, configs } => {
                let meta = self
                    .topics
                    .get_mut(name)
                    .ok_or_else(|| MetadataError::UnknownTopic(name.clone()))?;
                meta.configs = configs.clone();
            }
            MetadataCommand::AllocateProducerIds {
                broker_id: _,
                block_size,
            } => {
                let first = self.next_producer_id;
                let next = first
                    .checked_add(*block_size)
                    .filter(|_| *block_size > 0)
                    .ok_or(MetadataError::ProducerIdsExhausted {
                        next: first,
                        block_size: *block_size,
                    })?;
                self.next_producer_id = next;
                return Ok(Applied::ProducerIds {
                    first,
                    count: *block_size,
                });
            }
            MetadataCommand::CommitRemoteSegment {
                topic_id,
                segment,
                log_start,
            } => {
                let meta = self.topic_by_id(topic_id).ok_or_else(|| {
                    MetadataError::UnknownTopic(format!("{} (id {topic_id})", segment.topic))
                })?;
                if meta.name != segment.topic || segment.partition >= meta.partitions {
                    return Err(MetadataError::UnknownTopic(format!(
                        "{}-{}",
                        segment.topic, segment.partition
                    )));
                }
                let current = self.remote_log(topic_id, segment.partition);
                // A retried commit whose first attempt was applied.
                if current.is_some_and(|l| l.manifest.segments.last() == Some(segment)) {
                    return Ok(Applied::Done);
                }
                let mut log = current.cloned().unwrap_or_else(|| RemoteLog {
                    manifest: RemoteManifest::new(segment.topic.clone(), segment.partition),
                    log_start: *log_start,
                });
                if log.manifest.segments.is_empty() {
                    log.log_start = log.log_start.max(*log_start);
                }
                log.manifest
                    .push(segment.clone())
                    .map_err(|e| MetadataError::Manifest(e.to_string()))?;
                self.remote
                    .entry(*topic_id)
                    .or_default()
                    .insert(segment.partition, Arc::new(log));
            }
            MetadataCommand::TrimRemoteLog {
                topic_id,
                partition,
                log_start,
            } => {
                let Some(log) = self
                    .remote
                    .get_mut(topic_id)
                    .and_then(|p| p.get_mut(partition))
                    .map(Arc::make_mut)
                else {
                    return Err(MetadataError::UnknownTopic(format!(
                        "no remote log for partition {partition} of topic id {topic_id}"
                    )));
                };
                let gone = log
                    .manifest
                    .segments
                    .iter()
                    .take_while(|s| s.last_offset < *log_start)
                    .count();
                log.manifest.remove_oldest(gone);
                log.log_start = log.log_start.max(*log_start);
            }
        }
        Ok(Applied::Done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topic(name: &str, partitions: i32) -> TopicMeta {
        TopicMeta::new(
            name.into(),
            BTreeMap::new(),
            (0..partitions).map(|_| vec![1]).collect(),
        )
    }

    #[test]
    fn create_delete_and_grow() {
        let mut img = MetadataImage::default();
        let t = topic("orders", 3);
        img.apply(&MetadataCommand::CreateTopic(t.clone())).unwrap();
        assert_eq!(
            img.apply(&MetadataCommand::CreateTopic(topic("orders", 1))),
            Err(MetadataError::TopicExists("orders".into()))
        );
        assert_eq!(img.topic_by_id(&t.id).map(|m| m.partitions), Some(3));
        let shrink = MetadataCommand::CreatePartitions {
            name: "orders".into(),
            count: 2,
            replicas: vec![],
        };
        assert!(matches!(
            img.apply(&shrink),
            Err(MetadataError::InvalidPartitionCount { .. })
        ));
        img.apply(&MetadataCommand::CreatePartitions {
            name: "orders".into(),
            count: 5,
            replicas: vec![vec![1], vec![1]],
        })
        .unwrap();
        assert_eq!(img.topic("orders").map(|m| m.partitions), Some(5));
        img.apply(&MetadataCommand::DeleteTopic {
            name: "orders".into(),
        })
        .unwrap();
        assert!(img.topic_by_id(&t.id).is_none());
        assert_eq!(
            img.apply(&MetadataCommand::DeleteTopic {
                name: "orders".into()
            }),
            Err(MetadataError::UnknownTopic("orders".into()))
        );
    }

    #[test]
    fn producer_id_blocks_never_overlap() {
        let mut img = MetadataImage::default();
        let alloc = |block_size| MetadataCommand::AllocateProducerIds {
            broker_id: 1,
            block_size,
        };
        assert_eq!(
            img.apply(&alloc(1000)),
            Ok(Applied::ProducerIds {
                first: 0,
                count: 1000
            })
        );
        assert_eq!(
            img.apply(&alloc(10)),
            Ok(Applied::ProducerIds {
                first: 1000,
                count: 10
            })
        );
        assert!(img.apply(&alloc(0)).is_err());
        img.next_producer_id = i64::MAX - 5;
        assert!(matches!(
            img.apply(&alloc(10)),
            Err(MetadataError::ProducerIdsExhausted { .. })
        ));
        assert_eq!(
            img.next_producer_id,
            i64::MAX - 5,
            "a rejected block reserves nothing"
        );
        // Snapshots from before producer ids existed still load.
        let old: MetadataImage = serde_json::from_str(r#"{"topics":{}}"#).unwrap();
        assert_eq!(old.next_producer_id, 0);
    }

    #[test]
    fn serde_round_trip_keeps_id_index() {
        let mut img = MetadataImage::default();
        let t = topic("a", 1);
        img.apply(&MetadataCommand::CreateTopic(t.clone())).unwrap();
        let json = serde_json::to_vec(&img).unwrap();
        let mut back: MetadataImage = serde_json::from_slice(&json).unwrap();
        back.reindex();
        assert_eq!(back.topic_by_id(&t.id).map(|m| m.name.as_str()), Some("a"));
    }

    fn archived(topic: &str, first: i64, last: i64) -> tiering::RemoteSegment {
        tiering::RemoteSegment {
            topic: topic.into(),
            partition: 0,
            first_offset: first,
            last_offset: last,
            min_timestamp_ms: 1,
            max_timestamp_ms: 2,
            size_bytes: 100,
            segment_bytes: 400,
            object_key: tiering::segment_key(topic, 0, first, last)
                .unwrap()
                .to_string(),
            leader_epoch: 0,
            records: (last - first + 1) as u64,
        }
    }

    #[test]
    fn remote_manifest_commits_trims_and_goes_with_its_topic() {
        let mut img = MetadataImage::default();
        let t = topic("orders", 1);
        img.apply(&MetadataCommand::CreateTopic(t.clone())).unwrap();
        let commit = |segment, log_start| MetadataCommand::CommitRemoteSegment {
            topic_id: t.id,
            segment,
            log_start,
        };
        img.apply(&commit(archived("orders", 5, 9), 7)).unwrap();
        // A retried commit of the same segment is accepted once.
        img.apply(&commit(archived("orders", 5, 9), 7)).unwrap();
        assert!(matches!(
            img.apply(&commit(archived("orders", 11, 20), 7)),
            Err(MetadataError::Manifest(_))
        ));
        img.apply(&commit(archived("orders", 10, 20), 7)).unwrap();
        let log = img.remote_log(&t.id, 0).unwrap();
        assert_eq!(log.manifest.segments.len(), 2);
        assert_eq!(
            log.start_offset(),
            Some(7),
            "the seeded log start hides 5 and 6"
        );
        let trim = |log_start| MetadataCommand::TrimRemoteLog {
            topic_id: t.id,
            partition: 0,
            log_start,
        };
        img.apply(&trim(12)).unwrap();
        let log = img.remote_log(&t.id, 0).unwrap();
        assert_eq!(log.manifest.start_offset(), Some(10));
        assert_eq!(log.start_offset(), Some(12));
        img.apply(&trim(21)).unwrap();
        assert_eq!(img.remote_log(&t.id, 0).unwrap().start_offset(), None);
        // A commit for a partition the topic does not have, or a stale topic id, is refused.
        let mut stranger = archived("orders", 21, 30);
        stranger.partition = 3;
        assert!(img.apply(&commit(stranger, 0)).is_err());
        assert!(img
            .apply(&MetadataCommand::CommitRemoteSegment {
                topic_id: Uuid::new_v4(),
                segment: archived("orders", 21, 30),
                log_start: 0,
            })
            .is_err());
        // Snapshots keep the manifest.
        let json = serde_json::to_vec(&img).unwrap();
        let back: MetadataImage = serde_json::from_slice(&json).unwrap();
        assert_eq!(back.remote, img.remote);
        img.apply(&MetadataCommand::DeleteTopic {
            name: "orders".into(),
        })
        .unwrap();
        assert!(img.remote.is_empty());
    }

    fn reg(id: i32) -> BrokerRegistration {
        BrokerRegistration {
            id,
            incarnation: Uuid::new_v4(),
            host: "127.0.0.1".into(),
            port: 9092 + id,
            rack: None,
            fenced: false,
            heartbeats: 0,
        }
    }

    #[test]
    fn the_first_broker_adopts_topics_from_before_placement() {
        let mut img = MetadataImage::default();
        let mut legacy = topic("old", 3);
        legacy.assignment.clear();
        img.apply(&MetadataCommand::CreateTopic(legacy)).unwrap();
        img.apply(&MetadataCommand::CreatePartitions {
            name: "old".into(),
            count: 4,
            replicas: vec![],
        })
        .unwrap();
        img.apply(&MetadataCommand::RegisterBroker(reg(7))).unwrap();
        let t = img.topic("old").unwrap();
        assert_eq!(t.assignment.len(), 4);
        assert!((0..4).all(|i| t.leader(i) == Some(7)));
        // Once brokers exist, a topic must come placed.
        let mut unplaced = topic("new", 2);
        unplaced.assignment.clear();
        assert!(matches!(
            img.apply(&MetadataCommand::CreateTopic(unplaced)),
            Err(MetadataError::Invalid(_))
        ));
    }

    #[test]
    fn fencing_moves_leadership_within_the_isr_and_heartbeats_bring_brokers_back() {
        let mut img = MetadataImage::default();
        let (b1, b2, b3) = (reg(1), reg(2), reg(3));
        for b in [&b1, &b2, &b3] {
            img.apply(&MetadataCommand::RegisterBroker(b.clone()))
                .unwrap();
        }
        let placed = img.place(0, 3, 3).unwrap();
        let t = TopicMeta::new("t".into(), BTreeMap::new(), placed);
        let id = t.id;
        img.apply(&MetadataCommand::CreateTopic(t)).unwrap();
        let p0 = img.topic("t").unwrap().partition(0).unwrap().clone();
        let first = p0.leader.unwrap();
        let lead = [&b1, &b2, &b3].into_iter().find(|b| b.id == first).unwrap();
        img.apply(&MetadataCommand::FenceBroker {
            id: lead.id,
            incarnation: lead.incarnation,
        })
        .unwrap();
        let p0 = img.topic("t").unwrap().partition(0).unwrap().clone();
        assert_ne!(p0.leader, Some(first));
        assert!(p0.leader.is_some());
        assert_eq!(p0.epoch, 1);
        assert!(!p0.isr.contains(&first));
        assert!(!img.live_brokers().contains(&first));
        // A stale incarnation's heartbeat is refused; the broker must register again.
        assert_eq!(
            img.apply(&MetadataCommand::BrokerHeartbeat {
                id: first,
                incarnation: Uuid::new_v4()
            }),
            Err(MetadataError::StaleBroker(first))
        );
        img.apply(&MetadataCommand::BrokerHeartbeat {
            id: first,
            incarnation: lead.incarnation,
        })
        .unwrap();
        assert!(img.live_brokers().contains(&first));
        // It is not in the ISR yet, so it cannot take leadership back.
        assert_eq!(
            img.apply(&MetadataCommand::ElectPreferredLeader {
                topic_id: id,
                partition: 0
            }),
            Err(MetadataError::PreferredLeaderNotAvailable)
        );
        // The leader adds it back to the ISR; a stale epoch is refused.
        let leader = p0.leader.unwrap();
        let mut isr = p0.isr.clone();
        isr.insert(first);
        let alter = |leader_epoch| MetadataCommand::AlterPartition {
            topic_id: id,
            partition: 0,
            leader,
            proposal: crate::replication::IsrProposal {
                leader_epoch,
                isr: isr.clone(),
            },
        };
        assert!(matches!(
            img.apply(&alter(0)),
            Err(MetadataError::StaleLeaderEpoch { .. })
        ));
        img.apply(&alter(1)).unwrap();
        img.apply(&MetadataCommand::ElectPreferredLeader {
            topic_id: id,
            partition: 0,
        })
        .unwrap();
        let p0 = img.topic("t").unwrap().partition(0).unwrap();
        assert_eq!((p0.leader, p0.epoch), (Some(first), 2));
    }

    #[test]
    fn the_last_isr_member_stays_and_the_partition_waits_for_it() {
        let mut img = MetadataImage::default();
        let b1 = reg(1);
        img.apply(&MetadataCommand::RegisterBroker(b1.clone()))
            .unwrap();
        img.apply(&MetadataCommand::CreateTopic(topic("solo", 1)))
            .unwrap();
        img.apply(&MetadataCommand::FenceBroker {
            id: 1,
            incarnation: b1.incarnation,
        })
        .unwrap();
        let p = img.topic("solo").unwrap().partition(0).unwrap().clone();
        assert_eq!(p.leader, None);
        assert_eq!(p.isr.iter().copied().collect::<Vec<_>>(), vec![1]);
        // Restarting (a new incarnation) makes it leader again at a new epoch.
        img.apply(&MetadataCommand::RegisterBroker(reg(1))).unwrap();
        let p = img.topic("solo").unwrap().partition(0).unwrap();
        assert_eq!((p.leader, p.epoch), (Some(1), 2));
    }

    #[test]
    fn reassignment_adds_then_removes_and_moves_leadership() {
        let mut img = MetadataImage::default();
        for id in 1..=4 {
            img.apply(&MetadataCommand::RegisterBroker(reg(id)))
                .unwrap();
        }
        let t = TopicMeta::new("r".into(), BTreeMap::new(), vec![vec![1, 2, 3]]);
        let id = t.id;
        img.apply(&MetadataCommand::CreateTopic(t)).unwrap();
        let move_to = |target: Option<Vec<i32>>| MetadataCommand::ReassignPartition {
            topic_id: id,
            partition: 0,
            target,
        };
        assert!(matches!(
            img.apply(&move_to(Some(vec![2, 2]))),
            Err(MetadataError::InvalidReplicaAssignment(_))
        ));
        assert!(matches!(
            img.apply(&move_to(Some(vec![9]))),
            Err(MetadataError::InvalidReplicaAssignment(_))
        ));
        assert!(matches!(
            img.apply(&move_to(None)),
            Err(MetadataError::NoReassignmentInProgress(_))
        ));
        img.apply(&move_to(Some(vec![2, 3, 4]))).unwrap();
        let p = img.topic("r").unwrap().partition(0).unwrap().clone();
        assert_eq!(p.replicas, vec![2, 3, 4, 1]);
        assert_eq!((p.adding.clone(), p.removing.clone()), (vec![4], vec![1]));
        assert_eq!(
            p.leader,
            Some(1),
            "leadership stays until the move completes"
        );
        // Broker 4 catches up: the leader adds it to the ISR, which completes the move.
        img.apply(&MetadataCommand::AlterPartition {
            topic_id: id,
            partition: 0,
            leader: 1,
            proposal: crate::replication::IsrProposal {
                leader_epoch: 0,
                isr: [1, 2, 3, 4].into(),
            },
        })
        .unwrap();
        let p = img.topic("r").unwrap().partition(0).unwrap();
        assert_eq!(p.replicas, vec![2, 3, 4]);
        assert_eq!(p.isr, [2, 3, 4].into());
        assert!(p.adding.is_empty() && p.removing.is_empty());
        assert_eq!((p.leader, p.epoch), (Some(2), 1));

        // A move can be cancelled before it completes: back to the original replicas.
        img.apply(&move_to(Some(vec![2, 3, 1]))).unwrap();
        assert_eq!(
            img.topic("r").unwrap().partition(0).unwrap().adding,
            vec![1]
        );
        img.apply(&move_to(None)).unwrap();
        let p = img.topic("r").unwrap().partition(0).unwrap();
        assert_eq!(p.replicas, vec![2, 3, 4]);
        assert!(p.adding.is_empty() && p.removing.is_empty());
        // A pure reorder completes at once (every target replica is already in sync).
        img.apply(&move_to(Some(vec![4, 3, 2]))).unwrap();
        let p = img.topic("r").unwrap().partition(0).unwrap();
        assert_eq!(p.replicas, vec![4, 3, 2]);
        assert!(p.adding.is_empty());
    }

    #[test]
    fn a_quick_restart_is_fenced_before_the_new_incarnation_registers() {
        let mut img = MetadataImage::default();
        for id in 1..=3 {
            img.apply(&MetadataCommand::RegisterBroker(reg(id)))
                .unwrap();
        }
        img.apply(&MetadataCommand::CreateTopic(TopicMeta::new(
            "q".into(),
            BTreeMap::new(),
            vec![vec![1, 2, 3]],
        )))
        .unwrap();
        // Broker 1 restarts within its session: never fenced, a new incarnation registers.
        img.apply(&MetadataCommand::RegisterBroker(reg(1))).unwrap();
        let p = img.topic("q").unwrap().partition(0).unwrap();
        assert_eq!(p.leader, Some(2), "leadership moved at a new epoch");
        assert_eq!(p.epoch, 1);
        assert_eq!(p.isr, [2, 3].into(), "it rejoins the ISR once caught up");
        assert!(img.live_brokers().contains(&1));
    }
}
