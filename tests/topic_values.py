"""Read back what a test published: the values of partition 0 of a topic, in order."""

from __future__ import annotations

import time

from confluent_kafka import Consumer, TopicPartition


def read_values(bootstrap: str, topic: str, expect: int, timeout: float = 30.0) -> list[bytes | None]:
    """Values from the start of `topic`'s partition 0 until `expect` came or `timeout` passed."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"read-{time.time_ns()}"})
    consumer.assign([TopicPartition(topic, 0, 0)])
    values: list[bytes | None] = []
    deadline = time.monotonic() + timeout
    while len(values) < expect and time.monotonic() < deadline:
        values += [m.value() for m in consumer.consume(500, timeout=0.5) if m.error() is None]
    consumer.close()
    return values
