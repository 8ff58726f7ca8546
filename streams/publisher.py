"""A confluent-kafka producer that knows whether everything it sent was acknowledged."""

from __future__ import annotations

import logging
from typing import Any

from confluent_kafka import KafkaError, Message, Producer

from streams.errors import DeliveryError

__all__ = ["MAX_RECORD_BYTES", "KafkaPublisher", "producer_config"]

log = logging.getLogger(__name__)

Headers = list[tuple[str, str | bytes | None]]

# The largest record msli produces: a dead letter keeps the original bytes of whatever a producer
# sent, so the dead-letter topic is created to accept this much, and larger ones are truncated.
MAX_RECORD_BYTES = 16 * 1024 * 1024


def producer_config(client_config: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """Safe producer defaults: idempotent, acks from all replicas, and murmur2 partitioning so that
    Java clients and msli put the same key on the same partition."""
    return {
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 5,
        "partitioner": "murmur2_random",
        "message.max.bytes": MAX_RECORD_BYTES + 64 * 1024,  # room for a dead letter's headers
        **client_config,
        **extra,
    }


class KafkaPublisher:
    """Produce asynchronously, then `flush()` once per unit of work: it raises if any record failed.

    Callers commit progress only after `flush()` returns, so a failed delivery is never skipped.
    """

    def __init__(self, config: dict[str, Any]) -> None:
        self._producer = Producer(config)
        self._failures: list[str] = []
        self.delivered = 0

    def send(
        self, topic: str, key: bytes | None, value: bytes | None, headers: Headers | None = None
    ) -> None:
        while True:
            try:
                self._producer.produce(
                    topic, value=value, key=key, headers=headers, on_delivery=self._on_delivery
                )
                return
            except BufferError:  # local queue full: let librdkafka drain it, then retry
                self._producer.poll(0.1)

    def poll(self) -> None:
        self._producer.poll(0)

    def flush(self, timeout: float = 60.0) -> None:
        """Wait for every record sent so far; raise DeliveryError if any was not acknowledged."""
        remaining = self._producer.flush(timeout)
        failures, self._failures = self._failures, []
        if remaining:
            raise DeliveryError(f"{remaining} records not acknowledged by Kafka within {timeout:.0f}s")
        if failures:
            raise DeliveryError(f"{len(failures)} records not delivered; first: {failures[0]}")

    def close(self) -> None:
        """Deliver what is queued (best effort) and release the client's threads and sockets."""
        self._producer.flush(10)
        self._producer.close()

    def _on_delivery(self, err: KafkaError | None, msg: Message) -> None:
        if err is None:
            self.delivered += 1
        else:
            self._failures.append(f"{msg.topic()}: {err.str()}")
