"""Fuse a user's newest K segment vectors into a representation: recency weights and one vector.

The encoder stage fuses every user a micro-batch touched at once (`representation_bytes`): a
dozen numpy calls per batch instead of a dozen per user, which cost 7 us a user, and the Avro
written from the fused arrays without a record per user. Each user's result is bit for bit what
fusing that user alone gives, so a representation never depends on its batch and a replay
publishes the same bytes.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from schemas import AvroCodec, RepresentationParts
from store import StoredSegment

__all__ = [
    "fuse",
    "fuse_many",
    "recency_weights",
    "representation_bytes",
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
    """fuse() for many users at once: (each user's weights (n,), fused (users, d))."""
    flat, counts, fused = _fuse_flat(last_event_ms, np.concatenate(vectors), half_life_ms)
    return np.split(flat, np.cumsum(counts)[:-1]), fused


def _fuse_flat(
    last_event_ms: Sequence[Sequence[int]], stacked: np.ndarray, half_life_ms: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(every user's weights, concatenated (segments,) float32; each user's count (users,); fused
    (users, d)) for `stacked` (segments, d): every user's vectors, one user after another.

    Each fused vector is the sum, in segment order from zero, of weight x vector in float32, as
    `(w[:, None] * v).sum(axis=0, dtype=np.float32)` adds it for one user. Summing the padded
    batch column by column keeps that order; the padding adds exact zeros (a sum that starts at
    +0.0 is never -0.0, the one value adding 0.0 would change).
    """
    flat, counts = _recency_weights_many(last_event_ms, half_life_ms)
    products = flat[:, None] * stacked  # (segments, d) float32
    ends = np.cumsum(counts)
    users = np.repeat(np.arange(len(counts)), counts)
    positions = np.arange(len(flat)) - np.repeat(ends - counts, counts)
    padded = np.zeros((len(counts), int(counts.max()), products.shape[1]), dtype=np.float32)
    padded[users, positions] = products
    fused = np.zeros((len(counts), products.shape[1]), dtype=np.float32)
    for column in range(padded.shape[1]):
        fused += padded[:, column]
    return flat, counts, fused


def _recency_weights_many(
    last_event_ms: Sequence[Sequence[int]], half_life_ms: float
) -> tuple[np.ndarray, np.ndarray]:
    """(every user's weights, concatenated (segments,) float32; each user's count (users,))."""
    counts = np.fromiter(map(len, last_event_ms), dtype=np.intp, count=len(last_event_ms))
    ends = np.cumsum(counts)
    starts = ends - counts
    times = np.fromiter(itertools.chain.from_iterable(last_event_ms), dtype=np.float64, count=int(ends[-1]))
    raw = np.exp2(-(np.repeat(np.maximum.reduceat(times, starts), counts) - times) / half_life_ms)
    # Each user's total as one array's sum() adds it (pairwise from 8 values on; reduceat's order
    # differs in the last bit): the users with n segments as the rows of one (users, n) array,
    # whose rows numpy sums the same way. One sum per count, not per user (2 us each).
    totals = np.empty(len(counts))
    for n in np.unique(counts).tolist():
        members = np.flatnonzero(counts == n)
        totals[members] = raw[starts[members, None] + np.arange(n)].sum(axis=1)
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
    parts = _representation_parts(user_ids, model_version, segments_per_user, half_life_ms, vectors_per_user)
    return [p.record() for p in parts]


def representation_bytes(
    user_ids: Sequence[str],
    model_version: str,
    segments_per_user: Sequence[Sequence[StoredSegment]],
    half_life_ms: float,
    vectors_per_user: Sequence[np.ndarray] | None = None,
) -> list[bytes]:
    """The UserRepresentation Avro of representation_records(), byte for byte, without the records:
    making and encoding them took 30 us of the 50 a user the encoder process spent on a
    representation, and writing the parts saved 7 (docs/performance.md, fifteenth round)."""
    codec = _representation_codec()
    parts = _representation_parts(user_ids, model_version, segments_per_user, half_life_ms, vectors_per_user)
    return [codec.encode_representation(p) for p in parts]


def _representation_parts(
    user_ids: Sequence[str],
    model_version: str,
    segments_per_user: Sequence[Sequence[StoredSegment]],
    half_life_ms: float,
    vectors_per_user: Sequence[np.ndarray] | None,
) -> Iterator[RepresentationParts]:
    if not user_ids:
        return
    if vectors_per_user is None:  # one array of every stored vector, not one per user (3 us each)
        stacked = np.array([s.vector for segments in segments_per_user for s in segments])
    else:
        stacked = np.concatenate(vectors_per_user)
    weights, _, fused = _fuse_flat(
        [[s.last_event_ms for s in segments] for segments in segments_per_user], stacked, half_life_ms
    )
    dim = int(fused.shape[1])
    size = 4 * dim  # bytes of one float32 vector
    # One copy of all the vectors and one of the fused ones, sliced per segment and per user.
    vectors = np.ascontiguousarray(stacked, dtype="<f4").tobytes()
    fused_bytes = np.ascontiguousarray(fused, dtype="<f4").tobytes()
    all_weights = weights.tolist()
    first = 0  # the user's first segment among all of them
    for u, (user_id, segments) in enumerate(zip(user_ids, segments_per_user, strict=True)):
        end = first + len(segments)
        yield RepresentationParts(
            user_id,
            model_version,
            dim,
            [
                (s.segment_id, s.window_start_ms, s.window_end_ms, s.last_event_ms, s.event_count, w)
                for s, w in zip(segments, all_weights[first:end], strict=True)
            ],
            [vectors[i * size : (i + 1) * size] for i in range(first, end)],
            fused_bytes[u * size : (u + 1) * size],
            max(s.last_event_ms for s in segments),
            seen_item_ids(segments),
        )
        first = end


def seen_item_ids(segments: Sequence[StoredSegment]) -> list[str]:
    """The items the segments hold, each once, newest segment first: the candidates a ranker gives
    the model's seen-item score (encoders.scoring.candidate_bias)."""
    # chain, not a nested generator: 9.7 against 12.7 us for 16 segments of 8 items
    return list(dict.fromkeys(itertools.chain.from_iterable([s.item_ids for s in segments])))


@functools.cache
def _representation_codec() -> AvroCodec:
    return AvroCodec("UserRepresentation")
