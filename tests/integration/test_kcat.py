"""kcat (Debian's, linking librdkafka 2.0.2): produce with every codec, read it all back.

kcat's producer relies on auto topic creation through Metadata, so these tests also cover
that path with the default of 3 partitions.
"""

from __future__ import annotations

import json
import random
import zlib

import pytest

from clients import run_kcat, unique_topic

CODECS = ["none", "gzip", "snappy", "lz4", "zstd"]
DEFAULT_PARTITIONS = 3
# One line per record; '|' never occurs in keys, values or headers, and %K/%S disambiguate.
CONSUME_FORMAT = "%p|%o|%K|%k|%S|%s|%h\n"


def kcat_produce(kcat, broker, topic, lines: bytes, *extra: str) -> None:
    run_kcat(kcat, ["-P", "-b", broker.bootstrap, "-t", topic, "-m", "30",
                    "-X", "linger.ms=20", *extra], input=lines)


def kcat_consume(kcat, broker, topic, fmt: str = CONSUME_FORMAT, *extra: str) -> bytes:
    return run_kcat(kcat, ["-C", "-b", broker.bootstrap, "-t", topic, "-m", "30",
                           "-o", "beginning", "-e", "-q", "-f", fmt, *extra])


def parse_lines(out: bytes):
    """Rows of (partition, offset, key or None, value or None, headers) from CONSUME_FORMAT."""
    rows = []
    for line in out.decode().splitlines():
        p, o, klen, k, vlen, v, h = line.split("|", 6)
        key = None if klen == "-1" else k
        value = None if vlen == "-1" else v
        if key is not None:
            assert len(key.encode()) == int(klen), line
        if value is not None:
            assert len(value.encode()) == int(vlen), line
        rows.append((int(p), int(o), key, value, h))
    return rows


def kcat_metadata(kcat, broker, topic: str | None = None) -> dict:
    args = ["-L", "-J", "-b", broker.bootstrap, "-m", "30"]
    if topic:
        args += ["-t", topic]
    return json.loads(run_kcat(kcat, args))


def expected_partition(key: str, partitions: int = DEFAULT_PARTITIONS) -> int:
    # librdkafka's default partitioner (consistent_random) hashes non-empty keys with CRC-32.
    return zlib.crc32(key.encode()) % partitions


@pytest.mark.parametrize("codec", CODECS)
def test_keyed_records_with_headers_round_trip(kcat_bin, module_broker, codec):
    topic = unique_topic(f"kcat-{codec}")
    n = 300
    records = [(f"key-{i % 23:02d}", f"v{i:04d}-{codec}-" + "lorem ipsum " * (i % 9))
               for i in range(n)]
    lines = "".join(f"{k}:{v}\n" for k, v in records).encode()
    kcat_produce(kcat_bin, module_broker, topic, lines, "-z", codec, "-K", ":",
                 "-H", "trace=abc123", "-H", f"codec={codec}")

    rows = parse_lines(kcat_consume(kcat_bin, module_broker, topic))

    expected = {p: [] for p in range(DEFAULT_PARTITIONS)}
    for k, v in records:
        expected[expected_partition(k)].append((k, v))
    got = {p: [] for p in range(DEFAULT_PARTITIONS)}
    for p, o, k, v, h in rows:
        assert p in got, f"record in partition {p} of a {DEFAULT_PARTITIONS}-partition topic"
        assert h == f"trace=abc123,codec={codec}"
        got[p].append((o, k, v))
    for p in range(DEFAULT_PARTITIONS):
        got[p].sort()
        assert [o for o, _, _ in got[p]] == list(range(len(expected[p]))), f"offsets in p{p}"
        assert [(k, v) for _, k, v in got[p]] == expected[p], f"content of p{p}"
    assert len(rows) == n


def test_null_and_empty_keys_and_values(kcat_bin, module_broker):
    topic = unique_topic("kcat-null")
    # -Z: an empty key or value is sent as NULL.
    kcat_produce(kcat_bin, module_broker, topic,
                 b"k-null-1:\nk-val-2:v2\n:v-nullkey-3\n:\nk-null-5:\n",
                 "-p", "0", "-K", ":", "-Z")
    # Without -Z the same shapes are empty but not NULL.
    kcat_produce(kcat_bin, module_broker, topic, b"k-empty-6:\n:v-emptykey-7\n",
                 "-p", "0", "-K", ":")

    rows = parse_lines(kcat_consume(kcat_bin, module_broker, topic, CONSUME_FORMAT, "-p", "0"))
    assert rows == [
        (0, 0, "k-null-1", None, ""),
        (0, 1, "k-val-2", "v2", ""),
        (0, 2, None, "v-nullkey-3", ""),
        (0, 3, None, None, ""),
        (0, 4, "k-null-5", None, ""),
        (0, 5, "k-empty-6", "", ""),
        (0, 6, "", "v-emptykey-7", ""),
    ]


def parse_binary_records(out: bytes):
    """Parse '%o|%K|%k|%R%s' output: offset, key length, key, int32 value length, value."""
    rows = []
    pos = 0
    while pos < len(out):
        bar = out.index(b"|", pos)
        offset = int(out[pos:bar])
        pos = bar + 1
        bar = out.index(b"|", pos)
        klen = int(out[pos:bar])
        pos = bar + 1
        key = None
        if klen >= 0:
            key = out[pos:pos + klen]
            pos += klen
        assert out[pos:pos + 1] == b"|", f"separator after key at {pos}"
        pos += 1
        vlen = int.from_bytes(out[pos:pos + 4], "big", signed=True)
        pos += 4
        value = None
        if vlen >= 0:
            value = out[pos:pos + vlen]
            assert len(value) == vlen, f"value truncated: {len(value)} of {vlen} bytes"
            pos += vlen
        rows.append((offset, key, value))
    return rows


@pytest.mark.parametrize("codec", ["none", "zstd"])
def test_900_kib_record(kcat_bin, module_broker, tmp_path, codec):
    topic = unique_topic(f"kcat-big-{codec}")
    big = random.Random(900).randbytes(900 * 1024)
    path = tmp_path / "big.bin"
    path.write_bytes(big)
    # A file argument (without -l) is sent as one message.
    kcat_produce(kcat_bin, module_broker, topic, None, "-p", "0", "-z", codec, "-k", "bigkey",
                 str(path))
    kcat_produce(kcat_bin, module_broker, topic, b"after:small\n", "-p", "0", "-K", ":")

    out = kcat_consume(kcat_bin, module_broker, topic, "%o|%K|%k|%R%s", "-p", "0")
    rows = parse_binary_records(out)
    assert len(rows) == 2
    assert rows[0][0] == 0 and rows[0][1] == b"bigkey"
    assert len(rows[0][2]) == len(big)
    assert rows[0][2] == big
    assert rows[1] == (1, b"after", b"small")


def test_metadata_lists_topic_with_default_partitions(kcat_bin, module_broker):
    topic = unique_topic("kcat-meta")
    kcat_produce(kcat_bin, module_broker, topic, b"k:v\n", "-K", ":")

    md = kcat_metadata(kcat_bin, module_broker, topic)
    assert len(md["brokers"]) == 1
    node = md["brokers"][0]
    assert node["name"] == module_broker.bootstrap
    topics = [t for t in md["topics"] if t["topic"] == topic]
    assert len(topics) == 1, md["topics"]
    t = topics[0]
    assert "error" not in t, t
    parts = sorted(t["partitions"], key=lambda p: p["partition"])
    assert [p["partition"] for p in parts] == list(range(DEFAULT_PARTITIONS))
    for p in parts:
        assert "error" not in p, p
        assert p["leader"] == node["id"]
        assert [r["id"] for r in p["replicas"]] == [node["id"]]
        assert [r["id"] for r in p["isrs"]] == [node["id"]]

    # The full listing (no -t) includes it too.
    all_md = kcat_metadata(kcat_bin, module_broker)
    assert topic in {t["topic"] for t in all_md["topics"]}
