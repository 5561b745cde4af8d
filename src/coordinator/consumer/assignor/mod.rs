//! The server-side assignors: from the members' subscriptions, the subscribed topics' partition
//! counts and the previous target assignment, a new target assignment.
//!
//! Guarantees of every assignor (checked by tests): each partition of a subscribed topic goes
//! to exactly one member subscribed to that topic when there is one; no member gets a
//! partition of a topic it does not subscribe to or a partition that does not exist; every
//! member appears in the result (perhaps with nothing); the result depends only on the input.

mod range;
mod uniform;

use std::collections::{BTreeMap, BTreeSet};

use uuid::Uuid;

use super::types::{Assignment, Assignor};

/// One member as an assignor sees it.
#[derive(Debug, Clone)]
pub(super) struct MemberSpec<'a> {
    pub member_id: &'a str,
    pub instance_id: Option<&'a str>,
    /// Subscribed topics that exist.
    pub topics: BTreeSet<Uuid>,
    /// The member's previous target assignment (the uniform assignor keeps what it can).
    pub current: &'a Assignment,
}

/// The new target assignment of every member. `members` must be in member id order and
/// `partitions` must hold the partition count of every topic in the members' `topics`.
pub(super) fn assign(
    assignor: Assignor,
    members: &[MemberSpec<'_>],
    partitions: &BTreeMap<Uuid, i32>,
) -> BTreeMap<String, Assignment> {
    debug_assert!(members.windows(2).all(|w| w[0].member_id < w[1].member_id));
    debug_assert!(members
        .iter()
        .all(|m| m.topics.iter().all(|t| partitions.contains_key(t))));
    let homogeneous = members.windows(2).all(|w| w[0].topics == w[1].topics);
    let result = match assignor {
        Assignor::Uniform if homogeneous => uniform::homogeneous(members, partitions),
        Assignor::Uniform => uniform::heterogeneous(members, partitions),
        Assignor::Range => range::assign(members, partitions),
    };
    debug_assert_eq!(result.len(), members.len());
    result
}

/// Whether partition `p` of `topic` exists now (a previous target may name deleted ones).
fn exists(partitions: &BTreeMap<Uuid, i32>, topic: Uuid, p: i32) -> bool {
    partitions.get(&topic).is_some_and(|n| (0..*n).contains(&p))
}

#[cfg(test)]
mod tests;
