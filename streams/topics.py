"""Create the topics msli uses, with the configs each one needs."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from confluent_kafka import TIMESTAMP_NOT_AVAILABLE, KafkaException, Message
from confluent_kafka.admin import AdminClient, NewTopic

from streams.config import MsliSettings
from streams.errors import BrokerError
from streams.publisher import MAX_RECORD_BYTES

__all__ = ["CLOSABLE_AT_HEADER", "closable_at_ms", "ensure_topics", "kafka_timestamp_ms", "topic_specs"]

log = logging.getLogger(__name__)

# A header on closed-segments records: wall-clock ms when the segment became closable (the Kafka
# timestamp of the event that closed it, or the time a quiet partition's watermark followed the
# clock). Headers leave the record bytes, which must be deterministic, alone; freshness is
# measured from it.
CLOSABLE_AT_HEADER = "msli.closable_at_ms"


def kafka_timestamp_ms(msg: Message) -> int | None:
    """A consumed record's Kafka timestamp (ms), or None where it has no usable one."""
    kind, ms = msg.timestamp()
    return ms if kind != TIMESTAMP_NOT_AVAILABLE and ms > 0 else None


def closable_at_ms(headers: Any) -> int | None:
    """The closable-at stamp from a record's headers (a list of pairs or a mapping), if any."""
    if not headers:
        return None
    pairs = headers.items() if isinstance(headers, Mapping) else headers
    for name, value in pairs:
        if name == CLOSABLE_AT_HEADER and value:
            try:
                return int(value)
            except ValueError:
                return None
    return None


def topic_specs(settings: MsliSettings) -> dict[str, tuple[int, dict[str, str]]]:
    """name -> (partitions, configs). Closed segments are kept forever: re-encoding replays them."""
    n = settings.topic_partitions
    return {
        settings.events_topic: (n, {}),
        settings.segments_topic: (n, {"retention.ms": "-1"}),
        settings.representations_topic: (n, {"cleanup.policy": "compact"}),
        settings.dead_letter_topic: (n, {"max.message.bytes": str(MAX_RECORD_BYTES + 64 * 1024)}),
        settings.checkpoints_topic: (1, {"cleanup.policy": "compact"}),
        settings.control_topic: (1, {"cleanup.policy": "compact"}),
    }


def ensure_topics(settings: MsliSettings, timeout: float = 30.0) -> list[str]:
    """Create the missing topics; return their names. Existing topics are left as they are."""
    admin = AdminClient(settings.kafka_client_config())
    try:
        existing = set(admin.list_topics(timeout=timeout).topics)
    except KafkaException as exc:
        raise BrokerError(
            f"cannot reach Kafka at {settings.bootstrap_servers}: {exc.args[0].str()}"
        ) from None
    missing = [
        NewTopic(
            name, num_partitions=partitions, replication_factor=settings.replication_factor, config=config
        )
        for name, (partitions, config) in topic_specs(settings).items()
        if name not in existing
    ]
    if not missing:
        return []
    for name, future in admin.create_topics(missing, request_timeout=timeout).items():
        try:
            future.result()
        except KafkaException as exc:
            if exc.args[0].code() != 36:  # TOPIC_ALREADY_EXISTS: another worker won the race
                raise BrokerError(f"cannot create topic {name}: {exc.args[0].str()}") from None
    log.info("created topics %s", ", ".join(t.topic for t in missing))
    return [t.topic for t in missing]
