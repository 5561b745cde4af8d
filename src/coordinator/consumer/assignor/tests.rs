//! Assignor shapes, stickiness and, over random inputs, the guarantees in the module doc.

use proptest::prelude::*;

use super::*;
use crate::coordinator::consumer::types::partition_count;

fn t(n: u128) -> Uuid {
    Uuid::from_u128(n)
}

/// `(member id, instance id, subscribed topics, previous target)`.
type Member = (&'static str, Option<&'static str>, Vec<Uuid>, Assignment);

fn run(
    assignor: Assignor,
    members: &[Member],
    partitions: &[(Uuid, i32)],
) -> BTreeMap<String, Assignment> {
    let mut specs: Vec<MemberSpec<'_>> = members
        .iter()
        .map(|(id, instance, topics, current)| MemberSpec {
            member_id: id,
            instance_id: *instance,
            topics: topics.iter().copied().collect(),
            current,
        })
        .collect();
    specs.sort_by(|a, b| a.member_id.cmp(b.member_id));
    let out = assign(assignor, &specs, &partitions.iter().copied().collect());
    assert_eq!(
        out,
        assign(assignor, &specs, &partitions.iter().copied().collect())
    );
    out
}

fn a(parts: &[(Uuid, &[i32])]) -> Assignment {
    parts
        .iter()
        .map(|(t, ps)| (*t, ps.iter().copied().collect()))
        .collect()
}

fn sizes(out: &BTreeMap<String, Assignment>) -> Vec<usize> {
    out.values().map(partition_count).collect()
}

#[test]
fn uniform_balances_across_topics() {
    let none = Assignment::new();
    let members: Vec<Member> = ["m1", "m2", "m3"]
        .into_iter()
        .map(|id| (id, None, vec![t(1), t(2)], none.clone()))
        .collect();
    let out = run(Assignor::Uniform, &members, &[(t(1), 4), (t(2), 3)]);
    assert_eq!(sizes(&out), vec![3, 2, 2]);
}

#[test]
fn uniform_moves_only_what_balance_requires() {
    let all = a(&[(t(1), &[0, 1, 2]), (t(2), &[0, 1, 2])]);
    let members: Vec<Member> = vec![
        ("m1", None, vec![t(1), t(2)], all),
        ("m2", None, vec![t(1), t(2)], Assignment::new()),
    ];
    let out = run(Assignor::Uniform, &members, &[(t(1), 3), (t(2), 3)]);
    assert_eq!(out["m1"], a(&[(t(1), &[0, 1, 2])]));
    assert_eq!(out["m2"], a(&[(t(2), &[0, 1, 2])]));

    // The extra partition stays with the member that already has it.
    let members: Vec<Member> = vec![
        ("m1", None, vec![t(1)], a(&[(t(1), &[3, 4])])),
        ("m2", None, vec![t(1)], a(&[(t(1), &[0, 1, 2])])),
    ];
    let out = run(Assignor::Uniform, &members, &[(t(1), 5)]);
    assert_eq!(out["m1"], a(&[(t(1), &[3, 4])]));
    assert_eq!(out["m2"], a(&[(t(1), &[0, 1, 2])]));

    // A member leaves: the others keep theirs and share its partitions.
    let members: Vec<Member> = vec![
        ("m1", None, vec![t(1)], a(&[(t(1), &[0, 1])])),
        ("m3", None, vec![t(1)], a(&[(t(1), &[4, 5])])),
    ];
    let out = run(Assignor::Uniform, &members, &[(t(1), 6)]);
    assert_eq!(out["m1"], a(&[(t(1), &[0, 1, 2])]));
    assert_eq!(out["m3"], a(&[(t(1), &[3, 4, 5])]));
}

#[test]
fn uniform_heterogeneous_balances_what_subscriptions_allow() {
    let none = Assignment::new();
    let members: Vec<Member> = vec![
        ("m1", None, vec![t(1)], none.clone()),
        ("m2", None, vec![t(1), t(2)], none.clone()),
    ];
    let out = run(Assignor::Uniform, &members, &[(t(1), 4), (t(2), 2)]);
    assert_eq!(sizes(&out), vec![3, 3]);
    assert!(out["m1"].keys().all(|k| *k == t(1)));

    // Partitions of a topic the member no longer subscribes to go elsewhere.
    let members: Vec<Member> = vec![
        ("m1", None, vec![t(1)], a(&[(t(1), &[0]), (t(2), &[0, 1])])),
        ("m2", None, vec![t(2)], none),
    ];
    let out = run(Assignor::Uniform, &members, &[(t(1), 1), (t(2), 2)]);
    assert_eq!(out["m1"], a(&[(t(1), &[0])]));
    assert_eq!(out["m2"], a(&[(t(2), &[0, 1])]));
}

#[test]
fn range_gives_contiguous_ranges_static_members_first() {
    let none = Assignment::new();
    let members: Vec<Member> = vec![
        ("a", None, vec![t(1)], none.clone()),
        ("b", None, vec![t(1)], none.clone()),
        ("z", Some("i0"), vec![t(1)], none.clone()),
    ];
    let out = run(Assignor::Range, &members, &[(t(1), 7)]);
    assert_eq!(out["z"], a(&[(t(1), &[0, 1, 2])]));
    assert_eq!(out["a"], a(&[(t(1), &[3, 4])]));
    assert_eq!(out["b"], a(&[(t(1), &[5, 6])]));

    let members: Vec<Member> = vec![
        ("m1", None, vec![t(1)], none.clone()),
        ("m2", None, vec![t(1), t(2)], none.clone()),
        ("m3", None, vec![], none),
    ];
    let out = run(Assignor::Range, &members, &[(t(1), 3), (t(2), 2)]);
    assert_eq!(out["m1"], a(&[(t(1), &[0, 1])]));
    assert_eq!(out["m2"], a(&[(t(1), &[2]), (t(2), &[0, 1])]));
    assert_eq!(out["m3"], Assignment::new());
}

/// Up to 5 members over up to 3 topics; the previous target is a random disjoint one.
fn input() -> impl Strategy<Value = (Vec<u8>, Vec<i32>, Vec<Option<usize>>, bool)> {
    (
        prop::collection::vec(0..8u8, 1..6),
        prop::collection::vec(0..9i32, 3),
        prop::collection::vec(prop::option::of(0..6usize), 24),
        any::<bool>(),
    )
}

proptest! {
    #[test]
    fn assignors_keep_their_guarantees((subs, counts, owners, range) in input()) {
        let topics = [t(1), t(2), t(3)];
        let ids = ["m0", "m1", "m2", "m3", "m4"];
        let mut members: Vec<Member> = subs
            .iter()
            .enumerate()
            .map(|(i, mask)| {
                let mine = (0..3).filter(|k| mask & (1 << k) != 0).map(|k| topics[k]).collect();
                (ids[i], (i % 2 == 1).then_some("inst"), mine, Assignment::new())
            })
            .collect();
        // The previous target: partition k of topic k % 3 (some beyond today's counts).
        for (k, owner) in owners.iter().enumerate() {
            if let Some(o) = owner.filter(|o| *o < members.len()) {
                members[o].3.entry(topics[k % 3]).or_default().insert((k / 3) as i32);
            }
        }
        let partitions: Vec<(Uuid, i32)> = topics.iter().copied().zip(counts.iter().copied()).collect();
        let assignor = if range { Assignor::Range } else { Assignor::Uniform };
        let out = run(assignor, &members, &partitions);

        prop_assert_eq!(out.len(), members.len());
        let mut load: BTreeMap<&str, usize> = BTreeMap::new();
        for (topic, count) in &partitions {
            let subscribed: Vec<&Member> = members.iter().filter(|m| m.2.contains(topic)).collect();
            for p in 0..*count {
                let holders: Vec<&str> = out
                    .iter()
                    .filter(|(_, a)| a.get(topic).is_some_and(|ps| ps.contains(&p)))
                    .map(|(id, _)| id.as_str())
                    .collect();
                let expected = usize::from(!subscribed.is_empty());
                prop_assert_eq!(holders.len(), expected, "{}-{}", topic, p);
                for h in holders {
                    prop_assert!(subscribed.iter().any(|m| m.0 == h));
                    *load.entry(h).or_default() += 1;
                }
            }
        }
        for (id, a) in &out {
            for (topic, ps) in a {
                let count = partitions.iter().find(|(t, _)| t == topic).map_or(0, |(_, c)| *c);
                prop_assert!(ps.iter().all(|p| (0..count).contains(p)), "{} got {:?}", id, ps);
            }
        }

        let homogeneous = members.windows(2).all(|w| w[0].2.iter().collect::<BTreeSet<_>>() == w[1].2.iter().collect::<BTreeSet<_>>());
        let n = |id: &str| load.get(id).copied().unwrap_or(0);
        if assignor == Assignor::Uniform && homogeneous {
            let counts: Vec<usize> = members.iter().map(|m| n(m.0)).collect();
            prop_assert!(counts.iter().max().unwrap() - counts.iter().min().unwrap() <= 1, "{:?}", counts);
            // Sticky: a member keeps min(what it validly had, the smaller quota).
            let total: usize = counts.iter().sum();
            let quota = total / members.len();
            let mut claimed = BTreeSet::new();
            for m in &members {
                let valid = m.3.iter()
                    .filter(|(t, _)| m.2.contains(t))
                    .flat_map(|(t, ps)| ps.iter().map(move |p| (*t, *p)))
                    .filter(|(t, p)| exists(&partitions.iter().copied().collect(), *t, *p))
                    .filter(|tp| claimed.insert(*tp))
                    .count();
                let kept = m.3.iter()
                    .map(|(t, ps)| out[m.0].get(t).map_or(0, |o| ps.intersection(o).count()))
                    .sum::<usize>();
                prop_assert!(kept >= valid.min(quota), "{} kept {} of {}", m.0, kept, valid);
            }
        } else if assignor == Assignor::Uniform {
            // No single move between subscribers of a topic would narrow a gap.
            for (id, a) in &out {
                for topic in a.keys() {
                    for m in members.iter().filter(|m| m.2.contains(topic)) {
                        prop_assert!(n(id) <= n(m.0) + 1, "{} could give {} a partition", id, m.0);
                    }
                }
            }
        }
    }
}
