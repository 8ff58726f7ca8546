"""The hand-written hot paths agree with fastavro: same values, same bytes, same errors.

AvroCodec uses them for BehaviourEvent and ClosedSegment decoding and ClosedSegment and
UserRepresentation encoding; they return None for anything unusual, so fastavro decides those.
These tests feed both random records, edge values and damaged bytes, and require identical
outcomes.
"""

from __future__ import annotations

import datetime
import io
import math
import random
import struct
from typing import Any

import fastavro
import numpy as np
import pytest

from schemas import ACTIONS, CLOSE_REASONS, AvroCodec, RepresentationParts, SchemaError, SegmentColumns
from schemas.codec import load_schema
from schemas.fast_paths import (
    _long,
    decoder,
    encoder,
    read_closed_segment_columns,
    segment_event_fields_match,
    symbol_indexes,
)

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


@pytest.mark.parametrize(
    ("schema_name", "make"), [("BehaviourEvent", rand_event), ("ClosedSegment", rand_segment)]
)
def test_decoding_matches_fastavro_on_valid_and_damaged_bytes(schema_name: str, make: Any) -> None:
    rng = random.Random(7)
    codec = AvroCodec(schema_name)
    fast = decoder(schema_name, ACTIONS, CLOSE_REASONS)
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


@pytest.mark.parametrize("schema_id", [None, 3])
def test_closed_segments_as_columns_are_the_records_decode_gives(schema_id: int | None) -> None:
    """The encoder stage reads closed segments as columns: the same values as decode(), and its
    errors, through the fast path where it reads the bytes and through fastavro where it cannot."""
    rng = random.Random(11)
    codec = AvroCodec("ClosedSegment", schema_id=schema_id)
    took_fast = 0
    for _ in range(1000):
        data = codec.encode(rand_segment(rng))
        for candidate in [data] + [damaged(rng, data) for _ in range(3)]:
            try:
                expected: Any = codec.decode(candidate)
            except SchemaError:
                expected = "error"
            try:
                columns = codec.decode_segment_columns(candidate)
            except SchemaError:
                assert expected == "error", candidate
                continue
            assert same(columns.record(), expected), candidate
            assert same(SegmentColumns.from_record(expected)._asdict(), columns._asdict())  # fastavro's way
            took_fast += (
                candidate.startswith(codec._header)
                and read_closed_segment_columns(
                    candidate, len(codec._header), ACTIONS, symbol_indexes(ACTIONS), CLOSE_REASONS
                )
                is not None
            )
    assert took_fast > 700  # the fast path did the common cases
    with pytest.raises(SchemaError, match="reads ClosedSegment, not BehaviourEvent"):
        AvroCodec("BehaviourEvent").decode_segment_columns(data)


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


@pytest.mark.parametrize("schema_id", [None, 9])
def test_event_fields_read_in_one_pass_equal_decode_and_cut(schema_id: int | None) -> None:
    """The segmenter reads each event's fields and SegmentEvent bytes in one pass: on valid and
    damaged bytes it must give decode()'s values and segment_event_bytes' bytes, or leave the
    record to them (None)."""
    rng = random.Random(17)
    codec = AvroCodec("BehaviourEvent", schema_id=schema_id)
    read = codec.event_fields_reader()
    assert read is not None
    took_fast = 0
    for _ in range(1500):
        data = codec.encode(rand_event(rng))
        for candidate in [data] + [damaged(rng, data) for _ in range(4)]:
            fields = read(candidate)
            if fields is None:
                continue
            took_fast += 1
            event = reference_decode(codec, candidate[5:] if schema_id is not None else candidate)
            assert event != "error" and not event["context"], candidate
            names = ("user_id", "item_id", "action", "event_time_ms", "weight", "event_id")
            assert same(list(fields[:-1]), [event[name] for name in names])
            assert fields[-1] == codec.segment_event_bytes(candidate, event)
    assert took_fast > 1000
    if schema_id is not None:  # framed with another schema's id: not this codec's to read
        assert read(b"\x00\x00\x00\x00\x08" + data[5:]) is None


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


def test_longs_are_written_as_fastavro_writes_them_at_every_length() -> None:
    """The writer's varints come from tables, two bytes at a time: each length from 1 to 10
    bytes, both sides of each boundary, both signs, and random values."""
    rng = random.Random(21)
    edges = [s * (2**k + d) for k in range(64) for d in (-1, 0, 1) for s in (1, -1)]
    values = [v for v in edges if -(2**63) <= v < 2**63]
    values += [rng.randrange(-(2**63), 2**63) for _ in range(5000)]
    for value in values:
        buf = io.BytesIO()
        fastavro.schemaless_writer(buf, "long", value)
        assert _long(value) == buf.getvalue(), value


# --- UserRepresentation ---------------------------------------------------------------------------
def float_of_bits(bits: int) -> float:
    return float(struct.unpack("<d", struct.pack("<Q", bits))[0])


# Each rounds to a float32 (as fastavro and struct.pack("<f") both do): halfway cases, denormals,
# the largest float32 and values just under its rounding limit, infinities, NaNs with payloads.
WEIGHTS = [
    0.0,
    -0.0,
    1.0,
    0.1,
    -1.5,
    1.0000000596046448,  # halfway between two float32s: to the even one
    1.0000000596046449,
    1e-45,
    1e-46,
    5e-324,
    3.4028234663852886e38,
    3.4028235677973362e38,  # just under the halfway point to 2**128
    -3.4028235e38,
    math.inf,
    -math.inf,
    math.nan,
    -math.nan,
    float_of_bits(0x7FF8000020000000),  # a payload that survives the cast
    float_of_bits(0x7FF4000000000000),  # signalling
]
# Timestamps at the six-byte varints' edges (2**34 to 2**41 - 1: _three_timestamps' lanes), int64's edges.
REP_LONGS = [
    *LONGS,
    2**34 - 1,
    2**34,
    2**41 - 1,
    2**41,
    -(2**34),
    -(2**41),
    -(2**41) - 1,
    1_700_084_951_256,
]
REP_STRINGS = [*STRINGS, "i1188", "m-cbd9ac2b2495", "u29179:1700082147847:0", "ümlaut-\u00e9" * 40]


def rand_ms(rng: random.Random) -> int:
    return rng.choice(REP_LONGS) if rng.random() < 0.3 else rng.randrange(2**34, 2**41)


def rand_representation(rng: random.Random) -> dict[str, Any]:
    dim = rng.choice([0, 1, 8, 15, 16, 64, 64, 64, 100, 2047, 2048, 2100])  # 2048 on: 8 KiB vectors
    k = rng.choice([0, 1, 1, 2, 3, 4, rng.randint(0, 16)])
    segments = [
        {
            "segment_id": rng.choice(REP_STRINGS),
            "window_start_ms": rand_ms(rng),
            "window_end_ms": rand_ms(rng),
            "last_event_ms": rand_ms(rng),
            "event_count": rng.choice([0, 1, 5, 63, 64, 8191, 8192, -1, -64, -65, 2**31 - 1, -(2**31)]),
            "weight": rng.choice(WEIGHTS) if rng.random() < 0.3 else rng.random(),
            "vector": rng.randbytes(4 * dim),
        }
        for _ in range(k)
    ]
    updated = segments[0]["last_event_ms"] if segments and rng.random() < 0.6 else rand_ms(rng)
    n_seen = rng.choice([0, 1, 5, 9, rng.randint(0, 20), 63, 64, 70])
    ascii_only = rng.random() < 0.5
    seen = [
        f"i{rng.randrange(5000)}" if ascii_only or rng.random() < 0.8 else rng.choice(REP_STRINGS)
        for _ in range(n_seen)
    ]
    return {
        "user_id": rng.choice(REP_STRINGS[1:]),
        "model_version": rng.choice(REP_STRINGS),
        "dim": rng.choice([dim, dim, 0, 63, 64, 8191, 8192, -1, 2**31 - 1, -(2**31)]),
        "segments": segments,
        "fused": rng.randbytes(4 * dim),
        "updated_at_ms": updated,
        "seen_item_ids": seen,
    }


def test_user_representation_encoding_is_byte_identical() -> None:
    rng = random.Random(17)
    codec = AvroCodec("UserRepresentation")
    fast = encoder("UserRepresentation", ACTIONS, CLOSE_REASONS)
    assert fast is not None
    for _ in range(3000):
        record = rand_representation(rng)
        expected = reference_encode(codec, record)
        assert fast(record) == expected, record
        assert codec.encode(record) == expected


@pytest.mark.parametrize("weight", WEIGHTS, ids=repr)
def test_user_representation_weights_round_as_fastavro(weight: float) -> None:
    codec = AvroCodec("UserRepresentation")
    fast = encoder("UserRepresentation", ACTIONS, CLOSE_REASONS)
    assert fast is not None
    record = rand_representation(random.Random(19))
    record["segments"] = [{**s, "weight": weight} for s in record["segments"] or rand_segments_of_one()]
    assert fast(record) == reference_encode(codec, record)


def rand_segments_of_one() -> list[dict[str, Any]]:
    return [
        {
            "segment_id": "u:1700000000000:0",
            "window_start_ms": 1_700_000_000_000,
            "window_end_ms": 1_700_003_600_000,
            "last_event_ms": 1_700_000_123_456,
            "event_count": 3,
            "weight": 1.0,
            "vector": b"\x00" * 16,
        }
    ]


def test_long_user_representations_are_byte_identical() -> None:
    """Two- and three-byte counts and lengths: 70 segments, 8,200 seen items, 8 KiB ids and vectors."""
    codec = AvroCodec("UserRepresentation")
    fast = encoder("UserRepresentation", ACTIONS, CLOSE_REASONS)
    assert fast is not None
    segment = rand_segments_of_one()[0]
    record = {
        **rand_representation(random.Random(37)),
        "user_id": "u" * 9000,
        "model_version": "\u00e9" * 5000,
        "segments": [{**segment, "segment_id": "s" * 9000, "vector": bytes(9000)}] * 70,
        "seen_item_ids": ["x" * 9000, "\u00e9" * 40, *(f"i{n}" for n in range(8200))],
    }
    assert fast(record) == reference_encode(codec, record)


@pytest.mark.parametrize("schema_id", [None, 3])
def test_user_representations_round_trip(schema_id: int | None) -> None:
    """Decoding gives the record back, its weights rounded to float32."""
    rng = random.Random(23)
    codec = AvroCodec("UserRepresentation", schema_id=schema_id)
    for _ in range(300):
        record = rand_representation(rng)
        data = codec.encode(record)
        assert data == (b"" if schema_id is None else b"\x00\x00\x00\x00\x03") + reference_encode(
            codec, record
        )
        rounded = [
            {**s, "weight": struct.unpack("<f", struct.pack("<f", s["weight"]))[0]}
            for s in record["segments"]
        ]
        assert same(codec.decode(data), {**record, "segments": rounded})


class Text(str):
    """A str subclass: fastavro encodes what its encode() returns."""

    def encode(self, encoding: str = "utf-8", errors: str = "strict") -> bytes:
        return b"other"


def fastavro_outcome(codec: AvroCodec, record: Any) -> Any:
    """What AvroCodec.encode gave for `record` with fastavro alone: its bytes, or the exception's
    type and message (fastavro's, as a SchemaError where the codec wraps it)."""
    try:
        return reference_encode(codec, record)
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        return ("SchemaError", f"{codec.schema_name}: {exc}")
    except Exception as exc:
        return (type(exc).__name__, str(exc))


def codec_outcome(codec: AvroCodec, record: Any) -> Any:
    try:
        return codec.encode(record)
    except Exception as exc:
        return (type(exc).__name__, str(exc))


def with_segment(**change: Any) -> dict[str, Any]:
    return {"segments": [{**rand_segments_of_one()[0], **change}]}


DELETE = object()


def without(key: str) -> dict[str, Any]:
    return {key: DELETE}


UNUSUAL_REPRESENTATIONS = [
    {"dim": 2**31},  # out of int range: fastavro writes it as a long
    {"dim": -(2**31) - 1},
    {"dim": True},
    {"dim": 64.0},
    {"dim": np.int64(64)},
    {"user_id": Text("u")},
    {"user_id": b"u"},
    {"user_id": None},
    {"user_id": "\ud800"},  # a lone surrogate: no UTF-8
    {"segments": tuple(rand_segments_of_one())},
    {"segments": None},
    {"segments": [None]},
    {"fused": bytearray(16)},
    {"fused": memoryview(bytes(16))},
    {"fused": np.zeros(4, dtype="<f4")},
    {"fused": "abcd"},
    {"updated_at_ms": True},
    {"updated_at_ms": 1.7e12},
    {"updated_at_ms": 2**63},
    {"updated_at_ms": -(2**63) - 1},
    {"updated_at_ms": datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC)},
    {"updated_at_ms": datetime.datetime(2024, 1, 1)},
    {"updated_at_ms": np.int64(1_700_000_000_000)},
    {"seen_item_ids": ("i1",)},
    {"seen_item_ids": None},
    {"seen_item_ids": [1]},
    {"seen_item_ids": ["i1", Text("i2")]},
    {"seen_item_ids": ["i1", "\ud800"]},
    {"extra": 1},
    without("user_id"),
    without("updated_at_ms"),
    without("seen_item_ids"),  # fastavro writes its default, []
    with_segment(window_start_ms=2**63),
    with_segment(window_end_ms=True),
    with_segment(last_event_ms=1.7e12),
    with_segment(last_event_ms=np.int64(1_700_000_000_000)),
    with_segment(event_count=2**31),
    with_segment(event_count=True),
    with_segment(event_count=1.0),
    with_segment(weight=1),
    with_segment(weight=True),
    with_segment(weight=None),
    with_segment(weight="0.5"),
    with_segment(weight=np.float32(0.1)),
    with_segment(weight=np.float64(0.1)),  # a float subclass
    with_segment(weight=3.4028235677973366e38),  # rounds to 2**128: fastavro writes inf
    with_segment(weight=1e39),
    with_segment(weight=2**200),
    with_segment(vector=bytearray(16)),
    with_segment(vector=memoryview(bytes(16))),
    with_segment(vector=memoryview(np.zeros(4, dtype="<f4"))),
    with_segment(vector=None),
    with_segment(segment_id=Text("s")),
    with_segment(extra=1),
    {"segments": [{k: v for k, v in rand_segments_of_one()[0].items() if k != "weight"}]},
]


@pytest.mark.parametrize("change", UNUSUAL_REPRESENTATIONS, ids=lambda change: repr(change)[:70])
def test_unusual_representations_are_left_to_fastavro(change: dict[str, Any]) -> None:
    codec = AvroCodec("UserRepresentation")
    fast = encoder("UserRepresentation", ACTIONS, CLOSE_REASONS)
    assert fast is not None
    base = {**rand_representation(random.Random(29)), "segments": rand_segments_of_one()}
    assert fast(base) == reference_encode(codec, base)
    record = {k: v for k, v in {**base, **change}.items() if v is not DELETE}
    assert fast(record) is None
    assert same(codec_outcome(codec, record), fastavro_outcome(codec, record))


def test_unusual_representation_records_are_left_to_fastavro() -> None:
    codec = AvroCodec("UserRepresentation")
    fast = encoder("UserRepresentation", ACTIONS, CLOSE_REASONS)
    assert fast is not None
    record = {**rand_representation(random.Random(31)), "segments": rand_segments_of_one()}
    for unusual in [None, [], list(record.items()), {**record}.keys()]:
        assert fast(unusual) is None
        assert codec_outcome(codec, unusual) == fastavro_outcome(codec, unusual)


SEGMENT_VECTOR_FIELDS = [
    field["name"] for field in load_schema("UserRepresentation")["fields"][3]["type"]["items"]["fields"]
]


def test_user_representations_from_their_parts_are_the_records_bytes() -> None:
    """encode_representation gives encode()'s bytes, through the fast path or, for unusual fields,
    through the record the parts make."""
    rng = random.Random(29)
    codec = AvroCodec("UserRepresentation", schema_id=5)
    for _ in range(1000):
        record = rand_representation(rng)
        parts = RepresentationParts(
            record["user_id"],
            record["model_version"],
            record["dim"],
            [tuple(s[name] for name in SEGMENT_VECTOR_FIELDS[:-1]) for s in record["segments"]],  # type: ignore[misc]
            [s["vector"] for s in record["segments"]],
            record["fused"],
            record["updated_at_ms"],
            record["seen_item_ids"],
        )
        assert parts.record() == record
        assert codec.encode_representation(parts) == codec.encode(record)
    with pytest.raises(SchemaError, match="writes UserRepresentation"):
        AvroCodec("ClosedSegment").encode_representation(parts)
