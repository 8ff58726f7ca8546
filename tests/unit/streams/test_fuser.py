"""Recency weights and fusion: event-time based, normalised, deterministic."""

from __future__ import annotations

import numpy as np

from schemas import AvroCodec
from store import StoredSegment
from streams.fuser import fuse, recency_weights, representation_record

DAY = 86_400_000


def seg(window: int, last: int, vector: list[float]) -> StoredSegment:
    return StoredSegment("u", window, window + DAY, 0, last, 2, np.array(vector, dtype=np.float32))


def test_weights_halve_per_half_life_and_sum_to_one() -> None:
    w = recency_weights([10 * DAY, 9 * DAY, 8 * DAY], half_life_ms=DAY)
    assert np.allclose(w, np.array([4, 2, 1]) / 7)
    assert w.dtype == np.float32 and abs(float(w.sum()) - 1) < 1e-6


def test_fused_is_the_weighted_mean_and_the_record_encodes() -> None:
    segments = [seg(2 * DAY, 2 * DAY + 5, [1.0, 0.0]), seg(DAY, DAY + 5, [0.0, 1.0])]
    weights, fused = fuse(segments, half_life_ms=DAY)
    assert np.allclose(fused, weights[0] * np.array([1, 0]) + weights[1] * np.array([0, 1]))
    record = representation_record("u", "m-1", segments, half_life_ms=DAY)
    assert record["updated_at_ms"] == 2 * DAY + 5
    assert [s["segment_id"] for s in record["segments"]] == ["u:172800000:0", "u:86400000:0"]
    codec = AvroCodec("UserRepresentation")
    assert codec.encode(record) == codec.encode(representation_record("u", "m-1", segments, half_life_ms=DAY))
    assert np.array_equal(np.frombuffer(codec.decode(codec.encode(record))["fused"], dtype="<f4"), fused)


def test_seen_item_ids_hold_each_item_once_newest_segment_first() -> None:
    older = StoredSegment("u", DAY, 2 * DAY, 0, DAY + 5, 3, np.ones(2, np.float32), ("a", "b", "a"))
    newer = StoredSegment("u", 2 * DAY, 3 * DAY, 0, 2 * DAY + 5, 2, np.ones(2, np.float32), ("c", "a"))
    record = representation_record("u", "m-1", [newer, older], half_life_ms=DAY)
    assert record["seen_item_ids"] == ["c", "a", "b"]
    assert AvroCodec("UserRepresentation").decode(AvroCodec("UserRepresentation").encode(record)) == record
