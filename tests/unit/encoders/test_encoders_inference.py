"""SegmentBatchEncoder: shapes, input checks, truncation, and bit-for-bit reproducible CPU vectors."""

import hashlib
import json
import random
import subprocess
import sys

import numpy as np
import pytest
import torch

from encoders import (
    EncoderError,
    ItemVocabulary,
    SegmentBatchEncoder,
    SegmentEncoderConfig,
    SegmentInput,
    bucket_lengths,
)
from encoders.inference import pad_segments, segment_arrays

TINY = SegmentEncoderConfig(dim=16, n_layers=1, n_heads=2, max_events=32, n_item_buckets=256)


def random_segment(rng: random.Random, n: int) -> SegmentInput:
    start = 1_700_000_000_000 + rng.randrange(10**9)
    times = [start + rng.randrange(3_600_000) for _ in range(n)]  # arrival order, not sorted
    return SegmentInput(
        item_ids=[f"item-{rng.randrange(2000)}" for _ in range(n)],
        actions=[rng.randrange(10) for _ in range(n)],
        event_times_ms=times,
        weights=[None if rng.random() < 0.3 else float(rng.randint(1, 5)) for _ in range(n)],
    )


@pytest.fixture(scope="module")
def tiny():
    return SegmentBatchEncoder.untrained(TINY, seed=0, device="cpu")


@pytest.fixture(scope="module")
def default():
    return SegmentBatchEncoder.untrained(seed=0, device="cpu")


def test_encode_shapes(tiny):
    rng = random.Random(0)
    out = tiny.encode([random_segment(rng, n) for n in (1, 5, 31, 32, 70)])
    assert out.shape == (5, 16) and out.dtype == np.float32 and np.isfinite(out).all()
    assert tiny.encode([]).shape == (0, 16)
    assert tiny.dim == 16 and tiny.device == torch.device("cpu")


def test_item_vectors_are_the_input_embeddings(tiny):
    vectors = tiny.item_vectors(["a", "b", "a"])
    assert vectors.shape == (3, 16) and vectors.dtype == np.float32
    np.testing.assert_array_equal(vectors[0], vectors[2])
    table = tiny.model.item_emb.weight.detach().numpy()
    np.testing.assert_array_equal(vectors[1], table[tiny.vocab.row("b")])


def test_bucket_ladder():
    assert bucket_lengths(256) == (1, 2, 4, 8, 16, 32, 64, 128, 256)
    assert bucket_lengths(40) == (1, 2, 4, 8, 16, 32, 40)
    assert bucket_lengths(8) == (1, 2, 4, 8)


def _batches(rng, pool, sizes):
    for size in sizes:
        idx = [rng.randrange(len(pool)) for _ in range(size)]
        yield idx, [pool[i] for i in idx]


@pytest.mark.parametrize("which", ["tiny", "default"])
def test_vectors_do_not_depend_on_the_batch(which, request):
    """A segment's vector is bit-identical alone, in any batch, any position, any company."""
    enc = request.getfixturevalue(which)
    rng = random.Random(11)
    lengths = [1, 2, 3, 4, 5, 6, 7, 8, 9, 13, 24, 25, 33, 47, 64, 100, 256, 300]
    pool = [random_segment(rng, n) for n in lengths if n <= 2 * enc.config.max_events]
    alone = [enc.encode([s])[0] for s in pool]
    for idx, batch in _batches(rng, pool, [2, 3, 7, 16, 40, 97]):
        out = enc.encode(batch)
        for row, i in enumerate(idx):
            assert np.array_equal(out[row], alone[i]), (len(batch), row, len(pool[i].item_ids))
    # The same segment repeated fills whole passes, and max_batch_tokens splits them differently.
    small_passes = SegmentBatchEncoder(
        enc.model, enc.vocab, device="cpu", max_batch_tokens=2 * enc.config.max_events
    )
    for i in (0, 3, len(pool) - 1):
        assert all(np.array_equal(row, alone[i]) for row in enc.encode([pool[i]] * 9))
        assert all(np.array_equal(row, alone[i]) for row in small_passes.encode([pool[i]] * 5))


@pytest.mark.parametrize("which", ["tiny", "default"])
def test_packed_passes_equal_padded_forward(which, request):
    """encode() runs the model packed (all lengths in one pass); each vector is bit for bit what
    the padded forward() gives for its segment alone in its bucket (beside a copy of itself)."""
    enc = request.getfixturevalue(which)
    rng = random.Random(7)
    segments = [random_segment(rng, n) for n in (1, 1, 2, 3, 5, 8, 9, 17, 40)]
    vectors = enc.encode(segments)
    for segment, vector in zip(segments, vectors, strict=True):
        arrays = segment_arrays(segment, enc.vocab, enc.config)
        length = next(b for b in bucket_lengths(enc.config.max_events) if b >= len(arrays[0]))
        with torch.inference_mode():
            padded = enc.model(*pad_segments([arrays, arrays], length, torch.device("cpu")))
        assert np.array_equal(padded[0].numpy(), vector), len(segment.item_ids)


def test_start_encoding_keeps_several_batches_in_flight(tiny):
    """Vectors are copied back only when asked (on a GPU the host then prepares the next batch
    while this one runs): batches collected in any order give what encode() gives."""
    rng = random.Random(5)
    batches = [[random_segment(rng, rng.randint(1, 40)) for _ in range(size)] for size in (3, 9, 1)]
    started = [tiny.start_encoding(batch) for batch in batches]
    for batch, collect in reversed(list(zip(batches, started, strict=True))):
        assert np.array_equal(collect(), tiny.encode(batch))


def test_packed_pass_under_bf16_autocast_stays_close_to_float32(tiny):
    """On CUDA the encoder runs under bf16 autocast, which this machine cannot run: CPU autocast
    exercises the same mixing of bf16 activations with float32 residuals and norms."""
    rng = random.Random(3)
    arrays = tiny.inputs([random_segment(rng, n) for n in (1, 2, 3, 8, 20, 20, 32)])
    buckets = np.asarray(bucket_lengths(tiny.config.max_events))
    padded = buckets[np.searchsorted(buckets, arrays.lengths)]
    members = np.argsort(padded, kind="stable")
    batch = arrays.packed(members, padded[members], torch.device("cpu"))
    with torch.inference_mode():
        exact = tiny.model.forward_packed(*batch)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = tiny.model.forward_packed(*batch)
    assert exact.dtype == torch.float32 and low.shape == exact.shape
    assert torch.nn.functional.cosine_similarity(exact, low.float()).min() > 0.99


@pytest.mark.parametrize("threads", [1, 3])
def test_vectors_do_not_depend_on_torch_threads(default, threads):
    rng = random.Random(5)
    batch = [random_segment(rng, n) for n in (1, 3, 20, 40, 120, 20, 2)]
    want = default.encode(batch)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(threads)
        got = default.encode(batch[::-1])[::-1]
    finally:
        torch.set_num_threads(before)
    assert np.array_equal(got, want)


_CHILD = """
import hashlib, json, sys, torch
from encoders import SegmentBatchEncoder, SegmentInput
torch.set_num_threads(1)
enc = SegmentBatchEncoder.untrained(seed=0, device="cpu")
segments = [SegmentInput(**s) for s in json.load(sys.stdin)]
print(enc.model_version, hashlib.sha256(enc.encode(segments).tobytes()).hexdigest())
"""


def test_vectors_agree_across_processes(default):
    """Another process (its own hash salt, one thread) builds the same model and the same vectors."""
    rng = random.Random(3)
    segments = [random_segment(rng, n) for n in (1, 7, 30, 300)]
    payload = json.dumps([s._asdict() for s in segments])
    child = subprocess.run(
        [sys.executable, "-c", _CHILD], input=payload, capture_output=True, text=True, check=True
    ).stdout.split()
    vectors = default.encode(segments[2:] + segments[:2])  # another order and batching here
    vectors = np.concatenate([vectors[2:], vectors[:2]])
    assert child == [default.model_version, hashlib.sha256(vectors.tobytes()).hexdigest()]


def test_long_segment_keeps_its_last_max_events(tiny):
    rng = random.Random(8)
    n, keep = 50, TINY.max_events
    seg = random_segment(rng, n)
    dropped = n - keep
    # Other items and actions among the dropped (oldest) events: the vector does not change.
    other_old = SegmentInput(
        ["elsewhere"] * dropped + list(seg.item_ids[dropped:]),
        [0] * dropped + list(seg.actions[dropped:]),
        seg.event_times_ms,
        seg.weights,
    )
    # Another item among the kept events: it does.
    other_new = SegmentInput([*seg.item_ids[:-1], "elsewhere"], seg.actions, seg.event_times_ms, seg.weights)
    v, v_old, v_new = tiny.encode([seg, other_old, other_new])
    assert np.array_equal(v, v_old)
    assert not np.array_equal(v, v_new)
    # Kept events see the time features they would have untruncated.
    rows, actions, features = segment_arrays(seg, tiny.vocab, TINY)
    _, _, untruncated = segment_arrays(
        seg, tiny.vocab, SegmentEncoderConfig(dim=16, n_heads=2, max_events=64)
    )
    assert rows.shape == actions.shape == (keep,) and features.shape == (keep, 4)
    np.testing.assert_array_equal(features, untruncated[dropped:])


def test_time_features():
    seg = SegmentInput(["a", "b", "c"], [1, 2, 3], [10_000, 5_000, 6_000], [None, 4.0, float("nan")])
    _, _, f = segment_arrays(seg, ItemVocabulary.hashing(8), TINY)
    np.testing.assert_allclose(f[:, 0], np.log1p([5.0, 0.0, 1.0]), rtol=1e-6)  # since the earliest event
    np.testing.assert_allclose(f[:, 1], [0.0, -np.log1p(5.0), np.log1p(1.0)], rtol=1e-6)  # signed gap
    np.testing.assert_allclose(f[:, 2:], [[0, 0], [np.log1p(4.0), 1], [0, 0]], rtol=1e-6)  # NaN = absent


@pytest.mark.parametrize(
    ("segment", "message"),
    [
        (SegmentInput([], [], [], []), "no events"),
        (SegmentInput(["a", "b"], [1], [1, 2], [None, None]), "differ in length"),
        (SegmentInput(["a"], [10], [1], [None]), "action outside"),
        (SegmentInput(["a"], [-1], [1], [None]), "action outside"),
        (SegmentInput(["a"], [1.5], [1], [None]), "integers"),
        (SegmentInput([7], [1], [1], [None]), "item ids must be strings"),
        (SegmentInput(["a"], [1], [1], ["five"]), "not a number"),
        (SegmentInput(["a"], [1], [2**70], [None]), "64-bit integers"),
        (SegmentInput(["a"], [[1]], [1], [None]), "integers"),  # numpy would read a 2-D array
        (SegmentInput(["a"], [1], [1], [[4.0]]), "not a number"),
    ],
)
def test_bad_segments_are_refused(tiny, segment, message):
    with pytest.raises(EncoderError, match=message) as info:
        tiny.encode([SegmentInput(["ok"], [0], [0], [None]), segment])
    assert "segment 1" in str(info.value)


def test_from_events_reads_decoded_closed_segment_events():
    events = [
        {"item_id": "m1", "action": "rate", "event_time_ms": 5, "weight": 4.0, "event_id": None},
        {"item_id": "m2", "action": 1, "event_time_ms": 9, "weight": None},
    ]
    seg = SegmentInput.from_events(events)
    assert seg == SegmentInput(["m1", "m2"], [5, 1], [5, 9], [4.0, None])
    with pytest.raises(EncoderError, match="unknown action"):
        SegmentInput.from_events([{**events[0], "action": "teleport"}])


def test_device_choice():
    assert SegmentBatchEncoder.untrained(TINY, device="auto").device.type == (
        "cuda" if torch.cuda.is_available() else "cpu"
    )
    with pytest.raises(EncoderError, match="device"):
        SegmentBatchEncoder.untrained(TINY, device="mps")
    if not torch.cuda.is_available():
        with pytest.raises(EncoderError, match="cuda"):
            SegmentBatchEncoder.untrained(TINY, device="cuda")


def test_ids_and_numbers_of_other_types_that_mean_the_same_give_the_same_vector(tiny):
    class ItemId(str):
        pass

    plain = SegmentInput(["a", "b"], [1, 2], [10, 20], [None, 4.0])
    other = SegmentInput([ItemId("a"), "b"], [True, np.int64(2)], [np.int32(10), 20], [None, 4])
    assert tiny.encode([plain, other]).tobytes() == tiny.encode([plain, plain]).tobytes()
