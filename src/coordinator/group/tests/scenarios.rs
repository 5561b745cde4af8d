//! Membership scenarios as real clients drive them.

use super::*;

#[test]
fn single_member_join_sync_stable() {
    let mut h = Harness::new();
    let t = h.join(join_req("c1", ""));
    let r = h.join_resp(t).clone();
    assert_eq!(r.error, Some(GroupError::MemberIdRequired));
    assert!(r.member_id.starts_with("c1-"));
    assert_eq!(r.generation_id, -1);
    assert_eq!(
        h.g.state(),
        GroupState::Empty,
        "a pending id is not a member"
    );

    let t = h.join(join_req("c1", &r.member_id));
    assert!(h.outstanding().contains(&t), "parked for the initial delay");
    assert_eq!(h.g.state(), GroupState::PreparingRebalance);
    h.advance(2_999);
    assert!(h.outstanding().contains(&t));
    h.advance(1);
    let j = h.join_resp(t).clone();
    assert_eq!(j.error, None);
    assert_eq!(j.generation_id, 1);
    assert_eq!(j.leader, r.member_id);
    assert_eq!(j.protocol_type.as_deref(), Some("consumer"));
    assert_eq!(j.protocol_name.as_deref(), Some("range"));
    assert_eq!(j.members.len(), 1);
    assert_eq!(j.members[0].metadata, Bytes::from("sub-c1"));
    assert_eq!(h.g.state(), GroupState::CompletingRebalance);
    assert_eq!(h.g.heartbeat(h.now, &j.member_id, None, 1), Ok(()));

    let mut s = sync_req(&j.member_id, 1);
    s.assignments = vec![(j.member_id.clone(), Bytes::from("a1"))];
    let st = h.sync(s);
    assert_eq!(h.persists, 1);
    assert_eq!(h.sync_resp(st).assignment, Bytes::from("a1"));
    assert_eq!(h.sync_resp(st).protocol_name.as_deref(), Some("range"));
    assert_eq!(h.g.state(), GroupState::Stable);
    assert_eq!(h.heartbeat(&j.member_id, 1), Ok(()));
    let snap = h.g.snapshot();
    assert_eq!(snap.generation_id, 1);
    assert_eq!(snap.members[0].assignment, b"a1".to_vec());
    assert_eq!(snap.members[0].subscription, b"sub-c1".to_vec());
}

#[test]
fn members_starting_together_share_one_generation() {
    let mut h = Harness::new();
    let (t1, _) = h.join_new("c1");
    h.advance(1_000);
    let (t2, _) = h.join_new("c2");
    h.advance(1_000);
    let (t3, _) = h.join_new("c3");
    // The delay is extended once per delay while members keep arriving.
    h.advance(1_000);
    assert!(h.outstanding().contains(&t1), "delay extended at 3s");
    h.run_until(60_000, |h| h.joins.contains_key(&t1));
    assert_eq!(h.now, 6_000);
    for t in [t1, t2, t3] {
        assert_eq!(h.join_resp(t).generation_id, 1);
    }
    let leader = h.join_resp(t1).leader.clone();
    let leader_resp = [t1, t2, t3].map(|t| h.join_resp(t).clone());
    let with_members: Vec<_> = leader_resp
        .iter()
        .filter(|r| !r.members.is_empty())
        .collect();
    assert_eq!(
        with_members.len(),
        1,
        "only the leader gets the member list"
    );
    assert_eq!(with_members[0].member_id, leader);
    assert_eq!(with_members[0].members.len(), 3);
    h.sync_all(&[t1, t2, t3]);
    assert_eq!(h.g.generation_id(), 1);
}

#[test]
fn fourth_member_causes_exactly_one_rebalance() {
    let mut h = Harness::new();
    let ids = h.stable_group(&["c1", "c2", "c3"]);
    assert_eq!(h.g.generation_id(), 1);
    h.advance(1_000);
    let (t4, _) = h.join_new("c4");
    assert_eq!(h.g.state(), GroupState::PreparingRebalance);
    assert!(h.outstanding().contains(&t4));
    let mut parked = vec![t4];
    for id in &ids {
        assert_eq!(h.heartbeat(id, 1), Err(GroupError::RebalanceInProgress));
        parked.push(h.join(join_req(&id[..2], id)));
    }
    // Everyone has rejoined: no waiting for the rebalance timeout.
    assert!(parked.iter().all(|t| h.joins.contains_key(t)));
    assert_eq!(h.g.generation_id(), 2);
    assert_eq!(h.g.state(), GroupState::CompletingRebalance);
    h.sync_all(&parked);
    assert_eq!(h.g.generation_id(), 2);
    for id in &ids {
        assert_eq!(h.heartbeat(id, 2), Ok(()));
    }
}

#[test]
fn follower_syncs_wait_for_the_leader() {
    let mut h = Harness::new();
    let parked: Vec<Token> = ["c1", "c2"].iter().map(|c| h.join_new(c).0).collect();
    h.run_until(60_000, |h| parked.iter().all(|t| h.joins.contains_key(t)));
    let r: Vec<JoinResponse> = parked.iter().map(|t| h.join_resp(*t).clone()).collect();
    let (leader, follower) = if r[0].member_id == r[0].leader {
        (&r[0], &r[1])
    } else {
        (&r[1], &r[0])
    };
    let ft = h.sync(sync_req(&follower.member_id, 1));
    assert!(h.outstanding().contains(&ft));
    let mut s = sync_req(&leader.member_id, 1);
    // The leader leaves the follower out: it gets empty bytes.
    s.assignments = vec![
        (leader.member_id.clone(), Bytes::from("L")),
        ("ghost".into(), Bytes::from("x")),
    ];
    let lt = h.sync(s);
    assert_eq!(h.sync_resp(lt).assignment, Bytes::from("L"));
    assert_eq!(h.sync_resp(ft).error, None);
    assert_eq!(h.sync_resp(ft).assignment, Bytes::new());
}

#[test]
fn leave_rebalances_and_the_last_leave_empties_the_group() {
    let mut h = Harness::new();
    let ids = h.stable_group(&["c1", "c2"]);
    let persists = h.persists;
    let results = h.leave(&[(&ids[1], None), ("nobody", None)]);
    assert_eq!(results, vec![Ok(()), Err(GroupError::UnknownMemberId)]);
    assert_eq!(h.g.state(), GroupState::PreparingRebalance);
    assert_eq!(
        h.heartbeat(&ids[0], 1),
        Err(GroupError::RebalanceInProgress)
    );
    let t = h.join(join_req("c1", &ids[0]));
    assert_eq!(h.join_resp(t).generation_id, 2);
    h.sync_all(&[t]);
    assert_eq!(h.leave(&[(&ids[0], None)]), vec![Ok(())]);
    assert_eq!(h.g.state(), GroupState::Empty);
    assert_eq!(h.g.generation_id(), 3);
    assert_eq!(
        h.persists,
        persists + 2,
        "assignment of gen 2, then the empty group"
    );
    assert!(h.g.snapshot().members.is_empty());
    assert_eq!(h.g.leader(), None);
}

#[test]
fn leave_during_join_answers_the_parked_request() {
    let mut h = Harness::new();
    let ids = h.stable_group(&["c1", "c2"]);
    let t1 = h.join(join_req("c1", &ids[0]));
    let results = h.leave(&[(&ids[0], None)]);
    assert_eq!(results, vec![Ok(())]);
    assert_eq!(h.join_resp(t1).error, Some(GroupError::UnknownMemberId));
    let t2 = h.join(join_req("c2", &ids[1]));
    assert_eq!(
        h.join_resp(t2).generation_id,
        2,
        "c2 was the only one left to rejoin"
    );
}

#[test]
fn leader_rejoin_rebalances_but_a_follower_rejoin_does_not() {
    let mut h = Harness::new();
    let ids = h.stable_group(&["c1", "c2"]);
    let leader = h.g.leader().unwrap().to_string();
    let follower = ids.iter().find(|i| **i != leader).unwrap().clone();
    let t = h.join(join_req(&follower[..2], &follower));
    let r = h.join_resp(t).clone();
    assert_eq!((r.error, r.generation_id, r.members.len()), (None, 1, 0));
    assert_eq!(h.g.state(), GroupState::Stable);
    let mut changed = join_req(&follower[..2], &follower);
    changed.protocols[0].1 = Bytes::from("new subscription");
    let t = h.join(changed);
    assert!(h.outstanding().contains(&t), "changed metadata rebalances");
    assert_eq!(h.g.state(), GroupState::PreparingRebalance);
    let lt = h.join(join_req(&leader[..2], &leader));
    assert_eq!(h.join_resp(lt).generation_id, 2);
    h.sync_all(&[t, lt]);
    let lt = h.join(join_req(&leader[..2], &leader));
    assert!(
        h.outstanding().contains(&lt),
        "the leader rejoining rebalances"
    );
}

#[test]
fn rejoin_with_same_metadata_while_completing_resends_the_generation() {
    let mut h = Harness::new();
    let parked: Vec<Token> = ["c1", "c2"].iter().map(|c| h.join_new(c).0).collect();
    h.run_until(60_000, |h| parked.iter().all(|t| h.joins.contains_key(t)));
    let leader = h.join_resp(parked[0]).leader.clone();
    let again = h.join(join_req(&leader[..2], &leader));
    let r = h.join_resp(again).clone();
    assert_eq!((r.generation_id, r.members.len()), (1, 2));
    assert_eq!(h.g.state(), GroupState::CompletingRebalance);
}

#[test]
fn second_join_answers_the_first() {
    let mut h = Harness::new();
    let ids = h.stable_group(&["c1", "c2"]);
    let first = h.join(join_req("c1", &ids[0]));
    let second = h.join(join_req("c1", &ids[0]));
    assert_eq!(
        h.join_resp(first).error,
        Some(GroupError::RebalanceInProgress)
    );
    assert!(h.outstanding().contains(&second));
    let t2 = h.join(join_req("c2", &ids[1]));
    assert_eq!(h.join_resp(second).generation_id, 2);
    assert_eq!(h.join_resp(t2).generation_id, 2);
}

#[test]
fn mark_dead_answers_every_parked_request() {
    let mut h = Harness::new();
    let ids = h.stable_group(&["c1", "c2", "c3"]);
    let t1 = h.join(join_req("c1", &ids[0]));
    let t2 = h.join(join_req("c2", &ids[1]));
    let out = h.g.mark_dead();
    h.record(out);
    assert!(h.outstanding().is_empty());
    assert_eq!(
        h.join_resp(t1).error,
        Some(GroupError::CoordinatorNotAvailable)
    );
    assert_eq!(
        h.join_resp(t2).error,
        Some(GroupError::CoordinatorNotAvailable)
    );
    assert_eq!(h.g.state(), GroupState::Dead);
    assert_eq!(h.g.next_deadline_ms(), None);
    let t = h.join(join_req("c3", &ids[2]));
    assert_eq!(
        h.join_resp(t).error,
        Some(GroupError::CoordinatorNotAvailable)
    );
    assert_eq!(
        h.heartbeat(&ids[2], 1),
        Err(GroupError::CoordinatorNotAvailable)
    );
    assert_eq!(h.g.validate_delete(), Err(GroupError::GroupIdNotFound));
    assert!(h.g.mark_dead().is_empty());
}

#[test]
fn mark_dead_answers_parked_syncs() {
    let mut h = Harness::new();
    let parked: Vec<Token> = ["c1", "c2"].iter().map(|c| h.join_new(c).0).collect();
    h.run_until(60_000, |h| parked.iter().all(|t| h.joins.contains_key(t)));
    let follower = parked
        .iter()
        .map(|t| h.join_resp(*t).clone())
        .find(|r| r.member_id != r.leader)
        .unwrap();
    let st = h.sync(sync_req(&follower.member_id, 1));
    let out = h.g.mark_dead();
    h.record(out);
    assert_eq!(
        h.sync_resp(st).error,
        Some(GroupError::CoordinatorNotAvailable)
    );
}

#[test]
fn snapshot_restore_round_trip() {
    let mut h = Harness::new();
    let ids = h.stable_group(&["c1", "c2"]);
    let snap = h.g.snapshot();
    let json = serde_json::to_string(&snap).unwrap();
    let back: GroupSnapshot = serde_json::from_str(&json).unwrap();
    assert_eq!(back, snap);

    let mut r = Harness::with(Group::restore(back, GroupConfig::default(), 100_000));
    r.now = 100_000;
    assert_eq!(r.g.state(), GroupState::Stable);
    assert_eq!(r.g.generation_id(), 1);
    assert_eq!(r.g.leader(), h.g.leader());
    assert_eq!(r.g.protocol_name(), Some("range"));
    assert_eq!(r.g.describe(), h.g.describe());
    let st = r.sync(sync_req(&ids[1], 1));
    assert_eq!(
        r.sync_resp(st).assignment,
        Bytes::from(format!("assign-{}", ids[1]))
    );
    // Sessions restart at restore time: the silent member goes after one session timeout.
    r.advance(5_000);
    assert_eq!(r.heartbeat(&ids[0], 1), Ok(()));
    r.advance(i64::from(SESSION_MS) - 5_001);
    assert_eq!(r.g.state(), GroupState::Stable);
    r.advance(1);
    assert_eq!(r.g.state(), GroupState::PreparingRebalance);

    let empty = Group::restore(
        Group::new("e".into(), GroupConfig::default()).snapshot(),
        GroupConfig::default(),
        0,
    );
    assert_eq!(empty.state(), GroupState::Empty);
    assert_eq!(empty.group_id(), "e");
}

#[test]
fn describe_reports_protocol_and_assignment_only_when_stable() {
    let mut h = Harness::new();
    let ids = h.stable_group(&["c1"]);
    let d = h.g.describe();
    assert_eq!(
        (d.state.as_str(), d.protocol_name.as_deref()),
        ("Stable", Some("range"))
    );
    assert_eq!(
        d.members[0].assignment,
        Bytes::from(format!("assign-{}", ids[0]))
    );
    assert_eq!(d.members[0].metadata, Bytes::from("sub-c1"));
    // The sole member rejoining completes the join phase at once.
    h.join(join_req("c1", &ids[0]));
    let d = h.g.describe();
    assert_eq!(
        (d.state.as_str(), d.protocol_name),
        ("CompletingRebalance", None)
    );
    assert_eq!(d.members[0].assignment, Bytes::new());
}
