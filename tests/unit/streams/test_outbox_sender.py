"""OutboxSender hands the store a seq to forget only once every record of it, and every record
sent before, is acknowledged. Acknowledgements are marked here as the delivery reports mark them:
the publisher points at a port no broker listens on, so Kafka acknowledges nothing by itself."""

from __future__ import annotations

import socket

from store import OutboxRecord
from streams.outbox import OutboxSender
from streams.publisher import KafkaPublisher, producer_config


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_seq_is_acknowledged_once_all_its_records_and_those_before_are() -> None:
    publisher = KafkaPublisher(
        producer_config(
            {"bootstrap.servers": f"127.0.0.1:{closed_port()}", "message.timeout.ms": 60_000, "log_level": 0}
        )
    )
    try:
        sender = OutboxSender(publisher)
        batch_1 = [OutboxRecord(1, "reps", user, b"r") for user in (b"a", b"b", b"c")]
        batch_2 = [OutboxRecord(2, "reps", user, b"r") for user in (b"d", b"e")]
        sender.send(batch_1)
        sender.send(batch_2)
        assert sender.acknowledged() == []

        def deliver(*numbers: int) -> None:  # what each record's delivery report does
            sender._delivered.update(numbers)

        deliver(0, 1, 3)  # a, b, and d out of order
        assert sender.acknowledged() == []  # c is in flight: seq 1 is not all acknowledged
        deliver(2)  # c: seq 1 complete, and d follows it, but e (seq 2) is in flight
        assert sender.acknowledged() == batch_1
        deliver(4)
        assert sender.acknowledged() == batch_2
        assert sender.acknowledged() == []
    finally:
        publisher._producer.purge()
