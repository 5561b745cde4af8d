//! The rebalance itself: entering PreparingRebalance, completing the join phase into a new
//! generation, and handing the leader's assignment to everyone (Kafka's `prepareRebalance`,
//! `completeClassicGroupJoin`, `propagateAssignment`).

use bytes::Bytes;

use super::{Group, GroupError, GroupState, JoinTimer, Output, SyncResponse};

impl Group {
    /// A membership change: rebalance if the group is settled, else see whether the join phase
    /// in progress can finish now.
    pub(super) fn maybe_prepare_rebalance_or_complete_join(
        &mut self,
        now_ms: i64,
        out: &mut Vec<Output>,
    ) {
        match self.state {
            GroupState::Empty | GroupState::CompletingRebalance | GroupState::Stable => {
                self.prepare_rebalance(now_ms, out)
            }
            GroupState::PreparingRebalance => self.maybe_complete_join(now_ms, out),
            GroupState::Dead => {}
        }
    }

    pub(super) fn prepare_rebalance(&mut self, now_ms: i64, out: &mut Vec<Output>) {
        if self.state == GroupState::CompletingRebalance {
            // Parked SyncGroups of the abandoned generation: rejoin.
            self.reset_and_propagate_error(now_ms, GroupError::RebalanceInProgress, out);
        }
        self.pending_sync.clear();
        self.sync_deadline_ms = None;

        let initial = self.state == GroupState::Empty;
        tracing::info!(
            group = %self.group_id,
            from = self.state.as_str(),
            generation = self.generation_id,
            "preparing to rebalance"
        );
        self.transition(GroupState::PreparingRebalance, now_ms);
        if initial {
            // Give the other members of a group starting up together time to join, so they
            // share one generation.
            let delay_ms = self.config.initial_rebalance_delay_ms.max(0);
            self.new_member_added = false;
            self.join_timer = Some(JoinTimer::Initial {
                deadline_ms: now_ms + i64::from(delay_ms),
                delay_ms,
                remaining_ms: (self.rebalance_timeout_ms() - delay_ms).max(0),
            });
        } else if self.all_members_joined() {
            self.complete_join(now_ms, out);
        } else {
            self.join_timer = Some(JoinTimer::Rebalance {
                deadline_ms: now_ms + i64::from(self.rebalance_timeout_ms()),
            });
        }
    }

    /// Completes the join phase once every member and pending id has joined, except during the
    /// initial rebalance, which only its timer ends.
    pub(super) fn maybe_complete_join(&mut self, now_ms: i64, out: &mut Vec<Output>) {
        if self.state == GroupState::PreparingRebalance
            && self.previous_state != GroupState::Empty
            && self.all_members_joined()
        {
            self.complete_join(now_ms, out);
        }
    }

    /// The initial-delay timer fired: extend it if someone joined meanwhile and the rebalance
    /// timeout leaves room (Kafka's `InitialDelayedJoin` arithmetic), else complete.
    pub(super) fn on_initial_delay_expired(
        &mut self,
        now_ms: i64,
        delay_ms: i32,
        remaining_ms: i32,
        out: &mut Vec<Output>,
    ) {
        if self.new_member_added && remaining_ms != 0 {
            self.new_member_added = false;
            let next_delay_ms = self
                .config
                .initial_rebalance_delay_ms
                .max(0)
                .min(remaining_ms);
            self.join_timer = Some(JoinTimer::Initial {
                deadline_ms: now_ms + i64::from(next_delay_ms),
                delay_ms: next_delay_ms,
                remaining_ms: (remaining_ms - delay_ms).max(0),
            });
        } else {
            self.complete_join(now_ms, out);
        }
    }

    /// Ends the join phase: dynamic members that did not rejoin are dropped (static ones keep
    /// their place until their session or the sync timeout ends it), the generation advances,
    /// a protocol is chosen and every parked JoinGroup is answered.
    pub(super) fn complete_join(&mut self, now_ms: i64, out: &mut Vec<Output>) {
        self.join_timer = None;
        let missing: Vec<String> = self
            .members
            .values()
            .filter(|m| m.join_token.is_none() && m.group_instance_id.is_none())
            .map(|m| m.member_id.clone())
            .collect();
        for id in &missing {
            self.remove_member(id, out);
        }
        if self.state == GroupState::Dead {
            return;
        }
        if !self.elect_joined_leader() && !self.members.is_empty() {
            // Only static members that have not rejoined are left: wait for them (or for their
            // sessions to end).
            self.join_timer = Some(JoinTimer::Rebalance {
                deadline_ms: now_ms + i64::from(self.rebalance_timeout_ms().max(1)),
            });
            return;
        }
        self.generation_id += 1;
        self.pending_sync.clear();
        if self.members.is_empty() {
            self.protocol_name = None;
            self.transition(GroupState::Empty, now_ms);
            tracing::info!(group = %self.group_id, generation = self.generation_id, "group is now empty");
            self.persist(out);
            return;
        }
        self.protocol_name = Some(
            self.select_protocol()
                .expect("joiners were admitted only with a protocol every member supports"),
        );
        self.transition(GroupState::CompletingRebalance, now_ms);
        tracing::info!(
            group = %self.group_id,
            generation = self.generation_id,
            members = self.members.len(),
            "join phase complete"
        );
        let leader = self
            .leader
            .clone()
            .expect("a group with members has a leader");
        let leader_members = self.join_members();
        let ids: Vec<String> = self
            .members_in_order()
            .iter()
            .map(|m| m.member_id.clone())
            .collect();
        for id in ids {
            let members = if id == leader {
                leader_members.clone()
            } else {
                Vec::new()
            };
            let response = self.generation_response(&id, leader.clone(), members);
            let m = self.members.get_mut(&id).expect("member listed");
            if let Some(token) = m.join_token.take() {
                out.push(Output::Join(token, response));
            }
            m.refresh_session(now_ms);
            m.is_new = false;
            self.pending_sync.insert(id);
        }
        self.sync_deadline_ms = Some(now_ms + i64::from(self.rebalance_timeout_ms()));
    }

    /// Keeps the leader if it rejoined, else picks the earliest joiner that did. False when
    /// nobody rejoined (or there is nobody).
    fn elect_joined_leader(&mut self) -> bool {
        let Some(leader) = self.leader.clone() else {
            return false;
        };
        if self
            .members
            .get(&leader)
            .is_some_and(|m| m.join_token.is_some())
        {
            return true;
        }
        let joined = self
            .members_in_order()
            .into_iter()
            .find(|m| m.join_token.is_some())
            .map(|m| m.member_id.clone());
        match joined {
            Some(id) => {
                self.leader = Some(id);
                true
            }
            None => false,
        }
    }

    /// The leader's SyncGroup: store the assignment (missing members get empty bytes), go
    /// Stable, persist, and answer every parked SyncGroup.
    pub(super) fn complete_sync(
        &mut self,
        now_ms: i64,
        assignments: Vec<(String, Bytes)>,
        out: &mut Vec<Output>,
    ) {
        for m in self.members.values_mut() {
            m.assignment = Bytes::new();
        }
        for (id, assignment) in assignments {
            if let Some(m) = self.members.get_mut(&id) {
                m.assignment = assignment;
            }
        }
        self.transition(GroupState::Stable, now_ms);
        self.persist(out);
        self.propagate(now_ms, None, out);
    }

    fn reset_and_propagate_error(&mut self, now_ms: i64, error: GroupError, out: &mut Vec<Output>) {
        for m in self.members.values_mut() {
            m.assignment = Bytes::new();
        }
        self.propagate(now_ms, Some(error), out);
    }

    /// Answers every parked SyncGroup with its assignment (or `error`) and restarts the
    /// session of each member answered: its parked request was standing in for heartbeats.
    fn propagate(&mut self, now_ms: i64, error: Option<GroupError>, out: &mut Vec<Output>) {
        let (protocol_type, protocol_name) = match error {
            None => (self.protocol_type.clone(), self.protocol_name.clone()),
            Some(_) => (None, None),
        };
        let mut answered: Vec<(u64, Output)> = Vec::new();
        for m in self.members.values_mut() {
            if let Some(token) = m.sync_token.take() {
                let response = SyncResponse {
                    error,
                    protocol_type: protocol_type.clone(),
                    protocol_name: protocol_name.clone(),
                    assignment: m.assignment.clone(),
                };
                answered.push((m.seq, Output::Sync(token, response)));
                m.refresh_session(now_ms);
            }
        }
        answered.sort_by_key(|(seq, _)| *seq);
        out.extend(answered.into_iter().map(|(_, o)| o));
    }
}
