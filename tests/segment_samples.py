"""Random segments for encoder tests: lengths from one event to past max_events, ids, actions,
sorted event times and weights (some missing), reproducible from a seed."""

from __future__ import annotations

import random

from encoders import SegmentInput


def random_segments(n: int, seed: int) -> list[SegmentInput]:
    rng = random.Random(seed)
    segments = []
    for _ in range(n):
        length = rng.choice([1, 2, 3, 7, 16, 40, 300])  # 300: longer than max_events, cut to the newest
        segments.append(
            SegmentInput(
                item_ids=[f"i{rng.randrange(2_000)}" for _ in range(length)],
                actions=[rng.randrange(10) for _ in range(length)],
                event_times_ms=sorted(1_700_000_000_000 + rng.randrange(10**8) for _ in range(length)),
                weights=[rng.choice([None, 1.0, 4.5]) for _ in range(length)],
            )
        )
    return segments
