//! In-process quorums: several `Metadata` instances on loopback ports with their own dirs.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::*;

fn free_addr() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}

fn quorum(node_id: u64, voters: &BTreeMap<u64, String>, listen: &str) -> QuorumConfig {
    QuorumConfig {
        node_id,
        raft_listen: listen.to_string(),
        voters: voters.clone(),
        snapshot_interval_entries: 10,
        quorum_timeout: Duration::from_secs(20),
    }
}

fn topic(name: &str) -> MetadataCommand {
    MetadataCommand::CreateTopic(TopicMeta::new(
        name.into(),
        Default::default(),
        vec![vec![1]],
    ))
}

async fn wait_for(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_voters_forward_proposals_and_survive_the_leader() {
    let dirs: Vec<_> = (0..4).map(|_| tempfile::tempdir().unwrap()).collect();
    let voters: BTreeMap<u64, String> = (1..=3).map(|id| (id, free_addr())).collect();
    let started = futures::future::join_all(voters.iter().map(|(id, addr)| {
        let q = quorum(*id, &voters, addr);
        let dir = dirs[*id as usize - 1].path().to_path_buf();
        async move { Metadata::start(&dir, &q, "c").await.unwrap() }
    }))
    .await;
    let nodes: BTreeMap<u64, Metadata> = (1..=3).zip(started).collect();
    let leader = nodes[&1].status().leader.expect("a leader");
    let follower = (1..=3).find(|id| *id != leader).unwrap();

    // Proposed on a follower: applied there before propose returns, then everywhere.
    nodes[&follower].propose(topic("a")).await.unwrap();
    assert!(nodes[&follower].image().topic("a").is_some());
    let err = nodes[&follower].propose(topic("a")).await.unwrap_err();
    assert!(
        matches!(err, ClusterError::Rejected(MetadataError::TopicExists(_))),
        "{err}"
    );
    for m in nodes.values() {
        wait_for("topic a everywhere", || m.image().topic("a").is_some()).await;
    }
    // Enough entries for a snapshot and a compacted log.
    for i in 0..30 {
        nodes[&leader]
            .propose(topic(&format!("t{i}")))
            .await
            .unwrap();
    }

    // A learner joins late and gets the compacted history as a snapshot.
    let learner_addr = free_addr();
    let learner = Metadata::start(dirs[3].path(), &quorum(4, &voters, &learner_addr), "c")
        .await
        .unwrap();
    assert_eq!(learner.image().topics.len(), 31);
    let status = learner.status();
    assert!(status.learners.contains_key(&4), "{status:?}");
    assert!(status.snapshot_index.is_some(), "{status:?}");
    // It proposes through the leader too.
    learner.propose(topic("from-learner")).await.unwrap();
    assert!(learner.image().topic("from-learner").is_some());

    // The leader stops; the others elect a new one and take proposals again.
    nodes[&leader].shutdown().await;
    let t0 = Instant::now();
    nodes[&follower].propose(topic("after")).await.unwrap();
    assert!(t0.elapsed() < Duration::from_secs(8), "{:?}", t0.elapsed());
    assert!(nodes[&follower].image().topic("after").is_some());
    wait_for("topic 'after' on the learner", || {
        learner.image().topic("after").is_some()
    })
    .await;
    for (id, m) in &nodes {
        if *id != leader {
            m.shutdown().await;
        }
    }
    learner.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_voter_alone_gives_up_after_the_quorum_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let voters: BTreeMap<u64, String> = (1..=3).map(|id| (id, free_addr())).collect();
    let mut q = quorum(1, &voters, &voters[&1]);
    q.quorum_timeout = Duration::from_secs(2);
    let t0 = Instant::now();
    let err = match Metadata::start(dir.path(), &q, "c").await {
        Ok(_) => panic!("a quorum of one out of three voters"),
        Err(e) => e,
    };
    assert!(matches!(err, ClusterError::NoLeader(_)), "{err}");
    assert!(t0.elapsed() < Duration::from_secs(6), "{:?}", t0.elapsed());
}
