//! Moves one member towards its target assignment, one safe step per heartbeat (Kafka's
//! `CurrentAssignmentBuilder`).
//!
//! A step never hands out a partition that another member still holds, and never moves a
//! member to a newer epoch while it still owns partitions it must give up:
//! - first the member keeps `current ∩ target` and is asked to revoke `current − target`; it
//!   stays at its epoch (`UnrevokedPartitions`) until a heartbeat reports owning none of them;
//! - then it moves to the target epoch and gets the target partitions that nobody else holds;
//!   if some are still held elsewhere it waits for them (`UnreleasedPartitions`) and gets each
//!   on a later heartbeat once it is released.

use std::collections::BTreeSet;

use uuid::Uuid;

use super::member::Member;
use super::types::{Assignment, MemberState};

/// The member's next assignment state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Step {
    pub state: MemberState,
    pub member_epoch: i32,
    pub assigned: Assignment,
    pub pending_revocation: Assignment,
}

/// The next step for `member` towards `target` at `target_epoch`, or `None` when it cannot or
/// need not move. `held_elsewhere` tells whether another member holds a partition; `owned` is
/// what the member reported owning in this heartbeat (`None`: not reported, so it may still
/// own everything it was given).
pub(super) fn next_step(
    member: &Member,
    target_epoch: i32,
    target: &Assignment,
    held_elsewhere: &dyn Fn(Uuid, i32) -> bool,
    owned: Option<&Assignment>,
) -> Option<Step> {
    if member.is_reconciled_to(target_epoch) {
        return None;
    }
    let step = match member.state {
        MemberState::Stable | MemberState::UnreleasedPartitions => compute(
            member,
            member.member_epoch,
            target_epoch,
            target,
            held_elsewhere,
            owned,
        ),
        MemberState::UnrevokedPartitions => {
            if still_owns(owned, &member.pending_revocation) {
                return None;
            }
            // Revoked: the member may advance one epoch, even if the target moved on again
            // and asks for more revocations.
            let epoch = (member.member_epoch + 1).min(target_epoch);
            compute(member, epoch, target_epoch, target, held_elsewhere, owned)
        }
    };
    let unchanged = step.state == member.state
        && step.member_epoch == member.member_epoch
        && step.assigned == member.assigned
        && step.pending_revocation == member.pending_revocation;
    (!unchanged).then_some(step)
}

fn compute(
    member: &Member,
    revoking_epoch: i32,
    target_epoch: i32,
    target: &Assignment,
    held_elsewhere: &dyn Fn(Uuid, i32) -> bool,
    owned: Option<&Assignment>,
) -> Step {
    let mut assigned = Assignment::new();
    let mut revoke = Assignment::new();
    let mut gain = Assignment::new();
    let mut unreleased = false;

    let topics: BTreeSet<Uuid> = target
        .keys()
        .chain(member.assigned.keys())
        .copied()
        .collect();
    for topic in topics {
        let empty = BTreeSet::new();
        let want = target.get(&topic).unwrap_or(&empty);
        let have = member.assigned.get(&topic).unwrap_or(&empty);
        let keep: BTreeSet<i32> = have.intersection(want).copied().collect();
        let drop: BTreeSet<i32> = have.difference(want).copied().collect();
        let mut add = BTreeSet::new();
        for p in want.difference(&keep) {
            if held_elsewhere(topic, *p) {
                unreleased = true;
            } else {
                add.insert(*p);
            }
        }
        insert_nonempty(&mut assigned, topic, keep);
        insert_nonempty(&mut revoke, topic, drop);
        insert_nonempty(&mut gain, topic, add);
    }

    if !revoke.is_empty() && still_owns(owned, &revoke) {
        return Step {
            state: MemberState::UnrevokedPartitions,
            member_epoch: revoking_epoch,
            assigned,
            pending_revocation: revoke,
        };
    }
    for (topic, ps) in gain {
        assigned.entry(topic).or_default().extend(ps);
    }
    Step {
        state: if unreleased {
            MemberState::UnreleasedPartitions
        } else {
            MemberState::Stable
        },
        member_epoch: target_epoch,
        assigned,
        pending_revocation: Assignment::new(),
    }
}

/// Whether the member may still own any of `revoking`: it did not report, or reported one.
fn still_owns(owned: Option<&Assignment>, revoking: &Assignment) -> bool {
    let Some(owned) = owned else {
        return true;
    };
    revoking.iter().any(|(t, ps)| {
        owned
            .get(t)
            .is_some_and(|o| ps.iter().any(|p| o.contains(p)))
    })
}

fn insert_nonempty(a: &mut Assignment, topic: Uuid, ps: BTreeSet<i32>) {
    if !ps.is_empty() {
        a.insert(topic, ps);
    }
}
