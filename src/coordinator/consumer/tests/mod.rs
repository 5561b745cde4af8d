//! Tests for the consumer-protocol group. [`Harness`] drives a [`ConsumerGroup`] the way the
//! shell does (topic metadata from a map, member ids from a counter) and, after every call,
//! checks that no partition is assigned to two members and that a snapshot restores to the
//! same group.

mod errors;
mod random_clients;
mod scenarios;
mod static_members;

use std::collections::{BTreeMap, BTreeSet};

use uuid::Uuid;

use super::*;

pub(super) const SESSION_MS: i32 = 45_000;
pub(super) const REBALANCE_MS: i32 = 30_000;

pub(super) fn topic_id(name: &str) -> Uuid {
    let n = name.bytes().fold(0u128, |acc, b| {
        acc.wrapping_mul(256).wrapping_add(u128::from(b))
    });
    Uuid::from_u128(n + 1)
}

/// A join (epoch 0) with every field a full request carries.
pub(super) fn join_hb(member_id: &str, topics: &[&str]) -> Heartbeat {
    Heartbeat {
        member_id: member_id.to_string(),
        member_epoch: 0,
        rebalance_timeout_ms: REBALANCE_MS,
        subscribed_topic_names: Some(topics.iter().map(|t| t.to_string()).collect()),
        owned: Some(Vec::new()),
        client_id: format!("client-{member_id}"),
        client_host: "/127.0.0.1".to_string(),
        ..Heartbeat::default()
    }
}

/// A regular heartbeat: nothing changed, owned partitions reported or not.
pub(super) fn beat(member_id: &str, epoch: i32, owned: Option<TopicPartitions>) -> Heartbeat {
    Heartbeat {
        member_id: member_id.to_string(),
        member_epoch: epoch,
        owned,
        client_id: format!("client-{member_id}"),
        client_host: "/127.0.0.1".to_string(),
        ..Heartbeat::default()
    }
}

/// `[(topic, [partitions])]` by topic name.
pub(super) fn tps(parts: &[(&str, &[i32])]) -> TopicPartitions {
    to_wire(&from_wire(
        &parts
            .iter()
            .map(|(t, ps)| (topic_id(t), ps.to_vec()))
            .collect::<Vec<_>>(),
    ))
}

pub(super) struct Harness {
    pub g: ConsumerGroup,
    pub now: i64,
    pub topics: BTreeMap<String, TopicInfo>,
    next_id: u64,
}

impl Harness {
    pub fn new(topics: &[(&str, i32)]) -> Self {
        Self::with_config(topics, ConsumerGroupConfig::default())
    }

    pub fn with_config(topics: &[(&str, i32)], config: ConsumerGroupConfig) -> Self {
        let mut h = Harness {
            g: ConsumerGroup::new("g".to_string(), config),
            now: 1_000,
            topics: BTreeMap::new(),
            next_id: 0,
        };
        for (name, partitions) in topics {
            h.set_topic(name, *partitions);
        }
        h
    }

    pub fn set_topic(&mut self, name: &str, partitions: i32) {
        let info = TopicInfo {
            name: name.to_string(),
            id: topic_id(name),
            partitions,
        };
        self.topics.insert(name.to_string(), info);
    }

    pub fn send(&mut self, hb: Heartbeat) -> Result<HeartbeatResponse, ConsumerError> {
        let topics = &self.topics;
        let next_id = &mut self.next_id;
        let result = self
            .g
            .heartbeat(self.now, hb, &|name| topics.get(name).cloned(), || {
                *next_id += 1;
                format!("generated-{next_id}")
            });
        self.after_call();
        result
    }

    pub fn ok(&mut self, hb: Heartbeat) -> HeartbeatResponse {
        let what = format!("{hb:?}");
        self.send(hb)
            .unwrap_or_else(|e| panic!("heartbeat {what} failed: {e}"))
    }

    pub fn join(&mut self, member_id: &str, topics: &[&str]) -> HeartbeatResponse {
        self.ok(join_hb(member_id, topics))
    }

    pub fn metadata_changed(&mut self) -> bool {
        let topics = &self.topics;
        let changed = self.g.on_metadata_change(&|name| topics.get(name).cloned());
        self.after_call();
        changed
    }

    pub fn advance(&mut self, ms: i64) -> bool {
        self.now += ms;
        let changed = self.g.tick(self.now);
        self.after_call();
        changed
    }

    /// Every member heartbeats as a prompt, well-behaved client would (reporting what it was
    /// last given) until the group is Stable.
    pub fn settle(&mut self) {
        for _ in 0..10 {
            if self.g.state() == ConsumerGroupState::Stable {
                return;
            }
            for m in self.g.describe().members {
                if m.member_epoch > 0 {
                    self.ok(beat(&m.member_id, m.member_epoch, Some(m.assignment)));
                }
            }
        }
        panic!("the group did not settle: {:#?}", self.g.describe());
    }

    pub fn member(&self, member_id: &str) -> MemberDescription {
        self.g
            .describe()
            .members
            .into_iter()
            .find(|m| m.member_id == member_id)
            .unwrap_or_else(|| panic!("{member_id} is not a member"))
    }

    /// The member's current assignment as the wire shows it.
    pub fn assigned(&self, member_id: &str) -> TopicPartitions {
        self.member(member_id).assignment
    }

    fn after_call(&self) {
        self.g.validate();
        let mut seen = BTreeSet::new();
        for m in self.g.describe().members {
            for (t, ps) in m.assignment {
                for p in ps {
                    assert!(seen.insert((t, p)), "{t}-{p} assigned twice");
                }
            }
        }
        if self.g.state() == ConsumerGroupState::Dead {
            return; // the shell deletes a Dead group instead of persisting it
        }
        let restored = ConsumerGroup::restore(self.g.snapshot(), self.g.config, self.now);
        assert_eq!(restored.describe(), self.g.describe());
        assert_eq!(restored.snapshot(), self.g.snapshot());
    }
}
