"""Recency weights and fusion: event-time based, normalised, deterministic."""

from __future__ import annotations

import numpy as np

from schemas import AvroCodec
from store import StoredSegment
from streams.fuser import fuse, fuse_many, recency_weights, representation_record, representation_records

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


def one_user_alone(
    last_event_ms: list[int], vectors: np.ndarray, half_life_ms: float
) -> tuple[np.ndarray, np.ndarray]:
    """The definition, for one user: weights as recency_weights says, then the float32 sum of
    weight x vector in segment order, as numpy adds a (K, d) array's rows."""
    times = np.asarray(last_event_ms, dtype=np.float64)
    raw = np.exp2(-(times.max() - times) / half_life_ms)
    weights = (raw / raw.sum()).astype(np.float32)
    return weights, (weights[:, None] * vectors).sum(axis=0, dtype=np.float32)


def test_fusing_many_users_at_once_gives_each_the_bits_it_gets_alone() -> None:
    rng = np.random.default_rng(7)
    for dim in (8, 64, 512):
        counts = rng.integers(1, 17, size=60)  # 8 and more: sums go pairwise inside numpy
        times = [list(rng.integers(0, 30 * DAY, size=n)) for n in counts]
        vectors = [rng.standard_normal((n, dim)).astype(np.float32) for n in counts]
        vectors[0][:] = -0.0  # a user whose every product is -0.0 fuses to +0.0, as alone
        vectors[1][rng.random(vectors[1].shape) < 0.3] = -0.0
        weights, fused = fuse_many(times, vectors, half_life_ms=DAY)
        for u in range(len(counts)):
            alone_weights, alone_fused = one_user_alone(times[u], vectors[u], DAY)
            assert weights[u].tobytes() == alone_weights.tobytes()
            assert fused[u].tobytes() == alone_fused.tobytes()


def test_many_records_at_once_equal_each_record_alone() -> None:
    codec = AvroCodec("UserRepresentation")
    older = StoredSegment("a", DAY, 2 * DAY, 0, DAY + 5, 3, np.full(4, 0.5, np.float32), ("x",))
    newer = StoredSegment("a", 2 * DAY, 3 * DAY, 0, 2 * DAY + 9, 2, np.arange(4, dtype=np.float32), ("y",))
    lone = StoredSegment("b", DAY, 2 * DAY, 0, DAY + 7, 1, np.ones(4, np.float32), ("z",))
    batch = representation_records(["a", "b"], "m-1", [[newer, older], [lone]], DAY)
    assert [codec.encode(r) for r in batch] == [
        codec.encode(representation_record("a", "m-1", [newer, older], DAY)),
        codec.encode(representation_record("b", "m-1", [lone], DAY)),
    ]
    assert representation_records([], "m-1", [], DAY) == []
