"""Tiered storage on a replicated topic in a three-broker cluster sharing one object store:
only the partition's leader uploads, a new leader carries on where the old one stopped (the
objects tile the offsets with no overlap or gap), and archived offsets read back the same from
whichever broker leads.
"""

from __future__ import annotations

import re
import time

from confluent_kafka import Producer
from confluent_kafka.admin import NewTopic

from clients import admin_client, unique_topic
from test_cluster import Cluster
from test_replication import FAST_LEASES, bootstrap_of, read_partition, wait_state

TIMEOUT_S = 60
SEGMENT_BYTES = 64 * 1024


ANSI = re.compile(r"\x1b\[[0-9;]*m")
ARCHIVED = re.compile(r": archived .*first_offset=(\d+) last_offset=(\d+)")


def committed_uploads(cluster: Cluster, topic: str) -> dict[int, list[tuple[int, int]]]:
    """Per broker, the (first, last) offsets of every segment of partition 0 it archived and
    committed to the manifest (each logged once, after the commit)."""
    out = {}
    for i, b in cluster.nodes.items():
        text = ANSI.sub("", b.log_path.read_text(errors="replace"))
        out[i] = [(int(m.group(1)), int(m.group(2))) for line in text.splitlines()
                  if f"partition={topic}-0 " in line and (m := ARCHIVED.search(line))]
    return out


def all_ranges(cluster: Cluster, topic: str) -> list[tuple[int, int]]:
    return sorted(r for rs in committed_uploads(cluster, topic).values() for r in rs)


def produce(cluster: Cluster, topic: str, values: list[bytes]):
    p = Producer({"bootstrap.servers": bootstrap_of(cluster), "acks": "all",
                  "enable.idempotence": True, "linger.ms": 5, "message.timeout.ms": 60000,
                  "batch.size": 16384})
    errors = []
    for v in values:
        p.produce(topic, v, partition=0, on_delivery=lambda e, m: e and errors.append(e))
    assert p.flush(60) == 0 and not errors, errors


def wait_until(predicate, what: str, timeout_s: float = TIMEOUT_S):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def test_only_the_leader_uploads_and_a_new_leader_carries_on(broker_factory, tmp_path):
    store = tmp_path / "store"
    config = tmp_path / "tiering.toml"
    config.write_text(f"[tiering]\nurl = \"file://{store}\"\nupload_interval_ms = 200\n")
    cluster = Cluster(broker_factory, broker_factory.binary, voters=3, extra_env=FAST_LEASES,
                      extra_args=("--config", str(config)))
    cluster.start_all()
    topic = unique_topic("ctier")
    admin = admin_client(cluster.nodes[1].bootstrap)
    admin.create_topics([NewTopic(topic, 1, 3, config={
        "min.insync.replicas": "2", "remote.storage.enable": "true",
        "local.retention.ms": "1", "segment.bytes": str(SEGMENT_BYTES)})])[topic].result(30)
    leader, _ = wait_state(cluster, topic, lambda l, isr: len(isr) == 3, "ISR of 3")

    first = [b"a-%06d-" % i + b"x" * 200 for i in range(3000)]
    produce(cluster, topic, first)
    wait_until(lambda: len(all_ranges(cluster, topic)) >= 3, "uploads by the first leader")
    by = committed_uploads(cluster, topic)
    assert by[leader] and all(not rs for i, rs in by.items() if i != leader), by
    assert list(store.rglob("*.parquet")), "nothing in the shared store"

    # The leader dies; its successor archives the rest, starting where the manifest ends.
    before = all_ranges(cluster, topic)
    cluster.nodes[leader].kill()
    new_leader, _ = wait_state(cluster, topic, lambda l, isr: l != leader, "a new leader")
    second = [b"b-%06d-" % i + b"y" * 200 for i in range(3000)]
    produce(cluster, topic, second)
    wait_until(lambda: len(all_ranges(cluster, topic)) >= len(before) + 3,
               "uploads by the new leader")
    assert committed_uploads(cluster, topic)[new_leader]
    ranges = all_ranges(cluster, topic)
    for (f1, l1), (f2, _) in zip(ranges, ranges[1:]):
        assert f2 == l1 + 1, f"objects overlap or leave a gap: {ranges}"
    assert ranges[0][0] == 0, ranges

    # Every record from offset 0, archived or local, reads back from the new leader.
    log = read_partition(cluster, topic)
    assert list(log.values()) == first + second
    cluster.nodes[leader].start()
    wait_state(cluster, topic, lambda l, isr: len(isr) == 3, "the old leader back in sync")
