"""Late-interaction scores in torch, for training: the same formulas a ranker runs in numpy.

encoders.scoring scores one representation against candidates at serving time; this module scores
a batch of user states against every item at once, differentiably, so that training optimises the
very function a ranker applies. States hold up to K segment vectors (newest first); a state with
fewer has zero vectors there and a log weight of -inf, which removes them from every aggregator.
The unit tests check these against encoders.scoring.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch
from torch.nn import functional as F

from encoders.errors import EncoderError

__all__ = [
    "AGGREGATORS",
    "Aggregator",
    "add_seen_item_score",
    "late_interaction_logits",
    "recency_log_weights",
]

Aggregator = Literal["maxsim", "attention", "fused"]
AGGREGATORS: tuple[Aggregator, ...] = ("maxsim", "attention", "fused")


def recency_log_weights(last_event_ms: Sequence[int], half_life_ms: float, k: int) -> np.ndarray:
    """Log of the fuser's recency weights for segments given newest first, padded with -inf to k.

    The weight halves per half-life of event time behind the newest segment and the weights sum
    to 1, as streams.fuser.recency_weights computes them for the published representation.
    """
    if not 0 < len(last_event_ms) <= k:
        raise EncoderError(f"a state holds 1..{k} segments, got {len(last_event_ms)}")
    times = np.asarray(last_event_ms, dtype=np.float64)
    log2_raw = -(times.max() - times) / half_life_ms  # log2 of the unnormalised weights
    log_w = (log2_raw - np.log2(np.exp2(log2_raw).sum())) * np.log(2.0)
    out = np.full(k, -np.inf, dtype=np.float32)
    out[: len(times)] = log_w
    return out


def late_interaction_logits(
    vectors: torch.Tensor,
    log_weights: torch.Tensor,
    items: torch.Tensor,
    aggregator: Aggregator,
    temperature: float = 1.0,
    item_bias: torch.Tensor | None = None,
) -> torch.Tensor:
    """Score every item for every state.

    vectors: (S, K, d) segment vectors; log_weights: (S, K) normalised log recency weights (-inf
    on padding); items: (N, d) item vectors; item_bias: (N,) or None. Returns (S, N), plus b(x):

    - maxsim:    max_i(<v_i, x> + log w_i)
    - attention: sum_i softmax_i(<v_i, x> / T + log w_i) <v_i, x>
    - fused:     <sum_i w_i v_i, x>
    """
    scores = _aggregate(vectors, log_weights, items, aggregator, temperature)
    return scores if item_bias is None else scores + item_bias


def _aggregate(
    vectors: torch.Tensor,
    log_weights: torch.Tensor,
    items: torch.Tensor,
    aggregator: Aggregator,
    temperature: float,
) -> torch.Tensor:
    if aggregator == "fused":
        fused = (log_weights.exp().unsqueeze(-1) * vectors).sum(dim=1)  # (S, K, 1) * (S, K, d) -> (S, d)
        return fused @ items.t()  # (S, d) @ (d, N) -> (S, N)
    sims = torch.einsum("skd,nd->skn", vectors, items)  # (S, K, N)
    if aggregator == "maxsim":
        return (sims + log_weights.unsqueeze(-1)).amax(dim=1)  # (S, N)
    if aggregator == "attention":
        attn = F.softmax(sims / temperature + log_weights.unsqueeze(-1), dim=1)  # (S, K, N), over segments
        return (attn * sims).sum(dim=1)  # (S, N)
    raise EncoderError(f"unknown aggregator {aggregator!r}; known: {', '.join(AGGREGATORS)}")


def add_seen_item_score(
    logits: torch.Tensor, seen: tuple[torch.Tensor, torch.Tensor], score: torch.Tensor
) -> torch.Tensor:
    """Add the learned seen-item score to logits[s, n] for every (state s, item n) pair in `seen`.

    seen: (state rows, item columns), int64 tensors of equal length, each pair once: the items each
    state's own segments hold. Differentiable in logits and score; a ranker does the same through
    encoders.scoring.candidate_bias.
    """
    rows, columns = seen
    return logits.index_put((rows, columns), score.to(logits.dtype).expand(rows.numel()), accumulate=True)
