"""Which worker answers for a user: the owner of the user's closed-segments partition.

Producers partition by librdkafka's `murmur2_random` (Java-compatible murmur2), so a user's
partition is murmur2(user_id) % partitions on every topic keyed by user id. Each worker advertises
(partition -> URL of its API) on the control topic when the group assigns it partitions; an API
process that gets a query for a partition another worker owns redirects there (307).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable

from streams.config import MsliSettings
from streams.control import publish_control, route_key

__all__ = ["RouteTable", "advertise_routes", "murmur2", "partition_for"]

log = logging.getLogger(__name__)

_M = 0x5BD1E995
_MASK = 0xFFFFFFFF


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 (seed 0x9747b28c), as a signed 32-bit int like Java's Utils.murmur2."""
    length = len(data)
    h = (0x9747B28C ^ length) & _MASK
    full = length - length % 4
    for i in range(0, full, 4):
        k = int.from_bytes(data[i : i + 4], "little")
        k = (k * _M) & _MASK
        k ^= k >> 24
        k = (k * _M) & _MASK
        h = ((h * _M) & _MASK) ^ k
    tail = length % 4
    if tail == 3:
        h ^= data[full + 2] << 16
    if tail >= 2:
        h ^= data[full + 1] << 8
    if tail >= 1:
        h ^= data[full]
        h = (h * _M) & _MASK
    h ^= h >> 13
    h = (h * _M) & _MASK
    h ^= h >> 15
    return h - (1 << 32) if h & 0x80000000 else h


def partition_for(user_id: str, partitions: int) -> int:
    """The partition librdkafka's murmur2 partitioners (and Java's default) pick for this key."""
    return (murmur2(user_id.encode()) & 0x7FFFFFFF) % partitions


def advertise_routes(settings: MsliSettings, partitions: Iterable[int]) -> None:
    """Claim `partitions` for this worker's API (settings.api_url); no-op without one."""
    if not settings.api_url:
        return
    owned = sorted(partitions)
    if owned:
        value = json.dumps({"url": settings.api_url.rstrip("/")})
        publish_control(settings, {route_key(p): value for p in owned})
        log.info("advertised %s for %s partitions %s", settings.api_url, settings.segments_topic, owned)


class RouteTable:
    """The owner URL of each partition, read from the control topic's state."""

    def __init__(self, partitions: int, own_url: str | None) -> None:
        self.partitions = partitions
        self.own_url = own_url.rstrip("/") if own_url else None
        self._routes: dict[int, str] = {}

    def update(self, state: dict[str, str]) -> None:
        routes = {}
        for key, value in state.items():
            if key.startswith("route|"):
                try:
                    routes[int(key.split("|", 1)[1])] = str(json.loads(value)["url"]).rstrip("/")
                except (ValueError, KeyError, TypeError):
                    log.warning("ignoring malformed route %s=%r", key, value)
        self._routes = routes  # one assignment: readers see the old table or the new one

    def owner(self, user_id: str) -> str | None:
        """The URL to redirect to, or None when this process answers (it owns it, or no route)."""
        url = self._routes.get(partition_for(user_id, self.partitions))
        return None if url is None or url == self.own_url else url
