"""Group administration as operators do it: list (with state filters), describe, delete
groups, alter and delete committed offsets, and consumer lag from ListOffsets minus the
committed offset. The broker refuses what Kafka refuses while a group has active members.

confluent-kafka's AdminClient has no OffsetDelete; kafka-python's admin client sends it.
"""

from __future__ import annotations

from confluent_kafka import (OFFSET_INVALID, ConsumerGroupState, ConsumerGroupTopicPartitions,
                             KafkaException, TopicPartition)

from clients import admin_client, create_topic, unique_topic, wait_until
from group_clients import (GROUP_ID_NOT_FOUND, NON_EMPTY_GROUP, UNKNOWN_MEMBER_ID,  # noqa: F401
                           commits_reach, committed, describe, fast_broker, first_offsets,
                           kafka_error_code, latest_offsets, listed_groups, members,
                           produce_to_partitions, read_all)

TIMEOUT_S = 30


def alter_offsets(admin, group: str, offsets: dict[tuple[str, int], int]) -> dict:
    """AlterConsumerGroupOffsets; returns the Kafka error code per (topic, partition)."""
    req = ConsumerGroupTopicPartitions(
        group, [TopicPartition(t, p, o) for (t, p), o in sorted(offsets.items())])
    fut = admin.alter_consumer_group_offsets([req], request_timeout=TIMEOUT_S)[group]
    try:
        res = fut.result(TIMEOUT_S)
    except KafkaException as e:
        code = kafka_error_code(e)
        return {tp: code for tp in offsets}
    return {(tp.topic, tp.partition): (tp.error.code() if tp.error is not None else 0)
            for tp in res.topic_partitions}


def delete_group(admin, group: str) -> int:
    """DeleteGroups for one group; 0 or the Kafka error code."""
    try:
        admin.delete_consumer_groups([group], request_timeout=TIMEOUT_S)[group].result(TIMEOUT_S)
        return 0
    except KafkaException as e:
        return kafka_error_code(e)


def delete_offsets(bootstrap: str, group: str, partitions: list[tuple[str, int]]) -> dict:
    """OffsetDelete through kafka-python; the error class name per (topic, partition)."""
    from kafka import TopicPartition as KTP
    from kafka.admin import KafkaAdminClient
    kadmin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=TIMEOUT_S * 1000)
    try:
        res = kadmin.delete_group_offsets(group, [KTP(t, p) for t, p in partitions])
    finally:
        kadmin.close()
    return {(tp.topic, tp.partition): err.__name__ for tp, err in res.items()}


def test_admin_lists_describes_and_deletes_groups(fast_broker, members):
    bootstrap = fast_broker.bootstrap
    admin = admin_client(bootstrap)
    topic = unique_topic("adm-groups")
    create_topic(admin, topic, partitions=3)
    placed = produce_to_partitions(bootstrap, topic, range(3), 10, "adm")
    active, idle = unique_topic("g-active"), unique_topic("g-idle")

    # `idle` read everything, committed and left: an Empty group that still has offsets.
    m_idle = members.start(bootstrap, idle, [topic], "idle-member", batch=10, max_records=30)
    assert m_idle.wait_exit(TIMEOUT_S) == 0, m_idle.diagnostics()
    m = members.start(bootstrap, active, [topic], "active-member", batch=10)
    read_all([m], placed)
    m.wait_for(commits_reach(m, topic, {p: 10 for p in range(3)}), TIMEOUT_S, "commits")

    everyone = listed_groups(admin)
    assert {active, idle} <= set(everyone), sorted(everyone)
    assert everyone[active].state == ConsumerGroupState.STABLE
    assert everyone[idle].state == ConsumerGroupState.EMPTY
    assert everyone[active].is_simple_consumer_group is False
    stable = listed_groups(admin, {ConsumerGroupState.STABLE})
    empty = listed_groups(admin, {ConsumerGroupState.EMPTY})
    assert active in stable and idle not in stable, sorted(stable)
    assert idle in empty and active not in empty, sorted(empty)
    assert {g.state for g in stable.values()} == {ConsumerGroupState.STABLE}
    assert {g.state for g in empty.values()} == {ConsumerGroupState.EMPTY}

    node_id = admin.describe_cluster(request_timeout=TIMEOUT_S).result(TIMEOUT_S).nodes[0].id
    desc = describe(admin, active)
    assert (desc.group_id, desc.state, desc.partition_assignor, desc.is_simple_consumer_group) \
        == (active, ConsumerGroupState.STABLE, "range", False)
    assert desc.coordinator.id == node_id
    [md] = desc.members
    assert md.client_id == "active-member"
    assert md.member_id == m.of("assign")[-1]["member"]
    assert md.host.lstrip("/") == "127.0.0.1", md.host
    assert md.group_instance_id is None
    assert sorted((tp.topic, tp.partition) for tp in md.assignment.topic_partitions) == [
        (topic, p) for p in range(3)]
    d_idle = describe(admin, idle)
    assert (d_idle.group_id, d_idle.state, d_idle.members) == (idle, ConsumerGroupState.EMPTY, [])

    # Deleting a group with members is refused and changes nothing.
    assert delete_group(admin, active) == NON_EMPTY_GROUP
    assert describe(admin, active).state == ConsumerGroupState.STABLE
    assert committed(admin, active, topic, range(3)) == {p: 10 for p in range(3)}
    assert delete_group(admin, unique_topic("g-never")) == GROUP_ID_NOT_FOUND

    # An empty group goes, with its offsets.
    assert committed(admin, idle, topic, range(3)) == {p: 10 for p in range(3)}
    assert delete_group(admin, idle) == 0
    assert idle not in listed_groups(admin)
    assert committed(admin, idle, topic, range(3)) == {p: OFFSET_INVALID for p in range(3)}

    # Once its member leaves, the other one can be deleted too.
    m.terminate()
    wait_until(lambda: active in listed_groups(admin, {ConsumerGroupState.EMPTY}), TIMEOUT_S,
               what=f"{active} listed as Empty")
    assert delete_group(admin, active) == 0
    assert active not in listed_groups(admin)


def test_admin_alters_and_deletes_offsets_and_computes_lag(fast_broker, members):
    bootstrap = fast_broker.bootstrap
    admin = admin_client(bootstrap)
    topic, other = unique_topic("adm-offsets"), unique_topic("adm-other")
    create_topic(admin, topic, partitions=3)
    create_topic(admin, other, partitions=1)
    placed = produce_to_partitions(bootstrap, topic, range(3), 20, "off")
    produce_to_partitions(bootstrap, other, [0], 10, "other")
    group = unique_topic("g-offsets")

    # Altering offsets of a group that does not exist creates it, Empty, with those offsets.
    assert alter_offsets(admin, group, {(topic, 0): 2, (topic, 1): 5, (topic, 2): 20,
                                        (other, 0): 7}) == {
        (topic, 0): 0, (topic, 1): 0, (topic, 2): 0, (other, 0): 0}
    assert committed(admin, group, topic, range(3)) == {0: 2, 1: 5, 2: 20}
    assert committed(admin, group, other, [0]) == {0: 7}
    assert listed_groups(admin)[group].state == ConsumerGroupState.EMPTY
    latest = latest_offsets(admin, topic, range(3))
    assert latest == {0: 20, 1: 20, 2: 20}
    lag = {p: latest[p] - o for p, o in committed(admin, group, topic, range(3)).items()}
    assert lag == {0: 18, 1: 15, 2: 0}

    # A member starts exactly at the altered offsets.
    m = members.start(bootstrap, group, [topic], "offsets-member", batch=6)
    read_all([m], {0: placed[0][2:], 1: placed[1][5:]})
    m.wait_for(commits_reach(m, topic, {0: 20, 1: 20}), TIMEOUT_S, "commits")
    assert first_offsets(m.records()) == {0: 2, 1: 5}
    assert len(m.records()) == 18 + 15

    # While it is active: altering is for members only, and the offsets of a topic the group
    # subscribes to cannot be deleted; those of another topic can.
    assert alter_offsets(admin, group, {(topic, 0): 0}) == {(topic, 0): UNKNOWN_MEMBER_ID}
    assert delete_offsets(bootstrap, group, [(topic, 0), (other, 0)]) == {
        (topic, 0): "GroupSubscribedToTopicError", (other, 0): "NoError"}
    assert committed(admin, group, topic, range(3)) == {0: 20, 1: 20, 2: 20}
    assert committed(admin, group, other, [0]) == {0: OFFSET_INVALID}
    assert describe(admin, group).state == ConsumerGroupState.STABLE

    # Lag after it leaves and more records arrive: exactly what was produced since.
    m.terminate()
    produce_to_partitions(bootstrap, topic, [0], 3, "lag0")
    produce_to_partitions(bootstrap, topic, [1], 4, "lag1")
    produce_to_partitions(bootstrap, topic, [2], 5, "lag2")
    latest = latest_offsets(admin, topic, range(3))
    lag = {p: latest[p] - o for p, o in committed(admin, group, topic, range(3)).items()}
    assert lag == {0: 3, 1: 4, 2: 5}

    # Empty now: the subscribed topic's offsets can be deleted and altered.
    assert delete_offsets(bootstrap, group, [(topic, 1)]) == {(topic, 1): "NoError"}
    assert committed(admin, group, topic, range(3)) == {0: 20, 1: OFFSET_INVALID, 2: 20}
    assert alter_offsets(admin, group, {(topic, 2): 21}) == {(topic, 2): 0}
    assert committed(admin, group, topic, range(3)) == {0: 20, 1: OFFSET_INVALID, 2: 21}
