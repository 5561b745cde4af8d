"""The group APIs on the wire, one request at a time (kafka-python's generated codecs over a
raw socket): KIP-394 member ids, the initial rebalance delay, and the error codes Kafka
returns for a wrong generation, an unknown member, a bad session timeout or an empty group
id. A refused commit must leave the committed offset where it was.
"""

from __future__ import annotations

import threading
import time

import pytest
from kafka.protocol.consumer import (HeartbeatRequest, JoinGroupRequest, LeaveGroupRequest,
                                     OffsetCommitRequest, OffsetFetchRequest, SyncGroupRequest)
from kafka.protocol.metadata import FindCoordinatorRequest

from clients import admin_client, create_topic, unique_topic
from group_clients import (ILLEGAL_GENERATION, INVALID_GROUP_ID,  # noqa: F401
                           INVALID_SESSION_TIMEOUT, MEMBER_ID_REQUIRED, UNKNOWN_MEMBER_ID,
                           GroupConn, committed, consumer_assignment, consumer_subscription,
                           describe, fast_broker)

TIMEOUT_S = 30
SESSION_MS = 10000
MIN_SESSION_MS = 1000  # FAST_GROUP_ENV
MAX_SESSION_MS = 1800000  # the broker default
INITIAL_DELAY_S = 0.5  # FAST_GROUP_ENV
# Highest versions these tests encode: past them the request shapes change (batched
# FindCoordinator v4, OffsetFetch groups v8, topic ids in OffsetCommit v10).
CAPS = {FindCoordinatorRequest: 3, JoinGroupRequest: 9, SyncGroupRequest: 5,
        HeartbeatRequest: 4, LeaveGroupRequest: 5, OffsetCommitRequest: 8,
        OffsetFetchRequest: 7}


def v(conn: GroupConn, cls) -> int:
    return conn.versions.pick(cls, CAPS[cls])


def join(conn, group, topic, member_id="", version=None, session_ms=SESSION_MS,
         rebalance_ms=SESSION_MS, instance_id=None):
    req = JoinGroupRequest(
        version=version if version is not None else v(conn, JoinGroupRequest),
        group_id=group, session_timeout_ms=session_ms, rebalance_timeout_ms=rebalance_ms,
        member_id=member_id, group_instance_id=instance_id, protocol_type="consumer",
        protocols=[JoinGroupRequest.JoinGroupRequestProtocol(
            name="range", metadata=consumer_subscription([topic]))])
    return conn.call(req)


def sync(conn, group, generation, member_id, assignments: dict[str, bytes]):
    A = SyncGroupRequest.SyncGroupRequestAssignment
    return conn.call(SyncGroupRequest(
        version=v(conn, SyncGroupRequest), group_id=group, generation_id=generation,
        member_id=member_id, group_instance_id=None, protocol_type="consumer",
        protocol_name="range",
        assignments=[A(member_id=m, assignment=a) for m, a in assignments.items()]))


def heartbeat(conn, group, generation, member_id) -> int:
    return conn.call(HeartbeatRequest(
        version=v(conn, HeartbeatRequest), group_id=group, generation_id=generation,
        member_id=member_id, group_instance_id=None)).error_code


def commit(conn, group, generation, member_id, topic, offsets: dict[int, tuple[int, str]]):
    """OffsetCommit; returns the error code per partition."""
    T = OffsetCommitRequest.OffsetCommitRequestTopic
    P = T.OffsetCommitRequestPartition
    resp = conn.call(OffsetCommitRequest(
        version=v(conn, OffsetCommitRequest), group_id=group,
        generation_id_or_member_epoch=generation, member_id=member_id, group_instance_id=None,
        topics=[T(name=topic, partitions=[
            P(partition_index=p, committed_offset=o, committed_leader_epoch=-1,
              committed_metadata=md) for p, (o, md) in sorted(offsets.items())])]))
    [t] = resp.topics
    assert t.name == topic
    return {p.partition_index: p.error_code for p in t.partitions}


def fetch(conn, group, topic, partitions) -> dict[int, tuple[int, str | None, int]]:
    """OffsetFetch; (offset, metadata, error code) per partition."""
    T = OffsetFetchRequest.OffsetFetchRequestTopic
    resp = conn.call(OffsetFetchRequest(
        version=v(conn, OffsetFetchRequest), group_id=group,
        topics=[T(name=topic, partition_indexes=list(partitions))], require_stable=False))
    assert resp.error_code == 0, resp
    [t] = resp.topics
    return {p.partition_index: (p.committed_offset, p.metadata, p.error_code)
            for p in t.partitions}


def full_join(conn, group, topic, partitions):
    """KIP-394 join, then SyncGroup as the only member: (member id, generation)."""
    first = join(conn, group, topic)
    assert first.error_code == MEMBER_ID_REQUIRED, first
    resp = join(conn, group, topic, member_id=first.member_id)
    assert resp.error_code == 0, resp
    assert resp.leader == resp.member_id == first.member_id
    s = sync(conn, group, resp.generation_id, resp.member_id,
             {resp.member_id: consumer_assignment({topic: list(partitions)})})
    assert s.error_code == 0, s
    return resp.member_id, resp.generation_id


@pytest.fixture
def topic(fast_broker):
    name = unique_topic("proto")
    create_topic(admin_client(fast_broker.bootstrap), name, partitions=2)
    return name


def test_find_coordinator_names_this_broker(fast_broker):
    with GroupConn(fast_broker.port) as conn:
        resp = conn.call(FindCoordinatorRequest(version=v(conn, FindCoordinatorRequest),
                                                key=unique_topic("g-fc"), key_type=0))
    assert resp.error_code == 0, resp
    assert (resp.host, resp.port) == ("127.0.0.1", fast_broker.port)


@pytest.mark.parametrize("which", ["v4", "newest"])
def test_join_without_member_id_gets_member_id_required(fast_broker, topic, which):
    group = unique_topic("g-kip394")
    with GroupConn(fast_broker.port) as conn:
        version = 4 if which == "v4" else v(conn, JoinGroupRequest)
        assert version >= 4
        first = join(conn, group, topic, version=version)
        assert first.error_code == MEMBER_ID_REQUIRED, first
        assert first.member_id != "" and first.generation_id == -1 and first.members == []

        t0 = time.monotonic()
        resp = join(conn, group, topic, member_id=first.member_id, version=version)
        took = time.monotonic() - t0
        assert resp.error_code == 0, resp
        assert (resp.member_id, resp.leader, resp.generation_id, resp.protocol_name) == (
            first.member_id, first.member_id, 1, "range")
        assert [(m.member_id, bytes(m.metadata)) for m in resp.members] == [
            (first.member_id, consumer_subscription([topic]))]
        # The first rebalance of an empty group waits the initial delay for more members.
        assert INITIAL_DELAY_S - 0.05 <= took <= INITIAL_DELAY_S + 2.0, took

        assignment = consumer_assignment({topic: [0, 1]})
        s = sync(conn, group, 1, first.member_id, {first.member_id: assignment})
        assert s.error_code == 0 and bytes(s.assignment) == assignment, s

        desc = describe(admin_client(fast_broker.bootstrap), group)
        [md] = desc.members
        assert (md.member_id, md.client_id) == (first.member_id, conn.client_id)
        assert sorted((tp.topic, tp.partition) for tp in md.assignment.topic_partitions) == [
            (topic, 0), (topic, 1)]


def test_commit_with_wrong_generation_or_unknown_member_is_refused(fast_broker, topic):
    group = unique_topic("g-fence")
    admin = admin_client(fast_broker.bootstrap)
    with GroupConn(fast_broker.port) as conn:
        member, gen = full_join(conn, group, topic, [0, 1])
        assert commit(conn, group, gen, member, topic, {0: (5, "m5"), 1: (7, "m7")}) == {0: 0, 1: 0}
        assert fetch(conn, group, topic, [0, 1]) == {0: (5, "m5", 0), 1: (7, "m7", 0)}

        assert commit(conn, group, gen + 1, member, topic, {0: (9, "bad")}) == {
            0: ILLEGAL_GENERATION}
        assert commit(conn, group, gen - 1, member, topic, {0: (9, "bad")}) == {
            0: ILLEGAL_GENERATION}
        assert commit(conn, group, gen, "not-a-member", topic, {0: (9, "bad")}) == {
            0: UNKNOWN_MEMBER_ID}
        assert commit(conn, group, -1, "", topic, {0: (9, "bad")}) == {0: UNKNOWN_MEMBER_ID}
        assert fetch(conn, group, topic, [0, 1]) == {0: (5, "m5", 0), 1: (7, "m7", 0)}
        assert committed(admin, group, topic, [0, 1]) == {0: 5, 1: 7}

        assert heartbeat(conn, group, gen + 1, member) == ILLEGAL_GENERATION
        assert heartbeat(conn, group, gen, "not-a-member") == UNKNOWN_MEMBER_ID
        assert heartbeat(conn, group, gen, member) == 0
        assert sync(conn, group, gen + 1, member, {}).error_code == ILLEGAL_GENERATION
        assert sync(conn, group, gen, "not-a-member", {}).error_code == UNKNOWN_MEMBER_ID

        # The member was not disturbed by any of it.
        assert commit(conn, group, gen, member, topic, {0: (6, "m6")}) == {0: 0}
        assert fetch(conn, group, topic, [0]) == {0: (6, "m6", 0)}


@pytest.mark.parametrize("session_ms", [MIN_SESSION_MS - 1, MAX_SESSION_MS + 1])
def test_join_with_session_timeout_out_of_range_is_refused(fast_broker, topic, session_ms):
    group = unique_topic("g-session")
    with GroupConn(fast_broker.port) as conn:
        resp = join(conn, group, topic, session_ms=session_ms)
        assert resp.error_code == INVALID_SESSION_TIMEOUT, resp
        # In range, the same request goes on to the member id handshake.
        assert join(conn, group, topic, session_ms=MIN_SESSION_MS).error_code == MEMBER_ID_REQUIRED


def test_empty_group_id_is_invalid(fast_broker, topic):
    with GroupConn(fast_broker.port) as conn:
        assert join(conn, "", topic).error_code == INVALID_GROUP_ID
        assert heartbeat(conn, "", 1, "someone") == INVALID_GROUP_ID
        assert sync(conn, "", 1, "someone", {}).error_code == INVALID_GROUP_ID


def test_initial_rebalance_delay_collects_members_into_one_generation(broker_factory):
    """The default delay (3 s): two members joining 0.5 s apart land in generation 1."""
    broker = broker_factory("delay", env={"STRATA_GROUP_MIN_SESSION_TIMEOUT_MS": "1000"})
    topic, group = unique_topic("proto-delay"), unique_topic("g-delay")
    create_topic(admin_client(broker.bootstrap), topic, partitions=2)
    conns = [GroupConn(broker.port), GroupConn(broker.port)]
    try:
        ids = []
        for c in conns:
            r = join(c, group, topic)
            assert r.error_code == MEMBER_ID_REQUIRED, r
            ids.append(r.member_id)
        assert ids[0] != ids[1]
        results: dict[int, tuple[float, object]] = {}

        def rejoin(i):
            t0 = time.monotonic()
            resp = join(conns[i], group, topic, member_id=ids[i])
            results[i] = (time.monotonic() - t0, resp)

        threads = [threading.Thread(target=rejoin, args=(i,)) for i in range(2)]
        threads[0].start()
        time.sleep(0.5)
        threads[1].start()
        for t in threads:
            t.join(TIMEOUT_S)
        assert sorted(results) == [0, 1], results
        (took0, r0), (took1, r1) = results[0], results[1]
        assert (r0.error_code, r1.error_code) == (0, 0), (r0, r1)
        assert r0.generation_id == r1.generation_id == 1
        assert r0.leader == r1.leader and r0.leader in ids
        leader = r0 if r0.member_id == r0.leader else r1
        assert sorted(m.member_id for m in leader.members) == sorted(ids)
        assert took0 >= 3.0, took0
        assert took0 <= 8.0, took0
    finally:
        for c in conns:
            c.close()
