"""The context model: a user's segment vectors read together when a representation is built."""

from __future__ import annotations

import dataclasses
import random
import subprocess
import sys

import numpy as np
import pytest
import torch

from encoders import ContextState, EncoderError, SegmentBatchEncoder, SegmentEncoderConfig
from encoders.context import context_features
from encoders.evaluation import evaluate
from encoders.training import TrainingConfig, train
from encoders.training_data import state_tensors
from streams.synthetic import generate
from streams.windowing import SegmentationConfig

CONTEXT = SegmentEncoderConfig(
    dim=16, n_layers=1, n_heads=2, max_events=16, n_item_buckets=256, context_layers=1
)
K = 8
HOUR = 3_600_000


def random_state(rng: random.Random, dim: int = 16) -> ContextState:
    n = rng.randint(1, K)
    newest = 1_700_000_000_000 + rng.randrange(10**9)
    ages = sorted(rng.randrange(0, 500 * HOUR) for _ in range(n))  # newest first
    vectors = np.array([[rng.gauss(0, 1) for _ in range(dim)] for _ in range(n)], dtype=np.float32)
    return ContextState(vectors, [newest - a for a in ages], [rng.randint(1, 8) for _ in range(n)])


@pytest.fixture(scope="module")
def encoder() -> SegmentBatchEncoder:
    return SegmentBatchEncoder.untrained(CONTEXT, seed=3, device="cpu")


def test_features_are_ages_from_the_newest_segment_and_event_counts():
    features = context_features([10 * HOUR, 7 * HOUR, 0], [1, 3, 8])
    np.testing.assert_allclose(features[:, 0], np.log1p([0.0, 3.0, 10.0]), rtol=1e-6)
    np.testing.assert_allclose(features[:, 1], np.log1p([1.0, 3.0, 8.0]), rtol=1e-6)
    assert features.dtype == np.float32


def test_contextual_vectors_read_the_other_segments(encoder):
    rng = random.Random(0)
    state = random_state(rng)
    while len(state.vectors) < 3:
        state = random_state(rng)
    [alone] = encoder.contextualize([state], K)
    assert alone.shape == state.vectors.shape and alone.dtype == np.float32
    assert not np.allclose(alone, state.vectors)
    # Another older segment changes the newest one's contextual vector.
    older = ContextState(
        np.vstack([state.vectors, np.ones((1, 16), np.float32)]),
        [*state.last_event_ms, min(state.last_event_ms) - HOUR],
        [*state.event_counts, 2],
    )
    [more] = encoder.contextualize([older], K)
    assert not np.array_equal(more[0], alone[0])


def test_without_context_layers_the_stored_vectors_come_back():
    plain = SegmentBatchEncoder.untrained(dataclasses.replace(CONTEXT, context_layers=0), device="cpu")
    assert not plain.has_context
    state = random_state(random.Random(1))
    [out] = plain.contextualize([state], K)
    assert np.array_equal(out, state.vectors)


def test_contextual_vectors_do_not_depend_on_the_batch(encoder):
    """A replay must publish identical bytes, whoever else's representation is built alongside."""
    rng = random.Random(2)
    pool = [random_state(rng) for _ in range(40)]
    alone = [encoder.contextualize([s], K)[0] for s in pool]
    for size in (2, 5, 17, 40):
        picks = rng.sample(range(len(pool)), size)
        for i, out in zip(picks, encoder.contextualize([pool[i] for i in picks], K), strict=True):
            assert np.array_equal(out, alone[i])


def test_contextual_vectors_agree_across_processes(encoder):
    state = random_state(random.Random(3))
    script = f"""
import numpy as np, sys
from encoders import ContextState, SegmentBatchEncoder, SegmentEncoderConfig
config = SegmentEncoderConfig(**{CONTEXT.to_dict()!r})
encoder = SegmentBatchEncoder.untrained(config, seed=3, device="cpu")
vectors = np.array({state.vectors.tolist()!r}, dtype=np.float32)
state = ContextState(vectors, {list(state.last_event_ms)!r}, {list(state.event_counts)!r})
sys.stdout.write(encoder.contextualize([state], {K})[0].tobytes().hex())
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    assert out == encoder.contextualize([state], K)[0].tobytes().hex()


def test_a_state_over_k_segments_is_refused(encoder):
    rng = random.Random(4)
    big = ContextState(np.zeros((K + 1, 16), np.float32), [0] * (K + 1), [1] * (K + 1))
    with pytest.raises(EncoderError, match=r"1\.\.8 segments"):
        encoder.contextualize([random_state(rng), big], K)


def test_config_without_context_keeps_its_bytes_and_version():
    """context_layers came later: a model without it hashes as it did before the field existed."""
    plain = SegmentEncoderConfig()
    assert "context_layers" not in plain.to_dict()
    assert SegmentEncoderConfig.from_dict(CONTEXT.to_dict()) == CONTEXT
    assert CONTEXT.to_dict()["context_layers"] == 1
    with pytest.raises(EncoderError, match="context_layers"):
        SegmentEncoderConfig(context_layers=-1)


def test_checkpoint_round_trip_gives_identical_contextual_vectors(encoder, tmp_path):
    version = encoder.save(tmp_path / "ckpt")
    loaded = SegmentBatchEncoder.load(tmp_path / "ckpt", device="cpu")
    assert loaded.model_version == version == encoder.model_version and loaded.has_context
    states = [random_state(random.Random(5)) for _ in range(3)]
    for a, b in zip(loaded.contextualize(states, K), encoder.contextualize(states, K), strict=True):
        assert np.array_equal(a, b)


def test_training_with_context_matches_the_inference_path():
    """Training runs the context model over a state's segments as the worker will: equal up to rounding."""
    from encoders.commands import load_log
    from encoders.training_data import pad_arrays

    events = generate(n_users=40, n_items=60, n_events=2000, n_interests=4, seed=5).to_dicts()
    rules = SegmentationConfig(
        window_ms=3_600_000, allowed_lateness_ms=60_000, user_idle_ms=1_800_000, max_events=4
    )
    log = load_log(events, rules)[0]
    config = TrainingConfig.quick(dim=16, epochs=2, dropout=0.0, context_layers=1)
    trained = train(log, config, k=K, half_life_ms=7 * 86_400_000.0)
    assert trained.model.context is not None and trained.epochs[-1].loss < trained.epochs[0].loss
    encoder = SegmentBatchEncoder(trained.model, log.vocab, device="cpu")

    from encoders.training_data import SegmentExamples

    examples = SegmentExamples(log, trained.model.config, K, 7 * 86_400_000.0)
    states = [s for user in examples.by_user[:10] for s in user][:30]
    t = state_tensors(states, torch.device("cpu"))
    model = trained.model.train()  # the training path; no dropout in this config
    with torch.no_grad():
        vectors = model(*pad_arrays([examples.arrays[s] for s in t.segments], torch.device("cpu")))
        padded = torch.cat([vectors, vectors.new_zeros(1, vectors.size(1))])
        assert model.context is not None
        trained_path = model.context(padded[t.slots], t.features, t.slots >= 0).numpy()
    trained.model.eval()
    segment_vectors = encoder.encode([s.events for s in log.segments])
    served = encoder.contextualize(
        [
            ContextState(
                segment_vectors[list(s.state.segments)],
                [log.segments[i].last_event_ms for i in s.state.segments],
                [len(log.segments[i].events.item_ids) for i in s.state.segments],
            )
            for s in states
        ],
        K,
    )
    for row, out, s in zip(trained_path, served, states, strict=True):
        np.testing.assert_allclose(row[: len(s.state.segments)], out, rtol=1e-4, atol=1e-5)

    # The evaluation counts the context model's work: each event encoded once, then the newest K
    # segments read at every closing.
    report = evaluate(log, encoder, None, k=K, half_life_ms=7 * 86_400_000.0, timing=0.001)
    events = sum(len(s.events.item_ids) for s in log.segments)
    context = sum(min(n, K) for u in range(len(log.users)) for n in range(1, log.n_segments(u) + 1))
    row = next(r for r in report.rows if r.name == "segments · MaxSim")
    assert row.tokens_per_event == pytest.approx((events + context) / events)
