"""Helpers for the consumer-group tests: member processes, the group admin calls, and a raw
connection that speaks the group APIs with kafka-python's generated codecs.

A `MemberProc` runs group_member.py (one confluent-kafka consumer in its own OS process) and
collects the JSON events it prints, so a test can wait for "all three assigned" and then
reconstruct exactly who owned which partition and who read which record.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import kafka.protocol.admin
import kafka.protocol.consumer
import kafka.protocol.metadata
import pytest
from confluent_kafka import ConsumerGroupTopicPartitions, KafkaException, TopicPartition
from confluent_kafka.admin import OffsetSpec

import wire
from clients import DEFAULT_TIMEOUT_S, produce_all

MEMBER_SCRIPT = Path(__file__).resolve().parent / "group_member.py"
EXIT_TIMEOUT_S = 15.0

# Kafka error codes the group tests check.
ILLEGAL_GENERATION = 22
INVALID_GROUP_ID = 24
UNKNOWN_MEMBER_ID = 25
INVALID_SESSION_TIMEOUT = 26
NON_EMPTY_GROUP = 68
GROUP_ID_NOT_FOUND = 69
MEMBER_ID_REQUIRED = 79

# Group settings that keep the tests fast; a test about one of them sets its own.
FAST_GROUP_ENV = {
    "STRATA_GROUP_INITIAL_REBALANCE_DELAY_MS": "500",
    "STRATA_GROUP_MIN_SESSION_TIMEOUT_MS": "1000",
}


# ---- records ----------------------------------------------------------------------------------


def produce_to_partitions(bootstrap: str, topic: str, partitions, per_partition: int,
                          tag: str) -> dict[int, list[str]]:
    """Produce `per_partition` records to each partition; return, per partition, the values in
    offset order (offsets start where the partition's log ended). Values are unique."""
    placed: dict[int, list[tuple[int, str]]] = {}
    for p in partitions:
        recs = [(None, f"{tag}-p{p}-{i:05d}".encode(), []) for i in range(per_partition)]
        log = produce_all(bootstrap, topic, recs, partition=p)
        placed[p] = sorted((r.offset, r.value.decode()) for r in log.acked)
        offs = [o for o, _ in placed[p]]
        assert offs == list(range(offs[0], offs[0] + per_partition)), f"gaps in {offs}"
    return {p: [v for _, v in placed[p]] for p in placed}


def all_values(placed: dict[int, list[str]]) -> set[str]:
    return {v for vs in placed.values() for v in vs}


# ---- member processes -------------------------------------------------------------------------


class MemberProc:
    """One group_member.py process and everything it reported."""

    def __init__(self, workdir: Path, bootstrap: str, group: str, topics: list[str],
                 name: str, instance_id: str | None = None, strategy: str = "range",
                 session_timeout_ms: int = 6000, heartbeat_interval_ms: int = 500,
                 batch: int = 50, batch_delay_ms: int = 0, max_records: int | None = None,
                 wait_go: bool = False, conf: dict[str, str] | None = None):
        self.name = name
        self.stderr_path = workdir / f"member-{name}-{time.monotonic_ns()}.stderr"
        cmd = [sys.executable, str(MEMBER_SCRIPT), "--bootstrap", bootstrap, "--group", group,
               "--name", name, "--strategy", strategy,
               "--session-timeout-ms", str(session_timeout_ms),
               "--heartbeat-interval-ms", str(heartbeat_interval_ms),
               "--batch", str(batch), "--batch-delay-ms", str(batch_delay_ms)]
        for t in topics:
            cmd += ["--topic", t]
        if instance_id:
            cmd += ["--instance-id", instance_id]
        if max_records is not None:
            cmd += ["--max-records", str(max_records)]
        if wait_go:
            cmd.append("--wait-go")
        for k, v in (conf or {}).items():
            cmd += ["--conf", f"{k}={v}"]
        self.events: list[dict] = []
        self._cv = threading.Condition()
        self._stderr = open(self.stderr_path, "wb")
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self._stderr, start_new_session=True)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            try:
                ev = json.loads(line)
            except ValueError:
                ev = {"ev": "garbage", "line": line.decode("utf-8", "replace"), "t": time.time()}
            with self._cv:
                self.events.append(ev)
                self._cv.notify_all()
        with self._cv:
            self._cv.notify_all()

    # -- control --

    def go(self) -> None:
        self.proc.stdin.write(b"go\n")
        self.proc.stdin.flush()

    def terminate(self, timeout_s: float = EXIT_TIMEOUT_S) -> None:
        """SIGTERM; the member must close and exit 0."""
        self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"member {self.name} did not exit within {timeout_s:.0f} s of "
                                 f"SIGTERM\n{self.diagnostics()}") from None
        self._reader.join(5)
        assert rc == 0, f"member {self.name} exited {rc} after SIGTERM\n{self.diagnostics()}"
        assert self.of("closed"), f"member {self.name} exited without closing"

    def kill(self) -> None:
        """SIGKILL: no LeaveGroup, no last commit, no close."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=EXIT_TIMEOUT_S)
        self._reader.join(5)

    def wait_exit(self, timeout_s: float = DEFAULT_TIMEOUT_S) -> int:
        try:
            rc = self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"member {self.name} still running after {timeout_s:.0f} s\n"
                                 + self.diagnostics()) from None
        self._reader.join(5)
        return rc

    def close_files(self) -> None:
        self._stderr.close()

    # -- what it reported --

    def snapshot(self) -> list[dict]:
        with self._cv:
            return list(self.events)

    def of(self, *kinds: str) -> list[dict]:
        return [e for e in self.snapshot() if e["ev"] in kinds]

    def wait_for(self, predicate, timeout_s: float = DEFAULT_TIMEOUT_S, what: str = "condition"):
        """Wait until predicate(events) is truthy; return its value."""
        deadline = time.monotonic() + timeout_s
        with self._cv:
            while True:
                got = predicate(list(self.events))
                if got:
                    return got
                remaining = deadline - time.monotonic()
                if remaining <= 0 or (self.proc.poll() is not None and not self._reader.is_alive()):
                    break
                self._cv.wait(min(remaining, 0.2))
        raise AssertionError(f"member {self.name}: timed out after {timeout_s:.0f} s waiting for "
                             f"{what}\n{self.diagnostics()}")

    def records(self) -> list[tuple[str, int, int, str]]:
        """(topic, partition, offset, value) in the order this member processed them."""
        return [tuple(r) for e in self.of("records") for r in e["records"]]

    def owned(self) -> set[tuple[str, int]]:
        """The partitions this member owns after everything it reported so far."""
        return owned_after(self.snapshot())

    def errors(self) -> list[dict]:
        return self.of("commit_error", "error", "garbage")

    def join_times(self) -> list[float]:
        """When librdkafka sent JoinGroup, from the timestamps of its debug log."""
        text = self.stderr_path.read_bytes().decode("utf-8", "replace")
        return [float(m.group(1)) for m in
                re.finditer(r"^%\d\|(\d+\.\d+)\|JOIN\|[^\n]*: Joining group ", text, re.M)]

    def diagnostics(self, lines: int = 40) -> str:
        evs = self.snapshot()
        shown = [json.dumps(e)[:300] for e in evs if e["ev"] != "records"][-lines:]
        try:
            err = self.stderr_path.read_bytes().decode("utf-8", "replace").splitlines()[-lines:]
        except OSError:
            err = []
        return (f"---- member {self.name} events (records elided) ----\n" + "\n".join(shown)
                + f"\n---- member {self.name} stderr tail ----\n" + "\n".join(err))


def owned_after(events: list[dict]) -> set[tuple[str, int]]:
    """The partitions a member owns after these events: an eager assignment replaces what it
    had and a revocation clears it; cooperative ones add and remove partitions."""
    owned: set[tuple[str, int]] = set()
    for e in events:
        parts = {tuple(p) for p in e.get("partitions", [])}
        if e["ev"] == "assign":
            owned = owned | parts if e["protocol"] == "COOPERATIVE" else parts
        elif e["ev"] in ("revoke", "lost"):
            owned = owned - parts if e["protocol"] == "COOPERATIVE" else set()
    return owned


class Members:
    """Starts member processes and makes sure none outlives its test."""

    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.all: list[MemberProc] = []

    def start(self, *args, **kwargs) -> MemberProc:
        m = MemberProc(self.workdir, *args, **kwargs)
        self.all.append(m)
        return m

    def close(self) -> None:
        for m in self.all:
            m.kill()
            m.close_files()

    def diagnostics(self) -> str:
        return "\n".join(m.diagnostics() for m in self.all)


def wait_all(members: list[MemberProc], predicate, timeout_s: float = DEFAULT_TIMEOUT_S,
             what: str = "condition") -> None:
    deadline = time.monotonic() + timeout_s
    for m in members:
        m.wait_for(predicate, max(0.1, deadline - time.monotonic()), f"{what} ({m.name})")


def consumed_values(members: list[MemberProc]) -> Counter:
    return Counter(r[3] for m in members for r in m.records())


def read_all(ms, placed, what="every record read"):
    want = all_values(placed)
    deadline = time.monotonic() + DEFAULT_TIMEOUT_S
    while time.monotonic() < deadline:
        if set(consumed_values(ms)) >= want:
            return
        time.sleep(0.1)
    missing = want - set(consumed_values(ms))
    raise AssertionError(f"timed out waiting for {what}: {len(missing)} of {len(want)} missing, "
                         f"e.g. {sorted(missing)[:5]}")


def commits_reach(m, topic, ends: dict[int, int]):
    """True once member m has acknowledged commits reaching `ends` on every partition there."""
    def check(evs):
        got = {}
        for e in evs:
            if e["ev"] == "commit":
                for t, p, o in e["offsets"]:
                    if t == topic:
                        got[p] = max(got.get(p, 0), o)
        return all(got.get(p, 0) >= o for p, o in ends.items())
    return check


def first_offsets(records) -> dict[int, int]:
    out: dict[int, int] = {}
    for _t, p, o, _v in records:
        out.setdefault(p, o)
    return out


# ---- admin ------------------------------------------------------------------------------------


def committed(admin, group: str, topic: str, partitions) -> dict[int, int]:
    """The group's committed offset per partition (-1001, OFFSET_INVALID, when none)."""
    req = ConsumerGroupTopicPartitions(group, [TopicPartition(topic, p) for p in partitions])
    fut = admin.list_consumer_group_offsets([req], request_timeout=DEFAULT_TIMEOUT_S)[group]
    res = fut.result(DEFAULT_TIMEOUT_S)
    out = {}
    for tp in res.topic_partitions:
        assert tp.error is None, f"{tp.topic}[{tp.partition}]: {tp.error}"
        out[tp.partition] = tp.offset
    return out


def latest_offsets(admin, topic: str, partitions) -> dict[int, int]:
    req = {TopicPartition(topic, p): OffsetSpec.latest() for p in partitions}
    futs = admin.list_offsets(req, request_timeout=DEFAULT_TIMEOUT_S)
    return {tp.partition: f.result(DEFAULT_TIMEOUT_S).offset for tp, f in futs.items()}


def describe(admin, group: str):
    fut = admin.describe_consumer_groups([group], request_timeout=DEFAULT_TIMEOUT_S)[group]
    return fut.result(DEFAULT_TIMEOUT_S)


def listed_groups(admin, states=None) -> dict[str, object]:
    """group id -> ConsumerGroupListing; fails on any per-broker error."""
    kwargs = {"request_timeout": DEFAULT_TIMEOUT_S}
    if states is not None:
        kwargs["states"] = set(states)
    res = admin.list_consumer_groups(**kwargs).result(DEFAULT_TIMEOUT_S)
    assert not res.errors, f"list_consumer_groups errors: {res.errors}"
    return {g.group_id: g for g in res.valid}


def kafka_error_code(exc: BaseException) -> int | None:
    """The Kafka error code inside a confluent-kafka exception, if there is one."""
    if isinstance(exc, KafkaException) and exc.args:
        return exc.args[0].code()
    return None


# ---- a raw group-protocol connection ----------------------------------------------------------


@dataclass
class Versions:
    """What the broker advertised, per API key."""
    apis: dict[int, tuple[int, int]]

    def pick(self, request_cls, cap: int) -> int:
        """The highest version both sides speak, at most `cap`."""
        key = request_cls.API_KEY
        assert key in self.apis, (
            f"broker does not advertise {request_cls.__name__[:-7]} (api key {key}) in "
            f"ApiVersions: {sorted(self.apis)}")
        lo, hi = self.apis[key]
        v = min(hi, cap, request_cls.max_version)
        assert v >= lo, f"{request_cls.__name__}: broker range {lo}-{hi}, client cap {cap}"
        return v


_MESSAGE_MODULES = (kafka.protocol.consumer, kafka.protocol.metadata, kafka.protocol.admin)


class GroupConn:
    """One TCP connection to the broker; requests and responses use kafka-python's codecs."""

    def __init__(self, port: int, client_id: str = "strata-group-tests"):
        self.sock = wire.connect(port, timeout_s=DEFAULT_TIMEOUT_S)
        self.client_id = client_id
        self.corr = 0
        self.sock.sendall(wire.api_versions_request(0, 0))
        payload = wire.read_response(self.sock)
        assert payload is not None, "broker closed the connection on ApiVersions"
        self.versions = Versions(wire.decode_api_versions(payload, 0).apis)

    def close(self) -> None:
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def call(self, request, timeout_s: float = DEFAULT_TIMEOUT_S):
        """Send one request (its version already set) and decode the response."""
        self.corr += 1
        request.with_header(correlation_id=self.corr, client_id=self.client_id)
        self.sock.sendall(bytes(request.encode(header=True, framed=True)))
        payload = wire.read_response(self.sock, timeout_s)
        assert payload is not None, f"broker closed the connection on {type(request).__name__}"
        name = type(request).__name__.replace("Request", "Response")
        resp_cls = next(getattr(mod, name) for mod in _MESSAGE_MODULES if hasattr(mod, name))
        resp = resp_cls.decode(payload, version=request.API_VERSION, header=True)
        assert resp.header.correlation_id == self.corr
        return resp


def consumer_subscription(topics: list[str]) -> bytes:
    """ConsumerProtocolSubscription v0: the metadata a consumer puts in JoinGroup."""
    return (wire.i16(0) + wire.array([wire.string(t) for t in topics]) + wire.i32(-1))


def consumer_assignment(assignment: dict[str, list[int]]) -> bytes:
    """ConsumerProtocolAssignment v0: what the leader hands each member in SyncGroup."""
    return (wire.i16(0)
            + wire.array([wire.string(t) + wire.array([wire.i32(p) for p in ps])
                          for t, ps in sorted(assignment.items())])
            + wire.i32(-1))


# ---- fixtures (imported by the group test modules) --------------------------------------------


@pytest.fixture
def fast_broker(broker_factory):
    """A fresh broker with short group delays (see FAST_GROUP_ENV)."""
    return broker_factory("groups", env=dict(FAST_GROUP_ENV))


@pytest.fixture
def members(tmp_path, request):
    """Starts member processes; kills any still running at the end. When the test failed,
    what every member reported is printed at teardown, where pytest's report shows it."""
    failed_before = request.session.testsfailed
    ms = Members(tmp_path)
    yield ms
    ms.close()
    if ms.all and request.session.testsfailed > failed_before:
        print(ms.diagnostics())
