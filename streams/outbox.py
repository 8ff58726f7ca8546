"""Publish the store's outbox without waiting for Kafka inside each micro-batch.

The encoder stage writes a micro-batch's representations to the store together with an outbox
naming them, then hands them to `OutboxSender` and goes on with the next micro-batch; Kafka's
acknowledgements arrive meanwhile. A stored record names a micro-batch's users (they share its
seq); it leaves the outbox (a delete in a later store write) only once every one of them and every
record sent before them were acknowledged. So what a crash leaves in the
outbox is always a suffix of what was sent, in sending order: published again oldest first at
the next start (each named user's representation as stored, so each user's newest state), as the
compacted topic needs.

Order on the topic itself holds because one idempotent producer sends everything, keyed by user:
librdkafka keeps a partition's records in order across retries.
"""

from __future__ import annotations

from collections import deque
from functools import partial

from store import OutboxRecord
from streams.publisher import KafkaPublisher

__all__ = ["OutboxSender"]


class OutboxSender:
    """Single-threaded: sends, `acknowledged` and `wait` run on the stage's thread."""

    def __init__(self, publisher: KafkaPublisher, max_in_flight: int = 20_000) -> None:
        self.publisher = publisher
        # Beyond this many unacknowledged records (a slow or stalled broker), sending waits for
        # the ones before: the outbox in the store stays bounded.
        self.max_in_flight = max_in_flight
        self._sent: deque[tuple[int, OutboxRecord]] = deque()  # (number in sending order, record)
        self._sent_count = 0
        self._delivered: set[int] = set()  # numbers acknowledged while one before them was not
        self._acknowledged: list[OutboxRecord] = []  # in order, the last seq perhaps not all yet

    def send(self, records: list[OutboxRecord]) -> None:
        if records and len(self._sent) + len(records) > self.max_in_flight:
            self.publisher.flush()
        for record in records:
            number = self._sent_count
            self._sent_count += 1
            self.publisher.send(
                record.topic, record.key, record.value, on_delivered=partial(self._delivered.add, number)
            )
            self._sent.append((number, record))

    def acknowledged(self) -> list[OutboxRecord]:
        """The records acknowledged since the last call whose predecessors all were, and all the
        records of their seq too, oldest first: those the store may forget. Raises DeliveryError if
        a record failed (the worker stops; the outbox keeps it and everything after it)."""
        self.publisher.check()
        while self._sent and self._sent[0][0] in self._delivered:
            number, record = self._sent.popleft()
            self._delivered.discard(number)
            self._acknowledged.append(record)
        waiting = self._sent[0][1].seq if self._sent else None  # its record has users in flight
        done = self._acknowledged
        cut = len(done)
        while cut and done[cut - 1].seq == waiting:
            cut -= 1
        self._acknowledged = done[cut:]
        return done[:cut]

    def wait(self, timeout: float = 60.0) -> None:
        """Wait until everything sent is acknowledged (raises DeliveryError if it is not)."""
        self.publisher.flush(timeout)
