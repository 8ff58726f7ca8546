"""The shared broker fixture carries records through a consumer group; LocalBroker leaves nothing behind."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, KafkaException, Producer
from confluent_kafka.admin import AdminClient

from streams.broker import LocalBroker
from streams.errors import BrokerError


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def answers(bootstrap: str, timeout: float) -> bool:
    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0})
    try:
        admin.list_topics(timeout=timeout)
    except KafkaException:
        return False
    return True


def test_the_marker_is_applied(request: pytest.FixtureRequest) -> None:
    assert request.node.get_closest_marker("integration") is not None


def test_fixture_broker_round_trips_records_through_a_group(
    kafka_bootstrap: str,
    create_topic: Callable[..., str],
    consumer_config: Callable[..., dict[str, Any]],
) -> None:
    topic = create_topic(partitions=3)
    producer = Producer({"bootstrap.servers": kafka_bootstrap, "enable.idempotence": True})
    sent = [(f"u{i % 5}".encode(), f"event-{i}".encode()) for i in range(30)]
    for key, value in sent:
        producer.produce(topic, key=key, value=value)
    assert producer.flush(15) == 0

    consumer = Consumer(consumer_config())
    consumer.subscribe([topic])
    received: list[tuple[bytes, bytes, int]] = []
    deadline = time.monotonic() + 30
    try:
        while len(received) < len(sent) and time.monotonic() < deadline:
            for message in consumer.consume(100, timeout=0.5):
                assert message.error() is None, message.error()
                record = (message.key(), message.value(), message.partition())
                assert None not in record
                received.append(record)  # type: ignore[arg-type]  # (checked just above)
    finally:
        consumer.close()
    assert sorted((k, v) for k, v, _ in received) == sorted(sent)
    partitions_of_key: dict[bytes, set[int]] = {}
    for key, _, partition in received:
        partitions_of_key.setdefault(key, set()).add(partition)
    assert all(len(p) == 1 for p in partitions_of_key.values())  # a user's events stay in one partition
    in_partition_order = [v for k, v, _ in received if k == b"u0"]
    assert in_partition_order == [v for k, v in sent if k == b"u0"]


def test_local_broker_start_and_stop_leave_no_process(tmp_path: Path) -> None:
    broker = LocalBroker(log_path=tmp_path / "tansu.log")
    started = time.monotonic()
    broker.start()
    assert time.monotonic() - started < 5
    pid, bootstrap = broker.pid, broker.bootstrap_servers
    assert pid is not None and alive(pid) and broker.running
    assert answers(bootstrap, 5)
    broker.stop()
    assert not alive(pid) and broker.pid is None and not broker.running
    broker.stop()  # twice is fine
    host, port = bootstrap.rsplit(":", 1)
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((host, int(port)), timeout=1).close()
    assert "listening on" in (tmp_path / "tansu.log").read_text()  # a named log is kept
    with pytest.raises(BrokerError, match="not running"):
        _ = broker.bootstrap_servers


def test_context_manager_stops_on_error_and_removes_its_own_log() -> None:
    with pytest.raises(RuntimeError), LocalBroker() as broker:
        pid, log_path = broker.pid, broker.log_path
        assert log_path.exists()
        raise RuntimeError("boom")
    assert pid is not None and not alive(pid)
    assert not log_path.exists()


def test_pause_stalls_the_broker_and_resume_revives_it(tmp_path: Path) -> None:
    with LocalBroker(log_path=tmp_path / "tansu.log") as broker:
        assert answers(broker.bootstrap_servers, 5)
        with broker.paused():
            assert broker.running  # frozen, not gone
            assert not answers(broker.bootstrap_servers, 1)
        assert answers(broker.bootstrap_servers, 5)
        broker.pause()
        pid = broker.pid
    assert pid is not None and not alive(pid)  # stop() works on a paused broker too


def test_failure_to_start_is_a_one_line_error_with_the_log_tail(tmp_path: Path) -> None:
    fake = tmp_path / "fake-tansu"
    fake.write_text("#!/bin/sh\necho 'cannot open storage' >&2\necho 'second line' >&2\nexit 3\n")
    fake.chmod(0o755)
    with pytest.raises(BrokerError) as info:
        LocalBroker(binary=fake, log_path=tmp_path / "fake.log").start()
    message = str(info.value)
    assert "\n" not in message
    assert "exited with status 3" in message and "cannot open storage | second line" in message
    with pytest.raises(BrokerError, match="not an executable file"):
        LocalBroker(binary=tmp_path / "absent").start()


def test_a_taken_port_is_refused_not_mistaken_for_ours(tmp_path: Path) -> None:
    with LocalBroker(log_path=tmp_path / "first.log") as first:
        port = int(first.bootstrap_servers.rsplit(":", 1)[1])
        second = LocalBroker(port=port, log_path=tmp_path / "second.log")
        with pytest.raises(BrokerError, match=f"port {port} on 127.0.0.1 is taken"):
            second.start()
        assert second.pid is None
        assert answers(first.bootstrap_servers, 5)
