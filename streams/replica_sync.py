"""`msli store sync`: materialise the compacted user-representations topic into a local RocksDB
replica, so a ranking service on another host reads representations in microseconds without the
worker (`store.open_replica(path).get(user_id)`).

Each record lands under its own model version (read from the record), with the topic position in
the same atomic write, so a restart resumes exactly. The promoted version and drops come from the
control topic, as on the workers.
"""

from __future__ import annotations

import logging
import struct
import threading
import uuid
from pathlib import Path

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

from schemas import AvroCodec, SchemaError
from store import RocksDBVectorStore, ensure_promoted
from streams.config import MsliSettings
from streams.control import ControlFollower
from streams.model_upgrade import ControlMirror

__all__ = ["ReplicaSync"]

log = logging.getLogger(__name__)

_OFFSET = struct.Struct(">q")


class ReplicaSync:
    """Follow the representations topic into the replica at `path` until `stop()`."""

    def __init__(self, settings: MsliSettings, path: Path) -> None:
        self.settings = settings
        self.topic = settings.representations_topic
        self.store = RocksDBVectorStore(path)
        self.codec = AvroCodec("UserRepresentation")
        self.records = 0
        self.skipped = 0
        self._stop = threading.Event()
        self._consumer = Consumer(
            settings.kafka_client_config(
                **{
                    "group.id": f"msli-replica-{uuid.uuid4().hex[:8]}",  # positions live in the replica
                    "enable.auto.commit": False,
                    "enable.partition.eof": True,
                }
            )
        )

    def stop(self) -> None:
        self._stop.set()

    def run(self, *, until_caught_up: bool = False) -> None:
        follower = ControlFollower(self.settings, on_change=ControlMirror(self.store, running_version=None))
        follower.start()
        try:
            partitions = self._assign()
            at_end: set[int] = set()
            while not self._stop.is_set():
                at_end |= self._poll()
                if until_caught_up and at_end >= partitions:
                    break
        finally:
            follower.stop()
            self._consumer.close()
            self.store.close()

    def _assign(self) -> set[int]:
        meta = self._consumer.list_topics(self.topic, timeout=30).topics[self.topic]
        assignment = []
        for p in meta.partitions:
            saved = self.store.get_meta(self._position_key(p))
            offset = OFFSET_BEGINNING if saved is None else _OFFSET.unpack(saved)[0]
            assignment.append(TopicPartition(self.topic, p, offset))
        self._consumer.assign(assignment)
        log.info("replica follows %s[%d partitions] into %s", self.topic, len(assignment), self.store.path)
        return set(meta.partitions)

    def _poll(self) -> set[int]:
        """One batch into one atomic write; returns the partitions that reached their end."""
        at_end: set[int] = set()
        batch = self.store.batch()
        positions: dict[int, int] = {}
        first_version = None
        for msg in self._consumer.consume(5000, timeout=0.5):
            error, partition = msg.error(), msg.partition() or 0
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    at_end.add(partition)
                else:
                    log.warning("replica: %s", error.str())
                continue
            positions[partition] = (msg.offset() or 0) + 1
            value = msg.value()
            if value is None:  # msli never deletes a representation; tombstones are someone else's
                self.skipped += 1
                continue
            try:
                record = self.codec.decode(value)
            except SchemaError as exc:
                self.skipped += 1
                log.warning("replica: skipping undecodable record at %d@%s: %s", partition, msg.offset(), exc)
                continue
            batch.put_representation(record["model_version"], record["user_id"], value)
            first_version = first_version or record["model_version"]
            self.records += 1
        for partition, offset in positions.items():
            batch.put_meta(self._position_key(partition), _OFFSET.pack(offset))
        if positions:
            self.store.write(batch)
            if first_version is not None:
                ensure_promoted(self.store, first_version)  # until the control topic names one
        return at_end

    def _position_key(self, partition: int) -> str:
        return f"replica.position.{self.topic}.{partition}"
