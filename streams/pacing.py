"""Pace a stream: at most N records per second, or event time replayed N times faster than real.

Used by `msli produce --rate/--speedup` (backfilling a fresh topic from files as if live) and by
`msli replay --rate` (so a backfill leaves the broker and the encoder room for live traffic).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

__all__ = ["RateLimiter", "paced_events"]


class RateLimiter:
    """`wait(n)` before handling n more records keeps the average at or under `rate` per second."""

    def __init__(
        self,
        rate: float | None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if rate is not None and rate <= 0:
            raise ValueError("rate must be positive")
        self.rate = rate
        self._clock, self._sleep = clock, sleep
        self._started: float | None = None
        self._count = 0

    def wait(self, n: int = 1) -> None:
        if self.rate is None:
            return
        now = self._clock()
        if self._started is None:
            self._started = now
        due = self._started + self._count / self.rate  # when the records handled so far were allowed
        if due > now:
            self._sleep(due - now)
        self._count += n


def paced_events(
    events: Iterable[Mapping[str, Any]],
    *,
    rate: float | None = None,
    speedup: float | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> Iterator[Mapping[str, Any]]:
    """Yield events no faster than `rate`/s and, with `speedup`, no earlier than their event time
    (relative to the first event) divided by `speedup`. Events should be in event-time order."""
    if speedup is not None and speedup <= 0:
        raise ValueError("speedup must be positive")
    limiter = RateLimiter(rate, clock, sleep)
    first_event_ms: int | None = None
    started = clock()
    for event in events:
        if speedup is not None:
            if first_event_ms is None:
                first_event_ms = int(event["event_time_ms"])
            due = started + (int(event["event_time_ms"]) - first_event_ms) / 1000 / speedup
            now = clock()
            if due > now:
                sleep(due - now)
        limiter.wait()
        yield event
