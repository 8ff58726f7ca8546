"""From an event log to the state a worker must end with: segments, vectors, representations.

`expect()` takes the events topic as read back from Kafka (partition -> [(offset, raw bytes)]),
sorts bad records out, applies the closing rules per partition and the store's merge, encodes every
final segment with the model the worker runs (bit-identical on CPU whatever the batch), quantizes
it as the store does, and fuses each user's newest K. `store_differences` and `topic_differences`
then list, in words, every way a worker's store or output topic departs from that.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from encoders import SegmentBatchEncoder, SegmentInput
from oracle.closing import Rules, close_partition, identity
from oracle.merge import merge
from schemas import AvroCodec, SchemaError
from store import RocksDBVectorStore, quantize

_EVENTS = AvroCodec("BehaviourEvent")
_SEGMENTS = AvroCodec("ClosedSegment")


@dataclass
class Segment:
    user: str
    window: int
    ordinal: int
    events: list[dict[str, Any]]
    vector: np.ndarray

    @property
    def newest(self) -> int:
        return max(e["event_time_ms"] for e in self.events)


@dataclass
class Expected:
    """What the worker must end with, and what it must have refused."""

    segments: dict[str, list[Segment]]  # user -> segments by (window, ordinal)
    dead_letters: Counter[str] = field(default_factory=Counter)  # reason -> records
    dead_letter_offsets: dict[tuple[int, int], str] = field(default_factory=dict)  # events (p, offset)
    duplicates: int = 0
    open_events: int = 0
    events: int = 0  # valid events
    closed_records: int = 0  # closed-segments records a run without crashes sends

    def representation(self, user: str, rules: Rules) -> dict[str, Any]:
        """The user's newest K segments (newest first), recency weights and fused vector."""
        newest = sorted(self.segments[user], key=lambda s: (s.window, s.ordinal), reverse=True)[: rules.top_k]
        times = np.array([s.newest for s in newest], dtype=np.float64)
        raw = 2.0 ** (-(times.max() - times) / rules.half_life_ms)
        weights = raw / raw.sum()
        fused = sum(w * s.vector.astype(np.float64) for w, s in zip(weights, newest, strict=True))
        return {"segments": newest, "weights": weights, "fused": fused, "updated_at_ms": int(times.max())}


def classify(value: bytes | None, rules: Rules, now_ms: int) -> dict[str, Any] | str:
    """The event a record holds, or why it must be dead-lettered."""
    if value is None:
        return "undecodable"
    if len(value) > rules.max_record_bytes:
        return "oversized"
    try:
        event = _EVENTS.decode(value)
    except SchemaError:
        return "undecodable"
    if not event["user_id"] or "\x00" in event["user_id"]:
        return "missing-user"
    if not event["item_id"] or "\x00" in event["item_id"]:
        return "missing-item"
    if event["event_time_ms"] < 0:
        return "bad-timestamp"
    if event["event_time_ms"] > now_ms + rules.max_future_ms:
        return "future-timestamp"
    if event["weight"] is not None and not math.isfinite(event["weight"]):
        return "bad-weight"
    return event


def expect(
    log: Mapping[int, Sequence[tuple[int, bytes | None]]],
    rules: Rules,
    encoder: SegmentBatchEncoder,
    *,
    now_ms: int,
    vector_dtype: str = "float16",
) -> Expected:
    """The oracle: events topic in, the worker's promised end state out."""
    closed = []
    expected = Expected(segments={})
    for partition in sorted(log):
        valid = []
        for offset, value in log[partition]:
            event = classify(value, rules, now_ms)
            if isinstance(event, str):
                expected.dead_letters[event] += 1
                expected.dead_letter_offsets[(partition, offset)] = event
            else:
                valid.append((offset, event))
        outcome = close_partition(valid, rules)
        closed += outcome.closed
        for offset, reason in outcome.dead_letters:
            expected.dead_letters[reason] += 1
            expected.dead_letter_offsets[(partition, offset)] = reason
        expected.duplicates += outcome.duplicates
        expected.open_events += outcome.open_events
        expected.events += len(valid)
    expected.closed_records = len(closed)
    windows, capped = merge(closed, rules)
    if capped:
        expected.dead_letters["segment-cap"] += capped
    keys = [(user, window, o) for (user, window), segs in sorted(windows.items()) for o in range(len(segs))]
    inputs = [_segment_input(windows[(u, w)][o]) for u, w, o in keys]
    vectors = quantize(encoder.encode(inputs), vector_dtype) if inputs else []
    for (user, window, ordinal), vector in zip(keys, vectors, strict=True):
        segment = Segment(user, window, ordinal, windows[(user, window)][ordinal], vector)
        expected.segments.setdefault(user, []).append(segment)
    return expected


def _segment_input(events: list[dict[str, Any]]) -> SegmentInput:
    """The encoder sees a segment's events by event time; equal times keep their stored order."""
    return SegmentInput.from_events(sorted(events, key=lambda e: e["event_time_ms"]))


def store_differences(
    expected: Expected,
    store: RocksDBVectorStore,
    model_version: str,
    rules: Rules,
    users: set[str] | None = None,
) -> list[str]:
    """Every way the store departs from the oracle, for `users` (default: all), in words."""
    problems = []
    wanted = set(expected.segments) if users is None else users & set(expected.segments)
    stored_users = set(store.representation_users(model_version))
    extra = (stored_users - set(expected.segments)) if users is None else (stored_users & users) - wanted
    problems += [f"{u}: in the store, but the oracle has no segment for it" for u in sorted(extra)]
    rep_codec = AvroCodec("UserRepresentation")
    for user in sorted(wanted):
        mine = expected.segments[user]
        stored = {
            (s.window_start_ms, s.ordinal): s for s in store.newest_segments(model_version, user, 10**9)
        }
        want = {(s.window, s.ordinal): s for s in mine}
        for key in sorted(set(want) - set(stored)):
            problems.append(f"{user}: segment {key} missing")
        for key in sorted(set(stored) - set(want)):
            problems.append(f"{user}: segment {key} is extra ({stored[key].event_count} events)")
        for key in sorted(set(want) & set(stored)):
            events = dict(store.window_segment_events(user, key[0])).get(key[1])
            got = [identity(e) for e in _SEGMENTS.decode(events)["events"]] if events else None
            if got != [identity(e) for e in want[key].events]:
                problems.append(
                    f"{user}: segment {key} holds {got}, oracle {[identity(e) for e in want[key].events]}"
                )
            elif not np.array_equal(stored[key].vector, want[key].vector):
                problems.append(f"{user}: segment {key} vector differs from the oracle's")
        value = store.representation(model_version, user)
        if value is None:
            problems.append(f"{user}: no representation")
        else:
            problems += representation_differences(user, rep_codec.decode(value), expected, rules)
    return problems


def representation_differences(
    user: str, record: dict[str, Any], expected: Expected, rules: Rules
) -> list[str]:
    """How a UserRepresentation record departs from the oracle's (vectors exact, weights to 1e-6)."""
    want = expected.representation(user, rules)
    ids = [s["segment_id"] for s in record["segments"]]
    want_ids = [f"{user}:{s.window}:{s.ordinal}" for s in want["segments"]]
    if ids != want_ids:
        return [f"{user}: representation has segments {ids}, oracle {want_ids}"]
    problems = []
    for s, mine in zip(record["segments"], want["segments"], strict=True):
        if not np.array_equal(np.frombuffer(s["vector"], "<f4"), mine.vector):
            problems.append(f"{user}: representation vector of {s['segment_id']} differs")
        if s["event_count"] != len(mine.events) or s["last_event_ms"] != mine.newest:
            problems.append(f"{user}: representation metadata of {s['segment_id']} differs")
    weights = np.array([s["weight"] for s in record["segments"]])
    if not np.allclose(weights, want["weights"], rtol=0, atol=1e-6):
        problems.append(f"{user}: recency weights {weights} differ from the oracle's {want['weights']}")
    if not np.allclose(np.frombuffer(record["fused"], "<f4"), want["fused"], rtol=0, atol=1e-5):
        problems.append(f"{user}: fused vector differs from the oracle's")
    if record["updated_at_ms"] != want["updated_at_ms"]:
        problems.append(f"{user}: updated_at_ms {record['updated_at_ms']}, oracle {want['updated_at_ms']}")
    return problems


def topic_differences(expected: Expected, latest: Mapping[str, bytes], rules: Rules) -> list[str]:
    """How the output topic's last record per user departs from the oracle."""
    codec = AvroCodec("UserRepresentation")
    problems = [f"{u}: no representation published" for u in sorted(set(expected.segments) - set(latest))]
    problems += [
        f"{u}: published, but the oracle has no segment" for u in sorted(set(latest) - set(expected.segments))
    ]
    for user in sorted(set(latest) & set(expected.segments)):
        problems += representation_differences(user, codec.decode(latest[user]), expected, rules)
    return problems
