"""Segments read in context: a small transformer over a user's newest K segment vectors.

A segment is encoded once, alone, when it closes; its stored vector knows nothing of the segments
before it. When the worker builds a user's representation (a segment closed, so it reads the
newest K from the store anyway), a model with `context_layers > 0` runs these K vectors through
SegmentContext: each comes out informed by the others (what the user did before and after it), and
the representation carries these contextual vectors instead of the stored ones. A ranker still
scores candidates against K vectors; only what they know changes. The cost is one pass over K
tokens per representation built, not per event, and nothing is re-encoded: the stored segment
vectors stay as they were, so a late event, a replay or a new model version changes nothing here.

Built from the segment encoder's Block, so in eval mode on CPU a user's contextual vectors are
bit-identical whatever other users share the batch (see encoders.inference): states are padded to
a fixed K, and no batch is a batch of one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

if TYPE_CHECKING:
    from encoders.model import SegmentEncoderConfig

__all__ = ["N_CONTEXT_FEATURES", "SegmentContext", "context_features"]

_HOUR_MS = 3_600_000.0

# Per segment: log1p hours between its last event and the newest segment's, and log1p its event count.
N_CONTEXT_FEATURES = 2


def context_features(last_event_ms: Sequence[int], event_counts: Sequence[int]) -> np.ndarray:
    """(K, N_CONTEXT_FEATURES) float32 for one state's segments, newest first.

    Ages are taken from the newest segment, not the wall clock, so a replay computes the same
    features (and vectors) as the live run. Computed in float64 numpy and rounded once.
    """
    times = np.asarray(last_event_ms, dtype=np.float64)
    age_hours = np.maximum(times.max() - times, 0.0) / _HOUR_MS
    counts = np.asarray(event_counts, dtype=np.float64)
    return np.stack([np.log1p(age_hours), np.log1p(counts)], axis=1).astype(np.float32)


class SegmentContext(nn.Module):
    """Contextual vectors for a user's segment vectors: v_i + f(v_1..v_K, features)_i."""

    def __init__(self, config: SegmentEncoderConfig) -> None:
        from encoders.model import Block, RowwiseLinear  # model.py imports this module

        super().__init__()
        dim = config.dim
        self.in_proj = RowwiseLinear(dim, dim, bias=config.bias)
        self.feature_proj = RowwiseLinear(N_CONTEXT_FEATURES, dim, bias=config.bias)
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList([Block(config) for _ in range(config.context_layers)])
        self.ln_f = nn.LayerNorm(dim, eps=config.layer_norm_eps, bias=config.bias)
        self.head = RowwiseLinear(dim, dim, bias=False)

    def forward(self, vectors: torch.Tensor, features: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """vectors: (B, K, d) segment vectors, newest first; features: (B, K, N_CONTEXT_FEATURES);
        mask: (B, K) bool, True on real segments, which come first. Returns (B, K, d); rows past a
        state's segments are not meaningful (scorers give them weight 0)."""
        x = self.drop(self.in_proj(vectors) + self.feature_proj(features))  # (B, K, d)
        for block in self.blocks:
            x = block(x, mask)
        # Residual: a segment's own vector stays the base, the context adds to it.
        return vectors + self.head(self.ln_f(x))  # (B, K, d)
