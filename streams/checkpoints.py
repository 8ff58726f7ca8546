"""Segmenter checkpoints on a compacted topic: where to resume each partition, and with what watermark.

A committed consumer offset alone cannot carry the watermark (and the local broker drops commit
metadata), yet a replay that starts with the wrong watermark makes different closing decisions.
So each checkpoint is a small record keyed by group, topic and partition; the last one wins.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from confluent_kafka import Consumer

from streams.publisher import KafkaPublisher
from streams.segment_reader import read_partition_range

__all__ = ["Checkpoint", "CheckpointLog"]

Checkpoint = tuple[int, int]  # (offset to resume from, watermark in force there)


class CheckpointLog:
    def __init__(self, client_config: dict[str, Any], topic: str, group_id: str) -> None:
        self._client_config = client_config
        self.topic = topic
        self.group_id = group_id

    def _key(self, source_topic: str, partition: int) -> bytes:
        return f"{self.group_id}|{source_topic}|{partition}".encode()

    def save(
        self, publisher: KafkaPublisher, source_topic: str, checkpoints: Mapping[int, Checkpoint]
    ) -> None:
        """Send checkpoints through `publisher`; they count once the caller's flush() returns."""
        for partition, (offset, watermark) in checkpoints.items():
            value = json.dumps({"offset": offset, "watermark": watermark}).encode()
            publisher.send(self.topic, self._key(source_topic, partition), value)

    def load(self, source_topic: str, timeout: float = 30.0) -> dict[int, Checkpoint]:
        """Read the whole log (it is small and compacted) and keep this group's latest per partition."""
        prefix = f"{self.group_id}|{source_topic}|".encode()
        found: dict[int, Checkpoint] = {}
        consumer = Consumer({**self._client_config, "group.id": f"{self.group_id}-checkpoint-reader"})
        try:
            partitions = consumer.list_topics(self.topic, timeout=timeout).topics[self.topic].partitions
        finally:
            consumer.close()
        for partition in partitions:
            for chunk in read_partition_range(
                self._client_config, self.topic, partition, 0, chunk=10_000, timeout=timeout
            ):
                for record in chunk:
                    key = record.key or b""
                    if not key.startswith(prefix):
                        continue
                    if record.value is None:
                        found.pop(int(key[len(prefix) :]), None)
                    else:
                        data = json.loads(record.value)
                        found[int(key[len(prefix) :])] = (int(data["offset"]), int(data["watermark"]))
        return found
