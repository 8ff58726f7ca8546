"""The true end offset of partitions: the offset after the last record.

A consumer's high watermark is that number on Apache Kafka, but the local broker (Tansu) reports
the base offset of the last record batch plus one, which falls short whenever a producer batched
several records. So read from one before the high watermark to the end (EOF): on Kafka that is one
record per partition, on Tansu at most one batch.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from confluent_kafka import Consumer, KafkaError, TopicPartition

from streams.config import MsliSettings
from streams.consuming import prompt_consumer_config
from streams.errors import BrokerError

__all__ = ["end_probe", "log_end_offsets"]


def end_probe(settings: MsliSettings, group_id: str, **extra: Any) -> Consumer:
    """A consumer for log_end_offsets: partition EOFs on, and the worker's `fetch_wait_ms` at the
    broker. With librdkafka's 500 ms the local broker holds each fetch that long, and a topic's end
    took 0.5 s, not 0.1 (docs/performance.md, eighteenth round)."""
    return Consumer(
        prompt_consumer_config(settings, **{"group.id": group_id, "enable.partition.eof": True, **extra})
    )


def log_end_offsets(
    consumer: Consumer, topic: str, partitions: Iterable[int] | None = None, timeout: float = 30.0
) -> dict[int, int]:
    """partition -> offset after its last record. `consumer` needs enable.partition.eof=true (an
    `end_probe` has it); its assignment is replaced."""
    if partitions is None:
        partitions = consumer.list_topics(topic, timeout=timeout).topics[topic].partitions
    ends: dict[int, int] = {}
    start: dict[int, int] = {}
    for p in partitions:
        low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout)
        ends[p] = high
        if high > low:
            start[p] = max(low, high - 1)
    if not start:
        return ends
    consumer.assign([TopicPartition(topic, p, offset) for p, offset in start.items()])
    pending, deadline = set(start), time.monotonic() + timeout
    try:
        while pending:
            if time.monotonic() > deadline:
                raise BrokerError(f"could not find the end of {topic} partitions {sorted(pending)}")
            # consume() returns at its timeout unless it has all 1,000 records, so the timeout
            # is how late the last end is seen: at 1 s, every call took a second a topic.
            for msg in consumer.consume(1000, timeout=0.05):
                p, error = msg.partition() or 0, msg.error()
                if error is None:
                    ends[p] = max(ends[p], (msg.offset() or 0) + 1)
                elif error.code() == KafkaError._PARTITION_EOF:
                    pending.discard(p)
    finally:
        consumer.unassign()
    return ends
