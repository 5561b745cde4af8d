"""Consumers' fetches are sent from the segment files (sendfile), as Kafka's are: the fetch
size limit may then cut a response's last batch short, and clients must get every record, in
order, byte for byte, from librdkafka (confluent-kafka) and kafka-python alike: across
partitions in one fetch, across segment rolls, with batches larger than the limit (KIP-74),
and at every fetch-size setting from tiny to large.
"""

from __future__ import annotations

import hashlib
import random

import pytest

from clients import (admin_client, consume_all, create_topic, kp_consume_all, produce_all,
                     unique_topic)

PARTITIONS = 3
RECORDS = 3000


def records(seed: int):
    """(key, value, headers) with values of 1 byte to 6 KiB, all distinct."""
    rnd = random.Random(seed)
    out = []
    for i in range(RECORDS):
        size = rnd.choice([1, 50, 700, 3000, 6000])
        digest = hashlib.sha256(f"{seed}-{i}".encode()).digest()
        out.append((str(i).encode(), (digest * (size // 32 + 1))[:size] + digest, ()))
    return out


@pytest.fixture(scope="module")
def filled(module_broker):
    """A topic of several small segments per partition (segment.bytes 64 KiB), its records
    in batches of a few KiB to ~30 KiB."""
    topic = unique_topic("zerocopy")
    create_topic(admin_client(module_broker.bootstrap), topic, PARTITIONS,
                 config={"segment.bytes": str(64 * 1024)})
    recs = records(7)
    by_partition = {p: [] for p in range(PARTITIONS)}
    for i, rec in enumerate(recs):
        by_partition[i % PARTITIONS].append(rec)
    for p, part in by_partition.items():
        produce_all(module_broker.bootstrap, topic, part, partition=p,
                    **{"batch.size": 30_000, "linger.ms": 5})
    segments = list((module_broker.data_dir / "logs" / f"{topic}-0").glob("*.log"))
    assert len(segments) > 5, f"expected several segments, found {len(segments)}"
    return module_broker, topic, by_partition


def check(got, by_partition):
    for p, part in by_partition.items():
        mine = [r for r in got if r.partition == p]
        assert [r.offset for r in mine] == list(range(len(part))), f"partition {p} offsets"
        assert [(r.key, r.value) for r in mine] == [(k, v) for k, v, _ in part], \
            f"partition {p}: a record read back differs"


@pytest.mark.parametrize("max_bytes", [1, 5000, 65_536, 1 << 20])
def test_librdkafka_reads_every_record_at_any_fetch_size(filled, max_bytes):
    broker, topic, by_partition = filled
    got = consume_all(broker.bootstrap, topic, range(PARTITIONS), expected=RECORDS,
                      **{"fetch.message.max.bytes": max_bytes})
    check(got, by_partition)
    broker.assert_alive()


@pytest.mark.parametrize("max_bytes", [1, 5000, 1 << 20])
def test_kafka_python_reads_every_record_at_any_fetch_size(filled, max_bytes):
    broker, topic, by_partition = filled
    got = kp_consume_all(broker.bootstrap, topic, range(PARTITIONS), expected=RECORDS,
                         max_partition_fetch_bytes=max_bytes)
    check(got, by_partition)
    broker.assert_alive()
