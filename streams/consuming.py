"""How the worker's two consumers (behaviour events, closed segments) read: promptly.

Freshness is the sum of two Kafka hops, and each hop used to wait twice (docs/performance.md,
fifth round):

- **At the broker.** A fetch waits up to librdkafka's `fetch.wait.max.ms` (500 ms by default) for
  records. Apache Kafka answers as soon as one arrives, so there the setting only bounds how often
  an idle consumer polls. The local broker (Tansu) answers late instead: on it a record took
  170 ms (median) to reach a consumer with the default, 30 ms with 50 ms. `fetch_wait_ms` sets it
  for these consumers; a `kafka` pass-through value still wins.
- **In the client.** `consume(n, timeout)` returns when it has n records *or* the timeout passed,
  so a batch that does not fill waits out the whole timeout: 0.2 s per hop at the offered
  10,000 events/s. `consume_available` waits for the first record only, then takes what has been
  fetched. Under load the batches still grow, by themselves: records queue while the previous
  batch is processed.
"""

from __future__ import annotations

from typing import Any

from confluent_kafka import Consumer, Message

from streams.config import MsliSettings

__all__ = ["IDLE_WAIT_SECONDS", "consume_available", "prompt_consumer_config"]

# Longest the worker's consume loops wait for a first record before they do their idle work
# (quiet partitions, checkpoints, outbox settles) and check for stop.
IDLE_WAIT_SECONDS = 0.2


def prompt_consumer_config(settings: MsliSettings, **extra: Any) -> dict[str, Any]:
    """librdkafka settings for a consumer that follows live records: `fetch_wait_ms` at the
    broker (overridable through the `kafka` pass-through), then `extra`."""
    return {"fetch.wait.max.ms": settings.fetch_wait_ms, **settings.kafka_client_config(**extra)}


def consume_available(
    consumer: Consumer, max_records: int, wait_seconds: float, linger_seconds: float = 0.0
) -> list[Message]:
    """Wait up to `wait_seconds` for a first record, then take up to `max_records` in all: those
    already fetched, and those that arrive within `linger_seconds` (0: none)."""
    first = consumer.consume(1, timeout=wait_seconds)
    if not first or max_records <= 1:
        return first
    return first + consumer.consume(max_records - 1, timeout=linger_seconds)
