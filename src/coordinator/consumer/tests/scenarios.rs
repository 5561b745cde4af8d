//! The protocol's main paths, step by step, with the exact responses.

use super::*;

fn leave(member_id: &str) -> Heartbeat {
    Heartbeat {
        member_epoch: LEAVE_GROUP_MEMBER_EPOCH,
        ..beat(member_id, 0, None)
    }
}

#[test]
fn first_member_gets_every_partition_at_epoch_1() {
    let mut h = Harness::new(&[("a", 4)]);
    let r = h.join("m1", &["a"]);
    assert_eq!(r.member_id, "m1");
    assert_eq!(r.member_epoch, 1);
    assert_eq!(r.heartbeat_interval_ms, 5_000);
    assert_eq!(r.assignment, Some(tps(&[("a", &[0, 1, 2, 3])])));
    assert_eq!((h.g.group_epoch(), h.g.assignment_epoch()), (1, 1));
    assert_eq!(h.g.state(), ConsumerGroupState::Stable);

    // Nothing changed: the answer carries no assignment.
    let r = h.ok(beat("m1", 1, Some(tps(&[("a", &[0, 1, 2, 3])]))));
    assert_eq!((r.member_epoch, r.assignment), (1, None));
    let r = h.ok(beat("m1", 1, None));
    assert_eq!((r.member_epoch, r.assignment), (1, None));
    assert_eq!(h.g.group_epoch(), 1, "a quiet heartbeat must not rebalance");
}

#[test]
fn an_empty_member_id_is_named_by_the_coordinator() {
    let mut h = Harness::new(&[("a", 1)]);
    let r = h.join("", &["a"]);
    assert_eq!(r.member_id, "generated-1");
    assert_eq!(h.assigned("generated-1"), tps(&[("a", &[0])]));
}

#[test]
fn a_second_member_gets_partitions_only_after_the_first_revokes_them() {
    let mut h = Harness::new(&[("a", 4)]);
    h.join("m1", &["a"]);
    let r = h.join("m2", &["a"]);
    assert_eq!(h.g.group_epoch(), 2);
    // m2 is at the new epoch but everything it is due is still held by m1.
    assert_eq!((r.member_epoch, r.assignment), (2, Some(Vec::new())));
    assert_eq!(h.g.state(), ConsumerGroupState::Reconciling);
    assert_eq!(h.member("m2").target_assignment, tps(&[("a", &[2, 3])]));

    // m1 is asked to revoke 2 and 3, and stays at its epoch meanwhile.
    let r = h.ok(beat("m1", 1, Some(tps(&[("a", &[0, 1, 2, 3])]))));
    assert_eq!(
        (r.member_epoch, r.assignment),
        (1, Some(tps(&[("a", &[0, 1])])))
    );
    assert_eq!(h.member("m1").state, MemberState::UnrevokedPartitions);
    let r = h.ok(beat("m2", 2, Some(Vec::new())));
    assert_eq!((r.member_epoch, r.assignment), (2, None));
    assert_eq!(h.member("m2").state, MemberState::UnreleasedPartitions);

    // Not reporting its partitions does not count as having revoked them.
    let r = h.ok(beat("m1", 1, None));
    assert_eq!((r.member_epoch, r.assignment), (1, None));
    let r = h.ok(beat("m2", 2, None));
    assert_eq!(r.assignment, None);

    // m1 confirms: it moves to epoch 2, and m2 gets the released partitions.
    let r = h.ok(beat("m1", 1, Some(tps(&[("a", &[0, 1])]))));
    assert_eq!((r.member_epoch, r.assignment), (2, None));
    let r = h.ok(beat("m2", 2, Some(Vec::new())));
    assert_eq!(
        (r.member_epoch, r.assignment),
        (2, Some(tps(&[("a", &[2, 3])])))
    );
    assert_eq!(h.g.state(), ConsumerGroupState::Stable);
}

#[test]
fn a_leaving_member_frees_its_partitions_for_the_rest() {
    let mut h = Harness::new(&[("a", 4)]);
    h.join("m1", &["a"]);
    h.join("m2", &["a"]);
    h.settle();
    let r = h.ok(leave("m2"));
    assert_eq!(
        r,
        HeartbeatResponse {
            member_id: "m2".to_string(),
            member_epoch: -1,
            heartbeat_interval_ms: 0,
            assignment: None,
        }
    );
    assert_eq!(h.g.group_epoch(), 3);
    assert_eq!(h.g.state(), ConsumerGroupState::Assigning);
    let r = h.ok(beat("m1", 2, Some(tps(&[("a", &[0, 1])]))));
    assert_eq!(
        (r.member_epoch, r.assignment),
        (3, Some(tps(&[("a", &[0, 1, 2, 3])])))
    );
    assert_eq!(h.g.state(), ConsumerGroupState::Stable);

    assert_eq!(h.send(leave("m2")), Err(ConsumerError::UnknownMemberId));
    h.ok(leave("m1"));
    assert_eq!(h.g.state(), ConsumerGroupState::Empty);
    assert_eq!(h.g.group_epoch(), 4);
}

#[test]
fn a_member_whose_session_expires_is_removed() {
    let mut h = Harness::new(&[("a", 4)]);
    let joined = h.now;
    h.join("m1", &["a"]);
    h.join("m2", &["a"]);
    h.settle();
    assert!(!h.advance(30_000));
    let m1 = h.member("m1");
    h.ok(beat("m1", m1.member_epoch, Some(m1.assignment)));
    assert_eq!(h.g.next_deadline_ms(), Some(joined + i64::from(SESSION_MS)));
    assert!(!h.advance(14_999));
    assert!(h.advance(1), "m2 stopped heartbeating 45s ago");
    assert_eq!(h.g.member_count(), 1);
    assert_eq!(h.g.group_epoch(), 3);
    let r = h.ok(beat("m1", 2, Some(tps(&[("a", &[0, 1])]))));
    assert_eq!(r.assignment, Some(tps(&[("a", &[0, 1, 2, 3])])));
    assert_eq!(
        h.send(beat("m2", 2, None)),
        Err(ConsumerError::UnknownMemberId)
    );
}

#[test]
fn a_member_that_does_not_revoke_within_its_rebalance_timeout_is_removed() {
    let mut h = Harness::new(&[("a", 4)]);
    h.join("m1", &["a"]);
    h.join("m2", &["a"]);
    h.ok(beat("m1", 1, None));
    assert_eq!(h.member("m1").state, MemberState::UnrevokedPartitions);
    let revoke_by = h.now + i64::from(REBALANCE_MS);
    assert_eq!(h.g.next_deadline_ms(), Some(revoke_by));

    // Heartbeating keeps the session, but not the revocation, alive.
    h.advance(20_000);
    h.ok(beat("m1", 1, None));
    h.ok(beat("m2", 2, Some(Vec::new())));
    assert!(h.advance(10_000));
    assert_eq!(h.g.member_count(), 1);
    let r = h.ok(beat("m2", 2, Some(Vec::new())));
    assert_eq!(
        (r.member_epoch, r.assignment),
        (3, Some(tps(&[("a", &[0, 1, 2, 3])])))
    );
    assert_eq!(
        h.send(beat("m1", 1, None)),
        Err(ConsumerError::UnknownMemberId)
    );
}

#[test]
fn epochs_other_than_the_current_or_a_lost_previous_one_are_fenced() {
    let mut h = Harness::new(&[("a", 4)]);
    h.join("m1", &["a"]);
    h.join("m2", &["a"]);
    h.settle();
    let mine = tps(&[("a", &[0, 1])]);
    assert_eq!(h.member("m1").member_epoch, 2);

    assert_eq!(
        h.send(beat("m1", 3, None)),
        Err(ConsumerError::FencedMemberEpoch)
    );
    // The response that moved m1 from 1 to 2 may have been lost: epoch 1 with partitions
    // within its assignment is answered with the current epoch.
    let r = h.ok(beat("m1", 1, Some(mine.clone())));
    assert_eq!(r.member_epoch, 2);
    // ...but only when it shows it owns nothing else.
    assert_eq!(
        h.send(beat("m1", 1, None)),
        Err(ConsumerError::FencedMemberEpoch)
    );
    let more = tps(&[("a", &[0, 1, 2])]);
    assert_eq!(
        h.send(beat("m1", 1, Some(more))),
        Err(ConsumerError::FencedMemberEpoch)
    );

    h.ok(leave("m2"));
    h.ok(beat("m1", 2, Some(mine)));
    assert_eq!(h.member("m1").member_epoch, 3);
    let r = h.send(beat("m1", 1, Some(Vec::new())));
    assert_eq!(
        r,
        Err(ConsumerError::FencedMemberEpoch),
        "1 is no longer the previous epoch"
    );
    assert_eq!(
        h.send(beat("nobody", 3, None)),
        Err(ConsumerError::UnknownMemberId)
    );

    // A fenced member rejoins with its member id and epoch 0, owning nothing.
    let epoch = h.g.group_epoch();
    let r = h.join("m1", &["a"]);
    assert_eq!(
        (r.member_epoch, r.assignment),
        (3, Some(tps(&[("a", &[0, 1, 2, 3])])))
    );
    assert_eq!(
        h.g.group_epoch(),
        epoch,
        "rejoining with the same subscription"
    );
}

#[test]
fn a_rejoining_member_gives_up_what_it_held() {
    let mut h = Harness::new(&[("a", 4)]);
    h.join("m1", &["a"]);
    h.join("m2", &["a"]);
    // m1 is revoking 2 and 3 when it rejoins: it owns nothing now, so m2 gets them at once.
    h.ok(beat("m1", 1, None));
    let r = h.join("m1", &["a"]);
    assert_eq!(
        (r.member_epoch, r.assignment),
        (2, Some(tps(&[("a", &[0, 1])])))
    );
    let r = h.ok(beat("m2", 2, Some(Vec::new())));
    assert_eq!(r.assignment, Some(tps(&[("a", &[2, 3])])));
    assert_eq!(h.g.state(), ConsumerGroupState::Stable);
}

#[test]
fn the_range_assignor_gives_contiguous_ranges_and_uniform_balances_across_topics() {
    let mut h = Harness::new(&[("a", 3), ("b", 3)]);
    for id in ["m1", "m2"] {
        h.ok(Heartbeat {
            server_assignor: Some("range".to_string()),
            ..join_hb(id, &["a", "b"])
        });
    }
    h.settle();
    assert_eq!(h.assigned("m1"), tps(&[("a", &[0, 1]), ("b", &[0, 1])]));
    assert_eq!(h.assigned("m2"), tps(&[("a", &[2]), ("b", &[2])]));
    assert_eq!(h.g.describe().assignor_name, "range");

    // Uniform (the default) counts partitions across topics and keeps what m1 already has.
    let mut h = Harness::new(&[("a", 3), ("b", 3)]);
    h.join("m1", &["a", "b"]);
    h.join("m2", &["a", "b"]);
    h.settle();
    assert_eq!(h.assigned("m1"), tps(&[("a", &[0, 1, 2])]));
    assert_eq!(h.assigned("m2"), tps(&[("b", &[0, 1, 2])]));
    assert_eq!(h.g.describe().assignor_name, "uniform");
}

#[test]
fn added_partitions_reach_a_member() {
    let mut h = Harness::new(&[("a", 2)]);
    h.join("m1", &["a"]);
    assert!(!h.metadata_changed(), "nothing changed: no rebalance");
    h.set_topic("a", 4);
    assert!(h.metadata_changed());
    assert_eq!(h.g.group_epoch(), 2);
    assert_eq!(h.g.state(), ConsumerGroupState::Assigning);
    let r = h.ok(beat("m1", 1, Some(tps(&[("a", &[0, 1])]))));
    assert_eq!(
        (r.member_epoch, r.assignment),
        (2, Some(tps(&[("a", &[0, 1, 2, 3])])))
    );
}

#[test]
fn a_topic_created_later_is_picked_up_and_a_deleted_one_revoked() {
    let mut h = Harness::new(&[("a", 1)]);
    let r = h.join("m1", &["a", "b"]);
    assert_eq!(r.assignment, Some(tps(&[("a", &[0])])));
    // The shell missed the change: the next heartbeat notices it anyway.
    h.set_topic("b", 2);
    let r = h.ok(beat("m1", 1, Some(tps(&[("a", &[0])]))));
    assert_eq!(r.member_epoch, 2);
    assert_eq!(r.assignment, Some(tps(&[("a", &[0]), ("b", &[0, 1])])));

    h.topics.remove("b");
    assert!(h.metadata_changed());
    let owned = tps(&[("a", &[0]), ("b", &[0, 1])]);
    let r = h.ok(beat("m1", 2, Some(owned)));
    assert_eq!(
        (r.member_epoch, r.assignment),
        (2, Some(tps(&[("a", &[0])])))
    );
    let r = h.ok(beat("m1", 2, Some(tps(&[("a", &[0])]))));
    assert_eq!((r.member_epoch, r.assignment), (3, None));
}

#[test]
fn a_subscription_change_rebalances() {
    let mut h = Harness::new(&[("a", 2), ("b", 2)]);
    h.join("m1", &["a"]);
    let r = h.ok(Heartbeat {
        subscribed_topic_names: Some(vec!["a".to_string(), "b".to_string()]),
        ..beat("m1", 1, None)
    });
    assert_eq!(h.g.group_epoch(), 2);
    assert_eq!(r.assignment, Some(tps(&[("a", &[0, 1]), ("b", &[0, 1])])));
    assert_eq!(
        h.g.subscribed_topics(),
        BTreeSet::from(["a".to_string(), "b".to_string()])
    );
}

#[test]
fn a_member_reporting_other_partitions_is_sent_its_assignment() {
    let mut h = Harness::new(&[("a", 2)]);
    h.join("m1", &["a"]);
    // The join response was lost; the member owns nothing yet.
    let r = h.ok(beat("m1", 1, Some(Vec::new())));
    assert_eq!(r.assignment, Some(tps(&[("a", &[0, 1])])));
    // A full request always carries the assignment.
    let r = h.ok(Heartbeat {
        rebalance_timeout_ms: REBALANCE_MS,
        subscribed_topic_names: Some(vec!["a".to_string()]),
        ..beat("m1", 1, Some(tps(&[("a", &[0, 1])])))
    });
    assert_eq!(r.assignment, Some(tps(&[("a", &[0, 1])])));
}

#[test]
fn describe_shows_members_and_targets() {
    let mut h = Harness::new(&[("a", 2)]);
    h.ok(Heartbeat {
        rack_id: Some("rack-1".to_string()),
        ..join_hb("m1", &["a"])
    });
    h.join("m2", &["a"]);
    let d = h.g.describe();
    assert_eq!(
        (d.group_id.as_str(), d.state),
        ("g", ConsumerGroupState::Reconciling)
    );
    assert_eq!((d.group_epoch, d.assignment_epoch), (2, 2));
    let m1 = &d.members[0];
    assert_eq!(m1.member_id, "m1");
    assert_eq!(m1.rack_id.as_deref(), Some("rack-1"));
    assert_eq!(
        (m1.client_id.as_str(), m1.client_host.as_str()),
        ("client-m1", "/127.0.0.1")
    );
    assert_eq!(m1.subscribed_topic_names, vec!["a".to_string()]);
    assert_eq!(m1.assignment, tps(&[("a", &[0, 1])]));
    assert_eq!(m1.target_assignment, tps(&[("a", &[0])]));
    assert_eq!(d.members[1].target_assignment, tps(&[("a", &[1])]));
    assert_eq!(d.state.as_str(), "Reconciling");
}

#[test]
fn a_restored_group_restarts_its_timers_and_carries_on() {
    let mut h = Harness::new(&[("a", 4)]);
    h.join("m1", &["a"]);
    h.join("m2", &["a"]);
    h.ok(beat("m1", 1, None));
    let later = h.now + 10_000;
    let g = ConsumerGroup::restore(h.g.snapshot(), ConsumerGroupConfig::default(), later);
    assert_eq!(g.next_deadline_ms(), Some(later + i64::from(REBALANCE_MS)));
    h.g = g;
    h.now = later;
    let r = h.ok(beat("m1", 1, Some(tps(&[("a", &[0, 1])]))));
    assert_eq!(r.member_epoch, 2);
    let r = h.ok(beat("m2", 2, Some(Vec::new())));
    assert_eq!(r.assignment, Some(tps(&[("a", &[2, 3])])));
    let json = serde_json::to_string(&h.g.snapshot()).unwrap();
    let back: ConsumerGroupSnapshot = serde_json::from_str(&json).unwrap();
    assert_eq!(back, h.g.snapshot());
}
