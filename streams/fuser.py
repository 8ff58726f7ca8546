"""Fuse a user's newest K segment vectors into a representation: recency weights and one vector.

The encoder stage fuses every user a micro-batch touched at once (`representation_records`): a
dozen numpy calls per batch instead of a dozen per user, which cost 7 us a user. Each user's
result is bit for bit what fusing that user alone gives, so a representation never depends on its
batch and a replay publishes the same bytes.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import numpy as np

from store import StoredSegment

__all__ = [
    "fuse",
    "fuse_many",
    "recency_weights",
    "representation_record",
    "representation_records",
    "seen_item_ids",
]


def recency_weights(last_event_ms: Sequence[int], half_life_ms: float) -> np.ndarray:
    """Halve a segment's weight per half-life of event time behind the newest one; sum to 1.

    Event time, not the wall clock, so a replay computes the same weights as the live run.
    """
    weights, _ = _recency_weights_many([last_event_ms], half_life_ms)
    return weights


def fuse(
    segments: Sequence[StoredSegment], half_life_ms: float, vectors: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(weights (K,), fused (d,)) for segments given newest first; fused is the weighted mean of
    `vectors` (K, d): the segments' contextual vectors (encoders.context), or by default their own."""
    if vectors is None:
        vectors = np.array([s.vector for s in segments])  # (K, d)
    weights, fused = fuse_many([[s.last_event_ms for s in segments]], [vectors], half_life_ms)
    return weights[0], fused[0]


def fuse_many(
    last_event_ms: Sequence[Sequence[int]], vectors: Sequence[np.ndarray], half_life_ms: float
) -> tuple[list[np.ndarray], np.ndarray]:
    """fuse() for many users at once: (each user's weights (n,), fused (users, d)).

    Each fused vector is the sum, in segment order from zero, of weight x vector in float32, as
    `(w[:, None] * v).sum(axis=0, dtype=np.float32)` adds it for one user. Summing the padded
    batch column by column keeps that order; the padding adds exact zeros (a sum that starts at
    +0.0 is never -0.0, the one value adding 0.0 would change).
    """
    flat, counts = _recency_weights_many(last_event_ms, half_life_ms)
    products = flat[:, None] * np.concatenate(vectors)  # (segments, d) float32
    ends = np.cumsum(counts)
    users = np.repeat(np.arange(len(counts)), counts)
    positions = np.arange(len(flat)) - np.repeat(ends - counts, counts)
    padded = np.zeros((len(counts), int(counts.max()), products.shape[1]), dtype=np.float32)
    padded[users, positions] = products
    fused = np.zeros((len(counts), products.shape[1]), dtype=np.float32)
    for column in range(padded.shape[1]):
        fused += padded[:, column]
    return np.split(flat, ends[:-1]), fused


def _recency_weights_many(
    last_event_ms: Sequence[Sequence[int]], half_life_ms: float
) -> tuple[np.ndarray, np.ndarray]:
    """(every user's weights, concatenated (segments,) float32; each user's count (users,))."""
    counts = np.fromiter(map(len, last_event_ms), dtype=np.intp, count=len(last_event_ms))
    ends = np.cumsum(counts)
    starts = ends - counts
    times = np.fromiter(itertools.chain.from_iterable(last_event_ms), dtype=np.float64, count=int(ends[-1]))
    raw = np.exp2(-(np.repeat(np.maximum.reduceat(times, starts), counts) - times) / half_life_ms)
    # Each user's total as one array's sum() adds it (pairwise from 8 values on); reduceat's order
    # differs in the last bit.
    totals = np.array([raw[a:b].sum() for a, b in zip(starts.tolist(), ends.tolist(), strict=True)])
    return (raw / np.repeat(totals, counts)).astype(np.float32), counts


def representation_record(
    user_id: str,
    model_version: str,
    segments: Sequence[StoredSegment],
    half_life_ms: float,
    vectors: np.ndarray | None = None,
) -> dict[str, Any]:
    """The UserRepresentation record for segments given newest first (at least one), carrying
    `vectors` (K, d) (contextual ones; by default the segments' stored vectors)."""
    vectors_per_user = None if vectors is None else [vectors]
    return representation_records([user_id], model_version, [segments], half_life_ms, vectors_per_user)[0]


def representation_records(
    user_ids: Sequence[str],
    model_version: str,
    segments_per_user: Sequence[Sequence[StoredSegment]],
    half_life_ms: float,
    vectors_per_user: Sequence[np.ndarray] | None = None,
) -> list[dict[str, Any]]:
    """representation_record() for many users at once, fused together (fuse_many)."""
    if not user_ids:
        return []
    if vectors_per_user is None:
        vectors_per_user = [np.array([s.vector for s in segments]) for segments in segments_per_user]
    weights, fused = fuse_many(
        [[s.last_event_ms for s in segments] for segments in segments_per_user],
        vectors_per_user,
        half_life_ms,
    )
    fused_bytes = np.ascontiguousarray(fused, dtype="<f4")
    records = []
    for u, (user_id, segments, vectors) in enumerate(
        zip(user_ids, segments_per_user, vectors_per_user, strict=True)
    ):
        raw = np.ascontiguousarray(vectors, dtype="<f4").tobytes()  # one copy, sliced per segment
        size = len(raw) // len(segments)
        records.append(
            {
                "user_id": user_id,
                "model_version": model_version,
                "dim": int(fused.shape[1]),
                "segments": [
                    {
                        "segment_id": s.segment_id,
                        "window_start_ms": s.window_start_ms,
                        "window_end_ms": s.window_end_ms,
                        "last_event_ms": s.last_event_ms,
                        "event_count": s.event_count,
                        "weight": w,
                        "vector": raw[i * size : (i + 1) * size],
                    }
                    for i, (s, w) in enumerate(zip(segments, weights[u].tolist(), strict=True))
                ],
                "fused": fused_bytes[u].tobytes(),
                "updated_at_ms": max(s.last_event_ms for s in segments),
                "seen_item_ids": seen_item_ids(segments),
            }
        )
    return records


def seen_item_ids(segments: Sequence[StoredSegment]) -> list[str]:
    """The items the segments hold, each once, newest segment first: the candidates a ranker gives
    the model's seen-item score (encoders.scoring.candidate_bias)."""
    # chain, not a nested generator: 9.7 against 12.7 us for 16 segments of 8 items
    return list(dict.fromkeys(itertools.chain.from_iterable([s.item_ids for s in segments])))
