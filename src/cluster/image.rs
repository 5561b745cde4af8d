//! The metadata image: the state machine's view of topics. Pure data, no I/O.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use tiering::RemoteManifest;

use super::types::{Applied, MetadataCommand, MetadataError};

/// One topic as agreed by the quorum.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicMeta {
    pub name: String,
    pub id: Uuid,
    pub partitions: i32,
    /// Topic-level config overrides (Kafka names); unset keys take broker defaults.
    pub configs: BTreeMap<String, String>,
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
            MetadataCommand::CreatePartitions { name, count } => {
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
                meta.partitions = *count;
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
        TopicMeta {
            name: name.into(),
            id: Uuid::new_v4(),
            partitions,
            configs: BTreeMap::new(),
        }
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
        };
        assert!(matches!(
            img.apply(&shrink),
            Err(MetadataError::InvalidPartitionCount { .. })
        ));
        img.apply(&MetadataCommand::CreatePartitions {
            name: "orders".into(),
            count: 5,
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
}
