//! Static membership: temporary leave (-2), replacement by a successor with the same instance
//! id, expiry, and the instance-id errors.

use super::*;

fn static_join(member_id: &str, instance: &str, topics: &[&str]) -> Heartbeat {
    Heartbeat {
        instance_id: Some(instance.to_string()),
        ..join_hb(member_id, topics)
    }
}

fn static_leave(member_id: &str, instance: &str, epoch: i32) -> Heartbeat {
    Heartbeat {
        instance_id: Some(instance.to_string()),
        ..beat(member_id, epoch, None)
    }
}

/// A static member `s1` (instance `i1`) with partitions 0-1 and a dynamic `m2` with 2-3.
fn two_members() -> Harness {
    let mut h = Harness::new(&[("a", 4)]);
    h.ok(static_join("s1", "i1", &["a"]));
    h.join("m2", &["a"]);
    h.settle();
    assert_eq!(h.assigned("s1"), tps(&[("a", &[0, 1])]));
    h
}

#[test]
fn a_static_member_leaves_temporarily_and_its_successor_takes_over_without_a_rebalance() {
    let mut h = two_members();
    let r = h.ok(static_leave("s1", "i1", LEAVE_GROUP_STATIC_MEMBER_EPOCH));
    assert_eq!((r.member_id.as_str(), r.member_epoch), ("s1", -2));
    assert_eq!(h.g.group_epoch(), 2, "a temporary leave does not rebalance");
    assert_eq!(h.g.state(), ConsumerGroupState::Reconciling);
    let away = h.member("s1");
    assert_eq!(
        (away.member_epoch, away.assignment),
        (-2, tps(&[("a", &[0, 1])]))
    );
    // Its partitions stay reserved: m2 gets nothing more.
    let r = h.ok(beat("m2", 2, Some(tps(&[("a", &[2, 3])]))));
    assert_eq!(r.assignment, None);
    // The old incarnation cannot heartbeat any more.
    let r = h.send(beat("s1", 2, None));
    assert_eq!(r, Err(ConsumerError::FencedMemberEpoch));

    h.advance(10_000);
    let r = h.ok(static_join("s1-new", "i1", &["a"]));
    assert_eq!(
        (r.member_epoch, r.assignment),
        (2, Some(tps(&[("a", &[0, 1])])))
    );
    assert_eq!(h.g.group_epoch(), 2);
    assert_eq!(h.g.state(), ConsumerGroupState::Stable);
    assert_eq!(h.g.member_count(), 2);
    assert_eq!(
        h.send(beat("s1", 2, None)),
        Err(ConsumerError::UnknownMemberId)
    );
    assert_eq!(h.member("s1-new").instance_id.as_deref(), Some("i1"));
}

#[test]
fn a_static_member_away_past_its_session_is_removed() {
    let mut h = two_members();
    h.ok(static_leave("s1", "i1", LEAVE_GROUP_STATIC_MEMBER_EPOCH));
    h.advance(30_000);
    h.ok(beat("m2", 2, None));
    assert!(
        h.advance(15_000),
        "s1's session ran out 45s after its last heartbeat"
    );
    assert_eq!(h.g.member_count(), 1);
    assert_eq!(h.g.group_epoch(), 3);
    let r = h.ok(beat("m2", 2, Some(tps(&[("a", &[2, 3])]))));
    assert_eq!(
        (r.member_epoch, r.assignment),
        (3, Some(tps(&[("a", &[0, 1, 2, 3])])))
    );
    // The instance id is free again: a new member with it is a plain join.
    let r = h.ok(static_join("s1-new", "i1", &["a"]));
    assert_eq!(r.member_epoch, 4);
}

#[test]
fn a_second_active_member_with_the_same_instance_id_is_refused() {
    let mut h = two_members();
    let before = h.g.snapshot();
    let r = h.send(static_join("s1-twin", "i1", &["a"]));
    assert_eq!(r, Err(ConsumerError::UnreleasedInstanceId));
    assert_eq!(h.g.snapshot(), before);
}

#[test]
fn requests_naming_another_members_instance_are_fenced() {
    let mut h = two_members();
    let wrong = Heartbeat {
        instance_id: Some("i1".to_string()),
        ..beat("m2", 2, None)
    };
    assert_eq!(h.send(wrong), Err(ConsumerError::FencedInstanceId));
    let r = h.send(static_leave("m2", "i1", LEAVE_GROUP_MEMBER_EPOCH));
    assert_eq!(r, Err(ConsumerError::FencedInstanceId));
    let r = h.send(static_leave("s1", "i9", LEAVE_GROUP_STATIC_MEMBER_EPOCH));
    assert_eq!(r, Err(ConsumerError::UnknownMemberId));
    let r = h.send(Heartbeat {
        instance_id: Some("i9".to_string()),
        ..beat("s1", 2, None)
    });
    assert_eq!(r, Err(ConsumerError::UnknownMemberId));
}

#[test]
fn a_static_member_heartbeats_with_or_without_its_instance_id() {
    let mut h = two_members();
    let r = h.ok(static_leave("s1", "i1", 2));
    assert_eq!(r.member_epoch, 2);
    let r = h.ok(beat("s1", 2, None));
    assert_eq!(r.member_epoch, 2);
}

#[test]
fn a_static_member_leaving_for_good_rebalances() {
    let mut h = two_members();
    let r = h.ok(static_leave("s1", "i1", LEAVE_GROUP_MEMBER_EPOCH));
    assert_eq!(r.member_epoch, -1);
    assert_eq!(h.g.group_epoch(), 3);
    assert_eq!(h.g.member_count(), 1);
    let r = h.ok(static_join("s1-new", "i1", &["a"]));
    assert_eq!(r.member_epoch, 4, "a new member, not a successor");
}

#[test]
fn a_temporary_leave_releases_what_the_member_was_revoking() {
    let mut h = Harness::new(&[("a", 4)]);
    h.ok(static_join("s1", "i1", &["a"]));
    h.join("m2", &["a"]);
    h.ok(beat("s1", 1, None));
    assert_eq!(h.member("s1").state, MemberState::UnrevokedPartitions);
    h.ok(static_leave("s1", "i1", LEAVE_GROUP_STATIC_MEMBER_EPOCH));
    let r = h.ok(beat("m2", 2, Some(Vec::new())));
    assert_eq!(r.assignment, Some(tps(&[("a", &[2, 3])])));
    // Its successor carries on at the current epoch with what s1 kept.
    let r = h.ok(static_join("s2", "i1", &["a"]));
    assert_eq!(
        (r.member_epoch, r.assignment),
        (2, Some(tps(&[("a", &[0, 1])])))
    );
    assert_eq!(h.g.state(), ConsumerGroupState::Stable);
}

#[test]
fn a_fenced_static_member_rejoins_with_its_own_member_id() {
    let mut h = two_members();
    assert_eq!(
        h.send(beat("s1", 7, None)),
        Err(ConsumerError::FencedMemberEpoch)
    );
    let r = h.ok(static_join("s1", "i1", &["a"]));
    assert_eq!(
        (r.member_epoch, r.assignment),
        (2, Some(tps(&[("a", &[0, 1])])))
    );
    assert_eq!(h.g.group_epoch(), 2);
}
