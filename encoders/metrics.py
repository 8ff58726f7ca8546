"""Ranking metrics for leave-one-out evaluation: each user has one held-out item, ranked among all.

The rank of the held-out item is the number of candidates that score above it, plus those that tie
with it and come earlier in candidate order: ties are broken by a fixed order, never in the
held-out item's favour by accident of sorting. Popularity scores tie often; model scores rarely.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from encoders.errors import EncoderError

__all__ = ["RankingMetrics", "rank_of_target", "ranking_metrics"]


def rank_of_target(scores: ArrayLike, target: int, exclude: ArrayLike | None = None) -> int:
    """0-based rank of candidate `target` under `scores` (N,); `exclude` lists candidates to remove
    first (the items a user already rated); the target itself is never removed."""
    s = np.asarray(scores)
    if s.ndim != 1 or not 0 <= target < s.shape[0]:
        raise EncoderError(f"target {target} outside scores of shape {s.shape}")
    value = s[target]
    if not np.isfinite(value):
        raise EncoderError(f"the target's score is {value}")
    above = s > value
    tie_before = s[:target] == value
    if exclude is not None:
        removed = np.zeros(s.shape[0], dtype=bool)
        removed[np.asarray(exclude, dtype=np.int64)] = True
        removed[target] = False  # a repeat of an earlier item is still rankable
        above &= ~removed
        tie_before &= ~removed[:target]
    return int(above.sum() + tie_before.sum())


@dataclass(frozen=True)
class RankingMetrics:
    """Hit rate and NDCG at k over users, each with one held-out item."""

    k: int
    users: int
    hr: float  # fraction of users whose held-out item ranks in the top k
    ndcg: float  # mean of 1 / log2(rank + 2) for ranks below k, 0 otherwise
    # standard error of that mean (sample standard deviation of the per-user gains / sqrt(users)):
    # how far apart two methods must be before the data can tell them apart; 0 for one user
    ndcg_se: float = 0.0

    def as_dict(self) -> dict[str, float | int]:
        return {
            "k": self.k,
            "users": self.users,
            f"hr@{self.k}": self.hr,
            f"ndcg@{self.k}": self.ndcg,
            f"ndcg@{self.k}_se": self.ndcg_se,
        }


def ranking_metrics(ranks: ArrayLike, k: int = 10) -> RankingMetrics:
    """HR@k and NDCG@k from 0-based ranks, one per user."""
    r = np.asarray(ranks, dtype=np.int64)
    if r.ndim != 1 or r.size == 0 or (r < 0).any():
        raise EncoderError("ranks must be a non-empty list of 0-based ranks")
    hit = r < k
    gains = np.where(hit, 1.0 / np.log2(r + 2.0), 0.0)
    se = float(gains.std(ddof=1) / np.sqrt(r.size)) if r.size > 1 else 0.0
    return RankingMetrics(k=k, users=int(r.size), hr=float(hit.mean()), ndcg=float(gains.mean()), ndcg_se=se)
