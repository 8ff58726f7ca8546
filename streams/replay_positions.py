"""Where a replay starts: `earliest`, an event TIMESTAMP, or explicit OFFSETS, per partition."""

from __future__ import annotations

import datetime as dt
from typing import Any

from confluent_kafka import Consumer, TopicPartition

from streams.errors import ConfigError

__all__ = ["parse_start", "resolve_start"]

Start = tuple[str, Any]  # ("earliest", None) | ("timestamp", ms) | ("offsets", {partition: offset})


def parse_start(text: str) -> Start:
    """`earliest`; an ISO-8601 time or Unix milliseconds; or `0:120,3:40` (partition:offset)."""
    text = text.strip()
    if text == "earliest":
        return ("earliest", None)
    if ":" in text and all(
        part.count(":") == 1 and part.replace(":", "").isdigit() for part in text.split(",")
    ):
        return ("offsets", {int(p): int(o) for p, o in (part.split(":") for part in text.split(","))})
    if text.isdigit():
        return ("timestamp", int(text))
    try:
        when = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(
            f"--from {text!r}: use earliest, an ISO-8601 time, Unix milliseconds, or PARTITION:OFFSET,..."
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return ("timestamp", int(when.timestamp() * 1000))


def resolve_start(consumer: Consumer, topic: str, start: Start, timeout: float = 30.0) -> dict[int, int]:
    """partition -> first offset to read (never below the log start)."""
    partitions = sorted(consumer.list_topics(topic, timeout=timeout).topics[topic].partitions)
    lows = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout) for p in partitions}
    kind, value = start
    if kind == "earliest":
        return {p: low for p, (low, _) in lows.items()}
    if kind == "offsets":
        unknown = set(value) - set(partitions)
        if unknown:
            raise ConfigError(f"--from names partitions {sorted(unknown)} that {topic} does not have")
        return {p: max(lows[p][0], value.get(p, lows[p][0])) for p in partitions}
    found = consumer.offsets_for_times([TopicPartition(topic, p, value) for p in partitions], timeout=timeout)
    # -1: no record at or after that time: start at the end (nothing to replay there).
    return {tp.partition: tp.offset if tp.offset >= 0 else lows[tp.partition][1] for tp in found}
