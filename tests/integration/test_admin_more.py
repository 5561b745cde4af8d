"""OffsetForLeaderEpoch (hand-encoded, as followers and librdkafka's leader-epoch validation
send it) and the legacy AlterConfigs API (which replaces a topic's whole set of overrides)."""

from __future__ import annotations

import struct

from confluent_kafka.admin import ConfigResource, ResourceType

import wire
from clients import admin_client, create_topic, produce_all, unique_topic

API_OFFSET_FOR_LEADER_EPOCH = 23
TIMEOUT_S = 30


def offset_for_leader_epoch(port: int, topic: str, parts: list[tuple[int, int, int]]):
    """v2: [(partition, current_leader_epoch, leader_epoch)] -> [(error, partition, epoch, end)]."""
    body = wire.array([wire.string(topic) + wire.array(
        [wire.i32(p) + wire.i32(cur) + wire.i32(ep) for p, cur, ep in parts])])
    req = wire.frame(wire.request_header(API_OFFSET_FOR_LEADER_EPOCH, 2, 77) + body)
    resp = wire.exchange(port, req)
    assert resp is not None, "broker closed the connection"
    assert resp[:4] == struct.pack(">i", 77)
    pos = 4 + 4  # correlation id, throttle time
    (n_topics,) = struct.unpack_from(">i", resp, pos)
    pos += 4
    assert n_topics == 1
    (name_len,) = struct.unpack_from(">h", resp, pos)
    pos += 2
    assert resp[pos:pos + name_len].decode() == topic
    pos += name_len
    (n_parts,) = struct.unpack_from(">i", resp, pos)
    pos += 4
    out = []
    for _ in range(n_parts):
        out.append(struct.unpack_from(">hiiq", resp, pos))
        pos += 2 + 4 + 4 + 8
    assert pos == len(resp)
    return out


def test_offset_for_leader_epoch(module_broker):
    topic = unique_topic("ofle")
    create_topic(admin_client(module_broker.bootstrap), topic, partitions=1)
    produce_all(module_broker.bootstrap, topic, [(None, b"v%d" % i, []) for i in range(5)],
                partition=0)
    got = offset_for_leader_epoch(module_broker.port, topic, [
        (0, -1, 0),   # the only epoch: it ends at the log end
        (0, 0, 0),    # with the current epoch fenced-checked
        (0, -1, 3),   # an epoch that never existed: undefined
        (0, 7, 0),    # the client knows a newer epoch than the broker
        (9, -1, 0),   # no such partition
    ])
    assert got == [
        (0, 0, 0, 5),
        (0, 0, 0, 5),
        (0, 0, -1, -1),
        (75, 0, -1, -1),   # UNKNOWN_LEADER_EPOCH
        (3, 9, -1, -1),    # UNKNOWN_TOPIC_OR_PARTITION
    ]


def described(admin, topic: str) -> dict[str, str]:
    res = ConfigResource(ResourceType.TOPIC, topic)
    return {k: v.value for k, v in admin.describe_configs([res])[res].result(TIMEOUT_S).items()}


def test_legacy_alter_configs_replaces_all_overrides(module_broker):
    admin = admin_client(module_broker.bootstrap)
    topic = unique_topic("alter")
    create_topic(admin, topic, partitions=1, config={"retention.ms": "1000000"})
    assert described(admin, topic)["retention.ms"] == "1000000"
    res = ConfigResource(ResourceType.TOPIC, topic, set_config={"segment.ms": "3600000"})
    admin.alter_configs([res])[res].result(TIMEOUT_S)
    after = described(admin, topic)
    assert after["segment.ms"] == "3600000"
    # Not named in the request, so the override is gone: back to the broker default.
    assert after["retention.ms"] == "604800000"
    bad = ConfigResource(ResourceType.TOPIC, topic, set_config={"no.such.config": "1"})
    try:
        admin.alter_configs([bad])[bad].result(TIMEOUT_S)
        raise AssertionError("an unknown config was accepted")
    except Exception as e:  # KafkaException wrapping INVALID_CONFIG
        assert "INVALID_CONFIG" in str(e) or "Unknown topic config" in str(e), e
    assert described(admin, topic)["segment.ms"] == "3600000"
