"""A full disk fails produce with KAFKA_STORAGE_ERROR and corrupts nothing.

The broker's data dir is a small tmpfs. Records are produced until the disk is full; the
failing produce must report KAFKA_STORAGE_ERROR (never an ack), every acknowledged record must
stay readable, and once space is freed the same partition accepts writes again and everything
survives a restart. Mounting needs root, which the test suite runs as.
"""

from __future__ import annotations

import subprocess

from confluent_kafka import KafkaError

from clients import (DeliveryLog, admin_client, consume_all, create_topic, producer,
                     unique_topic)

TMPFS_BYTES = 6 * 1024 * 1024
FILLER_BYTES = 1024 * 1024
RECORD_BYTES = 32 * 1024


def test_full_disk_fails_produce_with_storage_error_and_loses_nothing(broker_factory, tmp_path):
    # The free-space guard would refuse writes before ENOSPC; this test is about ENOSPC itself.
    b = broker_factory("fulldisk", start=False, env={"STRATA_LOG_DIR_MIN_FREE_BYTES": "0"})
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={TMPFS_BYTES}", "tmpfs", str(b.data_dir)],
                   check=True)
    try:
        filler = b.data_dir / "filler"
        filler.write_bytes(b"\0" * FILLER_BYTES)
        b.start()
        topic = unique_topic("full")
        create_topic(admin_client(b.bootstrap), topic, partitions=1)

        p = producer(b.bootstrap, retries=0, **{"message.timeout.ms": 10000, "linger.ms": 0})
        log = DeliveryLog()
        sent = 0
        while not log.failed and sent < 2 * TMPFS_BYTES // RECORD_BYTES:
            p.produce(topic, value=b"%08d" % sent + b"x" * RECORD_BYTES, on_delivery=log)
            sent += 1
            p.flush(10)
        assert log.failed, "the disk never filled up"
        codes = {err.code() for _, err in log.failed}
        assert codes == {KafkaError.KAFKA_STORAGE_ERROR}, codes
        acked = sorted(r.value for r in log.acked)
        assert len(acked) > 10

        # Everything acknowledged is still there, byte for byte, while the disk is full.
        got = consume_all(b.bootstrap, topic, [0], expected=len(acked))
        assert sorted(r.value for r in got) == acked
        assert [r.offset for r in got] == list(range(len(acked)))

        # Free space: the same partition takes writes again, at the next offset.
        filler.unlink()
        more = DeliveryLog()
        p2 = producer(b.bootstrap, retries=0)
        p2.produce(topic, value=b"after", on_delivery=more)
        assert p2.flush(10) == 0
        assert not more.failed, more.failed
        assert [r.offset for r in more.acked] == [len(acked)]

        b.stop()
        b.start()
        got = consume_all(b.bootstrap, topic, [0], expected=len(acked) + 1)
        assert [r.value for r in got] == [v for v in sorted(acked)] + [b"after"]
        b.stop()
    finally:
        if b.alive():
            b.kill()
        subprocess.run(["umount", "-l", str(b.data_dir)], check=False)
