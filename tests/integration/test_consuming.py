"""consume_available on the real broker: a batch is what has arrived, never a wait for a full one."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from streams.consuming import consume_available

# A consume that waited for a full batch would take this long; a test that ends sooner shows it did not.
LONG_WAIT_SECONDS = 30.0


@pytest.fixture
def topic_with_records(kafka_bootstrap: str, create_topic: Callable[..., str]) -> Callable[[int], str]:
    def make(n: int) -> str:
        topic = create_topic("available")
        producer = Producer({"bootstrap.servers": kafka_bootstrap})
        for i in range(n):
            producer.produce(topic, value=str(i).encode())
        assert producer.flush(15) == 0
        return topic

    return make


@pytest.fixture
def reader(consumer_config: Callable[..., dict[str, Any]]) -> Iterator[Callable[[str], Consumer]]:
    opened: list[Consumer] = []

    def make(topic: str) -> Consumer:
        consumer = Consumer(consumer_config(**{"fetch.wait.max.ms": 50}))
        consumer.assign([TopicPartition(topic, 0, 0)])
        opened.append(consumer)
        return consumer

    yield make
    for consumer in opened:
        consumer.close()


def read_all(consumer: Consumer, max_records: int, expected: int) -> list[list[int]]:
    """Batches of record values until `expected` records came, each batch one consume_available."""
    batches: list[list[int]] = []
    while sum(map(len, batches)) < expected:
        started = time.monotonic()
        batch = consume_available(consumer, max_records, LONG_WAIT_SECONDS)
        assert time.monotonic() - started < LONG_WAIT_SECONDS, "waited out the timeout for a full batch"
        assert batch, "no record within the wait although records were left"
        batches.append([int(m.value()) for m in batch])
    return batches


def test_a_batch_is_what_has_arrived_and_never_waits_for_a_full_one(topic_with_records, reader) -> None:
    consumer = reader(topic_with_records(10))
    batches = read_all(consumer, max_records=1000, expected=10)
    assert [v for batch in batches for v in batch] == list(range(10))  # all of them, once, in order


def test_a_batch_holds_at_most_max_records(topic_with_records, reader) -> None:
    consumer = reader(topic_with_records(10))
    batches = read_all(consumer, max_records=3, expected=10)
    assert all(1 <= len(batch) <= 3 for batch in batches)
    assert [v for batch in batches for v in batch] == list(range(10))


def test_an_empty_topic_gives_an_empty_batch_after_the_wait(create_topic, reader) -> None:
    consumer = reader(create_topic("empty"))
    started = time.monotonic()
    assert consume_available(consumer, 100, wait_seconds=0.5) == []
    assert time.monotonic() - started >= 0.45  # it did wait (librdkafka may end a hair early)
