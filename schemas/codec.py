"""Encode and decode the project's Avro records, with optional Confluent wire framing."""

from __future__ import annotations

import io
import json
import struct
from collections.abc import Callable, Iterable, Iterator, Sequence
from functools import cache, partial
from importlib import resources
from typing import Any, NamedTuple

import fastavro

from schemas import fast_paths
from schemas.fast_paths import EventFields

__all__ = [
    "ACTIONS",
    "CLOSE_REASONS",
    "AvroCodec",
    "RepresentationParts",
    "SchemaError",
    "SegmentColumns",
    "load_schema",
]

# Parse order matters: later schemas refer to names the earlier ones define (msli.Action).
_SCHEMA_FILES = {
    "BehaviourEvent": "behaviour_event.avsc",
    "ClosedSegment": "closed_segment.avsc",
    "UserRepresentation": "user_representation.avsc",
}
_CONFLUENT_MAGIC = 0
_CONFLUENT_HEADER = struct.Struct(">bI")
_SEGMENT_VECTOR_FIELDS = (
    *("segment_id", "window_start_ms", "window_end_ms", "last_event_ms"),
    *("event_count", "weight", "vector"),
)


class RepresentationParts(NamedTuple):
    """A UserRepresentation's fields, its segments' vectors apart from their other fields: what
    the encoder stage computes for each user, written without a record (AvroCodec.encode_representation)."""

    user_id: str
    model_version: str
    dim: int
    # each SegmentVector's fields but its vector, in the schema's order: segment id, window start,
    # window end, last event time, event count, weight
    segments: list[tuple[str, int, int, int, int, float]]
    vectors: list[bytes]  # theirs, in the same order
    fused: bytes
    updated_at_ms: int
    seen_item_ids: list[str]

    def record(self) -> dict[str, Any]:
        return {
            "user_id": self.user_id,
            "model_version": self.model_version,
            "dim": self.dim,
            "segments": [
                dict(zip(_SEGMENT_VECTOR_FIELDS, (*head, vector), strict=True))
                for head, vector in zip(self.segments, self.vectors, strict=True)
            ],
            "fused": self.fused,
            "updated_at_ms": self.updated_at_ms,
            "seen_item_ids": self.seen_item_ids,
        }


class SegmentColumns(NamedTuple):
    """A ClosedSegment with its events as columns, one entry an event in arrival order: what the
    encoder stage merges into windows and hands to the encoder, without a dict per event
    (AvroCodec.decode_segment_columns). Never changed in place: a changed segment is a new one."""

    segment_id: str
    user_id: str
    window_start_ms: int
    window_end_ms: int
    ordinal: int
    close_reason: str
    item_ids: list[str]
    actions: list[int]  # indexes into ACTIONS
    event_times_ms: list[int]
    weights: list[float | None]
    event_ids: list[str | None]
    source_partition: int
    first_offset: int
    last_offset: int

    def record(self) -> dict[str, Any]:
        """The ClosedSegment record, as AvroCodec.decode() gives it."""
        return fast_paths.closed_segment_record(self, ACTIONS)

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> SegmentColumns:
        events = record["events"]
        return cls(
            record["segment_id"],
            record["user_id"],
            record["window_start_ms"],
            record["window_end_ms"],
            record["ordinal"],
            record["close_reason"],
            [e["item_id"] for e in events],
            [_ACTION_INDEX[e["action"]] for e in events],
            [e["event_time_ms"] for e in events],
            [e["weight"] for e in events],
            [e["event_id"] for e in events],
            record["source_partition"],
            record["first_offset"],
            record["last_offset"],
        )


class SchemaError(ValueError):
    """A record does not fit its schema, or bytes are not a record of it."""


@cache
def _parsed_schemas() -> dict[str, dict[str, Any]]:
    named: dict[str, Any] = {}
    parsed: dict[str, dict[str, Any]] = {}
    for name, filename in _SCHEMA_FILES.items():
        raw = json.loads(resources.files(__package__).joinpath(filename).read_text())
        schema = fastavro.parse_schema(_without_logical_types(raw), named_schemas=named)
        assert isinstance(schema, dict)
        parsed[name] = schema
    return parsed


def _without_logical_types(node: Any) -> Any:
    """Drop logicalType annotations: the wire format is the same, and plain ints decode several
    times faster than datetimes (the `.avsc` files keep them for schema-registry users)."""
    if isinstance(node, dict):
        return {k: _without_logical_types(v) for k, v in node.items() if k != "logicalType"}
    if isinstance(node, list):
        return [_without_logical_types(v) for v in node]
    return node


def load_schema(name: str) -> dict[str, Any]:
    """Return the parsed schema called `name` (BehaviourEvent, ClosedSegment, UserRepresentation)."""
    try:
        return _parsed_schemas()[name]
    except KeyError:
        raise SchemaError(f"unknown schema {name!r}; known: {', '.join(_SCHEMA_FILES)}") from None


def _enum_symbols(schema_name: str, field: str) -> tuple[str, ...]:
    for f in _parsed_schemas()[schema_name]["fields"]:
        if f["name"] == field:
            return tuple(f["type"]["symbols"])
    raise AssertionError(f"{schema_name}.{field} is not an enum")


ACTIONS: tuple[str, ...] = _enum_symbols("BehaviourEvent", "action")
CLOSE_REASONS: tuple[str, ...] = _enum_symbols("ClosedSegment", "close_reason")
_ACTION_INDEX = fast_paths.symbol_indexes(ACTIONS)


class AvroCodec:
    """Schemaless Avro for one record type; with `schema_id`, Confluent framing (magic byte + id).

    Schemaless bodies keep records small; the framing lets users of a schema registry read them
    with their own deserializers.
    """

    def __init__(self, schema_name: str, schema_id: int | None = None) -> None:
        self.schema_name = schema_name
        self.schema = load_schema(schema_name)
        self.schema_id = schema_id
        self._header = b"" if schema_id is None else _CONFLUENT_HEADER.pack(_CONFLUENT_MAGIC, schema_id)
        # Hand-written paths for the hot records; they return None where fastavro must decide.
        self._fast_decode = fast_paths.decoder(schema_name, ACTIONS, CLOSE_REASONS)
        self._fast_encode = fast_paths.encoder(schema_name, ACTIONS, CLOSE_REASONS)
        self._reason_bytes = fast_paths.symbol_bytes(CLOSE_REASONS)
        self._action_bytes = fast_paths.symbol_bytes(ACTIONS)
        self._event_bytes_inside = schema_name == "BehaviourEvent" and fast_paths.segment_event_fields_match(
            self.schema, load_schema("ClosedSegment")
        )

    def encode(self, record: dict[str, Any]) -> bytes:
        """Serialise one record; raise SchemaError naming the problem if it does not fit."""
        if self._fast_encode is not None:
            body = self._fast_encode(record)
            if body is not None:
                return self._header + body
        buf = io.BytesIO()
        buf.write(self._header)
        try:
            fastavro.schemaless_writer(buf, self.schema, record, strict_allow_default=True)
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise SchemaError(f"{self.schema_name}: {exc}") from None
        return buf.getvalue()

    def encode_representation(self, parts: RepresentationParts) -> bytes:
        """encode() of parts.record(), without making the record where the fast path can."""
        if self.schema_name != "UserRepresentation":
            raise SchemaError(f"encode_representation writes UserRepresentation, not {self.schema_name}")
        body = fast_paths.encode_user_representation_parts(*parts)
        if body is not None:
            return self._header + body
        return self.encode(parts.record())

    def encode_closed_segment_parts(self, head: Sequence[Any], event_bytes: list[bytes]) -> bytes:
        """A ClosedSegment's bytes from its fields other than events, in the schema's order, and its
        events' encodings (segment_event_bytes'), which are copied instead of encoded again."""
        if self.schema_name != "ClosedSegment":
            raise SchemaError(f"encode_closed_segment_parts writes ClosedSegment, not {self.schema_name}")
        body = fast_paths.encode_closed_segment_parts(head, event_bytes, self._reason_bytes)
        if body is None:
            raise SchemaError(f"ClosedSegment: unusual fields {tuple(head)!r}")
        return self._header + body

    def segment_event_bytes(self, data: bytes, event: dict[str, Any]) -> bytes:
        """The SegmentEvent encoding of `event`, decoded from the BehaviourEvent bytes `data`: cut
        out of them where its context map is empty (the bytes as their producer wrote them; the
        same as encoding the fields again wherever they are canonical Avro, as every Avro library
        writes it), else encoded from its fields."""
        if self.schema_name != "BehaviourEvent":
            raise SchemaError(f"segment_event_bytes reads BehaviourEvent, not {self.schema_name}")
        if self._event_bytes_inside and not event["context"]:
            return fast_paths.segment_event_bytes(data, len(self._header))
        fields = (
            event["item_id"],
            event["action"],
            event["event_time_ms"],
            event["weight"],
            event["event_id"],
        )
        encoded = fast_paths.encode_segment_event(*fields, self._action_bytes)
        if encoded is None:
            raise SchemaError(f"SegmentEvent: unusual fields {fields!r}")
        return encoded

    def event_fields_reader(self) -> Callable[[bytes], EventFields | None] | None:
        """A BehaviourEvent codec's fast path to each record's fields and SegmentEvent bytes
        (segment_event_bytes'), read in one pass; it returns None for the records that decode()
        must decide. None where the schemas do not allow cutting the bytes out."""
        if not self._event_bytes_inside:
            return None
        return partial(fast_paths.read_behaviour_event, ACTIONS, self._header)

    def decode(self, data: bytes) -> dict[str, Any]:
        """Read one record; raise SchemaError if the bytes are not exactly one record of this schema."""
        if self._fast_decode is not None and data.startswith(self._header):
            fast = self._fast_decode(data, len(self._header))
            if fast is not None:
                return fast
        buf = io.BytesIO(data)
        self._read_header(buf)
        try:
            record = fastavro.schemaless_reader(buf, self.schema, None)
        except Exception as exc:  # fastavro raises many types on garbage (EOFError, UnicodeDecodeError, ...)
            raise SchemaError(f"not a {self.schema_name}: {type(exc).__name__}: {exc}") from None
        if buf.tell() != len(data):
            raise SchemaError(f"not a {self.schema_name}: {len(data) - buf.tell()} trailing bytes")
        assert isinstance(record, dict)
        return record

    def decode_segment_columns(self, data: bytes) -> SegmentColumns:
        """decode() of a ClosedSegment, as columns; raise SchemaError as decode() does."""
        if self.schema_name != "ClosedSegment":
            raise SchemaError(f"decode_segment_columns reads ClosedSegment, not {self.schema_name}")
        if data.startswith(self._header):
            columns = fast_paths.read_closed_segment_columns(
                data, len(self._header), ACTIONS, _ACTION_INDEX, CLOSE_REASONS
            )
            if columns is not None:
                return SegmentColumns._make(columns)
        return SegmentColumns.from_record(self.decode(data))

    def decode_many(self, payloads: Iterable[bytes]) -> Iterator[dict[str, Any] | SchemaError]:
        """Decode each payload, yielding the record or the SchemaError in its place (never raising)."""
        for data in payloads:
            try:
                yield self.decode(data)
            except SchemaError as exc:
                yield exc

    def _read_header(self, buf: io.BytesIO) -> None:
        if self.schema_id is None:
            return
        header = buf.read(_CONFLUENT_HEADER.size)
        if len(header) < _CONFLUENT_HEADER.size:
            raise SchemaError(f"not a {self.schema_name}: shorter than the Confluent header")
        magic, schema_id = _CONFLUENT_HEADER.unpack(header)
        if magic != _CONFLUENT_MAGIC:
            raise SchemaError(f"not a {self.schema_name}: Confluent magic byte is {magic}, not 0")
        if schema_id != self.schema_id:
            raise SchemaError(f"{self.schema_name}: schema id {schema_id}, expected {self.schema_id}")
