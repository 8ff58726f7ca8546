"""The control topic: a small compacted log of decisions every process of a deployment follows.

Keys (prefixed with the group id, so deployments can share a topic):
  promoted-model      the model version readers get (`msli store promote`)
  drop|VERSION        a model version whose namespace workers delete (`msli store drop`)
  route|PARTITION     JSON {"url": ...}: the API of the worker that owns that closed-segments partition

A worker's store is locked by the worker, so operators change it through this topic rather than by
opening the store; `msli store sync` replicas and `msli serve` read it too.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

from streams.config import MsliSettings
from streams.errors import BrokerError
from streams.publisher import KafkaPublisher, producer_config

__all__ = ["PROMOTED", "ControlFollower", "drop_key", "publish_control", "route_key"]

log = logging.getLogger(__name__)

PROMOTED = "promoted-model"


def drop_key(version: str) -> str:
    return f"drop|{version}"


def route_key(partition: int) -> str:
    return f"route|{partition}"


def publish_control(settings: MsliSettings, entries: dict[str, str | None]) -> None:
    """Write entries (None deletes) and wait until Kafka acknowledged them."""
    publisher = KafkaPublisher(producer_config(settings.kafka_client_config()))
    try:
        for key, value in entries.items():
            publisher.send(
                settings.control_topic,
                f"{settings.group_id}|{key}".encode(),
                None if value is None else value.encode(),
            )
        publisher.flush(30)
    finally:
        publisher.close()


class ControlFollower:
    """Follows the control topic in a thread; `state` holds this group's latest value per key.

    `on_change(state)` runs on the follower thread after each batch and once a second while idle,
    so callers also retry what they could not apply yet (a promotion their store cannot take yet).
    """

    def __init__(
        self, settings: MsliSettings, on_change: Callable[[dict[str, str]], None] | None = None
    ) -> None:
        self.settings = settings
        self.state: dict[str, str] = {}
        self.synced = threading.Event()  # set once everything present at start has been read
        self._on_change = on_change
        self._prefix = f"{settings.group_id}|".encode()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="msli-control", daemon=True)
        self._consumer = Consumer(
            settings.kafka_client_config(
                **{
                    "group.id": f"msli-control-{uuid.uuid4().hex[:8]}",  # assign() only; never commits
                    "enable.auto.commit": False,
                    "enable.partition.eof": True,
                }
            )
        )

    def start(self, wait_seconds: float = 30.0) -> ControlFollower:
        """Start following; return once the existing entries are read."""
        self._thread.start()
        if not self.synced.wait(wait_seconds):
            raise BrokerError(f"could not read {self.settings.control_topic} within {wait_seconds:.0f}s")
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(10)

    def _run(self) -> None:
        topic = self.settings.control_topic
        try:
            partitions = self._consumer.list_topics(topic, timeout=10).topics[topic].partitions
            if not partitions:
                raise BrokerError(f"control topic {topic} does not exist")
            self._consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
            pending_eof = set(partitions)
            while not self._stop.is_set():
                for msg in self._consumer.consume(1000, timeout=1.0):
                    error = msg.error()
                    if error is None:
                        self._apply(msg.key() or b"", msg.value())
                    elif error.code() == KafkaError._PARTITION_EOF:
                        pending_eof.discard(msg.partition())
                    else:
                        log.warning("control topic: %s", error.str())
                if not pending_eof:
                    self.synced.set()
                    if self._on_change is not None:
                        self._on_change(dict(self.state))
        except Exception as exc:  # the follower must not die silently: the owner sees stale state
            log.error("control topic follower stopped: %s", exc)
        finally:
            self._consumer.close()

    def _apply(self, key: bytes, value: Any) -> None:
        if key.startswith(self._prefix):
            name = key[len(self._prefix) :].decode()
            if value is None:
                self.state.pop(name, None)
            else:
                self.state[name] = bytes(value).decode()
