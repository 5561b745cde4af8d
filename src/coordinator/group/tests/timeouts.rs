//! Time-driven behaviour: the initial delay, sessions, the rebalance and sync timeouts,
//! pending-id expiry, and a steady group that never rebalances.

use super::*;

#[test]
fn initial_delay_is_bounded_by_the_rebalance_timeout() {
    let mut h = Harness::new();
    let (first, _) = h.join_new("c0");
    // A new member every 2.5 s keeps extending the delay, but not past the rebalance timeout.
    for i in 1..40 {
        h.advance(2_500);
        if h.joins.contains_key(&first) {
            break;
        }
        h.join_new(&format!("c{i}"));
    }
    assert_eq!(h.join_resp(first).generation_id, 1);
    // Kafka's arithmetic: each extension spends one delay of the rebalance timeout.
    assert_eq!(h.g.state_timestamp_ms(), i64::from(REBALANCE_MS));
}

#[test]
fn session_expiry_removes_the_member_and_rebalances() {
    let mut h = Harness::new();
    let ids = h.stable_group(&["c1", "c2"]);
    h.advance(5_000);
    assert_eq!(h.heartbeat(&ids[0], 1), Ok(()));
    h.advance(4_999);
    assert_eq!(h.heartbeat(&ids[0], 1), Ok(()));
    assert_eq!(h.g.state(), GroupState::Stable);
    h.advance(1);
    assert_eq!(
        h.g.state(),
        GroupState::PreparingRebalance,
        "c2 went silent"
    );
    assert_eq!(h.heartbeat(&ids[1], 1), Err(GroupError::UnknownMemberId));
    assert_eq!(
        h.heartbeat(&ids[0], 1),
        Err(GroupError::RebalanceInProgress)
    );
    let t = h.join(join_req("c1", &ids[0]));
    let r = h.join_resp(t).clone();
    assert_eq!(r.generation_id, 2);
    assert_eq!(r.leader, ids[0]);
    assert_eq!(r.members.len(), 1);
}

#[test]
fn parked_join_keeps_the_session_alive_until_the_rebalance_timeout() {
    let mut h = Harness::new();
    let ids = h.stable_group(&["c1", "c2"]);
    let start = h.now;
    let t = h.join(join_req("c1", &ids[0]));
    // c1 waits parked for far longer than its session; c2 is slow to rejoin but heartbeats.
    for _ in 0..5 {
        h.advance(5_000);
        assert_eq!(
            h.heartbeat(&ids[1], 1),
            Err(GroupError::RebalanceInProgress)
        );
    }
    assert!(h.outstanding().contains(&t));
    h.run_until(60_000, |h| h.joins.contains_key(&t));
    assert_eq!(h.now, start + i64::from(REBALANCE_MS));
    let r = h.join_resp(t).clone();
    assert_eq!(r.generation_id, 2);
    assert_eq!(r.members.len(), 1, "c2 never rejoined and was dropped");
    assert_eq!(h.heartbeat(&ids[1], 2), Err(GroupError::UnknownMemberId));
}

#[test]
fn missing_sync_removes_the_member_after_the_rebalance_timeout() {
    let mut h = Harness::new();
    let parked: Vec<Token> = ["c1", "c2"].iter().map(|c| h.join_new(c).0).collect();
    h.run_until(60_000, |h| parked.iter().all(|t| h.joins.contains_key(t)));
    let r: Vec<JoinResponse> = parked.iter().map(|t| h.join_resp(*t).clone()).collect();
    let follower = r.iter().find(|r| r.member_id != r.leader).unwrap().clone();
    let leader = follower.leader.clone();
    let ft = h.sync(sync_req(&follower.member_id, 1));
    // The leader heartbeats but never syncs.
    for _ in 0..(REBALANCE_MS / 5_000) {
        assert_eq!(h.g.state(), GroupState::CompletingRebalance);
        h.advance(5_000);
        let _ = h.heartbeat(&follower.member_id, 1);
        let _ = h.heartbeat(&leader, 1);
    }
    assert_eq!(h.sync_resp(ft).error, Some(GroupError::RebalanceInProgress));
    assert_eq!(h.g.state(), GroupState::PreparingRebalance);
    assert_eq!(h.g.member_count(), 1);
    let t = h.join(join_req("c", &follower.member_id));
    assert_eq!(h.join_resp(t).leader, follower.member_id);
}

#[test]
fn pending_member_id_expires_after_the_session_timeout() {
    let mut h = Harness::new();
    let t = h.join(join_req("c1", ""));
    let id = h.join_resp(t).member_id.clone();
    assert_eq!(h.g.next_deadline_ms(), Some(i64::from(SESSION_MS)));
    h.advance(i64::from(SESSION_MS));
    assert_eq!(h.g.next_deadline_ms(), None);
    let t = h.join(join_req("c1", &id));
    assert_eq!(h.join_resp(t).error, Some(GroupError::UnknownMemberId));
}

#[test]
fn pending_member_holds_the_rebalance_until_it_joins() {
    let mut h = Harness::new();
    let ids = h.stable_group(&["c1"]);
    let t = h.join(join_req("c2", ""));
    let pending = h.join_resp(t).member_id.clone();
    assert_eq!(
        h.g.state(),
        GroupState::Stable,
        "a pending id does not rebalance"
    );
    let lt = h.join(join_req("c1", &ids[0]));
    assert!(h.outstanding().contains(&lt), "waits for the pending id");
    let t2 = h.join(join_req("c2", &pending));
    assert_eq!(h.join_resp(lt).generation_id, 2);
    assert_eq!(h.join_resp(lt).members.len(), 2);
    assert_eq!(h.join_resp(t2).generation_id, 2);
}

#[test]
fn steady_group_never_rebalances() {
    let mut h = Harness::new();
    let ids = h.stable_group(&["c1", "c2", "c3"]);
    let persists = h.persists;
    for round in 0..200 {
        h.advance(3_000);
        for id in &ids {
            assert_eq!(h.heartbeat(id, 1), Ok(()));
        }
        if round % 10 == 0 {
            // Followers re-sending JoinGroup or SyncGroup with nothing changed is harmless.
            let leader = h.g.leader().unwrap().to_string();
            let follower = ids.iter().find(|i| **i != leader).unwrap();
            let t = h.join(join_req(&follower[..2], follower));
            assert_eq!(h.join_resp(t).generation_id, 1);
            h.sync(sync_req(follower, 1));
            assert_eq!(h.g.offset_commit(h.now, follower, None, 1), Ok(()));
        }
    }
    assert_eq!((h.g.state(), h.g.generation_id()), (GroupState::Stable, 1));
    assert_eq!(h.persists, persists);
}
