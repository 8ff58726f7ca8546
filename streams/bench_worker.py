"""End-to-end and freshness rows: the real worker (segmenter + closed-segments consumer) in a child.

Phase 1 (end to end): the worker starts on the pre-loaded topic; the clock runs from its
segmenter's assignment until every event is read and every representation is stored (which
includes one quiet-partition wait, `partition_idle_seconds`, for the last windows to close). It
stops at the store write of the last micro-batch, which the stage's `on_applied` hook times. The
check that confirms nothing is left (the worker's `caught_up`, which finds the true ends of two
topics at the broker) runs only once the stage has stopped writing, so it takes nothing from
the run it measures. Until the eighteenth round the clock ran until the check's answer, which
then took 2-3 s a call (docs/performance.md, eighteenth round).

Phase 2 (freshness): the parent offers new events at a fixed rate. Each closed-segments record
carries the wall-clock time its segment became closable (a header the segmenter sets: the Kafka
timestamp of the event that closed it); the stage's `on_applied` hook notes when its micro-batch
is in the store, after the atomic write (the stage does not wait for the outbox's acknowledgement
before the next micro-batch, and neither does this clock), so each sample is an upper bound on
"closable -> readable in the store". Samples count while the load is offered: the final flush of windows
that only close because the load stopped is not a steady state. Each sample is also split at the
closed-segments record's Kafka timestamp (when the segmenter sent it): the segmenter's hop
(closable -> sent) and the encoder stage's (sent -> stored), both on this machine's one clock.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Sequence
from multiprocessing.connection import Connection
from typing import Any

import numpy as np

from streams.bench_cpu import CpuMeter
from streams.bench_kafka import BenchError, children_rss_mib, rss_mib, settings_from

__all__ = ["percentiles", "worker_child"]

# The stage stores a micro-batch every few tens of ms while it has a backlog: this long without a
# store write, it may be done, and the end checks are worth their cost.
STAGE_IDLE_SECONDS = 0.2


def worker_child(conn: Connection, settings_data: dict[str, Any], n_events: int) -> dict[str, Any]:
    """Run the worker through both phases; messages: -> ("caught-up", ...), <- ("load-done", ...)."""
    from streams.app import WorkerRuntime, run_worker
    from streams.source_record import SourceRecord

    settings = settings_from(settings_data)
    runtime = WorkerRuntime(settings)
    samples: list[tuple[int, int, float]] = []  # (closable at, sent at, readable at), ms
    last_applied = [0.0]  # monotonic time of the stage's latest store write

    def on_applied(records: Sequence[SourceRecord]) -> None:
        last_applied[0] = time.monotonic()
        now_ms = time.time() * 1000
        samples.extend(
            (r.closable_at_ms, r.sent_at_ms, now_ms)
            for r in records
            if r.closable_at_ms is not None and r.sent_at_ms is not None
        )

    runtime.stage.on_applied = on_applied
    result: dict[str, Any] = {}

    async def wait_caught_up(total: int, timeout: float, *, open_windows_too: bool) -> float:
        """Until `total` events are read and their closed segments stored; with `open_windows_too`,
        also until the quiet-partition clock has closed every window (the worker's caught_up)."""
        loop = asyncio.get_running_loop()
        stats = runtime.segmenter.stats
        deadline = time.monotonic() + timeout
        check = runtime.caught_up if open_windows_too else runtime.segments_applied
        read_at = None
        while time.monotonic() < deadline:
            if runtime.error is not None:
                raise BenchError(f"worker failed: {runtime.error}")
            if stats.records_read >= total:
                read_at = read_at or time.monotonic()
                # The segmenter's last segments need a moment to be acknowledged (linger, acks).
                settled = open_windows_too or time.monotonic() - read_at > 1.0
                # Not while the stage is storing micro-batches: the check asks the broker for two
                # topics' ends, on a thread of the stage's process.
                idle = time.monotonic() - last_applied[0] >= STAGE_IDLE_SECONDS
                if settled and idle and await loop.run_in_executor(None, check):
                    return time.monotonic()
            await asyncio.sleep(0.05)
        raise BenchError(f"worker: not caught up with {total:,} events after {timeout:.0f} s")

    async def monitor(_app: Any) -> None:
        try:
            await phases()
        except Exception as exc:  # run_worker re-raises it after a clean shutdown
            runtime.fail(exc)

    async def phases() -> None:
        loop = asyncio.get_running_loop()
        while not runtime.segmenter.assigned.is_set():
            await asyncio.sleep(0.01)
        # The worker's CPU with its segmenter and encoder processes: on a shared machine the wall
        # time moves with the neighbours' load, the CPU a run needs much less.
        cpu = CpuMeter(trees={"worker": os.getpid()}, processes={})
        cpu.start()
        started = time.monotonic()
        confirmed = await wait_caught_up(n_events, timeout=1800, open_windows_too=True)
        cores = cpu.stop().get("worker")  # over the meter's window: until `confirmed`
        core_seconds = None if cores is None else cores * (confirmed - started)
        totals = runtime.stage.totals
        finished = last_applied[0] if started < last_applied[0] <= confirmed else confirmed
        events, seconds = runtime.segmenter.stats.events, finished - started
        result["end_to_end"] = {
            "events": events,
            "seconds": seconds,
            "confirmed_after_s": confirmed - finished,
            "worker_cores": None if core_seconds is None else core_seconds / seconds,
            "cpu_us_per_event": None if core_seconds is None else core_seconds / max(events, 1) * 1e6,
            "segments_encoded": totals.encoded,
            "published": totals.published,
            "rss_mib": rss_mib(),
            "children_rss_mib": children_rss_mib(),
        }
        conn.send(("caught-up", result["end_to_end"]))
        kind, load = await loop.run_in_executor(None, conn.recv)
        if kind != "load-done":
            raise BenchError(f"worker: expected load-done, got {kind!r}")
        # The freshness load runs ahead of the wall clock (compressed event time), so its last
        # windows stay open; what was closed while it was offered is what counts.
        await wait_caught_up(n_events + load["events"], timeout=1800, open_windows_too=False)
        offered = [sample for sample in samples if load["started_ms"] <= sample[0] <= load["ended_ms"]]
        result["freshness"] = {
            "samples": len(offered),
            **percentiles([(ready - closable) / 1000.0 for closable, _, ready in offered]),
            "segmenter": percentiles([(sent - closable) / 1000.0 for closable, sent, _ in offered]),
            "stage": percentiles([(ready - sent) / 1000.0 for _, sent, ready in offered]),
        }
        result["rss_mib"] = rss_mib()

    run_worker(runtime, monitor)
    if "freshness" not in result:  # pragma: no cover - run_worker raises the cause first
        raise BenchError("worker stopped before the freshness phase ended")
    return result


def percentiles(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p99": None, "max": None}
    arr = np.asarray(values, dtype=np.float64)
    return {
        "p50": float(np.percentile(arr, 50)),
        "p99": float(np.percentile(arr, 99)),
        "max": float(arr.max()),
    }
