"""Graceful restart: SIGTERM exits 0 promptly, and everything comes back from the data dir."""

from __future__ import annotations

from confluent_kafka import TopicPartition
from confluent_kafka.admin import (AlterConfigOpType, ConfigEntry, ConfigResource, NewPartitions,
                                   ResourceType)

from clients import (Record, admin_client, consume_all, create_topic, placed, produce_all,
                     topic_partitions, unique_topic, wait_for_partitions, watermarks)

TIMEOUT_S = 30
STOP_BUDGET_S = 5.0


def records_for(tag: str, n: int):
    return [(b"k%03d" % (i % 37), b"%s-%05d" % (tag.encode(), i), [("n", str(i).encode())])
            for i in range(n)]


def produce_and_place(bootstrap, topic, records) -> list[Record]:
    return placed(records, produce_all(bootstrap, topic, records))


def contents(records):
    return sorted(r.content() for r in records)


def cluster_identity(bootstrap):
    # Keep the client referenced until the result arrives: a collected client cancels it.
    admin = admin_client(bootstrap)
    desc = admin.describe_cluster(request_timeout=TIMEOUT_S).result(TIMEOUT_S)
    return desc.cluster_id, [(n.id, n.host, n.port) for n in desc.nodes]


def test_restart_keeps_topics_records_and_identity(broker):
    admin = admin_client(broker.bootstrap)
    a, b = unique_topic("rs-a"), unique_topic("rs-b")
    create_topic(admin, a, partitions=3)
    create_topic(admin, b, partitions=2)
    # Grown after creation, so the new count must persist too.
    admin.create_partitions([NewPartitions(b, 5)])[b].result(TIMEOUT_S)
    wait_for_partitions(admin, b, 5)
    gone = unique_topic("rs-gone")
    create_topic(admin, gone, partitions=1)
    admin.delete_topics([gone])[gone].result(TIMEOUT_S)
    res = ConfigResource(ResourceType.TOPIC, a, incremental_configs=[
        ConfigEntry("retention.ms", "7200000", incremental_operation=AlterConfigOpType.SET)])
    admin.incremental_alter_configs([res])[res].result(TIMEOUT_S)

    placed_a = produce_and_place(broker.bootstrap, a, records_for("a", 400))
    placed_b = produce_and_place(broker.bootstrap, b, records_for("b", 250))
    identity = cluster_identity(broker.bootstrap)
    del admin

    took = broker.stop()
    assert took < STOP_BUDGET_S, f"SIGTERM took {took:.1f} s"
    broker.start()

    admin = admin_client(broker.bootstrap)
    assert topic_partitions(admin, a) == [0, 1, 2]
    assert topic_partitions(admin, b) == [0, 1, 2, 3, 4]
    assert topic_partitions(admin, gone) is None
    desc = admin.describe_configs([ConfigResource(ResourceType.TOPIC, a)])
    [cfg] = desc.values()
    assert cfg.result(TIMEOUT_S)["retention.ms"].value == "7200000"
    assert cluster_identity(broker.bootstrap) == identity

    got_a = consume_all(broker.bootstrap, a, range(3), expected=400)
    assert [r.content() for r in got_a] == contents(placed_a)
    got_b = consume_all(broker.bootstrap, b, range(5), expected=250)
    assert [r.content() for r in got_b] == contents(placed_b)

    # Appends continue at the old log end offsets, and survive a second restart.
    ends = {p: watermarks(broker.bootstrap, a, p)[1] for p in range(3)}
    more = produce_and_place(broker.bootstrap, a, records_for("a2", 150))
    for r in more:
        assert r.offset >= ends[r.partition]
    broker.restart()
    got_a = consume_all(broker.bootstrap, a, range(3), expected=550)
    assert [r.content() for r in got_a] == contents(placed_a + more)


def test_restart_right_after_create_and_delete_records(broker):
    admin = admin_client(broker.bootstrap)
    topic = unique_topic("rs-start")
    create_topic(admin, topic, partitions=1)
    placed = produce_and_place(broker.bootstrap, topic, records_for("s", 30))
    [fut] = admin.delete_records([TopicPartition(topic, 0, 12)]).values()
    assert fut.result(TIMEOUT_S).low_watermark == 12
    empty = unique_topic("rs-empty")
    create_topic(admin, empty, partitions=4)

    broker.restart()

    assert watermarks(broker.bootstrap, topic, 0) == (12, 30)
    got = consume_all(broker.bootstrap, topic, [0], expected=18)
    assert [r.content() for r in got] == contents(placed)[12:]
    assert topic_partitions(admin_client(broker.bootstrap), empty) == [0, 1, 2, 3]
    for p in range(4):
        assert watermarks(broker.bootstrap, empty, p) == (0, 0)
