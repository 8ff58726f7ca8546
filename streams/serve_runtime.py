"""Wire `msli serve`: the store reader, the route table from the control topic, the HTTP server."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from confluent_kafka import Consumer

from store import RepresentationReader
from streams.config import MsliSettings
from streams.control import ControlFollower
from streams.routing import RouteTable
from streams.serve import QueryService, serve_forever

__all__ = ["run_serve"]

log = logging.getLogger(__name__)


def _segment_partitions(settings: MsliSettings) -> int:
    consumer = Consumer(settings.kafka_client_config(**{"group.id": "msli-serve-metadata"}))
    try:
        topic = consumer.list_topics(settings.segments_topic, timeout=30).topics[settings.segments_topic]
        return len(topic.partitions) or settings.topic_partitions
    finally:
        consumer.close()


def _wait_for_store(path: Path) -> None:
    """An API started beside a new worker waits for the worker to create its store."""
    if not (path / "CURRENT").exists():
        log.info("waiting for a worker to create the store at %s", path)
    while not (path / "CURRENT").exists():
        time.sleep(1.0)


def run_serve(settings: MsliSettings) -> None:
    """Serve until interrupted. Without a broker it answers every user from its own store."""
    _wait_for_store(settings.state_dir / "store")
    reader = RepresentationReader(settings.state_dir / "store", refresh_seconds=settings.read_refresh_seconds)
    follower: ControlFollower | None = None
    routes: RouteTable | None = None
    try:
        if settings.bootstrap_servers:
            routes = RouteTable(_segment_partitions(settings), settings.api_url)
            follower = ControlFollower(settings, on_change=routes.update).start()
            routes.update(follower.state)
        service = QueryService(settings, reader, routes)
        serve_forever(service, settings.serve_host, settings.serve_port)
    except KeyboardInterrupt:
        pass
    finally:
        if follower is not None:
            follower.stop()
        reader.close()
