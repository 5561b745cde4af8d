"""Process lifecycle: SIGTERM while producers are busy, and one broker per data dir.

The producer never retries (the broker has no idempotent producer yet, and a retried batch
whose first attempt was written would legitimately appear twice), so each record is stored at
most once and the checks can be exact.
"""

from __future__ import annotations

import threading
import time
from collections import Counter

from clients import (DeliveryLog, admin_client, consume_all, create_topic, placed, produce_all,
                     producer, unique_topic, watermarks)

PARTITIONS = 3
STOP_BUDGET_S = 5.0
TIMEOUT_S = 30


def value_for(n: int) -> bytes:
    return b"id-%08d|" % n + b"payload-" * (n % 13)


def id_of(value: bytes) -> int:
    head, sep, _ = value.partition(b"|")
    assert sep and head.startswith(b"id-"), f"not a record this test wrote: {value[:40]!r}"
    return int(head[3:])


class BusyProducer:
    """Produces acks=all records from a thread, as fast as the broker takes them."""

    def __init__(self, bootstrap: str, topic: str):
        self.topic = topic
        self.p = producer(bootstrap, **{
            "linger.ms": 2,
            "retries": 0,
            "message.timeout.ms": 20000,
            "reconnect.backoff.ms": 50,
            "reconnect.backoff.max.ms": 500,
        })
        self.log = DeliveryLog()
        self.sent = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            for _ in range(50):
                try:
                    self.p.produce(self.topic, key=b"k%d" % (self.sent % 11),
                                   value=value_for(self.sent), on_delivery=self.log)
                except BufferError:
                    break
                self.sent += 1
            self.p.poll(0.005)

    def start(self):
        self._thread.start()

    def stop(self):
        self._stop.set()
        self._thread.join(10)
        assert not self._thread.is_alive()


def test_sigterm_under_load_exits_promptly_and_keeps_every_ack(broker):
    topic = unique_topic("term-load")
    create_topic(admin_client(broker.bootstrap), topic, partitions=PARTITIONS)
    busy = BusyProducer(broker.bootstrap, topic)
    busy.start()
    try:
        time.sleep(1.5)
        acked_before = len(busy.log.acked)
        sent_before = busy.sent
        assert acked_before > 100, f"only {acked_before} acks before SIGTERM"

        took = broker.stop()  # asserts exit code 0
        assert took < STOP_BUDGET_S, f"SIGTERM under load took {took:.1f} s"
        assert busy.sent > sent_before, "the producer was idle during shutdown"

        time.sleep(0.3)  # keeps queueing while the broker is down
        broker.start()
        time.sleep(1.0)
    finally:
        busy.stop()
    assert busy.p.flush(TIMEOUT_S) == 0, "producer still had undelivered messages"
    log = busy.log
    assert len(log.acked) + len(log.failed) == busy.sent

    got = consume_all(broker.bootstrap, topic, range(PARTITIONS), timeout_s=TIMEOUT_S)
    ids = Counter(id_of(r.value) for r in got)
    dups = [i for i, c in ids.items() if c > 1]
    assert not dups, f"{len(dups)} ids stored more than once, e.g. {dups[:10]}"
    assert all(0 <= i < busy.sent for i in ids), "records that were never sent"

    stored = {(r.partition, r.offset): r for r in got}
    for a in log.acked:
        s = stored.get((a.partition, a.offset))
        assert s is not None, f"acked id {id_of(a.value)} missing at p{a.partition}@{a.offset}"
        assert (s.key, s.value) == (a.key, a.value), f"p{a.partition}@{a.offset} holds other data"
    for part in range(PARTITIONS):
        offsets = sorted(o for (pp, o) in stored if pp == part)
        assert offsets == list(range(len(offsets))), f"offset gap in partition {part}"
        assert watermarks(broker.bootstrap, topic, part) == (0, len(offsets))


def test_second_broker_on_a_data_dir_in_use_fails_fast(broker_factory):
    first = broker_factory("lock-first")
    topic = unique_topic("lock")
    create_topic(admin_client(first.bootstrap), topic, partitions=2)
    records = [(b"k%d" % i, b"before-%03d" % i, []) for i in range(100)]
    sent = placed(records, produce_all(first.bootstrap, topic, records))
    identity = (first.data_dir / "meta.properties").read_bytes()

    second = broker_factory("lock-second", start=False)
    second.data_dir = first.data_dir
    t0 = time.monotonic()
    rc, output = second.start_expecting_exit(timeout_s=10)
    took = time.monotonic() - t0
    assert rc != 0, output
    assert took < STOP_BUDGET_S, f"the second broker took {took:.1f} s to give up"
    assert "in use by another strata process" in output, output
    assert str(first.data_dir) in output, output
    assert (first.data_dir / "meta.properties").read_bytes() == identity

    # The first broker is unharmed: it serves what it had and takes new writes.
    first.assert_alive()
    got = consume_all(first.bootstrap, topic, range(2), expected=len(sent))
    assert [r.content() for r in got] == [r.content() for r in sent]
    more = [(b"k%d" % i, b"after-%03d" % i, []) for i in range(50)]
    sent += placed(more, produce_all(first.bootstrap, topic, more))
    sent.sort(key=lambda r: (r.partition, r.offset))

    # A broker that died without cleaning up leaves no stale lock behind.
    first.kill()
    second.start()
    got = consume_all(second.bootstrap, topic, range(2), expected=len(sent))
    assert [r.content() for r in got] == [r.content() for r in sent]
