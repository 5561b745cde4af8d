"""SIGKILL while producing: every acknowledged record survives, exactly once, where the ack said.

The producer here is not idempotent and runs without retries (a retried batch whose first
attempt was written would legitimately appear twice; test_idempotence.py covers retries). So each record is sent
at most once, and after recovery:
  - every acknowledged record is at the partition and offset its ack reported;
  - no record appears twice, acknowledged or not;
  - nothing appears that was never sent.
"""

from __future__ import annotations

import time
from collections import Counter

from clients import (DeliveryLog, admin_client, consume_all, create_topic, produce_all,
                     producer, unique_topic, wait_for_partitions)

PARTITIONS = 3
KILL_CYCLES = 3
RUN_BEFORE_KILL_S = 1.5
TIMEOUT_S = 60


def value_for(n: int) -> bytes:
    return b"id-%08d|" % n + b"payload-" * (n % 13)


def id_of(value: bytes) -> int:
    head, sep, _ = value.partition(b"|")
    assert sep and head.startswith(b"id-"), f"not a record this test wrote: {value[:40]!r}"
    return int(head[3:])


def test_acked_records_survive_kill_9_after_flush(broker):
    topic = unique_topic("crash-flush")
    create_topic(admin_client(broker.bootstrap), topic, partitions=PARTITIONS)
    records = [(b"k%d" % (n % 7), value_for(n), []) for n in range(1000)]
    log = produce_all(broker.bootstrap, topic, records)

    broker.kill()
    broker.start()

    got = consume_all(broker.bootstrap, topic, range(PARTITIONS), expected=len(records),
                      timeout_s=TIMEOUT_S)
    assert sorted(r.content() for r in got) == sorted(r.content() for r in log.acked)


def test_acked_records_survive_kill_9_mid_stream(broker):
    topic = unique_topic("crash-stream")
    create_topic(admin_client(broker.bootstrap), topic, partitions=PARTITIONS)
    wait_for_partitions(admin_client(broker.bootstrap), topic, PARTITIONS)

    p = producer(broker.bootstrap, **{
        "linger.ms": 2,
        "retries": 0,
        "message.timeout.ms": 45000,
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

    # sent-counter at each kill: ids at or above a mark were produced after that kill, so an
    # ack for one came from the restarted broker.
    marks = [0]
    for _ in range(KILL_CYCLES):
        produce_for(RUN_BEFORE_KILL_S)
        broker.kill()
        marks.append(sent)
        produce_for(0.3)  # keeps queueing while the broker is down
        broker.start()
    produce_for(RUN_BEFORE_KILL_S)
    marks.append(sent)
    assert p.flush(TIMEOUT_S) == 0, "producer still had undelivered messages"
    assert len(log.acked) + len(log.failed) == sent

    # The test means nothing unless every broker incarnation acknowledged writes.
    acked_ids = sorted(id_of(a.value) for a in log.acked)
    for lo, hi in zip(marks, marks[1:]):
        assert any(lo <= i < hi for i in acked_ids), f"no acks for ids {lo}..{hi}"

    got = consume_all(broker.bootstrap, topic, range(PARTITIONS), timeout_s=TIMEOUT_S)

    ids = Counter(id_of(r.value) for r in got)
    dups = [i for i, c in ids.items() if c > 1]
    assert not dups, f"{len(dups)} ids stored more than once, e.g. {dups[:10]}"
    assert all(0 <= i < sent for i in ids), "records that were never sent"

    stored = {(r.partition, r.offset): r for r in got}
    for a in log.acked:
        s = stored.get((a.partition, a.offset))
        assert s is not None, f"acked id {id_of(a.value)} missing at p{a.partition}@{a.offset}"
        assert (s.key, s.value) == (a.key, a.value), f"p{a.partition}@{a.offset} holds other data"
    for part in range(PARTITIONS):
        offsets = sorted(o for (pp, o) in stored if pp == part)
        assert offsets == list(range(len(offsets))), f"offset gap in partition {part}"
