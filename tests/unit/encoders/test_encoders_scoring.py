"""Late-interaction scorers against brute-force Python references."""

import math

import numpy as np
import pytest

from encoders import EncoderError, attention_scores, fused_scores, maxsim_scores


def _data(seed=0, k=5, d=8, n=30):
    rng = np.random.default_rng(seed)
    v = rng.standard_normal((k, d)).astype(np.float32)
    w = rng.random(k).astype(np.float32) + 0.05
    w /= w.sum()
    x = rng.standard_normal((n, d)).astype(np.float32)
    return v, w, x


def _dot(a, b):
    return sum(float(p) * float(q) for p, q in zip(a, b, strict=True))


def test_maxsim_matches_loop():
    v, w, x = _data()
    want = [max(_dot(vi, xj) + math.log(wi) for vi, wi in zip(v, w, strict=True)) for xj in x]
    got = maxsim_scores(v, w, x)
    assert got.shape == (len(x),) and got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("temperature", [0.3, 1.0, 4.0])
def test_attention_matches_loop(temperature):
    v, w, x = _data(1)
    want = []
    for xj in x:
        s = [_dot(vi, xj) for vi in v]
        z = [si / temperature + math.log(wi) for si, wi in zip(s, w, strict=True)]
        m = max(z)
        e = [math.exp(zi - m) for zi in z]
        want.append(sum(ei * si for ei, si in zip(e, s, strict=True)) / sum(e))
    got = attention_scores(v, w, x, temperature=temperature)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_fused_matches_loop():
    v, w, x = _data(2)
    fused = (w[:, None] * v).sum(axis=0)
    np.testing.assert_allclose(fused_scores(fused, x), [_dot(fused, xj) for xj in x], rtol=1e-5, atol=1e-5)


def test_weights_only_matter_by_ratio_and_zero_drops_a_segment():
    v, w, x = _data(3)
    np.testing.assert_allclose(maxsim_scores(v, w * 7.0, x), maxsim_scores(v, w, x), rtol=1e-6)
    w0 = w.copy()
    w0[0] = 0.0
    np.testing.assert_allclose(maxsim_scores(v, w0, x), maxsim_scores(v[1:], w[1:], x), rtol=1e-6)
    np.testing.assert_allclose(attention_scores(v, w0, x), attention_scores(v[1:], w[1:], x), rtol=1e-5)


def test_attention_limits():
    v, w, x = _data(4)
    fused = (w[:, None] * v).sum(axis=0)
    # Very hot: attention follows the recency weights, which is the fused score.
    np.testing.assert_allclose(attention_scores(v, w, x, temperature=1e6), fused_scores(fused, x), atol=1e-3)
    # Very cold: the best segment wins regardless of weights.
    np.testing.assert_allclose(attention_scores(v, w, x, temperature=1e-4), (x @ v.T).max(axis=1), atol=1e-3)


def test_single_segment_representation():
    v, _, x = _data(5, k=1)
    np.testing.assert_allclose(maxsim_scores(v, [1.0], x), x @ v[0], rtol=1e-6)
    np.testing.assert_allclose(attention_scores(v, [1.0], x), x @ v[0], rtol=1e-5)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((np.ones((2, 4)), [0.5], np.ones((3, 4))), "weights must be"),
        ((np.ones((2, 4)), [0.0, 0.0], np.ones((3, 4))), "not all zero"),
        ((np.ones((2, 4)), [1.0, -0.5], np.ones((3, 4))), "non-negative"),
        ((np.ones((2, 4)), [0.5, np.nan], np.ones((3, 4))), "finite"),
        ((np.ones((2, 4)), [0.5, 0.5], np.ones((3, 5))), "candidates must be"),
        ((np.ones((0, 4)), [], np.ones((3, 4))), "K >= 1"),
    ],
)
def test_bad_inputs_are_refused(args, message):
    with pytest.raises(EncoderError, match=message):
        maxsim_scores(*args)


def test_bad_temperature_and_fused_shape():
    v, w, x = _data()
    with pytest.raises(EncoderError, match="temperature"):
        attention_scores(v, w, x, temperature=0.0)
    with pytest.raises(EncoderError, match="fused"):
        fused_scores(v, x)


def test_item_bias_is_added_to_every_scorer():
    v, w, x = _data(5)
    b = np.random.default_rng(5).standard_normal(len(x)).astype(np.float32)
    fused = (w[:, None] * v).sum(axis=0)
    np.testing.assert_allclose(maxsim_scores(v, w, x, item_bias=b), maxsim_scores(v, w, x) + b, rtol=1e-6)
    np.testing.assert_allclose(
        attention_scores(v, w, x, temperature=0.5, item_bias=b),
        attention_scores(v, w, x, temperature=0.5) + b,
        rtol=1e-6,
    )
    np.testing.assert_allclose(fused_scores(fused, x, item_bias=b), fused_scores(fused, x) + b, rtol=1e-6)
    with pytest.raises(EncoderError, match="one per candidate"):
        maxsim_scores(v, w, x, item_bias=b[:-1])


def test_column_major_candidates_score_the_same():
    v, w, x = _data(6, k=16, d=64, n=200)
    columns = np.asfortranarray(x)  # as rows of a (d, N) table's transpose
    assert columns.flags.f_contiguous and not columns.flags.c_contiguous
    np.testing.assert_allclose(maxsim_scores(v, w, columns), maxsim_scores(v, w, x), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(
        attention_scores(v, w, columns), attention_scores(v, w, x), rtol=1e-5, atol=1e-5
    )
