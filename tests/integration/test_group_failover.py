"""Consumer groups when something goes away: a member killed with SIGKILL, a static member
restarted (and one impersonated), and the broker itself restarted or killed. Committed
offsets live in __consumer_offsets; they and the group must come back exactly.
"""

from __future__ import annotations

import time
from collections import Counter

from confluent_kafka import OFFSET_INVALID, ConsumerGroupState

from clients import admin_client, create_topic, topic_partitions, unique_topic
from group_clients import (FAST_GROUP_ENV, all_values, commits_reach, committed,  # noqa: F401
                           consumed_values, describe, fast_broker, first_offsets, listed_groups,
                           members, owned_after, produce_to_partitions, read_all, wait_all)

TIMEOUT_S = 30
SESSION_MS = 3000
HEARTBEAT_MS = 500


def acked_commits(m, topic) -> dict[int, int]:
    """Per partition, the highest offset member m saw acknowledged."""
    got: dict[int, int] = {}
    for e in m.of("commit"):
        for t, p, o in e["offsets"]:
            if t == topic:
                got[p] = max(got.get(p, 0), o)
    return got


def since(m, mark: int, *kinds) -> list[dict]:
    return [e for e in m.snapshot()[mark:] if e["ev"] in kinds]


# ---- 2. a member killed -----------------------------------------------------------------------


def test_killed_member_is_replaced_after_its_session_timeout_from_its_last_commit(
        fast_broker, members):
    bootstrap = fast_broker.bootstrap
    admin = admin_client(bootstrap)
    topic, group = unique_topic("fo-kill"), unique_topic("g-kill")
    create_topic(admin, topic, partitions=6)
    placed = produce_to_partitions(bootstrap, topic, range(6), 100, "kill")

    # Slow members (5 records, then 100 ms), so the victim dies with work in flight.
    ms = [members.start(bootstrap, group, [topic], f"k{i}", batch=5, batch_delay_ms=100,
                        session_timeout_ms=SESSION_MS, heartbeat_interval_ms=HEARTBEAT_MS,
                        wait_go=True) for i in range(3)]
    wait_all(ms, lambda evs: any(e["ev"] == "ready" for e in evs), what="ready")
    for m in ms:
        m.go()
    wait_all(ms, lambda evs: any(e["ev"] == "assign" for e in evs), what="an assignment")
    assert [len(m.owned()) for m in ms] == [2, 2, 2]
    victim, survivors = ms[1], [ms[0], ms[2]]
    victim.wait_for(lambda evs: sum(len(e["records"]) for e in evs if e["ev"] == "records") >= 40
                    and any(e["ev"] == "commit" for e in evs), TIMEOUT_S, "40 records read")
    lost = sorted(p for _t, p in victim.owned())
    marks = {m.name: len(m.snapshot()) for m in survivors}
    victim.kill()
    t_kill = time.time()
    time.sleep(0.3)  # a commit the victim sent just before it died has landed by now

    # What the victim committed is at least what it saw acknowledged, at most what it read.
    at_kill = committed(admin, group, topic, lost)
    acked = acked_commits(victim, topic)
    read_to: dict[int, int] = {}
    for _t, p, o, _v in victim.records():
        read_to[p] = max(read_to.get(p, 0), o + 1)
    for p in lost:
        assert acked.get(p, 0) <= at_kill[p] <= read_to.get(p, 0) or (
            p not in read_to and at_kill[p] == OFFSET_INVALID), (p, acked, at_kill, read_to)
    start_at = {p: (0 if at_kill[p] == OFFSET_INVALID else at_kill[p]) for p in lost}

    wait_all(survivors, lambda evs: len(owned_after(evs)) == 3, SESSION_MS / 1000 + 15,
             "the victim's partitions")
    takeover = max(since(m, marks[m.name], "assign")[-1]["t"] for m in survivors)
    read_all(ms, placed)
    for m in survivors:
        m.wait_for(commits_reach(m, topic, {p: 100 for _t, p in m.owned()}), TIMEOUT_S,
                   "commits to the end")

    # Not before the session timeout (less the heartbeat the victim may have just sent).
    took = takeover - t_kill
    print(f"\ntakeover {took * 1000:.0f} ms after SIGKILL (session.timeout.ms={SESSION_MS})")
    assert (SESSION_MS - HEARTBEAT_MS) / 1000 - 0.35 <= took <= SESSION_MS / 1000 + 5, took

    # Exactly one rebalance: each survivor gave up its two partitions and got three back.
    for m in survivors:
        evs = [e for e in m.snapshot() if e["ev"] in ("assign", "revoke", "lost")]
        assert [(e["ev"], len(e["partitions"])) for e in evs] == [
            ("assign", 2), ("revoke", 2), ("assign", 3)], evs
    assert sorted(p for m in survivors for _t, p in m.owned()) == list(range(6))

    # Nothing skipped; re-read only what the victim read after its last commit.
    counts = consumed_values(ms)
    assert set(counts) == all_values(placed)
    victim_values = {v for *_, v in victim.records()}
    for v, n in counts.items():
        if n == 1:
            continue
        p, o = next((p, o) for _t, p, o, vv in victim.records() if vv == v)
        assert n == 2 and v in victim_values and p in lost and o >= start_at[p], (v, n, p, o)
    taken = [r for m in survivors for r in m.records() if r[1] in lost]
    assert {p: min(o for _t, pp, o, _v in taken if pp == p) for p in lost
            if start_at[p] < 100} == {p: start_at[p] for p in lost if start_at[p] < 100}
    rereads = sum(n - 1 for n in counts.values())
    assert rereads == sum(read_to.get(p, 0) - start_at[p] for p in lost)
    for m in survivors:
        assert not m.errors(), m.errors()


# ---- 4. static membership ---------------------------------------------------------------------


def test_static_member_restart_within_session_timeout_does_not_rebalance(fast_broker, members):
    bootstrap = fast_broker.bootstrap
    admin = admin_client(bootstrap)
    topic, group = unique_topic("fo-static"), unique_topic("g-static")
    create_topic(admin, topic, partitions=3)
    placed = produce_to_partitions(bootstrap, topic, range(3), 20, "static")

    def start(name, instance):
        return members.start(bootstrap, group, [topic], name, instance_id=instance,
                             session_timeout_ms=10000, heartbeat_interval_ms=HEARTBEAT_MS,
                             batch=7, wait_go=True)

    ms = [start(f"s{i}", f"inst-{i}") for i in range(3)]
    wait_all(ms, lambda evs: any(e["ev"] == "ready" for e in evs), what="ready")
    for m in ms:
        m.go()
    wait_all(ms, lambda evs: any(e["ev"] == "assign" for e in evs), what="an assignment")
    read_all(ms, placed)
    for m in ms:
        m.wait_for(commits_reach(m, topic, {p: 20 for _t, p in m.owned()}), TIMEOUT_S, "commits")
    gen0 = {m.of("assign")[-1]["gen"] for m in ms}
    assert len(gen0) == 1 and None not in gen0, gen0
    before = describe(admin, group)
    assert before.state == ConsumerGroupState.STABLE
    by_instance = {md.group_instance_id: md for md in before.members}
    assert sorted(by_instance) == ["inst-0", "inst-1", "inst-2"]

    old, others = ms[1], [ms[0], ms[2]]
    held = old.owned()
    marks = {m.name: len(m.snapshot()) for m in others}
    old.terminate()  # a static member does not leave the group when it closes
    new = start("s1-again", "inst-1")
    new.go()
    new.wait_for(lambda evs: any(e["ev"] == "assign" for e in evs), TIMEOUT_S, "an assignment")
    assert new.owned() == held
    assert new.of("assign")[0]["gen"] in gen0

    more = produce_to_partitions(bootstrap, topic, range(3), 10, "static2")
    read_all(others + [new], more)
    time.sleep(2.0)  # four heartbeats: a rebalance would have reached the others by now
    for m in others:
        assert since(m, marks[m.name], "assign", "revoke", "lost", "generation") == [], m.name

    after = describe(admin, group)
    assert after.state == ConsumerGroupState.STABLE
    now = {md.group_instance_id: md for md in after.members}
    assert sorted(now) == ["inst-0", "inst-1", "inst-2"]
    for inst in ("inst-0", "inst-2"):
        assert now[inst].member_id == by_instance[inst].member_id
    def parts(md):
        return sorted((tp.topic, tp.partition) for tp in md.assignment.topic_partitions)
    assert {i: parts(md) for i, md in now.items()} == {
        i: parts(md) for i, md in by_instance.items()}

    # The restarted member went on from its predecessor's commits: every record exactly once.
    counts = consumed_values(ms + [new])
    assert set(counts) == all_values(placed) | all_values(more)
    assert {v: n for v, n in counts.items() if n != 1} == {}
    assert first_offsets(new.records()) == {p: 20 for _t, p in held}


def test_second_instance_with_the_same_static_id_fences_the_first(fast_broker, members):
    bootstrap = fast_broker.bootstrap
    admin = admin_client(bootstrap)
    topic, group = unique_topic("fo-fence"), unique_topic("g-fence")
    create_topic(admin, topic, partitions=2)
    all2 = {(topic, 0), (topic, 1)}

    first = members.start(bootstrap, group, [topic], "first", instance_id="dup",
                          session_timeout_ms=10000, heartbeat_interval_ms=HEARTBEAT_MS)
    first.wait_for(lambda evs: owned_after(evs) == all2, TIMEOUT_S, "both partitions")
    second = members.start(bootstrap, group, [topic], "second", instance_id="dup",
                           session_timeout_ms=10000, heartbeat_interval_ms=HEARTBEAT_MS)
    second.wait_for(lambda evs: owned_after(evs) == all2, TIMEOUT_S, "both partitions")
    fatal = first.wait_for(
        lambda evs: [e for e in evs if e["ev"] == "error" and e["fatal"]], TIMEOUT_S,
        "a fatal error")
    assert "fenced" in fatal[0]["error"].lower(), fatal
    assert first.wait_exit(TIMEOUT_S) == 3

    placed = produce_to_partitions(bootstrap, topic, range(2), 10, "fence")
    read_all([second], placed)
    assert not second.of("revoke", "lost")
    [md] = describe(admin, group).members
    assert (md.group_instance_id, md.member_id) == ("dup", second.of("assign")[0]["member"])


# ---- 6. the broker restarts -------------------------------------------------------------------


def test_offsets_and_group_survive_broker_restart_and_crash(broker_factory, members):
    broker = broker_factory("groups", env={**FAST_GROUP_ENV,
                                           "STRATA_OFFSETS_TOPIC_NUM_PARTITIONS": "7"})
    bootstrap = broker.bootstrap
    admin = admin_client(bootstrap)
    topic, group = unique_topic("fo-restart"), unique_topic("g-restart")
    create_topic(admin, topic, partitions=3)
    placed = produce_to_partitions(bootstrap, topic, range(3), 40, "restart")

    first = members.start(bootstrap, group, [topic], "before", batch=10, max_records=70)
    assert first.wait_exit(TIMEOUT_S) == 0, first.diagnostics()
    ends: dict[int, int] = {}
    for _t, p, o, _v in first.records():
        ends[p] = max(ends.get(p, 0), o + 1)
    before = {p: ends.get(p, OFFSET_INVALID) for p in range(3)}
    assert committed(admin, group, topic, range(3)) == before
    assert listed_groups(admin)[group].state == ConsumerGroupState.EMPTY
    assert topic_partitions(admin, "__consumer_offsets") == list(range(7))
    del admin

    broker.stop()
    broker.start()
    admin = admin_client(bootstrap)
    assert committed(admin, group, topic, range(3)) == before
    assert listed_groups(admin)[group].state == ConsumerGroupState.EMPTY
    assert describe(admin, group).state == ConsumerGroupState.EMPTY

    more = produce_to_partitions(bootstrap, topic, range(3), 10, "restart2")
    second = members.start(bootstrap, group, [topic], "after", batch=10)
    everything = {p: placed[p] + more[p] for p in range(3)}
    read_all([first, second], everything)
    second.wait_for(commits_reach(second, topic, {p: 50 for p in range(3)}), TIMEOUT_S, "commits")
    assert first_offsets(second.records()) == {p: ends.get(p, 0) for p in range(3)}
    assert Counter(v for m in (first, second) for *_, v in m.records()) \
        == Counter(all_values(everything))
    second.terminate()
    del admin

    # Commits the broker acknowledged survive a crash too.
    broker.kill()
    broker.start()
    admin = admin_client(bootstrap)
    assert committed(admin, group, topic, range(3)) == {p: 50 for p in range(3)}
    assert listed_groups(admin)[group].state == ConsumerGroupState.EMPTY


def test_member_continues_across_a_broker_restart(fast_broker, members):
    bootstrap = fast_broker.bootstrap
    admin = admin_client(bootstrap)
    topic, group = unique_topic("fo-ride"), unique_topic("g-ride")
    create_topic(admin, topic, partitions=3)
    placed = produce_to_partitions(bootstrap, topic, range(3), 30, "ride")
    m = members.start(bootstrap, group, [topic], "rider", batch=8, session_timeout_ms=6000)
    read_all([m], placed)
    m.wait_for(commits_reach(m, topic, {p: 30 for p in range(3)}), TIMEOUT_S, "commits")
    del admin

    fast_broker.stop()
    fast_broker.start()
    more = produce_to_partitions(bootstrap, topic, range(3), 30, "ride2")
    read_all([m], more, "the records produced after the restart")
    m.wait_for(commits_reach(m, topic, {p: 60 for p in range(3)}), TIMEOUT_S, "commits")
    counts = consumed_values([m])
    assert set(counts) == all_values(placed) | all_values(more)
    assert {v: n for v, n in counts.items() if n != 1} == {}
    assert not [e for e in m.of("error") if e["fatal"]]
    m.terminate()
    assert committed(admin_client(bootstrap), group, topic, range(3)) == {p: 60 for p in range(3)}
