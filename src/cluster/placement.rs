//! Replica placement for new partitions: which brokers hold each partition's replicas, the
//! first of them being the preferred leader. Pure: the controller's proposer calls it with the
//! live brokers and puts the result into the command, so applying stays deterministic.
//!
//! Kafka's scheme: brokers are ordered so that racks alternate (rack-aware when brokers name
//! a rack), partition `p`'s replicas are the `rf` brokers starting at `start + p` in that
//! order, so leaders spread evenly and, with at least `rf` racks, a partition's replicas sit in
//! different racks.

use std::collections::BTreeMap;

/// A broker that may receive replicas.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub id: i32,
    pub rack: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("replication factor {requested} is larger than the {available} live brokers")]
pub struct NotEnoughBrokers {
    pub requested: usize,
    pub available: usize,
}

/// Replica lists for partitions `first..first + count`.
pub fn place(
    brokers: &[Candidate],
    first: i32,
    count: i32,
    replication_factor: usize,
    start: usize,
) -> Result<Vec<Vec<i32>>, NotEnoughBrokers> {
    if replication_factor == 0 || replication_factor > brokers.len() {
        return Err(NotEnoughBrokers {
            requested: replication_factor,
            available: brokers.len(),
        });
    }
    let order = rack_alternating(brokers);
    let n = order.len();
    Ok((first..first + count)
        .map(|p| {
            let at = start + p.max(0) as usize;
            (0..replication_factor)
                .map(|j| order[(at + j) % n])
                .collect()
        })
        .collect())
}

/// Broker ids ordered so that consecutive entries are in different racks where possible:
/// the first broker of each rack, then the second of each, and so on (racks and brokers in
/// id order; brokers without a rack form one group).
fn rack_alternating(brokers: &[Candidate]) -> Vec<i32> {
    let mut by_rack: BTreeMap<Option<&str>, Vec<i32>> = BTreeMap::new();
    for b in brokers {
        by_rack.entry(b.rack.as_deref()).or_default().push(b.id);
    }
    for ids in by_rack.values_mut() {
        ids.sort_unstable();
    }
    let deepest = by_rack.values().map(Vec::len).max().unwrap_or(0);
    let mut order = Vec::with_capacity(brokers.len());
    for i in 0..deepest {
        for ids in by_rack.values() {
            if let Some(&id) = ids.get(i) {
                order.push(id);
            }
        }
    }
    order
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    fn brokers(spec: &[(i32, Option<&str>)]) -> Vec<Candidate> {
        spec.iter()
            .map(|&(id, rack)| Candidate {
                id,
                rack: rack.map(str::to_string),
            })
            .collect()
    }

    #[test]
    fn spreads_leaders_and_keeps_replicas_distinct() {
        let b = brokers(&[(1, None), (2, None), (3, None)]);
        let placed = place(&b, 0, 6, 3, 0).unwrap();
        for replicas in &placed {
            assert_eq!(replicas.iter().collect::<BTreeSet<_>>().len(), 3);
        }
        let leaders: Vec<i32> = placed.iter().map(|r| r[0]).collect();
        assert_eq!(leaders, vec![1, 2, 3, 1, 2, 3]);
        // New partitions continue the rotation.
        assert_eq!(place(&b, 6, 1, 2, 0).unwrap(), vec![vec![1, 2]]);
    }

    #[test]
    fn rack_aware_when_racks_are_named() {
        let b = brokers(&[
            (1, Some("a")),
            (2, Some("a")),
            (3, Some("b")),
            (4, Some("b")),
            (5, Some("c")),
            (6, Some("c")),
        ]);
        let rack = |id: i32| b.iter().find(|c| c.id == id).unwrap().rack.clone();
        for start in 0..6 {
            for replicas in place(&b, 0, 12, 3, start).unwrap() {
                let racks: BTreeSet<_> = replicas.iter().map(|&id| rack(id)).collect();
                assert_eq!(racks.len(), 3, "{replicas:?} spans every rack");
            }
        }
    }

    #[test]
    fn refuses_more_replicas_than_brokers() {
        let b = brokers(&[(1, None), (2, None)]);
        assert_eq!(
            place(&b, 0, 1, 3, 0),
            Err(NotEnoughBrokers {
                requested: 3,
                available: 2
            })
        );
        assert!(place(&b, 0, 1, 0, 0).is_err());
        assert!(place(&[], 0, 1, 1, 0).is_err());
    }
}
