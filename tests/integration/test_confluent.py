"""confluent-kafka (librdkafka 2.x): produce/consume, offsets by time, and the admin APIs."""

from __future__ import annotations

import random
import time
from collections import defaultdict

import pytest
from confluent_kafka import (TIMESTAMP_CREATE_TIME, Consumer, KafkaError, KafkaException,
                             TopicPartition)
from confluent_kafka.admin import (AlterConfigOpType, ConfigEntry, ConfigResource, ConfigSource,
                                   NewPartitions, NewTopic, OffsetSpec, ResourceType)

from clients import (admin_client, consume_all, create_topic, placed, produce_all, producer,
                     topic_partitions, unique_topic, wait_for_partitions, wait_until,
                     watermarks)

TIMEOUT_S = 30


@pytest.fixture(scope="module")
def admin(module_broker):
    return admin_client(module_broker.bootstrap)


def error_code(excinfo) -> int:
    err = excinfo.value.args[0]
    assert isinstance(err, KafkaError), repr(excinfo.value)
    return err.code()


def describe(admin, topic: str) -> dict[str, ConfigEntry]:
    res = ConfigResource(ResourceType.TOPIC, topic)
    return admin.describe_configs([res], request_timeout=TIMEOUT_S)[res].result(TIMEOUT_S)


def source(entry: ConfigEntry) -> ConfigSource:
    # The C layer hands back a plain int for the source.
    return ConfigSource(getattr(entry.source, "value", entry.source))


def alter(admin, topic: str, *entries: ConfigEntry):
    res = ConfigResource(ResourceType.TOPIC, topic, incremental_configs=list(entries))
    return admin.incremental_alter_configs([res], request_timeout=TIMEOUT_S)[res].result(TIMEOUT_S)


# ---- produce and consume ----------------------------------------------------------------------


def test_acks_all_keyed_round_trip_keeps_per_key_order(module_broker, admin):
    topic = unique_topic("cf-keyed")
    create_topic(admin, topic, partitions=3)
    rng = random.Random(1)
    keys = [f"user-{k:02d}".encode() for k in range(12)]
    next_seq: dict[bytes, int] = defaultdict(int)
    records = []
    for i in range(600):
        key = rng.choice(keys)
        value = b"%s#%d" % (key, next_seq[key])
        next_seq[key] += 1
        records.append((key, value, [("i", str(i).encode()), ("origin", b"confluent")]))

    expected = placed(records, produce_all(module_broker.bootstrap, topic, records))

    got = consume_all(module_broker.bootstrap, topic, range(3), expected=len(records))
    assert [r.content() for r in got] == [r.content() for r in expected]
    assert [r.timestamp for r in got] == [r.timestamp for r in expected]

    by_partition = defaultdict(list)
    by_key = defaultdict(list)
    for r in got:
        by_partition[r.partition].append(r.offset)
        by_key[r.key].append((r.partition, int(r.value.split(b"#")[1])))
    for p, offsets in by_partition.items():
        assert offsets == list(range(len(offsets))), f"offsets of partition {p} have gaps"
    for key, seen in by_key.items():
        assert len({p for p, _ in seen}) == 1, f"{key} spread over partitions"
        assert [s for _, s in seen] == list(range(next_seq[key])), f"{key} out of order"


BASE_TS = 1_700_000_000_000
# Ten records a second apart, except offset 6, which carries the topic's largest timestamp.
TIMESTAMPS = [BASE_TS + i * 1000 for i in range(10)]
TIMESTAMPS[6] = BASE_TS + 100_000


@pytest.fixture(scope="module")
def ts_topic(module_broker, admin):
    topic = unique_topic("cf-times")
    create_topic(admin, topic, partitions=1)
    records = [(b"k%d" % i, b"v%d" % i, [], ts) for i, ts in enumerate(TIMESTAMPS)]
    # Two flushes: two batches, so time lookups must look inside and across batches.
    produce_all(module_broker.bootstrap, topic, records, partition=0, flush_every=5)
    return topic


def test_explicit_timestamps_round_trip(module_broker, ts_topic):
    c = Consumer({"bootstrap.servers": module_broker.bootstrap, "group.id": "strata-it-unused",
                  "enable.auto.commit": False, "enable.partition.eof": True})
    try:
        c.assign([TopicPartition(ts_topic, 0, 0)])
        seen = []
        deadline = time.monotonic() + TIMEOUT_S
        while len(seen) < len(TIMESTAMPS) and time.monotonic() < deadline:
            m = c.poll(0.2)
            if m is None or m.error():
                continue
            seen.append((m.offset(), m.value(), m.timestamp()))
    finally:
        c.close()
    assert seen == [(i, b"v%d" % i, (TIMESTAMP_CREATE_TIME, ts))
                    for i, ts in enumerate(TIMESTAMPS)]


def test_watermarks_and_offsets_for_times(module_broker, ts_topic):
    assert watermarks(module_broker.bootstrap, ts_topic, 0) == (0, 10)
    c = Consumer({"bootstrap.servers": module_broker.bootstrap, "group.id": "strata-it-unused",
                  "enable.auto.commit": False})
    try:
        def lookup(ts):
            [tp] = c.offsets_for_times([TopicPartition(ts_topic, 0, ts)], timeout=TIMEOUT_S)
            assert tp.error is None, tp.error
            return tp.offset

        assert lookup(BASE_TS - 5000) == 0
        assert lookup(BASE_TS) == 0
        assert lookup(BASE_TS + 3000) == 3  # exact hit, first batch
        assert lookup(BASE_TS + 3500) == 4  # between records: the next one
        assert lookup(BASE_TS + 5000) == 5  # first record of the second batch
        assert lookup(BASE_TS + 50_000) == 6  # only offset 6 is that late
        assert lookup(BASE_TS + 200_000) == -1  # nothing that late: end
    finally:
        c.close()


def list_offsets(admin, topic: str, spec):
    tp = TopicPartition(topic, 0)
    return admin.list_offsets({tp: spec}, request_timeout=TIMEOUT_S)[tp].result(TIMEOUT_S)


def test_admin_list_offsets_earliest_latest_for_timestamp(admin, ts_topic):
    assert list_offsets(admin, ts_topic, OffsetSpec.earliest()).offset == 0
    assert list_offsets(admin, ts_topic, OffsetSpec.latest()).offset == 10
    hit = list_offsets(admin, ts_topic, OffsetSpec.for_timestamp(BASE_TS + 3500))
    assert (hit.offset, hit.timestamp) == (4, TIMESTAMPS[4])
    # Kafka answers with the first record *in offset order* whose timestamp is at or after
    # the target: offset 6 (timestamp +100 s) comes before offset 8 (+8 s).
    hit = list_offsets(admin, ts_topic, OffsetSpec.for_timestamp(BASE_TS + 8000))
    assert (hit.offset, hit.timestamp) == (6, TIMESTAMPS[6])


def test_admin_list_offsets_max_timestamp(admin, ts_topic):
    hit = list_offsets(admin, ts_topic, OffsetSpec.max_timestamp())
    assert (hit.offset, hit.timestamp) == (6, TIMESTAMPS[6])


def test_message_larger_than_topic_max_is_rejected(module_broker, admin):
    topic = unique_topic("cf-maxbytes")
    create_topic(admin, topic, partitions=1, config={"max.message.bytes": "2000"})
    p = producer(module_broker.bootstrap, **{"linger.ms": 0})
    results = []
    p.produce(topic, value=b"x" * 10_000, partition=0,
              on_delivery=lambda err, msg: results.append(err))
    # Flush in between: in one batch both records would be refused together, as in Kafka.
    p.flush(TIMEOUT_S)
    p.produce(topic, value=b"small", partition=0,
              on_delivery=lambda err, msg: results.append(err))
    assert p.flush(TIMEOUT_S) == 0
    assert results[0] is not None and results[0].code() == KafkaError.MSG_SIZE_TOO_LARGE, results
    assert results[1] is None, results
    got = consume_all(module_broker.bootstrap, topic, [0], expected=1)
    assert [(r.offset, r.value) for r in got] == [(0, b"small")]


# ---- topics -----------------------------------------------------------------------------------


def test_create_topics_validate_only_creates_nothing(admin):
    topic = unique_topic("cf-validate")
    fs = admin.create_topics([NewTopic(topic, num_partitions=4, replication_factor=1)],
                             validate_only=True, request_timeout=TIMEOUT_S)
    assert fs[topic].result(TIMEOUT_S) is None
    time.sleep(0.5)
    assert topic_partitions(admin, topic) is None
    # And it can really be created afterwards.
    create_topic(admin, topic, partitions=4)
    assert topic_partitions(admin, topic) == [0, 1, 2, 3]


def test_create_existing_topic_fails(admin):
    topic = unique_topic("cf-exists")
    create_topic(admin, topic, partitions=2)
    fs = admin.create_topics([NewTopic(topic, num_partitions=2, replication_factor=1)],
                             request_timeout=TIMEOUT_S)
    with pytest.raises(KafkaException) as ei:
        fs[topic].result(TIMEOUT_S)
    assert error_code(ei) == KafkaError.TOPIC_ALREADY_EXISTS
    assert topic_partitions(admin, topic) == [0, 1]


@pytest.mark.parametrize("name", ["bad topic!", "..", ".", "x" * 250, "slash/name", "colon:name"])
def test_create_topic_with_invalid_name_fails(admin, name):
    fs = admin.create_topics([NewTopic(name, num_partitions=1, replication_factor=1)],
                             request_timeout=TIMEOUT_S)
    with pytest.raises(KafkaException) as ei:
        fs[name].result(TIMEOUT_S)
    assert error_code(ei) == KafkaError.TOPIC_EXCEPTION
    assert topic_partitions(admin, name) is None


def test_longest_legal_topic_name(module_broker, admin):
    topic = "L" * 240 + unique_topic("n")[-9:]  # 249 characters
    assert len(topic) == 249
    create_topic(admin, topic, partitions=1)
    produce_all(module_broker.bootstrap, topic, [(b"k", b"v", [])], partition=0)
    got = consume_all(module_broker.bootstrap, topic, [0], expected=1)
    assert [(r.offset, r.key, r.value) for r in got] == [(0, b"k", b"v")]


def test_delete_topics(module_broker, admin):
    topic = unique_topic("cf-delete")
    create_topic(admin, topic, partitions=2)
    produce_all(module_broker.bootstrap, topic, [(b"k", b"before-delete", [])], partition=1)

    fs = admin.delete_topics([topic], request_timeout=TIMEOUT_S, operation_timeout=TIMEOUT_S)
    assert fs[topic].result(TIMEOUT_S) is None
    wait_until(lambda: topic_partitions(admin, topic) is None, TIMEOUT_S,
               what=f"{topic} to disappear from metadata")

    # Recreated under the same name, it starts empty.
    create_topic(admin, topic, partitions=2)
    assert watermarks(module_broker.bootstrap, topic, 1) == (0, 0)


def test_delete_unknown_topic_fails(admin):
    topic = unique_topic("cf-never-existed")
    fs = admin.delete_topics([topic], request_timeout=TIMEOUT_S)
    with pytest.raises(KafkaException) as ei:
        fs[topic].result(TIMEOUT_S)
    assert error_code(ei) == KafkaError.UNKNOWN_TOPIC_OR_PART


def test_create_partitions(module_broker, admin):
    topic = unique_topic("cf-grow")
    create_topic(admin, topic, partitions=3)
    for p in range(3):
        produce_all(module_broker.bootstrap, topic, [(b"k", b"old-p%d" % p, [])], partition=p)

    fs = admin.create_partitions([NewPartitions(topic, 5)], request_timeout=TIMEOUT_S)
    assert fs[topic].result(TIMEOUT_S) is None
    wait_for_partitions(admin, topic, 5)

    for p in (3, 4):
        produce_all(module_broker.bootstrap, topic, [(b"k", b"new-p%d" % p, [])], partition=p)
    got = consume_all(module_broker.bootstrap, topic, range(5), expected=5)
    assert [(r.partition, r.offset, r.value) for r in got] == [
        (0, 0, b"old-p0"), (1, 0, b"old-p1"), (2, 0, b"old-p2"),
        (3, 0, b"new-p3"), (4, 0, b"new-p4")]

    fs = admin.create_partitions([NewPartitions(topic, 2)], request_timeout=TIMEOUT_S)
    with pytest.raises(KafkaException) as ei:
        fs[topic].result(TIMEOUT_S)
    assert error_code(ei) == KafkaError.INVALID_PARTITIONS
    assert topic_partitions(admin, topic) == [0, 1, 2, 3, 4]


# ---- configs ----------------------------------------------------------------------------------


def test_describe_configs(admin):
    plain = unique_topic("cf-cfg-plain")
    create_topic(admin, plain, partitions=1)
    tuned = unique_topic("cf-cfg-tuned")
    create_topic(admin, tuned, partitions=1,
                 config={"retention.ms": "86400000", "max.message.bytes": "2000000"})

    d = describe(admin, plain)
    for name in ("retention.ms", "cleanup.policy", "max.message.bytes", "retention.bytes",
                 "segment.bytes"):
        assert name in d, f"{name} missing from {sorted(d)}"
    assert d["cleanup.policy"].value == "delete"
    assert int(d["retention.ms"].value) != 86400000
    assert int(d["max.message.bytes"].value) > 0
    assert source(d["retention.ms"]) != ConfigSource.DYNAMIC_TOPIC_CONFIG

    t = describe(admin, tuned)
    assert t["retention.ms"].value == "86400000"
    assert source(t["retention.ms"]) == ConfigSource.DYNAMIC_TOPIC_CONFIG
    assert not t["retention.ms"].is_default
    assert t["max.message.bytes"].value == "2000000"
    assert t["cleanup.policy"].value == "delete"


def test_incremental_alter_configs(admin):
    plain = unique_topic("cf-alter-ref")
    create_topic(admin, plain, partitions=1)
    default_retention = describe(admin, plain)["retention.ms"].value

    topic = unique_topic("cf-alter")
    create_topic(admin, topic, partitions=1)
    alter(admin, topic,
          ConfigEntry("retention.ms", "123456", incremental_operation=AlterConfigOpType.SET),
          ConfigEntry("retention.bytes", "987654321",
                      incremental_operation=AlterConfigOpType.SET))
    d = describe(admin, topic)
    assert d["retention.ms"].value == "123456"
    assert source(d["retention.ms"]) == ConfigSource.DYNAMIC_TOPIC_CONFIG
    assert d["retention.bytes"].value == "987654321"

    # DELETE returns the key to its default; the other override stays.
    alter(admin, topic, ConfigEntry("retention.ms", None,
                                    incremental_operation=AlterConfigOpType.DELETE))
    d = describe(admin, topic)
    assert d["retention.ms"].value == default_retention
    assert source(d["retention.ms"]) != ConfigSource.DYNAMIC_TOPIC_CONFIG
    assert d["retention.bytes"].value == "987654321"


@pytest.mark.parametrize("name,value", [("no.such.config", "1"), ("retention.ms", "soon")])
def test_incremental_alter_configs_rejects_bad_entries(admin, name, value):
    topic = unique_topic("cf-alter-bad")
    create_topic(admin, topic, partitions=1)
    before = describe(admin, topic)["retention.ms"].value
    with pytest.raises(KafkaException) as ei:
        alter(admin, topic, ConfigEntry(name, value, incremental_operation=AlterConfigOpType.SET))
    assert error_code(ei) == KafkaError.INVALID_CONFIG
    assert describe(admin, topic)["retention.ms"].value == before


# ---- records and cluster ----------------------------------------------------------------------


def test_delete_records_moves_log_start(module_broker, admin):
    topic = unique_topic("cf-delrec")
    create_topic(admin, topic, partitions=1)
    # One flush: the ten records share a batch, so the new start is inside it.
    produce_all(module_broker.bootstrap, topic,
                [(b"k%d" % i, b"v%d" % i, []) for i in range(10)], partition=0)

    tp = TopicPartition(topic, 0, 4)
    res = admin.delete_records([tp], request_timeout=TIMEOUT_S)
    [fut] = res.values()
    assert fut.result(TIMEOUT_S).low_watermark == 4

    assert watermarks(module_broker.bootstrap, topic, 0) == (4, 10)
    assert list_offsets(admin, topic, OffsetSpec.earliest()).offset == 4
    got = consume_all(module_broker.bootstrap, topic, [0], expected=6)
    assert [(r.offset, r.key, r.value) for r in got] == [
        (i, b"k%d" % i, b"v%d" % i) for i in range(4, 10)]

    res = admin.delete_records([TopicPartition(topic, 0, 11)], request_timeout=TIMEOUT_S)
    [fut] = res.values()
    with pytest.raises(KafkaException) as ei:
        fut.result(TIMEOUT_S)
    assert error_code(ei) == KafkaError.OFFSET_OUT_OF_RANGE
    assert watermarks(module_broker.bootstrap, topic, 0) == (4, 10)


def test_describe_cluster(module_broker, admin):
    desc = admin.describe_cluster(request_timeout=TIMEOUT_S).result(TIMEOUT_S)
    assert isinstance(desc.cluster_id, str) and desc.cluster_id
    assert len(desc.nodes) == 1
    node = desc.nodes[0]
    assert (node.host, node.port) == ("127.0.0.1", module_broker.port)
    assert desc.controller is not None and desc.controller.id == node.id
