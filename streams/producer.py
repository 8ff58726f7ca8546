"""A small producer for applications: BehaviourEvent records with msli's schema, keyed by user."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from schemas import AvroCodec
from streams.publisher import KafkaPublisher, producer_config

__all__ = ["EVENT_LINGER_MS", "EventProducer", "event_producer_config"]

# How long the producer gathers events into one batch per partition (librdkafka's default is 5 ms).
# Windows close on event time, minutes apart, so 25 ms costs a representation little freshness,
# while batches five times larger cost the broker less per event: on the local broker, whose fetch
# cost grows with the number of batches a topic holds, the benchmark's 10,000 events/s load took
# 0.54-0.55 of a core at 25 ms against 0.94-0.95 at 5 ms (docs/performance.md, eleventh round).
EVENT_LINGER_MS = 25


def event_producer_config(client_config: Mapping[str, Any]) -> dict[str, Any]:
    """msli's producer defaults with EVENT_LINGER_MS; the caller's settings, linger.ms too, win."""
    return producer_config({"linger.ms": EVENT_LINGER_MS, **client_config})


class EventProducer:
    """Encode and send behaviour events; the user id is the key, so a user's events stay in order
    on one partition (murmur2, the same partition a Java producer would pick).

        with EventProducer({"bootstrap.servers": "localhost:9092"}) as producer:
            producer.send({"user_id": "u1", "item_id": "i9", "action": "click", "event_time_ms": t})
    """

    def __init__(
        self, client_config: Mapping[str, Any], topic: str = "behaviour-events", schema_id: int | None = None
    ) -> None:
        self.topic = topic
        self.codec = AvroCodec("BehaviourEvent", schema_id=schema_id)
        self._publisher = KafkaPublisher(event_producer_config(client_config))
        self.sent = 0

    def connect(self, timeout: float = 10.0) -> None:
        """Look the topic up now, so the first send does not wait for it (about 0.5 s on the local
        broker); raises BrokerError if the broker does not answer within `timeout` seconds.

        The first records of a new producer may still wait up to 0.5 s for its producer id (the
        idempotent producer's; librdkafka asks again on a 500 ms timer when no broker was up at its
        start): keep one producer for the application's life rather than one per batch."""
        self._publisher.connect(self.topic, timeout)

    def send(self, event: Mapping[str, Any]) -> None:
        """Queue one event; raises schemas.SchemaError (one line) if it does not fit the schema."""
        value = self.codec.encode(dict(event))
        self._publisher.send(self.topic, str(event["user_id"]).encode(), value)
        self.sent += 1
        if self.sent % 10_000 == 0:
            self._publisher.poll()

    def send_many(self, events: Iterable[Mapping[str, Any]]) -> int:
        n = 0
        for event in events:
            self.send(event)
            n += 1
        return n

    def flush(self, timeout: float = 60.0) -> None:
        """Block until Kafka has acknowledged everything sent; raises DeliveryError otherwise."""
        self._publisher.flush(timeout)

    def close(self) -> None:
        self.flush()

    def __enter__(self) -> EventProducer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if exc_info[0] is None:
            self.close()
