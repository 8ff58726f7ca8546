"""Measure what each way of serving a user costs: encoder work per event, scoring per request.

Timings are wall clock on whatever machine runs them, so they are reported, never asserted.
`one_core()` pins the process to one CPU and torch to one thread for the per-request figures
(scoring 1,000 candidates; encoding one 200-event history), which the targets state per core.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
from threadpoolctl import threadpool_limits

from encoders.inference import SegmentBatchEncoder, SegmentInput

__all__ = ["encode_seconds", "one_core", "per_call_seconds"]


@contextlib.contextmanager
def one_core() -> Iterator[None]:
    """Run the body on one CPU (where the OS allows pinning), one torch thread and one BLAS thread.

    numpy's OpenBLAS keeps its own worker threads: left alone, a (1000, 64) @ (64, 16) product
    pinned to one core took 8 ms instead of 62 µs on a busy machine (measured), waiting for them.
    """
    threads = torch.get_num_threads()
    pinned = hasattr(os, "sched_getaffinity") and hasattr(os, "sched_setaffinity")
    cpus: set[int] = os.sched_getaffinity(0) if pinned else set()
    try:
        if pinned:
            os.sched_setaffinity(0, {min(cpus)})
        torch.set_num_threads(1)
        with threadpool_limits(limits=1):
            yield
    finally:
        torch.set_num_threads(threads)
        if pinned:
            os.sched_setaffinity(0, cpus)


def per_call_seconds(fn: Callable[[], Any], min_seconds: float = 0.2, repeats: int = 5) -> float:
    """Median over `repeats` runs of the mean time per call, each run lasting about min_seconds.

    The calls per run are sized from the fastest of a few single calls, so that one call slowed by
    another process cannot shrink the runs to a few calls each, where every preemption would show.
    """
    fn()  # warm up caches and lazy initialisation
    singles = []
    for _ in range(5):
        start = time.perf_counter()
        fn()
        singles.append(time.perf_counter() - start)
    calls = max(1, int(min_seconds / max(min(singles), 1e-7)))
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        runs.append((time.perf_counter() - start) / calls)
    return statistics.median(runs)


def encode_seconds(
    encoder: SegmentBatchEncoder, segments: Sequence[SegmentInput], batch_size: int = 256
) -> tuple[np.ndarray, float]:
    """Encode in micro-batches of `batch_size` (the worker's encode_batch_size); (vectors, seconds)."""
    out = np.empty((len(segments), encoder.dim), dtype=np.float32)
    start = time.perf_counter()
    for i in range(0, len(segments), batch_size):
        out[i : i + batch_size] = encoder.encode(segments[i : i + batch_size])
    return out, time.perf_counter() - start
