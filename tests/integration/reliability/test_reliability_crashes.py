"""Crashes: an injected SIGKILL at each boundary of a unit of work, and SIGKILL at random moments
while events flow. After a clean final run the store and the output topic equal the oracle's."""

from __future__ import annotations

import random
import signal
import time
from collections import defaultdict
from typing import Any

import pytest
from harness import HOUR, MIN, Pipeline, Worker, produce_steadily, total_applied, wait_for
from oracle import Rules

from schemas import AvroCodec
from streams.faults import BOUNDARIES
from streams.synthetic import generate

RULES = Rules(window_ms=HOUR, lateness_ms=5_000, idle_ms=30 * MIN, max_events=8)


def synthetic_events(n_users: int, n_events: int, seed: int) -> list[dict[str, Any]]:
    """Synthetic sessions; 1% are delivered twice (a producer retry: same event id, a little later)."""
    events = generate(n_users=n_users, n_events=n_events, seed=seed).to_dicts()
    rng = random.Random(seed)
    for i in sorted(rng.sample(range(len(events) - 50), len(events) // 100), reverse=True):
        events.insert(i + rng.randrange(1, 50), dict(events[i]))
    return events


def assert_duplicates_are_identical(pipeline: Pipeline) -> int:
    """Representations published twice for the same state must be the same bytes; returns repeats."""
    codec = AvroCodec("UserRepresentation")
    versions: dict[tuple[str, tuple], set[bytes]] = defaultdict(set)
    published = 0
    for records in pipeline.read("representations").values():
        for _, key, value, _ in records:
            assert key is not None and value is not None
            rep = codec.decode(value)
            state = tuple((s["segment_id"], s["event_count"], s["last_event_ms"]) for s in rep["segments"])
            versions[(key.decode(), state)].add(value)
            published += 1
    differing = [k for k, values in versions.items() if len(values) > 1]
    assert differing == [], f"one state published with different bytes: {differing[:5]}"
    return published - len(versions)


def finish(pipeline: Pipeline, worker: Worker) -> tuple[Any, int, int, float]:
    """Drain with `worker`, stop it cleanly, hold the result to the oracle; return the expectation,
    re-published representations, closed-segment records sent, and seconds the drain took."""
    pipeline.add_drain_events()
    started = time.monotonic()
    pipeline.wait_drained([worker], timeout=900)
    drain_s = time.monotonic() - started
    assert worker.stop() == 0, worker.log()[-3000:]
    expected = pipeline.assert_equal_to_oracle(worker.state_dir)
    repeats = assert_duplicates_are_identical(pipeline)
    return expected, repeats, sum(len(r) for r in pipeline.read("segments").values()), drain_s


def test_a_crash_at_each_boundary_loses_and_doubles_nothing(make_pipeline, figures) -> None:
    pipeline = make_pipeline(RULES)
    events = synthetic_events(n_users=300, n_events=6_000, seed=3)
    share = len(events) // len(BOUNDARIES) + 1
    for k, boundary in enumerate(BOUNDARIES):  # each run gets new events, so it crashes mid-work
        pipeline.produce(events[k * share : (k + 1) * share])
        worker = pipeline.start_worker("w", MSLI_CRASH_AT=f"{boundary}@2")
        status = worker.wait_exit(timeout=240)
        assert status == -signal.SIGKILL, f"{boundary}: exit {status}\n{worker.log()[-3000:]}"
        assert f"crash injected at {boundary}" in worker.log()
    expected, repeats, resent, _ = finish(pipeline, pipeline.start_worker("w"))
    figures(
        f"{len(BOUNDARIES)} injected crashes ({', '.join(BOUNDARIES)}); "
        f"{sum(len(s) for s in expected.segments.values())} segments as the oracle says; "
        f"{resent} closed-segment records sent; {repeats} representations re-published with identical bytes"
    )


@pytest.mark.parametrize(
    ("n_users", "n_events", "kills"),
    [
        pytest.param(300, 8_000, 2, id="short"),
        pytest.param(5_000, 200_000, 6, id="full", marks=[pytest.mark.slow, pytest.mark.timeout(3600)]),
    ],
)
def test_kill_9_mid_stream_ends_equal_to_the_oracle(make_pipeline, figures, n_users, n_events, kills) -> None:
    pipeline = make_pipeline(RULES)
    rng = random.Random(n_events)
    events = synthetic_events(n_users=n_users, n_events=n_events, seed=11)
    worker = pipeline.start_worker("w")
    pipeline.wait_assigned(worker)
    producer = produce_steadily(pipeline, events, seconds=kills * 10.0)
    recoveries, to_assigned = [], []
    for _ in range(kills):
        time.sleep(rng.uniform(0.5, 3.0) if rng.random() < 0.25 else rng.uniform(3.0, 10.0))
        before = total_applied(pipeline, worker.state_dir)
        killed_at = time.monotonic()
        worker.kill()
        worker = pipeline.start_worker("w")
        to_assigned.append(pipeline.wait_assigned(worker))
        try:  # progress resumes: the store moves past where the killed worker left it
            wait_for(
                lambda w=worker, b=before: total_applied(pipeline, w.state_dir) > b, 60, "progress", 0.25
            )
            recoveries.append(time.monotonic() - killed_at)
        except AssertionError:  # nothing new to apply (the stream may have ended): not a recovery figure
            pass
    producer.join(timeout=600)
    expected, repeats, sent, drain_s = finish(pipeline, worker)
    figures(
        f"{len(events):,} events ({expected.duplicates} repeats), {n_users:,} users, {kills} SIGKILLs; "
        f"{sum(len(s) for s in expected.segments.values()):,} segments equal the oracle; "
        f"closed-segment records replayed after kills: {sent - expected.closed_records:,} "
        f"(of {sent:,}); representations re-published: {repeats:,}; "
        f"restart to partitions assigned: {', '.join(f'{s:.1f}' for s in to_assigned)} s; "
        f"kill to new progress: {', '.join(f'{s:.1f}' for s in recoveries) or 'n/a'} s; "
        f"final drain {drain_s:.0f} s"
    )
