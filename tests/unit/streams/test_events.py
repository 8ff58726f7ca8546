"""What the segmenter reads of each record: an event's fields and bytes, or why it is refused."""

from __future__ import annotations

from typing import Any

import pytest

from schemas import AvroCodec
from streams.events import BadEvent, EventValidator

NOW_MS = 1_700_000_000_000
EVENT: dict[str, Any] = {
    "user_id": "u1",
    "item_id": "i9",
    "action": "click",
    "event_time_ms": NOW_MS - 5_000,
    "weight": 0.5,
    "event_id": "e-1",
    "context": {},
}


def validator(codec: AvroCodec) -> EventValidator:
    return EventValidator(codec, max_record_bytes=1_000, max_future_ms=60_000)


@pytest.mark.parametrize("schema_id", [None, 3])
@pytest.mark.parametrize("context", [{}, {"device": "tv"}])  # the fast path, and fastavro's
def test_an_event_reads_as_its_fields_and_segment_event_bytes(
    schema_id: int | None, context: dict[str, str]
) -> None:
    codec = AvroCodec("BehaviourEvent", schema_id=schema_id)
    record = {**EVENT, "context": context}
    data = codec.encode(record)
    fields = validator(codec).read(data, NOW_MS)
    assert fields == (
        "u1",
        "i9",
        "click",
        NOW_MS - 5_000,
        0.5,
        "e-1",
        codec.segment_event_bytes(data, codec.decode(data)),
    )


@pytest.mark.parametrize("context", [{}, {"device": "tv"}])
@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"user_id": ""}, "missing-user"),
        ({"user_id": "a\x00b"}, "missing-user"),
        ({"item_id": ""}, "missing-item"),
        ({"item_id": "i\x00"}, "missing-item"),
        ({"event_time_ms": -1}, "bad-timestamp"),
        ({"event_time_ms": NOW_MS + 60_001}, "future-timestamp"),
        ({"weight": float("inf")}, "bad-weight"),
        ({"weight": float("nan")}, "bad-weight"),
    ],
)
def test_events_that_would_poison_the_segmenter_are_refused(
    change: dict[str, Any], reason: str, context: dict[str, str]
) -> None:
    codec = AvroCodec("BehaviourEvent")
    refused = validator(codec).read(codec.encode({**EVENT, **change, "context": context}), NOW_MS)
    assert isinstance(refused, BadEvent) and refused.reason == reason


def test_the_latest_allowed_time_is_read_as_an_event() -> None:
    codec = AvroCodec("BehaviourEvent")
    fields = validator(codec).read(codec.encode({**EVENT, "event_time_ms": NOW_MS + 60_000}), NOW_MS)
    assert not isinstance(fields, BadEvent) and fields[3] == NOW_MS + 60_000


@pytest.mark.parametrize(
    ("value", "reason"),
    [(None, "undecodable"), (b"\x01\x02", "undecodable"), (b"\x02u" * 600, "oversized")],
)
def test_records_that_are_not_events_are_refused(value: bytes | None, reason: str) -> None:
    refused = validator(AvroCodec("BehaviourEvent")).read(value, NOW_MS)
    assert isinstance(refused, BadEvent) and refused.reason == reason
    assert "\n" not in refused.detail
