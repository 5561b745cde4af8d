//! JoinGroup: new members (KIP-394 ids, KIP-345 static replacement), rejoining members, and
//! the cases where a known member gets the current generation back without a rebalance.

use super::member::{dedup_protocols, Member};
use super::{Group, GroupError, GroupState, JoinMember, JoinRequest, JoinResponse, Output, Token};

impl Group {
    /// Handles a JoinGroup. `new_member_id` is called at most once, when the joiner needs an
    /// id; the shell builds it as Kafka does (`client_id` or, for a static member, the
    /// `group.instance.id`, then `-` and a UUID).
    pub fn join(
        &mut self,
        now_ms: i64,
        req: JoinRequest,
        token: Token,
        new_member_id: impl FnOnce() -> String,
    ) -> Vec<Output> {
        let mut out = Vec::new();
        self.handle_join(now_ms, req, token, new_member_id, &mut out);
        self.check();
        out
    }

    fn handle_join(
        &mut self,
        now_ms: i64,
        mut req: JoinRequest,
        token: Token,
        new_member_id: impl FnOnce() -> String,
        out: &mut Vec<Output>,
    ) {
        let reply = |out: &mut Vec<Output>, member_id: &str, e: GroupError| {
            out.push(Output::Join(token, JoinResponse::error(member_id, e)));
        };
        if req.session_timeout_ms < self.config.min_session_timeout_ms
            || req.session_timeout_ms > self.config.max_session_timeout_ms
        {
            return reply(out, &req.member_id, GroupError::InvalidSessionTimeout);
        }
        if self.state == GroupState::Dead {
            return reply(out, &req.member_id, GroupError::CoordinatorNotAvailable);
        }
        if !self.accept_joining_member(&req.member_id) {
            // As Kafka: a member over the limit is dropped, so the last to rejoin is kicked out.
            self.remove_member(&req.member_id, out);
            if self.state == GroupState::PreparingRebalance {
                self.maybe_complete_join(now_ms, out);
            }
            return reply(out, "", GroupError::GroupMaxSizeReached);
        }
        req.protocols = dedup_protocols(std::mem::take(&mut req.protocols));
        if !self.supports_protocols(&req.protocol_type, &req.protocols) {
            return reply(out, &req.member_id, GroupError::InconsistentGroupProtocol);
        }
        if req.member_id.is_empty() {
            self.join_new_member(now_ms, req, token, new_member_id(), out);
        } else {
            self.join_known_member(now_ms, req, token, out);
        }
    }

    /// `group.max.size`: while rebalancing, count the members already parked (a shrunken
    /// limit then kicks out the last rejoiners); otherwise count all members.
    fn accept_joining_member(&self, member_id: &str) -> bool {
        let max = self.config.max_size;
        match self.state {
            GroupState::Empty | GroupState::Dead => true,
            GroupState::PreparingRebalance => {
                self.members
                    .get(member_id)
                    .is_some_and(|m| m.join_token.is_some())
                    || self
                        .members
                        .values()
                        .filter(|m| m.join_token.is_some())
                        .count()
                        < max
            }
            GroupState::CompletingRebalance | GroupState::Stable => {
                self.members.contains_key(member_id) || self.members.len() < max
            }
        }
    }

    fn join_new_member(
        &mut self,
        now_ms: i64,
        req: JoinRequest,
        token: Token,
        new_id: String,
        out: &mut Vec<Output>,
    ) {
        assert!(
            !new_id.is_empty()
                && !self.members.contains_key(&new_id)
                && !self.pending_members.contains_key(&new_id),
            "group {}: generated member id {new_id:?} is empty or in use",
            self.group_id
        );
        if let Some(instance_id) = req.group_instance_id.clone() {
            if let Some(old_id) = self.static_members.get(&instance_id).cloned() {
                return self.rejoin_static_member(
                    now_ms,
                    req,
                    token,
                    &instance_id,
                    &old_id,
                    new_id,
                    out,
                );
            }
        } else if req.require_known_member_id {
            let deadline = now_ms + i64::from(req.session_timeout_ms);
            self.pending_members.insert(new_id.clone(), deadline);
            out.push(Output::Join(
                token,
                JoinResponse::error(new_id, GroupError::MemberIdRequired),
            ));
            return;
        }
        self.add_member_and_rebalance(now_ms, req, new_id, token, out);
    }

    fn join_known_member(
        &mut self,
        now_ms: i64,
        req: JoinRequest,
        token: Token,
        out: &mut Vec<Output>,
    ) {
        let member_id = req.member_id.clone();
        if self.pending_members.contains_key(&member_id) {
            if req.group_instance_id.is_some() {
                // Kafka hands pending ids only to dynamic members and treats this as an
                // internal error (IllegalStateException).
                out.push(Output::Join(
                    token,
                    JoinResponse::error(member_id, GroupError::UnknownServerError),
                ));
                return;
            }
            return self.add_member_and_rebalance(now_ms, req, member_id, token, out);
        }
        if let Err(e) = self.validate_member(&member_id, req.group_instance_id.as_deref()) {
            out.push(Output::Join(token, JoinResponse::error(member_id, e)));
            return;
        }
        let (is_leader, same_metadata) = {
            let m = &self.members[&member_id];
            (
                self.leader.as_deref() == Some(member_id.as_str()),
                m.protocols == req.protocols,
            )
        };
        match self.state {
            GroupState::PreparingRebalance => {
                self.update_from_request(&member_id, req, token, out);
                self.maybe_complete_join(now_ms, out);
            }
            // Same metadata: most likely the JoinGroup response was lost; resend it.
            GroupState::CompletingRebalance if same_metadata => {
                self.reply_current_generation(now_ms, &member_id, token, is_leader, out);
            }
            // A follower with unchanged metadata gets the generation back and syncs; the leader
            // rejoining asks for a rebalance (it saw e.g. new partitions).
            GroupState::Stable if same_metadata && !is_leader => {
                self.reply_current_generation(now_ms, &member_id, token, false, out);
            }
            GroupState::CompletingRebalance | GroupState::Stable => {
                self.update_from_request(&member_id, req, token, out);
                self.maybe_prepare_rebalance_or_complete_join(now_ms, out);
            }
            GroupState::Empty | GroupState::Dead => {
                out.push(Output::Join(
                    token,
                    JoinResponse::error(member_id, GroupError::UnknownMemberId),
                ));
            }
        }
    }

    fn update_from_request(
        &mut self,
        member_id: &str,
        req: JoinRequest,
        token: Token,
        out: &mut Vec<Output>,
    ) {
        self.update_member(
            member_id,
            req.protocols,
            req.rebalance_timeout_ms,
            req.session_timeout_ms,
            token,
            out,
        );
    }

    /// The current generation's JoinGroup response, without a rebalance. The member list goes
    /// only to the leader when `with_members`.
    fn reply_current_generation(
        &mut self,
        now_ms: i64,
        member_id: &str,
        token: Token,
        with_members: bool,
        out: &mut Vec<Output>,
    ) {
        // Deviation: Kafka does not refresh the session here; a JoinGroup is proof of life.
        if let Some(m) = self.members.get_mut(member_id) {
            m.refresh_session(now_ms);
        }
        let members = if with_members {
            self.join_members()
        } else {
            Vec::new()
        };
        let response =
            self.generation_response(member_id, self.leader.clone().unwrap_or_default(), members);
        out.push(Output::Join(token, response));
    }

    pub(super) fn generation_response(
        &self,
        member_id: &str,
        leader: String,
        members: Vec<JoinMember>,
    ) -> JoinResponse {
        JoinResponse {
            error: None,
            generation_id: self.generation_id,
            protocol_type: self.protocol_type.clone(),
            protocol_name: self.protocol_name.clone(),
            leader,
            skip_assignment: false,
            member_id: member_id.to_string(),
            members,
        }
    }

    /// Every member with its metadata for the chosen protocol, in join order.
    pub(super) fn join_members(&self) -> Vec<JoinMember> {
        let protocol = self.protocol_name.as_deref().unwrap_or_default();
        self.members_in_order()
            .into_iter()
            .map(|m| JoinMember {
                member_id: m.member_id.clone(),
                group_instance_id: m.group_instance_id.clone(),
                metadata: m.metadata(protocol).cloned().unwrap_or_default(),
            })
            .collect()
    }

    fn add_member_and_rebalance(
        &mut self,
        now_ms: i64,
        req: JoinRequest,
        member_id: String,
        token: Token,
        out: &mut Vec<Output>,
    ) {
        if self.state == GroupState::PreparingRebalance && self.previous_state == GroupState::Empty
        {
            self.new_member_added = true;
        }
        if self.members.is_empty() {
            self.protocol_type = Some(req.protocol_type.clone());
        }
        tracing::debug!(group = %self.group_id, member = %member_id, reason = ?req.reason, "member joins");
        self.add_member(Member {
            member_id,
            seq: 0,
            group_instance_id: req.group_instance_id,
            client_id: req.client_id,
            client_host: req.client_host,
            rebalance_timeout_ms: req.rebalance_timeout_ms,
            session_timeout_ms: req.session_timeout_ms,
            protocols: req.protocols,
            assignment: bytes::Bytes::new(),
            join_token: Some(token),
            sync_token: None,
            is_new: true,
            session_deadline_ms: Some(now_ms + super::NEW_MEMBER_JOIN_TIMEOUT_MS),
        });
        self.maybe_prepare_rebalance_or_complete_join(now_ms, out);
    }

    /// KIP-345: a known `group.instance.id` joins with no member id (a restarted static
    /// member). It takes over the old member and its assignment; the old id is fenced. In a
    /// Stable group whose protocol would not change there is no rebalance: the group is
    /// persisted with the new id and the member gets the current generation back.
    #[allow(clippy::too_many_arguments)]
    fn rejoin_static_member(
        &mut self,
        now_ms: i64,
        req: JoinRequest,
        token: Token,
        instance_id: &str,
        old_id: &str,
        new_id: String,
        out: &mut Vec<Output>,
    ) {
        let leader_before = self.leader.clone().unwrap_or_default();
        self.replace_static_member(instance_id, old_id, &new_id, out);
        self.update_from_request(&new_id, req, token, out);
        if let Some(m) = self.members.get_mut(&new_id) {
            m.refresh_session(now_ms);
        }
        match self.state {
            GroupState::Stable => {
                if self.select_protocol() == self.protocol_name {
                    self.persist(out);
                    let m = self.members.get_mut(&new_id).expect("replaced member");
                    let token = m.join_token.take().expect("just parked");
                    // JoinGroup before v9 cannot skip the assignment, so name the leader as it
                    // was: a restarted static leader then acts as a follower and keeps its
                    // stored assignment instead of computing a new one the Stable group ignores.
                    let response = self.generation_response(&new_id, leader_before, Vec::new());
                    out.push(Output::Join(token, response));
                } else {
                    self.maybe_prepare_rebalance_or_complete_join(now_ms, out);
                }
            }
            // The leader may already be assigning to the old id: start over.
            GroupState::CompletingRebalance => self.prepare_rebalance(now_ms, out),
            GroupState::PreparingRebalance => self.maybe_complete_join(now_ms, out),
            GroupState::Empty | GroupState::Dead => {
                unreachable!("a known static member in a group without members")
            }
        }
    }
}
