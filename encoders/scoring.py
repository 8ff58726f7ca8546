"""Late-interaction scorers: a candidate item against a user's representation, in numpy.

A representation is K segment vectors v_i (newest first, K small) with recency weights w_i that sum
to 1, plus a fused vector. A ranker scores N candidate item vectors x (rows of
SegmentBatchEncoder.item_vectors) with one (N, d) @ (d, K) product and a reduction over K, so each
candidate costs O(K*d) and ranking needs no torch.

With s_i(x) = <v_i, x>:

- MaxSim, recency-weighted:  score(x) = max_i ( s_i(x) + log w_i ).
  The best-matching segment decides, and an old segment must beat a recent one by the log of their
  weight ratio. Weights enter as an additive log so that negative dot products stay well defined
  (multiplying by w_i would make an old segment's negative score the least negative, i.e. best);
  a weight of 0 removes its segment.
- Attention:  score(x) = sum_i a_i(x) s_i(x),  a_i(x) = softmax_i( s_i(x) / T + log w_i ).
  Candidate-dependent attention over segments, biased towards recent ones. As T grows it tends to
  sum_i w_i s_i(x), the fused score; as T shrinks, to the unweighted max_i s_i(x).
- Fused:  score(x) = <f, x>, f the recency-weighted mean of the segment vectors.

Every scorer takes an optional `item_bias`: one learned score per candidate (a popularity prior,
SegmentBatchEncoder.item_biases, exported by `msli export-items`) added to the score above; a
model trained with it must be served with it.

A model trained with a seen-item score (SegmentBatchEncoder.seen_item_score, also exported) adds
that one learned number to every candidate the representation's own segments hold (its
`seen_item_ids`): `candidate_bias` folds it into the per-candidate bias the scorers take. On
MovieLens, where nobody rates a film twice, it learns a large negative score: the items just
watched are not the next ones.

Scores are float32. Weights are normalised to sum 1 here, so only their ratios matter.

One request (1,000 candidates, K = 16, d = 64, item biases and the seen step, one core) took 59 us
for MaxSim: 36 of them the float32 product and the copy that lets the max over K vectorise. bf16
and int8 products through torch were tried and not kept (docs/quality.md, "Can a faster MaxSim
reach 1/100 of the 200-event encoding?"), so rankers need no torch and scores stay exact.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np
from numpy.typing import ArrayLike

from encoders.errors import EncoderError

__all__ = ["attention_scores", "candidate_bias", "fused_scores", "maxsim_scores", "seen_mask"]

# Seen rows spanning fewer item rows than this are marked in a table of that span per request (64 KiB
# of bools at most, so the table costs less than the search it replaces); wider spans are searched.
_SEEN_TABLE_SPAN = 1 << 16


def _candidates(candidates: ArrayLike, d: int) -> np.ndarray:
    x = np.asarray(candidates, dtype=np.float32)
    if x.ndim != 2 or x.shape[1] != d:
        raise EncoderError(f"candidates must be (N, {d}), got shape {x.shape}")
    return x


def _representation(segment_vectors: ArrayLike, weights: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Check a representation and return (V (K, d) float32, log w (K,) float32 of normalised weights).

    Runs once per request on K numbers, where each numpy call costs about a microsecond whatever
    the size: two reductions check the weights, and np.errstate (itself about a microsecond) is
    entered only when a weight is zero.
    """
    v = np.asarray(segment_vectors, dtype=np.float32)
    w = np.asarray(weights, dtype=np.float32)
    if v.ndim != 2 or v.shape[0] == 0:
        raise EncoderError(f"segment_vectors must be (K, d) with K >= 1, got shape {v.shape}")
    if w.shape != (v.shape[0],):
        raise EncoderError(f"weights must be ({v.shape[0]},) for {v.shape[0]} segment vectors, got {w.shape}")
    total, lowest = float(w.sum()), float(w.min())
    if not math.isfinite(total) or total <= 0.0 or lowest < 0.0:
        raise EncoderError("weights must be finite, non-negative and not all zero")
    if lowest > 0.0:
        return v, np.log(w / np.float32(total))
    with np.errstate(divide="ignore"):  # a zero weight becomes log 0 = -inf: that segment drops out
        return v, np.log(w / np.float32(total))


def _similarities(v: np.ndarray, candidates: ArrayLike) -> np.ndarray:
    """Return s[i, n] = <v_i, x_n> as a contiguous (K, N) array.

    One (N, d) @ (d, K) product, then a transposing copy: reductions over K are then K-1
    elementwise passes over rows of N, which numpy vectorises, instead of N short rows of K
    (measured: max over axis 1 of (1000, 16) takes 50 us, over axis 0 of (16, 1000) 3 us).
    Candidates that arrive column-major (the transpose of a contiguous (d, N) array) go
    straight into a (K, d) @ (d, N) product with no copy: MaxSim over 1,000 candidates took
    32 us that way against 43 us (docs/quality.md), but gathering a request's candidates as
    columns of a (d, N_items) table costs more than that saves, so item_vectors stays row-major.
    """
    x = _candidates(candidates, v.shape[1])
    if x.flags.f_contiguous and not x.flags.c_contiguous:
        return v @ x.T  # (K, d) @ (d, N), x.T contiguous -> (K, N)
    return (x @ v.T).T.copy()  # (N, d) @ (d, K) -> (N, K) -> (K, N)


def _with_bias(scores: np.ndarray, item_bias: ArrayLike | None) -> np.ndarray:
    if item_bias is None:
        return scores
    b = np.asarray(item_bias, dtype=np.float32)
    if b.shape != scores.shape:
        raise EncoderError(f"item_bias must be ({scores.shape[0]},), one per candidate, got {b.shape}")
    scores += b
    return scores


def seen_mask(candidates: Sequence[str] | np.ndarray, seen: Iterable[str] | np.ndarray) -> np.ndarray:
    """(N,) bool: which candidates are among `seen` (a representation's seen_item_ids).

    Both item ids, or both integer rows of the ranker's item table. Rows whose seen values span
    fewer than _SEEN_TABLE_SPAN rows (always, for a catalogue that small) are looked up in a
    per-request table over that span: one subtraction and one gather over the candidates, about
    5 us for 1,000 candidates against 32 seen items, against 10 us for the sorted search that
    wider spans take. Ids go through a set (about 26 us for 1,000).
    """
    if (
        isinstance(candidates, np.ndarray)
        and isinstance(seen, np.ndarray)
        and candidates.dtype.kind in "iu"
        and (seen.dtype.kind in "iu" or not len(seen))
    ):
        if not len(seen):
            return np.zeros(len(candidates), dtype=bool)
        rows = np.sort(seen).astype(np.int64, copy=False)
        rows_of = candidates.astype(np.int64, copy=False)
        below = int(rows[0]) - 1  # table[0] and table[-1] stay False: the clipped gather lands there
        if int(rows[-1]) - below < _SEEN_TABLE_SPAN:
            table = np.zeros(int(rows[-1]) - below + 2, dtype=bool)
            table[rows - below] = True
            return np.take(table, rows_of - below, mode="clip")
        found = rows[np.minimum(np.searchsorted(rows, rows_of), len(rows) - 1)]
        return found == rows_of
    held = set(seen)
    return np.fromiter(map(held.__contains__, candidates), dtype=bool, count=len(candidates))


def candidate_bias(
    item_bias: ArrayLike | None, seen: np.ndarray, seen_item_score: float | None
) -> np.ndarray | None:
    """The per-candidate bias the scorers take: item biases (or none) plus the model's seen-item
    score on the candidates that `seen` ((N,) bool, from seen_mask) marks; None if neither applies."""
    if seen_item_score is None:
        return None if item_bias is None else np.asarray(item_bias, dtype=np.float32)
    extra = seen * np.float32(seen_item_score)  # (N,) float32, zero off the seen candidates
    return extra if item_bias is None else extra + np.asarray(item_bias, dtype=np.float32)


def maxsim_scores(
    segment_vectors: ArrayLike, weights: ArrayLike, candidates: ArrayLike, item_bias: ArrayLike | None = None
) -> np.ndarray:
    """Score each candidate by its best segment, recency-weighted: max_i(<v_i, x> + log w_i) + b(x); (N,)."""
    v, log_w = _representation(segment_vectors, weights)
    s = _similarities(v, candidates)  # (K, N)
    s += log_w[:, None]
    return _with_bias(s.max(axis=0), item_bias)


def attention_scores(
    segment_vectors: ArrayLike,
    weights: ArrayLike,
    candidates: ArrayLike,
    temperature: float = 1.0,
    item_bias: ArrayLike | None = None,
) -> np.ndarray:
    """Score each candidate by attention over segments: sum_i softmax_i(s_i/T + log w_i) s_i + b(x); (N,)."""
    if not temperature > 0.0:
        raise EncoderError(f"temperature must be > 0, got {temperature}")
    v, log_w = _representation(segment_vectors, weights)
    s = _similarities(v, candidates)  # (K, N)
    if temperature == 1.0:  # the default: one pass fewer over (K, N)
        z = s + log_w[:, None]
    else:
        z = s * np.float32(1.0 / temperature)
        z += log_w[:, None]
    z -= z.max(axis=0)  # stable softmax; the max logit is finite since some w_i > 0
    a = np.exp(z, out=z)  # (K, N)
    s *= a  # s is this call's own array: weight it in place
    num = s.sum(axis=0)
    num /= a.sum(axis=0)
    return _with_bias(num, item_bias)


def fused_scores(fused: ArrayLike, candidates: ArrayLike, item_bias: ArrayLike | None = None) -> np.ndarray:
    """Score each candidate by a dot product with the fused vector, plus b(x); (N,)."""
    f = np.asarray(fused, dtype=np.float32)
    if f.ndim != 1:
        raise EncoderError(f"fused must be (d,), got shape {f.shape}")
    return _with_bias(_candidates(candidates, f.shape[0]) @ f, item_bias)
