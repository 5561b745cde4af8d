#!/usr/bin/env python3
"""Tiered-storage benchmark: archive size, upload throughput, remote read latency and
throughput (cold and cached), on this machine, against the release broker.

    python3 loadtest/tier_bench.py [--records 200000] [--strata target/release/strata]

Needs confluent-kafka (the test venv has it) and target/release/strata-loadtest. Steps:
1. start Strata on a fresh data dir with the default local-directory object store;
2. produce JSON-like records of ~1 KiB (uncompressed batches) to a tiered topic with 64 MiB
   segments and local.retention.ms=1, so every sealed segment moves to the store;
3. wait until everything sealed is archived: Parquet bytes / segment bytes, upload MiB/s;
4. restart with an empty cache: time from assign to the first record of offset 0 (cold remote
   read, client side; the broker's own read time is in `strata tier status`), then read the
   archived range sequentially with strata-loadtest consume: cold, then again cached.
Prints a Markdown table.
"""
import argparse
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

ROOT = Path(__file__).resolve().parent.parent
WORDS = ("alpha beta gamma delta order checkout click view cart user session page mobile "
         "desktop search result promo banner paid refund shipped pending europe americas").split()


def json_record(i: int, rng: random.Random, size: int) -> bytes:
    head = (f'{{"id":{i},"user":"user-{rng.randrange(100000)}","event":"{rng.choice(WORDS)}",'
            f'"page":"/{rng.choice(WORDS)}/{rng.choice(WORDS)}","amount":{rng.randrange(100000) / 100},'
            f'"country":"{rng.choice(["DE", "FR", "US", "BR", "JP", "IN"])}","ts":{1790000000000 + i},"note":"')
    note = []
    length = len(head) + 2
    while length < size:
        w = rng.choice(WORDS)
        note.append(w)
        length += len(w) + 1
    body = (head + " ".join(note))[: size - 2] + '"}'
    return body.encode()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Strata:
    def __init__(self, binary: Path, workdir: Path):
        self.binary, self.workdir = binary, workdir
        self.port = free_port()
        self.config = workdir / "strata.toml"
        self.config.write_text("[tiering]\nupload_interval_ms = 200\n")
        self.proc = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self):
        log = open(self.workdir / "strata.log", "ab")
        self.proc = subprocess.Popen(
            [str(self.binary), "serve", "--config", str(self.config), "--data-dir",
             str(self.workdir / "data"), "--listen", self.bootstrap],
            stdout=log, stderr=log, start_new_session=True)
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.1)
        raise SystemExit("strata did not start; see " + str(self.workdir / "strata.log"))

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=60)

    def status(self) -> dict:
        return json.loads((self.workdir / "data" / "tier-status.json").read_text())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=200_000)
    ap.add_argument("--record-size", type=int, default=1024)
    ap.add_argument("--strata", default=str(ROOT / "target/release/strata"))
    ap.add_argument("--loadtest", default=str(ROOT / "target/release/strata-loadtest"))
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="strata-tier-bench-"))
    broker = Strata(Path(args.strata), work)
    broker.start()
    topic = "archive"
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    admin.create_topics([NewTopic(topic, 1, 1, config={
        "remote.storage.enable": "true", "segment.bytes": str(64 << 20),
        "local.retention.ms": "1", "retention.ms": "-1"})])[topic].result()

    rng = random.Random(7)
    pool = [json_record(i, rng, args.record_size) for i in range(4096)]
    producer = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 20,
                         "batch.size": 1 << 20, "compression.type": "none", "acks": "all"})
    t0 = time.time()
    for i in range(args.records):
        while True:
            try:
                producer.produce(topic, key=str(i).encode(), value=pool[i % len(pool)])
                break
            except BufferError:
                producer.poll(0.05)
    producer.flush()
    produce_s = time.time() - t0

    # Everything sealed is archived once the manifest reaches the active segment.
    deadline = time.time() + 600
    while time.time() < deadline:
        st = broker.status()
        p = st["partitions"][0]
        if st["uploads_total"] > 0 and p["upload_lag_segments"] == 0 and \
                p["local_start_offset"] == p["remote_end_offset"]:
            break
        time.sleep(0.2)
    else:
        raise SystemExit("uploads did not finish in 10 minutes")
    st = broker.status()
    archived = st["partitions"][0]["remote_end_offset"]
    ratio = st["uploaded_bytes_total"] / st["uploaded_segment_bytes_total"]
    upload_mib_s = st["uploaded_segment_bytes_total"] / (1 << 20) / (st["upload_ms_total"] / 1000)

    # Cold: restart with an empty cache.
    broker.stop()
    shutil.rmtree(work / "data" / "cache", ignore_errors=True)
    broker.start()
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "bench",
                  "enable.auto.commit": False})
    c.assign([TopicPartition(topic, 0, 0)])  # connects and fetches metadata
    t0 = time.time()
    while True:
        m = c.poll(5)
        if m is not None and not m.error():
            break
    first_record_ms = (time.time() - t0) * 1000
    c.close()
    time.sleep(0.5)  # the status file is rewritten every upload interval
    first_read_ms = broker.status()["remote_read_ms_max"]

    def consume() -> dict:
        out = subprocess.run([args.loadtest, "consume", "--bootstrap-server", broker.bootstrap,
                              "--topic", topic, "--messages", str(archived), "--json"],
                             check=True, capture_output=True, text=True).stdout
        return json.loads(out)

    # Fresh cache again for the cold sequential read.
    broker.stop()
    shutil.rmtree(work / "data" / "cache", ignore_errors=True)
    broker.start()
    cold = consume()
    cached = consume()
    time.sleep(0.5)
    reads = broker.status()
    broker.stop()

    raw_mib = st["uploaded_segment_bytes_total"] / (1 << 20)
    print(f"\nTiered storage, {args.records} JSON-like records of {args.record_size} B "
          f"(produced in {produce_s:.1f} s), {archived} archived, local-directory store\n")
    print("| figure | value |")
    print("|---|---|")
    print(f"| Parquet bytes / raw segment bytes | {ratio:.3f} ({st['uploaded_bytes_total'] / (1 << 20):.1f} MiB / {raw_mib:.1f} MiB) |")
    print(f"| upload throughput (convert + PUT, per upload) | {upload_mib_s:.0f} MiB/s of segment data |")
    print(f"| cold remote read, first record at the client | {first_record_ms:.0f} ms |")
    print(f"| cold remote read, broker read time of the first fetch | {first_read_ms} ms |")
    for name, r in (("cold", cold), ("cached", cached)):
        print(f"| sequential remote read, {name} | {r['mib_per_sec']:.0f} MiB/s ({r['records_per_sec']:.0f} records/s) |")
    print(f"\ncache: {reads['cache_hits']} hits, {reads['cache_misses']} misses over both reads; "
          f"{st['uploads_total']} objects; work dir {work}")


if __name__ == "__main__":
    main()
