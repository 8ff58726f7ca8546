"""Slow: a brief training on MovieLens 100K beats popularity on the held-out (test) events.

Ten epochs of the second round's model (item bias, no context layers: they need tens of epochs; no
seen-item score, which came in the fourth round) at
4 events per segment: the 4-event run docs/quality.md reports (m-b878499127e6) stops at epoch 17 and
keeps epoch 9, so this trains the same model (training is bit-reproducible on CPU). It took 205 s on
the shared 2-core machine."""

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
    log, _ = load_log(read_events(data_dir / "ml-100k.inter"), SegmentationConfig(max_events=4))
    config = TrainingConfig(epochs=10, context_layers=0, seen_item_score=False)
    result = train(log, config, k=16, half_life_ms=7 * 86_400_000)
    encoder = SegmentBatchEncoder(result.model, log.vocab, device="cpu")
    report = evaluate(log, encoder, None, k=16, half_life_ms=7 * 86_400_000, timing=0.01)
    rows = {r.name: r for r in report.rows}
    assert report.users == 943 and report.items == 1682
    popularity, maxsim = rows["popularity"], rows["segments · MaxSim"]
    assert maxsim.all_items.ndcg > popularity.all_items.ndcg
    assert maxsim.unseen.ndcg > popularity.unseen.ndcg
    assert maxsim.users_with_state == 943  # at most 4 events per segment: every user has one closed
