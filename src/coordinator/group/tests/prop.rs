//! Random interleavings of five clients (three dynamic, two static) against one group. The
//! harness checks every step: each token answered at most once and only if outstanding, the
//! group's parked tokens equal the outstanding ones, generations never go back, invariants
//! hold, and every persisted snapshot restores. At the end, the group either dies (every
//! request answered) or is left alone until all sessions run out (every request answered and
//! the group Empty: nothing can get stuck).

use proptest::prelude::*;

use super::*;

const CLIENTS: usize = 5;
const STATIC_FROM: usize = 3;

#[derive(Debug, Clone)]
enum Op {
    /// What a well-behaved client would do next.
    Step {
        client: usize,
    },
    Join {
        client: usize,
        restart: bool,
        protocols: u8,
    },
    Sync {
        client: usize,
    },
    Heartbeat {
        client: usize,
    },
    Commit {
        client: usize,
    },
    Leave {
        client: usize,
        by_instance: bool,
    },
    Advance {
        ms: i64,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let c = 0..CLIENTS;
    prop_oneof![
        8 => c.clone().prop_map(|client| Op::Step { client }),
        3 => (c.clone(), any::<bool>(), 0..4u8)
            .prop_map(|(client, restart, protocols)| Op::Join { client, restart, protocols }),
        3 => c.clone().prop_map(|client| Op::Sync { client }),
        2 => c.clone().prop_map(|client| Op::Heartbeat { client }),
        1 => c.clone().prop_map(|client| Op::Commit { client }),
        1 => (c, any::<bool>()).prop_map(|(client, by_instance)| Op::Leave { client, by_instance }),
        3 => prop_oneof![0..3_000i64, 3_000..40_000i64].prop_map(|ms| Op::Advance { ms }),
    ]
}

#[derive(Debug, Clone)]
struct Client {
    member_id: String,
    generation: i32,
    /// The member list, if the last JoinGroup response made this client the leader.
    leading: Option<Vec<String>>,
    tokens: Vec<Token>,
    sync_tokens: Vec<Token>,
    synced_generation: i32,
}

impl Default for Client {
    fn default() -> Self {
        Client {
            member_id: String::new(),
            generation: -1,
            leading: None,
            tokens: Vec::new(),
            sync_tokens: Vec::new(),
            synced_generation: -1,
        }
    }
}

struct World {
    h: Harness,
    clients: Vec<Client>,
}

impl World {
    fn instance(i: usize) -> Option<String> {
        (i >= STATIC_FROM).then(|| format!("inst-{i}"))
    }

    /// Clients learn from their answered JoinGroups, as real ones do.
    fn learn(&mut self) {
        for c in &mut self.clients {
            let (answered, waiting): (Vec<Token>, Vec<Token>) =
                c.tokens.iter().partition(|t| self.h.joins.contains_key(t));
            c.tokens = waiting;
            for t in answered {
                let r = &self.h.joins[&t];
                match r.error {
                    None => {
                        c.member_id = r.member_id.clone();
                        c.generation = r.generation_id;
                        c.leading = (r.leader == r.member_id && !r.members.is_empty())
                            .then(|| r.members.iter().map(|m| m.member_id.clone()).collect());
                    }
                    Some(GroupError::MemberIdRequired) => c.member_id = r.member_id.clone(),
                    Some(GroupError::UnknownMemberId | GroupError::FencedInstanceId) => {
                        c.member_id.clear();
                        c.generation = -1;
                    }
                    Some(_) => {}
                }
            }
            let (answered, waiting): (Vec<Token>, Vec<Token>) = c
                .sync_tokens
                .iter()
                .partition(|t| self.h.syncs.contains_key(t));
            c.sync_tokens = waiting;
            for t in answered {
                match self.h.syncs[&t].error {
                    None => c.synced_generation = c.generation,
                    Some(GroupError::UnknownMemberId | GroupError::FencedInstanceId) => {
                        c.member_id.clear();
                        c.generation = -1;
                    }
                    Some(_) => {}
                }
            }
        }
    }

    fn step(&mut self, client: usize) {
        let c = &self.clients[client];
        let op = if !c.tokens.is_empty() || !c.sync_tokens.is_empty() {
            Op::Heartbeat { client }
        } else if c.member_id.is_empty() || c.generation < 0 {
            Op::Join {
                client,
                restart: false,
                protocols: 0,
            }
        } else if c.synced_generation != c.generation {
            Op::Sync { client }
        } else {
            let inst = Self::instance(client);
            let r = self
                .h
                .g
                .heartbeat(self.h.now, &c.member_id, inst.as_deref(), c.generation);
            self.h.record(Vec::new());
            match r {
                Err(GroupError::UnknownMemberId | GroupError::FencedInstanceId) => {
                    self.clients[client].member_id.clear();
                    self.clients[client].generation = -1;
                    return;
                }
                Err(_) => Op::Join {
                    client,
                    restart: false,
                    protocols: 0,
                },
                Ok(()) => return,
            }
        };
        self.apply(&op);
    }

    fn apply(&mut self, op: &Op) {
        match *op {
            Op::Step { client } => self.step(client),
            Op::Join {
                client,
                restart,
                protocols,
            } => {
                if restart {
                    self.clients[client] = Client::default();
                }
                let member_id = self.clients[client].member_id.clone();
                let name = format!("c{client}");
                let mut req = match Self::instance(client) {
                    Some(inst) => static_req(&inst, &member_id),
                    None => join_req(&name, &member_id),
                };
                let p = |n: &str, m: &str| (n.to_string(), Bytes::from(m.to_string()));
                req.protocols = match protocols {
                    0 => vec![p("range", "a")],
                    1 => vec![p("range", "b")],
                    2 => vec![p("roundrobin", "a"), p("range", "a")],
                    _ => vec![p("roundrobin", "a")],
                };
                let t = self.h.join(req);
                self.clients[client].tokens.push(t);
            }
            Op::Sync { client } => {
                let c = &self.clients[client];
                let mut req = sync_req(&c.member_id, c.generation);
                req.protocol_name = None;
                req.group_instance_id = Self::instance(client);
                if let Some(members) = &c.leading {
                    req.assignments = members
                        .iter()
                        .map(|m| (m.clone(), Bytes::from(format!("to-{m}"))))
                        .collect();
                }
                let t = self.h.sync(req);
                self.clients[client].sync_tokens.push(t);
            }
            Op::Heartbeat { client } => {
                let c = &self.clients[client];
                let inst = Self::instance(client);
                let _ = self
                    .h
                    .g
                    .heartbeat(self.h.now, &c.member_id, inst.as_deref(), c.generation);
                self.h.record(Vec::new());
            }
            Op::Commit { client } => {
                let c = &self.clients[client];
                let inst = Self::instance(client);
                let _ =
                    self.h
                        .g
                        .offset_commit(self.h.now, &c.member_id, inst.as_deref(), c.generation);
                self.h.record(Vec::new());
            }
            Op::Leave {
                client,
                by_instance,
            } => {
                let inst = Self::instance(client);
                let id = if by_instance && inst.is_some() {
                    String::new()
                } else {
                    self.clients[client].member_id.clone()
                };
                self.h.leave(&[(&id, inst.as_deref())]);
            }
            Op::Advance { ms } => self.h.advance(ms),
        }
        self.learn();
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn random_interleavings_answer_every_request(
        ops in proptest::collection::vec(op(), 1..150),
        die in any::<bool>(),
    ) {
        let mut w = World { h: Harness::new(), clients: vec![Client::default(); CLIENTS] };
        for op in &ops {
            w.apply(op);
        }
        if die {
            let out = w.h.g.mark_dead();
            w.h.record(out);
        } else {
            for _ in 0..10_000 {
                let Some(at) = w.h.g.next_deadline_ms() else { break };
                let step = at - w.h.now;
                w.h.advance(step);
            }
            prop_assert_eq!(w.h.g.next_deadline_ms(), None);
            prop_assert_eq!(w.h.g.state(), GroupState::Empty);
        }
        prop_assert!(w.h.outstanding().is_empty());
    }
}
