"""Hand-built Kafka wire frames and raw-socket helpers for the hostile-client tests.

Only what those tests need: request headers v1/v2, ApiVersions v0/v3, Metadata v1/v4,
Produce v3 with a magic-2 record batch, and decoders for ApiVersions responses. The encoders
are checked byte for byte against kafka-python's generated codecs in test_hostile.py.
"""

from __future__ import annotations

import socket
import struct
import time
from dataclasses import dataclass

API_PRODUCE = 0
API_METADATA = 3
API_API_VERSIONS = 18
UNSUPPORTED_VERSION = 35


# ---- primitives -------------------------------------------------------------------------------


def i8(v: int) -> bytes:
    return struct.pack(">b", v)


def i16(v: int) -> bytes:
    return struct.pack(">h", v)


def i32(v: int) -> bytes:
    return struct.pack(">i", v)


def i64(v: int) -> bytes:
    return struct.pack(">q", v)


def uvarint(v: int) -> bytes:
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        if v:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def varint(v: int) -> bytes:
    return uvarint((v << 1) ^ (v >> 63))  # zigzag


def string(s: str | None) -> bytes:
    if s is None:
        return i16(-1)
    b = s.encode()
    return i16(len(b)) + b


def compact_string(s: str | None) -> bytes:
    if s is None:
        return uvarint(0)
    b = s.encode()
    return uvarint(len(b) + 1) + b


def array(items: list[bytes]) -> bytes:
    return i32(len(items)) + b"".join(items)


NO_TAGS = uvarint(0)


def frame(payload: bytes) -> bytes:
    return i32(len(payload)) + payload


def request_header(api_key: int, version: int, correlation_id: int,
                   client_id: str | None = "strata-tests", flexible: bool = False) -> bytes:
    """Header v1, or v2 when flexible (v1 plus an empty tag buffer). client_id stays a
    non-compact nullable string in both, as the protocol requires."""
    h = i16(api_key) + i16(version) + i32(correlation_id) + string(client_id)
    return h + NO_TAGS if flexible else h


# ---- requests ---------------------------------------------------------------------------------


def api_versions_request(version: int, correlation_id: int) -> bytes:
    if version < 3:
        return frame(request_header(API_API_VERSIONS, version, correlation_id))
    body = compact_string("strata-tests") + compact_string("1.0") + NO_TAGS
    return frame(request_header(API_API_VERSIONS, version, correlation_id, flexible=True) + body)


def metadata_request(version: int, correlation_id: int, topics: list[str] | None,
                     allow_auto_topic_creation: bool = True) -> bytes:
    assert version in (1, 4)
    body = i32(-1) if topics is None else array([string(t) for t in topics])
    if version >= 4:
        body += i8(1 if allow_auto_topic_creation else 0)
    return frame(request_header(API_METADATA, version, correlation_id) + body)


def produce_request(correlation_id: int, topic: str, partition: int, batch: bytes,
                    acks: int = -1, timeout_ms: int = 5000) -> bytes:
    """Produce v3 (the first version that requires magic-2 batches)."""
    body = (string(None) + i16(acks) + i32(timeout_ms)
            + array([string(topic) + array([i32(partition) + i32(len(batch)) + batch])]))
    return frame(request_header(API_PRODUCE, 3, correlation_id) + body)


# ---- record batches ---------------------------------------------------------------------------


def _crc32c_table() -> list[int]:
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_CRC32C = _crc32c_table()


def crc32c(data: bytes) -> int:
    c = 0xFFFFFFFF
    for b in data:
        c = _CRC32C[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


def record_batch(records: list[tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]],
                 first_timestamp: int) -> bytes:
    """An uncompressed magic-2 batch, base offset 0, no producer id, one ms between records."""
    body = bytearray()
    for delta, (key, value, headers) in enumerate(records):
        rec = bytearray(b"\x00")  # attributes
        rec += varint(delta) + varint(delta)  # timestamp delta, offset delta
        rec += varint(-1) if key is None else varint(len(key)) + key
        rec += varint(-1) if value is None else varint(len(value)) + value
        rec += varint(len(headers))
        for hk, hv in headers:
            hkb = hk.encode()
            rec += varint(len(hkb)) + hkb
            rec += varint(-1) if hv is None else varint(len(hv)) + hv
        body += varint(len(rec)) + rec
    last_delta = len(records) - 1
    after_crc = (i16(0)  # attributes: no compression, CreateTime, not transactional
                 + i32(last_delta) + i64(first_timestamp) + i64(first_timestamp + last_delta)
                 + i64(-1) + i16(-1) + i32(-1)  # producer id, epoch, base sequence
                 + i32(len(records)) + bytes(body))
    after_len = i32(0) + i8(2) + struct.pack(">I", crc32c(after_crc)) + after_crc  # epoch, magic, crc
    return i64(0) + i32(len(after_len)) + after_len


# ---- responses --------------------------------------------------------------------------------


class Reader:
    def __init__(self, data: bytes):
        self.data = data
        self.pos = 0

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise ValueError(f"need {n} bytes at {self.pos}, have {len(self.data) - self.pos}")
        b = self.data[self.pos:self.pos + n]
        self.pos += n
        return b

    def i16(self) -> int:
        return struct.unpack(">h", self.take(2))[0]

    def i32(self) -> int:
        return struct.unpack(">i", self.take(4))[0]

    def uvarint(self) -> int:
        shift = value = 0
        while True:
            b = self.take(1)[0]
            value |= (b & 0x7F) << shift
            if not b & 0x80:
                return value
            shift += 7

    def skip_tags(self) -> None:
        for _ in range(self.uvarint()):
            self.uvarint()
            self.take(self.uvarint())

    def done(self) -> bool:
        return self.pos == len(self.data)


@dataclass
class ApiVersionsResponse:
    correlation_id: int
    error_code: int
    apis: dict[int, tuple[int, int]]
    throttle_time_ms: int | None = None


def decode_api_versions(frame_payload: bytes, version: int) -> ApiVersionsResponse:
    """Decode an ApiVersions response (without its size prefix); the header is always v0.
    `version` 0 also covers the KIP-511 fallback answer to an unsupported version."""
    r = Reader(frame_payload)
    corr = r.i32()
    err = r.i16()
    apis: dict[int, tuple[int, int]] = {}
    flexible = version >= 3
    n = r.uvarint() - 1 if flexible else r.i32()
    for _ in range(n):
        key, lo, hi = r.i16(), r.i16(), r.i16()
        assert key not in apis, f"api key {key} listed twice"
        apis[key] = (lo, hi)
        if flexible:
            r.skip_tags()
    throttle = r.i32() if version >= 1 else None
    if flexible:
        r.skip_tags()
    assert r.done(), f"{len(frame_payload) - r.pos} trailing bytes in ApiVersions v{version}"
    return ApiVersionsResponse(corr, err, apis, throttle)


def produce_result(payload: bytes | None) -> tuple[int, int] | None:
    """(error code, base offset) of a one-partition Produce v3 response; None if the broker
    closed the connection instead."""
    if payload is None:
        return None
    r = Reader(payload)
    r.i32()  # correlation id
    assert r.i32() == 1  # topics
    r.take(r.i16())  # topic name
    assert r.i32() == 1  # partitions
    r.i32()  # partition index
    error = r.i16()
    base_offset = struct.unpack(">q", r.take(8))[0]
    return error, base_offset


# ---- sockets ----------------------------------------------------------------------------------


def connect(port: int, timeout_s: float = 5.0) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout_s)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def recv_exact(sock: socket.socket, n: int, deadline: float) -> bytes | None:
    """n bytes, or None if the peer closes first. Raises TimeoutError at the deadline."""
    buf = bytearray()
    while len(buf) < n:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"got {len(buf)} of {n} bytes")
        sock.settimeout(remaining)
        try:
            chunk = sock.recv(n - len(buf))
        except socket.timeout:
            raise TimeoutError(f"got {len(buf)} of {n} bytes") from None
        except ConnectionResetError:
            return None
        if not chunk:
            return None
        buf += chunk
    return bytes(buf)


def read_response(sock: socket.socket, timeout_s: float = 5.0) -> bytes | None:
    """One response frame's payload, or None if the broker closed the connection."""
    deadline = time.monotonic() + timeout_s
    size_b = recv_exact(sock, 4, deadline)
    if size_b is None:
        return None
    size = struct.unpack(">i", size_b)[0]
    assert 4 <= size <= 64 * 1024 * 1024, f"implausible response size {size}"
    payload = recv_exact(sock, size, deadline)
    assert payload is not None, f"connection closed inside a {size}-byte response"
    return payload


def read_until_close(sock: socket.socket, timeout_s: float = 5.0) -> tuple[bool, bytes]:
    """Read everything until the peer closes. Returns (closed, bytes received); closed is
    False when the deadline passed with the connection still open."""
    deadline = time.monotonic() + timeout_s
    got = bytearray()
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False, bytes(got)
        sock.settimeout(remaining)
        try:
            chunk = sock.recv(65536)
        except socket.timeout:
            return False, bytes(got)
        except ConnectionResetError:
            return True, bytes(got)
        if not chunk:
            return True, bytes(got)
        got += chunk


def exchange(port: int, request: bytes, timeout_s: float = 5.0) -> bytes | None:
    """Send one request on a fresh connection and return its response payload."""
    with connect(port) as s:
        s.sendall(request)
        return read_response(s, timeout_s)
