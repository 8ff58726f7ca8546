"""Bad and awkward input: event-time disorder, late events under both policies, duplicates, idle
users, the segments-per-window cap, and poison pills. Nothing valid is lost, nothing counts twice,
and every refused record reaches the dead-letter topic with its bytes and where it came from."""

from __future__ import annotations

import math
import random
import time
from collections import Counter
from typing import Any

import pytest
from harness import MIN, T0, Pipeline, read_topic, wait_for
from oracle import Rules

from schemas import AvroCodec
from streams.dead_letters import DeadLetterSink
from streams.publisher import MAX_RECORD_BYTES, KafkaPublisher, producer_config
from streams.synthetic import generate

WINDOW = 10 * MIN
B = T0 + 6 * WINDOW  # the scenario's window w0 starts here
EVENT_RULES = dict(window_ms=WINDOW, lateness_ms=MIN, idle_ms=3 * MIN, max_events=4, max_segments=3)


def ev(user: str, at_ms: int, item: str, event_id: str | None) -> dict[str, Any]:
    return {
        "user_id": user,
        "item_id": item,
        "action": "click",
        "event_time_ms": at_ms,
        "weight": None,
        "event_id": event_id,
        "context": {},
    }


def scenario() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """One partition, so one watermark; times relative to w0 = [B, B + 10 min). The second part
    comes after w0 closed and the first part's representations were published."""
    s = 1_000
    first = [
        ev("u-late", B - WINDOW + 60 * s, "old", "l0"),  # an earlier window: a second segment
        ev("u-late", B + 1 * MIN, "b", "l1"),
        ev("u-dup", B + 2 * MIN, "c", "d1"),
        ev("u-dup", B + 2 * MIN, "c", "d1"),  # the same event id again
        ev("u-dup", B + 150 * s, "x", None),
        ev("u-dup", B + 150 * s, "x", None),  # no id: same item, action and time count as one
        ev("u-idle", B + 30 * s, "i1", "i1"),
        ev("u-tick", B + 3 * MIN + 40 * s, "t", "t1"),  # watermark past u-idle's newest + 3 min
        ev("u-idle", B + 4 * MIN, "i2", "i2"),  # so this opens the window's second segment
        *[ev("u-cap", B + 5 * MIN + k * s, f"k{k}", f"k{k}") for k in range(13)],  # 3 x 4 fit, 1 capped
        ev("u-ooo", B + 9 * MIN + 50 * s, "a", "o1"),
        ev("u-ooo", B + WINDOW + 20 * s, "b", "o2"),  # next window; watermark w0 end + 20 s
        ev("u-ooo", B + 9 * MIN + 55 * s, "c", "o3"),  # out of order, within the lateness
        ev("u-tick", B + WINDOW + MIN, "t", "t2"),  # watermark at w0 end + lateness: w0 closes
    ]
    late = [
        ev("u-late", B + 5 * MIN, "late", "l2"),  # after w0 closed: re-opens u-late's segment
        ev("u-dup", B + 2 * MIN, "c", "d1"),  # a late duplicate: counts once still
        ev("u-cap", B + 6 * MIN, "kl", "kl"),  # late into a window at its cap with a full last segment
    ]
    return first, late


def published(pipeline: Pipeline, user: str, segments: int) -> bool:
    codec = AvroCodec("UserRepresentation")
    return any(
        k == user.encode() and len(codec.decode(v)["segments"]) == segments
        for records in pipeline.read("representations").values()
        for _, k, v, _ in records
    )


def by_user(pipeline: Pipeline, expected: Any, user: str) -> list[list[str]]:
    return [[e["item_id"] for e in s.events] for s in expected.segments[user]]


def test_event_time_disorder_late_events_and_duplicates(make_pipeline, figures) -> None:
    reopen = make_pipeline(Rules(**EVENT_RULES), partitions=1)
    dead = make_pipeline(Rules(**EVENT_RULES, late_events="dead-letter"), partitions=1)
    first, late = scenario()
    workers = []
    for pipeline in (reopen, dead):
        pipeline.produce(first)
        workers.append(pipeline.start_worker(pipeline.rules.late_events))
    for pipeline in (reopen, dead):
        wait_for(lambda p=pipeline: published(p, "u-late", segments=2), 180, "u-late's first representation")
        pipeline.produce(late)
        pipeline.add_drain_events()
    for pipeline, worker in zip((reopen, dead), workers, strict=True):
        pipeline.wait_drained([worker])
        assert worker.stop() == 0, worker.log()[-3000:]

    # Both policies end as the oracle says, in the store and on the topic.
    outcomes = {}
    for pipeline, worker in zip((reopen, dead), workers, strict=True):
        outcomes[pipeline.rules.late_events] = pipeline.assert_equal_to_oracle(worker.state_dir)

    # And as worked out by hand.
    want = outcomes["reopen"]
    assert by_user(reopen, want, "u-ooo") == [["a", "c"], ["b"]]
    assert by_user(reopen, want, "u-late") == [["old"], ["b", "late"]]
    assert by_user(reopen, want, "u-dup") == [["c", "x"]]
    assert by_user(reopen, want, "u-idle") == [["i1"], ["i2"]]
    assert [len(s) for s in by_user(reopen, want, "u-cap")] == [4, 4, 4]
    assert want.dead_letters == Counter({"segment-cap": 2})  # the 13th event, then the late one
    strict = outcomes["dead-letter"]
    assert by_user(dead, strict, "u-late") == [["old"], ["b"]]
    assert strict.dead_letters == Counter({"segment-cap": 1, "late": 3})

    for pipeline, expected in ((reopen, want), (dead, strict)):
        dead_letters = [r for records in pipeline.read("dead-letters").values() for r in records]
        reasons = Counter(dict(r[3])["msli.reason"].decode() for r in dead_letters)
        assert reasons == expected.dead_letters

    # The late event re-encoded only its own segment: u-late's two publications share the old one.
    codec = AvroCodec("UserRepresentation")
    u_late = [codec.decode(v) for _, k, v, _ in reopen.read("representations")[0] if k == b"u-late"]
    before, after = u_late[-2], u_late[-1]
    assert [s["event_count"] for s in before["segments"]] == [1, 1]
    assert [s["event_count"] for s in after["segments"]] == [2, 1]
    assert before["segments"][1]["vector"] == after["segments"][1]["vector"]
    assert before["segments"][0]["vector"] != after["segments"][0]["vector"]

    # Each (user, window) closed once on the closed-segments topic (late records aside).
    segments = AvroCodec("ClosedSegment")
    closes = Counter()
    for _, _, value, _ in reopen.read("segments")[0]:
        rec = segments.decode(value)
        if rec["close_reason"] == "window":
            closes[(rec["user_id"], rec["window_start_ms"])] += 1
    assert closes and max(closes.values()) == 1
    figures(
        f"event-time scenario: {sum(len(v) for v in want.segments.values())} segments, "
        f"{want.duplicates} duplicates counted once, dead letters {dict(want.dead_letters)} / "
        f"{dict(strict.dead_letters)} (reopen / dead-letter policy)"
    )


def poison_pills(
    codec: AvroCodec, good: dict[str, Any], now_ms: int, rng: random.Random
) -> list[bytes | None]:
    """Records of every bad kind a producer can send."""
    encoded = codec.encode(good)
    return [
        b"\xde\xad\xbe\xef garbage",
        encoded[: len(encoded) // 2],  # truncated
        AvroCodec("ClosedSegment").encode(  # a record of another schema
            {
                "segment_id": "s",
                "user_id": "u",
                "window_start_ms": 0,
                "window_end_ms": 1,
                "ordinal": 0,
                "close_reason": "window",
                "events": [],
                "source_partition": 0,
                "first_offset": 0,
                "last_offset": 0,
            }
        ),
        None,  # a tombstone
        codec.encode({**good, "user_id": ""}),
        codec.encode({**good, "user_id": "nul\x00user"}),
        codec.encode({**good, "item_id": ""}),
        codec.encode({**good, "event_time_ms": -5}),
        codec.encode({**good, "event_time_ms": now_ms + 400 * 86_400_000}),
        codec.encode({**good, "weight": math.nan}),
        codec.encode({**good, "weight": math.inf}),
        bytes(rng.getrandbits(8) for _ in range(64)),
    ]


@pytest.mark.parametrize(
    ("n_events", "measure"),
    [pytest.param(8_000, False, id="short"), pytest.param(100_000, True, id="full", marks=pytest.mark.slow)],
)
def test_poison_pills_are_dead_lettered_and_cost_no_valid_event(
    make_pipeline, figures, n_events, measure
) -> None:
    rules = Rules(window_ms=60 * MIN, lateness_ms=5_000, idle_ms=30 * MIN, max_events=8)
    pipeline = make_pipeline(rules, partitions=3)
    rng = random.Random(5)
    events = generate(n_users=300, n_events=n_events, seed=5).to_dicts()
    codec = AvroCodec("BehaviourEvent")
    now_ms = int(time.time() * 1000)
    injected: list[bytes | None] = [b"\x00" * (5 * 1024 * 1024)]  # one 5 MB record
    while len(injected) < n_events // 100:
        injected += poison_pills(codec, rng.choice(events), now_ms, rng)
    injected = injected[: n_events // 100]
    # Interleave: each pill goes after a random valid event, on a random partition.
    slots = sorted(rng.sample(range(len(events)), len(injected)))
    stream: list[tuple[bytes | None, bytes | None, int | None]] = []
    pills = iter(injected)
    for i, e in enumerate(events):
        stream.append((e["user_id"].encode(), codec.encode(e), None))
        if slots and slots[0] == i:
            slots.pop(0)
            stream.append((b"poison", next(pills), rng.randrange(3)))
    pipeline.produce_raw(stream)
    bad_segments = [b"not a closed segment", _closed_segment_without_user()]
    pipeline.produce_raw([(b"poison", value, 0) for value in bad_segments], role="segments")
    pipeline.last_event_ms = max(e["event_time_ms"] for e in events)
    pipeline.add_drain_events()
    worker = pipeline.start_worker("w")
    pipeline.wait_drained([worker])
    assert worker.stop() == 0, worker.log()[-3000:]

    expected = pipeline.assert_equal_to_oracle(worker.state_dir)  # no valid event lost
    assert sum(expected.dead_letters.values()) == len(injected)

    source = {(p, r[0]): r[2] for p, records in pipeline.read("events").items() for r in records}
    dead = [r for records in pipeline.read("dead-letters").values() for r in records]
    from_segments = [
        r for r in dead if dict(r[3])["msli.source.topic"] == pipeline.topics["segments"].encode()
    ]
    assert sorted(r[2] for r in from_segments) == sorted(bad_segments)  # the encoder stage's, with bytes
    assert sorted(dict(r[3])["msli.reason"] for r in from_segments) == [b"missing-user", b"undecodable"]
    dead = [r for r in dead if r not in from_segments]
    assert len(dead) == len(injected)
    seen = set()
    for _, _, value, headers in dead:
        h = {k: v.decode() for k, v in headers}
        where = (int(h["msli.source.partition"]), int(h["msli.source.offset"]))
        assert h["msli.source.topic"] == pipeline.topics["events"]
        assert value == source[where]  # the original bytes, 5 MB included
        assert h["msli.reason"] == expected.dead_letter_offsets[where]
        seen.add(where)
    assert seen == set(expected.dead_letter_offsets)
    text = f"{len(events):,} events + {len(injected)} pills {dict(expected.dead_letters)}: all dead-lettered"
    if measure:  # pills only cost the segmenter: time it reading the stream with and without them
        clean = [(k, v, p) for k, v, p in stream if k != b"poison"]
        timings: dict[str, list[float]] = {"with": [], "without": []}
        for _ in range(2):
            for label, records in (("without", clean), ("with", stream)):
                timings[label].append(segmenter_seconds(make_pipeline(rules, partitions=3), records, events))
        best = {label: min(t) for label, t in timings.items()}
        text += (
            f"; segmenter read the stream in {best['with']:.1f} s with pills, {best['without']:.1f} s "
            f"without (best of 2: {len(events) / best['with']:,.0f} vs {len(events) / best['without']:,.0f} "
            f"valid events/s)"
        )
    figures(text)


def segmenter_seconds(pipeline: Pipeline, records: list, events: list[dict[str, Any]]) -> float:
    """Seconds from a worker's partitions being assigned to its segmenter having read every valid
    event, from its status lines (every 0.2 s here): polling Kafka would cost more than it measures."""
    pipeline.produce_raw(records)
    pipeline.last_event_ms = max(e["event_time_ms"] for e in events)
    pipeline.add_drain_events()
    worker = pipeline.start_worker("timed", MSLI_STATUS_INTERVAL_SECONDS="0.2")
    assigned_at = worker.started + pipeline.wait_assigned(worker)
    target = len(events) + pipeline.partitions  # and the drain events
    done = rf"status: {target} events"
    wait_for(lambda: worker.logged_at(done), 600, "the segmenter to read every event", every=0.5)
    seconds = worker.logged_at(done)[0] - assigned_at
    worker.kill()
    return seconds


def _closed_segment_without_user() -> bytes:
    return AvroCodec("ClosedSegment").encode(
        {
            "segment_id": ":0:0",
            "user_id": "",
            "window_start_ms": 0,
            "window_end_ms": 1,
            "ordinal": 0,
            "close_reason": "window",
            "events": [
                {"item_id": "i", "action": "view", "event_time_ms": 0, "weight": None, "event_id": "e"}
            ],
            "source_partition": 0,
            "first_offset": 0,
            "last_offset": 0,
        }
    )


def test_a_dead_letter_too_big_for_kafka_keeps_its_start_and_says_so(kafka_bootstrap, create_topic) -> None:
    topic = create_topic("dead-letters", config={"max.message.bytes": str(MAX_RECORD_BYTES + 64 * 1024)})
    publisher = KafkaPublisher(producer_config({"bootstrap.servers": kafka_bootstrap}))
    value = random.Random(7).randbytes(MAX_RECORD_BYTES + 1000)
    DeadLetterSink(publisher, topic).send(
        key=b"k", value=value, source_topic="events", partition=2, offset=7, reason="oversized", detail="big"
    )
    publisher.close()
    [(_, key, kept, headers)] = read_topic(kafka_bootstrap, topic)[0]
    assert (key, kept) == (b"k", value[:MAX_RECORD_BYTES])
    assert dict(headers)["msli.truncated"] == str(len(value)).encode()
    assert dict(headers)["msli.source.offset"] == b"7"
