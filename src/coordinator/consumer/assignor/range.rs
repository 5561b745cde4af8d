//! The `range` assignor: per topic, contiguous ranges of partitions to its subscribers in a
//! fixed order (Kafka's server-side `RangeAssignor`, the classic range assignor's shape).
//!
//! Subscribers are ordered static members first, by instance id, then the others by member
//! id, so that static members keep their ranges across restarts. A topic's first
//! `partitions % subscribers` subscribers get one partition more. When every member
//! subscribes to the same topics and the topics have equal partition counts, each member gets
//! the same partition numbers of every topic (co-partitioning). Not sticky by design.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};

use uuid::Uuid;

use super::MemberSpec;
use crate::coordinator::consumer::types::Assignment;

pub(super) fn assign(
    members: &[MemberSpec<'_>],
    partitions: &BTreeMap<Uuid, i32>,
) -> BTreeMap<String, Assignment> {
    let mut order: Vec<&MemberSpec<'_>> = members.iter().collect();
    order.sort_by(|a, b| match (a.instance_id, b.instance_id) {
        (Some(x), Some(y)) => x.cmp(y).then(a.member_id.cmp(b.member_id)),
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (None, None) => a.member_id.cmp(b.member_id),
    });

    let mut out: BTreeMap<String, Assignment> = members
        .iter()
        .map(|m| (m.member_id.to_string(), Assignment::new()))
        .collect();
    let topics: BTreeSet<Uuid> = members
        .iter()
        .flat_map(|m| m.topics.iter().copied())
        .collect();
    for topic in topics {
        let subscribers: Vec<&str> = order
            .iter()
            .filter(|m| m.topics.contains(&topic))
            .map(|m| m.member_id)
            .collect();
        let n = i32::try_from(subscribers.len()).unwrap_or(i32::MAX);
        let count = partitions.get(&topic).copied().unwrap_or(0).max(0);
        let (quota, extra) = (count / n, count % n);
        let mut start = 0;
        for (k, member_id) in subscribers.into_iter().enumerate() {
            let len = quota + i32::from((k as i32) < extra);
            if len > 0 {
                out.get_mut(member_id)
                    .expect("every member has an entry")
                    .insert(topic, (start..start + len).collect());
            }
            start += len;
        }
        debug_assert_eq!(start, count);
    }
    out
}
