"""The page-cache window (`log_page_cache_window_bytes`): the broker keeps each partition's
newest data in the page cache and releases the rest once it is on disk, and a read of data
behind the window releases what it read. Every byte must still read back, for durable and
relaxed (`flush.messages`) topics, and the segment file's resident pages (`fincore`, which
asks the kernel with mincore) must stay near the window instead of growing with the log.
"""

from __future__ import annotations

import hashlib
import subprocess

import pytest

from clients import admin_client, consume_all, create_topic, produce_all, unique_topic, wait_until

MIB = 1 << 20
WINDOW = 1 * MIB
# The broker releases in steps of 8 MiB; a relaxed topic's release covers the previous step
# again (its pages were still being written back the first time).
STEP = 8 * MIB
RECORD = 4096
RECORDS = 12_000  # ~47 MiB in one partition


def value(i: int) -> bytes:
    seed = hashlib.sha256(i.to_bytes(8, "big")).digest()
    return (seed * (RECORD // len(seed) + 1))[:RECORD]


def resident_bytes(path) -> int:
    out = subprocess.run(["fincore", "--bytes", "--noheadings", "--output", "RES", str(path)],
                         check=True, capture_output=True, text=True).stdout
    return int(out.split()[0])


def segment(broker, topic: str):
    logs = sorted((broker.data_dir / "logs" / f"{topic}-0").glob("*.log"))
    assert len(logs) == 1, f"expected one segment, found {logs}"
    return logs[0]


@pytest.mark.parametrize("config", [{}, {"flush.messages": "100000", "flush.ms": "600000"}],
                         ids=["durable", "relaxed"])
def test_data_behind_the_window_is_released_and_reads_back(broker_factory, config):
    broker = broker_factory(env={"STRATA_LOG_PAGE_CACHE_WINDOW_BYTES": str(WINDOW)})
    topic = unique_topic("pagecache")
    create_topic(admin_client(broker.bootstrap), topic, 1, config=config)
    records = [(None, value(i), ()) for i in range(RECORDS)]
    produce_all(broker.bootstrap, topic, records, partition=0, flush_every=2000,
                **{"batch.size": 1_000_000, "linger.ms": 20})

    path = segment(broker, topic)
    size = path.stat().st_size
    assert size > RECORDS * RECORD
    # Durable: released right after each fsync. Relaxed: each release drops the range before
    # the last step, so up to two steps plus the window stay (written back in the meantime).
    bound = WINDOW + (STEP if not config else 2 * STEP) + 2 * MIB
    wait_until(lambda: resident_bytes(path) <= bound, 10,
               what=f"resident pages of {path.name} within {bound} bytes")
    assert resident_bytes(path) < size // 2

    # A reader from the start: everything behind the window comes from disk and goes again.
    got = consume_all(broker.bootstrap, topic, [0], expected=RECORDS, timeout_s=60)
    assert [r.offset for r in got] == list(range(RECORDS))
    assert all(r.value == value(i) for i, r in enumerate(got)), "a record read back differs"
    assert resident_bytes(path) <= bound + 2 * STEP, "a read behind the window kept its pages"
    broker.assert_alive()


def test_window_zero_keeps_everything_cached(broker_factory):
    """0 turns the window off: nothing is released (Kafka's behaviour)."""
    broker = broker_factory(env={"STRATA_LOG_PAGE_CACHE_WINDOW_BYTES": "0"})
    topic = unique_topic("pagecache-off")
    create_topic(admin_client(broker.bootstrap), topic, 1)
    records = [(None, value(i), ()) for i in range(RECORDS // 2)]
    produce_all(broker.bootstrap, topic, records, partition=0, flush_every=2000,
                **{"batch.size": 1_000_000, "linger.ms": 20})
    path = segment(broker, topic)
    # Memory pressure could evict pages, but this machine has gigabytes free.
    assert resident_bytes(path) >= path.stat().st_size * 0.9
