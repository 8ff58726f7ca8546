"""The closing rules, written again from their description, one event at a time.

Deliberately not streams.windowing: no heaps, no shared helpers, different bookkeeping (windows
grouped by start, open segments scanned when the watermark passes the earliest idle deadline), so
a bug in the worker's rules shows up as a difference instead of being copied here.

The rules, per partition, for events in offset order (README "How it behaves", DESIGN "Words"):
a user's windows are tumbling, shifted by crc32(user id) mod the window length when staggered; an
event whose window ended (plus the allowed lateness) at or before the watermark is late; a
repeat of an event already in its open window (same event id, else same item, action and time)
counts once; a window that opened `max_segments` segments takes no new one (the event is capped);
a segment of `max_events` events closes (`size`); then, if the event time is past the watermark,
the watermark moves there, windows it passed close (`window`), and segments whose newest event is
`idle_ms` behind it close (`idle`). Wall-clock advances of quiet partitions are not modelled: tests
keep MSLI_PARTITION_IDLE_SECONDS above any pause in their traffic.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Rules:
    """The settings the outcome depends on, in milliseconds; tests build the worker's env from it."""

    window_ms: int
    lateness_ms: int
    idle_ms: int
    max_events: int
    max_segments: int = 64
    late_events: str = "reopen"  # or "dead-letter"
    top_k: int = 16
    half_life_ms: float = 7 * 86_400_000.0
    max_record_bytes: int = 64 * 1024
    max_future_ms: int = 3_600_000
    staggered: bool = False  # each user's windows shifted by crc32(user id) mod window_ms

    def window_start(self, user: str, t: int) -> int:
        phase = zlib.crc32(user.encode("utf-8")) % self.window_ms if self.staggered else 0
        return (t - phase) // self.window_ms * self.window_ms + phase

    def env(self) -> dict[str, str]:
        """The MSLI_* variables that make a worker follow these rules."""
        return {
            "MSLI_WINDOW_SECONDS": str(self.window_ms / 1000),
            "MSLI_ALLOWED_LATENESS_SECONDS": str(self.lateness_ms / 1000),
            "MSLI_USER_IDLE_SECONDS": str(self.idle_ms / 1000),
            "MSLI_MAX_EVENTS_PER_SEGMENT": str(self.max_events),
            "MSLI_MAX_SEGMENTS_PER_USER_WINDOW": str(self.max_segments),
            "MSLI_LATE_EVENTS": self.late_events,
            "MSLI_TOP_K_SEGMENTS": str(self.top_k),
            "MSLI_RECENCY_HALF_LIFE_SECONDS": str(self.half_life_ms / 1000),
            "MSLI_MAX_RECORD_BYTES": str(self.max_record_bytes),
            "MSLI_MAX_FUTURE_SECONDS": str(self.max_future_ms / 1000),
            "MSLI_STAGGERED_WINDOWS": "true" if self.staggered else "false",
        }


@dataclass
class Closed:
    """A closed-segments record as the worker must emit it (ordinals are the store's business)."""

    user: str
    window: int
    reason: str  # window | idle | size | late
    events: list[dict[str, Any]]


@dataclass
class PartitionOutcome:
    closed: list[Closed] = field(default_factory=list)
    dead_letters: list[tuple[int, str]] = field(default_factory=list)  # (offset, reason)
    duplicates: int = 0
    open_events: int = 0  # events still in open segments at the end


class _Window:
    def __init__(self) -> None:
        self.seen: set[object] = set()
        self.opened = 0
        self.open: list[dict[str, Any]] | None = None
        self.newest = -math.inf  # newest event time in the open segment


def identity(event: dict[str, Any]) -> object:
    """What makes two deliveries the same event."""
    if event.get("event_id") is not None:
        return event["event_id"]
    return (event["item_id"], event["action"], event["event_time_ms"])


def segment_event(event: dict[str, Any]) -> dict[str, Any]:
    """The fields of an event a ClosedSegment keeps."""
    return {k: event.get(k) for k in ("item_id", "action", "event_time_ms", "weight", "event_id")}


def close_partition(events: Iterable[tuple[int, dict[str, Any]]], rules: Rules) -> PartitionOutcome:
    """Apply the rules to one partition's valid events, given as (offset, event) in offset order."""
    out = PartitionOutcome()
    W, L = rules.window_ms, rules.lateness_ms
    watermark = -math.inf
    windows: dict[tuple[str, int], _Window] = {}
    users_by_start: dict[int, set[str]] = {}
    earliest_idle = math.inf  # never later than the earliest idle deadline of an open segment

    def close(key: tuple[str, int], reason: str) -> None:
        state = windows[key]
        assert state.open is not None
        out.closed.append(Closed(key[0], key[1], reason, state.open))
        state.open = None

    for offset, event in events:
        t, user = event["event_time_ms"], event["user_id"]
        start = rules.window_start(user, t)
        if start + W + L <= watermark:
            if rules.late_events == "reopen":
                out.closed.append(Closed(user, start, "late", [segment_event(event)]))
            else:
                out.dead_letters.append((offset, "late"))
            continue
        key = (user, start)
        if key not in windows:
            windows[key] = _Window()
            users_by_start.setdefault(start, set()).add(user)
        state = windows[key]
        if identity(event) in state.seen:
            out.duplicates += 1
        elif state.open is None and state.opened >= rules.max_segments:
            out.dead_letters.append((offset, "segment-cap"))
        else:
            state.seen.add(identity(event))
            if state.open is None:
                state.open, state.opened, state.newest = [], state.opened + 1, -math.inf
            state.open.append(segment_event(event))
            state.newest = max(state.newest, t)
            earliest_idle = min(earliest_idle, state.newest + rules.idle_ms)
            if len(state.open) >= rules.max_events:
                close(key, "size")

        if t <= watermark:
            continue
        watermark = t
        for passed in sorted(s for s in users_by_start if s + W + L <= watermark):
            for u in sorted(users_by_start.pop(passed)):
                if windows[(u, passed)].open is not None:
                    close((u, passed), "window")
                del windows[(u, passed)]
        if watermark >= earliest_idle:
            for k, s in windows.items():
                if s.open is not None and s.newest + rules.idle_ms <= watermark:
                    close(k, "idle")
            idle = [s.newest + rules.idle_ms for s in windows.values() if s.open is not None]
            earliest_idle = min(idle, default=math.inf)

    out.open_events = sum(len(s.open) for s in windows.values() if s.open is not None)
    return out
