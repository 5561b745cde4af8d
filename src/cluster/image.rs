//! The metadata image: the state machine's view of topics. Pure data, no I/O.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

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

/// Every topic, by name and by id, and the producer id counter.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MetadataImage {
    pub topics: BTreeMap<String, TopicMeta>,
    /// The lowest producer id not yet reserved by any broker; every id below it has been
    /// handed to some broker. Absent from snapshots written before producer ids existed.
    #[serde(default)]
    pub next_producer_id: i64,
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
}
