"""Client-side helpers shared by the integration tests: confluent-kafka (librdkafka),
kafka-python and kcat, each driven the way an application would drive it.

Consumers use manual assignment only, never a group: assign every partition from the
beginning, read until each partition reports its end, and return what came back in
(partition, offset) order so tests can compare it exactly.
"""

from __future__ import annotations

import itertools
import os
import subprocess
import time
import uuid
from dataclasses import dataclass, field

from confluent_kafka import (OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Producer,
                             TopicPartition)
from confluent_kafka.admin import AdminClient, NewTopic

DEFAULT_TIMEOUT_S = 30.0
_topic_seq = itertools.count()


def unique_topic(prefix: str) -> str:
    """A topic name no other test (or earlier run against the same data dir) uses."""
    return f"{prefix}-{next(_topic_seq)}-{uuid.uuid4().hex[:8]}"


@dataclass(frozen=True)
class Record:
    """One record as a consumer saw it (or as a producer's delivery report placed it)."""
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes | None], ...] = ()
    timestamp: int | None = None

    def content(self):
        """Everything except the timestamp, for exact comparisons."""
        return (self.partition, self.offset, self.key, self.value, self.headers)


def _headers(raw) -> tuple[tuple[str, bytes | None], ...]:
    return tuple((k, v) for k, v in (raw or []))


def wait_until(predicate, timeout_s: float = DEFAULT_TIMEOUT_S, interval_s: float = 0.1,
               what: str = "condition"):
    """Poll predicate() until it returns a truthy value; return that value."""
    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval_s)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what} (last: {last!r})")


# ---- confluent-kafka --------------------------------------------------------------------------


def admin_client(bootstrap: str) -> AdminClient:
    return AdminClient({"bootstrap.servers": bootstrap, "socket.timeout.ms": 10000})


def create_topic(admin: AdminClient, name: str, partitions: int = 3,
                 config: dict[str, str] | None = None, timeout_s: float = DEFAULT_TIMEOUT_S):
    futures = admin.create_topics(
        [NewTopic(name, num_partitions=partitions, replication_factor=1, config=config or {})],
        request_timeout=timeout_s, operation_timeout=timeout_s)
    futures[name].result(timeout=timeout_s)
    wait_for_partitions(admin, name, partitions)


def topic_partitions(admin: AdminClient, name: str) -> list[int] | None:
    """Partition ids of `name` as Metadata reports them, or None if the topic is absent."""
    md = admin.list_topics(timeout=10)
    t = md.topics.get(name)
    if t is None or t.error is not None:
        return None
    return sorted(t.partitions)


def wait_for_partitions(admin: AdminClient, name: str, count: int,
                        timeout_s: float = DEFAULT_TIMEOUT_S):
    wait_until(lambda: topic_partitions(admin, name) == list(range(count)), timeout_s,
               what=f"topic {name} with {count} partitions in metadata")


def producer(bootstrap: str, **overrides) -> Producer:
    conf = {
        "bootstrap.servers": bootstrap,
        "acks": "all",
        # librdkafka's default; test_idempotence.py covers the idempotent producer.
        "enable.idempotence": False,
        "linger.ms": 5,
        "message.timeout.ms": 30000,
    }
    conf.update(overrides)
    return Producer(conf)


@dataclass
class DeliveryLog:
    """Collects delivery reports: what the broker acknowledged, and where it put it."""
    acked: list[Record] = field(default_factory=list)
    failed: list[tuple[bytes | None, KafkaError]] = field(default_factory=list)

    def __call__(self, err, msg):
        if err is not None:
            self.failed.append((msg.value(), err))
            return
        ts_type, ts = msg.timestamp()
        self.acked.append(Record(msg.partition(), msg.offset(), msg.key(), msg.value(),
                                 _headers(msg.headers()), ts))


def placed(records, log: DeliveryLog) -> list[Record]:
    """The records as produced, at the partition and offset their acks reported, in
    (partition, offset) order. Values must be unique."""
    at = {r.value: r for r in log.acked}
    assert len(at) == len(records), "values must be unique to place records"
    return sorted((Record(at[v].partition, at[v].offset, k, v, tuple(h), at[v].timestamp)
                   for k, v, h, *_ in records), key=lambda r: (r.partition, r.offset))


def produce_all(bootstrap: str, topic: str, records, partition: int | None = None,
                flush_every: int | None = None, **conf) -> DeliveryLog:
    """Produce (key, value, headers[, timestamp]) tuples with acks=all; all must be acked."""
    p = producer(bootstrap, **conf)
    log = DeliveryLog()
    for i, rec in enumerate(records):
        key, value, headers, *ts = rec
        kwargs = {"key": key, "value": value, "headers": list(headers) or None,
                  "on_delivery": log}
        if partition is not None:
            kwargs["partition"] = partition
        if ts:
            kwargs["timestamp"] = ts[0]
        p.produce(topic, **kwargs)
        p.poll(0)
        if flush_every and (i + 1) % flush_every == 0:
            assert p.flush(DEFAULT_TIMEOUT_S) == 0
    remaining = p.flush(DEFAULT_TIMEOUT_S)
    assert remaining == 0, f"{remaining} messages still undelivered after flush"
    assert not log.failed, f"delivery failed: {log.failed[:5]}"
    assert len(log.acked) == len(records)
    return log


def consume_all(bootstrap: str, topic: str, partitions, expected: int | None = None,
                timeout_s: float = DEFAULT_TIMEOUT_S, start: int = OFFSET_BEGINNING,
                **conf) -> list[Record]:
    """Assign `partitions` from `start` (default: the beginning) and read until each reports
    end-of-partition (and, if given, at least `expected` records have arrived)."""
    partitions = list(partitions)
    c = Consumer({
        "bootstrap.servers": bootstrap,
        # Required by librdkafka, unused: no subscribe(), no commits.
        "group.id": "strata-it-assign-only",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "enable.partition.eof": True,
        # Surface an out-of-range start instead of silently skipping data.
        "auto.offset.reset": "error",
        **conf,
    })
    try:
        c.assign([TopicPartition(topic, p, start) for p in partitions])
        out: list[Record] = []
        at_end: set[int] = set()
        errors = []
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if len(at_end) == len(partitions) and (expected is None or len(out) >= expected):
                break
            msg = c.poll(0.2)
            if msg is None:
                continue
            err = msg.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    at_end.add(msg.partition())
                    continue
                if err.fatal():
                    raise KafkaException(err)
                errors.append(err)
                continue
            at_end.discard(msg.partition())
            out.append(Record(msg.partition(), msg.offset(), msg.key(), msg.value(),
                              _headers(msg.headers()), msg.timestamp()[1]))
        else:
            raise AssertionError(
                f"consume {topic}: {len(out)} records, partitions at end {sorted(at_end)} of "
                f"{partitions} after {timeout_s:.0f} s; client errors: {errors[:5]}")
        return sorted(out, key=lambda r: (r.partition, r.offset))
    finally:
        c.close()


def watermarks(bootstrap: str, topic: str, partition: int) -> tuple[int, int]:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "strata-it-assign-only",
                  "enable.auto.commit": False})
    try:
        return c.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)
    finally:
        c.close()


# ---- kafka-python -----------------------------------------------------------------------------


def kp_producer(bootstrap: str, **overrides):
    from kafka import KafkaProducer
    conf = dict(bootstrap_servers=bootstrap, acks="all",
                # kafka-python 3 turns idempotence on by default; these helpers test the
                # plain path (test_idempotence.py covers the default configuration).
                enable_idempotence=False, linger_ms=5, request_timeout_ms=30000)
    conf.update(overrides)
    return KafkaProducer(**conf)


def kp_consume_all(bootstrap: str, topic: str, partitions, expected: int | None = None,
                   timeout_s: float = DEFAULT_TIMEOUT_S, **conf) -> list[Record]:
    """kafka-python: assign, seek to beginning, read up to the end offsets found first."""
    from kafka import KafkaConsumer
    from kafka import TopicPartition as KTP
    c = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                      auto_offset_reset="earliest", request_timeout_ms=30000, **conf)
    try:
        tps = [KTP(topic, p) for p in partitions]
        c.assign(tps)
        c.seek_to_beginning(*tps)
        end = c.end_offsets(tps)
        out: list[Record] = []
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if all(c.position(tp) >= end[tp] for tp in tps) and (
                    expected is None or len(out) >= expected):
                break
            for tp, msgs in c.poll(timeout_ms=200).items():
                for m in msgs:
                    out.append(Record(m.partition, m.offset, m.key, m.value,
                                      _headers(m.headers), m.timestamp))
        else:
            raise AssertionError(f"kafka-python consume {topic}: {len(out)} records, end "
                                 f"offsets {end} not reached after {timeout_s:.0f} s")
        return sorted(out, key=lambda r: (r.partition, r.offset))
    finally:
        c.close()


# ---- kcat -------------------------------------------------------------------------------------


def run_kcat(kcat: str, args: list[str], input: bytes | None = None,
             timeout_s: float = 60.0) -> bytes:
    """Run kcat; it must exit 0 within timeout_s. Returns stdout."""
    env = dict(os.environ)
    # No user config file may change what the test sends.
    env.pop("KCAT_CONFIG", None)
    try:
        stdin = {"input": input} if input is not None else {"stdin": subprocess.DEVNULL}
        proc = subprocess.run([kcat, *args], capture_output=True, timeout=timeout_s, env=env,
                              **stdin)
    except subprocess.TimeoutExpired as e:
        raise AssertionError(f"kcat {' '.join(args)} did not finish in {timeout_s:.0f} s; "
                             f"stderr: {(e.stderr or b'')[-2000:]!r}") from None
    assert proc.returncode == 0, (
        f"kcat {' '.join(args)} exited {proc.returncode}; stderr: {proc.stderr[-2000:]!r}")
    return proc.stdout
