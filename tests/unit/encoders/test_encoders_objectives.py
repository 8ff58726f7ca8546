"""The training objective's scores are the ranker's: torch against encoders.scoring and streams.fuser."""

import numpy as np
import pytest
import torch

from encoders import EncoderError, attention_scores, fused_scores, maxsim_scores
from encoders.objectives import late_interaction_logits, recency_log_weights
from streams.fuser import recency_weights

HALF_LIFE = 3_600_000.0


def _states(rng, sizes, k, d):
    """Random states of `sizes` segments each, padded to k as the trainer pads them."""
    vectors = np.zeros((len(sizes), k, d), dtype=np.float32)
    log_w = np.zeros((len(sizes), k), dtype=np.float32)
    times = []
    for i, n in enumerate(sizes):
        vectors[i, :n] = rng.standard_normal((n, d))
        t = sorted(rng.integers(0, 20 * 3_600_000, n).tolist(), reverse=True)  # newest first
        times.append(t)
        log_w[i] = recency_log_weights(t, HALF_LIFE, k)
    return vectors, log_w, times


def test_recency_log_weights_are_the_fusers_weights():
    times = [10_000_000, 7_000_000, 100]
    log_w = recency_log_weights(times, HALF_LIFE, 5)
    np.testing.assert_allclose(np.exp(log_w[:3]), recency_weights(times, HALF_LIFE), rtol=1e-6)
    assert np.isneginf(log_w[3:]).all()
    with pytest.raises(EncoderError):
        recency_log_weights([], HALF_LIFE, 5)
    with pytest.raises(EncoderError):
        recency_log_weights(list(range(6)), HALF_LIFE, 5)


@pytest.mark.parametrize("aggregator", ["maxsim", "attention", "fused"])
def test_logits_match_the_numpy_scorers(aggregator):
    rng = np.random.default_rng(0)
    k, d = 4, 8
    vectors, log_w, times = _states(rng, [1, 3, 4], k, d)
    items = rng.standard_normal((30, d)).astype(np.float32)
    bias = rng.standard_normal(30).astype(np.float32)
    got = late_interaction_logits(
        torch.from_numpy(vectors),
        torch.from_numpy(log_w),
        torch.from_numpy(items),
        aggregator,
        temperature=0.7,
        item_bias=torch.from_numpy(bias),
    ).numpy()
    for i, t in enumerate(times):
        v, w = vectors[i, : len(t)], recency_weights(t, HALF_LIFE)
        if aggregator == "maxsim":
            want = maxsim_scores(v, w, items, item_bias=bias)
        elif aggregator == "attention":
            want = attention_scores(v, w, items, temperature=0.7, item_bias=bias)
        else:
            want = fused_scores((w[:, None] * v).sum(axis=0), items, item_bias=bias)
        np.testing.assert_allclose(got[i], want, rtol=1e-5, atol=1e-5)


def test_logits_have_gradients_and_padding_gets_none():
    rng = np.random.default_rng(1)
    vectors, log_w, _ = _states(rng, [2], 4, 8)
    v = torch.from_numpy(vectors).requires_grad_(True)
    items = torch.from_numpy(rng.standard_normal((10, 8)).astype(np.float32)).requires_grad_(True)
    late_interaction_logits(v, torch.from_numpy(log_w), items, "attention").sum().backward()
    assert v.grad is not None and items.grad is not None
    assert v.grad[0, :2].abs().sum() > 0 and not v.grad[0, 2:].any()


def test_unknown_aggregator_is_refused():
    with pytest.raises(EncoderError, match="unknown aggregator"):
        late_interaction_logits(torch.zeros(1, 1, 2), torch.zeros(1, 1), torch.zeros(3, 2), "mean")  # type: ignore[arg-type]
