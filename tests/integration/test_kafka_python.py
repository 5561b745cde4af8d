"""kafka-python: an independent, pure-Python protocol implementation, and records crossing
between it and librdkafka in both directions."""

from __future__ import annotations

import pytest
from kafka import KafkaConsumer
from kafka import TopicPartition as KTP
from kafka.admin import KafkaAdminClient
from kafka.admin import NewTopic as KNewTopic

from clients import (Record, admin_client, consume_all, create_topic, kp_consume_all,
                     kp_producer, placed, produce_all, unique_topic, wait_for_partitions)

TIMEOUT_S = 30


def records_for(tag: str, n: int = 300):
    """(key, value, headers) with a few keys, distinct values, and two headers each."""
    return [(b"key-%02d" % (i % 11), b"%s-value-%04d-" % (tag.encode(), i) + b"x" * (i % 50),
             (("i", str(i).encode()), ("tag", tag.encode())))
            for i in range(n)]


def kp_produce_all(bootstrap: str, topic: str, records, **conf) -> list[Record]:
    p = kp_producer(bootstrap, **conf)
    try:
        futures = [p.send(topic, key=k, value=v, headers=list(h)) for k, v, h in records]
        p.flush(timeout=TIMEOUT_S)
        out = []
        for (k, v, h), f in zip(records, futures):
            md = f.get(timeout=TIMEOUT_S)
            out.append(Record(md.partition, md.offset, k, v, tuple(h), md.timestamp))
    finally:
        p.close(timeout=10)
    return sorted(out, key=lambda r: (r.partition, r.offset))


def assert_dense(records: list[Record]):
    by_p: dict[int, list[int]] = {}
    for r in records:
        by_p.setdefault(r.partition, []).append(r.offset)
    for p, offsets in by_p.items():
        assert offsets == list(range(len(offsets))), f"partition {p} offsets {offsets[:10]}..."


@pytest.mark.parametrize("compression", [None, "gzip"])
def test_round_trip_with_topic_from_admin(module_broker, compression):
    topic = unique_topic(f"kp-{compression or 'none'}")
    admin = KafkaAdminClient(bootstrap_servers=module_broker.bootstrap,
                             request_timeout_ms=TIMEOUT_S * 1000)
    try:
        admin.create_topics([KNewTopic(topic, num_partitions=3, replication_factor=1)],
                            timeout_ms=TIMEOUT_S * 1000)
    finally:
        admin.close()
    wait_for_partitions(admin_client(module_broker.bootstrap), topic, 3)

    records = records_for("kp")
    placed = kp_produce_all(module_broker.bootstrap, topic, records, compression_type=compression)
    assert_dense(placed)
    assert {r.partition for r in placed} == {0, 1, 2}

    got = kp_consume_all(module_broker.bootstrap, topic, range(3), expected=len(records))
    assert [r.content() for r in got] == [r.content() for r in placed]
    assert [r.timestamp for r in got] == [r.timestamp for r in placed]


def test_list_offsets(module_broker):
    topic = unique_topic("kp-offsets")
    records = [(b"k", b"v%d" % i, (), 1_600_000_000_000 + i * 10) for i in range(20)]
    create_topic(admin_client(module_broker.bootstrap), topic, partitions=1)
    produce_all(module_broker.bootstrap, topic, records, partition=0, flush_every=7)

    c = KafkaConsumer(bootstrap_servers=module_broker.bootstrap, group_id=None,
                      enable_auto_commit=False)
    try:
        tp = KTP(topic, 0)
        assert c.beginning_offsets([tp]) == {tp: 0}
        assert c.end_offsets([tp]) == {tp: 20}
        found = c.offsets_for_times({tp: 1_600_000_000_000 + 75})[tp]
        assert (found.offset, found.timestamp) == (8, 1_600_000_000_000 + 80)
        assert c.offsets_for_times({tp: 1_700_000_000_000})[tp] is None
    finally:
        c.close()


def test_auto_created_topic(module_broker):
    topic = unique_topic("kp-auto")
    records = records_for("auto", 50)
    placed = kp_produce_all(module_broker.bootstrap, topic, records)
    assert_dense(placed)
    got = kp_consume_all(module_broker.bootstrap, topic, range(3), expected=len(records))
    assert [r.content() for r in got] == [r.content() for r in placed]


@pytest.mark.parametrize("compression", ["none", "gzip"])
def test_confluent_produces_kafka_python_consumes(module_broker, compression):
    topic = unique_topic(f"x-cf-kp-{compression}")
    create_topic(admin_client(module_broker.bootstrap), topic, partitions=3)
    records = records_for("cf")
    expected = placed(records, produce_all(module_broker.bootstrap, topic, records,
                                           **{"compression.type": compression}))

    got = kp_consume_all(module_broker.bootstrap, topic, range(3), expected=len(records))
    assert [r.content() for r in got] == [r.content() for r in expected]


def test_kafka_python_produces_confluent_consumes(module_broker):
    topic = unique_topic("x-kp-cf")
    create_topic(admin_client(module_broker.bootstrap), topic, partitions=3)
    records = records_for("kp2")
    placed = kp_produce_all(module_broker.bootstrap, topic, records, compression_type="gzip")
    got = consume_all(module_broker.bootstrap, topic, range(3), expected=len(records))
    assert [r.content() for r in got] == [r.content() for r in placed]
