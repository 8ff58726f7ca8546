"""Fuse a user's newest K segment vectors into a representation: recency weights and one vector."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from store import StoredSegment

__all__ = ["fuse", "recency_weights", "representation_record", "seen_item_ids"]


def recency_weights(last_event_ms: Sequence[int], half_life_ms: float) -> np.ndarray:
    """Halve a segment's weight per half-life of event time behind the newest one; sum to 1.

    Event time, not the wall clock, so a replay computes the same weights as the live run.
    """
    times = np.asarray(last_event_ms, dtype=np.float64)
    raw = np.exp2(-(times.max() - times) / half_life_ms)
    return (raw / raw.sum()).astype(np.float32)


def fuse(
    segments: Sequence[StoredSegment], half_life_ms: float, vectors: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(weights (K,), fused (d,)) for segments given newest first; fused is the weighted mean of
    `vectors` (K, d): the segments' contextual vectors (encoders.context), or by default their own."""
    weights = recency_weights([s.last_event_ms for s in segments], half_life_ms)
    if vectors is None:
        vectors = np.array([s.vector for s in segments])  # (K, d)
    fused = (weights[:, None] * vectors).sum(axis=0, dtype=np.float32)  # (d,)
    return weights, fused


def representation_record(
    user_id: str,
    model_version: str,
    segments: Sequence[StoredSegment],
    half_life_ms: float,
    vectors: np.ndarray | None = None,
) -> dict[str, Any]:
    """The UserRepresentation record for segments given newest first (at least one), carrying
    `vectors` (K, d) (contextual ones; by default the segments' stored vectors)."""
    if vectors is None:
        vectors = np.array([s.vector for s in segments])  # (K, d)
    weights, fused = fuse(segments, half_life_ms, vectors)
    raw = np.ascontiguousarray(vectors, dtype="<f4").tobytes()  # one copy, sliced per segment
    size = len(raw) // len(segments)
    return {
        "user_id": user_id,
        "model_version": model_version,
        "dim": int(fused.shape[0]),
        "segments": [
            {
                "segment_id": s.segment_id,
                "window_start_ms": s.window_start_ms,
                "window_end_ms": s.window_end_ms,
                "last_event_ms": s.last_event_ms,
                "event_count": s.event_count,
                "weight": float(w),
                "vector": raw[i * size : (i + 1) * size],
            }
            for i, (s, w) in enumerate(zip(segments, weights, strict=True))
        ],
        "fused": np.asarray(fused, dtype="<f4").tobytes(),
        "updated_at_ms": max(s.last_event_ms for s in segments),
        "seen_item_ids": seen_item_ids(segments),
    }


def seen_item_ids(segments: Sequence[StoredSegment]) -> list[str]:
    """The items the segments hold, each once, newest segment first: the candidates a ranker gives
    the model's seen-item score (encoders.scoring.candidate_bias)."""
    return list(dict.fromkeys(item for s in segments for item in s.item_ids))
