//! ConsumerGroupHeartbeat (Kafka's `GroupMetadataManager.consumerGroupHeartbeat` and
//! `consumerGroupLeave`): request validation, joining, the epoch checks, leaving, and what the
//! response carries.
//!
//! Deviation: a heartbeat with epoch 0 from a member id the group already has is a rejoin: the
//! member declared (epoch 0, nothing owned) that it dropped its partitions, so they are freed
//! and it reconciles from scratch. Kafka applies its epoch check instead and answers
//! FENCED_MEMBER_EPOCH until the session expires, although KIP-848 and KIP-1082 clients rejoin
//! after fencing with the same member id and epoch 0.

use super::member::Member;
use super::reconcile;
use super::types::{
    from_wire, to_wire, Assignment, Assignor, ConsumerError, Heartbeat, HeartbeatResponse,
    MemberState, TopicInfo, LEAVE_GROUP_MEMBER_EPOCH, LEAVE_GROUP_STATIC_MEMBER_EPOCH,
};
use super::ConsumerGroup;

/// How a heartbeat relates to the group's members.
enum Entry {
    /// A regular heartbeat of a known member.
    Existing,
    /// A member the group has never seen.
    New,
    /// A known member joins again with epoch 0.
    Rejoin,
    /// A static member comes back under a new member id and takes over from the old one.
    Replace(String),
}

impl ConsumerGroup {
    /// One heartbeat. `topics` resolves subscribed topic names to their current metadata
    /// (`None`: the topic does not exist now); `new_member_id` names a member that joins
    /// without an id (ConsumerGroupHeartbeat v0).
    pub fn heartbeat(
        &mut self,
        now_ms: i64,
        hb: Heartbeat,
        topics: &dyn Fn(&str) -> Option<TopicInfo>,
        new_member_id: impl FnOnce() -> String,
    ) -> Result<HeartbeatResponse, ConsumerError> {
        let assignor = validate_request(&hb)?;
        if self.dead {
            return Err(ConsumerError::GroupIdNotFound);
        }
        let result = if hb.member_epoch < 0 {
            self.leave(&hb)
        } else {
            self.member_heartbeat(now_ms, hb, assignor, topics, new_member_id)
        };
        self.check();
        result
    }

    fn member_heartbeat(
        &mut self,
        now_ms: i64,
        hb: Heartbeat,
        assignor: Option<Assignor>,
        topics: &dyn Fn(&str) -> Option<TopicInfo>,
        new_member_id: impl FnOnce() -> String,
    ) -> Result<HeartbeatResponse, ConsumerError> {
        if self.members.len() >= self.config.max_size && !self.members.contains_key(&hb.member_id) {
            return Err(ConsumerError::GroupMaxSizeReached);
        }
        let owned = hb.owned.as_deref().map(from_wire);
        let member_id = if hb.member_id.is_empty() {
            new_member_id()
        } else {
            hb.member_id.clone()
        };
        let entry = self.resolve(&member_id, &hb, owned.as_ref())?;

        // Nothing below fails: the group changes only for an accepted heartbeat.
        match entry {
            Entry::Existing => {}
            Entry::New => {
                self.members
                    .insert(member_id.clone(), Member::new(member_id.clone(), now_ms));
            }
            Entry::Rejoin => {
                self.release_all(&member_id);
                let m = self.members.get_mut(&member_id).expect("resolved");
                m.member_epoch = 0;
                m.previous_member_epoch = 0;
            }
            Entry::Replace(old_id) => self.replace_static_member(&old_id, &member_id),
        }

        // A full request carries every field a join needs; it asks for the whole assignment.
        let full_request = hb.member_epoch == 0
            || (hb.rebalance_timeout_ms != -1
                && hb.subscribed_topic_names.is_some()
                && hb.owned.is_some());
        let m = self.members.get_mut(&member_id).expect("resolved");
        let assigned_before = m.assigned.clone();
        let subscription_before = m.subscribed_topic_names.clone();
        if let Some(instance) = hb.instance_id {
            if m.instance_id.as_ref() != Some(&instance) {
                if let Some(old) = m.instance_id.replace(instance.clone()) {
                    self.static_members.remove(&old);
                }
                self.static_members.insert(instance, member_id.clone());
            }
        }
        if hb.rack_id.is_some() {
            m.rack_id = hb.rack_id;
        }
        if hb.rebalance_timeout_ms != -1 {
            m.rebalance_timeout_ms = hb.rebalance_timeout_ms;
        }
        if assignor.is_some() {
            m.server_assignor = assignor;
        }
        if let Some(names) = hb.subscribed_topic_names {
            m.subscribed_topic_names = names.into_iter().collect();
        }
        m.client_id = hb.client_id;
        m.client_host = hb.client_host;
        let subscription_changed = m.subscribed_topic_names != subscription_before;

        // Deviation: Kafka re-reads topic metadata on a subscription change or when a refresh
        // interval expires; here every heartbeat does (a lookup per subscribed topic), so a
        // missed `on_metadata_change` heals on the next heartbeat.
        let metadata_changed = self.refresh_topics(topics);
        if subscription_changed || metadata_changed {
            self.group_epoch += 1;
        }
        if self.group_epoch > self.assignment_epoch {
            self.compute_target();
        }
        self.reconcile(&member_id, owned.as_ref(), now_ms);

        let session_ms = i64::from(self.config.session_timeout_ms);
        let m = self.members.get_mut(&member_id).expect("resolved");
        m.session_deadline_ms = now_ms.saturating_add(session_ms);
        // Beyond Kafka's rule (full request, or the assignment changed), a member that reports
        // owning something else than its assignment gets it again: a lost response heals on
        // the next heartbeat instead of waiting for the member's own timeout.
        let owned_differs = owned.as_ref().is_some_and(|o| *o != m.assigned);
        let send_assignment = full_request || m.assigned != assigned_before || owned_differs;
        Ok(HeartbeatResponse {
            member_id,
            member_epoch: m.member_epoch,
            heartbeat_interval_ms: self.config.heartbeat_interval_ms,
            assignment: send_assignment.then(|| to_wire(&m.assigned)),
        })
    }

    /// Which member a heartbeat is for, with Kafka's checks of instance ids and epochs.
    fn resolve(
        &self,
        member_id: &str,
        hb: &Heartbeat,
        owned: Option<&Assignment>,
    ) -> Result<Entry, ConsumerError> {
        let joining = hb.member_epoch == 0;
        match (&hb.instance_id, joining) {
            (Some(instance), true) => match self.static_members.get(instance) {
                Some(holder) if holder != member_id => {
                    if self.members[holder].member_epoch != LEAVE_GROUP_STATIC_MEMBER_EPOCH {
                        return Err(ConsumerError::UnreleasedInstanceId);
                    }
                    if self.members.contains_key(member_id) {
                        return Err(ConsumerError::InvalidRequest(
                            "MemberId is in use by another member.".to_string(),
                        ));
                    }
                    Ok(Entry::Replace(holder.clone()))
                }
                _ => Ok(self.join_entry(member_id)),
            },
            (None, true) => Ok(self.join_entry(member_id)),
            (Some(instance), false) => {
                let holder = self
                    .static_members
                    .get(instance)
                    .ok_or(ConsumerError::UnknownMemberId)?;
                if holder != member_id {
                    return Err(ConsumerError::FencedInstanceId);
                }
                self.check_epoch(member_id, hb.member_epoch, owned)?;
                Ok(Entry::Existing)
            }
            (None, false) => {
                self.check_epoch(member_id, hb.member_epoch, owned)?;
                Ok(Entry::Existing)
            }
        }
    }

    fn join_entry(&self, member_id: &str) -> Entry {
        if self.members.contains_key(member_id) {
            Entry::Rejoin
        } else {
            Entry::New
        }
    }

    /// Kafka's `throwIfConsumerGroupMemberEpochIsInvalid`: an epoch ahead of the member's is
    /// fenced; one behind is fenced unless it is the previous epoch and the member owns no
    /// more than its current assignment (the response that moved it on was lost).
    fn check_epoch(
        &self,
        member_id: &str,
        received: i32,
        owned: Option<&Assignment>,
    ) -> Result<(), ConsumerError> {
        let m = self
            .members
            .get(member_id)
            .ok_or(ConsumerError::UnknownMemberId)?;
        if received > m.member_epoch {
            return Err(ConsumerError::FencedMemberEpoch);
        }
        if received < m.member_epoch {
            let within = |o: &Assignment| {
                o.iter()
                    .all(|(t, ps)| m.assigned.get(t).is_some_and(|a| ps.is_subset(a)))
            };
            if received != m.previous_member_epoch || !owned.is_some_and(within) {
                return Err(ConsumerError::FencedMemberEpoch);
            }
        }
        Ok(())
    }

    /// A static member that left with epoch -2 is replaced by its successor: same assignment,
    /// target and subscription under the new member id, epoch 0 (Kafka's `replaceMember`).
    fn replace_static_member(&mut self, old_id: &str, new_id: &str) {
        let mut m = self.members.remove(old_id).expect("resolved");
        for tp in m.held() {
            self.holders.insert(tp, new_id.to_string());
        }
        if let Some(t) = self.target.remove(old_id) {
            self.target.insert(new_id.to_string(), t);
        }
        if let Some(instance) = &m.instance_id {
            self.static_members
                .insert(instance.clone(), new_id.to_string());
        }
        m.member_id = new_id.to_string();
        m.member_epoch = 0;
        m.previous_member_epoch = 0;
        self.members.insert(new_id.to_string(), m);
    }

    fn reconcile(&mut self, member_id: &str, owned: Option<&Assignment>, now_ms: i64) {
        let empty = Assignment::new();
        let step = reconcile::next_step(
            &self.members[member_id],
            self.assignment_epoch,
            self.target.get(member_id).unwrap_or(&empty),
            &|t, p| self.held_by_other(member_id, t, p),
            owned,
        );
        if let Some(step) = step {
            self.apply_step(member_id, step, now_ms);
        }
    }

    /// Epoch -1 leaves for good; -2 (static members only) leaves until the session expires,
    /// keeping the assignment for a successor with the same instance id.
    fn leave(&mut self, hb: &Heartbeat) -> Result<HeartbeatResponse, ConsumerError> {
        let member_id = match &hb.instance_id {
            None if self.members.contains_key(&hb.member_id) => hb.member_id.clone(),
            None => return Err(ConsumerError::UnknownMemberId),
            Some(instance) => {
                let holder = self
                    .static_members
                    .get(instance)
                    .ok_or(ConsumerError::UnknownMemberId)?;
                if *holder != hb.member_id {
                    return Err(ConsumerError::FencedInstanceId);
                }
                holder.clone()
            }
        };
        if hb.member_epoch == LEAVE_GROUP_STATIC_MEMBER_EPOCH {
            // What it was revoking is released; what it was assigned stays held for its
            // successor. The session timer keeps running from its last heartbeat.
            let m = self.members.get_mut(&member_id).expect("resolved");
            for (t, ps) in std::mem::take(&mut m.pending_revocation) {
                for p in ps {
                    self.holders.remove(&(t, p));
                }
            }
            m.member_epoch = LEAVE_GROUP_STATIC_MEMBER_EPOCH;
            m.state = MemberState::Stable;
            m.revocation_deadline_ms = None;
        } else {
            self.remove_member(&member_id);
        }
        Ok(HeartbeatResponse {
            member_id,
            member_epoch: hb.member_epoch,
            heartbeat_interval_ms: 0,
            assignment: None,
        })
    }
}

/// Kafka's `throwIfConsumerGroupHeartbeatRequestIsInvalid`; returns the named assignor.
fn validate_request(hb: &Heartbeat) -> Result<Option<Assignor>, ConsumerError> {
    let invalid = |msg: &str| Err(ConsumerError::InvalidRequest(msg.to_string()));
    if hb.instance_id.as_deref() == Some("") {
        return invalid("InstanceId can't be empty.");
    }
    if hb.rack_id.as_deref() == Some("") {
        return invalid("RackId can't be empty.");
    }
    // librdkafka sends an empty regex when it subscribes by name.
    if hb
        .subscribed_topic_regex
        .as_deref()
        .is_some_and(|r| !r.is_empty())
    {
        return invalid("SubscribedTopicRegex is not supported.");
    }
    match hb.member_epoch {
        e if e > 0 || e == LEAVE_GROUP_MEMBER_EPOCH => {
            if hb.member_id.is_empty() {
                return invalid("MemberId can't be empty.");
            }
        }
        0 => {
            if hb.rebalance_timeout_ms == -1 {
                return invalid("RebalanceTimeoutMs must be provided in first request.");
            }
            // Kafka's rule is "not non-empty": a null list is fine on a join.
            if hb
                .owned
                .as_deref()
                .is_some_and(|o| !from_wire(o).is_empty())
            {
                return invalid("TopicPartitions must be empty when (re-)joining.");
            }
            if hb.subscribed_topic_names.as_ref().is_none_or(Vec::is_empty) {
                return invalid("SubscribedTopicNames must be set in first request.");
            }
        }
        LEAVE_GROUP_STATIC_MEMBER_EPOCH => {
            if hb.member_id.is_empty() {
                return invalid("MemberId can't be empty.");
            }
            if hb.instance_id.is_none() {
                return invalid("InstanceId can't be null.");
            }
        }
        _ => return invalid("MemberEpoch is invalid."),
    }
    match &hb.server_assignor {
        None => Ok(None),
        Some(name) => Assignor::from_name(name)
            .map(Some)
            .ok_or(ConsumerError::UnsupportedAssignor),
    }
}
