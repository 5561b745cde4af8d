//! The records the group coordinator keeps in `__consumer_offsets`, and the pure store they
//! replay into.
//!
//! Keys and values are JSON: deterministic for a given logical key (so a compacted topic keeps
//! the newest value per key) and readable with any consumer. A null value is a tombstone.
//! Invariant: replaying a partition from its start yields exactly the state the coordinator
//! held when it last wrote to it.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use super::consumer::ConsumerGroupSnapshot;
use super::group::GroupSnapshot;

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum RecordKey {
    Offset {
        group: String,
        topic: String,
        partition: i32,
    },
    Group {
        group: String,
    },
    /// A group of the KIP-848 consumer protocol.
    ConsumerGroup {
        group: String,
    },
}

/// A committed offset as Kafka's OffsetFetch returns it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommittedOffset {
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: Option<String>,
    pub commit_timestamp_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum RecordValue {
    Offset(CommittedOffset),
    Group(Box<GroupSnapshot>),
    ConsumerGroup(Box<ConsumerGroupSnapshot>),
}

pub fn encode_key(key: &RecordKey) -> Vec<u8> {
    serde_json::to_vec(key).expect("record keys always serialise")
}

pub fn encode_value(value: &RecordValue) -> Vec<u8> {
    serde_json::to_vec(value).expect("record values always serialise")
}

/// Offsets and group snapshots of the groups in one `__consumer_offsets` partition.
#[derive(Debug, Default)]
pub struct OffsetStore {
    /// group -> (topic, partition) -> offset
    offsets: HashMap<String, BTreeMap<(String, i32), CommittedOffset>>,
    groups: HashMap<String, GroupSnapshot>,
    consumer_groups: HashMap<String, ConsumerGroupSnapshot>,
}

/// What replaying one record did.
#[derive(Debug, PartialEq)]
pub enum Replayed {
    Ok,
    /// The record could not be parsed; it is skipped.
    Unreadable(String),
}

impl OffsetStore {
    /// Applies one stored record (value `None` = tombstone).
    pub fn replay(&mut self, key: &[u8], value: Option<&[u8]>) -> Replayed {
        let key: RecordKey = match serde_json::from_slice(key) {
            Ok(k) => k,
            Err(e) => return Replayed::Unreadable(format!("key: {e}")),
        };
        match (key, value) {
            (
                RecordKey::Offset {
                    group,
                    topic,
                    partition,
                },
                Some(v),
            ) => match serde_json::from_slice::<CommittedOffset>(v) {
                Ok(o) => self.commit(&group, topic, partition, o),
                Err(e) => return Replayed::Unreadable(format!("offset value: {e}")),
            },
            (
                RecordKey::Offset {
                    group,
                    topic,
                    partition,
                },
                None,
            ) => {
                self.delete_offset(&group, &topic, partition);
            }
            (RecordKey::Group { group }, Some(v)) => {
                match serde_json::from_slice::<GroupSnapshot>(v) {
                    Ok(g) => {
                        self.groups.insert(group, g);
                    }
                    Err(e) => return Replayed::Unreadable(format!("group value: {e}")),
                }
            }
            (RecordKey::Group { group }, None) => {
                self.groups.remove(&group);
            }
            (RecordKey::ConsumerGroup { group }, Some(v)) => {
                match serde_json::from_slice::<ConsumerGroupSnapshot>(v) {
                    Ok(g) => {
                        self.consumer_groups.insert(group, g);
                    }
                    Err(e) => return Replayed::Unreadable(format!("consumer group value: {e}")),
                }
            }
            (RecordKey::ConsumerGroup { group }, None) => {
                self.consumer_groups.remove(&group);
            }
        }
        Replayed::Ok
    }

    pub fn commit(&mut self, group: &str, topic: String, partition: i32, offset: CommittedOffset) {
        self.offsets
            .entry(group.to_string())
            .or_default()
            .insert((topic, partition), offset);
    }

    pub fn delete_offset(&mut self, group: &str, topic: &str, partition: i32) {
        if let Some(g) = self.offsets.get_mut(group) {
            g.remove(&(topic.to_string(), partition));
            if g.is_empty() {
                self.offsets.remove(group);
            }
        }
    }

    pub fn offset(&self, group: &str, topic: &str, partition: i32) -> Option<&CommittedOffset> {
        self.offsets
            .get(group)?
            .get(&(topic.to_string(), partition))
    }

    /// Every committed offset of `group`, ordered by topic and partition.
    pub fn offsets_of(&self, group: &str) -> Vec<(&(String, i32), &CommittedOffset)> {
        self.offsets
            .get(group)
            .map(|m| m.iter().collect())
            .unwrap_or_default()
    }

    pub fn has_offsets(&self, group: &str) -> bool {
        self.offsets.contains_key(group)
    }

    pub fn group_ids(&self) -> impl Iterator<Item = &String> {
        self.offsets.keys().chain(
            self.groups
                .keys()
                .filter(|g| !self.offsets.contains_key(*g)),
        )
    }

    pub fn take_group_snapshots(&mut self) -> HashMap<String, GroupSnapshot> {
        std::mem::take(&mut self.groups)
    }

    pub fn take_consumer_group_snapshots(&mut self) -> HashMap<String, ConsumerGroupSnapshot> {
        std::mem::take(&mut self.consumer_groups)
    }

    /// Offsets of empty groups older than `retention_ms` (Kafka's `offsets.retention.minutes`):
    /// the keys to tombstone.
    pub fn expired(
        &self,
        now_ms: i64,
        retention_ms: i64,
        is_empty_group: impl Fn(&str) -> bool,
    ) -> Vec<RecordKey> {
        let mut out = Vec::new();
        for (group, offsets) in &self.offsets {
            if !is_empty_group(group) {
                continue;
            }
            // Kafka expires an empty group's offsets together, once the newest is old enough.
            let newest = offsets
                .values()
                .map(|o| o.commit_timestamp_ms)
                .max()
                .unwrap_or(0);
            if now_ms - newest >= retention_ms {
                out.extend(offsets.keys().map(|(t, p)| RecordKey::Offset {
                    group: group.clone(),
                    topic: t.clone(),
                    partition: *p,
                }));
            }
        }
        out
    }
}

/// Kafka's mapping of a group id to its `__consumer_offsets` partition:
/// `abs(javaStringHashCode(group)) % partitions`.
pub fn partition_for(group: &str, partitions: i32) -> i32 {
    let mut h: i32 = 0;
    for unit in group.encode_utf16() {
        h = h.wrapping_mul(31).wrapping_add(i32::from(unit));
    }
    // Kafka's Utils.abs maps i32::MIN to 0.
    let abs = if h == i32::MIN { 0 } else { h.abs() };
    abs % partitions.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn off(offset: i64, ts: i64) -> CommittedOffset {
        CommittedOffset {
            offset,
            leader_epoch: -1,
            metadata: Some("m".into()),
            commit_timestamp_ms: ts,
        }
    }

    #[test]
    fn replay_applies_commits_and_tombstones() {
        let mut s = OffsetStore::default();
        let k = encode_key(&RecordKey::Offset {
            group: "g".into(),
            topic: "t".into(),
            partition: 1,
        });
        assert_eq!(
            s.replay(&k, Some(&encode_value(&RecordValue::Offset(off(5, 1))))),
            Replayed::Ok
        );
        assert_eq!(s.offset("g", "t", 1).map(|o| o.offset), Some(5));
        s.replay(&k, Some(&encode_value(&RecordValue::Offset(off(9, 2)))));
        assert_eq!(s.offset("g", "t", 1).map(|o| o.offset), Some(9));
        s.replay(&k, None);
        assert!(s.offset("g", "t", 1).is_none());
        assert!(!s.has_offsets("g"));
        assert!(matches!(s.replay(b"nope", None), Replayed::Unreadable(_)));
    }

    #[test]
    fn keys_are_deterministic() {
        let a = RecordKey::Offset {
            group: "g".into(),
            topic: "t".into(),
            partition: 0,
        };
        assert_eq!(encode_key(&a), encode_key(&a.clone()));
        assert_ne!(
            encode_key(&a),
            encode_key(&RecordKey::Group { group: "g".into() })
        );
    }

    #[test]
    fn expiry_only_for_empty_groups_and_all_offsets_together() {
        let mut s = OffsetStore::default();
        s.commit("old", "t".into(), 0, off(1, 0));
        s.commit("old", "t".into(), 1, off(1, 50));
        s.commit("busy", "t".into(), 0, off(1, 0));
        let expired = s.expired(1000, 100, |g| g == "old");
        assert_eq!(expired.len(), 2);
        assert!(s.expired(120, 100, |g| g == "old").is_empty());
    }

    #[test]
    fn partition_mapping_matches_kafka() {
        // Java: "my-group".hashCode() == -1906497762, so abs % 50 == 12; "".hashCode() == 0.
        assert_eq!(partition_for("my-group", 50), 12);
        assert_eq!(partition_for("", 50), 0);
        for g in ["a", "consumer-group-1", "Ω"] {
            assert!((0..50).contains(&partition_for(g, 50)));
        }
    }
}
