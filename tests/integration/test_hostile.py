"""Hostile and broken clients on raw sockets. The broker must answer or close that one
connection, never hang, never crash, and keep serving everyone else with their data intact.

Every random choice comes from a fixed seed, so a failure replays exactly.
"""

from __future__ import annotations

import random
import socket
import struct

import pytest

import wire
from clients import (admin_client, consume_all, create_topic, placed, produce_all,
                     topic_partitions, unique_topic)

# The APIs the broker promises in this milestone (see the project brief).
REQUIRED_APIS = {
    0: "Produce", 1: "Fetch", 2: "ListOffsets", 3: "Metadata", 18: "ApiVersions",
    19: "CreateTopics", 20: "DeleteTopics", 21: "DeleteRecords", 23: "OffsetForLeaderEpoch",
    32: "DescribeConfigs", 33: "AlterConfigs", 35: "DescribeLogDirs", 37: "CreatePartitions",
    44: "IncrementalAlterConfigs", 60: "DescribeCluster",
}
INVALID_TOPIC_EXCEPTION = 17
CLOSE_TIMEOUT_S = 5.0
FUZZ_SEED = 0x5EED
FUZZ_CASES = 200


# ---- the encoders themselves, against kafka-python's generated codecs -------------------------


def test_hand_encoders_match_reference_codecs():
    from kafka.protocol.metadata import (ApiVersionsRequest, ApiVersionsResponse,
                                         MetadataRequest)
    from kafka.protocol.producer import ProduceRequest
    from kafka.record.default_records import DefaultRecordBatchBuilder

    assert wire.crc32c(b"123456789") == 0xE3069283  # the CRC-32C check value

    def ref(msg, corr):
        msg.with_header(correlation_id=corr, client_id="strata-tests")
        return bytes(msg.encode(header=True, framed=True))

    assert wire.api_versions_request(0, 7) == ref(ApiVersionsRequest(version=0), 7)
    assert wire.api_versions_request(3, 8) == ref(ApiVersionsRequest(
        version=3, client_software_name="strata-tests", client_software_version="1.0"), 8)
    assert wire.metadata_request(1, 9, None) == ref(MetadataRequest(version=1, topics=None), 9)
    topics = [MetadataRequest.MetadataRequestTopic(name="bad topic!")]
    assert wire.metadata_request(4, 10, ["bad topic!"]) == ref(
        MetadataRequest(version=4, topics=topics, allow_auto_topic_creation=True), 10)

    recs = [(b"k1", b"v1", [("h", b"1")]), (None, b"v2", []), (b"k3", None, [("a", b"x")])]
    builder = DefaultRecordBatchBuilder(magic=2, compression_type=0, is_transactional=0,
                                        producer_id=-1, producer_epoch=-1, base_sequence=-1,
                                        batch_size=1 << 20)
    for i, (k, v, h) in enumerate(recs):
        builder.append(i, 1_700_000_000_000 + i, k, v, h)
    batch = wire.record_batch(recs, 1_700_000_000_000)
    assert batch == bytes(builder.build())

    P = ProduceRequest
    produce = P(version=3, transactional_id=None, acks=-1, timeout_ms=5000, topic_data=[
        P.TopicProduceData(name="t", partition_data=[
            P.TopicProduceData.PartitionProduceData(index=2, records=batch)])])
    assert wire.produce_request(11, "t", 2, batch) == ref(produce, 11)

    # And the response decoder reads what the reference encodes, v0 and flexible v3.
    AV = ApiVersionsResponse
    for version in (0, 3):
        resp = AV(version=version, error_code=35 if version == 0 else 0, throttle_time_ms=0,
                  api_keys=[AV.ApiVersion(api_key=18, min_version=0, max_version=3),
                            AV.ApiVersion(api_key=3, min_version=0, max_version=12)])
        resp.with_header(correlation_id=5)
        payload = bytes(resp.encode(header=True, framed=True))[4:]
        got = wire.decode_api_versions(payload, version)
        assert (got.correlation_id, got.apis) == (5, {18: (0, 3), 3: (0, 12)})


# ---- fixtures ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def intact(module_broker):
    """Records written before any abuse; the last test reads them back."""
    topic = unique_topic("hostile-intact-data")
    create_topic(admin_client(module_broker.bootstrap), topic, partitions=3)
    records = [(b"k%d" % (i % 5), b"intact-%03d" % i, [("n", b"%d" % i)]) for i in range(60)]
    return topic, placed(records, produce_all(module_broker.bootstrap, topic, records))


@pytest.fixture
def target(module_broker, intact):
    """The shared broker; after each test it must still be alive and answering."""
    yield module_broker
    module_broker.assert_alive()
    resp = wire.exchange(module_broker.port, wire.api_versions_request(0, 4242))
    assert resp is not None, "broker closed a fresh, valid ApiVersions v0 request"
    assert wire.decode_api_versions(resp, 0).correlation_id == 4242


def supported(port: int) -> dict[int, tuple[int, int]]:
    resp = wire.exchange(port, wire.api_versions_request(0, 1))
    assert resp is not None
    return wire.decode_api_versions(resp, 0).apis


def send_then_expect_close(port: int, data: bytes, half_close: bool = False) -> bytes:
    """Send data; the broker must close the connection within CLOSE_TIMEOUT_S.
    Returns whatever it sent before closing."""
    with wire.connect(port) as s:
        try:
            s.sendall(data)
            if half_close:
                s.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError, OSError):
            # The broker closed first (ENOTCONN/EPIPE/ECONNRESET): that is the expected outcome.
            return b""
        closed, got = wire.read_until_close(s, CLOSE_TIMEOUT_S)
    assert closed, f"connection still open {CLOSE_TIMEOUT_S} s after {data[:32].hex()}..."
    return got


# ---- well-formed edge cases -------------------------------------------------------------------


def test_api_versions_v0(target):
    resp = wire.exchange(target.port, wire.api_versions_request(0, 0x1234ABCD))
    assert resp is not None, "broker closed the connection"
    r = wire.decode_api_versions(resp, 0)
    assert r.correlation_id == 0x1234ABCD
    assert r.error_code == 0
    for key, name in REQUIRED_APIS.items():
        assert key in r.apis, f"{name} ({key}) not advertised"
        lo, hi = r.apis[key]
        assert 0 <= lo <= hi, f"{name}: bad range {lo}..{hi}"
    assert r.apis[18][0] == 0 and r.apis[18][1] >= 3


def test_api_versions_v3_flexible(target):
    resp = wire.exchange(target.port, wire.api_versions_request(3, 77))
    assert resp is not None, "broker closed the connection"
    r = wire.decode_api_versions(resp, 3)
    assert (r.correlation_id, r.error_code, r.throttle_time_ms) == (77, 0, 0)
    assert r.apis == supported(target.port)


def test_api_versions_too_new_gets_v0_fallback(target):
    """KIP-511: a version the broker does not know is answered in the v0 shape with
    UNSUPPORTED_VERSION and the supported ranges; the client retries lower on the same
    connection. The request is shaped as a client's newest version would be: header v2 and a
    v3-style body."""
    header = wire.request_header(wire.API_API_VERSIONS, 99, 31337, flexible=True)
    body = wire.compact_string("strata-tests") + wire.compact_string("99.0") + wire.NO_TAGS
    with wire.connect(target.port) as s:
        s.sendall(wire.frame(header + body))
        resp = wire.read_response(s)
        assert resp is not None, "broker closed instead of answering UNSUPPORTED_VERSION"
        r = wire.decode_api_versions(resp, 0)
        assert (r.correlation_id, r.error_code) == (31337, wire.UNSUPPORTED_VERSION)
        assert r.apis == supported(target.port)
        # The retry at a supported version works on the same connection.
        s.sendall(wire.api_versions_request(3, 31338))
        retry = wire.read_response(s)
        assert retry is not None, "connection closed after the UNSUPPORTED_VERSION answer"
        assert wire.decode_api_versions(retry, 3).correlation_id == 31338


def test_pipelined_requests_answered_in_order(target):
    with wire.connect(target.port) as s:
        s.sendall(b"".join(wire.api_versions_request(v, 500 + i)
                           for i, v in enumerate([0, 3, 1, 2, 0])))
        corr = []
        for _ in range(5):
            resp = wire.read_response(s)
            assert resp is not None
            corr.append(struct.unpack(">i", resp[:4])[0])
    assert corr == [500, 501, 502, 503, 504]


@pytest.mark.parametrize("name", ["bad topic!", "..", "x" * 250, "ünïcode"])
def test_metadata_autocreate_of_invalid_topic_name(target, intact, name):
    from kafka.protocol.metadata import MetadataResponse
    intact_topic, _ = intact
    with wire.connect(target.port) as s:
        s.sendall(wire.metadata_request(4, 61, [name], allow_auto_topic_creation=True))
        resp = wire.read_response(s)
        assert resp is not None, "broker closed instead of answering"
        md = MetadataResponse.decode(resp, version=4, header=True)
        assert md.header.correlation_id == 61
        assert [(t.name, t.error_code) for t in md.topics] == [(name, INVALID_TOPIC_EXCEPTION)]
        # The same connection still serves a normal request.
        s.sendall(wire.metadata_request(4, 62, [intact_topic], allow_auto_topic_creation=False))
        resp = wire.read_response(s)
        assert resp is not None
        md = MetadataResponse.decode(resp, version=4, header=True)
        assert [(t.name, t.error_code, len(t.partitions)) for t in md.topics] == [
            (intact_topic, 0, 3)]
    assert topic_partitions(admin_client(target.bootstrap), name) is None


# ---- malformed frames -------------------------------------------------------------------------


def test_http_request_is_closed(target):
    got = send_then_expect_close(target.port, b"GET / HTTP/1.1\r\nHost: strata\r\n\r\n")
    assert got == b""


@pytest.mark.parametrize("size", [-1, -2, -(2**31)])
def test_negative_frame_length_is_closed(target, size):
    assert send_then_expect_close(target.port, struct.pack(">i", size) + b"\x00" * 16) == b""


@pytest.mark.parametrize("size", [2**31 - 1, 2**30, 200 * 1024 * 1024])
def test_huge_frame_length_is_closed_without_waiting(target, size):
    # Only 64 bytes follow: the broker must refuse on the length alone, not wait for 2 GiB.
    before = target.rss_bytes()
    assert send_then_expect_close(target.port, struct.pack(">i", size) + b"\x01" * 64) == b""
    assert target.rss_bytes() - before < 256 * 1024 * 1024, "memory grew on a length prefix"


@pytest.mark.parametrize("payload", [b"", b"\x00", b"\x00\x12\x00"])
def test_frame_too_short_for_a_header_is_closed(target, payload):
    assert send_then_expect_close(target.port, wire.frame(payload)) == b""


def test_unknown_api_key(target):
    req = wire.frame(wire.request_header(32000, 0, 7777) + b"\x00" * 8)
    with wire.connect(target.port) as s:
        s.sendall(req)
        try:
            resp = wire.read_response(s, CLOSE_TIMEOUT_S)
        except TimeoutError:
            pytest.fail("no answer and no close for an unknown API key")
    # Kafka closes the connection; an answer is acceptable only if it is for this request.
    if resp is not None:
        assert struct.unpack(">i", resp[:4])[0] == 7777


def test_unsupported_version_of_other_api(target):
    """Metadata v99 is not ApiVersions: there is no fallback shape, so the broker closes (or
    answers for that correlation id); it must not hang."""
    req = wire.frame(wire.request_header(wire.API_METADATA, 99, 8888) + b"\x00" * 8)
    with wire.connect(target.port) as s:
        s.sendall(req)
        try:
            resp = wire.read_response(s, CLOSE_TIMEOUT_S)
        except TimeoutError:
            pytest.fail("no answer and no close for Metadata v99")
    if resp is not None:
        assert struct.unpack(">i", resp[:4])[0] == 8888


@pytest.mark.parametrize("seed", range(8))
def test_random_garbage(target, seed):
    data = random.Random(seed).randbytes(4096)
    send_then_expect_close(target.port, data, half_close=True)


def test_truncated_frame_then_close(target, intact):
    full = wire.metadata_request(1, 5, [intact[0]])
    with wire.connect(target.port) as s:
        s.sendall(full[:len(full) // 2])
    # And once more, waiting for the broker to notice the end of the stream.
    send_then_expect_close(target.port, full[:len(full) // 2], half_close=True)


def test_declared_array_length_beyond_frame(target):
    """A Metadata request claiming 2^31-1 topics in a 30-byte frame must not allocate for
    them (Kafka's CVE-2022-34917): answer with an error or close."""
    req = wire.frame(wire.request_header(wire.API_METADATA, 1, 99) + wire.i32(2**31 - 1)
                     + wire.string("t"))
    before = target.rss_bytes()
    got = send_then_expect_close(target.port, req, half_close=True)
    if got:
        assert struct.unpack(">i", got[4:8])[0] == 99
    assert target.rss_bytes() - before < 256 * 1024 * 1024


# ---- mutation fuzzing -------------------------------------------------------------------------


def fuzz_bases(topic: str) -> list[bytes]:
    batch = wire.record_batch([(b"fk", b"fuzz-value", [("h", b"1")]),
                               (None, b"second", [])], 1_700_000_000_000)
    return [
        wire.api_versions_request(0, 101),
        wire.api_versions_request(3, 102),
        wire.metadata_request(1, 103, [topic]),
        wire.metadata_request(4, 104, [topic], allow_auto_topic_creation=False),
        wire.metadata_request(1, 105, None),
        wire.produce_request(106, topic, 0, batch),
    ]


def mutate(rng: random.Random, req: bytes) -> tuple[bytes, bool]:
    """A mutated copy of a framed request, and whether its length prefix is still its own."""
    b = bytearray(req)
    roll = rng.random()
    if roll < 0.55:  # overwrite a few bytes after the length prefix
        for _ in range(rng.randint(1, 4)):
            b[rng.randrange(4, len(b))] = rng.randrange(256)
    elif roll < 0.80:  # flip one bit
        i = rng.randrange(4, len(b))
        b[i] ^= 1 << rng.randrange(8)
    elif roll < 0.95:  # cut the body short, with a length prefix that matches the cut
        cut = rng.randrange(5, len(b))
        b = b[:cut]
        b[0:4] = wire.i32(cut - 4)
    else:  # damage the length prefix itself
        b[rng.randrange(0, 4)] = rng.randrange(256)
        return bytes(b), False
    return bytes(b), True


def test_mutated_requests(target):
    topic = unique_topic("hostile-fuzz")
    create_topic(admin_client(target.bootstrap), topic, partitions=1)
    bases = fuzz_bases(topic)
    # Each base request is valid: it gets an answer for its own correlation id.
    for req in bases:
        resp = wire.exchange(target.port, req)
        assert resp is not None and resp[:4] == req[8:12], f"base request {req[:12].hex()}"

    rng = random.Random(FUZZ_SEED)
    outcomes = {"answered": 0, "closed": 0}
    for case in range(FUZZ_CASES):
        base = rng.choice(bases)
        req, length_intact = mutate(rng, base)
        with wire.connect(target.port) as s:
            try:
                s.sendall(req)
                # End of stream: a frame that now claims more bytes must not wait forever.
                s.shutdown(socket.SHUT_WR)
            except (BrokenPipeError, ConnectionResetError, OSError):
                # ENOTCONN/EPIPE/ECONNRESET: the broker closed the connection first.
                outcomes["closed"] += 1
                continue
            closed, got = wire.read_until_close(s, CLOSE_TIMEOUT_S)
        answered = len(got) >= 8 and len(got) >= 4 + struct.unpack(">i", got[:4])[0]
        assert closed or answered, (
            f"case {case} (seed {FUZZ_SEED:#x}): no answer and no close within "
            f"{CLOSE_TIMEOUT_S} s; request {req.hex()}")
        if answered and length_intact and len(req) >= 12:
            assert got[4:8] == req[8:12], (
                f"case {case}: answer for correlation id {got[4:8].hex()}, "
                f"request had {req[8:12].hex()}; request {req.hex()}")
        outcomes["answered" if answered else "closed"] += 1
        assert target.alive(), f"broker died on case {case}; request {req.hex()}"
    assert sum(outcomes.values()) == FUZZ_CASES


# ---- and the well-behaved clients are still fine ----------------------------------------------


def test_clients_still_work_after_abuse(target, intact):
    topic, before = intact
    got = consume_all(target.bootstrap, topic, range(3), expected=len(before))
    assert [r.content() for r in got] == [r.content() for r in before]

    more = [(b"after", b"after-%d" % i, []) for i in range(10)]
    expected = sorted(before + placed(more, produce_all(target.bootstrap, topic, more)),
                      key=lambda r: (r.partition, r.offset))
    got = consume_all(target.bootstrap, topic, range(3), expected=len(expected))
    assert [r.content() for r in got] == [r.content() for r in expected]
    target.assert_alive()
