"""Ranking metrics against hand-computed cases."""

import math

import numpy as np
import pytest

from encoders import EncoderError
from encoders.metrics import rank_of_target, ranking_metrics


def test_rank_counts_higher_scores_and_earlier_ties():
    scores = np.array([0.5, 0.9, 0.5, 0.1, 0.5])
    assert rank_of_target(scores, 1) == 0
    assert rank_of_target(scores, 0) == 1  # only 0.9 above; no earlier tie
    assert rank_of_target(scores, 2) == 2  # 0.9, and the tie at index 0
    assert rank_of_target(scores, 4) == 3
    assert rank_of_target(scores, 3) == 4


def test_excluded_items_are_removed_but_never_the_target():
    scores = np.array([0.5, 0.9, 0.5, 0.1, 0.5])
    assert rank_of_target(scores, 4, exclude=[1, 0]) == 1  # the tie at index 2 remains
    assert rank_of_target(scores, 4, exclude=[4, 1, 2, 0]) == 0  # a repeat of an earlier item stays
    assert rank_of_target(scores, 3, exclude=[]) == 4


def test_rank_refuses_bad_input():
    with pytest.raises(EncoderError):
        rank_of_target(np.zeros(3), 3)
    with pytest.raises(EncoderError):
        rank_of_target(np.array([0.0, np.nan]), 1)


def test_hit_rate_and_ndcg_by_hand():
    m = ranking_metrics([0, 1, 9, 10, 500], k=10)
    assert m.users == 5
    assert m.hr == pytest.approx(3 / 5)
    assert m.ndcg == pytest.approx((1 / math.log2(2) + 1 / math.log2(3) + 1 / math.log2(11)) / 5)
    gains = [1.0, 1 / math.log2(3), 1 / math.log2(11), 0.0, 0.0]
    mean = sum(gains) / 5
    assert m.ndcg_se == pytest.approx(math.sqrt(sum((g - mean) ** 2 for g in gains) / 4 / 5))
    assert m.as_dict() == {"k": 10, "users": 5, "hr@10": m.hr, "ndcg@10": m.ndcg, "ndcg@10_se": m.ndcg_se}
    assert ranking_metrics([3]).ndcg_se == 0.0
    with pytest.raises(EncoderError):
        ranking_metrics([])
