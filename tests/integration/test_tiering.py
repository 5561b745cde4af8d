"""Tiered storage seen from outside: sealed segments of topics with remote.storage.enable=true
become Parquet objects in a real S3-API server (moto, see s3.py), local copies go once they are
uploaded and local.retention.* has passed, and every client keeps reading from offset 0 as if
nothing had moved.

What each test relies on:

- `<data_dir>/tier-status.json`, which the broker rewrites every upload interval, and the
  `strata tier status` command that prints it; the tests poll it (never sleep) with deadlines.
- The object keys `<prefix>/topics/<topic>/partition=<n>/<first:020>-<last:020>.parquet`
  (docs/TABLE.md), listed with boto3, and the Parquet columns, read with DuckDB.
- The local segment files `<data_dir>/logs/<topic>-<p>/<base:020>.log`.

Groups: (1) 200k records end to end through S3, read back by confluent-kafka, kcat and
ListOffsets; (2) the objects as a table, with DuckDB, for S3 and for the default local-directory
store (`strata tier sql`); (3) faults: moto SIGKILLed and restarted with its data, moto absent
when the broker starts, the broker SIGKILLed mid-upload; (4) total retention by time and by
size removing remote objects; enabling remote storage on an existing topic; (5) `strata tier
status`.

The tests that share one broker (the module's `tier` fixture) each use their own topics; the
200k-record archive is produced once (`archive`) and read by several tests. The fault tests
run their own brokers (and, where moto is killed, their own moto).
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaError, TopicPartition
from confluent_kafka.admin import AlterConfigOpType, ConfigEntry, ConfigResource, ResourceType

import wire
from clients import (DeliveryLog, Record, admin_client, consume_all, create_topic,
                     kp_consume_all, producer, run_kcat, unique_topic, watermarks)
from conftest import BrokerFactory, free_port
from s3 import MotoServer

TIMEOUT_S = 30
UPLOAD_INTERVAL_MS = 200
# How long uploads and local deletion may take to catch up after the last produce.
CATCH_UP_S = 60
E2E_RECORDS = 200_000
E2E_PARTITIONS = 2
E2E_SEGMENT_BYTES = 256 * 1024
SMALL_SEGMENT_BYTES = 16 * 1024
TIERED = {"remote.storage.enable": "true", "local.retention.ms": "1"}
# librdkafka skips batch CRC checks by default; rebuilt batches must carry correct ones.
CHECK_CRCS = {"check.crcs": True}
STATUS_FIELDS = {
    "topic": str, "partition": int, "log_start_offset": int, "local_start_offset": int,
    "high_watermark": int, "remote_segments": int, "remote_bytes": int,
    "remote_end_offset": int, "local_bytes": int, "upload_lag_bytes": int,
    "upload_lag_segments": int,
}
STATUS_TOTALS = ("uploads_total", "upload_errors_total", "uploaded_bytes_total",
                 "remote_reads_total", "cache_hits", "cache_misses")
EARLIEST = -2
LATEST = -1
EARLIEST_LOCAL = -4


# ---- records ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Spec:
    """One record to produce: where, and exactly what."""
    partition: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes | None], ...]
    timestamp: int


def varied_records(n: int, partitions: int, base_ts: int, tag: str = "") -> list[Spec]:
    """Round-robin over partitions. Keys: null, empty, UTF-8 and non-UTF-8 bytes; values:
    null, empty and unique text; headers on some (duplicate keys, null and empty values,
    non-ASCII keys); CreateTime timestamps base_ts + 2*i, so a lookup at an odd millisecond
    falls between two records. No key or value contains '|' or a newline (kcat's output)."""
    out = []
    t = tag.encode()
    for i in range(n):
        if i % 13 == 0:
            key = None
        elif i % 101 == 0:
            key = b""
        elif i % 17 == 0:
            key = b"\xff\xfe\x00bin-%d" % (i % 100)
        else:
            key = ("clé-%d" % (i % 4099)).encode()
        if i % 97 == 0:
            value = None
        elif i % 89 == 0:
            value = b""
        else:
            value = b"%sv%07d-" % (t, i) + b"x" * (i % 40)
        headers: list[tuple[str, bytes | None]] = []
        if i % 5 == 0:
            headers.append(("trace", b"t%d" % i))
        if i % 15 == 0:
            headers += [("dup", b"1"), ("dup", b"2")]
        if i % 35 == 0:
            headers.append(("null-value", None))
        if i % 45 == 0:
            headers += [("empty", b""), ("ключ", b"\xff\x00\x01")]
        out.append(Spec(i % partitions, key, value, tuple(headers), base_ts + 2 * i))
    return out


def produce_specs(bootstrap: str, topic: str, specs: list[Spec], batch_bytes: int = 4096,
                  **conf) -> None:
    """Produce every spec to its partition, in batches of up to batch_bytes (well below the
    segment size, so that segments hold several batches); all must be acknowledged."""
    p = producer(bootstrap, **{"linger.ms": 20, "batch.size": batch_bytes,
                               "queue.buffering.max.messages": 200000, **conf})
    log = DeliveryLog()
    for s in specs:
        while True:
            try:
                p.produce(topic, key=s.key, value=s.value, headers=list(s.headers) or None,
                          partition=s.partition, timestamp=s.timestamp, on_delivery=log)
                break
            except BufferError:
                p.poll(0.1)
        p.poll(0)
    remaining = p.flush(60)
    assert remaining == 0, f"{remaining} records still undelivered after flush"
    assert not log.failed, f"{len(log.failed)} deliveries failed: {log.failed[:5]}"
    assert len(log.acked) == len(specs)


def placed(specs_per_call: list[list[Spec]]) -> dict[int, list[Record]]:
    """The records as a consumer must see them, per partition, for a new topic: produced in
    order (one producer call after another, each flushed, no retries), so partition p holds
    its specs in order from offset 0."""
    out: dict[int, list[Record]] = {}
    for specs in specs_per_call:
        for s in specs:
            recs = out.setdefault(s.partition, [])
            recs.append(Record(s.partition, len(recs), s.key, s.value, s.headers, s.timestamp))
    return out


def describe_difference(got: list[Record], want: list[Record]) -> str:
    """A short account of how two record lists differ (a plain == diff of 100k records is
    unreadable and slow)."""
    lines = [f"got {len(got)} records, expected {len(want)}"]
    got_offsets = [(r.partition, r.offset) for r in got]
    dupes = len(got_offsets) - len(set(got_offsets))
    if dupes:
        lines.append(f"{dupes} duplicate (partition, offset) pairs")
    missing = sorted(set((r.partition, r.offset) for r in want) - set(got_offsets))
    if missing:
        lines.append(f"{len(missing)} missing, first {missing[:10]}")
    extra = sorted(set(got_offsets) - set((r.partition, r.offset) for r in want))
    if extra:
        lines.append(f"{len(extra)} unexpected, first {extra[:10]}")
    for i, (g, w) in enumerate(zip(got, want)):
        if g != w:
            lines.append(f"first difference at index {i}:\n  got      {g}\n  expected {w}")
            break
    return "\n".join(lines)


def assert_records(got: list[Record], want: list[Record], what: str) -> None:
    if got != want:
        raise AssertionError(f"{what}: {describe_difference(got, want)}")


def read_all(bootstrap: str, topic: str, partitions, **kwargs) -> list[Record]:
    """clients.consume_all with batch CRC checks on."""
    return consume_all(bootstrap, topic, partitions, **kwargs, **CHECK_CRCS)


def consume_n(bootstrap: str, topic: str, partition: int, start: int, n: int,
              **conf) -> list[Record]:
    """n records of one partition from `start` (no end-of-partition wait)."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "strata-it-assign-only",
                  "enable.auto.commit": False, "auto.offset.reset": "error",
                  **CHECK_CRCS, **conf})
    try:
        c.assign([TopicPartition(topic, partition, start)])
        out: list[Record] = []
        errors = []
        deadline = time.monotonic() + TIMEOUT_S
        while len(out) < n and time.monotonic() < deadline:
            msg = c.poll(0.2)
            if msg is None:
                continue
            if msg.error() is not None:
                errors.append(msg.error())
                continue
            out.append(Record(msg.partition(), msg.offset(), msg.key(), msg.value(),
                              tuple((k, v) for k, v in (msg.headers() or [])),
                              msg.timestamp()[1]))
        assert len(out) >= n, (f"{topic}-{partition} from {start}: {len(out)} of {n} records "
                               f"in {TIMEOUT_S} s; errors {errors[:5]}")
        return out[:n]
    finally:
        c.close()


def fetch_error(bootstrap: str, topic: str, partition: int, offset: int) -> KafkaError:
    """Fetch from `offset` with auto.offset.reset=error: the first error event."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "strata-it-assign-only",
                  "enable.auto.commit": False, "auto.offset.reset": "error"})
    try:
        c.assign([TopicPartition(topic, partition, offset)])
        deadline = time.monotonic() + TIMEOUT_S
        while time.monotonic() < deadline:
            msg = c.poll(0.2)
            if msg is None:
                continue
            assert msg.error() is not None, (
                f"fetch {topic}-{partition} from {offset} returned a record at {msg.offset()}")
            return msg.error()
        raise AssertionError(f"no error fetching {topic}-{partition} from offset {offset}")
    finally:
        c.close()


def assert_out_of_range(bootstrap: str, topic: str, partition: int, offset: int) -> None:
    err = fetch_error(bootstrap, topic, partition, offset)
    assert err.code() == KafkaError._AUTO_OFFSET_RESET and "Offset out of range" in err.str(), (
        f"fetch {topic}-{partition} from {offset}: expected OFFSET_OUT_OF_RANGE, got {err}")


# ---- ListOffsets v8 on the wire (EARLIEST_LOCAL = -4 has no client API) ------------------------


def list_offsets(port: int, topic: str, partition: int, timestamp: int) -> tuple[int, int, int]:
    """ListOffsets v8 for one partition: (error code, offset, timestamp)."""
    body = (wire.i32(-1) + wire.i8(0)  # replica id, isolation level
            + wire.uvarint(2) + wire.compact_string(topic)
            + wire.uvarint(2) + wire.i32(partition) + wire.i32(-1) + wire.i64(timestamp)
            + wire.NO_TAGS + wire.NO_TAGS + wire.NO_TAGS)
    req = wire.frame(wire.request_header(2, 8, 77, flexible=True) + body)
    payload = wire.exchange(port, req, timeout_s=TIMEOUT_S)
    assert payload is not None, "broker closed the connection on ListOffsets v8"
    r = wire.Reader(payload)
    assert r.i32() == 77
    r.skip_tags()
    r.i32()  # throttle
    assert r.uvarint() == 2, "expected one topic"
    name = r.take(r.uvarint() - 1).decode()
    assert name == topic
    assert r.uvarint() == 2, "expected one partition"
    assert r.i32() == partition
    error = r.i16()
    ts, offset = struct.unpack(">qq", r.take(16))
    return error, offset, ts


def list_offset(port: int, topic: str, partition: int, timestamp: int) -> int:
    error, offset, _ = list_offsets(port, topic, partition, timestamp)
    assert error == 0, f"ListOffsets {topic}-{partition} at {timestamp}: error {error}"
    return offset


# ---- status, segments, objects ----------------------------------------------------------------


def read_status(broker) -> dict | None:
    """The broker's tier-status.json, or None while it does not exist (or is mid-rewrite)."""
    try:
        return json.loads((broker.data_dir / "tier-status.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def part_status(status: dict | None, topic: str, partition: int) -> dict | None:
    if not status:
        return None
    for e in status.get("partitions", []):
        if e.get("topic") == topic and e.get("partition") == partition:
            return e
    return None


def local_bases(broker, topic: str, partition: int) -> list[int]:
    """Base offsets of the partition's local segment files, oldest first."""
    d = broker.data_dir / "logs" / f"{topic}-{partition}"
    return sorted(int(p.stem) for p in d.glob("*.log"))


def poll(predicate, timeout_s: float, what: str, explain=lambda: ""):
    """predicate() until truthy (returned); on timeout fail with explain()'s diagnosis."""
    deadline = time.monotonic() + timeout_s
    while True:
        got = predicate()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}\n"
                                 f"{explain()}")
        time.sleep(0.1)


def explain_partitions(broker, topic: str, partitions) -> str:
    status = read_status(broker)
    lines = []
    if status is None:
        lines.append(f"{broker.data_dir / 'tier-status.json'} missing or unreadable")
    else:
        totals = {k: status.get(k) for k in STATUS_TOTALS}
        lines.append(f"status totals: {totals}")
    for p in partitions:
        bases = local_bases(broker, topic, p)
        lines.append(f"{topic}-{p}: status {part_status(status, topic, p)}; "
                     f"{len(bases)} local segments {bases[:3]}..{bases[-2:]}")
    return "\n".join(lines)


def status_refreshes(broker, count: int = 2) -> dict:
    """Wait until the broker has rewritten tier-status.json `count` more times; returns it."""
    first = poll(lambda: read_status(broker), TIMEOUT_S, "tier-status.json")
    seen = [first["updated_ms"]]

    def advanced():
        s = read_status(broker)
        if s and s["updated_ms"] > seen[-1]:
            seen.append(s["updated_ms"])
            if len(seen) > count:
                return s
        return None

    return poll(advanced, TIMEOUT_S, f"{count} rewrites of tier-status.json",
                lambda: f"updated_ms seen: {seen}")


def fully_tiered(broker, topic: str, ends: dict[int, int]) -> dict[int, dict]:
    """Wait until every sealed segment of each partition is uploaded and deleted locally:
    the status reports all of `ends` (partition -> high watermark), no upload lag, the remote
    data ending where the local log starts, and the only .log file left on disk is the active
    segment, starting there. Returns the status entries."""
    def done():
        status = read_status(broker)
        out = {}
        for p, end in ends.items():
            e = part_status(status, topic, p)
            if e is None or e["high_watermark"] != end or e["upload_lag_segments"] != 0:
                return None
            if not (0 < e["local_start_offset"] == e["remote_end_offset"] <= end):
                return None
            if local_bases(broker, topic, p) != [e["local_start_offset"]]:
                return None
            out[p] = e
        return out

    return poll(done, CATCH_UP_S, f"{topic}: sealed segments uploaded and deleted locally",
                lambda: explain_partitions(broker, topic, ends))


def assert_no_unuploaded_deletion(broker, topic: str, partition: int) -> None:
    """No local segment is gone whose data is not in the store: the oldest local segment
    starts at or before the end of the remote data (0 when nothing is remote). The disk is
    read before the status, and both only move forward, so a race can only make this
    check more lenient, never fail it wrongly."""
    bases = local_bases(broker, topic, partition)
    e = part_status(read_status(broker), topic, partition)
    remote_end = 0 if e is None or e["remote_end_offset"] == -1 else e["remote_end_offset"]
    assert bases, f"{topic}-{partition} has no local segment at all"
    assert bases[0] <= remote_end, (
        f"{topic}-{partition}: local data starts at {bases[0]} but only offsets below "
        f"{remote_end} are in the store: a segment was deleted before its upload\n"
        + explain_partitions(broker, topic, [partition]))


def parse_object_key(key: str) -> tuple[int, int, int]:
    """(partition, first offset, last offset) of an archived segment's object key."""
    *_, part_dir, name = key.split("/")
    assert part_dir.startswith("partition="), key
    assert name.endswith(".parquet"), key
    first, last = name[:-len(".parquet")].split("-")
    assert len(first) == len(last) == 20, f"offsets not zero-padded to 20 digits: {key}"
    return int(part_dir[len("partition="):]), int(first), int(last)


def remote_ranges(moto: MotoServer, prefix: str, topic: str, partition: int
                  ) -> list[tuple[int, int, int]]:
    """(first, last, size) of the objects archived for one partition, in offset order."""
    objs = moto.list_objects(f"{prefix}/topics/{topic}/partition={partition}/")
    out = []
    for o in objs:
        p, first, last = parse_object_key(o.key)
        assert p == partition, o.key
        out.append((first, last, o.size))
    return sorted(out)


def assert_tiles(ranges: list[tuple[int, int, int]], start: int, end: int, what: str) -> None:
    """The archived ranges cover start..end-1 exactly: no gap, no overlap."""
    assert ranges, f"{what}: no objects"
    expected = start
    for first, last, _ in ranges:
        assert first == expected, (
            f"{what}: object {first}-{last} where {expected} was expected "
            f"({'overlap' if first < expected else 'gap'}); ranges "
            f"{[(f, l) for f, l, _ in ranges]}")
        assert last >= first
        expected = last + 1
    assert expected == end, f"{what}: objects end at {expected}, expected {end}"


def assert_store_matches_status(moto, prefix, broker, topic, partition, start: int = 0):
    """The objects listed in S3 tile [start, remote end) and agree with the status entry."""
    e = part_status(read_status(broker), topic, partition)
    ranges = remote_ranges(moto, prefix, topic, partition)
    what = f"{topic}-{partition} objects in s3://{moto.bucket}/{prefix}"
    assert_tiles(ranges, start, e["remote_end_offset"], what)
    assert e["remote_segments"] == len(ranges), (what, e)
    assert e["remote_bytes"] == sum(size for *_, size in ranges), (what, e)


# ---- broker and CLI ---------------------------------------------------------------------------


def tiering_broker(factory: BrokerFactory, name: str, toml: str, start: bool = True):
    config = factory.base / f"{name}-{len(factory.brokers)}.toml"
    config.write_text(toml)
    b = factory(name, start=False, extra_args=("--config", str(config)))
    b.config_path = config
    if start:
        b.start()
    return b


def strata_cli(broker, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STRATA_")}
    proc = subprocess.run([str(broker.binary), *args], capture_output=True, timeout=TIMEOUT_S,
                          env=env, text=True)
    if check:
        assert proc.returncode == 0, (
            f"strata {' '.join(args)} exited {proc.returncode}\nstdout: {proc.stdout[-2000:]}"
            f"\nstderr: {proc.stderr[-2000:]}")
    return proc


def set_topic_config(bootstrap: str, topic: str, configs: dict[str, str]) -> None:
    admin = admin_client(bootstrap)
    res = ConfigResource(ResourceType.TOPIC, topic, incremental_configs=[
        ConfigEntry(k, v, incremental_operation=AlterConfigOpType.SET)
        for k, v in configs.items()])
    admin.incremental_alter_configs([res])[res].result(TIMEOUT_S)


def topic_config(bootstrap: str, topic: str) -> dict[str, str]:
    # Keep the client referenced until the result arrives: a collected client cancels it.
    admin = admin_client(bootstrap)
    [fut] = admin.describe_configs([ConfigResource(ResourceType.TOPIC, topic)]).values()
    return {k: v.value for k, v in fut.result(TIMEOUT_S).items()}


# ---- fixtures ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def moto(tmp_path_factory):
    server = MotoServer(tmp_path_factory.mktemp("moto")).start()
    yield server
    server.kill()


@dataclass
class Tier:
    broker: object
    moto: MotoServer
    prefix: str


@pytest.fixture(scope="module")
def tier(strata_bin, tmp_path_factory, moto):
    """One broker tiering to s3://strata/cluster on the module's moto."""
    factory = BrokerFactory(strata_bin, tmp_path_factory.mktemp("tiering"))
    prefix = "cluster"
    b = tiering_broker(factory, "tier", moto.tiering_toml(prefix, UPLOAD_INTERVAL_MS))
    yield Tier(b, moto, prefix)
    factory.close()


@dataclass
class Archive:
    tier: Tier
    topic: str
    # Partition -> every record as produced, at its offset.
    records: dict[int, list[Record]]
    # Partition -> status entry once fully tiered.
    entries: dict[int, dict] = field(default_factory=dict)

    @property
    def broker(self):
        return self.tier.broker


@pytest.fixture(scope="module")
def archive(tier) -> Archive:
    """200k records on two partitions of a tiered topic with 256 KiB segments, produced
    (half uncompressed, half lz4) and waited for until only the active segments are local."""
    b = tier.broker
    topic = unique_topic("tier-e2e")
    create_topic(admin_client(b.bootstrap), topic, partitions=E2E_PARTITIONS,
                 config={**TIERED, "segment.bytes": str(E2E_SEGMENT_BYTES)})
    base_ts = int(time.time() * 1000) - 3600 * 1000
    specs = varied_records(E2E_RECORDS, E2E_PARTITIONS, base_ts)
    half = E2E_RECORDS // 2
    produce_specs(b.bootstrap, topic, specs[:half], batch_bytes=32768)
    produce_specs(b.bootstrap, topic, specs[half:], batch_bytes=32768,
                  **{"compression.type": "lz4"})
    records = placed([specs[:half], specs[half:]])
    ends = {p: len(r) for p, r in records.items()}
    for p, end in ends.items():
        assert watermarks(b.bootstrap, topic, p) == (0, end)
    entries = fully_tiered(b, topic, ends)
    for p, e in entries.items():
        # Many segments went remote, and the active one is less than a segment's worth.
        assert e["remote_end_offset"] > ends[p] // 2, e
        assert e["log_start_offset"] == 0, e
    return Archive(tier, topic, records, entries)


# ---- 1. end to end ----------------------------------------------------------------------------


@pytest.mark.timeout(300)
def test_archived_records_read_back_byte_identical(archive):
    """Every record, from offset 0, through the object store: same keys, values, headers,
    timestamps, offsets, in order; then from inside a remote segment; and the store holds
    exactly the sealed segments."""
    b, topic = archive.broker, archive.topic
    for p, e in archive.entries.items():
        assert_store_matches_status(archive.tier.moto, archive.tier.prefix, b, topic, p)
        assert e["last_error"] is None, e
    reads_before = read_status(b)["remote_reads_total"]

    got = read_all(b.bootstrap, topic, range(E2E_PARTITIONS), expected=E2E_RECORDS,
                   timeout_s=180)
    want = [r for p in range(E2E_PARTITIONS) for r in archive.records[p]]
    assert_records(got, want, f"{topic} consumed from 0")

    # Start in the middle of a remote segment, not at a batch or segment boundary.
    e = archive.entries[0]
    start = e["remote_end_offset"] // 2 + 7
    got = consume_n(b.bootstrap, topic, 0, start, 500)
    assert_records(got, archive.records[0][start:start + 500], f"{topic}-0 from {start}")
    # A partition fetch limit far below the batch size: the broker must still return the
    # first whole batch (KIP-74), from the store as from local segments.
    got = consume_n(b.bootstrap, topic, 1, start, 3000, **{"max.partition.fetch.bytes": 1024})
    assert_records(got, archive.records[1][start:start + 3000],
                   f"{topic}-1 from {start}, 1 KiB partition fetches")

    # The reads went to the store.
    s = status_refreshes(b, 1)
    assert s["remote_reads_total"] > reads_before, {k: s[k] for k in STATUS_TOTALS}


@pytest.mark.timeout(300)
def test_list_offsets_over_remote_and_local_data(archive):
    b, topic = archive.broker, archive.topic
    c = Consumer({"bootstrap.servers": b.bootstrap, "group.id": "strata-it-assign-only"})
    try:
        for p, recs in archive.records.items():
            e = archive.entries[p]
            local_start, end = e["local_start_offset"], len(recs)
            assert watermarks(b.bootstrap, topic, p) == (0, end)
            assert list_offset(b.port, topic, p, EARLIEST) == 0
            assert list_offset(b.port, topic, p, EARLIEST_LOCAL) == local_start
            assert list_offset(b.port, topic, p, LATEST) == end
            # Timestamps step by 4 ms within a partition: an exact hit, a lookup between two
            # records, one before everything, and one in the local tail.
            remote = recs[local_start // 3]
            cases = [(remote.timestamp, remote.offset), (remote.timestamp + 1, remote.offset + 1),
                     (recs[0].timestamp - 60_000, 0),
                     (recs[local_start].timestamp - 1, local_start),
                     (recs[-1].timestamp, recs[-1].offset)]
            for ts, want in cases:
                [hit] = c.offsets_for_times([TopicPartition(topic, p, ts)], timeout=TIMEOUT_S)
                assert hit.error is None, hit.error
                assert hit.offset == want, f"{topic}-{p} offsets_for_times({ts}): {hit.offset}, " \
                                           f"expected {want} (local start {local_start})"
    finally:
        c.close()


@pytest.mark.timeout(300)
def test_kcat_reads_archived_partition(kcat_bin, archive):
    b, topic = archive.broker, archive.topic
    want = archive.records[0]
    out = run_kcat(kcat_bin, ["-C", "-b", b.bootstrap, "-t", topic, "-p", "0", "-o", "beginning",
                              "-e", "-q", "-f", "%o|%K|%k|%S|%s|%T\n"], timeout_s=180)
    lines = out.split(b"\n")
    assert lines[-1] == b"", "kcat output does not end with a newline"
    rows = []
    for line in lines[:-1]:
        o, klen, k, vlen, v, ts = line.split(b"|")
        key = None if klen == b"-1" else k
        value = None if vlen == b"-1" else v
        rows.append((int(o), key, value, int(ts)))
    expected = [(r.offset, r.key, r.value, r.timestamp) for r in want]
    if rows != expected:
        got = [Record(0, o, k, v, (), ts) for o, k, v, ts in rows]
        raise AssertionError("kcat: " + describe_difference(
            got, [Record(0, o, k, v, (), ts) for o, k, v, ts in expected]))


@pytest.mark.timeout(300)
def test_tiered_topic_configs_are_described(archive):
    cfg = topic_config(archive.broker.bootstrap, archive.topic)
    assert cfg["remote.storage.enable"] == "true"
    assert cfg["local.retention.ms"] == "1"
    assert cfg["segment.bytes"] == str(E2E_SEGMENT_BYTES)
    # Per-tier sizes, read-only, match what the tier status reports.
    status = status_refreshes(archive.broker)
    parts = [e for e in status["partitions"] if e["topic"] == archive.topic]
    assert int(cfg["strata.remote.size.bytes"]) == sum(e["remote_bytes"] for e in parts), cfg
    assert int(cfg["strata.local.size.bytes"]) > 0, cfg
    # Tiering cannot be switched off on a topic with an archive (Kafka's rule).
    with pytest.raises(Exception) as err:
        set_topic_config(archive.broker.bootstrap, archive.topic, {"remote.storage.enable": "false"})
    assert "INVALID_CONFIG" in str(err.value) or "object store" in str(err.value), err.value
    assert topic_config(archive.broker.bootstrap, archive.topic)["remote.storage.enable"] == "true"


# ---- 2. the archive as a table ----------------------------------------------------------------


@pytest.mark.timeout(300)
def test_duckdb_reads_objects_downloaded_from_s3(archive, tmp_path):
    import duckdb
    b, topic, moto = archive.broker, archive.topic, archive.tier.moto
    for p in archive.entries:
        assert_store_matches_status(moto, archive.tier.prefix, b, topic, p)
    prefix = f"{archive.tier.prefix}/topics/{topic}/"
    files = moto.download(prefix, tmp_path)
    assert files, f"nothing under s3://{moto.bucket}/{prefix}"
    con = duckdb.connect()

    # Each object holds exactly the offsets its name says, one row per record.
    for f in files:
        p, first, last = parse_object_key(f"{prefix}{f.relative_to(tmp_path)}")
        n, lo, hi = con.execute('SELECT count(*), min("offset"), max("offset") '
                                "FROM read_parquet(?)", [str(f)]).fetchone()
        assert (n, lo, hi) == (last - first + 1, first, last), f"{f}: {(n, lo, hi)}"

    # The whole archive, with the Hive-style partition column.
    rows = con.execute(
        'SELECT partition, count(*), min("offset"), max("offset"), '
        "count(*) FILTER (WHERE is_control) "
        f"FROM read_parquet('{tmp_path}/**/*.parquet', hive_partitioning = true) "
        "GROUP BY partition ORDER BY partition").fetchall()
    want = [(p, e["remote_end_offset"], 0, e["remote_end_offset"] - 1, 0)
            for p, e in sorted(archive.entries.items())]
    assert [(int(p), *rest) for p, *rest in rows] == want

    # Every archived row of partition 0, column by column, as produced.
    p0 = sorted(str(f) for f in files if f.parent.name == "partition=0")
    got = con.execute('SELECT "offset", key, value, epoch_ms("timestamp"), headers '
                      "FROM read_parquet(?) ORDER BY \"offset\"", [p0]).fetchall()
    archived = archive.records[0][:archive.entries[0]["remote_end_offset"]]
    assert len(got) == len(archived)
    for (offset, key, value, ts, headers), r in zip(got, archived):
        hs = tuple((h["key"], h["value"]) for h in headers or [])
        row = Record(0, offset, key, value, hs, ts)
        assert row == r, f"parquet row differs:\n  got      {row}\n  expected {r}"
        assert all(h["key_raw"] is None for h in headers or []), (offset, headers)


@pytest.mark.timeout(180)
def test_tier_sql_for_a_local_directory_store_runs_in_duckdb(broker_factory):
    import duckdb
    b = tiering_broker(broker_factory, "local-store",
                       f"[tiering]\nupload_interval_ms = {UPLOAD_INTERVAL_MS}\n")
    topic = unique_topic("tier-sql")
    create_topic(admin_client(b.bootstrap), topic, partitions=1,
                 config={**TIERED, "segment.bytes": str(SMALL_SEGMENT_BYTES)})
    specs = varied_records(5000, 1, int(time.time() * 1000) - 60_000, tag="sql")
    produce_specs(b.bootstrap, topic, specs)
    want = placed([specs])[0]
    e = fully_tiered(b, topic, {0: len(want)})[0]

    # The default store is a directory under the data dir, laid out like the S3 one.
    status = read_status(b)
    store = b.data_dir / "objects"
    assert status["store"].startswith("file://"), status["store"]
    assert Path(status["store"][len("file://"):]).resolve() == store.resolve(), status["store"]
    files = sorted((store / "topics" / topic / "partition=0").glob("*.parquet"))
    ranges = [(*parse_object_key(str(f.relative_to(store)))[1:], f.stat().st_size)
              for f in files]
    assert_tiles(ranges, 0, e["remote_end_offset"], f"{topic} objects under {store}")

    sql = strata_cli(b, "tier", "sql", "--topic", topic, "--data-dir", str(b.data_dir),
                     "--config", str(b.config_path), "--engine", "duckdb").stdout
    assert len(duckdb.extract_statements(sql)) == 1, f"not exactly one statement:\n{sql}"
    con = duckdb.connect()
    try:
        rel = con.execute(sql)
    except duckdb.Error as err:
        raise AssertionError(f"duckdb cannot run the printed SQL: {err}\n{sql}") from None
    columns = [d[0] for d in rel.description]
    rows = [dict(zip(columns, row)) for row in rel.fetchall()]
    assert "offset" in columns, f"no offset column in {columns}:\n{sql}"
    archived = want[:e["remote_end_offset"]]
    assert sorted(r["offset"] for r in rows) == [r.offset for r in archived], sql
    if "value" in columns:
        by_offset = {r["offset"]: r["value"] for r in rows}
        for r in archived:
            v = by_offset[r.offset]
            v = v.encode() if isinstance(v, str) else v
            assert v == r.value, f"offset {r.offset}: value {v!r}, expected {r.value!r}"

    # The other engines print something too.
    for extra in ((), ("--engine", "spark")):
        out = strata_cli(b, "tier", "sql", "--topic", topic, "--data-dir", str(b.data_dir),
                         "--config", str(b.config_path), *extra).stdout
        assert "parquet" in out.lower(), out


# ---- 3. faults --------------------------------------------------------------------------------


def faults_topic(b, records: int, tag: str, base_ts: int):
    topic = unique_topic(f"tier-{tag}")
    create_topic(admin_client(b.bootstrap), topic, partitions=1,
                 config={**TIERED, "segment.bytes": str(SMALL_SEGMENT_BYTES)})
    return topic, varied_records(records, 1, base_ts, tag=tag)


def error_seen(b, topic: str, errors_before: int):
    s = read_status(b)
    e = part_status(s, topic, 0)
    if s and (s["upload_errors_total"] > errors_before or (e and e["last_error"])):
        return s
    return None


@pytest.mark.timeout(240)
def test_store_outage_keeps_serving_and_loses_nothing(broker_factory, tmp_path):
    """moto is SIGKILLed with uploads pending and restarted later with its data (s3.py's
    persist mode): meanwhile the broker takes writes, serves its local data, reports the
    errors and deletes nothing that is not uploaded; afterwards uploads resume and every
    record reads back from 0."""
    moto = MotoServer(tmp_path / "moto", persist=True).start()
    try:
        b = tiering_broker(broker_factory, "outage", moto.tiering_toml("outage"))
        base_ts = int(time.time() * 1000) - 600_000
        topic, specs = faults_topic(b, 16000, "outage", base_ts)
        first, second = specs[:8000], specs[8000:]
        produce_specs(b.bootstrap, topic, first)
        # Kill the store as soon as the first object is in it, with most uploads to come.
        objects = f"outage/topics/{topic}/partition=0/"
        poll(lambda: moto.list_objects(objects), CATCH_UP_S, "a first upload",
             lambda: explain_partitions(b, topic, [0]))
        errors_before = (read_status(b) or {}).get("upload_errors_total", 0)
        moto.kill()
        produce_specs(b.bootstrap, topic, second)
        want = placed([first, second])[0]

        def erroring():
            assert_no_unuploaded_deletion(b, topic, 0)
            return error_seen(b, topic, errors_before)

        s = poll(erroring, CATCH_UP_S, "the broker to report failing uploads",
                 lambda: explain_partitions(b, topic, [0]))
        # Several more upload rounds against the dead store: still nothing unsafe deleted.
        for _ in range(3):
            status_refreshes(b, 1)
            assert_no_unuploaded_deletion(b, topic, 0)
        e = part_status(read_status(b), topic, 0)
        assert e["upload_lag_segments"] > 0, e
        assert e["high_watermark"] == len(want), e
        b.assert_alive()
        # What is local is served as usual.
        local_start = local_bases(b, topic, 0)[0]
        got = read_all(b.bootstrap, topic, [0], expected=len(want) - local_start,
                       start=local_start)
        assert_records(got, want[local_start:], f"{topic} from local start {local_start}")

        moto.start()
        e = fully_tiered(b, topic, {0: len(want)})[0]
        assert e["last_error"] is None, f"last_error not cleared after recovery: {e}"
        assert read_status(b)["upload_errors_total"] > errors_before, s
        assert_store_matches_status(moto, "outage", b, topic, 0)
        got = read_all(b.bootstrap, topic, [0], expected=len(want), timeout_s=60)
        assert_records(got, want, f"{topic} after the store came back")
    finally:
        moto.kill()


@pytest.mark.timeout(240)
def test_store_down_when_the_broker_starts(broker_factory, tmp_path):
    """The broker starts and serves with nothing listening at the store's endpoint; it keeps
    every segment until the store appears, then uploads them."""
    moto = MotoServer(tmp_path / "moto", port=free_port())
    try:
        b = tiering_broker(broker_factory, "store-down", moto.tiering_toml("late"))
        topic, specs = faults_topic(b, 6000, "late", int(time.time() * 1000) - 600_000)
        produce_specs(b.bootstrap, topic, specs)
        want = placed([specs])[0]
        poll(lambda: error_seen(b, topic, 0), CATCH_UP_S, "the broker to report failing uploads",
             lambda: explain_partitions(b, topic, [0]))
        status_refreshes(b, 2)
        assert local_bases(b, topic, 0)[0] == 0, "a segment was deleted without being uploaded"
        e = part_status(read_status(b), topic, 0)
        assert (e["log_start_offset"], e["local_start_offset"]) == (0, 0), e
        assert e["remote_segments"] == 0 and e["upload_lag_segments"] > 0, e
        got = read_all(b.bootstrap, topic, [0], expected=len(want))
        assert_records(got, want, f"{topic} with the store down")

        moto.start()
        fully_tiered(b, topic, {0: len(want)})
        assert_store_matches_status(moto, "late", b, topic, 0)
        got = read_all(b.bootstrap, topic, [0], expected=len(want), timeout_s=60)
        assert_records(got, want, f"{topic} after the store came up")
    finally:
        moto.kill()


@pytest.mark.timeout(240)
def test_broker_killed_mid_upload_recovers_consistent_archive(broker_factory, moto):
    """SIGKILL while many sealed segments wait for upload; after a restart the archive in
    S3 tiles the log with no gap or overlap, and every record is read exactly once."""
    prefix = f"crash-{uuid.uuid4().hex[:8]}"
    b = tiering_broker(broker_factory, "crash", moto.tiering_toml(prefix))
    base_ts = int(time.time() * 1000) - 600_000
    topic, specs = faults_topic(b, 30000, "crash", base_ts)
    produce_specs(b.bootstrap, topic, specs)
    objects = f"{prefix}/topics/{topic}/partition=0/"
    # Kill as soon as the first objects appear, while most segments still wait.
    uploaded = poll(lambda: moto.list_objects(objects), CATCH_UP_S, "a first upload",
                    lambda: explain_partitions(b, topic, [0]))
    b.kill()
    bases = local_bases(b, topic, 0)
    print(f"killed with {len(uploaded)} objects in the store and {len(bases)} local segments")

    b.start()
    more = varied_records(2000, 1, base_ts + 2 * len(specs), tag="after")
    want = placed([specs, more])[0]
    got = read_all(b.bootstrap, topic, [0], expected=len(specs), timeout_s=60)
    assert_records(got, want[:len(specs)], f"{topic} right after the restart")
    produce_specs(b.bootstrap, topic, more)

    e = fully_tiered(b, topic, {0: len(want)})[0]
    assert e["remote_segments"] > 20, f"too few segments to have been mid-upload: {e}"
    assert_store_matches_status(moto, prefix, b, topic, 0)
    got = read_all(b.bootstrap, topic, [0], expected=len(want), timeout_s=60)
    assert_records(got, want, f"{topic} after catching up")
    # kafka-python decodes the (rebuilt) batches itself and checks their CRCs.
    got = kp_consume_all(b.bootstrap, topic, [0], expected=len(want), timeout_s=120)
    assert_records(got, want, f"{topic} read by kafka-python")


# ---- 4. retention -----------------------------------------------------------------------------


@pytest.mark.timeout(180)
def test_total_retention_deletes_remote_objects_and_moves_log_start(tier):
    b, moto = tier.broker, tier.moto
    topic = unique_topic("tier-retention")
    create_topic(admin_client(b.bootstrap), topic, partitions=1,
                 config={**TIERED, "segment.bytes": str(SMALL_SEGMENT_BYTES),
                         "retention.ms": "-1"})
    # All in the past (2 ms apart), so that soon after the produce every record is older
    # than the retention.ms set below.
    specs = varied_records(6000, 1, int(time.time() * 1000) - 2 * 6000 - 1000, tag="ret")
    produce_specs(b.bootstrap, topic, specs)
    want = placed([specs])[0]
    e = fully_tiered(b, topic, {0: len(want)})[0]
    active = e["local_start_offset"]
    objects = f"{tier.prefix}/topics/{topic}/"
    assert moto.list_objects(objects), "no objects before retention"
    got = read_all(b.bootstrap, topic, [0], expected=len(want))
    assert_records(got, want, f"{topic} before retention")

    # Every record is now older than retention.ms: the remote objects go, the log start moves.
    set_topic_config(b.bootstrap, topic, {"retention.ms": "2000"})

    def expired():
        s = part_status(read_status(b), topic, 0)
        left = moto.list_objects(objects)
        if s and s["remote_segments"] == 0 and not left and s["log_start_offset"] >= active:
            return s
        return None

    e = poll(expired, CATCH_UP_S, f"{topic}: remote objects deleted by retention.ms",
             lambda: f"objects left: {[o.key for o in moto.list_objects(objects)][:5]}\n"
                     + explain_partitions(b, topic, [0]))
    start = e["log_start_offset"]
    assert e["remote_bytes"] == 0, e
    assert watermarks(b.bootstrap, topic, 0) == (start, len(want))
    assert list_offset(b.port, topic, 0, EARLIEST) == start
    assert list_offset(b.port, topic, 0, EARLIEST_LOCAL) >= start
    assert_out_of_range(b.bootstrap, topic, 0, 0)
    assert_out_of_range(b.bootstrap, topic, 0, start - 1)
    if start < len(want):
        got = read_all(b.bootstrap, topic, [0], expected=len(want) - start)
        assert_records(got, want[start:], f"{topic} after retention")


@pytest.mark.timeout(180)
def test_size_retention_deletes_the_oldest_remote_objects(tier):
    """retention.bytes counts both tiers: the oldest objects go, a suffix of the archive
    stays, and the log start moves to the first object left. (Whether remote data is counted
    at its segment or its Parquet size is the broker's choice: retention.bytes is set to two
    segments, so either way some but not all of the ~30 objects go.)"""
    b, moto = tier.broker, tier.moto
    topic = unique_topic("tier-retention-bytes")
    create_topic(admin_client(b.bootstrap), topic, partitions=1,
                 config={**TIERED, "segment.bytes": str(SMALL_SEGMENT_BYTES)})
    specs = varied_records(14000, 1, int(time.time() * 1000) - 60_000, tag="rb")
    produce_specs(b.bootstrap, topic, specs)
    want = placed([specs])[0]
    fully_tiered(b, topic, {0: len(want)})
    before = remote_ranges(moto, tier.prefix, topic, 0)
    assert len(before) > 15, f"only {len(before)} objects"

    set_topic_config(b.bootstrap, topic, {"retention.bytes": str(2 * SMALL_SEGMENT_BYTES)})

    def trimmed():
        e = part_status(read_status(b), topic, 0)
        if e is None or e["log_start_offset"] == 0:
            return None
        now = remote_ranges(moto, tier.prefix, topic, 0)
        if not now or now[0][0] != e["log_start_offset"] or len(now) != e["remote_segments"]:
            return None
        return e

    poll(trimmed, CATCH_UP_S, f"{topic}: oldest objects deleted by retention.bytes",
         lambda: explain_partitions(b, topic, [0]))
    # Settled: further rounds delete nothing more.
    status_refreshes(b, 2)
    e = trimmed()
    assert e is not None, explain_partitions(b, topic, [0])
    after = remote_ranges(moto, tier.prefix, topic, 0)
    assert 0 < len(after) < len(before), (len(after), len(before))
    assert after == before[len(before) - len(after):], "retention did not take a prefix"
    start = e["log_start_offset"]
    assert_store_matches_status(moto, tier.prefix, b, topic, 0, start=start)
    assert watermarks(b.bootstrap, topic, 0) == (start, len(want))
    assert list_offset(b.port, topic, 0, EARLIEST) == start
    assert_out_of_range(b.bootstrap, topic, 0, start - 1)
    got = read_all(b.bootstrap, topic, [0], expected=len(want) - start)
    assert_records(got, want[start:], f"{topic} after size retention")


# ---- configs ----------------------------------------------------------------------------------


@pytest.mark.timeout(180)
def test_enabling_remote_storage_on_an_existing_topic(tier):
    """Not tiered: nothing uploads and local.retention.ms does not delete. remote.storage.enable
    =true (IncrementalAlterConfigs): segments upload and stay local (local.retention.ms -2 =
    retention.ms); then local.retention.ms=1: the local copies go."""
    b, moto = tier.broker, tier.moto
    topic = unique_topic("tier-alter")
    create_topic(admin_client(b.bootstrap), topic, partitions=1,
                 config={"segment.bytes": str(SMALL_SEGMENT_BYTES), "local.retention.ms": "1"})
    specs = varied_records(4000, 1, int(time.time() * 1000) - 60_000, tag="alter")
    produce_specs(b.bootstrap, topic, specs)
    want = placed([specs])[0]
    bases = local_bases(b, topic, 0)
    assert len(bases) > 5, bases

    s = status_refreshes(b, 2)
    assert part_status(s, topic, 0) is None, "a topic without remote storage is in tier status"
    objects = f"{tier.prefix}/topics/{topic}/"
    assert moto.list_objects(objects) == [], "objects uploaded for a topic without remote storage"
    assert local_bases(b, topic, 0) == bases
    assert topic_config(b.bootstrap, topic).get("remote.storage.enable") != "true"

    set_topic_config(b.bootstrap, topic, {"remote.storage.enable": "true",
                                          "local.retention.ms": "-2"})
    assert topic_config(b.bootstrap, topic)["remote.storage.enable"] == "true"

    def uploaded():
        e = part_status(read_status(b), topic, 0)
        if e and e["upload_lag_segments"] == 0 and e["remote_end_offset"] == bases[-1]:
            return e
        return None

    e = poll(uploaded, CATCH_UP_S, f"{topic}: sealed segments uploaded",
             lambda: explain_partitions(b, topic, [0]))
    status_refreshes(b, 2)
    assert local_bases(b, topic, 0) == bases, "local.retention.ms=-2 deleted local segments"
    assert e["local_start_offset"] == 0, e
    assert_store_matches_status(moto, tier.prefix, b, topic, 0)
    assert list_offset(b.port, topic, 0, EARLIEST_LOCAL) == 0

    set_topic_config(b.bootstrap, topic, {"local.retention.ms": "1"})
    e = fully_tiered(b, topic, {0: len(want)})[0]
    assert e["local_start_offset"] == bases[-1], e
    assert list_offset(b.port, topic, 0, EARLIEST) == 0
    assert list_offset(b.port, topic, 0, EARLIEST_LOCAL) == bases[-1]
    got = read_all(b.bootstrap, topic, [0], expected=len(want))
    assert_records(got, want, f"{topic} after tiering was enabled")


# ---- 5. tier status ---------------------------------------------------------------------------


@pytest.mark.timeout(300)
def test_tier_status_command(archive):
    b, topic = archive.broker, archive.topic
    plain = unique_topic("tier-untiered")
    create_topic(admin_client(b.bootstrap), plain, partitions=1)
    produce_specs(b.bootstrap, plain, varied_records(10, 1, int(time.time() * 1000)))
    status_refreshes(b, 1)

    table = strata_cli(b, "tier", "status", "--data-dir", str(b.data_dir)).stdout
    assert topic in table, table
    for p, recs in archive.records.items():
        assert str(len(recs)) in table, f"high watermark {len(recs)} of partition {p}:\n{table}"
    assert plain not in table, f"an untiered topic is listed:\n{table}"
    with pytest.raises(json.JSONDecodeError):
        json.loads(table)

    doc = json.loads(strata_cli(b, "tier", "status", "--data-dir", str(b.data_dir),
                                "--json").stdout)
    assert doc["store"] == f"s3://{archive.tier.moto.bucket}/{archive.tier.prefix}", doc["store"]
    assert isinstance(doc["updated_ms"], int)
    assert abs(doc["updated_ms"] - time.time() * 1000) < 60_000, doc["updated_ms"]
    for k in STATUS_TOTALS:
        assert isinstance(doc[k], int) and doc[k] >= 0, (k, doc.get(k))
    for e in doc["partitions"]:
        for k, t in STATUS_FIELDS.items():
            assert isinstance(e[k], t), (k, e)
        assert e["last_error"] is None or isinstance(e["last_error"], str), e
        assert e["log_start_offset"] <= e["local_start_offset"] <= e["high_watermark"], e
    assert all(e["topic"] != plain for e in doc["partitions"]), "an untiered topic is listed"
    mine = sorted((e for e in doc["partitions"] if e["topic"] == topic),
                  key=lambda e: e["partition"])
    assert [e["partition"] for e in mine] == list(range(E2E_PARTITIONS))
    for e in mine:
        p = e["partition"]
        assert e["high_watermark"] == len(archive.records[p]), e
        assert e["remote_end_offset"] == e["local_start_offset"] > 0, e
        assert e["upload_lag_segments"] == 0 and e["upload_lag_bytes"] == 0, e
        assert e["remote_segments"] > 0 and e["remote_bytes"] > 0 and e["local_bytes"] > 0, e
    assert doc["uploads_total"] >= sum(e["remote_segments"] for e in mine)
    assert doc["uploaded_bytes_total"] >= sum(e["remote_bytes"] for e in mine)


# ---- 6. a damaged archive, tier profiles -------------------------------------------------------


def test_missing_remote_object_fails_only_its_partition(broker_factory):
    """An archived object that vanished from the store fails reads of its range only, for
    that partition only, and the broker logs the object key; the rest keeps being served."""
    b = tiering_broker(broker_factory, "damaged",
                       f"[tiering]\nupload_interval_ms = {UPLOAD_INTERVAL_MS}\n")
    topic = unique_topic("tier-damaged")
    create_topic(admin_client(b.bootstrap), topic, partitions=2,
                 config={**TIERED, "segment.bytes": str(SMALL_SEGMENT_BYTES)})
    specs = varied_records(6000, 2, int(time.time() * 1000) - 60_000, tag="damaged")
    produce_specs(b.bootstrap, topic, specs)
    want = placed([specs])
    tiered = fully_tiered(b, topic, {p: len(want[p]) for p in (0, 1)})

    # Remove the object holding offset 0 of partition 0.
    objects = sorted((b.data_dir / "objects" / "topics" / topic / "partition=0").glob("*.parquet"))
    first = objects[0]
    first_last = int(first.stem.split("-")[1])
    assert first_last + 1 < tiered[0]["remote_end_offset"], "need a second object after it"
    first.unlink()

    # The other partition, and partition 0 past the missing object, read back whole.
    assert_records(consume_n(b.bootstrap, topic, 1, 0, len(want[1])), want[1], f"{topic}-1")
    after = want[0][first_last + 1:]
    assert_records(consume_n(b.bootstrap, topic, 0, first_last + 1, len(after)), after,
                   f"{topic}-0 after the missing object")

    # Reading the missing range delivers nothing and fails loudly on the broker.
    c = Consumer({"bootstrap.servers": b.bootstrap, "group.id": "strata-it-assign-only",
                  "enable.auto.commit": False, "auto.offset.reset": "error"})
    try:
        c.assign([TopicPartition(topic, 0, 0)])
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            msg = c.poll(0.2)
            assert msg is None or msg.error() is not None, (
                f"read offset {msg.offset()} from an object that no longer exists")
    finally:
        c.close()
    key = f"topics/{topic}/partition=0/{first.name}"
    poll(lambda: key in b.log_path.read_text(errors="replace")
         and "remote read failed" in b.log_path.read_text(errors="replace"),
         TIMEOUT_S, f"the broker log names the missing object {key}")
    status = status_refreshes(b)
    assert status["remote_read_errors_total"] > 0, status
    b.assert_alive()


def test_tier_profile_supplies_topic_configs(broker_factory):
    """A topic adopts a [tier_profiles.<name>] of the broker config; its own configs win; an
    unknown profile is refused."""
    b = tiering_broker(broker_factory, "profiles", (
        f"[tiering]\nupload_interval_ms = {UPLOAD_INTERVAL_MS}\n\n"
        "[tier_profiles.hot1s]\n"
        "\"remote.storage.enable\" = \"true\"\n"
        "\"local.retention.ms\" = \"1\"\n"
        "\"retention.ms\" = \"31536000000\"\n"))
    admin = admin_client(b.bootstrap)
    topic = unique_topic("tier-profile")
    create_topic(admin, topic, partitions=1, config={
        "strata.tier.profile": "hot1s", "retention.ms": "604800000",
        "segment.bytes": str(SMALL_SEGMENT_BYTES)})
    cfg = topic_config(b.bootstrap, topic)
    assert cfg["remote.storage.enable"] == "true", cfg
    assert cfg["local.retention.ms"] == "1", cfg
    assert cfg["retention.ms"] == "604800000", "the topic's own config wins over the profile"

    specs = varied_records(3000, 1, int(time.time() * 1000) - 60_000, tag="profile")
    produce_specs(b.bootstrap, topic, specs)
    want = placed([specs])[0]
    fully_tiered(b, topic, {0: len(want)})
    assert_records(consume_n(b.bootstrap, topic, 0, 0, len(want)), want, topic)

    bad = unique_topic("tier-profile-unknown")
    with pytest.raises(Exception) as err:
        create_topic(admin, bad, partitions=1, config={"strata.tier.profile": "nope"})
    assert "INVALID_CONFIG" in str(err.value) or "nope" in str(err.value), err.value


def test_recreated_topic_never_serves_the_old_archive(broker_factory):
    """A tiered topic deleted and created again under the same name archives to the same
    object keys; reads must see only the new topic's records, never the old cache or
    objects."""
    from confluent_kafka.admin import AdminClient
    b = tiering_broker(broker_factory, "recreate",
                       f"[tiering]\nupload_interval_ms = {UPLOAD_INTERVAL_MS}\n")
    admin = admin_client(b.bootstrap)
    topic = unique_topic("tier-recreate")
    config = {**TIERED, "segment.bytes": str(SMALL_SEGMENT_BYTES)}
    generations = []
    # The old generation is longer: it has objects past the new one's range, which must go.
    for tag, count in (("old", 5000), ("new", 3000)):
        create_topic(admin, topic, partitions=1, config=config)
        specs = varied_records(count, 1, int(time.time() * 1000) - 60_000, tag=tag)
        produce_specs(b.bootstrap, topic, specs)
        want = placed([specs])[0]
        fully_tiered(b, topic, {0: len(want)})
        # Read it all, from the archive, so the cache holds it.
        assert_records(consume_n(b.bootstrap, topic, 0, 0, len(want)), want, f"{topic} ({tag})")
        generations.append(want)
        if tag == "old":
            admin.delete_topics([topic], operation_timeout=TIMEOUT_S)[topic].result(TIMEOUT_S)
            poll(lambda: topic not in AdminClient({"bootstrap.servers": b.bootstrap})
                 .list_topics(timeout=10).topics, TIMEOUT_S, f"{topic} deleted")
    assert generations[0] != generations[1], "the generations must differ"
    # The old generation's objects are gone from the store: only what the new one archived.
    store = b.data_dir / "objects" / "topics" / topic / "partition=0"

    def only_new_objects():
        e = part_status(read_status(b), topic, 0)
        files = sorted(store.glob("*.parquet"))
        return e is not None and len(files) == e["remote_segments"]
    poll(only_new_objects, CATCH_UP_S, f"{topic}: only the new generation's objects remain",
         lambda: f"{sorted(p.name for p in store.glob('*.parquet'))} vs "
                 f"{part_status(read_status(b), topic, 0)}")


def test_a_store_holding_another_clusters_archive_is_refused(broker_factory, tmp_path):
    """Two clusters on one store prefix would delete each other's objects: the second is
    refused at start with a message that says what to do."""
    store = tmp_path / "shared-store"
    toml = f"[tiering]\nurl = \"file://{store}\"\nupload_interval_ms = {UPLOAD_INTERVAL_MS}\n"
    first = tiering_broker(broker_factory, "owner", toml)
    poll(lambda: (store / "strata-cluster.json").is_file(), TIMEOUT_S, "the cluster marker")
    first.stop()
    # Same cluster (same data dir) again: accepted.
    first.start()
    first.stop()
    second = tiering_broker(broker_factory, "intruder", toml, start=False)
    code, log = second.start_expecting_exit()
    assert code != 0, log
    assert "another cluster" in log and "[tiering] url" in log, log


def produce_error(port: int, topic: str, batch: bytes) -> int:
    """Produce v3 of one batch to partition 0: the partition's error code."""
    payload = wire.exchange(port, wire.produce_request(4242, topic, 0, batch), timeout_s=TIMEOUT_S)
    assert payload is not None, "no produce response"
    r = wire.Reader(payload)
    assert r.i32() == 4242
    assert r.i32() == 1  # topics
    r.take(r.i16())  # name
    assert r.i32() == 1  # partitions
    assert r.i32() == 0
    return r.i16()


def test_tiered_topic_refuses_batches_that_could_not_be_archived(broker_factory):
    """A batch with a valid CRC whose records do not decode would stop the partition's
    archive for good: a tiered topic refuses it (INVALID_RECORD) and keeps serving; an
    untiered topic stores batches as sent."""
    b = tiering_broker(broker_factory, "validate",
                       f"[tiering]\nupload_interval_ms = {UPLOAD_INTERVAL_MS}\n")
    admin = admin_client(b.bootstrap)
    tiered, plain = unique_topic("tier-validate"), unique_topic("plain-validate")
    create_topic(admin, tiered, partitions=1, config={**TIERED, "segment.bytes": str(SMALL_SEGMENT_BYTES)})
    create_topic(admin, plain, partitions=1)
    good = wire.record_batch([(b"k", b"v", []), (None, b"w", [])], int(time.time() * 1000))
    # The first record's key claims 63 bytes inside an 8-byte record; the CRC matches the lie,
    # so only decoding the records finds it.
    bad = bytearray(good)
    assert bad[61:66] == bytes([0x10, 0x00, 0x00, 0x00, 0x02]), bad[61:66]
    bad[65] = 0x7E
    bad[17:21] = struct.pack(">I", wire.crc32c(bytes(bad[21:])))
    INVALID_RECORD = 87
    assert produce_error(b.port, tiered, bytes(bad)) == INVALID_RECORD
    assert produce_error(b.port, tiered, good) == 0
    assert produce_error(b.port, plain, bytes(bad)) == 0
    got = consume_n(b.bootstrap, tiered, 0, 0, 2)
    assert [(r.key, r.value) for r in got] == [(b"k", b"v"), (None, b"w")]
    b.assert_alive()


def test_admin_http_serves_metrics_and_tier_status(broker_factory):
    """Prometheus text at /metrics and the tier status JSON at /v1/tier/status, on the admin
    HTTP port."""
    import urllib.request
    port = free_port()
    b = tiering_broker(broker_factory, "http",
                       f"[tiering]\nupload_interval_ms = {UPLOAD_INTERVAL_MS}\n", start=False)
    b.extra_env["STRATA_HTTP_LISTEN"] = f"127.0.0.1:{port}"
    b.start()
    topic = unique_topic("tier-http")
    create_topic(admin_client(b.bootstrap), topic, partitions=1,
                 config={**TIERED, "segment.bytes": str(SMALL_SEGMENT_BYTES)})
    specs = varied_records(2000, 1, int(time.time() * 1000) - 60_000, tag="http")
    produce_specs(b.bootstrap, topic, specs)
    fully_tiered(b, topic, {0: len(specs)})

    def get(path: str) -> tuple[int, str, str]:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=TIMEOUT_S) as r:
            return r.status, r.headers.get("Content-Type", ""), r.read().decode()

    status, ctype, text = poll(lambda: _try(get, "/metrics"), TIMEOUT_S, "GET /metrics")
    assert status == 200 and ctype.startswith("text/plain"), (status, ctype)
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            samples[name] = float(value)
    assert samples["strata_tier_uploads_total"] > 0, text[:2000]
    assert samples[f'strata_tier_remote_bytes{{topic="{topic}",partition="0"}}'] > 0, text[:2000]
    assert samples[f'strata_partition_high_watermark{{topic="{topic}",partition="0"}}'] == len(specs)
    assert "# TYPE strata_tier_upload_lag_bytes gauge" in text
    # Every acknowledged produce was fsynced (group commit): the fsync histogram saw them.
    assert samples["strata_fsync_duration_seconds_count"] > 0, text[:2000]
    assert samples['strata_fsync_duration_seconds_bucket{le="+Inf"}'] == \
        samples["strata_fsync_duration_seconds_count"]
    assert samples["strata_produce_duration_seconds_count"] > 0, text[:2000]
    assert samples["strata_append_duration_seconds_count"] > 0, text[:2000]

    status, ctype, body = get("/v1/tier/status")
    assert status == 200 and ctype == "application/json"
    parsed = json.loads(body)
    assert any(p["topic"] == topic for p in parsed["partitions"]), parsed
    assert get("/health")[2] == "ok\n"


def _try(get, path):
    try:
        return get(path)
    except OSError:
        return None
