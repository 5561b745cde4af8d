"""Topic-level log policies seen from outside: segment rolling, time and size retention,
LogAppendTime stamping, acks=0, relaxed flushing, and DescribeLogDirs sizes.

Segment files are read straight from the data dir (`<data>/logs/<topic>-<p>/<base>.log`) and
parsed just far enough to list their record batches, so a test can say exactly which offsets
each segment holds and check what clients see against it.
"""

from __future__ import annotations

import struct
import time
from dataclasses import dataclass
from pathlib import Path

from confluent_kafka import (TIMESTAMP_LOG_APPEND_TIME, Consumer, KafkaError, TopicPartition)
from confluent_kafka.admin import AlterConfigOpType, ConfigEntry, ConfigResource, ResourceType
from kafka import KafkaConsumer
from kafka import TopicPartition as KTP
from kafka.admin import KafkaAdminClient
from kafka.errors import OffsetOutOfRangeError

import wire
from clients import (DeliveryLog, admin_client, consume_all, create_topic, kp_consume_all,
                     placed, produce_all, producer, unique_topic, wait_until, watermarks)

TIMEOUT_S = 30
SEGMENT_BYTES = 1024
RECORDS = 200
# Three 100-byte records make a batch of about 390 bytes, so two batches fit in a
# 1024-byte segment and a third rolls it: every segment holds more than one batch.
PER_BATCH = 3
CHECK_INTERVAL_MS = 200
RETENTION_ENV = {"STRATA_LOG_RETENTION_CHECK_INTERVAL_MS": str(CHECK_INTERVAL_MS)}


# ---- segment files ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Segment:
    base: int
    path: Path
    size: int
    # (base offset, last offset) of each record batch in the file, in file order.
    batches: tuple[tuple[int, int], ...]

    @property
    def next_offset(self) -> int:
        return self.batches[-1][1] + 1 if self.batches else self.base


def read_batches(path: Path) -> tuple[tuple[int, int], ...]:
    """The (base, last) offsets of every record batch in a segment file (magic 2 layout:
    baseOffset i64, batchLength i32, partitionLeaderEpoch i32, magic i8, crc u32,
    attributes i16, lastOffsetDelta i32, ...)."""
    data = path.read_bytes()
    out, pos = [], 0
    while pos < len(data):
        base, length = struct.unpack_from(">qi", data, pos)
        magic = data[pos + 16]
        assert magic == 2, f"{path.name}@{pos}: magic {magic}"
        (last_delta,) = struct.unpack_from(">i", data, pos + 23)
        out.append((base, base + last_delta))
        pos += 12 + length
    assert pos == len(data), f"{path.name}: {pos - len(data)} bytes past the end"
    return tuple(out)


def partition_dir(broker, topic: str, partition: int = 0) -> Path:
    return broker.data_dir / "logs" / f"{topic}-{partition}"


def segments(broker, topic: str, partition: int = 0) -> list[Segment]:
    out = []
    for path in sorted(partition_dir(broker, topic, partition).glob("*.log")):
        assert len(path.stem) == 20 and path.stem.isdigit(), f"segment name {path.name}"
        out.append(Segment(int(path.stem), path, path.stat().st_size, read_batches(path)))
    return out


def segment_of(segs: list[Segment], offset: int) -> Segment:
    [seg] = [s for s in segs if s.base <= offset < s.next_offset]
    return seg


def assert_tiles(segs: list[Segment], start: int, end: int):
    """The segments hold offsets start..end-1 exactly, each file named by its first batch."""
    expected_base = start
    for s in segs:
        assert s.batches, f"empty segment {s.path.name}"
        assert s.base == s.batches[0][0] == expected_base, (
            f"{s.path.name}: first batch at {s.batches[0][0]}, expected {expected_base}")
        for (b, last), (nb, _) in zip(s.batches, s.batches[1:]):
            assert nb == last + 1, f"{s.path.name}: gap between batches {b}..{last} and {nb}"
        expected_base = s.next_offset
    assert expected_base == end, f"segments end at {expected_base}, log end is {end}"


# ---- records and clients ----------------------------------------------------------------------


def value_for(i: int) -> bytes:
    return (b"%05d-" % i).ljust(100, b"x")


def produce_in_batches(bootstrap: str, topic: str, records):
    """Produce to partition 0, PER_BATCH records per request; returns them as placed."""
    log = produce_all(bootstrap, topic, records, partition=0, flush_every=PER_BATCH)
    return placed(records, log)


def set_topic_config(bootstrap: str, topic: str, **configs: str):
    admin = admin_client(bootstrap)
    res = ConfigResource(ResourceType.TOPIC, topic, incremental_configs=[
        ConfigEntry(k.replace("_", "."), v, incremental_operation=AlterConfigOpType.SET)
        for k, v in configs.items()])
    admin.incremental_alter_configs([res])[res].result(TIMEOUT_S)


def earliest_offset_kafka_python(bootstrap: str, topic: str) -> int:
    c = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
    try:
        tp = KTP(topic, 0)
        return c.beginning_offsets([tp])[tp]
    finally:
        c.close()


def confluent_fetch_error(bootstrap: str, topic: str, offset: int) -> KafkaError:
    """Fetch partition 0 from `offset` with auto.offset.reset=error: the first error event."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "strata-it-assign-only",
                  "enable.auto.commit": False, "auto.offset.reset": "error"})
    try:
        c.assign([TopicPartition(topic, 0, offset)])
        deadline = time.monotonic() + TIMEOUT_S
        while time.monotonic() < deadline:
            msg = c.poll(0.2)
            if msg is None:
                continue
            assert msg.error() is not None, f"got a record at offset {msg.offset()}"
            return msg.error()
        raise AssertionError(f"no error fetching {topic}-0 from offset {offset}")
    finally:
        c.close()


def kafka_python_fetch(bootstrap: str, topic: str, offset: int):
    """Fetch partition 0 from `offset` with no reset policy: the records, or the exception."""
    c = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                      auto_offset_reset="none")
    try:
        tp = KTP(topic, 0)
        c.assign([tp])
        c.seek(tp, offset)
        deadline = time.monotonic() + TIMEOUT_S
        while time.monotonic() < deadline:
            try:
                got = c.poll(timeout_ms=200)
            except OffsetOutOfRangeError as e:
                return e
            if got:
                return got
        raise AssertionError(f"nothing fetched from {topic}-0 at offset {offset}")
    finally:
        c.close()


def assert_out_of_range_below(bootstrap: str, topic: str, offset: int):
    err = confluent_fetch_error(bootstrap, topic, offset)
    assert err.code() == KafkaError._AUTO_OFFSET_RESET, err
    assert "Offset out of range" in err.str(), err
    res = kafka_python_fetch(bootstrap, topic, offset)
    assert isinstance(res, OffsetOutOfRangeError), f"fetch from {offset} returned {res!r}"


def contents(records):
    return [r.content() for r in records]


# ---- segment roll -----------------------------------------------------------------------------


def test_segments_roll_at_segment_bytes_and_read_back_across_them(module_broker):
    b = module_broker
    topic = unique_topic("roll")
    create_topic(admin_client(b.bootstrap), topic, partitions=1,
                 config={"segment.bytes": str(SEGMENT_BYTES)})
    records = [(None, value_for(i), []) for i in range(RECORDS)]
    sent = produce_in_batches(b.bootstrap, topic, records)
    assert [r.offset for r in sent] == list(range(RECORDS))

    segs = segments(b, topic)
    assert len(segs) > 10, [s.path.name for s in segs]
    assert_tiles(segs, 0, RECORDS)
    for s in segs:
        assert len(s.batches) >= 2 or s is segs[-1], f"{s.path.name} holds {s.batches}"
        assert s.size <= SEGMENT_BYTES, f"{s.path.name} is {s.size} bytes"
        assert s.path.with_suffix(".index").is_file(), f"no offset index for {s.path.name}"
        assert s.path.with_suffix(".timeindex").is_file(), f"no time index for {s.path.name}"

    got = consume_all(b.bootstrap, topic, [0], expected=RECORDS)
    assert contents(got) == contents(sent)
    got = kp_consume_all(b.bootstrap, topic, [0], expected=RECORDS)
    assert contents(got) == contents(sent)

    # Start inside a later segment's second batch: exactly the records from there on.
    later = segs[len(segs) * 2 // 3]
    start = later.batches[1][0] + 1
    assert later.base < start < later.next_offset
    got = consume_all(b.bootstrap, topic, [0], expected=RECORDS - start, start=start)
    assert contents(got) == contents(sent[start:])


# ---- retention --------------------------------------------------------------------------------


def test_time_retention_deletes_expired_segments_and_moves_log_start(broker_factory):
    b = broker_factory("retention-ms", env=RETENTION_ENV)
    topic = unique_topic("ret-ms")
    create_topic(admin_client(b.bootstrap), topic, partitions=1,
                 config={"segment.bytes": str(SEGMENT_BYTES)})
    # The first half is an hour old, the second half new: the expired prefix ends with the
    # last segment holding only old records.
    now = int(time.time() * 1000)
    old = now - 3600 * 1000
    half = RECORDS // 2
    records = [(None, value_for(i), [], old + i if i < half else now) for i in range(RECORDS)]
    sent = produce_in_batches(b.bootstrap, topic, records)
    before = segments(b, topic)
    assert_tiles(before, 0, RECORDS)

    # The default retention (7 days) keeps everything through several checks.
    time.sleep(3 * CHECK_INTERVAL_MS / 1000)
    assert segments(b, topic) == before
    assert watermarks(b.bootstrap, topic, 0) == (0, RECORDS)

    set_topic_config(b.bootstrap, topic, retention_ms=str(600 * 1000))
    first_kept = segment_of(before, half)
    assert first_kept.base > 0
    wait_until(lambda: watermarks(b.bootstrap, topic, 0)[0] == first_kept.base, 15,
               what=f"log start {first_kept.base}")
    time.sleep(3 * CHECK_INTERVAL_MS / 1000)
    assert segments(b, topic) == [s for s in before if s.base >= first_kept.base]
    assert watermarks(b.bootstrap, topic, 0) == (first_kept.base, RECORDS)
    assert earliest_offset_kafka_python(b.bootstrap, topic) == first_kept.base

    assert_out_of_range_below(b.bootstrap, topic, 0)
    assert_out_of_range_below(b.bootstrap, topic, first_kept.base - 1)
    got = consume_all(b.bootstrap, topic, [0], expected=RECORDS - first_kept.base)
    assert contents(got) == contents(sent[first_kept.base:])

    # Everything is now expired: every sealed segment goes, the active one stays whole.
    set_topic_config(b.bootstrap, topic, retention_ms="1")
    active = before[-1]
    wait_until(lambda: watermarks(b.bootstrap, topic, 0)[0] == active.base, 15,
               what=f"log start {active.base}")
    time.sleep(3 * CHECK_INTERVAL_MS / 1000)
    assert segments(b, topic) == [active]
    assert watermarks(b.bootstrap, topic, 0) == (active.base, RECORDS)
    got = consume_all(b.bootstrap, topic, [0], expected=RECORDS - active.base)
    assert contents(got) == contents(sent[active.base:])

    # The moved log start is durable.
    b.restart()
    assert watermarks(b.bootstrap, topic, 0) == (active.base, RECORDS)
    assert_out_of_range_below(b.bootstrap, topic, active.base - 1)
    got = consume_all(b.bootstrap, topic, [0], expected=RECORDS - active.base)
    assert contents(got) == contents(sent[active.base:])


def test_size_retention_keeps_at_least_retention_bytes(broker_factory):
    b = broker_factory("retention-bytes", env=RETENTION_ENV)
    topic = unique_topic("ret-bytes")
    create_topic(admin_client(b.bootstrap), topic, partitions=1,
                 config={"segment.bytes": str(SEGMENT_BYTES)})
    records = [(None, value_for(i), []) for i in range(RECORDS)]
    sent = produce_in_batches(b.bootstrap, topic, records)
    before = segments(b, topic)
    assert_tiles(before, 0, RECORDS)

    # Kafka's rule: drop the oldest segment while what remains is still >= retention.bytes.
    retention_bytes = 3000
    kept = list(before)
    while sum(s.size for s in kept[1:]) >= retention_bytes:
        kept.pop(0)
    assert len(kept) < len(before) and len(kept) > 1
    assert sum(s.size for s in kept) >= retention_bytes

    set_topic_config(b.bootstrap, topic, retention_bytes=str(retention_bytes))
    start = kept[0].base
    wait_until(lambda: watermarks(b.bootstrap, topic, 0)[0] == start, 15,
               what=f"log start {start}")
    time.sleep(3 * CHECK_INTERVAL_MS / 1000)
    assert segments(b, topic) == kept
    assert watermarks(b.bootstrap, topic, 0) == (start, RECORDS)
    assert earliest_offset_kafka_python(b.bootstrap, topic) == start

    assert_out_of_range_below(b.bootstrap, topic, 0)
    got = consume_all(b.bootstrap, topic, [0], expected=RECORDS - start)
    assert contents(got) == contents(sent[start:])


# ---- timestamps -------------------------------------------------------------------------------


def test_log_append_time_replaces_producer_timestamps(module_broker):
    b = module_broker
    topic = unique_topic("append-time")
    create_topic(admin_client(b.bootstrap), topic, partitions=1,
                 config={"message.timestamp.type": "LogAppendTime"})
    create_time = 1_500_000_000_000
    records = [(b"k", b"v%03d" % i, [], create_time + i) for i in range(30)]
    t0 = int(time.time() * 1000)
    p = producer(b.bootstrap)
    log = DeliveryLog()
    reported = []

    def on_delivery(err, msg):
        log(err, msg)
        reported.append(msg.timestamp())

    for i, (k, v, _, ts) in enumerate(records):
        p.produce(topic, key=k, value=v, partition=0, timestamp=ts, on_delivery=on_delivery)
        if i % 10 == 9:
            assert p.flush(TIMEOUT_S) == 0
    t1 = int(time.time() * 1000)
    assert not log.failed, log.failed

    # The delivery reports carry the broker's stamp, not the producer's.
    assert {t for t, _ in reported} == {TIMESTAMP_LOG_APPEND_TIME}, reported
    for _, ts in reported:
        assert t0 <= ts <= t1, f"append time {ts} outside [{t0}, {t1}]"
    stamp_at = {r.offset: r.timestamp for r in log.acked}

    c = Consumer({"bootstrap.servers": b.bootstrap, "group.id": "strata-it-assign-only",
                  "enable.auto.commit": False, "enable.partition.eof": True})
    try:
        c.assign([TopicPartition(topic, 0, 0)])
        got = []
        deadline = time.monotonic() + TIMEOUT_S
        while len(got) < len(records) and time.monotonic() < deadline:
            msg = c.poll(0.2)
            if msg is not None and msg.error() is None:
                got.append(msg)
    finally:
        c.close()
    assert [m.value() for m in got] == [v for _, v, _, _ in records]
    for m in got:
        ts_type, ts = m.timestamp()
        assert ts_type == TIMESTAMP_LOG_APPEND_TIME, (m.offset(), ts_type)
        assert ts == stamp_at[m.offset()], (m.offset(), ts, stamp_at[m.offset()])

    # kafka-python, decoding the batches itself, sees the same type and stamps.
    for r in kp_consume_all(b.bootstrap, topic, [0], expected=len(records)):
        assert r.timestamp == stamp_at[r.offset]
    c = KafkaConsumer(bootstrap_servers=b.bootstrap, group_id=None, enable_auto_commit=False,
                      auto_offset_reset="earliest")
    try:
        c.assign([KTP(topic, 0)])
        msgs = []
        deadline = time.monotonic() + TIMEOUT_S
        while len(msgs) < len(records) and time.monotonic() < deadline:
            for batch in c.poll(timeout_ms=200).values():
                msgs.extend(batch)
    finally:
        c.close()
    assert [m.timestamp_type for m in msgs] == [1] * len(records)


# ---- acks -------------------------------------------------------------------------------------


def test_acks_0_gets_no_response_and_records_arrive(module_broker):
    b = module_broker
    topic = unique_topic("acks0")
    create_topic(admin_client(b.bootstrap), topic, partitions=1)

    # On the wire: an acks=0 Produce is never answered, so the next response on the
    # connection belongs to the request after it.
    batch = wire.record_batch([(b"k", b"raw-%d" % i, []) for i in range(3)],
                              first_timestamp=int(time.time() * 1000))
    with wire.connect(b.port) as s:
        s.sendall(wire.produce_request(7, topic, 0, batch, acks=0))
        s.sendall(wire.api_versions_request(0, 8))
        first = wire.read_response(s)
        assert first is not None
        assert wire.decode_api_versions(first, 0).correlation_id == 8
        closed, extra = wire.read_until_close(s, timeout_s=1.0)
        assert (closed, extra) == (False, b"")

    # librdkafka with acks=0: every record is stored, in order, after the raw ones.
    n = 500
    p = producer(b.bootstrap, acks="0", **{"linger.ms": 2})
    log = DeliveryLog()
    for i in range(n):
        p.produce(topic, key=b"k", value=b"acks0-%04d" % i, partition=0, on_delivery=log)
        p.poll(0)
    assert p.flush(TIMEOUT_S) == 0
    assert not log.failed, log.failed[:5]
    assert len(log.acked) == n

    got = consume_all(b.bootstrap, topic, [0], expected=3 + n)
    assert [r.value for r in got] == [b"raw-%d" % i for i in range(3)] + [
        b"acks0-%04d" % i for i in range(n)]
    assert [r.offset for r in got] == list(range(3 + n))


# ---- flushing ---------------------------------------------------------------------------------


def test_relaxed_flush_round_trip_survives_clean_restart(broker):
    topic = unique_topic("relaxed")
    create_topic(admin_client(broker.bootstrap), topic, partitions=2,
                 config={"flush.messages": "10000", "flush.ms": "60000"})
    # Keep the client referenced until the result arrives: a collected client cancels it.
    admin = admin_client(broker.bootstrap)
    [cfg] = admin.describe_configs([ConfigResource(ResourceType.TOPIC, topic)]).values()
    entries = cfg.result(TIMEOUT_S)
    assert (entries["flush.messages"].value, entries["flush.ms"].value) == ("10000", "60000")
    records = [(b"k%d" % (i % 5), b"relaxed-%04d" % i, [("i", str(i).encode())])
               for i in range(600)]
    sent = placed(records, produce_all(broker.bootstrap, topic, records))
    assert {r.partition for r in sent} == {0, 1}

    got = consume_all(broker.bootstrap, topic, range(2), expected=len(records))
    assert contents(got) == contents(sent)

    broker.restart()
    got = consume_all(broker.bootstrap, topic, range(2), expected=len(records))
    assert contents(got) == contents(sent)
    for p in range(2):
        n = sum(1 for r in sent if r.partition == p)
        assert watermarks(broker.bootstrap, topic, p) == (0, n)


# ---- DescribeLogDirs --------------------------------------------------------------------------


def test_describe_log_dirs_reports_partition_sizes(module_broker):
    b = module_broker
    topic = unique_topic("logdirs")
    create_topic(admin_client(b.bootstrap), topic, partitions=3,
                 config={"segment.bytes": str(SEGMENT_BYTES)})
    empty = unique_topic("logdirs-empty")
    create_topic(admin_client(b.bootstrap), empty, partitions=2)
    records = [(b"k%d" % (i % 7), value_for(i), []) for i in range(150)]
    produce_all(b.bootstrap, topic, records, flush_every=10)

    admin = KafkaAdminClient(bootstrap_servers=b.bootstrap, request_timeout_ms=TIMEOUT_S * 1000)
    try:
        [per_broker] = admin.describe_log_dirs()
    finally:
        admin.close()
    [log_dir] = per_broker["log_dirs"]
    assert log_dir["error_code"] == 0
    assert Path(log_dir["log_dir"]).resolve() == (b.data_dir / "logs").resolve()
    assert log_dir["total_bytes"] > 0 and 0 < log_dir["usable_bytes"] <= log_dir["total_bytes"]

    sizes = {t["name"]: {p["partition_index"]: p["partition_size"] for p in t["partitions"]}
             for t in log_dir["topics"]}
    on_disk = {p: sum(s.size for s in segments(b, topic, p)) for p in range(3)}
    assert all(v > 0 for v in on_disk.values()), on_disk
    assert sizes[topic] == on_disk
    assert sizes[empty] == {0: 0, 1: 0}
