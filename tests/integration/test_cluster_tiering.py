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
OBJECT = re.compile(r"(\d+)-(\d+)\.parquet$")


def stored_ranges(store) -> list[tuple[int, int]]:
    """(first, last) offsets of every object in the store, sorted."""
    return sorted((int(m.group(1)), int(m.group(2)))
                  for path in store.rglob("*.parquet") if (m := OBJECT.search(path.name)))


def archive_chain(ranges: list[tuple[int, int]]) -> tuple[list[tuple[int, int]], list]:
    """The objects that tile the offsets from 0 with no overlap or gap, and the rest: an
    upload whose commit never happened (its leader killed between the PUT and the commit)
    stays in the store, unnamed by the manifest, until the orphan sweep."""
    by_first: dict[int, list[int]] = {}
    for first, last in ranges:
        by_first.setdefault(first, []).append(last)
    end = max(last for _, last in ranges)
    chain, at = [], 0
    while at in by_first:
        lasts = sorted(by_first[at], reverse=True)
        last = next((l for l in lasts if l + 1 in by_first or l == end), lasts[0])
        chain.append((at, last))
        at = last + 1
    rest = [r for r in ranges if r not in chain]
    return chain, rest
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
    # The objects tile the offsets from 0 to the last archived one: the new leader went on
    # where the manifest ended. At most one upload of the killed leader was left uncommitted.
    stored = stored_ranges(store)
    chain, rest = archive_chain(stored)
    assert chain and chain[-1][1] == max(l for _, l in stored), f"a gap: {stored}"
    assert len(rest) <= 1 and all(r[0] in {c[0] for c in chain} for r in rest), \
        f"objects outside the archive: {rest} (all: {stored})"
    # Every upload a broker logged as committed is part of that chain.
    assert set(all_ranges(cluster, topic)) <= set(chain)

    # Every record from offset 0, archived or local, reads back from the new leader.
    log = read_partition(cluster, topic)
    assert list(log.values()) == first + second
    cluster.nodes[leader].start()
    wait_state(cluster, topic, lambda l, isr: len(isr) == 3, "the old leader back in sync")
