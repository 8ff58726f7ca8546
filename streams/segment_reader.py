"""Read a range of one partition outside any consumer group: store restores, replays, checkpoints."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

from confluent_kafka import Consumer, KafkaError, TopicPartition

from streams.errors import BrokerError
from streams.source_record import SourceRecord

__all__ = ["read_partition_range"]


def read_partition_range(
    client_config: dict[str, Any],
    topic: str,
    partition: int,
    start: int,
    end: int | None = None,
    *,
    chunk: int = 2000,
    timeout: float = 60.0,
) -> Iterator[list[SourceRecord]]:
    """Yield records of topic[partition] with start <= offset < end, in chunks, oldest first.

    The read stops at `end` (None: no limit) or at the end of the log as it is now (EOF), whichever
    comes first; not at the high watermark, which the local broker (Tansu) under-reports after
    multi-record batches. Records that retention already deleted are simply absent.
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
    end = 2**63 - 1 if end is None else end
    try:
        low, _ = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=timeout)
        position = max(start, low)
        if position >= end:
            return
        consumer.assign([TopicPartition(topic, partition, position)])
        deadline = time.monotonic() + timeout
        while True:
            batch, at_end = [], False
            # A short wait: partition EOF ends the read, so nothing waits for a full chunk.
            for msg in consumer.consume(min(chunk, end - position), timeout=0.2):
                error, offset = msg.error(), msg.offset()
                if error is not None:
                    at_end = at_end or error.code() == KafkaError._PARTITION_EOF
                    continue
                if offset is None:
                    continue
                if offset >= end:
                    at_end = True
                    break
                batch.append(SourceRecord(partition, offset, msg.value(), msg.key()))
            if batch:
                position = batch[-1].offset + 1
                deadline = time.monotonic() + timeout
                yield batch
            if at_end or position >= end:
                return
            if not batch and time.monotonic() > deadline:
                raise BrokerError(
                    f"no progress reading {topic}[{partition}] at offset {position} for {timeout:.0f}s"
                )
    finally:
        consumer.close()
