//! Tests for the group state machine. [`Harness`] drives a [`Group`] the way the shell does
//! and checks, after every call, that each answered token was outstanding (answered at most
//! once) and that the tokens still outstanding are exactly the ones the group holds.

mod errors;
mod prop;
mod scenarios;
mod static_members;
mod timeouts;

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;

use super::*;

pub(super) const SESSION_MS: i32 = 10_000;
pub(super) const REBALANCE_MS: i32 = 30_000;

pub(super) fn join_req(client: &str, member_id: &str) -> JoinRequest {
    JoinRequest {
        member_id: member_id.to_string(),
        group_instance_id: None,
        client_id: client.to_string(),
        client_host: "/127.0.0.1".to_string(),
        session_timeout_ms: SESSION_MS,
        rebalance_timeout_ms: REBALANCE_MS,
        protocol_type: "consumer".to_string(),
        protocols: vec![("range".to_string(), Bytes::from(format!("sub-{client}")))],
        reason: None,
        require_known_member_id: true,
    }
}

pub(super) fn static_req(instance: &str, member_id: &str) -> JoinRequest {
    JoinRequest {
        group_instance_id: Some(instance.to_string()),
        ..join_req(instance, member_id)
    }
}

pub(super) fn sync_req(member_id: &str, generation_id: i32) -> SyncRequest {
    SyncRequest {
        member_id: member_id.to_string(),
        group_instance_id: None,
        generation_id,
        protocol_type: Some("consumer".to_string()),
        protocol_name: Some("range".to_string()),
        assignments: Vec::new(),
    }
}

impl Group {
    /// Every token the group has parked.
    pub(super) fn parked_tokens(&self) -> BTreeSet<Token> {
        self.members
            .values()
            .flat_map(|m| m.join_token.into_iter().chain(m.sync_token))
            .collect()
    }
}

pub(super) struct Harness {
    pub g: Group,
    pub now: i64,
    next_token: u64,
    next_id: u64,
    outstanding: BTreeSet<Token>,
    pub joins: BTreeMap<Token, JoinResponse>,
    pub syncs: BTreeMap<Token, SyncResponse>,
    pub persists: usize,
    max_generation: i32,
}

impl Harness {
    pub fn new() -> Self {
        Self::with(Group::new("g".to_string(), GroupConfig::default()))
    }

    pub fn with(g: Group) -> Self {
        let max_generation = g.generation_id();
        Harness {
            g,
            now: 0,
            next_token: 0,
            next_id: 0,
            outstanding: BTreeSet::new(),
            joins: BTreeMap::new(),
            syncs: BTreeMap::new(),
            persists: 0,
            max_generation,
        }
    }

    fn token(&mut self) -> Token {
        self.next_token += 1;
        let t = Token(self.next_token);
        self.outstanding.insert(t);
        t
    }

    pub fn record(&mut self, outputs: Vec<Output>) {
        for o in outputs {
            match o {
                Output::Join(t, r) => {
                    assert!(
                        self.outstanding.remove(&t),
                        "join {t:?} answered twice or unknown"
                    );
                    self.joins.insert(t, r);
                }
                Output::Sync(t, r) => {
                    assert!(
                        self.outstanding.remove(&t),
                        "sync {t:?} answered twice or unknown"
                    );
                    self.syncs.insert(t, r);
                }
                Output::Persist => {
                    self.persists += 1;
                    // Whatever is persisted must load back into a valid group.
                    let restored = Group::restore(self.g.snapshot(), self.g.config, self.now);
                    restored.validate();
                }
            }
        }
        assert_eq!(
            self.outstanding,
            self.g.parked_tokens(),
            "outstanding tokens differ from the tokens the group holds"
        );
        assert!(
            self.g.generation_id() >= self.max_generation,
            "generation went back"
        );
        self.max_generation = self.g.generation_id();
        self.g.validate();
    }

    pub fn outstanding(&self) -> &BTreeSet<Token> {
        &self.outstanding
    }

    pub fn join(&mut self, req: JoinRequest) -> Token {
        let t = self.token();
        self.next_id += 1;
        let prefix = req
            .group_instance_id
            .clone()
            .unwrap_or(req.client_id.clone());
        let id = format!("{prefix}-{}", self.next_id);
        let out = self.g.join(self.now, req, t, || id);
        self.record(out);
        t
    }

    pub fn sync(&mut self, req: SyncRequest) -> Token {
        let t = self.token();
        let out = self.g.sync(self.now, req, t);
        self.record(out);
        t
    }

    pub fn heartbeat(&mut self, member_id: &str, generation_id: i32) -> Result<(), GroupError> {
        let r = self.g.heartbeat(self.now, member_id, None, generation_id);
        self.record(Vec::new());
        r
    }

    pub fn leave(&mut self, members: &[(&str, Option<&str>)]) -> Vec<Result<(), GroupError>> {
        let members: Vec<(String, Option<String>)> = members
            .iter()
            .map(|(m, i)| (m.to_string(), i.map(str::to_string)))
            .collect();
        let (results, out) = self.g.leave(self.now, &members);
        self.record(out);
        results
    }

    /// Lets `ms` pass, ticking at every deadline on the way, as the shell does.
    pub fn advance(&mut self, ms: i64) {
        let end = self.now + ms;
        loop {
            let due = self.g.next_deadline_ms().filter(|at| *at <= end);
            self.now = due.unwrap_or(end).max(self.now);
            let out = self.g.tick(self.now);
            self.record(out);
            if let Some(at) = self.g.next_deadline_ms() {
                assert!(at > self.now, "tick left work due");
            }
            if due.is_none() {
                break;
            }
        }
    }

    /// Jumps from deadline to deadline until `done` holds (at most `limit_ms` ahead).
    pub fn run_until(&mut self, limit_ms: i64, done: impl Fn(&Harness) -> bool) {
        let end = self.now + limit_ms;
        while !done(self) {
            let at = self
                .g
                .next_deadline_ms()
                .expect("waiting with nothing scheduled");
            assert!(at <= end, "condition not reached within {limit_ms} ms");
            let step = at - self.now;
            self.advance(step);
        }
    }

    pub fn join_resp(&self, t: Token) -> &JoinResponse {
        self.joins
            .get(&t)
            .unwrap_or_else(|| panic!("join {t:?} unanswered"))
    }

    pub fn sync_resp(&self, t: Token) -> &SyncResponse {
        self.syncs
            .get(&t)
            .unwrap_or_else(|| panic!("sync {t:?} unanswered"))
    }

    /// KIP-394: join without an id, get one back, rejoin with it. Returns the (parked or
    /// answered) second JoinGroup and the id.
    pub fn join_new(&mut self, client: &str) -> (Token, String) {
        let t = self.join(join_req(client, ""));
        let r = self.join_resp(t).clone();
        assert_eq!(r.error, Some(GroupError::MemberIdRequired));
        let t = self.join(join_req(client, &r.member_id));
        (t, r.member_id)
    }

    /// Brings every member of `parked` (join tokens) through SyncGroup; the leader assigns
    /// `assign-<member id>` to each. Returns (member id, generation) per token.
    pub fn sync_all(&mut self, parked: &[Token]) -> Vec<(String, i32)> {
        let resps: Vec<JoinResponse> = parked.iter().map(|t| self.join_resp(*t).clone()).collect();
        let mut leader_first = resps.clone();
        leader_first.sort_by_key(|r| r.member_id != r.leader);
        for r in &leader_first {
            assert_eq!(r.error, None, "{r:?}");
            let mut req = sync_req(&r.member_id, r.generation_id);
            if r.member_id == r.leader {
                req.assignments = r
                    .members
                    .iter()
                    .map(|m| {
                        (
                            m.member_id.clone(),
                            Bytes::from(format!("assign-{}", m.member_id)),
                        )
                    })
                    .collect();
            }
            let t = self.sync(req);
            let s = self.sync_resp(t);
            assert_eq!(s.error, None);
            assert_eq!(s.assignment, Bytes::from(format!("assign-{}", r.member_id)));
        }
        resps
            .iter()
            .map(|r| (r.member_id.clone(), r.generation_id))
            .collect()
    }

    /// A Stable group of `clients`, all joined at the same moment.
    pub fn stable_group(&mut self, clients: &[&str]) -> Vec<String> {
        let parked: Vec<Token> = clients.iter().map(|c| self.join_new(c).0).collect();
        self.run_until(60_000, |h| parked.iter().all(|t| h.joins.contains_key(t)));
        let ids = self.sync_all(&parked);
        assert_eq!(self.g.state(), GroupState::Stable);
        ids.into_iter().map(|(id, _)| id).collect()
    }
}
