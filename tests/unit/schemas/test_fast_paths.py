"""The hand-written hot paths agree with fastavro: same values, same bytes, same errors.

AvroCodec uses them for BehaviourEvent decoding and ClosedSegment encoding; they
return None for anything unusual, so fastavro decides those. These tests feed both random
records, edge values and damaged bytes, and require identical outcomes.
"""

from __future__ import annotations

import io
import math
import random
from typing import Any

import fastavro
import pytest

from schemas import ACTIONS, CLOSE_REASONS, AvroCodec, SchemaError
from schemas.codec import load_schema
from schemas.fast_paths import decoder, encoder, segment_event_fields_match

STRINGS = ["", "u", "i42", "é-ü-€", "x" * 63, "y" * 64, "z" * 300, "\U0001f600 emoji"]
LONGS = [0, 1, -1, 63, -64, 64, -65, 2**31 - 1, -(2**31), 1_700_000_000_000, 2**63 - 1, -(2**63)]
FLOATS = [None, 0.0, -0.0, 1.0, 0.75, 4.0, 3.4e38, 1e-45, 123.456]


def rand_event(rng: random.Random) -> dict[str, Any]:
    return {
        "user_id": rng.choice(STRINGS[1:]),
        "item_id": rng.choice(STRINGS[1:]),
        "action": rng.choice(ACTIONS),
        "event_time_ms": rng.choice(LONGS),
        "weight": rng.choice(FLOATS),
        "event_id": rng.choice([None, *STRINGS]),
        "context": {} if rng.random() < 0.8 else {"device": rng.choice(STRINGS)},
    }


def rand_segment(rng: random.Random) -> dict[str, Any]:
    n = rng.choice([0, 1, 2, 5, 32, 70])
    return {
        "segment_id": rng.choice(STRINGS),
        "user_id": rng.choice(STRINGS),
        "window_start_ms": rng.choice(LONGS),
        "window_end_ms": rng.choice(LONGS),
        "ordinal": rng.choice([0, 1, -1, 2**31 - 1, -(2**31)]),
        "close_reason": rng.choice(CLOSE_REASONS),
        "events": [
            {k: v for k, v in rand_event(rng).items() if k not in ("user_id", "context")} for _ in range(n)
        ],
        "source_partition": rng.choice([0, 5, 2**31 - 1]),
        "first_offset": rng.choice(LONGS),
        "last_offset": rng.choice(LONGS),
    }


def reference_decode(codec: AvroCodec, data: bytes) -> Any:
    """fastavro alone, with the codec's checks (exactly one record, no trailing bytes)."""
    buf = io.BytesIO(data)
    try:
        record = fastavro.schemaless_reader(buf, codec.schema, None)
    except Exception:
        return "error"
    return record if buf.tell() == len(data) else "error"


def reference_encode(codec: AvroCodec, record: dict[str, Any]) -> bytes:
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, codec.schema, record, strict_allow_default=True)
    return buf.getvalue()


def same(a: Any, b: Any) -> bool:
    """Equal, with NaN equal to NaN (damaged bytes can decode to a NaN weight)."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b


def damaged(rng: random.Random, data: bytes) -> bytes:
    raw = bytearray(data)
    kind = rng.randrange(4)
    if kind == 0 and raw:
        raw[rng.randrange(len(raw))] = rng.randrange(256)
    elif kind == 1:
        del raw[rng.randrange(len(raw) + 1) :]
    elif kind == 2:
        raw += bytes(rng.randrange(256) for _ in range(rng.randint(1, 3)))
    elif raw:
        i = rng.randrange(len(raw))
        raw[i] ^= 1 << rng.randrange(8)
    return bytes(raw)


def test_event_decoding_matches_fastavro_on_valid_and_damaged_bytes() -> None:
    rng = random.Random(7)
    codec = AvroCodec("BehaviourEvent")
    make = rand_event
    fast = decoder("BehaviourEvent", ACTIONS)
    assert fast is not None
    took_fast = 0
    for _ in range(1500):
        data = reference_encode(codec, make(rng))
        for candidate in [data] + [damaged(rng, data) for _ in range(4)]:
            expected = reference_decode(codec, candidate)
            try:
                got: Any = codec.decode(candidate)
            except SchemaError:
                got = "error"
            assert same(got, expected), candidate
            took_fast += fast(candidate, 0) is not None
    assert took_fast > 1000  # the fast path did the common cases, not fastavro alone


def test_closed_segment_encoding_is_byte_identical() -> None:
    rng = random.Random(11)
    codec = AvroCodec("ClosedSegment")
    fast = encoder("ClosedSegment", ACTIONS, CLOSE_REASONS)
    assert fast is not None
    for _ in range(3000):
        record = rand_segment(rng)
        assert fast(record) == reference_encode(codec, record)
        assert codec.encode(record) == reference_encode(codec, record)


@pytest.mark.parametrize(
    "change",
    [
        {"ordinal": 2**31},  # out of int range
        {"ordinal": True},  # not a plain int
        {"extra": 1},  # a field the schema lacks
        {"close_reason": "bored"},
        {"events": [{"item_id": "i", "action": "view", "event_time_ms": 1}]},  # defaults left out
        {"events": [{"item_id": "i", "action": "view", "event_time_ms": 1, "weight": 2, "event_id": None}]},
        {
            "events": (
                {"item_id": "i", "action": "view", "event_time_ms": 1, "weight": None, "event_id": None},
            )
        },
    ],
)
def test_unusual_records_are_left_to_fastavro(change: dict[str, Any]) -> None:
    record = {**rand_segment(random.Random(3)), **change}
    codec = AvroCodec("ClosedSegment")
    fast = encoder("ClosedSegment", ACTIONS, CLOSE_REASONS)
    assert fast is not None and fast(record) is None
    try:
        expected: Any = reference_encode(codec, record)
    except Exception:
        expected = "error"
    try:
        got: Any = codec.encode(record)
    except SchemaError:
        got = "error"
    assert got == expected


def test_confluent_framing_goes_through_the_fast_path_too() -> None:
    codec = AvroCodec("ClosedSegment", schema_id=7)
    record = rand_segment(random.Random(5))
    data = codec.encode(record)
    assert data[:5] == b"\x00\x00\x00\x00\x07" and data[5:] == reference_encode(codec, record)
    events = AvroCodec("BehaviourEvent", schema_id=9)
    framed = events.encode(rand_event(random.Random(6)) | {"context": {}})
    assert same(events.decode(framed), reference_decode(events, framed[5:]))
    with pytest.raises(SchemaError, match="schema id 9, expected 8"):
        AvroCodec("BehaviourEvent", schema_id=8).decode(framed)


@pytest.mark.parametrize("schema_id", [None, 9])
def test_closed_segments_from_their_events_bytes_equal_fastavro(schema_id: int | None) -> None:
    """The segmenter cuts each event's SegmentEvent bytes out of its BehaviourEvent (or encodes
    them, where a context map is in the way) and writes the ClosedSegment around them: the bytes
    must be fastavro's for the same record."""
    rng = random.Random(13)
    events_codec = AvroCodec("BehaviourEvent", schema_id=schema_id)
    segments = AvroCodec("ClosedSegment")
    head_fields = [f["name"] for f in segments.schema["fields"] if f["name"] != "events"]
    for _ in range(1500):
        record = rand_segment(rng)
        user = rng.choice(STRINGS[1:])  # "z" * 300 among them: a user id with a two-byte length
        event_bytes = []
        for e in record["events"]:
            event = {"user_id": user, **e, "context": {} if rng.random() < 0.8 else {"k": "v"}}
            event = events_codec.decode(events_codec.encode(event))  # the record as it came
            event_bytes.append(events_codec.segment_event_bytes(events_codec.encode(event), event))
        head = [record[name] for name in head_fields]
        assert segments.encode_closed_segment_parts(head, event_bytes) == reference_encode(segments, record)


def test_segment_event_bytes_need_the_schemas_to_agree() -> None:
    """Cutting events out of BehaviourEvents relies on their fields between user_id and context
    being a SegmentEvent's, in order and type: a schema change that breaks it turns it off."""
    behaviour, closed = load_schema("BehaviourEvent"), load_schema("ClosedSegment")
    assert segment_event_fields_match(behaviour, closed)
    fields = behaviour["fields"]
    inserted = {**behaviour, "fields": [*fields[:2], {"name": "surface", "type": "string"}, *fields[2:]]}
    assert not segment_event_fields_match(inserted, closed)
    retyped = {
        **behaviour,
        "fields": [{**f, "type": "double"} if f["name"] == "weight" else f for f in fields],
    }
    assert not segment_event_fields_match(retyped, closed)
    without_context = {**behaviour, "fields": fields[:-1]}
    assert not segment_event_fields_match(without_context, closed)


def test_closed_segment_parts_refuse_unusual_fields() -> None:
    codec = AvroCodec("ClosedSegment")
    head = ["u:0:0", "u", 0, 3_600_000, 2**31, "window", 0, 1, 2]  # ordinal beyond Avro's int
    with pytest.raises(SchemaError, match="unusual fields"):
        codec.encode_closed_segment_parts(head, [b"\x02i\x04\x00\x00\x00"])
    with pytest.raises(SchemaError, match="reads BehaviourEvent"):
        codec.segment_event_bytes(b"", {})
