"""Consumer groups driven by real clients: members in separate processes share a topic, commit
manually, resume from their commits, and rebalance the way Kafka does (eager range and
cooperative-sticky). Offsets committed by kafka-python are read by librdkafka and back.

Every member is a confluent-kafka consumer in its own OS process (group_member.py) that
commits synchronously after each batch; the tests reconstruct from its reports exactly who
owned which partition and who read which record.
"""

from __future__ import annotations

import time
from collections import Counter

from confluent_kafka import OFFSET_INVALID

from clients import admin_client, create_topic, unique_topic
from group_clients import (all_values, commits_reach, committed, consumed_values,  # noqa: F401
                           fast_broker, first_offsets, members, owned_after,
                           produce_to_partitions, read_all, wait_all)

INITIAL_DELAY_S = 0.5  # STRATA_GROUP_INITIAL_REBALANCE_DELAY_MS in FAST_GROUP_ENV
TIMEOUT_S = 30


def assigns(evs):
    return [e for e in evs if e["ev"] == "assign"]


def has_ready(evs):
    return any(e["ev"] == "ready" for e in evs)


# ---- 1. three members, six partitions ---------------------------------------------------------


def test_three_members_split_six_partitions_and_read_every_record_once(
        fast_broker, members, record_property):
    bootstrap = fast_broker.bootstrap
    admin = admin_client(bootstrap)
    topic, group = unique_topic("grp-three"), unique_topic("g-three")
    create_topic(admin, topic, partitions=6)
    placed = produce_to_partitions(bootstrap, topic, range(6), 40, "three")

    ms = [members.start(bootstrap, group, [topic], f"m{i}", batch=7, wait_go=True)
          for i in range(3)]
    wait_all(ms, has_ready, what="consumer created")
    for m in ms:
        m.go()
    wait_all(ms, assigns, what="an assignment")
    read_all(ms, placed)
    for m in ms:
        m.wait_for(commits_reach(m, topic, {p: 40 for t, p in m.owned()}), TIMEOUT_S,
                   "commits up to the end of its partitions")

    # One generation: every member was assigned exactly once, two partitions each, and the
    # three assignments cover the topic without overlap.
    owned = {}
    for m in ms:
        a = assigns(m.snapshot())
        assert len(a) == 1, f"{m.name} was assigned {len(a)} times: {a}"
        assert a[0]["protocol"] == "EAGER"
        assert not m.of("revoke", "lost"), f"{m.name}: {m.of('revoke', 'lost')}"
        owned[m.name] = {p for t, p in a[0]["partitions"]}
        assert len(owned[m.name]) == 2, f"{m.name} got {sorted(owned[m.name])}"
    assert sorted(p for ps in owned.values() for p in ps) == list(range(6))
    gens = {assigns(m.snapshot())[0]["gen"] for m in ms}
    assert len(gens) == 1 and None not in gens and min(gens) >= 1, gens

    # Exactly once, each member only from its partitions, each partition from 0 in order.
    counts = consumed_values(ms)
    assert set(counts) == all_values(placed)
    assert {v: n for v, n in counts.items() if n != 1} == {}
    for m in ms:
        by_p: dict[int, list[int]] = {}
        for _t, p, o, v in m.records():
            assert p in owned[m.name], f"{m.name} read {v} from partition {p}"
            by_p.setdefault(p, []).append(o)
        assert by_p == {p: list(range(40)) for p in owned[m.name]}
        assert not m.errors(), m.errors()

    # The rebalance: from the first JoinGroup any member sent to the last assignment.
    first_join = min(m.join_times()[0] for m in ms)
    all_assigned = max(assigns(m.snapshot())[0]["t"] for m in ms)
    rebalance_s = all_assigned - first_join
    print(f"\nrebalance of 3 members (initial delay {INITIAL_DELAY_S * 1000:.0f} ms): "
          f"{rebalance_s * 1000:.0f} ms from first JoinGroup to all three assigned")
    record_property("rebalance_ms", round(rebalance_s * 1000))
    assert INITIAL_DELAY_S - 0.05 <= rebalance_s <= INITIAL_DELAY_S + 2.0, rebalance_s

    for m in ms:
        m.terminate()
    assert committed(admin, group, topic, range(6)) == {p: 40 for p in range(6)}
    # Leaving members must not have caused anyone to read a record again.
    assert {v: n for v, n in consumed_values(ms).items() if n != 1} == {}


# ---- 3. restart with the same group id --------------------------------------------------------


def test_restarted_consumer_resumes_at_committed_offsets(fast_broker, members):
    bootstrap = fast_broker.bootstrap
    admin = admin_client(bootstrap)
    topic, group = unique_topic("grp-resume"), unique_topic("g-resume")
    create_topic(admin, topic, partitions=3)
    placed = produce_to_partitions(bootstrap, topic, range(3), 60, "resume")

    first = members.start(bootstrap, group, [topic], "first", batch=13, max_records=100)
    assert first.wait_exit(TIMEOUT_S) == 0, first.diagnostics()
    got_first = first.records()
    assert len(got_first) == 100
    assert not first.errors(), first.errors()
    ends = {}
    for _t, p, o, _v in got_first:
        ends[p] = max(ends.get(p, 0), o + 1)
    want = {p: ends.get(p, OFFSET_INVALID) for p in range(3)}
    assert committed(admin, group, topic, range(3)) == want

    # More records arrive while nobody is consuming; the next member reads exactly the rest.
    more = produce_to_partitions(bootstrap, topic, range(3), 10, "resume2")
    second = members.start(bootstrap, group, [topic], "second", batch=13)
    everything = {p: placed[p] + more[p] for p in range(3)}
    read_all([first, second], everything)
    got_second = second.records()
    assert {v for *_, v in got_first}.isdisjoint(v for *_, v in got_second)
    assert Counter(v for *_, v in got_first + got_second) == Counter(all_values(everything))
    assert first_offsets(got_second) == {p: ends.get(p, 0) for p in range(3)}
    second.wait_for(commits_reach(second, topic, {p: 70 for p in range(3)}), TIMEOUT_S,
                    "commits to the end")
    second.terminate()
    assert committed(admin, group, topic, range(3)) == {p: 70 for p in range(3)}


# ---- 5. cooperative-sticky --------------------------------------------------------------------


def test_cooperative_sticky_moves_only_the_partitions_it_must(fast_broker, members):
    bootstrap = fast_broker.bootstrap
    admin = admin_client(bootstrap)
    topic, group = unique_topic("grp-coop"), unique_topic("g-coop")
    create_topic(admin, topic, partitions=6)
    placed = produce_to_partitions(bootstrap, topic, range(6), 30, "coop")
    all6 = {(topic, p) for p in range(6)}

    a = members.start(bootstrap, group, [topic], "a", strategy="cooperative-sticky", batch=11)
    a.wait_for(lambda evs: owned_after(evs) == all6, TIMEOUT_S, "all six partitions")
    read_all([a], placed, "the first member to read everything")
    a.wait_for(commits_reach(a, topic, {p: 30 for p in range(6)}), TIMEOUT_S, "its commits")
    n_before = len(a.snapshot())

    b = members.start(bootstrap, group, [topic], "b", strategy="cooperative-sticky", batch=11)
    b.wait_for(lambda evs: len(owned_after(evs)) == 3, TIMEOUT_S, "three partitions")
    a.wait_for(lambda evs: len(owned_after(evs)) == 3, TIMEOUT_S, "three partitions left")
    more = produce_to_partitions(bootstrap, topic, range(6), 20, "coop2")
    everything = {p: placed[p] + more[p] for p in range(6)}
    read_all([a, b], everything)
    time.sleep(1.0)  # a late rebalance would show up as more callbacks

    first_a = assigns(a.snapshot())[0]
    assert first_a["protocol"] == "COOPERATIVE"
    assert {tuple(p) for p in first_a["partitions"]} == all6
    after = a.snapshot()[n_before:]
    revoked = [tuple(p) for e in after if e["ev"] == "revoke" for p in e["partitions"]]
    readded = [tuple(p) for e in after if e["ev"] == "assign" for p in e["partitions"]]
    assert not [e for e in a.snapshot() if e["ev"] == "lost"]
    # Only three partitions left the first member, in incremental revocations; it never gave
    # up the others and got nothing back.
    assert len(revoked) == 3 and len(set(revoked)) == 3, revoked
    assert readded == [], readded
    kept = all6 - set(revoked)
    assert a.owned() == kept
    # What librdkafka actually held, sampled between polls: six, then the three it kept.
    assert [len(e["partitions"]) for e in a.of("assignment")] == [6, 3]
    b_assigned = [tuple(p) for e in b.of("assign") for p in e["partitions"]]
    assert sorted(b_assigned) == sorted(revoked)
    assert not b.of("revoke", "lost")
    assert all(e["protocol"] == "COOPERATIVE" for e in a.of("assign", "revoke") + b.of("assign"))

    # The moved partitions continued from the first member's commits: every record exactly once.
    counts = consumed_values([a, b])
    assert set(counts) == all_values(everything)
    assert {v: n for v, n in counts.items() if n != 1} == {}
    assert first_offsets(b.records()) == {p: 30 for _t, p in revoked}
    assert not a.errors() and not b.errors(), (a.errors(), b.errors())


# ---- 8. offsets across client implementations -------------------------------------------------


def test_kafka_python_commits_and_librdkafka_resumes(fast_broker, members):
    from kafka import KafkaConsumer, OffsetAndMetadata
    from kafka import TopicPartition as KTP

    bootstrap = fast_broker.bootstrap
    admin = admin_client(bootstrap)
    topic, group = unique_topic("grp-xclient"), unique_topic("g-xclient")
    create_topic(admin, topic, partitions=3)
    placed = produce_to_partitions(bootstrap, topic, range(3), 50, "xc")

    kp = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False,
                       auto_offset_reset="earliest", session_timeout_ms=6000,
                       heartbeat_interval_ms=500, client_id="kafka-python-member")
    kp_got = []
    try:
        kp.subscribe([topic])
        deadline = time.monotonic() + TIMEOUT_S
        while len(kp_got) < 70 and time.monotonic() < deadline:
            for _tp, recs in kp.poll(timeout_ms=200, max_records=10).items():
                kp_got += [(topic, r.partition, r.offset, r.value.decode()) for r in recs]
        assert len(kp_got) >= 70, f"kafka-python read {len(kp_got)} records in {TIMEOUT_S} s"
        assert {tp.partition for tp in kp.assignment()} == {0, 1, 2}
        ends: dict[int, int] = {}
        for _t, p, o, _v in kp_got:
            ends[p] = max(ends.get(p, 0), o + 1)
        kp.commit({KTP(topic, p): OffsetAndMetadata(o, f"kp-{p}-{o}", -1)
                   for p, o in ends.items()})
    finally:
        kp.close()

    # librdkafka sees the same offsets, and the metadata byte for byte.
    want = {p: ends.get(p, OFFSET_INVALID) for p in range(3)}
    assert committed(admin, group, topic, range(3)) == want
    from confluent_kafka import ConsumerGroupTopicPartitions, TopicPartition
    res = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(
        group, [TopicPartition(topic, p) for p in ends])])[group].result(TIMEOUT_S)
    assert {tp.partition: tp.metadata for tp in res.topic_partitions} == {
        p: f"kp-{p}-{o}" for p, o in ends.items()}

    rd = members.start(bootstrap, group, [topic], "rd", batch=9)
    read_all([rd], {p: placed[p][ends.get(p, 0):] for p in range(3)}, "the rest")
    behind = [p for p in range(3) if ends.get(p, 0) < 50]
    rd.wait_for(commits_reach(rd, topic, {p: 50 for p in behind}), TIMEOUT_S, "commits")
    rd.terminate()
    got = rd.records()
    assert first_offsets(got) == {p: ends.get(p, 0) for p in behind}
    assert Counter(v for *_, v in kp_got + got) == Counter(all_values(placed))

    # And back: kafka-python resumes from librdkafka's commits and reads only what is new.
    more = produce_to_partitions(bootstrap, topic, range(3), 5, "xc2")
    kp = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False,
                       auto_offset_reset="earliest", session_timeout_ms=6000,
                       heartbeat_interval_ms=500)
    again = []
    try:
        kp.subscribe([topic])
        deadline = time.monotonic() + TIMEOUT_S
        while len(again) < 15 and time.monotonic() < deadline:
            for _tp, recs in kp.poll(timeout_ms=200).items():
                again += [r.value.decode() for r in recs]
        time.sleep(0.5)
        for _tp, recs in kp.poll(timeout_ms=500).items():
            again += [r.value.decode() for r in recs]
    finally:
        kp.close()
    assert Counter(again) == Counter(all_values(more))
