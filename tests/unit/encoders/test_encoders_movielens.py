"""Slow: a brief training on MovieLens 100K beats popularity on the held-out (test) events."""

import pytest

from encoders import SegmentBatchEncoder
from encoders.commands import load_log
from encoders.evaluation import evaluate
from encoders.training import TrainingConfig, train
from streams.readers import default_movielens_dir, read_events
from streams.windowing import SegmentationConfig

pytestmark = pytest.mark.slow


def test_quick_training_beats_popularity_on_movielens():
    data_dir = default_movielens_dir()
    if data_dir is None or not (data_dir / "ml-100k.inter").is_file():
        pytest.skip("MovieLens 100K not found (set MSLI_DATA_DIR)")
    log, _ = load_log(read_events(data_dir / "ml-100k.inter"), SegmentationConfig(max_events=8))
    result = train(log, TrainingConfig.quick(), k=16, half_life_ms=7 * 86_400_000)
    encoder = SegmentBatchEncoder(result.model, log.vocab, device="cpu")
    report = evaluate(log, encoder, None, k=16, half_life_ms=7 * 86_400_000, timing=0.01)
    rows = {r.name: r for r in report.rows}
    assert report.users == 943 and report.items == 1682
    popularity = rows["popularity"].all_items.ndcg
    assert rows["segments · MaxSim"].all_items.ndcg > popularity
    assert rows["segments · MaxSim"].users_with_state == 943  # at most 8 events per segment: all have one
