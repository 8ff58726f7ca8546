"""Soak: a steady offered load for ten minutes (SOAK_SECONDS); memory, open segments and lag stay
bounded, and the end state still equals the oracle. Marked `soak`: `./dev test --all` or -m soak."""

from __future__ import annotations

import os
import re
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from harness import MIN, Pipeline, Worker
from oracle import Rules

from streams.synthetic import generate

RULES = Rules(window_ms=60 * MIN, lateness_ms=5_000, idle_ms=30 * MIN, max_events=8)
_STATUS = re.compile(r"status: (\d+) events, \d+ segments closed, (\d+) open segments")


def resident_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for {pid}")


def last_status(worker: Worker) -> tuple[int, int]:
    """(events read, open segments) from the worker's latest status line."""
    found = _STATUS.findall(worker.log())
    return (int(found[-1][0]), int(found[-1][1])) if found else (0, 0)


def slope_per_minute(t: np.ndarray, y: np.ndarray) -> float:
    return float(np.polyfit(t / 60.0, y, 1)[0])


@pytest.mark.soak
@pytest.mark.timeout(float(os.environ.get("SOAK_SECONDS", "600")) + 1800)
def test_soak_keeps_memory_open_segments_and_lag_bounded(make_pipeline, figures) -> None:
    seconds = float(os.environ.get("SOAK_SECONDS", "600"))
    rate = int(os.environ.get("SOAK_EVENTS_PER_SECOND", "400"))
    pipeline: Pipeline = make_pipeline(RULES)
    events = generate(n_users=20_000, n_events=int(seconds * rate), seed=51).to_dicts()
    worker = pipeline.start_worker("soak")
    pipeline.wait_assigned(worker)

    produced = [0]

    def offer() -> None:  # half a second's worth at a time, on the wall clock
        start = time.monotonic()
        for k in range(0, len(events), rate // 2):
            pipeline.produce(events[k : k + rate // 2])
            produced[0] = min(k + rate // 2, len(events))
            time.sleep(max(0.0, start + (k + rate // 2) / rate - time.monotonic()))

    producer = threading.Thread(target=offer, daemon=True)
    producer.start()
    samples = []  # (seconds, resident MB, open segments, event lag, closed-segment lag)
    began = time.monotonic()
    while producer.is_alive():
        time.sleep(5)
        assert worker.alive, worker.log()[-3000:]
        read, open_segments = last_status(worker)
        ends = pipeline.log_ends("segments")
        applied = pipeline.applied(worker.state_dir)
        segment_lag = sum(ends[p] - 1 - applied[p] for p in ends)
        samples.append(
            (
                time.monotonic() - began,
                resident_mb(worker.proc.pid),
                open_segments,
                produced[0] - read,
                segment_lag,
            )
        )
    pipeline.add_drain_events()
    pipeline.wait_drained([worker], timeout=900)
    assert worker.stop() == 0, worker.log()[-3000:]
    pipeline.assert_equal_to_oracle(worker.state_dir)

    data = np.array(samples)
    steady = data[len(data) // 5 :]  # after the warm-up (caches, memtables, first windows)
    t, rss, open_segments, lag, segment_lag = steady.T
    thirds = np.array_split(np.arange(len(steady)), 3)
    middle, last = thirds[1], thirds[2]
    assert rss[last].max() <= rss[middle].max() * 1.2, "resident memory keeps growing"
    assert open_segments[last].max() <= 2 * open_segments[middle].max() + 50, "open segments keep growing"
    assert lag[last].mean() <= max(2 * lag[middle].mean(), 10 * rate), "the segmenter falls behind"
    assert segment_lag[last].mean() <= max(2 * segment_lag[middle].mean(), 2_000), "the encoder falls behind"
    slopes = {
        name: slope_per_minute(t, y) for name, y in [("rss", rss), ("open", open_segments), ("lag", lag)]
    }
    figures(
        f"soak {seconds:.0f} s at {rate} events/s ({len(events):,} events): resident memory "
        f"{rss.min():.0f}-{rss.max():.0f} MB, slope {slopes['rss']:+.2f} MB/min; open segments "
        f"{open_segments.min():.0f}-{open_segments.max():.0f}, slope {slopes['open']:+.1f}/min; "
        f"event lag mean {lag.mean():.0f}, slope {slopes['lag']:+.1f}/min; closed-segment lag mean "
        f"{segment_lag.mean():.0f}, slope {slope_per_minute(t, segment_lag):+.1f}/min; "
        "end state equal to the oracle"
    )
