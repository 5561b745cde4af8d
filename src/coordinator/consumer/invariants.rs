//! The invariants listed in the module doc, as code. A failure is a bug in this module.

use std::collections::BTreeMap;

use uuid::Uuid;

use super::types::{MemberState, LEAVE_GROUP_STATIC_MEMBER_EPOCH};
use super::ConsumerGroup;

impl ConsumerGroup {
    /// Panics with a description if an invariant is broken.
    pub fn validate(&self) {
        if let Err(e) = self.check_invariants() {
            panic!(
                "consumer group {} broke an invariant: {e}\n{self:#?}",
                self.group_id
            );
        }
    }

    pub(super) fn check_invariants(&self) -> Result<(), String> {
        let ensure = |ok: bool, what: &str| if ok { Ok(()) } else { Err(what.to_string()) };

        ensure(self.group_epoch >= 0, "negative group epoch")?;
        ensure(
            (0..=self.group_epoch).contains(&self.assignment_epoch),
            "assignment epoch outside 0..=group epoch",
        )?;
        ensure(
            !self.dead || self.members.is_empty(),
            "a Dead group has members",
        )?;

        let mut held: BTreeMap<(Uuid, i32), String> = BTreeMap::new();
        for (id, m) in &self.members {
            ensure(*id == m.member_id, "member keyed by another id")?;
            ensure(!id.is_empty(), "empty member id")?;
            if m.member_epoch == LEAVE_GROUP_STATIC_MEMBER_EPOCH {
                ensure(m.instance_id.is_some(), "a dynamic member at epoch -2")?;
                ensure(
                    m.state == MemberState::Stable,
                    "a member away while reconciling",
                )?;
            } else {
                ensure(
                    (1..=self.assignment_epoch).contains(&m.member_epoch),
                    "member epoch outside 1..=assignment epoch",
                )?;
                ensure(
                    m.previous_member_epoch <= m.member_epoch,
                    "previous member epoch ahead of the member epoch",
                )?;
            }
            let revoking = m.state == MemberState::UnrevokedPartitions;
            ensure(
                revoking != m.pending_revocation.is_empty(),
                "pending revocations iff UnrevokedPartitions",
            )?;
            ensure(
                revoking == m.revocation_deadline_ms.is_some(),
                "revocation timer iff UnrevokedPartitions",
            )?;
            ensure(
                m.assigned
                    .values()
                    .chain(m.pending_revocation.values())
                    .all(|ps| !ps.is_empty()),
                "an empty topic entry in an assignment",
            )?;
            for tp in m.held() {
                ensure(
                    held.insert(tp, id.clone()).is_none(),
                    "a partition held twice (by two members, or assigned and revoking)",
                )?;
            }
            if let Some(instance) = &m.instance_id {
                ensure(
                    self.static_members.get(instance) == Some(id),
                    "static member not mapped to its member id",
                )?;
            }
        }
        ensure(
            held == self.holders,
            "holders differ from the members' partitions",
        )?;
        ensure(
            self.static_members.len()
                == self
                    .members
                    .values()
                    .filter(|m| m.instance_id.is_some())
                    .count(),
            "static map has extra entries",
        )?;

        let mut targeted = BTreeMap::new();
        for (id, a) in &self.target {
            ensure(self.members.contains_key(id), "a target for a non-member")?;
            for (t, ps) in a {
                ensure(!ps.is_empty(), "an empty topic entry in a target")?;
                for p in ps {
                    ensure(
                        targeted.insert((*t, *p), id).is_none(),
                        "a partition in two targets",
                    )?;
                }
            }
        }
        let subscribed = self.subscribed_topics();
        ensure(
            self.topics.keys().all(|t| subscribed.contains(t)),
            "metadata for a topic nobody subscribes to",
        )?;
        Ok(())
    }
}
