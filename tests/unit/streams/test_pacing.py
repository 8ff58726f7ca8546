"""Rate caps and event-time speedup, on a fake clock."""

from __future__ import annotations

import pytest

from streams.pacing import RateLimiter, paced_events


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds > 0
        self.now += seconds


def test_rate_limiter_keeps_the_average_under_the_rate() -> None:
    clock = FakeClock()
    limiter = RateLimiter(10.0, clock, clock.sleep)
    for _ in range(5):
        limiter.wait(20)  # batches of 20 at 10/s: 2 s apart
    assert clock.now == pytest.approx(100.0 + 8.0)
    assert RateLimiter(None).rate is None
    with pytest.raises(ValueError):
        RateLimiter(0)


def test_speedup_replays_event_time_faster_and_rate_still_caps() -> None:
    events = [{"event_time_ms": 1_000_000 + k * 60_000} for k in range(4)]  # a minute apart
    clock = FakeClock()
    times = [clock.now for _ in paced_events(events, speedup=60, clock=clock, sleep=clock.sleep)]
    assert times == pytest.approx([100.0, 101.0, 102.0, 103.0])  # 60x: a second apart
    clock = FakeClock()
    times = [clock.now for _ in paced_events(events, speedup=60, rate=0.5, clock=clock, sleep=clock.sleep)]
    assert times == pytest.approx([100.0, 102.0, 104.0, 106.0])  # the rate is the tighter bound
