"""Hand-written Avro binary for the records on the worker's hot path, identical to fastavro's.

The segmenter decodes every behaviour event and encodes every closed segment; the encoder stage
decodes every closed segment and encodes a UserRepresentation per user per micro-batch. fastavro
pays most of its cost per call, not per byte. Measured best of 5 on the 2-core machine: decoding a
BehaviourEvent 2.9 us here vs 3.4 us in fastavro (plus the 1 us AvroCodec spends around it),
encoding a ClosedSegment of 5 events 15 us vs 22 us, a UserRepresentation 6.8-7.0 us vs 10.0 us
(5,000 from the encoder stage: mostly 1-4 segments of dim 64, 8.5 seen items), decoding a
ClosedSegment of 5.7 events 22.5-23.0 us vs 32.2-32.6 us through AvroCodec (strings and one-byte
indexes read inline; a first version that read every event field through the helpers gained half
as much, while the event time's varint inline instead of through _read_long saved only 0.3-0.7 us).
The segmenter reads each event's fields as a tuple, with its SegmentEvent bytes, in one pass
(read_behaviour_event, 3.0 us); the encoder stage reads each ClosedSegment as columns
(read_closed_segment_columns), without a dict per event, and decode_closed_segment makes the
record from those. Both read events with one function, _read_segment_event;
that costs the ClosedSegment decoder 0.65 us a segment of 5 events against inlining it there
(19.6 against 18.9 us).

Each function handles the common shapes only and returns None for anything else: a non-empty
context map, a value of an unexpected type or range, any malformed or trailing byte. AvroCodec
then asks fastavro, so every result and every error is fastavro's: the fast path accepts only
bytes and records that fastavro accepts, and gives the same values and bytes for them
(tests/unit/schemas/test_fast_paths.py compares the two on random and damaged records).
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from typing import Any, Final

__all__ = [
    "EventFields",
    "SegmentColumnsTuple",
    "closed_segment_record",
    "decoder",
    "encode_closed_segment_parts",
    "encode_segment_event",
    "encode_user_representation",
    "encode_user_representation_parts",
    "encoder",
    "read_behaviour_event",
    "read_closed_segment_columns",
    "segment_event_bytes",
    "segment_event_fields_match",
    "symbol_bytes",
    "symbol_indexes",
]

_FLOAT = struct.Struct("<f")
_LONG_MIN, _LONG_MAX = -(2**63), 2**63 - 1
_INT_MIN, _INT_MAX = -(2**31), 2**31 - 1


class _Unusual(Exception):
    """Not a shape the fast path handles: let fastavro decide."""


# --- reading -----------------------------------------------------------------------------------------
def _read_long(data: bytes, p: int) -> tuple[int, int]:
    """Zigzag varint at p: (value, position after it)."""
    b = data[p]
    if b < 0x80:  # one byte: values -64..63, most lengths, enum and union indexes
        return (b >> 1) ^ -(b & 1), p + 1
    n = b & 0x7F
    shift = 7
    p += 1
    while True:
        b = data[p]
        p += 1
        n |= (b & 0x7F) << shift
        if b < 0x80:
            break
        shift += 7
        if shift > 63:
            raise _Unusual
    value = (n >> 1) ^ -(n & 1)
    if not _LONG_MIN <= value <= _LONG_MAX:
        raise _Unusual
    return value, p


def _read_string(data: bytes, p: int) -> tuple[str, int]:
    n, p = _read_long(data, p)
    end = p + n
    if n < 0 or end > len(data):
        raise _Unusual
    return data[p:end].decode(), end


def _read_index(data: bytes, p: int, size: int) -> tuple[int, int]:
    """An enum symbol's or a union branch's index."""
    i, p = _read_long(data, p)
    if not 0 <= i < size:
        raise _Unusual
    return i, p


_FAILURES = (_Unusual, IndexError, UnicodeDecodeError, struct.error)


def _read_segment_event(
    data: bytes, p: int, actions: tuple[str, ...]
) -> tuple[str, str, int, float | None, str | None, int]:
    """A SegmentEvent's fields at p, which a BehaviourEvent's from item_id to event_id are too:
    (item_id, action, event_time_ms, weight, event_id, position after them). Strings, the action
    and the union indexes are read inline where they take one byte, their usual shape; any other
    shape raises _Unusual (or a _FAILURES error) and leaves the record to fastavro."""
    b = data[p]
    if b < 0x80 and not b & 1:
        item_start = p + 1
        p = item_start + (b >> 1)
        item_id = data[item_start:p].decode()
    else:
        item_id, p = _read_string(data, p)
    b = data[p]
    if b >= 0x80 or b & 1 or b >> 1 >= len(actions):
        raise _Unusual
    action = actions[b >> 1]
    event_time_ms, p = _read_long(data, p + 1)
    b = data[p]
    if b == 0:
        weight, p = None, p + 1
    elif b == 2:
        weight, p = _FLOAT.unpack_from(data, p + 1)[0], p + 5
    else:
        raise _Unusual
    b = data[p]
    if b == 0:
        event_id, p = None, p + 1
    elif b == 2:
        b = data[p + 1]
        if b < 0x80 and not b & 1:
            id_start = p + 2
            p = id_start + (b >> 1)
            event_id = data[id_start:p].decode()
        else:
            event_id, p = _read_string(data, p + 1)
    else:
        raise _Unusual
    return item_id, action, event_time_ms, weight, event_id, p


# A BehaviourEvent's fields with an empty context map, and its SegmentEvent bytes (the fields from
# item_id to event_id, which a ClosedSegment holds as they are: see segment_event_bytes).
EventFields = tuple[str, str, str, int, float | None, str | None, bytes]


def read_behaviour_event(actions: tuple[str, ...], header: bytes, data: bytes) -> EventFields | None:
    """A BehaviourEvent with an empty context map as a tuple, with its SegmentEvent bytes, else
    None: what the segmenter needs of each event, without a dict or a second pass to cut the
    bytes. `header`: the framing the body follows (b"": none). The arguments come in the order a
    functools.partial binds them: a partial costs 0.15 us a call where a wrapper function cost 0.5.
    The fields after user_id are a SegmentEvent's (segment_event_fields_match): 3.0 us an event
    with them read by _read_segment_event, 3.8 us with each field through the helpers."""
    if header and not data.startswith(header):
        return None
    try:
        p = start = len(header)
        b = data[p]
        if b < 0x80 and not b & 1:
            p += 1 + (b >> 1)
            user_id = data[start + 1 : p].decode()
        else:
            user_id, p = _read_string(data, p)
        fields_start = p
        item_id, action, event_time_ms, weight, event_id, p = _read_segment_event(data, p, actions)
    except _FAILURES:
        return None
    if p != len(data) - 1 or data[p] != 0:  # only the empty context map, and nothing after it
        return None
    return user_id, item_id, action, event_time_ms, weight, event_id, data[fields_start:p]


def decode_behaviour_event(data: bytes, start: int, actions: tuple[str, ...]) -> dict[str, Any] | None:
    """BehaviourEvent with an empty context map, else None."""
    fields = read_behaviour_event(actions, data[:start], data)
    if fields is None:
        return None
    user_id, item_id, action, event_time_ms, weight, event_id, _ = fields
    return {
        "user_id": user_id,
        "item_id": item_id,
        "action": action,
        "event_time_ms": event_time_ms,
        "weight": weight,
        "event_id": event_id,
        "context": {},
    }


# A ClosedSegment with its events as columns: segment_id, user_id, window_start_ms, window_end_ms,
# ordinal, close_reason, then item ids, action indexes (into the actions given), event times,
# weights and event ids, one entry an event, then source_partition, first_offset, last_offset.
SegmentColumnsTuple = tuple[
    str, str, int, int, int, str,
    list[str], list[int], list[int], list[float | None], list[str | None],
    int, int, int,
]  # fmt: skip


def read_closed_segment_columns(
    data: bytes,
    start: int,
    actions: tuple[str, ...],
    action_index: dict[str, int],
    reasons: tuple[str, ...],
) -> SegmentColumnsTuple | None:
    """ClosedSegment as columns, else None: what the encoder stage merges and encodes, without a
    dict per event (6.5 us for a segment of 5.6 events where decode_closed_segment's dicts took
    8.8). Its events are most of its bytes and of the time: each is read by _read_segment_event,
    inline where its fields have their usual shape."""
    try:
        segment_id, p = _read_string(data, start)
        user_id, p = _read_string(data, p)
        window_start_ms, p = _read_long(data, p)
        window_end_ms, p = _read_long(data, p)
        ordinal, p = _read_long(data, p)  # an Avro int: fastavro reads it as a long too
        reason, p = _read_index(data, p, len(reasons))
        item_ids: list[str] = []
        action_ids: list[int] = []
        times: list[int] = []
        weights: list[float | None] = []
        event_ids: list[str | None] = []
        while True:
            count, p = _read_long(data, p)
            if count == 0:
                break
            if count < 0:  # a block that also gives its size in bytes
                _, p = _read_long(data, p)
                count = -count
            for _ in range(count):
                item_id, action, event_time_ms, weight, event_id, p = _read_segment_event(data, p, actions)
                item_ids.append(item_id)
                action_ids.append(action_index[action])
                times.append(event_time_ms)
                weights.append(weight)
                event_ids.append(event_id)
        source_partition, p = _read_long(data, p)
        first_offset, p = _read_long(data, p)
        last_offset, p = _read_long(data, p)
    except _FAILURES:
        return None
    if p != len(data):
        return None
    return (
        *(segment_id, user_id, window_start_ms, window_end_ms, ordinal, reasons[reason]),
        *(item_ids, action_ids, times, weights, event_ids),
        *(source_partition, first_offset, last_offset),
    )


def decode_closed_segment(
    data: bytes, start: int, actions: tuple[str, ...], action_index: dict[str, int], reasons: tuple[str, ...]
) -> dict[str, Any] | None:
    """ClosedSegment, else None: read_closed_segment_columns' columns as the record."""
    columns = read_closed_segment_columns(data, start, actions, action_index, reasons)
    return None if columns is None else closed_segment_record(columns, actions)


def closed_segment_record(columns: SegmentColumnsTuple, actions: tuple[str, ...]) -> dict[str, Any]:
    """The ClosedSegment record of a segment's columns, as fastavro gives it."""
    segment_id, user_id, window_start_ms, window_end_ms, ordinal, close_reason = columns[:6]
    item_ids, action_ids, times, weights, event_ids = columns[6:11]
    source_partition, first_offset, last_offset = columns[11:]
    return {
        "segment_id": segment_id,
        "user_id": user_id,
        "window_start_ms": window_start_ms,
        "window_end_ms": window_end_ms,
        "ordinal": ordinal,
        "close_reason": close_reason,
        "events": [
            {
                "item_id": item_id,
                "action": actions[action],
                "event_time_ms": event_time_ms,
                "weight": weight,
                "event_id": event_id,
            }
            for item_id, action, event_time_ms, weight, event_id in zip(
                item_ids, action_ids, times, weights, event_ids, strict=True
            )
        ],
        "source_partition": source_partition,
        "first_offset": first_offset,
        "last_offset": last_offset,
    }


# --- writing -----------------------------------------------------------------------------------------
# Varints from tables, 14 bits (two bytes) at a time: _LAST[z] is the varint of z < 2**14, and
# _PAIR[z] z's two 7-bit groups, both marked to be continued. An event time's six bytes take
# 0.67 us this way against 1.23 us appended byte by byte, an offset's three 0.42 against 0.76.
# The two tables hold about 1 MB.
_LAST = [bytes((z,)) if z < 0x80 else bytes((z & 0x7F | 0x80, z >> 7)) for z in range(1 << 14)]
_PAIR = [bytes((z & 0x7F | 0x80, z >> 7 | 0x80)) for z in range(1 << 14)]


def _long(n: Any, low: int = _LONG_MIN, high: int = _LONG_MAX) -> bytes:
    if type(n) is not int or not low <= n <= high:
        raise _Unusual
    z = (n << 1) ^ (n >> 63)  # zigzag
    if z < 0x4000:
        return _LAST[z]
    out = b""
    while z >= 0x4000:
        out += _PAIR[z & 0x3FFF]
        z >>= 14
    return out + _LAST[z]


_N_NATURAL = 8192
_NATURAL = [_long(n) for n in range(_N_NATURAL)]  # the one- and two-byte varints: lengths, small counts


def _length(n: int) -> bytes:
    """A length or an array's count (never negative)."""
    return _NATURAL[n] if n < _N_NATURAL else _long(n)


def _string(s: Any) -> bytes:
    if type(s) is not str:
        raise _Unusual
    raw = s.encode()
    return _length(len(raw)) + raw


def _bytes(raw: Any) -> bytes:
    if type(raw) is not bytes:
        raise _Unusual
    return _length(len(raw)) + raw


_NULL = b"\x00"
_SOME = b"\x02"


def _closed_segment_head(
    segment_id: Any, user_id: Any, window_start_ms: Any, window_end_ms: Any, ordinal: Any
) -> list[bytes]:
    return [
        _string(segment_id),
        _string(user_id),
        _long(window_start_ms),
        _long(window_end_ms),
        _long(ordinal, _INT_MIN, _INT_MAX),
    ]


def _closed_segment_tail(source_partition: Any, first_offset: Any, last_offset: Any) -> list[bytes]:
    return [_long(source_partition, _INT_MIN, _INT_MAX), _long(first_offset), _long(last_offset)]


def _append_event(
    parts: list[bytes],
    item_id: Any,
    action: Any,
    event_time_ms: Any,
    weight: Any,
    event_id: Any,
    action_bytes: dict[str, bytes],
) -> None:
    """Append a SegmentEvent's encoding to parts."""
    parts.append(_string(item_id))
    parts.append(action_bytes[action])
    parts.append(_long(event_time_ms))
    if weight is None:
        parts.append(_NULL)
    elif type(weight) is float:
        parts.append(_SOME + _FLOAT.pack(weight))
    else:
        raise _Unusual
    parts.append(_NULL if event_id is None else _SOME + _string(event_id))


_ENCODE_FAILURES = (_Unusual, KeyError, TypeError, UnicodeEncodeError, OverflowError, struct.error)


def encode_closed_segment(
    record: Any, action_bytes: dict[str, bytes], reason_bytes: dict[str, bytes]
) -> bytes | None:
    """ClosedSegment bytes for a record of exactly the schema's fields and plain types, else None."""
    try:
        if type(record) is not dict or len(record) != 10:
            raise _Unusual
        parts = _closed_segment_head(
            record["segment_id"],
            record["user_id"],
            record["window_start_ms"],
            record["window_end_ms"],
            record["ordinal"],
        )
        parts.append(reason_bytes[record["close_reason"]])
        events = record["events"]
        if type(events) is not list:
            raise _Unusual
        if events:
            parts.append(_long(len(events)))
            for e in events:
                if type(e) is not dict or len(e) != 5:
                    raise _Unusual
                _append_event(
                    parts,
                    e["item_id"],
                    e["action"],
                    e["event_time_ms"],
                    e["weight"],
                    e["event_id"],
                    action_bytes,
                )
        parts.append(_NULL)  # end of the events array
        parts += _closed_segment_tail(
            record["source_partition"], record["first_offset"], record["last_offset"]
        )
    except _ENCODE_FAILURES:
        return None
    return b"".join(parts)


def encode_closed_segment_parts(
    head: Sequence[Any], event_bytes: list[bytes], reason_bytes: dict[str, bytes]
) -> bytes | None:
    """ClosedSegment bytes from the record's other fields in the schema's order (segment_id,
    user_id, window_start_ms, window_end_ms, ordinal, close_reason, source_partition,
    first_offset, last_offset) and its events' encodings (encode_segment_event's, or cut from
    their BehaviourEvents by segment_event_bytes): those are copied, not encoded again. None if
    unusual."""
    try:
        segment_id, user_id, window_start_ms, window_end_ms, ordinal, reason, partition, first, last = head
        parts = _closed_segment_head(segment_id, user_id, window_start_ms, window_end_ms, ordinal)
        parts.append(reason_bytes[reason])
        if event_bytes:
            parts.append(_long(len(event_bytes)))
            parts += event_bytes
        parts.append(_NULL)  # end of the events array
        parts += _closed_segment_tail(partition, first, last)
    except (*_ENCODE_FAILURES, ValueError):
        return None
    return b"".join(parts)


def encode_segment_event(
    item_id: Any, action: Any, event_time_ms: Any, weight: Any, event_id: Any, action_bytes: dict[str, bytes]
) -> bytes | None:
    """One SegmentEvent's bytes, or None if a value is unusual."""
    parts: list[bytes] = []
    try:
        _append_event(parts, item_id, action, event_time_ms, weight, event_id, action_bytes)
    except _ENCODE_FAILURES:
        return None
    return b"".join(parts)


def segment_event_bytes(data: bytes, start: int) -> bytes:
    """The SegmentEvent encoding inside the bytes of a BehaviourEvent whose context map is empty
    (the caller has decoded them and checked that): its fields from item_id to event_id are a
    SegmentEvent's fields with the same types in the same order (checked once by
    `segment_event_fields_match`), so they are the bytes between user_id and the map's one
    terminating zero. The segmenter passes them through instead of encoding each event again."""
    b = data[start]
    if b < 0x80:  # user ids shorter than 64 bytes: a one-byte length
        return data[start + 1 + (b >> 1) : -1]
    n, p = _read_long(data, start)
    return data[p + n : -1]


def segment_event_fields_match(behaviour_event: dict[str, Any], closed_segment: dict[str, Any]) -> bool:
    """Whether BehaviourEvent's fields after user_id and before context are, name and type,
    a ClosedSegment's SegmentEvent fields (parsed schemas): what `segment_event_bytes` relies on."""
    fields = [(f["name"], _shape(f["type"])) for f in behaviour_event["fields"]]
    (events,) = (f for f in closed_segment["fields"] if f["name"] == "events")
    inner = [(f["name"], _shape(f["type"])) for f in events["type"]["items"]["fields"]]
    context = ("context", {"type": "map", "values": "string"})
    return fields[0] == ("user_id", "string") and fields[-1] == context and fields[1:-1] == inner


def _shape(avro_type: Any) -> Any:
    """A parsed Avro type, comparable between schemas: a named type by its name (it appears in full
    where it is defined and by name after that), {"type": "long"} as "long", docs and defaults
    dropped."""
    if isinstance(avro_type, dict):
        if avro_type.get("type") in ("enum", "record", "fixed"):
            return avro_type.get("name")
        shape = {k: _shape(v) for k, v in avro_type.items() if k not in ("doc", "default")}
        return shape["type"] if shape.keys() == {"type"} else shape
    if isinstance(avro_type, list):
        return [_shape(t) for t in avro_type]
    return avro_type


# UserRepresentation: the encoder stage writes one per user per micro-batch. Its cost is in the
# per-field work, so the common values take table lookups and whole-field arithmetic instead of
# the generic helpers above.
_TAG = tuple(chr(n << 1) for n in range(64))  # an ASCII string's one-byte length, as a character
_COUNT_WEIGHT = struct.Struct("<Bf")  # a SegmentVector's event_count below 64 and its weight
# Longs from 2**34 to 2**41 - 1 (milliseconds from July 1970 to September 2039, every timestamp a
# representation holds) are six-byte varints: zigzag doubles them to 42 bits, six 7-bit groups.
# A SegmentVector's three timestamps are written as one bytes() of their eighteen groups: compiled
# (schemas/compiled.py) in 0.55 us against 1.5 for the same groups computed in three 48-bit lanes of
# one int, whose arithmetic on 144 bits mypyc leaves to Python's ints (interpreted, the lanes take
# 1.0 us and this 1.9). Final: compiled code reads the bounds as constants, not module globals.
_SIX_BYTE_MIN: Final = 2**34
_SIX_BYTE_MAX: Final = 2**41


def _three_timestamps(a: Any, b: Any, c: Any) -> bytes:
    """_long(a) + _long(b) + _long(c), byte for byte."""
    if (
        type(a) is int
        and type(b) is int
        and type(c) is int
        and _SIX_BYTE_MIN <= a < _SIX_BYTE_MAX
        and _SIX_BYTE_MIN <= b < _SIX_BYTE_MAX
        and _SIX_BYTE_MIN <= c < _SIX_BYTE_MAX
    ):
        x: int = a << 1  # zigzag, of a positive value
        y: int = b << 1
        z: int = c << 1
        # One tuple display: unpacking three tuples into it took 1.3 us compiled.
        return bytes(
            (
                x & 0x7F | 0x80,
                x >> 7 & 0x7F | 0x80,
                x >> 14 & 0x7F | 0x80,
                x >> 21 & 0x7F | 0x80,
                x >> 28 & 0x7F | 0x80,
                x >> 35,
                y & 0x7F | 0x80,
                y >> 7 & 0x7F | 0x80,
                y >> 14 & 0x7F | 0x80,
                y >> 21 & 0x7F | 0x80,
                y >> 28 & 0x7F | 0x80,
                y >> 35,
                z & 0x7F | 0x80,
                z >> 7 & 0x7F | 0x80,
                z >> 14 & 0x7F | 0x80,
                z >> 21 & 0x7F | 0x80,
                z >> 28 & 0x7F | 0x80,
                z >> 35,
            )
        )
    return _long(a) + _long(b) + _long(c)


def encode_user_representation(record: Any) -> bytes | None:
    """UserRepresentation bytes for a record of exactly the schema's fields and plain types, else
    None."""
    if type(record) is not dict or len(record) != 7:
        return None
    try:
        segments = record["segments"]
        if type(segments) is not list:
            return None
        fields = []
        vectors = []
        for seg in segments:
            if type(seg) is not dict or len(seg) != 7:
                return None
            fields.append(
                (
                    seg["segment_id"],
                    seg["window_start_ms"],
                    seg["window_end_ms"],
                    seg["last_event_ms"],
                    seg["event_count"],
                    seg["weight"],
                )
            )
            vectors.append(seg["vector"])
        return encode_user_representation_parts(
            record["user_id"],
            record["model_version"],
            record["dim"],
            fields,
            vectors,
            record["fused"],
            record["updated_at_ms"],
            record["seen_item_ids"],
        )
    except KeyError:
        return None


def encode_user_representation_parts(
    user_id: Any,
    model_version: Any,
    dim: Any,
    segments: list[Any],
    vectors: list[Any],
    fused: Any,
    updated_at_ms: Any,
    seen_item_ids: Any,
) -> bytes | None:
    """UserRepresentation bytes from its fields, else None where one is of an unusual type or
    range. `segments` holds each SegmentVector's fields but its vector, in the schema's order
    (segment id, window start, window end, last event time, event count, weight), and `vectors`
    their vectors. The seen item ids are encoded as one string where all are ASCII and shorter
    than 64 characters."""
    try:
        if len(segments) != len(vectors) or type(seen_item_ids) is not list:
            raise _Unusual
        out = bytearray(_string(user_id))
        out += _string(model_version)
        out += _NATURAL[dim] if type(dim) is int and 0 <= dim < _N_NATURAL else _long(dim, _INT_MIN, _INT_MAX)
        if segments:
            out += _length(len(segments))
            for i in range(len(segments)):
                segment_id, window_start_ms, window_end_ms, last_event_ms, n, w = segments[i]
                out += _string(segment_id)
                out += _three_timestamps(window_start_ms, window_end_ms, last_event_ms)
                if type(w) is not float:
                    raise _Unusual
                if type(n) is int and 0 <= n < 64:
                    out += _COUNT_WEIGHT.pack(n << 1, w)
                else:
                    out += _long(n, _INT_MIN, _INT_MAX)
                    out += _FLOAT.pack(w)
                out += _bytes(vectors[i])
        out.append(0)  # end of the segments array
        out += _bytes(fused)
        out += _long(updated_at_ms)
        if seen_item_ids:
            out += _length(len(seen_item_ids))
            try:
                tagged = [_TAG[len(s)] + s for s in seen_item_ids if type(s) is str]
            except IndexError:  # 64 characters or more
                tagged = []
            text = "".join(tagged)
            if len(tagged) == len(seen_item_ids) and text.isascii():  # then every length is its byte count
                out += text.encode()
            else:
                for s in seen_item_ids:
                    out += _string(s)
        out.append(0)  # end of the seen_item_ids array
    except (*_ENCODE_FAILURES, IndexError, ValueError):
        return None
    return bytes(out)


def symbol_bytes(symbols: tuple[str, ...]) -> dict[str, bytes]:
    """Each enum symbol's encoding: its index."""
    return {s: _long(i) for i, s in enumerate(symbols)}


def symbol_indexes(symbols: tuple[str, ...]) -> dict[str, int]:
    """Each enum symbol's index."""
    return {symbol: i for i, symbol in enumerate(symbols)}


def decoder(
    schema_name: str, actions: tuple[str, ...], reasons: tuple[str, ...]
) -> Callable[[bytes, int], dict[str, Any] | None] | None:
    """The fast decoder of `schema_name`'s bodies (from a start offset), if there is one."""
    if schema_name == "BehaviourEvent":
        return lambda data, start: decode_behaviour_event(data, start, actions)
    if schema_name == "ClosedSegment":
        action_index = symbol_indexes(actions)
        return lambda data, start: decode_closed_segment(data, start, actions, action_index, reasons)
    return None


def encoder(
    schema_name: str, actions: tuple[str, ...], reasons: tuple[str, ...]
) -> Callable[[Any], bytes | None] | None:
    """The fast encoder of `schema_name`'s bodies, if there is one."""
    if schema_name == "ClosedSegment":
        action_bytes, reason_bytes = symbol_bytes(actions), symbol_bytes(reasons)
        return lambda record: encode_closed_segment(record, action_bytes, reason_bytes)
    if schema_name == "UserRepresentation":
        return encode_user_representation
    return None
