//! KIP-345 static membership.

use super::*;

/// A Stable group of static "i-a" (joined first, so the leader) and dynamic "c2".
fn static_and_dynamic(h: &mut Harness) -> (String, String) {
    let ta = h.join(static_req("i-a", ""));
    assert!(
        h.outstanding().contains(&ta),
        "static members skip MEMBER_ID_REQUIRED"
    );
    let (tb, _) = h.join_new("c2");
    h.run_until(60_000, |h| {
        h.joins.contains_key(&ta) && h.joins.contains_key(&tb)
    });
    let ids = h.sync_all(&[ta, tb]);
    assert_eq!(h.g.leader(), Some(ids[0].0.as_str()));
    (ids[0].0.clone(), ids[1].0.clone())
}

#[test]
fn restart_within_session_keeps_generation_and_fences_the_old_id() {
    let mut h = Harness::new();
    let (a, b) = static_and_dynamic(&mut h);
    h.advance(2_000);
    let persists = h.persists;
    let t = h.join(static_req("i-a", ""));
    let r = h.join_resp(t).clone();
    assert_eq!(r.error, None);
    assert_ne!(r.member_id, a);
    assert_eq!(r.generation_id, 1, "no rebalance");
    assert_eq!(
        r.leader, a,
        "the old leader id: the restarted leader must not reassign"
    );
    assert!(r.members.is_empty());
    assert_eq!(h.g.state(), GroupState::Stable);
    assert_eq!(h.g.leader(), Some(r.member_id.as_str()));
    assert_eq!(h.persists, persists + 1, "the new member id is persisted");
    assert_eq!(h.g.snapshot().members[0].member_id, r.member_id);

    let mut s = sync_req(&r.member_id, 1);
    s.group_instance_id = Some("i-a".into());
    let st = h.sync(s);
    assert_eq!(
        h.sync_resp(st).assignment,
        Bytes::from(format!("assign-{a}"))
    );

    assert_eq!(
        h.g.heartbeat(h.now, &a, Some("i-a"), 1),
        Err(GroupError::FencedInstanceId)
    );
    assert_eq!(
        h.g.heartbeat(h.now, &a, None, 1),
        Err(GroupError::UnknownMemberId)
    );
    assert_eq!(h.g.heartbeat(h.now, &r.member_id, Some("i-a"), 1), Ok(()));
    assert_eq!(h.heartbeat(&b, 1), Ok(()));
    assert_eq!(
        h.g.validate_offset_commit(&a, Some("i-a"), 1),
        Err(GroupError::FencedInstanceId)
    );
    let mut old = sync_req(&a, 1);
    old.group_instance_id = Some("i-a".into());
    let st = h.sync(old);
    assert_eq!(h.sync_resp(st).error, Some(GroupError::FencedInstanceId));
    assert_eq!(h.g.generation_id(), 1);
}

#[test]
fn restart_with_a_different_protocol_choice_rebalances() {
    let mut h = Harness::new();
    let two = |mut r: JoinRequest| {
        r.protocols.push(("roundrobin".into(), Bytes::from("rr")));
        r
    };
    let ta = h.join(two(static_req("i-a", "")));
    let t = h.join(two(join_req("c2", "")));
    let b = h.join_resp(t).member_id.clone();
    let tb = h.join(two(join_req("c2", &b)));
    h.run_until(60_000, |h| h.joins.contains_key(&tb));
    h.sync_all(&[ta, tb]);
    assert_eq!(h.g.protocol_name(), Some("range"));
    let mut rr_only = static_req("i-a", "");
    rr_only.protocols = vec![("roundrobin".into(), Bytes::from("rr"))];
    let t = h.join(rr_only);
    assert!(h.outstanding().contains(&t));
    assert_eq!(h.g.state(), GroupState::PreparingRebalance);
    let tb = h.join(two(join_req("c2", &b)));
    assert_eq!(h.join_resp(tb).protocol_name.as_deref(), Some("roundrobin"));
    assert_eq!(h.join_resp(t).generation_id, 2);
}

#[test]
fn a_second_instance_fences_the_parked_first() {
    let mut h = Harness::new();
    let (a, b) = static_and_dynamic(&mut h);
    let ta = h.join(static_req("i-a", &a));
    assert!(
        h.outstanding().contains(&ta),
        "the leader rejoining rebalances"
    );
    let t2 = h.join(static_req("i-a", ""));
    let fenced = h.join_resp(ta).clone();
    assert_eq!(
        (fenced.error, fenced.member_id.as_str()),
        (Some(GroupError::FencedInstanceId), a.as_str())
    );
    assert!(h.outstanding().contains(&t2));
    let tb = h.join(join_req("c2", &b));
    assert_eq!(h.join_resp(t2).generation_id, 2);
    assert_eq!(h.join_resp(tb).generation_id, 2);
}

#[test]
fn restart_while_completing_rebalances_and_fences_the_parked_sync() {
    let mut h = Harness::new();
    let ta = h.join(static_req("i-a", ""));
    let (_, b) = h.join_new("c2");
    h.run_until(60_000, |h| h.joins.contains_key(&ta));
    let a = h.join_resp(ta).member_id.clone();
    let sb = h.sync(sync_req(&b, 1));
    assert!(h.outstanding().contains(&sb));
    let mut s = sync_req(&a, 1);
    s.group_instance_id = Some("i-a".into());
    // The leader has not synced; a new instance of it joins.
    let t = h.join(static_req("i-a", ""));
    assert_eq!(h.g.state(), GroupState::PreparingRebalance);
    assert_eq!(h.sync_resp(sb).error, Some(GroupError::RebalanceInProgress));
    assert!(h.outstanding().contains(&t));
    let st = h.sync(s);
    assert_eq!(h.sync_resp(st).error, Some(GroupError::FencedInstanceId));
}

#[test]
fn static_member_that_misses_a_rebalance_keeps_its_place() {
    let mut h = Harness::new();
    let (a, b) = static_and_dynamic(&mut h);
    let mut changed = join_req("c2", &b);
    changed.protocols[0].1 = Bytes::from("more topics");
    let tb = h.join(changed);
    // i-a heartbeats (REBALANCE_IN_PROGRESS) but does not rejoin in time.
    let deadline = h.now + i64::from(REBALANCE_MS);
    while h.now < deadline {
        h.advance(5_000);
        let _ = h.g.heartbeat(h.now, &a, Some("i-a"), 1);
    }
    let r = h.join_resp(tb).clone();
    assert_eq!(r.generation_id, 2);
    assert_eq!(r.leader, b, "leadership moves to a member that rejoined");
    assert_eq!(r.members.len(), 2, "the static member is still assigned to");
    assert_eq!(
        h.g.heartbeat(h.now, &a, Some("i-a"), 1),
        Err(GroupError::IllegalGeneration)
    );
    let ta = h.join(static_req("i-a", &a));
    assert_eq!(
        h.join_resp(ta).generation_id,
        2,
        "same metadata while completing"
    );
}

#[test]
fn leave_by_instance_id() {
    let mut h = Harness::new();
    let (a, _b) = static_and_dynamic(&mut h);
    let results = h.leave(&[("wrong-id", Some("i-a")), ("", Some("i-zz")), ("", None)]);
    assert_eq!(
        results,
        vec![
            Err(GroupError::FencedInstanceId),
            Err(GroupError::UnknownMemberId),
            Err(GroupError::UnknownMemberId)
        ]
    );
    assert_eq!(
        h.g.state(),
        GroupState::Stable,
        "nothing left, nothing to rebalance"
    );
    assert_eq!(h.leave(&[("", Some("i-a"))]), vec![Ok(())]);
    assert_eq!(h.g.state(), GroupState::PreparingRebalance);
    assert_eq!(
        h.g.heartbeat(h.now, &a, Some("i-a"), 1),
        Err(GroupError::UnknownMemberId)
    );
}
