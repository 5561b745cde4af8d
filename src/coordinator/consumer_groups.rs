//! The shell around KIP-848 consumer groups (`consumer`): ConsumerGroupHeartbeat and
//! ConsumerGroupDescribe, their timers, and persistence of each group's snapshot.
//!
//! A group's snapshot is written only when it changed since the last write, so steady
//! heartbeats cost no I/O.

use std::sync::Arc;

use super::consumer::{
    ConsumerError, ConsumerGroup, ConsumerGroupDescription, Heartbeat, HeartbeatResponse, TopicInfo,
};
use super::records::{encode_key, encode_value, RecordKey, RecordValue};
use super::{Coordinator, CoordinatorError, State};

impl Coordinator {
    /// One ConsumerGroupHeartbeat. `topics` resolves a topic name to current metadata.
    pub async fn consumer_heartbeat(
        self: &Arc<Self>,
        group_id: &str,
        hb: Heartbeat,
        topics: &(dyn Fn(&str) -> Option<TopicInfo> + Sync),
    ) -> Result<HeartbeatResponse, CoordinatorError> {
        let (resp, write) = {
            let mut st = self.lock();
            self.check(&st, group_id)?;
            if st.groups.get(group_id).is_some_and(|g| !g.is_empty()) {
                // A classic group with members owns this id.
                return Err(super::group::GroupError::InconsistentGroupProtocol.into());
            }
            if !st.consumer_groups.contains_key(group_id) {
                if hb.member_epoch != 0 {
                    return Err(ConsumerError::GroupIdNotFound.into());
                }
                let g = ConsumerGroup::new(group_id.to_string(), self.consumer_config);
                st.consumer_groups.insert(group_id.to_string(), g);
            }
            let Some(group) = st.consumer_groups.get_mut(group_id) else {
                return Err(ConsumerError::GroupIdNotFound.into());
            };
            let resp = group.heartbeat(crate::now_ms(), hb, topics, || {
                uuid::Uuid::new_v4().to_string()
            });
            let write = Self::changed_snapshot(&mut st, group_id);
            (resp, write)
        };
        if let Some((p, record)) = write {
            // The heartbeat's answer depends on this state: make it durable first.
            self.append(p, vec![record]).await?;
        }
        Ok(resp?)
    }

    /// The group's snapshot record if it differs from the last one written.
    fn changed_snapshot(st: &mut State, group_id: &str) -> Option<(i32, super::store::KeyValue)> {
        let group = st.consumer_groups.get(group_id)?;
        let bytes = encode_value(&RecordValue::ConsumerGroup(Box::new(group.snapshot())));
        if st.consumer_persisted.get(group_id) == Some(&bytes) {
            return None;
        }
        st.consumer_persisted
            .insert(group_id.to_string(), bytes.clone());
        let key = encode_key(&RecordKey::ConsumerGroup {
            group: group_id.to_string(),
        });
        Some((
            super::records::partition_for(group_id, st.partitions),
            (key, Some(bytes)),
        ))
    }

    pub fn consumer_describe(
        &self,
        group_id: &str,
    ) -> Result<Option<ConsumerGroupDescription>, CoordinatorError> {
        let st = self.lock();
        self.check(&st, group_id)?;
        Ok(st.consumer_groups.get(group_id).map(|g| g.describe()))
    }

    /// Session and revocation timeouts of consumer groups; persists what changed.
    pub(super) fn tick_consumer_groups(self: &Arc<Self>, now: i64) {
        let writes: Vec<(i32, super::store::KeyValue)> = {
            let mut st = self.lock();
            let due: Vec<String> = st
                .consumer_groups
                .iter()
                .filter(|(_, g)| g.next_deadline_ms().is_some_and(|d| d <= now))
                .map(|(id, _)| id.clone())
                .collect();
            let mut writes = Vec::new();
            for id in due {
                let changed = st.consumer_groups.get_mut(&id).is_some_and(|g| g.tick(now));
                if changed {
                    writes.extend(Self::changed_snapshot(&mut st, &id));
                }
            }
            writes
        };
        if writes.is_empty() {
            return;
        }
        let this = self.clone();
        tokio::spawn(async move {
            for (p, record) in writes {
                if let Err(e) = this.append(p, vec![record]).await {
                    tracing::error!(partition = p, error = %e, "persisting consumer group failed");
                }
            }
        });
    }
}
