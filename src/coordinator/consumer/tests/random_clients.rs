//! Random interleavings of five clients (three dynamic, two static) with the passage of time
//! and topic changes. Clients behave like the Java consumer: they adopt every assignment they
//! receive at once, sometimes do not report what they own, sometimes lose a response (and
//! then send a full request), get fenced and rejoin with their member id, leave, and restart
//! (static ones leave with -2 and come back under a new member id).
//!
//! Checked after every step: the group's invariants and snapshot round trip (the harness);
//! a live client owns only what the coordinator counts as held by its member, so no partition
//! is owned by two live clients (a client whose member timed out is presumed dead, as in
//! Kafka, until its next request is refused); epochs never go back. At the end every client keeps heartbeating
//! without losses: the group must become Stable with every client owning exactly its target,
//! balanced within one partition (per group for `uniform` with shared subscriptions, per
//! topic for `range`).

use proptest::prelude::*;

use super::*;

const CLIENTS: usize = 5;
const STATIC_FROM: usize = 3;
const TOPICS: [&str; 3] = ["a", "b", "c"];

#[derive(Debug, Clone)]
enum Op {
    Beat {
        client: usize,
        report: bool,
        lose: bool,
    },
    Join {
        client: usize,
        topics: u8,
    },
    Leave {
        client: usize,
    },
    TempLeave {
        client: usize,
    },
    Stale {
        client: usize,
    },
    Advance {
        ms: i64,
    },
    Grow {
        topic: usize,
        by: i32,
        notify: bool,
    },
    Delete {
        topic: usize,
    },
    Create {
        topic: usize,
        partitions: i32,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let c = 0..CLIENTS;
    let t = 0..TOPICS.len();
    prop_oneof![
        14 => (c.clone(), prop::bool::weighted(0.8), prop::bool::weighted(0.1))
            .prop_map(|(client, report, lose)| Op::Beat { client, report, lose }),
        3 => (c.clone(), 1..8u8).prop_map(|(client, topics)| Op::Join { client, topics }),
        1 => c.clone().prop_map(|client| Op::Leave { client }),
        1 => c.clone().prop_map(|client| Op::TempLeave { client }),
        1 => c.prop_map(|client| Op::Stale { client }),
        2 => prop_oneof![0..3_000i64, 3_000..50_000i64].prop_map(|ms| Op::Advance { ms }),
        1 => (t.clone(), 1..4i32, any::<bool>())
            .prop_map(|(topic, by, notify)| Op::Grow { topic, by, notify }),
        1 => t.clone().prop_map(|topic| Op::Delete { topic }),
        1 => (t, 1..7i32).prop_map(|(topic, partitions)| Op::Create { topic, partitions }),
    ]
}

#[derive(Debug, Clone, Default)]
struct Client {
    /// The member id while the client believes it is in the group.
    member: Option<String>,
    epoch: i32,
    owned: Assignment,
    topics: Vec<String>,
    /// The last response was lost: the next heartbeat carries every field.
    full_next: bool,
    /// Static clients: the process restarts under a new member id after a temporary leave.
    incarnation: u32,
}

struct Model {
    h: Harness,
    clients: Vec<Client>,
    next_topic: u128,
    epochs: (i32, i32),
}

impl Model {
    fn new(assignor: Assignor) -> Self {
        let config = ConsumerGroupConfig {
            default_assignor: assignor,
            ..ConsumerGroupConfig::default()
        };
        let mut m = Model {
            h: Harness::with_config(&[], config),
            clients: vec![
                Client {
                    topics: vec!["a".to_string()],
                    ..Client::default()
                };
                CLIENTS
            ],
            next_topic: 100,
            epochs: (0, 0),
        };
        m.create(0, 4);
        m.create(1, 2);
        m
    }

    fn create(&mut self, topic: usize, partitions: i32) {
        self.next_topic += 1;
        let name = TOPICS[topic].to_string();
        let info = TopicInfo {
            name: name.clone(),
            id: Uuid::from_u128(self.next_topic),
            partitions,
        };
        self.h.topics.insert(name, info);
    }

    fn instance(i: usize) -> Option<String> {
        (i >= STATIC_FROM).then(|| format!("i{i}"))
    }

    fn member_id(&self, i: usize) -> String {
        format!("c{i}-{}", self.clients[i].incarnation)
    }

    fn drop_client(&mut self, i: usize) {
        let c = &mut self.clients[i];
        c.member = None;
        c.owned.clear();
        c.epoch = 0;
        c.full_next = false;
    }

    fn join(&mut self, i: usize) {
        let member_id = self.member_id(i);
        let topics: Vec<&str> = self.clients[i].topics.iter().map(String::as_str).collect();
        let hb = Heartbeat {
            instance_id: Self::instance(i),
            ..join_hb(&member_id, &topics)
        };
        self.drop_client(i);
        let r = self.h.ok(hb);
        let c = &mut self.clients[i];
        assert_eq!(r.member_id, member_id);
        c.member = Some(member_id);
        c.epoch = r.member_epoch;
        c.owned = from_wire(
            &r.assignment
                .expect("a join is answered with the assignment"),
        );
    }

    fn beat(&mut self, i: usize, report: bool, lose: bool) {
        let Some(member_id) = self.clients[i].member.clone() else {
            return self.join(i);
        };
        let c = &self.clients[i];
        let mut hb = beat(&member_id, c.epoch, report.then(|| to_wire(&c.owned)));
        if c.full_next {
            hb.rebalance_timeout_ms = REBALANCE_MS;
            hb.subscribed_topic_names = Some(c.topics.clone());
            hb.owned = Some(to_wire(&c.owned));
            hb.instance_id = Self::instance(i);
        }
        match self.h.send(hb) {
            Ok(r) => {
                let c = &mut self.clients[i];
                assert_eq!(r.member_id, member_id);
                assert!(r.member_epoch >= c.epoch, "epoch went back: {r:?} {c:?}");
                if lose {
                    c.full_next = true;
                } else {
                    c.epoch = r.member_epoch;
                    if let Some(a) = r.assignment {
                        c.owned = from_wire(&a);
                    }
                    c.full_next = false;
                }
            }
            Err(ConsumerError::FencedMemberEpoch | ConsumerError::UnknownMemberId) => {
                self.drop_client(i)
            }
            Err(e) => panic!("client {i}: unexpected {e}"),
        }
    }

    fn leave(&mut self, i: usize, epoch: i32) {
        let Some(member_id) = self.clients[i].member.clone() else {
            return;
        };
        let hb = Heartbeat {
            member_epoch: epoch,
            instance_id: Self::instance(i),
            ..beat(&member_id, 0, None)
        };
        match self.h.send(hb) {
            Ok(r) => assert_eq!(r.member_epoch, epoch),
            Err(e) => {
                assert!(self.zombie(i), "client {i}: leave refused: {e}");
                assert_eq!(e, ConsumerError::UnknownMemberId);
            }
        }
        self.drop_client(i);
        if epoch == LEAVE_GROUP_STATIC_MEMBER_EPOCH {
            self.clients[i].incarnation += 1;
        }
    }

    fn apply(&mut self, op: Op) {
        match op {
            Op::Beat {
                client,
                report,
                lose,
            } => self.beat(client, report, lose),
            Op::Join { client, topics } => {
                self.clients[client].topics = (0..TOPICS.len())
                    .filter(|t| topics & (1 << t) != 0)
                    .map(|t| TOPICS[t].to_string())
                    .collect();
                self.join(client);
            }
            Op::Leave { client } => self.leave(client, LEAVE_GROUP_MEMBER_EPOCH),
            Op::TempLeave { client } if client >= STATIC_FROM => {
                self.leave(client, LEAVE_GROUP_STATIC_MEMBER_EPOCH)
            }
            Op::TempLeave { client } => self.leave(client, LEAVE_GROUP_MEMBER_EPOCH),
            Op::Stale { client } => {
                if let Some(member_id) = self.clients[client].member.clone() {
                    let hb = beat(&member_id, self.clients[client].epoch + 1_000, None);
                    let expected = if self.zombie(client) {
                        ConsumerError::UnknownMemberId
                    } else {
                        ConsumerError::FencedMemberEpoch
                    };
                    assert_eq!(self.h.send(hb), Err(expected));
                    self.drop_client(client);
                }
            }
            Op::Advance { ms } => {
                // A client whose member expires does not know it until its next request.
                self.h.advance(ms);
            }
            Op::Grow { topic, by, notify } => {
                if let Some(t) = self.h.topics.get_mut(TOPICS[topic]) {
                    t.partitions += by;
                    if notify {
                        self.h.metadata_changed();
                    }
                }
            }
            Op::Delete { topic } => {
                self.h.topics.remove(TOPICS[topic]);
                self.h.metadata_changed();
            }
            Op::Create { topic, partitions } => {
                if !self.h.topics.contains_key(TOPICS[topic]) {
                    self.create(topic, partitions);
                    self.h.metadata_changed();
                }
            }
        }
        self.check();
    }

    /// The client believes it is in the group, but the coordinator removed its member (the
    /// session or the revocation timed out). Such a client is presumed dead: Kafka hands its
    /// partitions to others at once and fences the client on its next request.
    fn zombie(&self, i: usize) -> bool {
        self.clients[i]
            .member
            .as_ref()
            .is_some_and(|id| !self.h.g.members.contains_key(id))
    }

    fn check(&mut self) {
        let g = &self.h.g;
        assert!(g.group_epoch() >= self.epochs.0 && g.assignment_epoch() >= self.epochs.1);
        self.epochs = (g.group_epoch(), g.assignment_epoch());
        let mut owned = BTreeSet::new();
        for (i, c) in self.clients.iter().enumerate() {
            let Some(id) = &c.member else {
                assert!(c.owned.is_empty());
                continue;
            };
            let Some(m) = g.members.get(id) else {
                continue; // a zombie
            };
            assert!(
                c.epoch <= m.member_epoch,
                "client {i} is ahead of its member"
            );
            let held: BTreeSet<(Uuid, i32)> = m.held().collect();
            for (t, ps) in &c.owned {
                for p in ps {
                    assert!(held.contains(&(*t, *p)), "client {i} owns {t}-{p} unheld");
                    assert!(owned.insert((*t, *p)), "{t}-{p} owned by two clients");
                }
            }
        }
    }

    /// Every client heartbeats promptly and reliably until the group is Stable.
    fn converge(&mut self) {
        for i in 0..CLIENTS {
            if self.clients[i].member.is_none() {
                self.join(i);
                self.check();
            }
        }
        // At least one round: a topic change the shell did not announce is seen on the next
        // heartbeat, and clients heartbeat periodically anyway.
        for _ in 0..12 {
            for i in 0..CLIENTS {
                self.beat(i, true, false);
                self.check();
            }
            if self.converged() {
                return;
            }
        }
        assert!(
            self.converged(),
            "no convergence: {:#?}",
            self.h.g.describe()
        );
    }

    fn converged(&self) -> bool {
        let g = &self.h.g;
        g.state() == ConsumerGroupState::Stable
            && self.clients.iter().all(|c| {
                let m = c.member.as_ref().and_then(|id| g.members.get(id));
                m.is_some_and(|m| c.owned == m.assigned && c.epoch == m.member_epoch)
            })
    }

    fn check_final_assignment(&self, assignor: Assignor) {
        let g = &self.h.g;
        assert_eq!(g.member_count(), CLIENTS);
        let empty = Assignment::new();
        let mut subscribers: BTreeMap<Uuid, Vec<&str>> = BTreeMap::new();
        for m in g.members.values() {
            assert_eq!(&m.assigned, g.target.get(&m.member_id).unwrap_or(&empty));
            for name in &m.subscribed_topic_names {
                if let Some(t) = self.h.topics.get(name) {
                    subscribers.entry(t.id).or_default().push(&m.member_id);
                }
            }
        }
        for (id, subs) in &subscribers {
            let partitions = self
                .h
                .topics
                .values()
                .find(|t| t.id == *id)
                .unwrap()
                .partitions;
            let counts: Vec<usize> = subs
                .iter()
                .map(|s| g.members[*s].assigned.get(id).map_or(0, BTreeSet::len))
                .collect();
            assert_eq!(
                counts.iter().sum::<usize>(),
                partitions as usize,
                "topic {id}"
            );
            if assignor == Assignor::Range {
                let (lo, hi) = (counts.iter().min(), counts.iter().max());
                assert!(
                    hi.unwrap() - lo.unwrap() <= 1,
                    "range per topic: {counts:?}"
                );
            }
        }
        let homogeneous = g
            .members
            .values()
            .map(|m| &m.subscribed_topic_names)
            .collect::<BTreeSet<_>>()
            .len()
            == 1;
        if assignor == Assignor::Uniform && homogeneous {
            let counts: Vec<usize> = g
                .members
                .values()
                .map(|m| partition_count(&m.assigned))
                .collect();
            let (lo, hi) = (counts.iter().min().unwrap(), counts.iter().max().unwrap());
            assert!(hi - lo <= 1, "uniform: {counts:?}");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn clients_never_share_a_partition_and_always_converge(
        range in any::<bool>(),
        ops in prop::collection::vec(op(), 1..80),
    ) {
        let assignor = if range { Assignor::Range } else { Assignor::Uniform };
        let mut model = Model::new(assignor);
        for op in ops {
            model.apply(op);
        }
        model.converge();
        model.check_final_assignment(assignor);
    }
}
