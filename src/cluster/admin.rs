//! The client side of `strata cluster ...`: membership changes and status, sent to any node's
//! raft address (the node passes membership changes on to the leader).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::rpc::{method, NodeRequest, NodeStatus, Peers, Refused};
use super::server::MEMBERSHIP_TIMEOUT;
use super::ClusterError;

const STATUS_TIMEOUT: Duration = Duration::from_secs(3);

async fn change(bootstrap: &str, method: &str, req: NodeRequest) -> Result<String, ClusterError> {
    // The leader may take MEMBERSHIP_TIMEOUT and the node in between a hop more.
    let reply: Result<String, Refused> = Peers::default()
        .call(bootstrap, method, &req, MEMBERSHIP_TIMEOUT + STATUS_TIMEOUT)
        .await?;
    reply.map_err(|r| ClusterError::Raft(r.to_string()))
}

/// Makes node `node_id`, reachable at `raft_addr`, a voter: added as a learner, caught up,
/// then promoted.
pub async fn add_voter(
    bootstrap: &str,
    node_id: u64,
    raft_addr: &str,
) -> Result<String, ClusterError> {
    let req = NodeRequest {
        node_id,
        addr: raft_addr.to_string(),
        forwarded: false,
    };
    change(bootstrap, method::ADD_VOTER, req).await
}

/// Removes node `node_id` (voter or learner) from the quorum.
pub async fn remove(bootstrap: &str, node_id: u64) -> Result<String, ClusterError> {
    let req = NodeRequest {
        node_id,
        addr: String::new(),
        forwarded: false,
    };
    change(bootstrap, method::REMOVE, req).await
}

/// The quorum as seen by the node at `bootstrap`, plus each member's own view (absent for a
/// member that did not answer).
#[derive(Debug, Serialize, Deserialize)]
pub struct ClusterStatus {
    pub from: NodeStatus,
    pub nodes: BTreeMap<u64, Option<NodeStatus>>,
}

pub async fn status(bootstrap: &str) -> Result<ClusterStatus, ClusterError> {
    let peers = Peers::default();
    let from: NodeStatus = peers
        .call(bootstrap, method::STATUS, &(), STATUS_TIMEOUT)
        .await?;
    let members: Vec<(u64, String)> = from
        .voters
        .iter()
        .chain(from.learners.iter())
        .map(|(id, addr)| (*id, addr.clone()))
        .collect();
    let peers = &peers;
    let me = &from;
    let answers = futures::future::join_all(members.into_iter().map(|(id, addr)| async move {
        // The node asked answers for itself (its own address may be unknown to it: a
        // one-voter quorum bootstrapped before it had a raft address).
        if id == me.node_id {
            return (id, Some(me.clone()));
        }
        let s: Option<NodeStatus> = peers
            .call(&addr, method::STATUS, &(), STATUS_TIMEOUT)
            .await
            .ok();
        (id, s)
    }))
    .await;
    Ok(ClusterStatus {
        from,
        nodes: answers.into_iter().collect(),
    })
}

/// A human-readable table of [`ClusterStatus`].
pub fn render(status: &ClusterStatus) -> String {
    let from = &status.from;
    // The leader's replication figures, from whichever answer came from the leader.
    let leader = from.leader;
    let leader_view = status
        .nodes
        .values()
        .flatten()
        .find(|s| Some(s.node_id) == leader && s.replication.is_some());
    let term = status
        .nodes
        .values()
        .flatten()
        .map(|s| s.term)
        .max()
        .unwrap_or(from.term)
        .max(from.term);
    let mut out = String::new();
    let show = |v: Option<u64>| v.map_or("-".to_string(), |v| v.to_string());
    let _ = writeln!(out, "leader: {}", show(leader));
    let _ = writeln!(out, "term: {term}");
    let ids =
        |m: &BTreeMap<u64, String>| m.keys().map(u64::to_string).collect::<Vec<_>>().join(",");
    let _ = writeln!(out, "voters: {}", ids(&from.voters));
    let _ = writeln!(out, "learners: {}", ids(&from.learners));
    let _ = writeln!(
        out,
        "{:<6} {:<24} {:<8} {:<10} {:>6} {:>12} {:>12} {:>12}",
        "node", "raft address", "role", "state", "term", "last log", "applied", "replicated"
    );
    for (id, addr) in from.voters.iter().chain(from.learners.iter()) {
        let role = if from.voters.contains_key(id) {
            "voter"
        } else {
            "learner"
        };
        let replicated = leader_view
            .and_then(|l| l.replication.as_ref())
            .and_then(|r| r.get(id).copied().flatten());
        let (state, term, last_log, applied) = match status.nodes.get(id).and_then(|s| s.as_ref()) {
            Some(s) => (
                s.state.clone(),
                s.term.to_string(),
                show(s.last_log_index),
                show(s.last_applied),
            ),
            None => ("down".into(), "-".into(), "-".into(), "-".into()),
        };
        let _ = writeln!(
            out,
            "{id:<6} {addr:<24} {role:<8} {state:<10} {term:>6} {last_log:>12} {applied:>12} {:>12}",
            show(replicated)
        );
    }
    out
}
