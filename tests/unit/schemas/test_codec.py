"""Every schema round-trips through the one codec; garbage is a SchemaError, never a crash."""

from __future__ import annotations

import json
from importlib import resources

import pytest

from schemas import ACTIONS, CLOSE_REASONS, AvroCodec, SchemaError

EVENT = {
    "user_id": "u1",
    "item_id": "i9",
    "action": "rate",
    "event_time_ms": 881_250_949_000,
    "weight": 4.0,
    "event_id": "e-1",
    "context": {"device": "tv"},
}
SEGMENT = {
    "segment_id": "u1:881247600000:0",
    "user_id": "u1",
    "window_start_ms": 881_247_600_000,
    "window_end_ms": 881_251_200_000,
    "ordinal": 0,
    "close_reason": "size",
    "events": [
        {"item_id": "i9", "action": "rate", "event_time_ms": 881_250_949_000, "weight": 4.0, "event_id": None}
    ],
    "source_partition": 2,
    "first_offset": 10,
    "last_offset": 10,
}
REPRESENTATION = {
    "user_id": "u1",
    "model_version": "m-abc",
    "dim": 2,
    "segments": [
        {
            "segment_id": "u1:881247600000:0",
            "window_start_ms": 881_247_600_000,
            "window_end_ms": 881_251_200_000,
            "last_event_ms": 881_250_949_000,
            "event_count": 1,
            "weight": 1.0,
            "vector": b"\x00" * 8,
        }
    ],
    "fused": b"\x00" * 8,
    "updated_at_ms": 881_250_949_000,
    "seen_item_ids": ["242", "302"],
}


@pytest.mark.parametrize(
    ("name", "record"),
    [("BehaviourEvent", EVENT), ("ClosedSegment", SEGMENT), ("UserRepresentation", REPRESENTATION)],
)
@pytest.mark.parametrize("schema_id", [None, 7])
def test_round_trip(name: str, record: dict, schema_id: int | None) -> None:
    codec = AvroCodec(name, schema_id=schema_id)
    data = codec.encode(record)
    assert codec.decode(data) == record
    if schema_id is not None:
        assert data[:5] == b"\x00\x00\x00\x00\x07"  # Confluent wire format: magic 0, big-endian id


def test_every_avsc_file_is_loaded_by_the_codec() -> None:
    files = sorted(p.name for p in resources.files("schemas").iterdir() if p.name.endswith(".avsc"))
    names = sorted(json.loads(resources.files("schemas").joinpath(f).read_text())["name"] for f in files)
    assert names == ["BehaviourEvent", "ClosedSegment", "UserRepresentation"]
    for name in names:
        AvroCodec(name)


def test_optional_fields_default() -> None:
    codec = AvroCodec("BehaviourEvent")
    minimal = {"user_id": "u", "item_id": "i", "action": "view", "event_time_ms": 1}
    assert codec.decode(codec.encode(minimal)) == {**minimal, "weight": None, "event_id": None, "context": {}}


def test_enums_match_the_words_of_the_design() -> None:
    assert CLOSE_REASONS == ("window", "idle", "size", "late")
    assert {"view", "click", "purchase", "rate", "other"} <= set(ACTIONS)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff",
        b"garbage that is not avro at all",
        b"\x02u" + b"\x00" * 3,
    ],
)
def test_garbage_is_a_schema_error(data: bytes) -> None:
    with pytest.raises(SchemaError, match="BehaviourEvent"):
        AvroCodec("BehaviourEvent").decode(data)


def test_trailing_bytes_are_refused() -> None:
    codec = AvroCodec("BehaviourEvent")
    with pytest.raises(SchemaError, match="trailing"):
        codec.decode(codec.encode(EVENT) + b"\x00")


def test_wrong_framing_is_refused() -> None:
    framed = AvroCodec("BehaviourEvent", schema_id=7)
    with pytest.raises(SchemaError, match="schema id 7, expected 8"):
        AvroCodec("BehaviourEvent", schema_id=8).decode(framed.encode(EVENT))
    with pytest.raises(SchemaError, match="magic"):
        framed.decode(b"\x01" + framed.encode(EVENT)[1:])


def test_record_that_does_not_fit_is_a_schema_error() -> None:
    with pytest.raises(SchemaError):
        AvroCodec("BehaviourEvent").encode({**EVENT, "action": "teleport"})
    with pytest.raises(SchemaError):
        AvroCodec("BehaviourEvent").encode({"user_id": "u"})


def test_a_reader_on_the_schema_before_seen_item_ids_reads_new_representations() -> None:
    """seen_item_ids was added last, with a default: readers built on the older schema read the
    fields they know from new bytes, and new readers resolve old bytes to an empty list."""
    import io

    import fastavro

    text = resources.files("schemas").joinpath("user_representation.avsc").read_text()
    schema = json.loads(
        text.replace('"logicalType": "timestamp-millis"', '"plain": true')
    )  # ints, not datetimes
    before = {**schema, "fields": [f for f in schema["fields"] if f["name"] != "seen_item_ids"]}
    old, new = fastavro.parse_schema(before), fastavro.parse_schema(schema)
    data = AvroCodec("UserRepresentation").encode(REPRESENTATION)
    read_old = fastavro.schemaless_reader(io.BytesIO(data), old, None)
    assert read_old == {k: v for k, v in REPRESENTATION.items() if k != "seen_item_ids"}
    written_old = io.BytesIO()
    fastavro.schemaless_writer(written_old, old, read_old)
    resolved = fastavro.schemaless_reader(io.BytesIO(written_old.getvalue()), old, new)
    assert resolved == {**read_old, "seen_item_ids": []}
