"""Decode and check raw behaviour-event records: each one is a valid event or a dead letter."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from schemas import AvroCodec, SchemaError

__all__ = ["BadEvent", "EventValidator"]


@dataclass(frozen=True)
class BadEvent:
    """Why a record cannot be an event: a short reason (a metric label) and one line of detail."""

    # undecodable | missing-user | missing-item | bad-timestamp | future-timestamp | bad-weight | oversized
    reason: str
    detail: str


class EventValidator:
    """Turn record bytes into BehaviourEvent dicts, rejecting what would poison the segmenter.

    A far-future timestamp would drag the watermark ahead and close every open window, and a NUL
    byte in a user id would break the store's keys, so both are refused here, before any state.
    """

    def __init__(self, codec: AvroCodec, *, max_record_bytes: int, max_future_ms: int) -> None:
        self.codec = codec
        self.max_record_bytes = max_record_bytes
        self.max_future_ms = max_future_ms

    def check(self, value: bytes | None, now_ms: int) -> dict[str, Any] | BadEvent:
        if value is None:
            return BadEvent("undecodable", "record has no value")
        if len(value) > self.max_record_bytes:
            return BadEvent("oversized", f"{len(value)} bytes > max_record_bytes={self.max_record_bytes}")
        try:
            event = self.codec.decode(value)
        except SchemaError as exc:
            return BadEvent("undecodable", str(exc))
        return self.check_fields(event, now_ms)

    def check_fields(self, event: dict[str, Any], now_ms: int) -> dict[str, Any] | BadEvent:
        user_id = event["user_id"]
        if not user_id or "\x00" in user_id:
            return BadEvent("missing-user", f"user_id {user_id!r} is empty or holds a NUL byte")
        if not event["item_id"] or "\x00" in event["item_id"]:
            return BadEvent("missing-item", f"item_id {event['item_id']!r} is empty or holds a NUL byte")
        ts = event["event_time_ms"]
        if ts < 0:
            return BadEvent("bad-timestamp", f"event_time_ms {ts} is negative")
        if ts > now_ms + self.max_future_ms:
            return BadEvent("future-timestamp", f"event_time_ms {ts} is more than max_future_seconds ahead")
        weight = event["weight"]
        if weight is not None and not math.isfinite(weight):
            return BadEvent("bad-weight", f"weight {weight} is not finite")
        return event
