"""The encoder on a GPU: bf16 autocast, the packed pass, pinned copies, batches in flight.

These run only where torch sees a CUDA device. CI has none, so they run only on a machine lent
with a GPU (none yet since they were written): run `./dev test` there, or
`pytest tests/unit/encoders/test_encoders_cuda.py`, before trusting a GPU figure. On a CPU the
same code is covered except what only CUDA has: its autocast and attention kernels, pinned copies
and events (tests/unit/encoders/test_encoders_inference.py and _model.py).
"""

import numpy as np
import pytest
import torch
from segment_samples import random_segments

from encoders import ContextState, SegmentBatchEncoder, SegmentEncoderConfig

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")

DEVICE = "cuda"


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


@pytest.mark.parametrize(
    "config",
    [SegmentEncoderConfig(), SegmentEncoderConfig(dim=512, n_layers=8, n_heads=8)],
    ids=["default", "large"],
)
def test_gpu_vectors_are_close_to_the_cpu_vectors(config: SegmentEncoderConfig) -> None:
    """Not equal: bf16 and another summation order (encoders/inference.py); close in direction,
    which is what scoring reads."""
    segments = random_segments(300, seed=1)
    cpu = SegmentBatchEncoder.untrained(config, seed=0, device="cpu").encode(segments)
    gpu = SegmentBatchEncoder.untrained(config, seed=0, device=DEVICE).encode(segments)
    assert gpu.dtype == np.float32 and gpu.shape == cpu.shape and np.isfinite(gpu).all()
    assert cosines(cpu, gpu).min() > 0.98


def test_batches_in_flight_give_what_encode_gives() -> None:
    """start_encoding returns with the passes queued; collected later, in any order, each batch's
    vectors are the ones encode() gives it."""
    encoder = SegmentBatchEncoder.untrained(seed=0, device=DEVICE)
    batches = [random_segments(n, seed) for seed, n in enumerate([1, 97, 256])]
    started = [encoder.start_encoding(batch) for batch in batches]
    for batch, collect in reversed(list(zip(batches, started, strict=True))):
        np.testing.assert_allclose(collect(), encoder.encode(batch), rtol=0, atol=1e-5)


def test_contextual_vectors_are_close_to_the_cpu_ones() -> None:
    config = SegmentEncoderConfig(context_layers=1)
    rng = np.random.default_rng(2)
    states = [
        ContextState(
            rng.standard_normal((n, config.dim)).astype(np.float32),
            [1_700_000_000_000 - 3_600_000 * i for i in range(n)],
            [int(c) for c in rng.integers(1, 9, n)],
        )
        for n in (1, 4, 16)
    ]
    cpu = SegmentBatchEncoder.untrained(config, seed=0, device="cpu").contextualize(states, k=16)
    gpu = SegmentBatchEncoder.untrained(config, seed=0, device=DEVICE).contextualize(states, k=16)
    for a, b in zip(cpu, gpu, strict=True):
        assert b.dtype == np.float32 and b.shape == a.shape
        assert cosines(a, b).min() > 0.98


def test_the_benchmark_measures_both_models_and_the_gpu_busy_fraction() -> None:
    from streams.bench_encoder import encoder_rows

    threads = torch.get_num_threads()
    try:
        rows = {r.key: r for r in encoder_rows(random_segments(512, seed=3), (1, 256), 1, 16, 1, 256)}
    finally:
        torch.set_num_threads(threads)  # encoder_rows sets the worker's count
    for key in ("encoder-cuda-b256", "encoder-cuda-large-b256"):
        assert rows[key].value is not None and rows[key].value > 0, key
        busy = rows[key].extra["gpu_busy_fraction"]
        assert busy is None or 0.0 < busy <= 1.0, (key, busy)  # None: the profiler saw no GPU work
