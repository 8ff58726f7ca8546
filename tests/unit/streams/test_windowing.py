"""The closing rules, event by event, and the checkpoint's promise that a replay rebuilds state."""

from __future__ import annotations

import dataclasses
import random
import zlib

import pytest

from schemas import ACTIONS, AvroCodec
from streams.windowing import NO_WATERMARK, SegmentationConfig, SegmentCloser

MIN = 60_000
HOUR = 60 * MIN
RULES = SegmentationConfig(window_ms=HOUR, allowed_lateness_ms=MIN, user_idle_ms=10 * MIN, max_events=4)


def feed(closer: SegmentCloser, events: list[tuple], start_offset: int = 0) -> list[dict]:
    for offset, (user, item, ts) in enumerate(events, start=start_offset):
        closer.add(offset, user, item, "click", ts)
    out = list(closer.closed)
    closer.closed.clear()
    return out


def summary(records: list[dict]) -> list[tuple]:
    return [(r["segment_id"], r["close_reason"], [e["item_id"] for e in r["events"]]) for r in records]


def test_window_closes_when_watermark_passes_end_plus_lateness() -> None:
    closer = SegmentCloser(dataclasses.replace(RULES, user_idle_ms=2 * HOUR), partition=0)
    out = feed(closer, [("u", "a", 1_000), ("u", "b", 2_000), ("v", "x", HOUR + 30_000)])
    assert out == []  # v's event is at end + 30 s: within the lateness
    out = feed(closer, [("v", "y", HOUR + MIN)], start_offset=3)
    assert summary(out) == [("u:0:0", "window", ["a", "b"])]
    assert out[0]["window_end_ms"] == HOUR
    assert (out[0]["first_offset"], out[0]["last_offset"]) == (0, 1)


def test_out_of_order_event_within_lateness_joins_its_window() -> None:
    closer = SegmentCloser(RULES, partition=0)
    feed(closer, [("u", "a", HOUR - 1_000), ("w", "x", HOUR + 20_000), ("u", "late-ok", HOUR - 500)])
    out = feed(closer, [("w", "y", HOUR + 2 * MIN)], start_offset=3)
    assert summary(out) == [("u:0:0", "window", ["a", "late-ok"])]


def test_event_after_its_window_closed_becomes_a_late_record() -> None:
    closer = SegmentCloser(RULES, partition=0)
    feed(closer, [("u", "a", 1_000), ("w", "x", 2 * HOUR)])
    closer.closed.clear()
    out = feed(closer, [("u", "too-late", 2_000)], start_offset=2)
    assert summary(out) == [("u:0:-1", "late", ["too-late"])]
    assert closer.late == 1


def test_late_events_go_to_dead_letters_when_configured() -> None:
    closer = SegmentCloser(dataclasses.replace(RULES, late_events="dead-letter"), partition=0)
    feed(closer, [("u", "a", 1_000), ("w", "x", 2 * HOUR)])
    out = feed(closer, [("u", "too-late", 2_000)], start_offset=2)
    assert out == [] and closer.late_offsets == [2]


def test_size_cap_splits_a_window_into_ordinals() -> None:
    closer = SegmentCloser(RULES, partition=0)
    out = feed(closer, [("u", f"i{k}", 1_000 + k) for k in range(9)])
    assert summary(out) == [
        ("u:0:0", "size", ["i0", "i1", "i2", "i3"]),
        ("u:0:1", "size", ["i4", "i5", "i6", "i7"]),
    ]
    closer.advance_watermark(10 * HOUR)
    assert summary(closer.closed) == [("u:0:2", "window", ["i8"])]


def test_idle_user_closes_and_a_later_event_opens_the_next_ordinal() -> None:
    closer = SegmentCloser(RULES, partition=0)
    out = feed(closer, [("u", "a", 0), ("v", "x", 5 * MIN), ("v", "y", 10 * MIN)])
    assert summary(out) == [("u:0:0", "idle", ["a"])]
    out = feed(closer, [("u", "b", 11 * MIN)], start_offset=3)
    assert out == []
    closer.advance_watermark(HOUR + MIN)
    assert sorted((r["segment_id"], r["close_reason"]) for r in closer.closed) == [
        ("u:0:1", "window"),
        ("v:0:0", "window"),
    ]


def test_duplicates_count_once_by_event_id_or_content() -> None:
    closer = SegmentCloser(RULES, partition=0)
    closer.add(0, "u", "a", "click", 1_000, event_id="e1")
    closer.add(1, "u", "b", "click", 2_000, event_id="e1")  # same id: a redelivery
    closer.add(2, "u", "c", "view", 3_000)
    closer.add(3, "u", "c", "view", 3_000)  # same content, no id
    closer.advance_watermark(2 * HOUR)
    assert summary(closer.closed) == [("u:0:0", "window", ["a", "c"])]
    assert closer.duplicates == 2


def test_quiet_partition_closes_through_an_external_watermark_advance() -> None:
    closer = SegmentCloser(RULES, partition=0)
    feed(closer, [("u", "a", 1_000)])
    assert closer.open_segments == 1
    closer.advance_watermark(1_000 + 10 * MIN)
    assert summary(closer.closed) == [("u:0:0", "idle", ["a"])]
    closer.closed.clear()
    closer.advance_watermark(HOUR + MIN)
    assert closer.closed == [] and closer.open_windows == 0


def test_watermark_never_moves_back() -> None:
    closer = SegmentCloser(RULES, partition=0)
    assert closer.watermark == NO_WATERMARK
    feed(closer, [("u", "a", 5 * HOUR), ("u", "b", 5 * HOUR - 30_000)])
    closer.advance_watermark(HOUR)
    assert closer.watermark == 5 * HOUR


def test_checkpoint_points_at_the_oldest_open_window() -> None:
    closer = SegmentCloser(RULES, partition=0)
    assert closer.checkpoint() is None
    feed(closer, [("u", "a", 1_000), ("v", "b", 2_000)])
    assert closer.checkpoint() == (0, NO_WATERMARK)
    feed(closer, [("w", "c", HOUR + 2 * MIN)], start_offset=2)  # closes u and v's window
    assert closer.checkpoint() == (2, 2_000)


def random_stream(seed: int, n: int) -> list[tuple]:
    rng = random.Random(seed)
    t, events = 0, []
    for _ in range(n):
        t += rng.randint(0, 4 * MIN)
        skew = rng.choice([0, 0, 0, -rng.randint(0, 3 * MIN)])  # some out of order, some late
        events.append((f"u{rng.randint(0, 6)}", f"i{rng.randint(0, 50)}", max(0, t + skew)))
    return events


@pytest.mark.parametrize("seed", range(20))
def test_replay_from_a_checkpoint_rebuilds_every_open_segment(seed: int) -> None:
    """A crash at any point, then a replay from the checkpoint with its watermark: every segment of
    the uninterrupted run comes out of the prefix or the replay, and anything else the replay sends
    holds only events the prefix had already sent (the store drops those)."""
    events = random_stream(seed, 300)
    cut = random.Random(seed).randint(1, len(events) - 1)

    full = SegmentCloser(RULES, partition=0)
    expected = feed(full, events)
    full.advance_watermark(10**15)
    expected += full.closed

    prefix = SegmentCloser(RULES, partition=0)
    before = feed(prefix, events[:cut])
    offset, watermark = prefix.checkpoint()  # type: ignore[misc]

    replay = SegmentCloser(RULES, partition=0, watermark=watermark)
    after = feed(replay, events[offset:], start_offset=offset)
    replay.advance_watermark(10**15)
    after += replay.closed

    def key(r: dict) -> tuple:
        return (r["segment_id"], tuple((e["item_id"], e["event_time_ms"]) for e in r["events"]))

    got = {key(r) for r in before + after}
    assert {key(r) for r in expected} <= got
    sent_before = {(r["user_id"], e["item_id"], e["event_time_ms"]) for r in before for e in r["events"]}
    for extra in got - {key(r) for r in expected}:
        user = extra[0].split(":")[0]
        assert all((user, item, ts) in sent_before for item, ts in extra[1])


def test_staggered_windows_shift_each_user_by_a_phase_of_its_own() -> None:
    staggered = dataclasses.replace(RULES, staggered_windows=True)
    users = [f"user-{i}" for i in range(200)]
    t = 1_700_000_000_123
    for user in users:
        start = staggered.window_start(user, t)
        assert start <= t < start + HOUR  # the window holds the event
        assert (start - zlib.crc32(user.encode())) % HOUR == 0  # at the user's phase
        assert staggered.window_start(user, start + HOUR) == start + HOUR  # the next one follows
        assert RULES.window_start(user, t) == t - t % HOUR  # aligned without it
    ends = {staggered.window_start(user, t) % HOUR for user in users}
    assert len(ends) > 190  # window ends spread over the hour instead of one moment


def test_staggered_windows_close_users_at_different_watermarks() -> None:
    closer = SegmentCloser(dataclasses.replace(RULES, staggered_windows=True, user_idle_ms=2 * HOUR), 0)
    users = [f"user-{i}" for i in range(50)]
    feed(closer, [(user, "a", 10 * HOUR + 1_000) for user in users])
    closed_at = {}
    for minute in range(1, 125):  # the watermark moves a minute at a time, by another user's event
        for record in feed(closer, [("clock", "x", 10 * HOUR + minute * MIN)], start_offset=1_000 + minute):
            closed_at[record["user_id"]] = minute
    assert set(users) <= set(closed_at)
    assert len({closed_at[u] for u in users}) > 25  # not all in one burst
    for user in users:  # each at its own window's end plus the lateness, to the minute
        end = closer.config.window_start(user, 10 * HOUR + 1_000) + HOUR
        assert closed_at[user] == -(-(end + MIN - 10 * HOUR) // MIN)


def test_a_closer_that_keeps_event_bytes_closes_the_same_segments() -> None:
    """The segmenter's closers keep each event's bytes instead of its fields and write the
    ClosedSegment's bytes around them: byte for byte the default closer's records, encoded."""
    events, segments = AvroCodec("BehaviourEvent"), AvroCodec("ClosedSegment")
    rules = dataclasses.replace(RULES, staggered_windows=True)
    plain = SegmentCloser(rules, partition=3)
    keeping = SegmentCloser(rules, partition=3, write_bytes=segments.encode_closed_segment_parts)
    rng = random.Random(5)
    t = 1_700_000_000_000
    for offset in range(3_000):
        t += rng.choice([0, 1_000, 60_000, 20 * MIN])
        event = {
            "user_id": f"u{rng.randrange(20)}",
            "item_id": f"i{rng.randrange(50)}",
            "action": rng.choice(ACTIONS),
            "event_time_ms": t - rng.choice([0, 0, 0, 2 * MIN, 3 * HOUR]),  # some out of order, some late
            "weight": rng.choice([None, 0.5]),
            "event_id": rng.choice([None, f"e{offset}", f"e{offset - 1}"]),  # some repeats
            "context": {} if rng.random() < 0.9 else {"device": "tv"},
        }
        fields = [event[k] for k in ("user_id", "item_id", "action", "event_time_ms", "weight", "event_id")]
        plain.add(offset, *fields)
        keeping.add(offset, *fields, event_bytes=events.segment_event_bytes(events.encode(event), event))
    plain.advance_watermark(t + 10 * HOUR)
    keeping.advance_watermark(t + 10 * HOUR)
    assert {r["close_reason"] for r in plain.closed} == {"window", "idle", "size", "late"}
    assert [segments.encode(r) for r in plain.closed] == keeping.closed
    with pytest.raises(ValueError, match="needs every event's event_bytes"):
        keeping.add(3_000, "u1", "i1", "click", t)
