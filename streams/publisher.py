"""A confluent-kafka producer that knows whether everything it sent was acknowledged."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from streams.errors import BrokerError, DeliveryError

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
    Callers that keep what they sent until it is acknowledged (the encoder stage's outbox) pass
    `on_delivered` instead and call `check()` now and then, without waiting.
    """

    def __init__(self, config: dict[str, Any]) -> None:
        self._producer = Producer(config)
        self._failures: list[str] = []
        self.delivered = 0

    def send(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        headers: Headers | None = None,
        on_delivered: Callable[[], None] | None = None,
    ) -> None:
        """Queue one record; `on_delivered` runs (in a later poll, check or flush) once Kafka
        acknowledged it."""
        report = self._on_delivery
        if on_delivered is not None:

            def report(err: KafkaError | None, msg: Message) -> None:
                self._on_delivery(err, msg)
                if err is None:
                    on_delivered()

        while True:
            try:
                self._producer.produce(topic, value=value, key=key, headers=headers, on_delivery=report)
                return
            except BufferError:  # local queue full: let librdkafka drain it, then retry
                self._producer.poll(0.1)

    def connect(self, topic: str, timeout: float = 10.0) -> None:
        """Fetch `topic`'s metadata now; raise BrokerError if the broker does not answer in time.

        A new producer otherwise looks a topic up at its first send, which then waits (about 0.5 s
        on the local broker, measured): a paced load would start behind its own clock."""
        try:
            self._producer.list_topics(topic, timeout=timeout)
        except KafkaException as exc:
            raise BrokerError(f"no metadata for topic {topic} within {timeout:.0f}s: {exc}") from None

    def poll(self) -> None:
        self._producer.poll(0)

    def check(self) -> None:
        """Serve the delivery reports that have arrived, without waiting; raise DeliveryError if a
        record failed."""
        self._producer.poll(0)
        self._raise_failures()

    def flush(self, timeout: float = 60.0) -> None:
        """Wait for every record sent so far; raise DeliveryError if any was not acknowledged."""
        remaining = self._producer.flush(timeout)
        if remaining:
            self._failures.clear()
            raise DeliveryError(f"{remaining} records not acknowledged by Kafka within {timeout:.0f}s")
        self._raise_failures()

    def close(self) -> None:
        """Deliver what is queued (best effort) and release the client's threads and sockets."""
        self._producer.flush(10)
        self._producer.close()

    def _raise_failures(self) -> None:
        failures, self._failures = self._failures, []
        if failures:
            raise DeliveryError(f"{len(failures)} records not delivered; first: {failures[0]}")

    def _on_delivery(self, err: KafkaError | None, msg: Message) -> None:
        if err is None:
            self.delivered += 1
        else:
            self._failures.append(f"{msg.topic()}: {err.str()}")
