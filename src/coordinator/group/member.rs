//! Members and the bookkeeping that keeps `members`, `static_members`, `leader`,
//! `pending_members` and `pending_sync` consistent with each other (Kafka's `ClassicGroup`
//! add/remove/replace/update). Nothing here changes the group state or arms timers.

use bytes::Bytes;

use super::{Group, GroupError, JoinResponse, Output, SyncResponse, Token};

#[derive(Debug, Clone)]
pub(super) struct Member {
    pub member_id: String,
    /// Join order; the lowest joined first.
    pub seq: u64,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub rebalance_timeout_ms: i32,
    pub session_timeout_ms: i32,
    /// Names unique, in the member's order of preference.
    pub protocols: Vec<(String, Bytes)>,
    pub assignment: Bytes,
    /// A parked JoinGroup.
    pub join_token: Option<Token>,
    /// A parked SyncGroup.
    pub sync_token: Option<Token>,
    /// Joined but has not seen a JoinGroup response yet: may expire even while parked.
    pub is_new: bool,
    /// When the member is removed for silence; `None` while a parked request vouches for it.
    pub session_deadline_ms: Option<i64>,
}

impl Member {
    pub fn metadata(&self, protocol: &str) -> Option<&Bytes> {
        self.protocols
            .iter()
            .find(|(name, _)| name == protocol)
            .map(|(_, m)| m)
    }

    pub fn supports(&self, protocol: &str) -> bool {
        self.metadata(protocol).is_some()
    }

    /// Kafka's `hasSatisfiedHeartbeat`: a parked request counts as a heartbeat, except for a
    /// new member, whose JoinGroup the client may have abandoned.
    pub fn heartbeat_satisfied(&self) -> bool {
        !self.is_new && (self.join_token.is_some() || self.sync_token.is_some())
    }

    pub fn refresh_session(&mut self, now_ms: i64) {
        self.session_deadline_ms = Some(now_ms + i64::from(self.session_timeout_ms));
    }
}

/// The request's protocols with repeated names dropped (Kafka keeps them in a keyed set).
pub(super) fn dedup_protocols(protocols: Vec<(String, Bytes)>) -> Vec<(String, Bytes)> {
    let mut out: Vec<(String, Bytes)> = Vec::with_capacity(protocols.len());
    for (name, meta) in protocols {
        if !out.iter().any(|(n, _)| *n == name) {
            out.push((name, meta));
        }
    }
    out
}

impl Group {
    /// Members in join order.
    pub(super) fn members_in_order(&self) -> Vec<&Member> {
        let mut v: Vec<&Member> = self.members.values().collect();
        v.sort_by_key(|m| m.seq);
        v
    }

    /// Kafka's `validateMember`: a static id must map to this member id, and the member must exist.
    pub(super) fn validate_member(
        &self,
        member_id: &str,
        group_instance_id: Option<&str>,
    ) -> Result<(), GroupError> {
        if let Some(instance_id) = group_instance_id {
            match self.static_members.get(instance_id) {
                None => return Err(GroupError::UnknownMemberId),
                Some(current) if current != member_id => return Err(GroupError::FencedInstanceId),
                Some(_) => {}
            }
        }
        if self.members.contains_key(member_id) {
            Ok(())
        } else {
            Err(GroupError::UnknownMemberId)
        }
    }

    /// Whether a joiner with these protocols can be in the group: any type and protocols when
    /// Empty, else the group's type and a protocol every current member supports.
    pub(super) fn supports_protocols(
        &self,
        protocol_type: &str,
        protocols: &[(String, Bytes)],
    ) -> bool {
        if self.state == super::GroupState::Empty {
            return !protocol_type.is_empty() && !protocols.is_empty();
        }
        self.protocol_type.as_deref() == Some(protocol_type)
            && protocols
                .iter()
                .any(|(name, _)| self.members.values().all(|m| m.supports(name)))
    }

    /// The protocol every member supports that most members prefer; ties go to the choice of
    /// the earliest joiner. `None` for no members or no common protocol.
    pub(super) fn select_protocol(&self) -> Option<String> {
        let members = self.members_in_order();
        let first = members.first()?;
        let candidates: Vec<&str> = first
            .protocols
            .iter()
            .map(|(n, _)| n.as_str())
            .filter(|n| members.iter().all(|m| m.supports(n)))
            .collect();
        let mut votes: Vec<(&str, usize)> = Vec::new();
        for m in &members {
            let vote = m
                .protocols
                .iter()
                .map(|(n, _)| n.as_str())
                .find(|n| candidates.contains(n))?;
            match votes.iter_mut().find(|(n, _)| *n == vote) {
                Some((_, count)) => *count += 1,
                None => votes.push((vote, 1)),
            }
        }
        let best = votes.iter().map(|(_, c)| *c).max()?;
        votes
            .into_iter()
            .find(|(_, c)| *c == best)
            .map(|(n, _)| n.to_string())
    }

    /// The largest rebalance timeout among members (Kafka's group rebalance timeout), never negative.
    pub(super) fn rebalance_timeout_ms(&self) -> i32 {
        self.members
            .values()
            .map(|m| m.rebalance_timeout_ms.max(0))
            .max()
            .unwrap_or(0)
    }

    pub(super) fn all_members_joined(&self) -> bool {
        self.pending_members.is_empty() && self.members.values().all(|m| m.join_token.is_some())
    }

    pub(super) fn add_member(&mut self, mut member: Member) {
        if let Some(instance_id) = &member.group_instance_id {
            let prev = self
                .static_members
                .insert(instance_id.clone(), member.member_id.clone());
            assert!(prev.is_none(), "static member {instance_id} added twice");
        }
        assert!(
            !self.members.contains_key(&member.member_id),
            "member {} added twice",
            member.member_id
        );
        if self.leader.is_none() {
            self.leader = Some(member.member_id.clone());
        }
        member.seq = self.next_seq;
        self.next_seq += 1;
        self.pending_members.remove(&member.member_id);
        self.members.insert(member.member_id.clone(), member);
    }

    /// Drops a member, answering anything it has parked with UNKNOWN_MEMBER_ID (a client still
    /// waiting starts over), and re-elects the leader. Does not start or complete a rebalance.
    pub(super) fn remove_member(&mut self, member_id: &str, out: &mut Vec<Output>) {
        if let Some(m) = self.members.remove(member_id) {
            if let Some(token) = m.join_token {
                out.push(Output::Join(
                    token,
                    JoinResponse::error("", GroupError::UnknownMemberId),
                ));
            }
            if let Some(token) = m.sync_token {
                out.push(Output::Sync(
                    token,
                    SyncResponse::error(GroupError::UnknownMemberId),
                ));
            }
            if let Some(instance_id) = &m.group_instance_id {
                self.static_members.remove(instance_id);
            }
        }
        if self.leader.as_deref() == Some(member_id) {
            self.leader = self.members_in_order().first().map(|m| m.member_id.clone());
        }
        self.pending_members.remove(member_id);
        self.remove_pending_sync(member_id);
    }

    pub(super) fn remove_pending_sync(&mut self, member_id: &str) {
        self.pending_sync.remove(member_id);
        if self.pending_sync.is_empty() {
            self.sync_deadline_ms = None;
        }
    }

    /// KIP-345: the static member `instance_id` now answers to `new_id`. Whatever the old id
    /// had parked is answered FENCED_INSTANCE_ID; everything else, assignment included, moves.
    pub(super) fn replace_static_member(
        &mut self,
        instance_id: &str,
        old_id: &str,
        new_id: &str,
        out: &mut Vec<Output>,
    ) {
        let mut m = self
            .members
            .remove(old_id)
            .expect("static member maps to a member");
        if let Some(token) = m.join_token.take() {
            out.push(Output::Join(
                token,
                JoinResponse::error(old_id, GroupError::FencedInstanceId),
            ));
        }
        if let Some(token) = m.sync_token.take() {
            out.push(Output::Sync(
                token,
                SyncResponse::error(GroupError::FencedInstanceId),
            ));
        }
        m.member_id = new_id.to_string();
        self.members.insert(new_id.to_string(), m);
        if self.leader.as_deref() == Some(old_id) {
            self.leader = Some(new_id.to_string());
        }
        self.static_members
            .insert(instance_id.to_string(), new_id.to_string());
        // Deviation: Kafka leaves the old id in the pending-sync set, so a static member that
        // restarts before its first SyncGroup triggers a rebalance at sync expiry; the new id
        // owes the SyncGroup instead.
        if self.pending_sync.remove(old_id) {
            self.pending_sync.insert(new_id.to_string());
        }
    }

    /// New protocols and timeouts, and park `token` as the member's JoinGroup. A JoinGroup it
    /// already had parked is answered REBALANCE_IN_PROGRESS so that no request is left hanging
    /// (Deviation: Kafka overwrites the callback and never answers the first request).
    pub(super) fn update_member(
        &mut self,
        member_id: &str,
        protocols: Vec<(String, Bytes)>,
        rebalance_timeout_ms: i32,
        session_timeout_ms: i32,
        token: Token,
        out: &mut Vec<Output>,
    ) {
        let m = self
            .members
            .get_mut(member_id)
            .expect("updated member exists");
        m.protocols = protocols;
        m.rebalance_timeout_ms = rebalance_timeout_ms;
        m.session_timeout_ms = session_timeout_ms;
        if let Some(old) = m.join_token.replace(token) {
            out.push(Output::Join(
                old,
                JoinResponse::error(member_id, GroupError::RebalanceInProgress),
            ));
        }
    }
}
