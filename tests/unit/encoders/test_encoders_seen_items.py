"""The seen-item score: one learned number added to the candidates a state's own segments hold.

Checked end to end: the torch objective against the numpy scorers a ranker runs, the training path
against the serving path (stored item ids, seen_item_ids, candidate_bias), checkpoints, export.
"""

import json

import numpy as np
import pytest
import torch

from encoders import (
    ContextState,
    SegmentBatchEncoder,
    SegmentEncoderConfig,
    candidate_bias,
    maxsim_scores,
    seen_mask,
)
from encoders.commands import export_items, load_log
from encoders.objectives import add_seen_item_score
from encoders.training import TrainingConfig, train
from encoders.training_data import FIRST_ITEM_ROW, SegmentExamples, pad_arrays, state_tensors
from store import StoredSegment
from streams.fuser import representation_record
from streams.synthetic import generate
from streams.windowing import SegmentationConfig

K = 8
HALF_LIFE = 7 * 86_400_000.0
RULES = SegmentationConfig(
    window_ms=3_600_000, allowed_lateness_ms=60_000, user_idle_ms=1_800_000, max_events=4
)


def test_seen_mask_marks_the_same_candidates_from_ids_and_from_rows():
    rng = np.random.default_rng(0)
    rows = rng.integers(0, 50, 200)
    seen = rng.integers(0, 50, 12)
    by_rows = seen_mask(rows, seen)
    by_ids = seen_mask([f"i{r}" for r in rows], [f"i{s}" for s in seen])
    assert np.array_equal(by_rows, np.isin(rows, seen)) and np.array_equal(by_ids, by_rows)
    assert 0 < by_rows.sum() < len(rows)
    assert not seen_mask(rows, np.zeros(0, np.int64)).any()


@pytest.mark.parametrize("dtype", [np.int64, np.int32, np.uint32])
def test_seen_mask_over_rows_takes_its_table_and_its_search_alike(dtype):
    # Seen rows in the middle of the table: candidates below, at both ends of, inside and above
    # their span; a repeated seen row; then a span too wide for a table (the sorted search).
    seen = np.array([40, 47, 44, 47, 52], dtype)
    rows = np.arange(0, 70, dtype=dtype)
    want = np.isin(rows.astype(np.int64), seen.astype(np.int64))
    assert np.array_equal(seen_mask(rows, seen), want)
    assert seen_mask(rows, seen).tolist()[38:54] == [r in (40, 44, 47, 52) for r in range(38, 54)]
    wide = np.array([3, 1 << 20, 17], dtype)
    candidates = np.array([0, 3, 17, 18, 1 << 20, (1 << 20) + 1, 5], dtype)
    assert seen_mask(candidates, wide).tolist() == [False, True, True, False, True, False, False]


def test_seen_mask_with_float_seen_values_compares_values():
    assert seen_mask(np.array([1, 2, 3]), np.array([2.0, 2.5])).tolist() == [False, True, False]


def test_candidate_bias_adds_the_score_to_seen_candidates_only():
    bias = np.array([0.5, -1.0, 2.0], np.float32)
    seen = np.array([False, True, True])
    assert np.array_equal(candidate_bias(bias, seen, -4.0), [0.5, -5.0, -2.0])
    assert np.array_equal(candidate_bias(None, seen, -4.0), [0.0, -4.0, -4.0])
    assert np.array_equal(candidate_bias(bias, seen, None), bias)
    assert candidate_bias(None, seen, None) is None


def test_the_objective_adds_the_score_once_per_pair_and_learns_it():
    logits = torch.zeros(2, 5, requires_grad=True)
    score = torch.tensor(-3.0, requires_grad=True)
    seen = (torch.tensor([0, 0, 1]), torch.tensor([1, 4, 1]))
    out = add_seen_item_score(logits, seen, score)
    expected = torch.zeros(2, 5)
    expected[0, 1] = expected[0, 4] = expected[1, 1] = -3.0
    assert torch.equal(out, expected)
    out.sum().backward()
    assert float(score.grad) == 3.0 and torch.equal(logits.grad, torch.ones(2, 5))


def test_config_without_the_score_keeps_its_bytes_and_version():
    """seen_item_score came later: a model without it hashes as it did before the field existed."""
    assert "seen_item_score" not in SegmentEncoderConfig().to_dict()
    config = SegmentEncoderConfig(seen_item_score=True)
    assert SegmentEncoderConfig.from_dict(config.to_dict()) == config


@pytest.fixture(scope="module")
def log():
    # Users return to items here (few items, several interests), so the score is learned from data
    # whose sign is not fixed in advance.
    events = generate(n_users=40, n_items=60, n_events=2000, n_interests=4, seed=5).to_dicts()
    return load_log(events, RULES)[0]


@pytest.fixture(scope="module")
def trained(log):
    config = TrainingConfig.quick(dim=16, epochs=2, dropout=0.0, context_layers=1)
    assert config.seen_item_score
    return train(log, config, k=K, half_life_ms=HALF_LIFE)


def test_training_scores_match_what_a_ranker_computes_from_the_published_record(log, trained):
    """The training logits of a state equal MaxSim over the representation the worker would publish,
    with the seen-item score added to the record's seen_item_ids: up to float rounding."""
    model = trained.model
    assert model.seen_item_raw is not None and float(model.seen_item_score().detach()) != 0.0
    examples = SegmentExamples(log, model.config, K, HALF_LIFE)
    states = [s for user in examples.by_user[:10] for s in user][:30]
    t = state_tensors(states, torch.device("cpu"))
    with torch.no_grad():
        model.train()  # the training path; no dropout in this config
        vectors = model(*pad_arrays([examples.arrays[s] for s in t.segments], torch.device("cpu")))
        padded = torch.cat([vectors, vectors.new_zeros(1, vectors.size(1))])
        assert model.context is not None
        per_state = model.context(padded[t.slots], t.features, t.slots >= 0)
        items = model.item_emb.weight[FIRST_ITEM_ROW:]
        logits = torch.einsum("skd,nd->skn", per_state, items) + t.log_weights.unsqueeze(-1)
        logits = logits.amax(dim=1) + model.item_bias[FIRST_ITEM_ROW:]
        logits = add_seen_item_score(logits, t.seen, model.seen_item_score()).numpy()
    model.eval()

    encoder = SegmentBatchEncoder(model, log.vocab, device="cpu")
    ids = list(log.vocab.items)
    segment_vectors = encoder.encode([s.events for s in log.segments])
    for row, scored in zip(logits, states, strict=True):
        stored = [
            StoredSegment(
                log.users[scored.state.user],
                log.segments[i].window_start_ms,
                0,
                log.segments[i].ordinal,
                log.segments[i].last_event_ms,
                len(log.segments[i].events.item_ids),
                segment_vectors[i],
                tuple(dict.fromkeys(log.segments[i].events.item_ids)),
            )
            for i in scored.state.segments
        ]
        contextual = encoder.contextualize([ContextState.of(stored)], K)[0]
        record = representation_record("u", encoder.model_version, stored, HALF_LIFE, contextual)
        held = seen_mask(ids, record["seen_item_ids"])
        assert held.sum() == len(scored.seen) > 0
        weights = np.array([s["weight"] for s in record["segments"]], np.float32)
        bias = candidate_bias(encoder.item_biases(ids), held, encoder.seen_item_score)
        np.testing.assert_allclose(
            maxsim_scores(contextual, weights, encoder.item_vectors(ids), bias), row, rtol=1e-4, atol=1e-4
        )


def test_the_score_survives_checkpoints_and_is_exported(log, trained, tmp_path):
    encoder = SegmentBatchEncoder(trained.model, log.vocab, device="cpu")
    encoder.save(tmp_path / "ckpt")
    loaded = SegmentBatchEncoder.load(tmp_path / "ckpt", device="cpu")
    assert loaded.seen_item_score == encoder.seen_item_score is not None
    assert json.loads((tmp_path / "ckpt" / "config.json").read_text())["seen_item_score"] is True
    export_items(tmp_path / "ckpt", tmp_path / "items.jsonl")
    header = json.loads((tmp_path / "items.jsonl").read_text().splitlines()[0])
    assert header["seen_item_score"] == pytest.approx(encoder.seen_item_score)
    export_items(tmp_path / "ckpt", tmp_path / "items.npz")
    assert float(np.load(tmp_path / "items.npz")["seen_item_score"]) == pytest.approx(encoder.seen_item_score)
    plain = SegmentBatchEncoder(
        train(
            log, TrainingConfig.quick(dim=16, epochs=1, seen_item_score=False), k=K, half_life_ms=HALF_LIFE
        ).model,
        log.vocab,
        device="cpu",
    )
    assert plain.seen_item_score is None
