"""Broker configuration end to end: file < STRATA_<KEY> environment < command-line flags, and
a broker that refuses to start, naming the culprit, on an unknown key or a bad value."""

from __future__ import annotations

import pytest
from confluent_kafka.admin import ConfigResource, ConfigSource, ResourceType

from clients import (admin_client, consume_all, create_topic, produce_all, topic_partitions,
                     unique_topic)

TIMEOUT_S = 30

# Not the harness's port: if the file or the environment won over the harness's --listen
# flag, the broker would bind here and the harness would never see it come up.
UNUSED_LISTEN = "127.0.0.1:1"


def write_config(broker, text: str):
    path = broker.workdir / "strata.toml"
    path.write_text(text)
    return ("--config", str(path))


def auto_created_partitions(bootstrap: str) -> list[int]:
    """Produce to a topic nobody created; return the partitions it was created with."""
    topic = unique_topic("auto")
    produce_all(bootstrap, topic, [(None, b"hello", [])])
    return topic_partitions(admin_client(bootstrap), topic)


def test_file_sets_defaults(broker_factory):
    b = broker_factory("cfg-file", start=False)
    b.extra_args = write_config(b, f'num_partitions = 4\nlisten = "{UNUSED_LISTEN}"\n')
    b.start()
    assert auto_created_partitions(b.bootstrap) == [0, 1, 2, 3]


def test_env_overrides_file_and_flags_override_both(broker_factory):
    b = broker_factory("cfg-env", start=False, env={
        "STRATA_NUM_PARTITIONS": "5",
        "STRATA_LISTEN": UNUSED_LISTEN,
    })
    b.extra_args = write_config(b, f'num_partitions = 4\nlisten = "{UNUSED_LISTEN}"\n')
    b.start()
    assert auto_created_partitions(b.bootstrap) == [0, 1, 2, 3, 4]


def test_env_sets_topic_defaults(broker_factory):
    b = broker_factory("cfg-topic-defaults", env={
        "STRATA_LOG_SEGMENT_BYTES": "1024",
        "STRATA_LOG_MESSAGE_TIMESTAMP_TYPE": "LogAppendTime",
    })
    # Keep the client referenced until results arrive: a collected client cancels them.
    admin = admin_client(b.bootstrap)
    inherits, overrides = unique_topic("defaults"), unique_topic("overrides")
    create_topic(admin, inherits, partitions=1)
    create_topic(admin, overrides, partitions=1, config={"segment.bytes": "1048576"})
    described = admin.describe_configs([ConfigResource(ResourceType.TOPIC, t)
                                        for t in (inherits, overrides)])
    cfg = {res.name: fut.result(TIMEOUT_S) for res, fut in described.items()}

    def entry(topic, key):
        e = cfg[topic][key]
        return e.value, ConfigSource(e.source)

    assert entry(inherits, "segment.bytes") == ("1024", ConfigSource.STATIC_BROKER_CONFIG)
    assert entry(inherits, "message.timestamp.type") == (
        "LogAppendTime", ConfigSource.STATIC_BROKER_CONFIG)
    assert entry(inherits, "retention.ms") == ("604800000", ConfigSource.DEFAULT_CONFIG)
    assert entry(overrides, "segment.bytes") == ("1048576", ConfigSource.DYNAMIC_TOPIC_CONFIG)

    # And they take effect: the log rolls at 1024 bytes, the broker stamps the records.
    records = [(None, b"%03d" % i + b"x" * 100, [], 1_500_000_000_000) for i in range(40)]
    for topic in (inherits, overrides):
        produce_all(b.bootstrap, topic, records, partition=0, flush_every=4)
    assert len(list((b.data_dir / "logs" / f"{inherits}-0").glob("*.log"))) > 3
    assert len(list((b.data_dir / "logs" / f"{overrides}-0").glob("*.log"))) == 1
    got = consume_all(b.bootstrap, inherits, [0], expected=len(records))
    assert [r.value for r in got] == [v for _, v, _, _ in records]
    assert all(r.timestamp > 1_700_000_000_000 for r in got), [r.timestamp for r in got[:3]]


@pytest.mark.parametrize("file_text, env, names", [
    pytest.param("num_partitons = 4\n", {}, ["num_partitons"], id="unknown-key-in-file"),
    pytest.param('num_partitions = "four"\n', {}, ["num_partitions"], id="wrong-type-in-file"),
    pytest.param("num_partitions = 0\n", {}, ["num_partitions"], id="out-of-range-in-file"),
    pytest.param(None, {"STRATA_NUM_PARTITIONS": "abc"}, ["STRATA_NUM_PARTITIONS", "abc"],
                 id="not-an-integer-in-env"),
    pytest.param(None, {"STRATA_NUM_PARTITIONS": "99999999999"},
                 ["STRATA_NUM_PARTITIONS", "99999999999"], id="out-of-range-for-type-in-env"),
    pytest.param(None, {"STRATA_AUTO_CREATE_TOPICS_ENABLE": "maybe"},
                 ["STRATA_AUTO_CREATE_TOPICS_ENABLE", "maybe"], id="not-a-bool-in-env"),
    pytest.param(None, {"STRATA_LOG_MESSAGE_TIMESTAMP_TYPE": "Sometime"}, ["Sometime"],
                 id="bad-topic-default-in-env"),
])
def test_bad_config_refuses_to_start_and_names_it(broker_factory, file_text, env, names):
    b = broker_factory("cfg-bad", start=False, env=env)
    if file_text is not None:
        b.extra_args = write_config(b, file_text)
    rc, output = b.start_expecting_exit()
    assert rc != 0, output
    for name in names:
        assert name in output, f"{name!r} not named in:\n{output}"
    assert not any(b.data_dir.iterdir()), "a broker with a bad config touched its data dir"
