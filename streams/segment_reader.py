"""Read a range of one partition outside any consumer group: store restores and replays."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

from confluent_kafka import Consumer, KafkaError, TopicPartition

from streams.encoder_stage import SourceRecord
from streams.errors import BrokerError

__all__ = ["read_partition_range"]


def read_partition_range(
    client_config: dict[str, Any],
    topic: str,
    partition: int,
    start: int,
    end: int,
    *,
    chunk: int = 2000,
    timeout: float = 60.0,
) -> Iterator[list[SourceRecord]]:
    """Yield records of topic[partition] with start <= offset < end, in chunks, oldest first.

    Records that retention already deleted are simply absent: the read starts at the log start.
    The read ends at `end` or at the partition's end (EOF), whichever comes first; not at the high
    watermark, which the local broker (Tansu) under-reports after multi-record batches.
    """
    consumer = Consumer(
        {
            **client_config,
            "group.id": f"msli-reader-{uuid.uuid4().hex[:8]}",  # assign() only; never commits
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "enable.partition.eof": True,
        }
    )
    try:
        low, _ = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=timeout)
        position = max(start, low)
        if position >= end:
            return
        consumer.assign([TopicPartition(topic, partition, position)])
        deadline = time.monotonic() + timeout
        at_eof = False
        while position < end and not at_eof:
            batch = []
            for msg in consumer.consume(chunk, timeout=1.0):
                offset, error = msg.offset(), msg.error()
                if error is not None:
                    at_eof = at_eof or error.code() == KafkaError._PARTITION_EOF
                    continue
                if offset is None or offset >= end:
                    continue
                batch.append(SourceRecord(partition, offset, msg.value()))
            if batch:
                position = batch[-1].offset + 1
                deadline = time.monotonic() + timeout
                yield batch
            elif time.monotonic() > deadline:
                raise BrokerError(
                    f"no progress reading {topic}[{partition}] at offset {position} for {timeout:.0f}s"
                )
    finally:
        consumer.close()
