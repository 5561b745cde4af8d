#!/usr/bin/env python3
"""One consumer-group member, run as its own OS process by the group tests.

A confluent-kafka (librdkafka) consumer that subscribes, processes what it receives and
commits synchronously after every batch (enable.auto.commit=false), as an application with
at-least-once processing would. It reports what happened as JSON lines on stdout, one event a
line, flushed immediately, so the test can reconstruct who owned what and who read what:

    {"ev": "ready", "pid": 123, "t": ...}              consumer created
    {"ev": "subscribe", "t": ...}                       subscribe() called, polling starts
    {"ev": "assign"|"revoke"|"lost", "partitions": [[topic, p], ...],
     "protocol": "EAGER"|"COOPERATIVE", "gen": 3, "member": "...", "t": ...}
        (the callbacks; protocol follows from the assignment strategy, as librdkafka picks it)
    {"ev": "generation", "gen": 4, "t": ...}            the group generation this member saw changed
    {"ev": "assignment", "partitions": [...], "t": ...}  consumer.assignment() changed
    {"ev": "records", "records": [[topic, p, offset, value], ...], "t": ...}
    {"ev": "commit", "offsets": [[topic, p, next_offset], ...], "t": ...}   acknowledged
    {"ev": "commit_error", "error": "...", "t": ...}
    {"ev": "error", "code": "...", "fatal": false, "error": "...", "t": ...}
    {"ev": "closed", "records": n, "t": ...}            close() returned; exits 0 next

SIGTERM stops it cleanly: finish the batch in hand, close (which leaves the group unless the
member is static), exit 0. librdkafka's own log (debug=cgrp) goes to stderr with its
timestamps; the tests read the JoinGroup send times from it.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import struct
import sys
import time

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

# librdkafka's serialised group metadata: this magic, then the generation id as a native int32.
CGMD_MAGIC = b"CGMDv2:"

stopping = False


def emit(ev: str, **fields) -> None:
    fields = {"ev": ev, "t": time.time(), **fields}
    sys.stdout.write(json.dumps(fields, separators=(",", ":")) + "\n")
    sys.stdout.flush()


def generation(consumer: Consumer) -> int | None:
    raw = consumer.consumer_group_metadata()
    if not isinstance(raw, bytes) or not raw.startswith(CGMD_MAGIC):
        return None
    return struct.unpack_from("=i", raw, len(CGMD_MAGIC))[0]


def tps(partitions) -> list[list]:
    return sorted([tp.topic, tp.partition] for tp in partitions)


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--group", required=True)
    ap.add_argument("--topic", action="append", required=True)
    ap.add_argument("--name", default="member", help="client.id")
    ap.add_argument("--instance-id", help="group.instance.id (static membership)")
    ap.add_argument("--strategy", default="range", help="partition.assignment.strategy")
    ap.add_argument("--session-timeout-ms", type=int, default=6000)
    ap.add_argument("--heartbeat-interval-ms", type=int, default=500)
    ap.add_argument("--batch", type=int, default=50, help="most records per consume() call")
    ap.add_argument("--batch-delay-ms", type=int, default=0,
                    help="pause after each committed batch, so work is in flight when a test "
                         "interrupts the member")
    ap.add_argument("--max-records", type=int,
                    help="stop (commit, close, exit 0) after processing this many records")
    ap.add_argument("--wait-go", action="store_true",
                    help="read a line from stdin before subscribing, so several members can "
                         "be started and then released together")
    ap.add_argument("--conf", action="append", default=[], metavar="KEY=VALUE",
                    help="extra librdkafka setting")
    return ap.parse_args(argv)


def main(argv) -> int:
    global stopping
    args = parse_args(argv)

    def on_term(_sig, _frame):
        global stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_term)

    conf = {
        "bootstrap.servers": args.bootstrap,
        "group.id": args.group,
        "client.id": args.name,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "partition.assignment.strategy": args.strategy,
        "session.timeout.ms": args.session_timeout_ms,
        "heartbeat.interval.ms": args.heartbeat_interval_ms,
        # Its log lines carry timestamps: the tests read when JoinGroup went out.
        "debug": "cgrp",
    }
    if args.instance_id:
        conf["group.instance.id"] = args.instance_id
    for kv in args.conf:
        k, _, v = kv.partition("=")
        conf[k] = v

    protocol = "COOPERATIVE" if args.strategy == "cooperative-sticky" else "EAGER"

    def on_assign(c, partitions):
        emit("assign", partitions=tps(partitions), protocol=protocol, gen=generation(c),
             member=c.memberid())

    def on_revoke(c, partitions):
        emit("revoke", partitions=tps(partitions), protocol=protocol, gen=generation(c),
             member=c.memberid())

    def on_lost(c, partitions):
        emit("lost", partitions=tps(partitions), protocol=protocol, gen=generation(c),
             member=c.memberid())

    consumer = Consumer(conf)
    emit("ready", pid=os.getpid())
    if args.wait_go:
        sys.stdin.readline()
    consumer.subscribe(args.topic, on_assign=on_assign, on_revoke=on_revoke, on_lost=on_lost)
    emit("subscribe")

    processed = 0
    last_gen = None
    last_assignment: list[list] = []
    rc = 0
    while not stopping:
        want = args.batch
        if args.max_records is not None:
            want = min(want, args.max_records - processed)
            if want <= 0:
                break
        msgs = consumer.consume(num_messages=want, timeout=0.1)
        gen = generation(consumer)
        if gen != last_gen:
            last_gen = gen
            emit("generation", gen=gen)
        assignment = tps(consumer.assignment())
        if assignment != last_assignment:
            last_assignment = assignment
            emit("assignment", partitions=assignment)
        batch = []
        for m in msgs:
            err = m.error()
            if err is not None:
                # A fatal consumer error (e.g. fenced) arrives as _FATAL; the code of the
                # message error itself is not marked fatal.
                fatal = err.fatal() or err.code() == KafkaError._FATAL
                emit("error", code=err.name(), fatal=fatal, error=err.str())
                if fatal:
                    stopping = True
                    rc = 3
                continue
            batch.append(m)
        if not batch:
            continue
        emit("records", records=[[m.topic(), m.partition(), m.offset(),
                                  m.value().decode() if m.value() is not None else None]
                                 for m in batch])
        processed += len(batch)
        nxt: dict[tuple[str, int], int] = {}
        for m in batch:
            key = (m.topic(), m.partition())
            nxt[key] = max(nxt.get(key, -1), m.offset() + 1)
        offsets = [TopicPartition(t, p, o) for (t, p), o in sorted(nxt.items())]
        try:
            result = consumer.commit(offsets=offsets, asynchronous=False)
            failed = [f"{tp.topic}[{tp.partition}]: {tp.error}" for tp in result or []
                      if tp.error is not None]
            if failed:
                emit("commit_error", error="; ".join(failed))
            else:
                emit("commit", offsets=[[t, p, o] for (t, p), o in sorted(nxt.items())])
        except KafkaException as e:
            emit("commit_error", error=str(e.args[0]))
        if args.batch_delay_ms:
            time.sleep(args.batch_delay_ms / 1000)

    consumer.close()
    emit("closed", records=processed)
    return rc


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
