"""A multi-node metadata quorum: three voters bootstrap together, any broker can change
metadata, the quorum survives the leader being killed, and a broker started later joins as a
learner and receives the metadata, through a snapshot once the log has been compacted.

Kafka clients still see only the broker they talk to; what is shared here is the metadata
(topics), which every broker reports from its own copy of the Raft state machine.
"""

from __future__ import annotations

import json
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

from confluent_kafka.admin import NewTopic

from clients import admin_client, create_topic, unique_topic
from conftest import free_port

TIMEOUT_S = 30


class Cluster:
    def __init__(self, factory, strata_bin, voters: int, snapshot_entries: int = 1000,
                 extra_env: dict[str, str] | None = None, extra_args: tuple[str, ...] = ()):
        self.factory = factory
        self.bin = strata_bin
        self.snapshot_entries = snapshot_entries
        self.extra_env = extra_env or {}
        self.extra_args = extra_args
        self.raft = {i: f"127.0.0.1:{free_port()}" for i in range(1, voters + 1)}
        self.voters = ",".join(f"{i}@{addr}" for i, addr in self.raft.items())
        self.nodes = {i: self.add(i) for i in self.raft}

    def add(self, node_id: int, raft_addr: str | None = None):
        raft_addr = raft_addr or self.raft[node_id]
        self.raft[node_id] = raft_addr
        env = {
            "STRATA_NODE_ID": str(node_id),
            "STRATA_RAFT_LISTEN": raft_addr,
            "STRATA_CONTROLLER_QUORUM_VOTERS": self.voters,
            "STRATA_RAFT_SNAPSHOT_INTERVAL_ENTRIES": str(self.snapshot_entries),
            **self.extra_env,
        }
        return self.factory(f"node{node_id}", start=False, env=env, extra_args=self.extra_args)

    def start_all(self):
        # A voter serves Kafka requests only once the quorum has a leader: start them
        # together, then wait until every one answers.
        with ThreadPoolExecutor(len(self.nodes)) as pool:
            for f in [pool.submit(b.start) for b in self.nodes.values()]:
                f.result()
        for b in self.nodes.values():
            wait_visible([b], {"__consumer_offsets"}, timeout_s=TIMEOUT_S)

    def cli(self, *args: str) -> str:
        out = subprocess.run([str(self.bin), "cluster", *args], capture_output=True, text=True,
                             timeout=60)
        assert out.returncode == 0, f"strata cluster {' '.join(args)}: {out.stderr}"
        return out.stdout

    def status(self, via: int) -> dict:
        return json.loads(self.cli("status", "--bootstrap", self.raft[via], "--json"))

    def leader(self, via: int) -> int:
        deadline = time.monotonic() + TIMEOUT_S
        while time.monotonic() < deadline:
            leader = self.status(via)["from"]["leader"]
            if leader is not None:
                return leader
            time.sleep(0.1)
        raise AssertionError("no leader")


def topics_on(broker) -> set[str]:
    try:
        md = admin_client(broker.bootstrap).list_topics(timeout=5)
    except Exception:  # still starting: the listener is bound before the broker serves
        return set()
    return set(md.topics)


def wait_visible(brokers, names: set[str], timeout_s: float = 10.0):
    """Every broker's own metadata lists every name (followers apply shortly after commit)."""
    deadline = time.monotonic() + timeout_s
    missing = {}
    while time.monotonic() < deadline:
        missing = {b.name: names - topics_on(b) for b in brokers}
        if not any(missing.values()):
            return
        time.sleep(0.1)
    raise AssertionError(f"topics missing: {missing}")


def create_many(bootstrap: str, names: list[str]):
    admin = admin_client(bootstrap)
    futures = admin.create_topics([NewTopic(n, num_partitions=1, replication_factor=1)
                                   for n in names], request_timeout=TIMEOUT_S)
    for f in futures.values():
        f.result(timeout=TIMEOUT_S)


def test_three_voters_agree_and_survive_leader_kill(broker_factory, strata_bin):
    cluster = Cluster(broker_factory, strata_bin, voters=3)
    cluster.start_all()
    status = cluster.status(via=2)
    assert sorted(int(v) for v in status["from"]["voters"]) == [1, 2, 3]
    assert status["from"]["learners"] == {}

    # A topic created through broker 2 (leader or not) is in every broker's metadata.
    first = unique_topic("cl-a")
    create_topic(admin_client(cluster.nodes[2].bootstrap), first, partitions=2)
    wait_visible(cluster.nodes.values(), {first})
    text = cluster.cli("status", "--bootstrap", cluster.raft[1])
    assert "leader:" in text and "voters: 1,2,3" in text, text

    # Kill the leader; a metadata change through a survivor succeeds once a new one is elected.
    leader = cluster.leader(via=1)
    cluster.nodes[leader].kill()
    survivors = [b for i, b in cluster.nodes.items() if i != leader]
    second = unique_topic("cl-b")
    admin = admin_client(survivors[0].bootstrap)
    t0 = time.monotonic()
    last_error = None
    while time.monotonic() - t0 < TIMEOUT_S:
        try:
            admin.create_topics([NewTopic(second, num_partitions=1, replication_factor=1)],
                                request_timeout=15)[second].result(timeout=20)
            break
        except Exception as e:  # NOT_CONTROLLER while the election runs: retry
            last_error = e
            if "already exists" in str(e):
                break
            time.sleep(0.05)
    else:
        raise AssertionError(f"no metadata change after the leader died: {last_error}")
    took = time.monotonic() - t0
    print(f"metadata failover: create_topics succeeded {took:.2f} s after SIGKILL of leader "
          f"node {leader}")
    assert took < 10, took
    wait_visible(survivors, {first, second})
    new_leader = cluster.leader(via=int(survivors[0].name.removeprefix("node")))
    assert new_leader != leader
    down = cluster.status(via=new_leader)["nodes"][str(leader)]
    assert down is None, down


def test_late_learner_and_restarted_voter_catch_up_from_snapshot(broker_factory, strata_bin):
    cluster = Cluster(broker_factory, strata_bin, voters=3, snapshot_entries=20)
    cluster.start_all()
    names = [unique_topic("cl-s") for _ in range(60)]
    create_many(cluster.nodes[1].bootstrap, names)
    leader = cluster.leader(via=1)
    view = cluster.status(via=leader)["nodes"][str(leader)]
    assert view["snapshot_index"] is not None and view["purged_index"] is not None, view
    assert view["purged_index"] > 20, view

    # Node 4 is not in the voter list: it joins as a learner and gets the compacted history
    # as a snapshot.
    learner = cluster.add(4, f"127.0.0.1:{free_port()}")
    learner.start()
    wait_visible([learner], set(names))
    status = cluster.status(via=4)
    assert list(status["from"]["learners"]) == ["4"], status
    assert status["nodes"]["4"]["snapshot_index"] is not None, status
    text = cluster.cli("status", "--bootstrap", cluster.raft[2])
    assert "learners: 4" in text, text

    # A voter restarted after the leader compacted past its log catches up too.
    behind = next(i for i in (1, 2, 3) if i != leader)
    cluster.nodes[behind].stop()
    more = [unique_topic("cl-t") for _ in range(30)]
    create_many(cluster.nodes[leader].bootstrap, more)
    cluster.nodes[behind].start()
    wait_visible([cluster.nodes[behind], learner], set(names + more))

    # Membership changes: promote the learner, then remove it again.
    cluster.cli("add-voter", "--node-id", "4", "--raft-addr", cluster.raft[4],
                "--bootstrap", cluster.raft[behind])
    assert sorted(cluster.status(via=1)["from"]["voters"]) == ["1", "2", "3", "4"]
    cluster.cli("remove", "--node-id", "4", "--bootstrap", cluster.raft[4])
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        members = cluster.status(via=1)["from"]
        if "4" not in members["voters"] and "4" not in members["learners"]:
            break
        time.sleep(0.1)
    else:
        raise AssertionError(f"node 4 still a member: {members}")
