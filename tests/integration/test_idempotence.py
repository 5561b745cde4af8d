"""The idempotent producer: InitProducerId, and exactly-once-per-partition writes for retries.

Real clients with their default idempotent settings (kafka-python 3, librdkafka with
enable.idempotence) through broker crashes, and hand-encoded requests for the exact answers:
a retried batch gets the original offset and is stored once, a sequence gap gets
OUT_OF_ORDER_SEQUENCE_NUMBER, an older epoch INVALID_PRODUCER_EPOCH, and producer ids are never
handed out twice, restarts included.
"""

from __future__ import annotations

import itertools
import os
import signal
import struct
import time
from collections import Counter
from pathlib import Path

import wire
from clients import (DeliveryLog, admin_client, consume_all, create_topic, producer,
                     unique_topic)

TIMEOUT_S = 60
PARTITIONS = 3
KILL_CYCLES = 3
KILL_ATTEMPTS = 200
RUN_BEFORE_KILL_S = 1.5

API_INIT_PRODUCER_ID = 22
NONE = 0
NOT_COORDINATOR = 16
INVALID_REQUEST = 42
OUT_OF_ORDER_SEQUENCE_NUMBER = 45
INVALID_PRODUCER_EPOCH = 47

_corr = itertools.count(1)


# ---- hand-encoded InitProducerId and idempotent Produce ---------------------------------------


def init_producer_id(port: int, version: int = 0, transactional_id: str | None = None,
                     producer_id: int = -1, epoch: int = -1) -> tuple[int, int, int]:
    """InitProducerId v0-v5: v2+ are flexible, v3+ carry the KIP-360 id/epoch fields.
    Returns (error code, producer id, epoch)."""
    assert 0 <= version <= 5
    corr = next(_corr)
    flexible = version >= 2
    if flexible:
        body = wire.compact_string(transactional_id) + wire.i32(60000)
    else:
        body = wire.string(transactional_id) + wire.i32(60000)
    if version >= 3:
        body += wire.i64(producer_id) + wire.i16(epoch)
    if flexible:
        body += wire.NO_TAGS
    req = wire.request_header(API_INIT_PRODUCER_ID, version, corr, flexible=flexible) + body
    payload = wire.exchange(port, wire.frame(req), timeout_s=15)
    assert payload is not None, f"broker closed the connection on InitProducerId v{version}"
    r = wire.Reader(payload)
    assert r.i32() == corr
    if flexible:
        r.skip_tags()  # response header v1
    r.i32()  # throttle time
    err = r.i16()
    pid, ep = struct.unpack(">qh", r.take(10))
    if flexible:
        r.skip_tags()
    assert r.done(), f"trailing bytes in InitProducerId v{version} response"
    return err, pid, ep


def idempotent_batch(values: list[bytes], producer_id: int, epoch: int, base_sequence: int,
                     first_timestamp: int | None = None) -> bytes:
    """An uncompressed magic-2 batch of key-less records from an idempotent producer
    (wire.record_batch with the producer fields set)."""
    ts = int(time.time() * 1000) if first_timestamp is None else first_timestamp
    body = bytearray()
    for delta, value in enumerate(values):
        rec = bytearray(b"\x00") + wire.varint(0) + wire.varint(delta)
        rec += wire.varint(-1) + wire.varint(len(value)) + value + wire.varint(0)
        body += wire.varint(len(rec)) + rec
    last = len(values) - 1
    after_crc = (wire.i16(0) + wire.i32(last) + wire.i64(ts) + wire.i64(ts)
                 + wire.i64(producer_id) + wire.i16(epoch) + wire.i32(base_sequence)
                 + wire.i32(len(values)) + bytes(body))
    after_len = (wire.i32(0) + wire.i8(2) + struct.pack(">I", wire.crc32c(after_crc))
                 + after_crc)
    return wire.i64(0) + wire.i32(len(after_len)) + after_len


def produce(port: int, topic: str, partition: int, batch: bytes) -> tuple[int, int]:
    """Produce v3 with acks=all; returns (error code, base offset) of the one partition."""
    corr = next(_corr)
    payload = wire.exchange(port, wire.produce_request(corr, topic, partition, batch),
                            timeout_s=15)
    assert payload is not None, "broker closed the connection on Produce"
    r = wire.Reader(payload)
    assert r.i32() == corr
    assert r.i32() == 1
    name = r.take(r.i16()).decode()
    assert name == topic
    assert r.i32() == 1
    assert r.i32() == partition
    err = r.i16()
    base_offset, _log_append_time = struct.unpack(">qq", r.take(16))
    r.i32()  # throttle time
    assert r.done()
    return err, base_offset


# ---- what is on disk --------------------------------------------------------------------------


def stored_batches(broker, topic: str, partition: int,
                   ) -> list[tuple[int, int, int, int, int]]:
    """(base offset, producer id, epoch, base sequence, last offset) of every whole batch in
    the partition's segment files, read straight from disk (the page cache, so it includes
    writes not yet fsynced)."""
    out = []
    d = Path(broker.data_dir) / "logs" / f"{topic}-{partition}"
    for seg in sorted(d.glob("*.log")):
        data = seg.read_bytes()
        pos = 0
        while pos + 61 <= len(data):
            base, length = struct.unpack_from(">qi", data, pos)
            if pos + 12 + length > len(data):
                break  # a write in progress
            (last_delta,) = struct.unpack_from(">i", data, pos + 23)
            pid, ep, seq = struct.unpack_from(">qhi", data, pos + 43)
            out.append((base, pid, ep, seq, base + last_delta))
            pos += 12 + length
    return out


def value_for(n: int) -> bytes:
    return b"id-%08d|" % n + b"payload-" * (n % 13)


def id_of(value: bytes) -> int:
    head, sep, _ = value.partition(b"|")
    assert sep and head.startswith(b"id-"), f"not a record this test wrote: {value[:40]!r}"
    return int(head[3:])


# ---- InitProducerId ---------------------------------------------------------------------------


def test_producer_ids_are_unique_across_restarts(broker):
    advertised = wire.decode_api_versions(
        wire.exchange(broker.port, wire.api_versions_request(0, 1)), 0).apis
    assert advertised[API_INIT_PRODUCER_ID] == (0, 5)
    seen = set()
    for version in range(6):  # every advertised version
        err, pid, epoch = init_producer_id(broker.port, version)
        assert (err, epoch) == (NONE, 0), f"v{version}"
        assert pid >= 0 and pid not in seen
        seen.add(pid)
    # A crash loses the rest of the reserved block, never an id handed out.
    broker.kill()
    broker.start()
    err, pid, _ = init_producer_id(broker.port, version=3)
    assert err == NONE and pid not in seen and pid > max(seen)
    seen.add(pid)
    broker.restart()
    err, pid, _ = init_producer_id(broker.port)
    assert err == NONE and pid not in seen and pid > max(seen)


def test_epoch_bump_and_refusals(broker):
    err, pid, epoch = init_producer_id(broker.port, version=3)
    assert (err, epoch) == (NONE, 0)
    # KIP-360: the same producer id at the next epoch.
    assert init_producer_id(broker.port, 3, producer_id=pid, epoch=0) == (NONE, pid, 1)
    assert init_producer_id(broker.port, 3, producer_id=pid, epoch=1) == (NONE, pid, 2)
    # An id this cluster never issued, or an exhausted epoch, gets a fresh id.
    err, other, ep = init_producer_id(broker.port, 3, producer_id=pid + 10_000_000, epoch=4)
    assert (err, ep) == (NONE, 0) and other not in (pid, pid + 10_000_000)
    err, fresh, ep = init_producer_id(broker.port, 3, producer_id=pid, epoch=32766)
    assert (err, ep) == (NONE, 0) and fresh not in (pid, other)
    # Half-set id/epoch is malformed; transactions are not coordinated here.
    assert init_producer_id(broker.port, 3, producer_id=pid, epoch=-1)[0] == INVALID_REQUEST
    assert init_producer_id(broker.port, 0, transactional_id="tx-1") == (NOT_COORDINATOR, -1, -1)
    assert init_producer_id(broker.port, 3, transactional_id="tx-1")[0] == NOT_COORDINATOR


# ---- raw duplicates, gaps and fencing ---------------------------------------------------------


def test_a_retried_batch_is_stored_once_with_its_original_offset(broker):
    topic = unique_topic("idem-raw")
    create_topic(admin_client(broker.bootstrap), topic, partitions=1)
    err, pid, epoch = init_producer_id(broker.port)
    assert err == NONE

    plain = wire.record_batch([(None, b"plain", [])], int(time.time() * 1000))
    assert produce(broker.port, topic, 0, plain) == (NONE, 0)
    first = idempotent_batch([b"a0", b"a1"], pid, epoch, 0)
    assert produce(broker.port, topic, 0, first) == (NONE, 1)
    # The same batch again: success, the original offset, nothing appended.
    assert produce(broker.port, topic, 0, first) == (NONE, 1)
    second = idempotent_batch([b"b0"], pid, epoch, 2)
    assert produce(broker.port, topic, 0, second) == (NONE, 3)
    assert produce(broker.port, topic, 0, first) == (NONE, 1)

    # A gap in the sequence: refused, nothing appended.
    gap = idempotent_batch([b"gap"], pid, epoch, 5)
    assert produce(broker.port, topic, 0, gap)[0] == OUT_OF_ORDER_SEQUENCE_NUMBER

    # After a crash the state is rebuilt from the log: retries still recognised.
    broker.kill()
    broker.start()
    assert produce(broker.port, topic, 0, second) == (NONE, 3)
    assert produce(broker.port, topic, 0, first) == (NONE, 1)
    third = idempotent_batch([b"c0", b"c1"], pid, epoch, 3)
    assert produce(broker.port, topic, 0, third) == (NONE, 4)
    # And after a clean restart, from the snapshot written on shutdown.
    broker.restart()
    assert produce(broker.port, topic, 0, third) == (NONE, 4)
    later_gap = idempotent_batch([b"gap"], pid, epoch, 9)
    assert produce(broker.port, topic, 0, later_gap)[0] == OUT_OF_ORDER_SEQUENCE_NUMBER

    # An epoch bump restarts sequences and fences the old epoch.
    err, same, bumped = init_producer_id(broker.port, 3, producer_id=pid, epoch=epoch)
    assert (err, same, bumped) == (NONE, pid, epoch + 1)
    assert produce(broker.port, topic, 0, idempotent_batch([b"d0"], pid, bumped, 1))[0] \
        == OUT_OF_ORDER_SEQUENCE_NUMBER
    assert produce(broker.port, topic, 0, idempotent_batch([b"d0"], pid, bumped, 0)) == (NONE, 6)
    stale = idempotent_batch([b"e0"], pid, epoch, 5)
    assert produce(broker.port, topic, 0, stale)[0] == INVALID_PRODUCER_EPOCH

    got = consume_all(broker.bootstrap, topic, [0], expected=7, timeout_s=TIMEOUT_S)
    assert [(r.offset, r.value) for r in got] == [
        (0, b"plain"), (1, b"a0"), (2, b"a1"), (3, b"b0"), (4, b"c0"), (5, b"c1"), (6, b"d0")]
    assert [(b, p, e, s) for b, p, e, s, _ in stored_batches(broker, topic, 0)] == [
        (0, -1, -1, -1), (1, pid, epoch, 0), (3, pid, epoch, 2), (4, pid, epoch, 3),
        (6, pid, bumped, 0)]


# ---- real clients -----------------------------------------------------------------------------


def test_kafka_python_default_producer_is_idempotent(broker):
    from kafka import KafkaProducer

    topic = unique_topic("idem-kp")
    create_topic(admin_client(broker.bootstrap), topic, partitions=PARTITIONS)
    records = [(b"k%d" % (i % 5), value_for(i)) for i in range(500)]
    # Nothing but the address: kafka-python 3 enables idempotence (and acks=all) by default.
    p = KafkaProducer(bootstrap_servers=broker.bootstrap)
    try:
        futures = [p.send(topic, key=k, value=v) for k, v in records]
        p.flush(timeout=TIMEOUT_S)
        acked = [f.get(timeout=TIMEOUT_S) for f in futures]
        tm = p._transaction_manager
        assert tm is not None, "kafka-python did not enable idempotence"
        pid = tm.producer_id_and_epoch.producer_id
        assert pid >= 0
    finally:
        p.close(timeout=10)

    got = consume_all(broker.bootstrap, topic, range(PARTITIONS), expected=len(records),
                      timeout_s=TIMEOUT_S)
    want = sorted(((md.partition, md.offset, k, v) for md, (k, v) in zip(acked, records)))
    assert [(r.partition, r.offset, r.key, r.value) for r in got] == want
    for part in range(PARTITIONS):
        batches = stored_batches(broker, topic, part)
        assert batches and all(pp == pid and seq >= 0 for _, pp, _, seq, _ in batches), batches


def test_librdkafka_idempotent_producer_through_kill_9(broker):
    """enable.idempotence with retries through SIGKILLs: every acknowledged record exactly
    once, in send order per partition, even though the client resent whatever was in flight
    (test_crash.py has to turn retries off to get the no-duplicates half of this).

    Each kill is timed so the broker dies holding batches it wrote but never acknowledged:
    the broker is frozen (SIGSTOP) until the log on disk is ahead of every acknowledgement
    the client has received, then killed. The page cache keeps those writes, so the client's
    retries of them are duplicates the broker must recognise after recovering."""
    topic = unique_topic("idem-crash")
    create_topic(admin_client(broker.bootstrap), topic, partitions=PARTITIONS)
    p = producer(broker.bootstrap, **{
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 2,
        "message.timeout.ms": 90000,
        "reconnect.backoff.ms": 50,
        "reconnect.backoff.max.ms": 500,
    })
    log = DeliveryLog()
    sent = 0

    def produce_for(seconds: float):
        nonlocal sent
        until = time.monotonic() + seconds
        while time.monotonic() < until:
            for _ in range(50):
                try:
                    p.produce(topic, key=b"k%d" % (sent % 11), value=value_for(sent),
                              on_delivery=log)
                except BufferError:
                    break
                sent += 1
            p.poll(0.005)

    def acked_end(part: int) -> int:
        return max((a.offset + 1 for a in log.acked if a.partition == part), default=0)

    def kill_holding_unacked_writes() -> None:
        for _ in range(KILL_ATTEMPTS):
            os.kill(broker.pid, signal.SIGSTOP)
            # Let the client take in every response the broker sent before it froze.
            time.sleep(0.1)
            while p.poll(0.05) > 0:
                pass
            ahead = [part for part in range(PARTITIONS)
                     if max((b[4] + 1 for b in stored_batches(broker, topic, part)), default=0)
                     > acked_end(part)]
            if ahead:
                broker.kill()
                return
            os.kill(broker.pid, signal.SIGCONT)
            produce_for(0.05)
        raise AssertionError(f"never caught the broker with unacknowledged writes in "
                             f"{KILL_ATTEMPTS} tries")

    marks = [0]
    for _ in range(KILL_CYCLES):
        produce_for(RUN_BEFORE_KILL_S)
        kill_holding_unacked_writes()
        marks.append(sent)
        produce_for(0.3)  # keeps queueing while the broker is down
        broker.start()
    produce_for(RUN_BEFORE_KILL_S)
    marks.append(sent)
    assert p.flush(TIMEOUT_S) == 0, "producer still had undelivered messages"
    assert not log.failed, f"deliveries failed: {log.failed[:5]}"
    assert len(log.acked) == sent

    acked_ids = sorted(id_of(a.value) for a in log.acked)
    for lo, hi in zip(marks, marks[1:]):
        assert any(lo <= i < hi for i in acked_ids), f"no acks for ids {lo}..{hi}"

    got = consume_all(broker.bootstrap, topic, range(PARTITIONS), expected=sent,
                      timeout_s=TIMEOUT_S)
    ids = Counter(id_of(r.value) for r in got)
    dups = sorted(i for i, c in ids.items() if c > 1)
    assert not dups, f"{len(dups)} ids stored more than once, e.g. {dups[:10]}"
    assert set(ids) == set(range(sent)), "stored records differ from the acknowledged ones"

    stored = {(r.partition, r.offset): r for r in got}
    for a in log.acked:
        s = stored.get((a.partition, a.offset))
        assert s is not None, f"acked id {id_of(a.value)} missing at p{a.partition}@{a.offset}"
        assert (s.key, s.value) == (a.key, a.value), f"p{a.partition}@{a.offset} holds other data"
    for part in range(PARTITIONS):
        in_log = [id_of(r.value) for r in got if r.partition == part]
        assert in_log == sorted(in_log), f"partition {part} is not in send order"
        offsets = [r.offset for r in got if r.partition == part]
        assert offsets == list(range(len(offsets))), f"offset gap in partition {part}"
        assert all(pid >= 0 for _, pid, _, _, _ in stored_batches(broker, topic, part))
