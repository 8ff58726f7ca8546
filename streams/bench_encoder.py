"""Benchmark rows without a broker: the encoder by batch size and device, incremental vs full-history
encoding, late-interaction scoring, and representation reads from the store.

Segments come from the synthetic stream cut by the real closing rules, so their lengths are the
ones the worker sees. Each figure is the best of a few timed rounds, after a warm-up batch: on a
shared machine the best round is the one least disturbed by other processes.
"""

from __future__ import annotations

import math
import os
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from encoders import (
    SegmentBatchEncoder,
    SegmentEncoderConfig,
    SegmentInput,
    attention_scores,
    candidate_bias,
    fused_scores,
    maxsim_scores,
    seen_mask,
)
from schemas import AvroCodec
from store import RocksDBVectorStore, StoredSegment
from streams.bench_report import Row
from streams.fuser import representation_record
from streams.synthetic import SyntheticEvents
from streams.windowing import SegmentationConfig, SegmentCloser

__all__ = [
    "LARGE_CONFIG",
    "closed_segments",
    "encoder_rows",
    "history_rows",
    "scoring_rows",
    "store_rows",
]

LARGE_CONFIG = SegmentEncoderConfig(dim=512, n_layers=8, n_heads=8)  # the "large" model
HISTORY_EVENTS = 200  # the full-history baseline re-encodes this many events per new event


def closed_segments(events: SyntheticEvents, rules: SegmentationConfig, limit: int) -> list[SegmentInput]:
    """Cut the first `limit` events into segments with the worker's closing rules."""
    closer = SegmentCloser(rules, partition=0)
    for offset, e in enumerate(events.to_dicts(0, limit)):
        closer.add(
            offset, e["user_id"], e["item_id"], e["action"], e["event_time_ms"], e["weight"], e["event_id"]
        )
    closer.advance_watermark(2**62)  # close everything still open
    return [SegmentInput.from_events(r["events"]) for r in closer.closed if r["close_reason"] != "late"]


def _histories(events: SyntheticEvents, count: int) -> list[SegmentInput]:
    """`count` sequences of HISTORY_EVENTS consecutive events of the stream (who they belong to does
    not change what encoding them costs)."""
    rows = events.to_dicts(0, min(len(events), count * HISTORY_EVENTS))
    chunks = [rows[i : i + HISTORY_EVENTS] for i in range(0, len(rows), HISTORY_EVENTS)]
    full = [SegmentInput.from_events(c) for c in chunks if len(c) == HISTORY_EVENTS]
    if not full:
        raise ValueError(f"need at least {HISTORY_EVENTS} events for the full-history baseline")
    return [full[i % len(full)] for i in range(count)]


def _best_seconds(run: Callable[[], Any], rounds: int, sync: Callable[[], None] = lambda: None) -> float:
    run()  # warm-up: lazy initialisation, allocator, caches
    sync()
    best = float("inf")
    for _ in range(rounds):
        started = time.perf_counter()
        run()
        sync()
        best = min(best, time.perf_counter() - started)
    return best


def _encode_rate(
    encoder: SegmentBatchEncoder, segments: Sequence[SegmentInput], batch: int, rounds: int
) -> dict[str, float]:
    """Segments/s and events/s encoding `segments` in calls of `batch` segments."""
    calls = _calls(segments, batch)
    sync = _cuda_sync if encoder.device.type == "cuda" else (lambda: None)
    seconds = _best_seconds(lambda: _encode_all(encoder, calls), rounds, sync)
    n_events = sum(len(s.item_ids) for s in segments)
    return {"segments_per_s": len(segments) / seconds, "events_per_s": n_events / seconds, "seconds": seconds}


def _calls(segments: Sequence[SegmentInput], batch: int) -> list[Sequence[SegmentInput]]:
    return [segments[i : i + batch] for i in range(0, len(segments), batch)] or [segments]


def _encode_all(encoder: SegmentBatchEncoder, calls: Sequence[Sequence[SegmentInput]]) -> None:
    """Encode call after call as the encoder stage feeds an encoder: each call's vectors are
    collected only after the next call has started, so on a GPU the host prepares a batch while
    the GPU runs the one before (on CPU the calls simply run one after the other)."""
    collect: Callable[[], np.ndarray] | None = None
    for call in calls:
        started = encoder.start_encoding(call)
        if collect is not None:
            collect()
        collect = started
    if collect is not None:
        collect()


def _cuda_sync() -> None:
    import torch

    torch.cuda.synchronize()


def covered_us(intervals: Iterable[tuple[float, float]]) -> float:
    """How long at least one of the (start, end) intervals runs: their union's length."""
    covered = 0.0
    reach = -math.inf  # the end of the union so far
    for start, end in sorted(intervals):
        if end > reach:
            covered += end - max(start, reach)
            reach = end
    return covered


def _gpu_busy_fraction(
    encoder: SegmentBatchEncoder, segments: Sequence[SegmentInput], batch: int
) -> float | None:
    """Share of the encode calls' wall time during which the GPU ran a kernel or a copy; None when
    the profiler saw no GPU activity (without CUPTI it records none).

    The union of the GPU's activity intervals, not a sum of per-op device times: kernels and
    copies may overlap, and a profile holding CPU ops books each kernel to the op that launched it
    as well. The profiler's own overhead lengthens the wall time a little, so this errs low.
    """
    import torch
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    calls = _calls(segments, batch)
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        started = time.perf_counter()
        _encode_all(encoder, calls)
        torch.cuda.synchronize()
        wall = time.perf_counter() - started
    busy_us = covered_us(
        (e.time_range.start, e.time_range.end) for e in prof.events() if e.device_type != DeviceType.CPU
    )
    return busy_us / 1e6 / wall if busy_us > 0 else None


def encoder_rows(
    segments: Sequence[SegmentInput],
    batch_sizes: Sequence[int],
    rounds: int,
    large_segments: int,
    threads: int,
    stage_batch: int,
) -> list[Row]:
    """Encoder rates on CPU by batch size with the worker's `threads`, the stage's batch with a
    thread per CPU for comparison, then CUDA when present (default and large model)."""
    import torch

    rows: list[Row] = []
    mean_len = sum(len(s.item_ids) for s in segments) / len(segments)
    cpu = SegmentBatchEncoder.untrained(device="cpu")
    torch.set_num_threads(threads)
    for b in batch_sizes:
        rate = _encode_rate(cpu, segments, b, rounds)
        rows.append(
            Row(
                f"encoder-cpu-b{b}",
                f"encoder CPU, batch {b}",
                rate["segments_per_s"],
                "segments/s",
                f"{rate['events_per_s']:,.0f} events/s; {len(segments):,} segments of "
                f"{mean_len:.1f} events on average; {threads} torch thread{'s' if threads > 1 else ''}",
                reference=f"encoder-cpu-b{batch_sizes[0]}",
                extra={**rate, "threads": threads},
            )
        )
    all_cores = os.cpu_count() or 1
    if all_cores != threads:
        torch.set_num_threads(all_cores)
        rate = _encode_rate(cpu, segments, stage_batch, rounds)
        torch.set_num_threads(threads)
        rows.append(
            Row(
                f"encoder-cpu-b{stage_batch}-all-threads",
                f"encoder CPU, batch {stage_batch}, {all_cores} torch threads",
                rate["segments_per_s"],
                "segments/s",
                "torch's default: a thread per CPU (the worker leaves one CPU to the segmenter)",
                reference=f"encoder-cpu-b{stage_batch}",
                extra={**rate, "threads": all_cores},
            )
        )
    big = max(batch_sizes)
    few = list(segments[:large_segments])
    large_cpu = SegmentBatchEncoder.untrained(LARGE_CONFIG, device="cpu")
    rate = _encode_rate(large_cpu, few, big, 1)
    rows.append(
        Row(
            f"encoder-cpu-large-b{big}",
            f"encoder CPU, large (8 layers, d=512), batch {big}",
            rate["segments_per_s"],
            "segments/s",
            f"{rate['events_per_s']:,.0f} events/s; {len(few):,} segments",
            reference=f"encoder-cpu-b{big}",
            extra=rate,
        )
    )
    if not torch.cuda.is_available():
        rows.append(
            Row("encoder-cuda", "encoder CUDA", None, "segments/s", "no CUDA device: not measured here")
        )
        return rows
    return rows + _cuda_rows(segments, big, rounds)


def _cuda_rows(segments: Sequence[SegmentInput], batch: int, rounds: int) -> list[Row]:
    """The default and the large model on the GPU, each with the GPU's busy fraction."""
    import torch

    name = torch.cuda.get_device_name()
    rows = []
    for config, label, key in ((None, "default", ""), (LARGE_CONFIG, "large", "large-")):
        gpu = SegmentBatchEncoder.untrained(config, device="cuda")
        rate = _encode_rate(gpu, segments, batch, rounds)
        busy = _gpu_busy_fraction(gpu, segments, batch)
        busy_shown = f"{busy:.0%}" if busy is not None else "unknown (the profiler saw no GPU activity)"
        rows.append(
            Row(
                f"encoder-cuda-{key}b{batch}",
                f"encoder CUDA ({label}, bf16), batch {batch}",
                rate["segments_per_s"],
                "segments/s",
                f"{name}; bf16 autocast; one batch in flight, as the stage feeds it; GPU busy {busy_shown}",
                reference=f"encoder-cpu-{key}b{batch}",
                extra={**rate, "gpu_busy_fraction": busy, "device": name},
            )
        )
    return rows


def history_rows(
    segments: Sequence[SegmentInput], events: SyntheticEvents, batch: int, rounds: int
) -> list[Row]:
    """Encoder time per new event: encoding each closed segment once vs re-encoding a 200-event
    history with the same model shape on every new event."""
    cpu = SegmentBatchEncoder.untrained(device="cpu")
    incremental = _encode_rate(cpu, segments, batch, rounds)
    full_encoder = SegmentBatchEncoder.untrained(
        SegmentEncoderConfig(max_events=HISTORY_EVENTS), device="cpu"
    )
    histories = _histories(events, batch)
    full = _encode_rate(full_encoder, histories, batch, rounds)
    per_event_incremental = 1e6 / incremental["events_per_s"]
    per_event_full = 1e6 / full["segments_per_s"]  # one full pass per new event
    mean_len = sum(len(s.item_ids) for s in segments) / len(segments)
    return [
        Row(
            "incremental",
            "incremental: closed segment only",
            per_event_incremental,
            "us/event",
            f"each segment encoded once when it closes ({mean_len:.1f} events on average), batch {batch}",
            reference="incremental",
            extra=incremental,
        ),
        Row(
            "full-history",
            f"full history: re-encode {HISTORY_EVENTS} events",
            per_event_full,
            "us/event",
            f"one pass over the last {HISTORY_EVENTS} events per new event, batch {batch}; "
            f"once per closed segment instead: {per_event_full / mean_len:,.0f} us/event",
            reference="incremental",
            extra=full,
        ),
    ]


def scoring_rows(events: SyntheticEvents, repeats: int) -> list[Row]:
    """Late-interaction scoring of 1,000 candidates (K = 16, d = 64) vs one encoder pass over a
    user's 200-event history, both per ranking request. A request scores as a ranker serving a
    model with item biases and the seen-item score does: it marks the candidates (rows of a
    2,000-item table) that the representation's 32 seen items hold and adds both to the scores."""
    rng = np.random.default_rng(0)
    k, d, n = 16, 64, 1000
    vectors = rng.standard_normal((k, d)).astype(np.float32)
    weights = rng.random(k).astype(np.float32) + 0.01
    candidates = rng.standard_normal((n, d)).astype(np.float32)
    fused = vectors.mean(axis=0)
    candidate_rows = rng.choice(2 * n, n, replace=False)  # rows of the item table
    item_bias = rng.standard_normal(n).astype(np.float32)
    seen = rng.choice(2 * n, 2 * k, replace=False)  # 2 items per segment

    def bias() -> np.ndarray | None:
        return candidate_bias(item_bias, seen_mask(candidate_rows, seen), -6.5)

    def per_call_us(fn: Callable[[], Any]) -> float:
        return _best_seconds(lambda: [fn() for _ in range(repeats)], rounds=3) / repeats * 1e6

    history_encoder = SegmentBatchEncoder.untrained(
        SegmentEncoderConfig(max_events=HISTORY_EVENTS), device="cpu"
    )
    history = _histories(events, 1)
    encode_us = _best_seconds(lambda: history_encoder.encode(history), rounds=5) * 1e6
    rows = [
        Row(
            "encoder-pass",
            f"encoder pass over a {HISTORY_EVENTS}-event history",
            encode_us,
            "us",
            "one user, CPU: what scoring against a sequence model costs per request",
            reference="encoder-pass",
        )
    ]
    for key, label, fn in (
        ("scoring-maxsim", "MaxSim", lambda: maxsim_scores(vectors, weights, candidates, bias())),
        (
            "scoring-attention",
            "attention",
            lambda: attention_scores(vectors, weights, candidates, item_bias=bias()),
        ),
        ("scoring-fused", "fused dot product", lambda: fused_scores(fused, candidates, bias())),
    ):
        rows.append(
            Row(
                key,
                f"scoring 1,000 candidates: {label}",
                per_call_us(fn),
                "us",
                f"K={k}, d={d}, numpy, item biases and the seen-item step included",
                reference="encoder-pass",
            )
        )
    return rows


def store_rows(n_users: int, n_reads: int, top_k: int = 16, dim: int = 64) -> list[Row]:
    """Point reads of full representations (K segment vectors) from a RocksDB store on disk."""
    rng = np.random.default_rng(1)
    codec = AvroCodec("UserRepresentation")
    model = "bench"
    with tempfile.TemporaryDirectory(prefix="msli-bench-store-") as tmp:
        store = RocksDBVectorStore(Path(tmp) / "store")
        try:
            size = 0
            for start in range(0, n_users, 1000):
                batch = store.batch()
                for u in range(start, min(n_users, start + 1000)):
                    user = f"u{u}"
                    segments = [
                        StoredSegment(user, w * 3_600_000, (w + 1) * 3_600_000, 0, w * 3_600_000, 8, vec)
                        for w, vec in enumerate(rng.standard_normal((top_k, dim)).astype(np.float32))
                    ][::-1]
                    value = codec.encode(representation_record(user, model, segments, 86_400_000.0))
                    size += len(value)
                    batch.put_representation(model, user, value)
                store.write(batch)
            store.flush()
            order = [f"u{u}" for u in rng.integers(0, n_users, n_reads)]
            latencies = np.empty(n_reads, dtype=np.int64)
            read = store.representation
            clock = time.perf_counter_ns
            started = time.perf_counter()
            for i, user in enumerate(order):
                t = clock()
                read(model, user)
                latencies[i] = clock() - t
            seconds = time.perf_counter() - started
        finally:
            store.close()
    p99_us = float(np.percentile(latencies, 99)) / 1000
    return [
        Row(
            "store-reads",
            "store point reads",
            n_reads / seconds,
            "reads/s",
            f"{n_users:,} users, K={top_k} vectors of d={dim} ({size / n_users / 1024:.1f} KiB each), "
            f"uniform random keys; p99 {p99_us:.1f} us",
            extra={"p99_us": p99_us, "p50_us": float(np.percentile(latencies, 50)) / 1000},
        ),
        Row(
            "store-p99",
            "store read p99 latency",
            p99_us,
            "us",
            "per point read, from a single thread",
            reference="scoring-maxsim",
        ),
    ]
