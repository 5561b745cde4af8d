//! The `uniform` assignor: balance first, then stickiness (Kafka's `UniformAssignor`).
//!
//! Homogeneous subscriptions (every member subscribes to the same topics) get an exactly
//! balanced assignment: every member holds `total / members` or one more partitions, counted
//! across all topics together. Members keep as much of their previous target as their quota
//! allows, and the members that already hold the most are the ones granted the extra
//! partition, so that a rebalance moves as few partitions as it can.
//!
//! Heterogeneous subscriptions keep what is still subscribed, hand the rest to the least
//! loaded subscriber, then move partitions from a member to a less loaded subscriber of the
//! same topic while that narrows a gap of two or more. The result is balanced as far as
//! single moves can make it (perfectly when subscribers of a topic share subscriptions).

use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, BTreeSet};

use uuid::Uuid;

use super::{exists, MemberSpec};
use crate::coordinator::consumer::types::Assignment;

/// Each balancing round strictly reduces the imbalance; this only bounds the work on
/// pathological subscription patterns (Kafka bounds it the same way).
const MAX_BALANCE_ROUNDS: usize = 100;

pub(super) fn homogeneous(
    members: &[MemberSpec<'_>],
    partitions: &BTreeMap<Uuid, i32>,
) -> BTreeMap<String, Assignment> {
    let mut out = empty_result(members);
    let Some(first) = members.first() else {
        return out;
    };
    let topics = &first.topics;
    let total: usize = topics.iter().map(|t| count(partitions, t) as usize).sum();
    let min_quota = total / members.len();
    let extra = total % members.len();

    // What each member keeps of its previous target, each partition claimed once.
    let mut claimed = BTreeSet::new();
    let mut kept: Vec<Vec<(Uuid, i32)>> = Vec::with_capacity(members.len());
    for m in members {
        let mut mine = Vec::new();
        for (t, ps) in m.current.iter().filter(|(t, _)| topics.contains(t)) {
            for p in ps {
                if exists(partitions, *t, *p) && claimed.insert((*t, *p)) {
                    mine.push((*t, *p));
                }
            }
        }
        kept.push(mine);
    }

    // The extra partitions go to the members that hold the most already.
    let mut by_held: Vec<usize> = (0..members.len()).collect();
    by_held.sort_by(|a, b| kept[*b].len().cmp(&kept[*a].len()).then(a.cmp(b)));
    let mut quota = vec![min_quota; members.len()];
    for i in by_held.into_iter().take(extra) {
        quota[i] += 1;
    }
    for (mine, q) in kept.iter_mut().zip(&quota) {
        for tp in mine.iter().skip(*q) {
            claimed.remove(tp);
        }
        mine.truncate(*q);
    }

    let mut unassigned = topics
        .iter()
        .flat_map(|t| (0..count(partitions, t)).map(move |p| (*t, p)))
        .filter(|tp| !claimed.contains(tp));
    for (mine, q) in kept.iter_mut().zip(&quota) {
        while mine.len() < *q {
            let tp = unassigned
                .next()
                .expect("quotas add up to the partition count");
            mine.push(tp);
        }
    }
    debug_assert!(
        unassigned.next().is_none(),
        "a partition was left unassigned"
    );

    for (m, mine) in members.iter().zip(kept) {
        let a = out.get_mut(m.member_id).expect("every member has an entry");
        for (t, p) in mine {
            a.entry(t).or_default().insert(p);
        }
    }
    out
}

pub(super) fn heterogeneous(
    members: &[MemberSpec<'_>],
    partitions: &BTreeMap<Uuid, i32>,
) -> BTreeMap<String, Assignment> {
    let mut owner: BTreeMap<(Uuid, i32), usize> = BTreeMap::new();
    let mut load = vec![0usize; members.len()];
    for (i, m) in members.iter().enumerate() {
        for (t, ps) in m.current.iter().filter(|(t, _)| m.topics.contains(t)) {
            for p in ps {
                if exists(partitions, *t, *p) && !owner.contains_key(&(*t, *p)) {
                    owner.insert((*t, *p), i);
                    load[i] += 1;
                }
            }
        }
    }

    let mut subscribers: BTreeMap<Uuid, Vec<usize>> = BTreeMap::new();
    for (i, m) in members.iter().enumerate() {
        for t in &m.topics {
            subscribers.entry(*t).or_default().push(i);
        }
    }
    // Topics with the most partitions per subscriber first, as Kafka orders them: they are
    // the hardest to spread evenly.
    let mut order: Vec<Uuid> = subscribers.keys().copied().collect();
    order.sort_by(|a, b| {
        let (pa, sa) = (count(partitions, a) as u64, subscribers[a].len() as u64);
        let (pb, sb) = (count(partitions, b) as u64, subscribers[b].len() as u64);
        (pb * sa).cmp(&(pa * sb)).then(sa.cmp(&sb)).then(a.cmp(b))
    });
    let least_loaded = |subs: &[usize], load: &[usize]| -> usize {
        *subs
            .iter()
            .min_by_key(|i| (load[**i], **i))
            .expect("a topic in `subscribers` has one")
    };

    for t in &order {
        for p in 0..count(partitions, t) {
            if let Entry::Vacant(free) = owner.entry((*t, p)) {
                let i = least_loaded(&subscribers[t], &load);
                free.insert(i);
                load[i] += 1;
            }
        }
    }

    for _ in 0..MAX_BALANCE_ROUNDS {
        let mut moved = false;
        for t in &order {
            let subs = &subscribers[t];
            if subs.len() < 2 {
                continue;
            }
            for p in 0..count(partitions, t) {
                let from = owner[&(*t, p)];
                let to = least_loaded(subs, &load);
                if load[from] >= load[to] + 2 {
                    owner.insert((*t, p), to);
                    load[from] -= 1;
                    load[to] += 1;
                    moved = true;
                }
            }
        }
        if !moved {
            break;
        }
    }

    let mut out = empty_result(members);
    for ((t, p), i) in owner {
        out.get_mut(members[i].member_id)
            .expect("every member has an entry")
            .entry(t)
            .or_default()
            .insert(p);
    }
    out
}

fn empty_result(members: &[MemberSpec<'_>]) -> BTreeMap<String, Assignment> {
    members
        .iter()
        .map(|m| (m.member_id.to_string(), Assignment::new()))
        .collect()
}

fn count(partitions: &BTreeMap<Uuid, i32>, topic: &Uuid) -> i32 {
    partitions.get(topic).copied().unwrap_or(0).max(0)
}
