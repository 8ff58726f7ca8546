"""A real broker for integration tests: KAFKA_BOOTSTRAP_SERVERS, else Kafka in Docker, else local Tansu.

The broker is shared by the whole session (starting Kafka is slow), so every test works in topics
and consumer groups of its own, named by `unique_name`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import socket
import uuid
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka.admin import AdminClient, NewTopic
from msli_processes import Processes

from streams.broker import LocalBroker

_HERE = Path(__file__).resolve().parent
_log = logging.getLogger(__name__)


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects, so `-m "not integration"` sees the mark
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every test under tests/integration as `integration`."""
    for item in items:
        if _HERE in item.path.resolve().parents:
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Bootstrap servers of the broker every integration test shares."""
    configured = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if configured:
        yield configured
        return
    container = _kafka_in_docker()
    if container is not None:
        try:
            yield container.get_bootstrap_server()
        finally:
            container.stop()
        return
    log_path = tmp_path_factory.mktemp("broker") / "tansu.log"
    with LocalBroker(log_path=log_path) as broker:
        yield broker.bootstrap_servers


@pytest.fixture(scope="session")
def admin(kafka_bootstrap: str) -> AdminClient:
    """An AdminClient on the shared broker."""
    return AdminClient({"bootstrap.servers": kafka_bootstrap})


@pytest.fixture
def unique_name(request: pytest.FixtureRequest) -> Callable[[str], str]:
    """Make names (topics, groups) no other test uses: test name, a role, a random suffix."""
    test = re.sub(r"[^A-Za-z0-9._-]+", "-", request.node.name)[:80].strip("-")

    def make(role: str = "topic") -> str:
        return f"{test}-{role}-{uuid.uuid4().hex[:8]}"

    return make


@pytest.fixture
def create_topic(admin: AdminClient, unique_name: Callable[[str], str]) -> Iterator[Callable[..., str]]:
    """Create uniquely named topics for one test and delete them afterwards (a real cluster keeps them)."""
    created: list[str] = []

    def create(role: str = "topic", partitions: int = 1, config: dict[str, str] | None = None) -> str:
        name = unique_name(role)
        new = NewTopic(name, num_partitions=partitions, replication_factor=1, config=config or {})
        admin.create_topics([new], operation_timeout=10)[name].result(timeout=15)
        created.append(name)
        return name

    yield create
    if created:
        with contextlib.suppress(Exception):  # cleanup only; a leftover topic harms no other test
            for future in admin.delete_topics(created, operation_timeout=10).values():
                future.result(timeout=15)


@pytest.fixture
def consumer_config(kafka_bootstrap: str, unique_name: Callable[[str], str]) -> Callable[..., dict[str, Any]]:
    """Consumer settings for a fresh group; session.timeout.ms=6000 joins in ~3 s, not ~23 s."""

    def make(**overrides: Any) -> dict[str, Any]:
        return {
            "bootstrap.servers": kafka_bootstrap,
            "group.id": unique_name("group"),
            "auto.offset.reset": "earliest",
            "session.timeout.ms": 6000,
            "enable.auto.commit": False,
            **overrides,
        }

    return make


@pytest.fixture
def msli_processes(tmp_path: Path) -> Iterator[Processes]:
    """Start `msli` commands as child processes; whatever still runs is killed after the test."""
    processes = Processes(tmp_path)
    yield processes
    processes.close()


def _kafka_in_docker() -> Any | None:
    """Start Kafka with testcontainers if a Docker engine answers; None otherwise, within 2 s."""
    if not _docker_answers(timeout=2.0):
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # testcontainers.kafka is moving
            from testcontainers.kafka import KafkaContainer

            return KafkaContainer().with_kraft().start()
    except Exception as exc:  # an engine without the image or network: the local broker still works
        _log.warning("Docker answers but Kafka did not start there (%s); using a local broker", exc)
        return None


def _docker_answers(timeout: float) -> bool:
    """Ping the engine at DOCKER_HOST by hand: docker-py leaks a socket when none answers, and
    warnings are errors in these tests."""
    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    try:
        if host.startswith("unix://"):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(timeout)
            with sock:
                sock.connect(host.removeprefix("unix://"))
                sock.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
                reply = sock.recv(64)
                return reply.startswith(b"HTTP/1.") and b" 200 " in reply
        if host.startswith("tcp://"):  # perhaps TLS; reachable is enough, testcontainers does the rest
            address, _, port = host.removeprefix("tcp://").rpartition(":")
            socket.create_connection((address, int(port)), timeout=timeout).close()
            return True
    except (OSError, ValueError):
        return False
    return False
