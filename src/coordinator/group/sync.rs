//! SyncGroup, Heartbeat, LeaveGroup, the member checks of OffsetCommit and DeleteGroups, and
//! the end of a group (Kafka's `classicGroupSync`, `classicGroupHeartbeat`, `classicGroupLeave`,
//! `ClassicGroup.validateOffsetCommit`).

use super::{Group, GroupError, GroupState, Output, SyncRequest, SyncResponse, Token};

impl Group {
    pub fn sync(&mut self, now_ms: i64, req: SyncRequest, token: Token) -> Vec<Output> {
        let mut out = Vec::new();
        self.handle_sync(now_ms, req, token, &mut out);
        self.check();
        out
    }

    fn validate_sync(&self, req: &SyncRequest) -> Result<(), GroupError> {
        if self.state == GroupState::Dead {
            return Err(GroupError::CoordinatorNotAvailable);
        }
        self.validate_member(&req.member_id, req.group_instance_id.as_deref())?;
        if req.generation_id != self.generation_id {
            return Err(GroupError::IllegalGeneration);
        }
        let differs = |given: &Option<String>, ours: &Option<String>| {
            given.as_ref().is_some_and(|g| ours.as_ref() != Some(g))
        };
        if differs(&req.protocol_type, &self.protocol_type)
            || differs(&req.protocol_name, &self.protocol_name)
        {
            return Err(GroupError::InconsistentGroupProtocol);
        }
        Ok(())
    }

    fn handle_sync(&mut self, now_ms: i64, req: SyncRequest, token: Token, out: &mut Vec<Output>) {
        if let Err(e) = self.validate_sync(&req) {
            out.push(Output::Sync(token, SyncResponse::error(e)));
            return;
        }
        match self.state {
            GroupState::PreparingRebalance => {
                out.push(Output::Sync(
                    token,
                    SyncResponse::error(GroupError::RebalanceInProgress),
                ));
            }
            GroupState::CompletingRebalance => {
                let m = self.members.get_mut(&req.member_id).expect("validated");
                if let Some(old) = m.sync_token.replace(token) {
                    // Deviation: Kafka overwrites the parked callback and never answers it.
                    out.push(Output::Sync(
                        old,
                        SyncResponse::error(GroupError::RebalanceInProgress),
                    ));
                }
                self.remove_pending_sync(&req.member_id);
                if self.leader.as_deref() == Some(req.member_id.as_str()) {
                    self.complete_sync(now_ms, req.assignments, out);
                }
            }
            GroupState::Stable => {
                self.remove_pending_sync(&req.member_id);
                let m = self.members.get_mut(&req.member_id).expect("validated");
                m.refresh_session(now_ms);
                out.push(Output::Sync(
                    token,
                    SyncResponse {
                        error: None,
                        protocol_type: self.protocol_type.clone(),
                        protocol_name: self.protocol_name.clone(),
                        assignment: m.assignment.clone(),
                    },
                ));
            }
            GroupState::Empty | GroupState::Dead => {
                out.push(Output::Sync(
                    token,
                    SyncResponse::error(GroupError::UnknownMemberId),
                ));
            }
        }
    }

    /// A Heartbeat. Any member of the current generation keeps its session alive; during
    /// PreparingRebalance the answer is REBALANCE_IN_PROGRESS, which tells it to rejoin.
    pub fn heartbeat(
        &mut self,
        now_ms: i64,
        member_id: &str,
        group_instance_id: Option<&str>,
        generation_id: i32,
    ) -> Result<(), GroupError> {
        if self.state == GroupState::Dead {
            return Err(GroupError::CoordinatorNotAvailable);
        }
        self.validate_member(member_id, group_instance_id)?;
        if generation_id != self.generation_id {
            return Err(GroupError::IllegalGeneration);
        }
        let result = match self.state {
            GroupState::Empty | GroupState::Dead => return Err(GroupError::UnknownMemberId),
            GroupState::PreparingRebalance => Err(GroupError::RebalanceInProgress),
            // A member may heartbeat between its JoinGroup response and its SyncGroup.
            GroupState::CompletingRebalance | GroupState::Stable => Ok(()),
        };
        if let Some(m) = self.members.get_mut(member_id) {
            m.refresh_session(now_ms);
        }
        self.check();
        result
    }

    /// LeaveGroup (v3+ batches members). An entry with an empty member id removes the static
    /// member by `group.instance.id` (the admin path). One rebalance follows for the batch.
    pub fn leave(
        &mut self,
        now_ms: i64,
        members: &[(String, Option<String>)],
    ) -> (Vec<Result<(), GroupError>>, Vec<Output>) {
        let mut out = Vec::new();
        if self.state == GroupState::Dead {
            let results = vec![Err(GroupError::CoordinatorNotAvailable); members.len()];
            return (results, out);
        }
        let mut removed_member = false;
        let mut removed_pending = false;
        let mut results = Vec::with_capacity(members.len());
        for (member_id, instance_id) in members {
            let result = if member_id.is_empty() {
                match instance_id
                    .as_ref()
                    .and_then(|i| self.static_members.get(i))
                    .cloned()
                {
                    Some(current) => {
                        self.remove_member(&current, &mut out);
                        removed_member = true;
                        Ok(())
                    }
                    None => Err(GroupError::UnknownMemberId),
                }
            } else if self.pending_members.remove(member_id).is_some() {
                removed_pending = true;
                Ok(())
            } else {
                self.validate_member(member_id, instance_id.as_deref())
                    .map(|()| {
                        self.remove_member(member_id, &mut out);
                        removed_member = true;
                    })
            };
            results.push(result);
        }
        // Deviation: Kafka's newer coordinator also rebalances a Stable group when only a
        // pending (never admitted) id leaves; the older one did not, and neither do we.
        if removed_member {
            self.maybe_prepare_rebalance_or_complete_join(now_ms, &mut out);
        } else if removed_pending {
            self.maybe_complete_join(now_ms, &mut out);
        }
        self.check();
        (results, out)
    }

    /// OffsetCommit's membership rules. Generation -1 with no member id is a simple (or admin)
    /// commit, allowed only while the group has no members; anything else must come from a
    /// current member of the current generation, and not between JoinGroup and the assignment.
    pub fn validate_offset_commit(
        &self,
        member_id: &str,
        group_instance_id: Option<&str>,
        generation_id: i32,
    ) -> Result<(), GroupError> {
        self.validate_commit(member_id, group_instance_id, generation_id, false)
    }

    /// TxnOffsetCommit's rules: as OffsetCommit, except that old versions carry no member or
    /// generation (so those always pass) and the group's state is not enforced.
    pub fn validate_txn_offset_commit(
        &self,
        member_id: &str,
        group_instance_id: Option<&str>,
        generation_id: i32,
    ) -> Result<(), GroupError> {
        self.validate_commit(member_id, group_instance_id, generation_id, true)
    }

    fn validate_commit(
        &self,
        member_id: &str,
        group_instance_id: Option<&str>,
        generation_id: i32,
        transactional: bool,
    ) -> Result<(), GroupError> {
        if self.state == GroupState::Dead {
            return Err(GroupError::CoordinatorNotAvailable);
        }
        if generation_id < 0 && self.state == GroupState::Empty {
            return Ok(());
        }
        if generation_id >= 0 || !member_id.is_empty() || group_instance_id.is_some() {
            self.validate_member(member_id, group_instance_id)?;
            if generation_id != self.generation_id {
                return Err(GroupError::IllegalGeneration);
            }
        } else if !transactional && self.state != GroupState::Empty {
            return Err(GroupError::UnknownMemberId);
        }
        if !transactional && self.state == GroupState::CompletingRebalance {
            return Err(GroupError::RebalanceInProgress);
        }
        Ok(())
    }

    /// [`Group::validate_offset_commit`], then, as Kafka, an accepted commit from a member in
    /// Stable or PreparingRebalance also counts as a heartbeat.
    pub fn offset_commit(
        &mut self,
        now_ms: i64,
        member_id: &str,
        group_instance_id: Option<&str>,
        generation_id: i32,
    ) -> Result<(), GroupError> {
        self.validate_offset_commit(member_id, group_instance_id, generation_id)?;
        if matches!(
            self.state,
            GroupState::Stable | GroupState::PreparingRebalance
        ) {
            if let Some(m) = self.members.get_mut(member_id) {
                m.refresh_session(now_ms);
            }
        }
        self.check();
        Ok(())
    }

    /// DeleteGroups: only an Empty group may go.
    pub fn validate_delete(&self) -> Result<(), GroupError> {
        match self.state {
            GroupState::Dead => Err(GroupError::GroupIdNotFound),
            GroupState::Empty => Ok(()),
            _ => Err(GroupError::NonEmptyGroup),
        }
    }

    /// The group is deleted or its coordinator unloads it: every parked request is answered
    /// COORDINATOR_NOT_AVAILABLE (the client rediscovers the coordinator and rejoins), and
    /// the group forgets its members. Idempotent.
    pub fn mark_dead(&mut self) -> Vec<Output> {
        let mut out = Vec::new();
        if self.state == GroupState::Dead {
            return out;
        }
        for m in self.members_in_order() {
            if let Some(token) = m.join_token {
                out.push(Output::Join(
                    token,
                    super::JoinResponse::error(
                        m.member_id.clone(),
                        GroupError::CoordinatorNotAvailable,
                    ),
                ));
            }
            if let Some(token) = m.sync_token {
                out.push(Output::Sync(
                    token,
                    SyncResponse::error(GroupError::CoordinatorNotAvailable),
                ));
            }
        }
        let now_ms = self.state_timestamp_ms;
        self.transition(GroupState::Dead, now_ms);
        self.members.clear();
        self.static_members.clear();
        self.pending_members.clear();
        self.pending_sync.clear();
        self.sync_deadline_ms = None;
        self.join_timer = None;
        self.leader = None;
        self.check();
        out
    }
}
