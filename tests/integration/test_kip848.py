"""KIP-848 consumer groups (group.protocol=consumer): server-side assignment through
ConsumerGroupHeartbeat, commits with member epochs, incremental reassignment, describe."""

from __future__ import annotations

import time

from confluent_kafka import Consumer, TopicPartition

from clients import admin_client, create_topic, produce_all, unique_topic

TIMEOUT_S = 30
PARTITIONS = 6


def consumer(bootstrap: str, group: str, name: str) -> Consumer:
    c = Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": group,
        "group.protocol": "consumer",
        "client.id": name,
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
    })
    return c


def assigned(c: Consumer) -> list[int]:
    return sorted(tp.partition for tp in c.assignment())


def test_consumer_protocol_assigns_commits_and_rebalances_incrementally(module_broker):
    b = module_broker.bootstrap
    topic = unique_topic("kip848")
    create_topic(admin_client(b), topic, partitions=PARTITIONS)
    records = [(b"k%d" % i, b"v%d" % i, []) for i in range(120)]
    produce_all(b, topic, records)
    group = unique_topic("g848")

    c1 = consumer(b, group, "m1")
    c2 = None
    try:
        c1.subscribe([topic])
        got = []
        deadline = time.monotonic() + TIMEOUT_S
        while len(got) < len(records) and time.monotonic() < deadline:
            m = c1.poll(0.2)
            if m is not None and not m.error():
                got.append((m.partition(), m.offset(), m.value()))
        assert sorted(v for _, _, v in got) == sorted(v for _, v, _ in records)
        assert assigned(c1) == list(range(PARTITIONS)), "the only member owns every partition"
        c1.commit(asynchronous=False)
        ends = {}
        for p, off, _ in got:
            ends[p] = max(ends.get(p, -1), off + 1)
        committed = c1.committed([TopicPartition(topic, p) for p in range(PARTITIONS)], timeout=10)
        assert {tp.partition: tp.offset for tp in committed} == ends

        # A second member: the coordinator moves half the partitions, and the first member
        # keeps the other half throughout (no stop-the-world revoke of everything).
        c2 = consumer(b, group, "m2")
        c2.subscribe([topic])
        seen_c1 = set()
        deadline = time.monotonic() + TIMEOUT_S
        while time.monotonic() < deadline:
            c1.poll(0.1)
            c2.poll(0.1)
            a1, a2 = assigned(c1), assigned(c2)
            seen_c1.add(len(a1))
            if len(a1) == PARTITIONS // 2 and len(a2) == PARTITIONS // 2:
                break
        a1, a2 = assigned(c1), assigned(c2)
        assert len(a1) == len(a2) == PARTITIONS // 2, (a1, a2)
        assert sorted(a1 + a2) == list(range(PARTITIONS)), (a1, a2)
        assert 0 not in seen_c1, "the first member lost every partition during the rebalance"

        # Describe through the admin API (ConsumerGroupDescribe).
        admin = admin_client(b)
        desc = admin.describe_consumer_groups([group])[group].result(TIMEOUT_S)
        assert desc.group_id == group
        members = sorted(m.client_id for m in desc.members)
        assert members == ["m1", "m2"], members
        owned = sorted(tp.partition for m in desc.members for tp in m.assignment.topic_partitions)
        assert owned == list(range(PARTITIONS))
    finally:
        c1.close()
        if c2 is not None:
            c2.close()


def test_consumer_protocol_group_survives_broker_restart(broker):
    b = broker.bootstrap
    topic = unique_topic("kip848-restart")
    create_topic(admin_client(b), topic, partitions=2)
    produce_all(b, topic, [(None, b"a%d" % i, []) for i in range(10)])
    group = unique_topic("g848r")
    c = consumer(b, group, "solo")
    try:
        c.subscribe([topic])
        n = 0
        deadline = time.monotonic() + TIMEOUT_S
        while n < 10 and time.monotonic() < deadline:
            m = c.poll(0.2)
            if m is not None and not m.error():
                n += 1
        assert n == 10
        c.commit(asynchronous=False)
    finally:
        c.close()
    broker.stop()
    broker.start()
    produce_all(b, topic, [(None, b"b%d" % i, []) for i in range(4)])
    c = consumer(b, group, "solo")
    try:
        c.subscribe([topic])
        later = []
        deadline = time.monotonic() + TIMEOUT_S
        while len(later) < 4 and time.monotonic() < deadline:
            m = c.poll(0.2)
            if m is not None and not m.error():
                later.append(m.value())
        # Resumed from the committed offsets: only the records produced after the commit.
        assert sorted(later) == sorted(b"b%d" % i for i in range(4)), later
    finally:
        c.close()
