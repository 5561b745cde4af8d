//! Refusals: each error a client can get, and when.

use super::*;

#[test]
fn session_timeout_must_be_within_the_broker_range() {
    let mut h = Harness::new();
    for bad in [5_999, 1_800_001] {
        let mut r = join_req("c1", "");
        r.session_timeout_ms = bad;
        let t = h.join(r);
        assert_eq!(
            h.join_resp(t).error,
            Some(GroupError::InvalidSessionTimeout)
        );
    }
    assert_eq!(h.g.state(), GroupState::Empty);
}

#[test]
fn protocols_must_be_compatible() {
    let mut h = Harness::new();
    let mut r = join_req("c1", "");
    r.protocol_type = String::new();
    let t = h.join(r);
    assert_eq!(
        h.join_resp(t).error,
        Some(GroupError::InconsistentGroupProtocol)
    );
    let mut r = join_req("c1", "");
    r.protocols.clear();
    let t = h.join(r);
    assert_eq!(
        h.join_resp(t).error,
        Some(GroupError::InconsistentGroupProtocol)
    );

    h.stable_group(&["c1"]);
    let mut r = join_req("c2", "");
    r.protocol_type = "connect".into();
    let t = h.join(r);
    assert_eq!(
        h.join_resp(t).error,
        Some(GroupError::InconsistentGroupProtocol)
    );
    let mut r = join_req("c2", "");
    r.protocols = vec![("sticky".into(), Bytes::new())];
    let t = h.join(r);
    assert_eq!(
        h.join_resp(t).error,
        Some(GroupError::InconsistentGroupProtocol)
    );
    assert_eq!(h.g.state(), GroupState::Stable);
}

#[test]
fn group_max_size() {
    let config = GroupConfig {
        max_size: 2,
        ..GroupConfig::default()
    };
    let mut h = Harness::with(Group::new("g".into(), config));
    let ids = h.stable_group(&["c1", "c2"]);
    let t = h.join(join_req("c3", ""));
    let r = h.join_resp(t).clone();
    assert_eq!(
        (r.error, r.member_id.as_str()),
        (Some(GroupError::GroupMaxSizeReached), "")
    );
    // Members already in the group may still rejoin.
    let t = h.join(join_req("c1", &ids[0]));
    assert!(h.outstanding().contains(&t));
}

#[test]
fn restored_group_over_a_reduced_max_size_sheds_the_last_rejoiner() {
    let mut h = Harness::new();
    let ids = h.stable_group(&["c1", "c2", "c3"]);
    let config = GroupConfig {
        max_size: 2,
        ..GroupConfig::default()
    };
    let mut r = Harness::with(Group::restore(h.g.snapshot(), config, 0));
    assert_eq!(r.g.state(), GroupState::PreparingRebalance);
    let t1 = r.join(join_req("c1", &ids[0]));
    let t2 = r.join(join_req("c2", &ids[1]));
    let t3 = r.join(join_req("c3", &ids[2]));
    assert_eq!(r.join_resp(t3).error, Some(GroupError::GroupMaxSizeReached));
    assert_eq!(
        r.join_resp(t1).generation_id,
        2,
        "the kicked member was the last one awaited"
    );
    assert_eq!(
        r.join_resp(t2).members.len() + r.join_resp(t1).members.len(),
        2
    );
}

#[test]
fn heartbeat_errors() {
    let mut h = Harness::new();
    assert_eq!(h.heartbeat("nobody", 0), Err(GroupError::UnknownMemberId));
    let ids = h.stable_group(&["c1"]);
    assert_eq!(h.heartbeat("nobody", 1), Err(GroupError::UnknownMemberId));
    assert_eq!(h.heartbeat(&ids[0], 0), Err(GroupError::IllegalGeneration));
    assert_eq!(h.heartbeat(&ids[0], 2), Err(GroupError::IllegalGeneration));
    assert_eq!(
        h.g.heartbeat(h.now, &ids[0], Some("not-static"), 1),
        Err(GroupError::UnknownMemberId)
    );
    assert_eq!(h.heartbeat(&ids[0], 1), Ok(()));
}

#[test]
fn sync_errors() {
    let mut h = Harness::new();
    let t = h.sync(sync_req("nobody", 0));
    assert_eq!(h.sync_resp(t).error, Some(GroupError::UnknownMemberId));
    let ids = h.stable_group(&["c1", "c2"]);
    let t = h.sync(sync_req(&ids[0], 2));
    assert_eq!(h.sync_resp(t).error, Some(GroupError::IllegalGeneration));
    let mut s = sync_req(&ids[0], 1);
    s.protocol_name = Some("roundrobin".into());
    let t = h.sync(s);
    assert_eq!(
        h.sync_resp(t).error,
        Some(GroupError::InconsistentGroupProtocol)
    );
    let mut s = sync_req(&ids[0], 1);
    s.protocol_type = None;
    s.protocol_name = None;
    let t = h.sync(s);
    assert_eq!(h.sync_resp(t).error, None, "v0-v4 carry no protocol");
    h.join(join_req("c1", &ids[0]));
    let t = h.sync(sync_req(&ids[1], 1));
    assert_eq!(h.sync_resp(t).error, Some(GroupError::RebalanceInProgress));
}

#[test]
fn join_with_an_unknown_id() {
    let mut h = Harness::new();
    let t = h.join(join_req("c1", "made-up"));
    assert_eq!(h.join_resp(t).error, Some(GroupError::UnknownMemberId));
    assert_eq!(h.join_resp(t).member_id, "made-up");
    let t = h.join(static_req("i-a", "made-up"));
    assert_eq!(h.join_resp(t).error, Some(GroupError::UnknownMemberId));
}

#[test]
fn join_v3_gets_an_id_without_the_round_trip() {
    let mut h = Harness::new();
    let mut r = join_req("c1", "");
    r.require_known_member_id = false;
    let t = h.join(r);
    h.run_until(10_000, |h| h.joins.contains_key(&t));
    let r = h.join_resp(t);
    assert_eq!((r.error, r.generation_id), (None, 1));
    assert!(r.member_id.starts_with("c1-"));
}

#[test]
fn offset_commit_rules() {
    let mut h = Harness::new();
    let g = |h: &Harness, m: &str, i: Option<&str>, gen| h.g.validate_offset_commit(m, i, gen);
    assert_eq!(g(&h, "", None, -1), Ok(()), "simple consumer, no members");
    assert_eq!(g(&h, "x", None, 0), Err(GroupError::UnknownMemberId));
    let parked: Vec<Token> = ["c1", "c2"].iter().map(|c| h.join_new(c).0).collect();
    assert_eq!(
        g(&h, "", None, -1),
        Err(GroupError::UnknownMemberId),
        "members now"
    );
    h.run_until(60_000, |h| parked.iter().all(|t| h.joins.contains_key(t)));
    let id = h.join_resp(parked[0]).member_id.clone();
    assert_eq!(
        g(&h, &id, None, 1),
        Err(GroupError::RebalanceInProgress),
        "before the assignment"
    );
    assert_eq!(h.g.validate_txn_offset_commit(&id, None, 1), Ok(()));
    h.sync_all(&parked);
    assert_eq!(g(&h, &id, None, 1), Ok(()));
    assert_eq!(g(&h, &id, None, 0), Err(GroupError::IllegalGeneration));
    assert_eq!(g(&h, &id, Some("i-x"), 1), Err(GroupError::UnknownMemberId));
    assert_eq!(g(&h, "", None, -1), Err(GroupError::UnknownMemberId));
    assert_eq!(h.g.validate_txn_offset_commit("", None, -1), Ok(()));
    assert_eq!(h.g.validate_delete(), Err(GroupError::NonEmptyGroup));

    // An accepted commit keeps the session alive, as a heartbeat does.
    let other = h.join_resp(parked[1]).member_id.clone();
    for _ in 0..4 {
        h.advance(i64::from(SESSION_MS) / 2);
        assert_eq!(h.g.offset_commit(h.now, &id, None, 1), Ok(()));
        assert_eq!(h.g.offset_commit(h.now, &other, None, 1), Ok(()));
    }
    assert_eq!(h.g.state(), GroupState::Stable);
}

#[test]
fn delete_only_when_empty() {
    let mut h = Harness::new();
    assert_eq!(h.g.validate_delete(), Ok(()));
    let ids = h.stable_group(&["c1"]);
    assert_eq!(h.g.validate_delete(), Err(GroupError::NonEmptyGroup));
    h.leave(&[(&ids[0], None)]);
    assert_eq!(h.g.validate_delete(), Ok(()));
}

#[test]
fn state_names_are_kafkas() {
    let names = [
        GroupState::Empty,
        GroupState::PreparingRebalance,
        GroupState::CompletingRebalance,
        GroupState::Stable,
        GroupState::Dead,
    ]
    .map(GroupState::as_str);
    assert_eq!(
        names,
        [
            "Empty",
            "PreparingRebalance",
            "CompletingRebalance",
            "Stable",
            "Dead"
        ]
    );
}
