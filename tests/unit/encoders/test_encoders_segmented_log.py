"""The offline log is cut by the worker's closing rules, and a state sees only what had closed."""

import random

import pytest

from encoders import EncoderError, ItemVocabulary
from encoders.segmented_log import SegmentedLog, log_digest
from streams.synthetic import generate
from streams.windowing import SegmentationConfig, SegmentCloser

MIN = 60_000
RULES = SegmentationConfig(window_ms=60 * MIN, allowed_lateness_ms=MIN, user_idle_ms=10 * MIN, max_events=3)


def ev(user, item, ms):
    return {"user_id": user, "item_id": item, "action": "click", "event_time_ms": ms, "weight": None}


# Log positions after sorting by time: 0 a, 1 b, 2 c, 3 d, 4 x, 5 y, 6 f.
EVENTS = [
    ev("u", "a", 0),
    ev("v", "y", 50 * MIN),  # file order differs from time order
    ev("u", "b", 10_000),
    ev("u", "c", 20_000),  # the size cap closes u:0:0 while this event is processed
    ev("u", "d", 30_000),
    ev("v", "x", 5 * MIN),
    ev("u", "f", 55 * MIN),  # u:0:1 closed idle when y moved the watermark to 50 min
]


@pytest.fixture
def log():
    return SegmentedLog(EVENTS, RULES, ItemVocabulary.explicit(list("abcdfxy")))


def test_segments_and_when_they_closed(log):
    got = [
        (log.users[s.user], s.window_start_ms, s.ordinal, s.closed_at, s.close_reason) for s in log.segments
    ]
    assert got == [("u", 0, 0, 2, "size"), ("u", 0, 1, 5, "idle")]
    assert list(log.segments[0].events.item_ids) == ["a", "b", "c"]
    assert log.segments[1].last_event_ms == 30_000


def test_state_sees_only_segments_closed_before_the_event(log):
    u = log.users.index("u")
    assert log.state(u, 2, k=16).segments == ()  # c closes u:0:0 itself: not visible to c
    assert log.state(u, 3, k=16).segments == (0,)
    assert log.state(u, 6, k=16).segments == (1, 0)  # newest first
    assert log.state(u, 6, k=1).segments == (1,)
    assert log.closed_before(u, 5) == 1 and log.closed_before(u, 6) == 2


def test_leave_one_out_split(log):
    u, v = log.users.index("u"), log.users.index("v")
    assert log.split_positions(u) == ((0, 1, 2), 3, 6)
    assert log.split_positions(v) == ((4, 5), None, None)  # fewer than three events: all training
    assert log.holdout("test") == [(u, 6)] and log.holdout("valid") == [(u, 3)]
    assert log.training_positions().tolist() == [0, 1, 2, 4, 5]


def test_open_events_and_history(log):
    u = log.users.index("u")
    assert list(log.open_events(u, 4).item_ids) == ["d"]
    assert log.open_events(u, 6) is None
    assert list(log.history_input(u, 6, max_events=2).item_ids) == ["c", "d"]
    with pytest.raises(EncoderError):
        log.history_input(u, 0, max_events=2)


def test_no_state_sees_a_closing_decision_made_at_or_after_its_event():
    """Oracle: a fresh SegmentCloser fed only the events before position j closes exactly the
    segments the state at j is built from."""
    events = generate(n_users=30, n_items=80, n_events=1500, seed=3).to_dicts()
    rules = SegmentationConfig(
        window_ms=30 * MIN, allowed_lateness_ms=MIN, user_idle_ms=5 * MIN, max_events=4
    )
    log = SegmentedLog(events, rules, ItemVocabulary.explicit(sorted({e["item_id"] for e in events})))
    rng = random.Random(0)
    positions = rng.sample(range(len(log.events)), 25) + [p for _, p in log.holdout("test")][:10]
    for j in positions:
        closer = SegmentCloser(rules, partition=0)
        closed = set()
        for i, e in enumerate(log.events[:j]):
            closer.add(
                i, e["user_id"], e["item_id"], e["action"], e["event_time_ms"], e["weight"], e["event_id"]
            )
            closed |= {(r["user_id"], r["window_start_ms"], r["ordinal"]) for r in closer.closed}
            closer.closed.clear()
        user = int(log.event_user[j])
        state = log.state(user, j, k=10_000)
        got = {
            (log.users[user], log.segments[s].window_start_ms, log.segments[s].ordinal)
            for s in state.segments
        }
        assert got == {c for c in closed if c[0] == log.users[user]}
        assert all(log.segments[s].last_event_ms <= log.events[j]["event_time_ms"] for s in state.segments)


def test_digest_names_the_content_not_the_order():
    assert log_digest(EVENTS) == log_digest(list(reversed(EVENTS)))
    assert log_digest(EVENTS) != log_digest(EVENTS[:-1])


def test_empty_log_is_refused():
    with pytest.raises(EncoderError, match="empty"):
        SegmentedLog([], RULES, ItemVocabulary.explicit(["a"]))
