//! Refused requests leave the group untouched; offset-commit and delete validation.

use super::*;

fn invalid(h: &mut Harness, hb: Heartbeat) {
    let before = h.g.snapshot();
    let what = format!("{hb:?}");
    match h.send(hb) {
        Err(ConsumerError::InvalidRequest(_)) => {}
        other => panic!("{what}: expected INVALID_REQUEST, got {other:?}"),
    }
    assert_eq!(h.g.snapshot(), before);
}

#[test]
fn malformed_heartbeats_are_invalid_requests() {
    let mut h = Harness::new(&[("a", 2)]);
    h.join("m1", &["a"]);
    let join = || join_hb("m2", &["a"]);
    invalid(
        &mut h,
        Heartbeat {
            subscribed_topic_regex: Some("a.*".into()),
            ..join()
        },
    );
    invalid(
        &mut h,
        Heartbeat {
            instance_id: Some(String::new()),
            ..join()
        },
    );
    invalid(
        &mut h,
        Heartbeat {
            rack_id: Some(String::new()),
            ..join()
        },
    );
    invalid(
        &mut h,
        Heartbeat {
            subscribed_topic_names: None,
            ..join()
        },
    );
    invalid(
        &mut h,
        Heartbeat {
            subscribed_topic_names: Some(Vec::new()),
            ..join()
        },
    );
    invalid(
        &mut h,
        Heartbeat {
            rebalance_timeout_ms: -1,
            ..join()
        },
    );
    invalid(
        &mut h,
        Heartbeat {
            owned: Some(tps(&[("a", &[0])])),
            ..join()
        },
    );
    // A join that does not report owned partitions at all (null) is fine, as in Kafka,
    // and an empty regex (librdkafka's "no regex") is no regex.
    let joined = h.send(Heartbeat {
        owned: None,
        subscribed_topic_regex: Some(String::new()),
        ..join()
    });
    assert!(joined.is_ok(), "{joined:?}");
    invalid(&mut h, beat("", 1, None));
    invalid(&mut h, beat("", LEAVE_GROUP_MEMBER_EPOCH, None));
    invalid(&mut h, beat("m1", -3, None));
    invalid(&mut h, beat("m1", LEAVE_GROUP_STATIC_MEMBER_EPOCH, None));
}

#[test]
fn an_unknown_assignor_is_unsupported() {
    let mut h = Harness::new(&[("a", 2)]);
    let r = h.send(Heartbeat {
        server_assignor: Some("sticky".to_string()),
        ..join_hb("m1", &["a"])
    });
    assert_eq!(r, Err(ConsumerError::UnsupportedAssignor));
    assert!(h.g.is_empty());
    assert_eq!(Assignor::from_name("uniform"), Some(Assignor::Uniform));
    assert_eq!(Assignor::from_name("range"), Some(Assignor::Range));
}

#[test]
fn a_full_group_refuses_new_members_only() {
    let config = ConsumerGroupConfig {
        max_size: 1,
        ..ConsumerGroupConfig::default()
    };
    let mut h = Harness::with_config(&[("a", 2)], config);
    h.join("m1", &["a"]);
    assert_eq!(
        h.send(join_hb("m2", &["a"])),
        Err(ConsumerError::GroupMaxSizeReached)
    );
    assert_eq!(
        h.send(join_hb("", &["a"])),
        Err(ConsumerError::GroupMaxSizeReached)
    );
    assert_eq!(h.ok(beat("m1", 1, None)).member_epoch, 1);
    h.join("m1", &["a"]);
}

#[test]
fn offset_commits_need_the_members_exact_epoch() {
    let mut h = Harness::new(&[("a", 2)]);
    assert_eq!(
        h.g.validate_offset_commit("", -1),
        Ok(()),
        "admin commit, empty group"
    );
    h.join("m1", &["a"]);
    h.join("m2", &["a"]);
    h.settle();
    assert_eq!(h.g.validate_offset_commit("m1", 2), Ok(()));
    assert_eq!(
        h.g.validate_offset_commit("m1", 1),
        Err(ConsumerError::StaleMemberEpoch)
    );
    assert_eq!(
        h.g.validate_offset_commit("m1", 3),
        Err(ConsumerError::StaleMemberEpoch)
    );
    assert_eq!(
        h.g.validate_offset_commit("zz", 2),
        Err(ConsumerError::UnknownMemberId)
    );
    assert_eq!(
        h.g.validate_offset_commit("", -1),
        Err(ConsumerError::UnknownMemberId),
        "admin commits only while the group is empty"
    );
    assert_eq!(h.g.validate_offset_fetch(None, -1), Ok(()));
    assert_eq!(h.g.validate_offset_fetch(Some("m2"), 2), Ok(()));
    assert_eq!(
        h.g.validate_offset_fetch(Some("m2"), 1),
        Err(ConsumerError::StaleMemberEpoch)
    );
}

#[test]
fn only_an_empty_group_can_be_deleted() {
    let mut h = Harness::new(&[("a", 2)]);
    h.join("m1", &["a"]);
    assert_eq!(h.g.validate_delete(), Err(ConsumerError::NonEmptyGroup));
    assert_eq!(h.g.mark_dead(), Err(ConsumerError::NonEmptyGroup));
    h.ok(Heartbeat {
        member_epoch: LEAVE_GROUP_MEMBER_EPOCH,
        ..beat("m1", 0, None)
    });
    assert_eq!(h.g.validate_delete(), Ok(()));
    h.g.mark_dead().unwrap();
    assert_eq!(h.g.state(), ConsumerGroupState::Dead);
    assert_eq!(
        h.send(join_hb("m1", &["a"])),
        Err(ConsumerError::GroupIdNotFound)
    );
    assert_eq!(h.g.validate_delete(), Err(ConsumerError::GroupIdNotFound));
}
