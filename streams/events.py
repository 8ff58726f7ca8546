"""Decode and check raw behaviour-event records: each one is a valid event or a dead letter."""

from __future__ import annotations

import math
from dataclasses import dataclass

from schemas import AvroCodec, SchemaError
from schemas.fast_paths import EventFields

__all__ = ["BadEvent", "EventValidator"]

_EVENT_FIELDS = ("user_id", "item_id", "action", "event_time_ms", "weight", "event_id")


@dataclass(frozen=True)
class BadEvent:
    """Why a record cannot be an event: a short reason (a metric label) and one line of detail."""

    # undecodable | missing-user | missing-item | bad-timestamp | future-timestamp | bad-weight | oversized
    reason: str
    detail: str


class EventValidator:
    """Turn record bytes into events, rejecting what would poison the segmenter.

    A far-future timestamp would drag the watermark ahead and close every open window, and a NUL
    byte in a user id would break the store's keys, so both are refused here, before any state.
    """

    def __init__(self, codec: AvroCodec, *, max_record_bytes: int, max_future_ms: int) -> None:
        self.codec = codec
        self.max_record_bytes = max_record_bytes
        self.max_future_ms = max_future_ms
        self._read_fast = codec.event_fields_reader() or _none

    def read(self, value: bytes | None, now_ms: int) -> EventFields | BadEvent:
        """The event's fields, in SegmentCloser.add's order, with its SegmentEvent bytes last.

        Most records take the codec's one-pass fast path (no dict, the bytes cut as the fields are
        read): 3.5 us an event, against 5.5 us for a dict checked and then cut in a second pass.
        """
        if value is None:
            return BadEvent("undecodable", "record has no value")
        if len(value) > self.max_record_bytes:
            return BadEvent("oversized", f"{len(value)} bytes > max_record_bytes={self.max_record_bytes}")
        fields = self._read_fast(value)
        if fields is None:
            return self._read_unusual(value, now_ms)
        user_id, item_id, _, event_time_ms, weight, _, _ = fields
        return _refusal(user_id, item_id, event_time_ms, weight, now_ms + self.max_future_ms) or fields

    def _read_unusual(self, value: bytes, now_ms: int) -> EventFields | BadEvent:
        """A record the fast path leaves to fastavro: a context map, framing it does not expect,
        or bytes that are not an event."""
        try:
            event = self.codec.decode(value)
        except SchemaError as exc:
            return BadEvent("undecodable", str(exc))
        user_id, item_id, action, event_time_ms, weight, event_id = (event[f] for f in _EVENT_FIELDS)
        refusal = _refusal(user_id, item_id, event_time_ms, weight, now_ms + self.max_future_ms)
        if refusal is not None:
            return refusal
        event_bytes = self.codec.segment_event_bytes(value, event)
        return user_id, item_id, action, event_time_ms, weight, event_id, event_bytes


def _none(value: bytes) -> None:
    return None


def _refusal(
    user_id: str, item_id: str, event_time_ms: int, weight: float | None, latest_ms: int
) -> BadEvent | None:
    """Why the event must not reach the segmenter, or None."""
    if not user_id or "\x00" in user_id:
        return BadEvent("missing-user", f"user_id {user_id!r} is empty or holds a NUL byte")
    if not item_id or "\x00" in item_id:
        return BadEvent("missing-item", f"item_id {item_id!r} is empty or holds a NUL byte")
    if event_time_ms < 0:
        return BadEvent("bad-timestamp", f"event_time_ms {event_time_ms} is negative")
    if event_time_ms > latest_ms:
        detail = f"event_time_ms {event_time_ms} is more than max_future_seconds ahead"
        return BadEvent("future-timestamp", detail)
    if weight is not None and not math.isfinite(weight):
        return BadEvent("bad-weight", f"weight {weight} is not finite")
    return None
