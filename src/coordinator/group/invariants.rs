//! The invariants listed in the module doc, as code. A failure is a bug in this module.

use super::{Group, GroupState, JoinTimer};

impl Group {
    /// Panics with a description if an invariant is broken.
    pub fn validate(&self) {
        if let Err(e) = self.check_invariants() {
            panic!("group {} broke an invariant: {e}\n{self:#?}", self.group_id);
        }
    }

    pub(super) fn check_invariants(&self) -> Result<(), String> {
        use GroupState::*;
        let ensure = |ok: bool, what: &str| if ok { Ok(()) } else { Err(what.to_string()) };

        match &self.leader {
            None => ensure(self.members.is_empty(), "members without a leader")?,
            Some(l) => ensure(self.members.contains_key(l), "leader is not a member")?,
        }
        for (id, m) in &self.members {
            ensure(*id == m.member_id, "member keyed by another id")?;
            ensure(!id.is_empty(), "empty member id")?;
            if let Some(instance) = &m.group_instance_id {
                ensure(
                    self.static_members.get(instance) == Some(id),
                    "static member not mapped to its member id",
                )?;
            }
            ensure(m.seq < self.next_seq, "member joined in the future")?;
            ensure(
                !self.pending_members.contains_key(id),
                "member is also pending",
            )?;
            ensure(
                m.session_deadline_ms.is_some() || m.join_token.is_some() || m.sync_token.is_some(),
                "member with neither a session nor a parked request",
            )?;
            ensure(
                m.join_token.is_none() || self.state == PreparingRebalance,
                "parked JoinGroup outside PreparingRebalance",
            )?;
            ensure(
                m.sync_token.is_none() || self.state == CompletingRebalance,
                "parked SyncGroup outside CompletingRebalance",
            )?;
            if let Some(p) = &self.protocol_name {
                if matches!(self.state, CompletingRebalance | Stable) {
                    ensure(m.supports(p), "member does not support the chosen protocol")?;
                }
            }
        }
        let static_count = self
            .members
            .values()
            .filter(|m| m.group_instance_id.is_some())
            .count();
        ensure(
            self.static_members.len() == static_count,
            "static map has extra entries",
        )?;
        ensure(
            self.pending_sync
                .iter()
                .all(|id| self.members.contains_key(id)),
            "pending sync for a non-member",
        )?;
        ensure(
            self.pending_sync.is_empty() || matches!(self.state, CompletingRebalance | Stable),
            "pending sync outside a generation",
        )?;
        ensure(
            self.sync_deadline_ms.is_some() != self.pending_sync.is_empty(),
            "sync timer armed iff someone owes a SyncGroup",
        )?;
        ensure(
            self.join_timer.is_some() == (self.state == PreparingRebalance),
            "join timer armed iff PreparingRebalance",
        )?;
        if let Some(JoinTimer::Initial {
            remaining_ms,
            delay_ms,
            ..
        }) = self.join_timer
        {
            ensure(remaining_ms >= 0 && delay_ms >= 0, "negative initial delay")?;
            ensure(
                self.previous_state == Empty,
                "initial delay after a generation",
            )?;
        }
        ensure(self.generation_id >= 0, "negative generation")?;
        match self.state {
            Empty | Dead => {
                ensure(self.members.is_empty(), "members in an Empty or Dead group")?;
                ensure(
                    self.state == Empty || self.pending_members.is_empty(),
                    "Dead group has pending ids",
                )?;
            }
            CompletingRebalance | Stable => {
                ensure(!self.members.is_empty(), "a generation without members")?;
                ensure(
                    self.protocol_name.is_some(),
                    "a generation without a protocol",
                )?;
            }
            PreparingRebalance => {}
        }
        if !self.members.is_empty() {
            ensure(
                self.protocol_type.is_some(),
                "members without a protocol type",
            )?;
        }
        Ok(())
    }
}
