"""The worker's closing rules against the test oracle's, on random streams with every hard case:
out-of-order and late events, duplicates, idle users, size and segments-per-window caps."""

from __future__ import annotations

import random
from collections import defaultdict

import pytest
from oracle import Closed, Rules, close_partition, identity, merge

from streams.windowing import SegmentationConfig, SegmentCloser

MIN = 60_000
WINDOW = 10 * MIN


def random_stream(seed: int, n: int = 600) -> list[dict]:
    """A few users in bursts across windows; some events trail the stream, some repeat."""
    rng = random.Random(seed)
    t = 1_700_000_000_000 - 1_700_000_000_000 % WINDOW
    events = []
    for k in range(n):
        gap = rng.random()  # mostly bursts; sometimes a pause of exactly, or past, the idle timeout
        if gap < 0.03:  # exactly where the window closes (end + lateness), to test the boundary
            t = t - t % WINDOW + WINDOW + MIN
        elif gap < 0.07:
            t += rng.choice([6, 7, 25]) * MIN
        else:
            t += rng.choice([0, 0, 1_000, 5_000, 20_000])
        user = f"u{rng.randrange(3)}"
        if events and rng.random() < 0.08:  # a repeat: same event id, or same content without one
            events.append(dict(rng.choice(events[-30:])))
            continue
        when = t - rng.choice([0, 0, 0, 30_000, 4 * MIN, 15 * MIN]) if rng.random() < 0.15 else t
        with_id = rng.random() < 0.7
        events.append(
            {
                "user_id": user,
                "item_id": f"i{rng.randrange(40)}",
                "action": rng.choice(["click", "view"]),
                "event_time_ms": when,
                "weight": None,
                "event_id": f"e{k}" if with_id else None,
            }
        )
    return events


def worker_outcome(events: list[dict], rules: Rules) -> tuple[list[Closed], list[tuple[int, str]], int, int]:
    closer = SegmentCloser(
        SegmentationConfig(
            window_ms=rules.window_ms,
            allowed_lateness_ms=rules.lateness_ms,
            user_idle_ms=rules.idle_ms,
            max_events=rules.max_events,
            max_segments=rules.max_segments,
            late_events=rules.late_events,  # type: ignore[arg-type]
            staggered_windows=rules.staggered,
        ),
        partition=0,
    )
    dead = []
    for offset, e in enumerate(events):
        closer.add(
            offset, e["user_id"], e["item_id"], e["action"], e["event_time_ms"], e["weight"], e["event_id"]
        )
        dead += [(o, "late") for o in closer.late_offsets] + [
            (o, "segment-cap") for o in closer.capped_offsets
        ]
        closer.late_offsets.clear()
        closer.capped_offsets.clear()
    closed = [
        Closed(r["user_id"], r["window_start_ms"], r["close_reason"], r["events"]) for r in closer.closed
    ]
    return closed, dead, closer.duplicates, closer.open_events()


def per_key(closed: list[Closed]) -> dict[tuple[str, int], list[tuple[str, list]]]:
    """Records per (user, window) in emission order: the only order the store's result depends on."""
    grouped: dict[tuple[str, int], list[tuple[str, list]]] = defaultdict(list)
    for c in closed:
        grouped[(c.user, c.window)].append((c.reason, [identity(e) for e in c.events]))
    return dict(grouped)


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("late_events", ["reopen", "dead-letter"])
@pytest.mark.parametrize("staggered", [False, True], ids=["aligned", "staggered"])
def test_segment_closer_agrees_with_the_oracle(seed: int, late_events: str, staggered: bool) -> None:
    rules = Rules(
        window_ms=WINDOW,
        lateness_ms=MIN,
        idle_ms=6 * MIN,
        max_events=3,
        max_segments=2,
        late_events=late_events,
        staggered=staggered,
    )
    events = random_stream(seed)
    closed, dead, duplicates, open_events = worker_outcome(events, rules)
    want = close_partition(enumerate(events), rules)
    assert per_key(closed) == per_key(want.closed)
    assert dead == want.dead_letters
    assert (duplicates, open_events) == (want.duplicates, want.open_events)
    reasons = {c.reason for c in want.closed}
    assert {"window", "idle", "size"} <= reasons  # the stream exercises every rule
    assert any(r == "segment-cap" for _, r in want.dead_letters)
    assert want.duplicates > 0


def _event(user: str, item: str, t: int, event_id: str | None = None) -> dict:
    return {
        "user_id": user,
        "item_id": item,
        "action": "click",
        "event_time_ms": t,
        "weight": None,
        "event_id": event_id,
    }


def test_oracle_closing_rules_on_a_hand_worked_stream() -> None:
    rules = Rules(window_ms=WINDOW, lateness_ms=MIN, idle_ms=3 * MIN, max_events=2)
    t0 = 1_700_000_400_000 - 1_700_000_400_000 % WINDOW
    events = [
        _event("a", "x", t0 + 1_000, "1"),
        _event("a", "x", t0 + 1_000, "1"),  # duplicate
        _event("a", "y", t0 + 2_000, "2"),  # size cap: a:w0 closes with x, y
        _event("a", "z", t0 + 3_000, "3"),  # opens the window's second segment
        _event("b", "q", t0 + 5 * MIN, "4"),  # a idle for 3 min of event time: closes
        _event("b", "r", t0 + WINDOW + 2 * MIN, "5"),  # watermark past w0 end + lateness: b closes
        _event("a", "late", t0 + 4_000, "6"),  # a's window closed: late
    ]
    out = close_partition(enumerate(events), rules)
    assert [(c.user, c.reason, [e["item_id"] for e in c.events]) for c in out.closed] == [
        ("a", "size", ["x", "y"]),
        ("a", "idle", ["z"]),
        ("b", "window", ["q"]),
        ("a", "late", ["late"]),
    ]
    assert out.duplicates == 1 and out.open_events == 1


def test_oracle_merge_fills_the_last_segment_then_caps() -> None:
    rules = Rules(window_ms=WINDOW, lateness_ms=MIN, idle_ms=MIN, max_events=2, max_segments=2)
    e = [_event("a", f"i{k}", 1_000 + k, str(k)) for k in range(6)]
    records = [
        Closed("a", 0, "size", [e[0], e[1]]),
        Closed("a", 0, "idle", [e[2]]),
        Closed("a", 0, "idle", [e[2]]),  # a replayed fragment: nothing new
        Closed("a", 0, "late", [e[3]]),  # fills the last segment
        Closed("a", 0, "late", [e[4]]),  # no room, no segment left: capped
    ]
    windows, capped = merge(records, rules)
    assert [[x["item_id"] for x in seg] for seg in windows[("a", 0)]] == [["i0", "i1"], ["i2", "i3"]]
    assert capped == 1
