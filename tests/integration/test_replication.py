"""Replicated partitions on a three-broker cluster: acknowledged writes survive leader kills,
acks=all is refused below min.insync.replicas, a paused leader is fenced by the epoch, and
consumer groups survive the loss of their coordinator.

Every broker is a real `strata` process; clients are confluent-kafka (librdkafka). Leases are
short (heartbeat 250 ms, session 2 s) so failovers take seconds, not the default ~10 s.
"""

from __future__ import annotations

import os
import signal
import statistics
import threading
import time

from confluent_kafka import Consumer, ElectionType, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import NewTopic

import wire
from clients import admin_client, unique_topic
from test_cluster import Cluster

TIMEOUT_S = 60
FAST_LEASES = {
    "STRATA_BROKER_HEARTBEAT_INTERVAL_MS": "250",
    "STRATA_BROKER_SESSION_TIMEOUT_MS": "2000",
    "STRATA_REPLICA_LAG_TIME_MAX_MS": "3000",
    "STRATA_OFFSETS_TOPIC_REPLICATION_FACTOR": "3",
    "STRATA_OFFSETS_TOPIC_NUM_PARTITIONS": "3",
}


def start_cluster(broker_factory, strata_bin) -> Cluster:
    cluster = Cluster(broker_factory, strata_bin, voters=3, extra_env=FAST_LEASES)
    cluster.start_all()
    return cluster


def partition_state(cluster: Cluster, topic: str, partition: int = 0):
    """(leader, isr, epoch) as a live broker reports it, or None while unknown."""
    for b in cluster.nodes.values():
        if not b.alive():
            continue
        try:
            md = admin_client(b.bootstrap).list_topics(topic, timeout=5)
        except Exception:
            continue
        t = md.topics.get(topic)
        if t is None or t.error is not None and partition not in t.partitions:
            continue
        p = t.partitions.get(partition)
        if p is None:
            continue
        return p.leader, sorted(p.isrs), p
    return None


def wait_state(cluster: Cluster, topic: str, predicate, what: str, timeout_s: float = TIMEOUT_S):
    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        last = partition_state(cluster, topic)
        if last is not None and last[0] >= 0 and predicate(last[0], last[1]):
            return last[0], last[1]
        time.sleep(0.1)
    raise AssertionError(f"{what}: last seen {last}")


def create_replicated(cluster: Cluster, topic: str, partitions: int = 1, rf: int = 3,
                      min_isr: int = 2):
    admin = admin_client(cluster.nodes[1].bootstrap)
    fs = admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=rf,
                                       config={"min.insync.replicas": str(min_isr)})],
                             request_timeout=30)
    fs[topic].result(timeout=30)
    wait_state(cluster, topic, lambda leader, isr: len(isr) == rf, "all replicas in sync")


def bootstrap_of(cluster: Cluster) -> str:
    return ",".join(b.bootstrap for b in cluster.nodes.values())


def read_partition(cluster: Cluster, topic: str, partition: int = 0) -> dict[int, bytes]:
    """Every record of the partition from the current leader, as {offset: value}."""
    c = Consumer({"bootstrap.servers": bootstrap_of(cluster), "group.id": unique_topic("reader"),
                  "enable.auto.commit": False, "auto.offset.reset": "earliest",
                  "enable.partition.eof": True})
    try:
        deadline = time.monotonic() + TIMEOUT_S
        while True:
            try:
                low, high = c.get_watermark_offsets(TopicPartition(topic, partition), timeout=5)
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        c.assign([TopicPartition(topic, partition, low)])
        out: dict[int, bytes] = {}
        while time.monotonic() < deadline and (not out or max(out) + 1 < high):
            if high == low:
                break
            m = c.poll(1.0)
            if m is None or m.error():
                continue
            out[m.offset()] = m.value()
        assert not out or max(out) + 1 >= high, f"read {len(out)} records, high watermark {high}"
        return out
    finally:
        c.close()


class Load:
    """An idempotent acks=all producer writing unique values as fast as acks allow (bounded
    in-flight), recording each acknowledgement's offset and when it arrived."""

    def __init__(self, cluster: Cluster, topic: str):
        self.producer = Producer({
            "bootstrap.servers": bootstrap_of(cluster), "acks": "all",
            "enable.idempotence": True, "linger.ms": 2, "message.timeout.ms": 120000,
            "retry.backoff.ms": 50, "reconnect.backoff.max.ms": 500,
            "topic.metadata.refresh.interval.ms": 1000,
        })
        self.topic = topic
        self.acked: dict[bytes, int] = {}
        self.sent_at: dict[bytes, float] = {}
        # (sent, acknowledged) times of every acknowledged record.
        self.ack_times: list[tuple[float, float]] = []
        self.errors: list[str] = []
        self.sent = 0
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def on_delivery(self, err, msg):
        with self.lock:
            if err is None:
                self.acked[msg.value()] = msg.offset()
                self.ack_times.append((self.sent_at[msg.value()], time.monotonic()))
            else:
                self.errors.append(str(err))

    def run(self):
        i = 0
        while not self.stop.is_set():
            in_flight = self.sent - len(self.acked) - len(self.errors)
            if in_flight > 500:
                self.producer.poll(0.01)
                continue
            value = b"v-%08d" % i
            with self.lock:
                self.sent_at[value] = time.monotonic()
            self.producer.produce(self.topic, value=value, partition=0,
                                  on_delivery=self.on_delivery)
            self.sent += 1
            i += 1
            self.producer.poll(0)
            if i % 50 == 0:
                time.sleep(0.005)
        assert self.producer.flush(120) == 0, "records still unacknowledged after 120 s"

    def first_ack_after(self, t: float, timeout_s: float = TIMEOUT_S) -> float:
        """Seconds from `t` (a kill) to the first acknowledgement of a record sent after it:
        the first write the new leader took."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self.lock:
                later = [acked for sent, acked in self.ack_times if sent > t]
            if later:
                return min(later) - t
            time.sleep(0.02)
        raise AssertionError(f"no acknowledgement within {timeout_s} s of the kill")


def test_acked_writes_survive_repeated_leader_kills(broker_factory, strata_bin):
    cluster = start_cluster(broker_factory, strata_bin)
    topic = unique_topic("rep")
    create_replicated(cluster, topic)
    load = Load(cluster, topic)
    load.thread.start()
    failovers = []
    try:
        time.sleep(1.0)
        for kill in range(5):
            leader, _ = wait_state(cluster, topic, lambda leader, isr: len(isr) == 3,
                                   "ISR back to 3 before the next kill")
            acked_before = len(load.acked)
            t_kill = time.monotonic()
            cluster.nodes[leader].kill()
            failovers.append(load.first_ack_after(t_kill))
            new_leader, _ = wait_state(cluster, topic, lambda l, isr: l != leader,
                                       "a new leader")
            print(f"kill {kill + 1}: leader {leader} -> {new_leader}, first ack on the new "
                  f"leader {failovers[-1]:.2f} s after SIGKILL ({acked_before} acked before)")
            cluster.nodes[leader].start()
    finally:
        load.stop.set()
        load.thread.join(timeout=180)
    assert not load.thread.is_alive()
    acked = dict(load.acked)
    assert len(acked) > 1000, f"only {len(acked)} acknowledged"
    log = read_partition(cluster, topic)
    values = list(log.values())
    # Exactly once: no value twice (idempotent producer), every acknowledged one present at
    # the offset its acknowledgement named.
    assert len(values) == len(set(values)), "a record was written twice"
    wrong = {v: o for v, o in acked.items() if log.get(o) != v}
    assert not wrong, f"{len(wrong)} acknowledged records missing or moved, e.g. " \
                      f"{list(wrong.items())[:3]}"
    # Replicas agree: after one more leader change the new leader holds the same log.
    leader, _ = wait_state(cluster, topic, lambda l, isr: len(isr) == 3, "ISR of 3")
    cluster.nodes[leader].kill()
    wait_state(cluster, topic, lambda l, isr: l != leader, "a new leader")
    again = read_partition(cluster, topic)
    assert again == log, "the new leader's log differs from the old leader's"
    print(f"replication: {len(acked)} acknowledged writes, 6 leader kills, 0 lost; failover "
          f"(SIGKILL to first ack) p50 {statistics.median(failovers):.2f} s, max "
          f"{max(failovers):.2f} s")


def test_acks_all_refused_below_min_insync(broker_factory, strata_bin):
    cluster = start_cluster(broker_factory, strata_bin)
    topic = unique_topic("minisr")
    create_replicated(cluster, topic, rf=2, min_isr=2)
    leader, isr = wait_state(cluster, topic, lambda l, isr: len(isr) == 2, "ISR of 2")
    follower = next(r for r in isr if r != leader)
    p = Producer({"bootstrap.servers": bootstrap_of(cluster), "acks": "all",
                  "enable.idempotence": False, "retries": 0, "message.timeout.ms": 5000})
    results = []
    p.produce(topic, b"before", partition=0, on_delivery=lambda e, m: results.append(e))
    assert p.flush(30) == 0 and results == [None], results

    # The follower dies: until the controller fences it the write waits (never acked), then
    # the ISR is below min.insync.replicas and writes are refused.
    cluster.nodes[follower].kill()
    wait_state(cluster, topic, lambda l, isr: isr == [leader], "the ISR shrinks to the leader")
    results.clear()
    for i in range(5):
        p.produce(topic, b"refused-%d" % i, partition=0,
                  on_delivery=lambda e, m: results.append(e))
    assert p.flush(30) == 0
    assert len(results) == 5 and all(e is not None for e in results), results
    codes = {e.code() for e in results}
    assert codes <= {KafkaError.NOT_ENOUGH_REPLICAS,
                     KafkaError.NOT_ENOUGH_REPLICAS_AFTER_APPEND}, results

    # The follower returns, catches up, rejoins the ISR: writes are accepted again.
    cluster.nodes[follower].start()
    wait_state(cluster, topic, lambda l, isr: len(isr) == 2, "the follower back in the ISR")
    results.clear()
    p.produce(topic, b"after", partition=0, on_delivery=lambda e, m: results.append(e))
    assert p.flush(30) == 0 and results == [None], results
    values = list(read_partition(cluster, topic).values())
    assert b"before" in values and b"after" in values
    assert not any(v.startswith(b"refused") for v in values[values.index(b"after"):])


def produce_error(payload: bytes) -> int:
    """The error code of a one-partition Produce v3 response."""
    return wire.produce_result(payload)[0]


def test_paused_leader_is_fenced_and_acknowledges_nothing(broker_factory, strata_bin):
    cluster = start_cluster(broker_factory, strata_bin)
    topic = unique_topic("pause")
    create_replicated(cluster, topic)
    leader, _ = wait_state(cluster, topic, lambda l, isr: len(isr) == 3, "ISR of 3")
    old = cluster.nodes[leader]
    batch = lambda value: wire.record_batch([(None, value, [])], int(time.time() * 1000))
    # A connection to the leader, opened while it leads: what a client holds when the
    # leader stalls (GC pause, VM freeze, SIGSTOP).
    sock = wire.connect(old.port)
    sock.sendall(wire.produce_request(1, topic, 0, batch(b"warmup"), acks=-1))
    assert produce_error(wire.read_response(sock, 30)) == 0

    os.kill(old.pid, signal.SIGSTOP)
    try:
        new_leader, _ = wait_state(cluster, topic, lambda l, isr: l != leader,
                                   "a new leader while the old one is paused")
        # This write reaches the paused leader's socket; it must never be acknowledged.
        sock.sendall(wire.produce_request(2, topic, 0, batch(b"to-the-old-leader"), acks=-1,
                                          timeout_ms=10000))
        good = Producer({"bootstrap.servers": cluster.nodes[new_leader].bootstrap,
                         "acks": "all"})
        ok = []
        for i in range(20):
            good.produce(topic, b"new-%d" % i, partition=0,
                         on_delivery=lambda e, m: ok.append(e))
        assert good.flush(30) == 0 and ok == [None] * 20, ok
    finally:
        os.kill(old.pid, signal.SIGCONT)
    error = produce_error(wire.read_response(sock, 30))
    # NOT_LEADER_OR_FOLLOWER, REQUEST_TIMED_OUT, NOT_ENOUGH_REPLICAS_AFTER_APPEND,
    # FENCED_LEADER_EPOCH: anything but success.
    assert error in (6, 7, 20, 74), \
        f"the paused leader answered {error} to a write after it was replaced"
    sock.close()
    values = list(read_partition(cluster, topic).values())
    assert b"to-the-old-leader" not in values
    assert values.count(b"new-0") == 1 and values.count(b"warmup") == 1
    # The old leader rejoins as a follower, truncates what it alone had, and catches up.
    wait_state(cluster, topic, lambda l, isr: len(isr) == 3, "the old leader back in the ISR")

    # ElectLeaders (preferred): leadership returns to the first replica, the old leader.
    state = partition_state(cluster, topic)
    preferred = state[2].replicas[0]
    assert preferred == leader, state
    admin = admin_client(cluster.nodes[new_leader].bootstrap)
    result = admin.elect_leaders(ElectionType.PREFERRED, [TopicPartition(topic, 0)]).result(30)
    assert all(e is None for e in result.values()), result
    wait_state(cluster, topic, lambda l, isr: l == preferred, "the preferred leader back")
    again = admin.elect_leaders(ElectionType.PREFERRED, [TopicPartition(topic, 0)]).result(30)
    codes = [(e.args[0] if isinstance(e, Exception) else e).code() for e in again.values()
             if e is not None]
    assert codes == [KafkaError.ELECTION_NOT_NEEDED], again


def test_group_offsets_survive_coordinator_loss(broker_factory, strata_bin):
    cluster = start_cluster(broker_factory, strata_bin)
    topic = unique_topic("grp")
    create_replicated(cluster, topic, partitions=3)
    p = Producer({"bootstrap.servers": bootstrap_of(cluster), "acks": "all"})
    for i in range(300):
        p.produce(topic, b"m-%d" % i, partition=i % 3)
    assert p.flush(30) == 0
    group = unique_topic("g")

    def consumer():
        return Consumer({"bootstrap.servers": bootstrap_of(cluster), "group.id": group,
                         "enable.auto.commit": False, "auto.offset.reset": "earliest",
                         "session.timeout.ms": 6000})

    c = consumer()
    c.subscribe([topic])
    seen: dict[int, int] = {}
    deadline = time.monotonic() + TIMEOUT_S
    while (sum(seen.values()) < 150 or len(seen) < 3) and time.monotonic() < deadline:
        m = c.poll(1.0)
        if m is not None and not m.error():
            seen[m.partition()] = seen.get(m.partition(), 0) + 1
    committed = c.commit(asynchronous=False)
    positions = {(tp.topic, tp.partition): tp.offset for tp in committed}
    assert len(positions) == 3 and sum(positions.values()) >= 150, positions
    c.close()

    # Kill the broker leading the group's __consumer_offsets partition (its coordinator).
    md = admin_client(bootstrap_of(cluster)).list_topics("__consumer_offsets", timeout=10)
    leaders = {p.leader for p in md.topics["__consumer_offsets"].partitions.values()}
    c2 = consumer()
    coordinator = group_coordinator(cluster, group)
    assert coordinator in leaders
    cluster.nodes[coordinator].kill()

    # A new member of the group resumes exactly where the commit left off.
    c2.assign([TopicPartition(topic, part) for part in range(3)])
    deadline = time.monotonic() + TIMEOUT_S
    got = None
    while time.monotonic() < deadline:
        try:
            got = c2.committed([TopicPartition(topic, part) for part in range(3)], timeout=5)
            if all(tp.error is None for tp in got):
                break
        except Exception:
            pass
        time.sleep(0.2)
    assert got is not None
    after = {(tp.topic, tp.partition): tp.offset for tp in got}
    assert after == positions, f"committed offsets changed: {positions} -> {after}"
    c2.close()


def group_coordinator(cluster: Cluster, group: str) -> int:
    """The broker leading the group's __consumer_offsets partition (Kafka's mapping:
    abs(Java hashCode of the group id) % partitions), i.e. its coordinator."""
    h = 0
    units = [int.from_bytes(group.encode("utf-16-be")[i:i + 2], "big")
             for i in range(0, len(group.encode("utf-16-be")), 2)]
    for u in units:
        h = (h * 31 + u) & 0xFFFFFFFF
    if h >= 1 << 31:
        h -= 1 << 32
    h = 0 if h == -(1 << 31) else abs(h)
    md = admin_client(bootstrap_of(cluster)).list_topics("__consumer_offsets", timeout=10)
    parts = md.topics["__consumer_offsets"].partitions
    return parts[h % len(parts)].leader


def test_reassignment_moves_replicas_and_keeps_every_record(broker_factory, strata_bin):
    """AlterPartitionReassignments (kafka-python's admin client): a partition on brokers
    [a, b] moves to [c, a] while writes continue; the new replica catches up, joins the ISR,
    b drops out, and every record is still there."""
    from kafka import KafkaAdminClient
    from kafka import TopicPartition as KTopicPartition

    cluster = start_cluster(broker_factory, strata_bin)
    topic = unique_topic("move")
    create_replicated(cluster, topic, rf=2, min_isr=1)
    state = partition_state(cluster, topic)
    a, b = state[2].replicas
    c = next(i for i in cluster.nodes if i not in (a, b))
    p = Producer({"bootstrap.servers": bootstrap_of(cluster), "acks": "all"})
    for i in range(2000):
        p.produce(topic, b"m-%d" % i, partition=0)
    assert p.flush(30) == 0

    admin = KafkaAdminClient(bootstrap_servers=bootstrap_of(cluster), request_timeout_ms=30000)
    try:
        tp = KTopicPartition(topic, 0)
        result = admin.alter_partition_reassignments({tp: [c, a]})
        assert all(e is None for e in result.values()), result
        for i in range(2000, 3000):
            p.produce(topic, b"m-%d" % i, partition=0)
        assert p.flush(30) == 0
        deadline = time.monotonic() + TIMEOUT_S
        while admin.list_partition_reassignments() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not admin.list_partition_reassignments(), "the reassignment did not finish"
    finally:
        admin.close()
    leader, isr = wait_state(cluster, topic, lambda l, isr: sorted(isr) == sorted([a, c]),
                             "the ISR is the new replica set")
    assert partition_state(cluster, topic)[2].replicas == [c, a]
    values = list(read_partition(cluster, topic).values())
    assert values == [b"m-%d" % i for i in range(3000)]
    # The broker that left deletes its copy.
    gone = cluster.nodes[b].workdir / "data" / "logs" / f"{topic}-0"
    deadline = time.monotonic() + TIMEOUT_S
    while gone.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not gone.exists(), f"{gone} still exists on the broker that left"


def fetch_as_replica(port: int, topic: str, replica_id: int) -> int:
    """A raw Fetch v4 of partition 0 from offset 0 claiming `replica_id`: its error code."""
    body = (wire.i32(replica_id) + wire.i32(100) + wire.i32(1) + wire.i32(1 << 20) + wire.i8(0)
            + wire.array([wire.string(topic) + wire.array([
                wire.i32(0) + wire.i64(0) + wire.i32(1 << 20)])]))
    frame = wire.frame(wire.request_header(1, 4, 77) + body)
    payload = wire.exchange(port, frame, timeout_s=10)
    assert payload is not None, "no fetch response"
    r = wire.Reader(payload)
    assert r.i32() == 77
    r.i32()  # throttle
    assert r.i32() == 1  # topics
    r.take(r.i16())
    assert r.i32() == 1  # partitions
    assert r.i32() == 0
    return r.i16()


def test_a_client_pretending_to_be_a_replica_is_refused(broker_factory):
    """Only live brokers that replicate a partition may fetch as its replicas (they read past
    the high watermark and move it); anyone else claiming a replica id gets INVALID_REQUEST."""
    broker = broker_factory("solo")
    topic = unique_topic("fake")
    admin = admin_client(broker.bootstrap)
    admin.create_topics([NewTopic(topic, 1, 1)])[topic].result(30)
    p = Producer({"bootstrap.servers": broker.bootstrap, "acks": "all"})
    p.produce(topic, b"x", partition=0)
    assert p.flush(30) == 0
    assert fetch_as_replica(broker.port, topic, -1) == 0  # an ordinary consumer fetch
    assert fetch_as_replica(broker.port, topic, 7) == 42  # no such broker
    assert fetch_as_replica(broker.port, topic, 1) == 42  # the leader itself
