"""`msli produce` on a broker that has never seen msli: the topics get the configured partition
count (not the broker's auto-create default), every event lands keyed by its user, and a bad row
stops the command before anything is sent."""

from __future__ import annotations

import json
import socket
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition
from confluent_kafka.admin import AdminClient
from msli_processes import MSLI, msli_env, topic_env

from schemas import AvroCodec
from streams.errors import BrokerError
from streams.producer import EventProducer
from streams.routing import partition_for

PARTITIONS = 3
T0 = 1_700_000_000_000


def read_to_end(bootstrap: str, topic: str, partitions: int) -> list[tuple[int, bytes, bytes]]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "unused", "enable.partition.eof": True})
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
    records: list[tuple[int, bytes, bytes]] = []
    at_end: set[int] = set()
    while len(at_end) < partitions:
        for msg in consumer.consume(500, timeout=10.0):
            if msg.error() is None:
                records.append((msg.partition(), msg.key(), msg.value()))
            elif msg.error().code() == KafkaError._PARTITION_EOF:
                at_end.add(msg.partition())
    consumer.close()
    return records


def test_produce_creates_its_topics_and_keys_every_event_by_user(
    kafka_bootstrap: str, admin: AdminClient, unique_name: Callable[[str], str], tmp_path: Path
) -> None:
    env = msli_env(
        **topic_env(unique_name),
        MSLI_BOOTSTRAP_SERVERS=kafka_bootstrap,
        MSLI_TOPIC_PARTITIONS=str(PARTITIONS),
    )
    events = [
        {"user_id": f"u{k % 7}", "item_id": f"i{k}", "action": "click", "event_time_ms": T0 + k}
        for k in range(50)
    ]
    good = tmp_path / "events.jsonl"
    good.write_text("".join(json.dumps(e) + "\n" for e in reversed(events)))
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(events[0]) + "\n" + '{"user_id": "u1", "item_id": "i1"}\n')

    def produce(path: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [MSLI, "produce", str(path)], env=env, capture_output=True, text=True, timeout=120
        )

    refused = produce(bad)
    assert refused.returncode != 0
    assert len(refused.stderr.strip().splitlines()) == 1 and "bad.jsonl:2" in refused.stderr

    done = produce(good)
    assert done.returncode == 0, done.stderr
    assert "produced 50 events" in done.stdout

    topic = env["MSLI_EVENTS_TOPIC"]
    assert len(admin.list_topics(topic, timeout=10).topics[topic].partitions) == PARTITIONS
    records = read_to_end(kafka_bootstrap, topic, PARTITIONS)
    codec = AvroCodec("BehaviourEvent")
    decoded = [(p, key, codec.decode(value)) for p, key, value in records]
    assert len(decoded) == 50  # the refused file sent nothing
    assert all(key == e["user_id"].encode() for _, key, e in decoded)
    assert all(p == partition_for(e["user_id"], PARTITIONS) for p, _, e in decoded)
    for user in {e["user_id"] for e in events}:  # sorted by event time, so each user's events in order
        times = [e["event_time_ms"] for _, _, e in decoded if e["user_id"] == user]
        assert times == sorted(times) and len(times) > 0


def test_event_producer_connects_before_its_first_send_or_says_the_broker_is_gone(
    kafka_bootstrap: str, create_topic: Callable[..., str]
) -> None:
    topic = create_topic("connect")
    with EventProducer({"bootstrap.servers": kafka_bootstrap}, topic=topic) as producer:
        producer.connect(timeout=15)
    with socket.socket() as unused:  # a port nothing listens on
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    gone = EventProducer({"bootstrap.servers": f"127.0.0.1:{port}"}, topic=topic)
    with pytest.raises(BrokerError, match=f"no metadata for topic {topic} within 1s"):
        gone.connect(timeout=1)
