"""The closing rules: which events form a segment, and when it closes. Pure, no Kafka.

One `SegmentCloser` holds one partition's open segments. Events are processed in offset order;
every decision depends only on that order and on watermark advances, so re-processing the same
input from a checkpoint gives byte-identical segments. The rules, per event e of user u:

1. Window w = floor((e.time - phase(u)) / window) * window + phase(u): u's windows are tumbling,
   shifted by a phase of its own (`staggered_windows`, below). If w + window + lateness <= watermark,
   the window has closed: e is late (re-opened through a `late` record, or dead-lettered, as
   configured).
2. A duplicate of an event already in an open window (same event_id, or same item, action and time
   when there is no id) counts once.
3. e joins u's open segment in w, or opens one with the window's next ordinal. A segment that
   reaches `max_events` closes (`size`). A window that already opened `max_segments` segments opens
   no more: e is capped (dead-lettered), so one user's flood costs bounded memory.
4. The watermark becomes max(watermark, e.time). When it grows, windows whose end + lateness it
   reached close (`window`, and their state is forgotten), then segments whose newest event is
   `user_idle` older than it close (`idle`). The window stays open for u's later events.

The watermark also advances from outside (a quiet partition follows the wall clock), through
`advance_watermark`. The segmenter logs such advances so a replay applies them at the same offset.

Why users' windows are shifted. If every user's windows ended at the same moment, the watermark
passing that end would close at once the open segment of every user active in the last half hour
(idle closes the others): about half of all segments, in one burst per window (the synthetic
stream, docs/performance.md fifth round). At a steady 10,000 events/s in real time that is some
3 million segments at each hour's end, many minutes of encoding for one worker that idles the rest
of the hour. With `staggered_windows` (the worker's default), phase(u) = crc32(u) mod window, so
window ends, and the closings they cause, spread evenly over the window. Without it phase(u) = 0:
every user's windows are aligned, as Kafka Streams' and Flink's tumbling windows are, and as
checkpoints that record no `staggered_windows` were trained.
"""

from __future__ import annotations

import heapq
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

__all__ = ["NO_WATERMARK", "ClosedHead", "SegmentCloser", "SegmentationConfig", "closed_segment_record"]

NO_WATERMARK = -(2**63)

# An event inside a segment: (item_id, action, event_time_ms, weight, event_id)
EventTuple = tuple[str, str, int, "float | None", "str | None"]


class ClosedHead(NamedTuple):
    """A closed segment's fields other than its events, in the ClosedSegment schema's order."""

    segment_id: str
    user_id: str
    window_start_ms: int
    window_end_ms: int
    ordinal: int
    close_reason: str
    source_partition: int
    first_offset: int
    last_offset: int


def closed_segment_record(head: ClosedHead, events: list[EventTuple]) -> dict[str, Any]:
    """A closed segment as a ClosedSegment record, its events in arrival order."""
    return {
        "segment_id": head.segment_id,
        "user_id": head.user_id,
        "window_start_ms": head.window_start_ms,
        "window_end_ms": head.window_end_ms,
        "ordinal": head.ordinal,
        "close_reason": head.close_reason,
        "events": [
            {"item_id": i, "action": a, "event_time_ms": t, "weight": w, "event_id": e}
            for i, a, t, w, e in events
        ],
        "source_partition": head.source_partition,
        "first_offset": head.first_offset,
        "last_offset": head.last_offset,
    }


@dataclass(frozen=True)
class SegmentationConfig:
    """The closing rules' parameters, shared by the worker, the trainer and the test oracle."""

    window_ms: int = 3_600_000  # tumbling event-time window length
    allowed_lateness_ms: int = 60_000  # a window closes when the watermark passes its end plus this
    user_idle_ms: int = 1_800_000  # event-time gap after a user's newest event that closes the segment
    max_events: int = 32  # size cap: a segment this long closes and the window starts another
    max_segments: int = 64  # segments one user may open in one window; further events are capped
    late_events: Literal["reopen", "dead-letter"] = "reopen"  # what happens to events of closed windows
    # Each user's windows shifted by a phase from a hash of its id (module docstring). Off here, so
    # that closing rules recorded before it existed read as they were; the worker's setting is on.
    staggered_windows: bool = False

    @classmethod
    def from_settings(cls, settings: Any) -> SegmentationConfig:
        return cls(
            window_ms=int(settings.window_seconds * 1000),
            allowed_lateness_ms=int(settings.allowed_lateness_seconds * 1000),
            user_idle_ms=int(settings.user_idle_seconds * 1000),
            max_events=settings.max_events_per_segment,
            max_segments=settings.max_segments_per_user_window,
            late_events=settings.late_events,
            staggered_windows=settings.staggered_windows,
        )

    @classmethod
    def recorded(cls, closing: Mapping[str, Any]) -> dict[str, Any]:
        """Closing settings as a checkpoint recorded them, with the ones older checkpoints lack
        filled in as they were then (aligned windows)."""
        return {"staggered_windows": False, **closing}

    def window_start(self, user_id: str, event_time_ms: int) -> int:
        """Start of `user_id`'s window that holds `event_time_ms` (rule 1)."""
        window_ms = self.window_ms
        if not self.staggered_windows:
            return event_time_ms - event_time_ms % window_ms
        return event_time_ms - (event_time_ms - zlib.crc32(user_id.encode()) % window_ms) % window_ms


class _OpenSegment:
    __slots__ = ("events", "first_offset", "last_ms", "last_offset", "ordinal")

    def __init__(self, ordinal: int, offset: int) -> None:
        self.ordinal = ordinal
        self.first_offset = offset
        self.last_offset = offset
        self.last_ms = NO_WATERMARK
        self.events: list[Any] = []  # EventTuple, or bytes where the closer keeps them (SegmentCloser)


class _WindowState:
    """What one user's window needs until it closes: first offset and watermark for checkpoints,
    the next ordinal, the identities seen (for duplicates), and the open segment if any."""

    __slots__ = ("first_offset", "next_ordinal", "open", "seen", "watermark_at_start")

    def __init__(self, offset: int, watermark: int) -> None:
        self.first_offset = offset
        self.watermark_at_start = watermark
        self.next_ordinal = 0
        self.seen: set[object] = set()
        self.open: _OpenSegment | None = None


class SegmentCloser:
    """Open segments and closing decisions for one partition of behaviour events.

    `closed` collects each closed segment as a ClosedSegment record (a dict). A closer made with
    `write_bytes` keeps each event as the bytes add() was given for it instead of its fields, and
    collects what write_bytes(head, those bytes) returns: the segmenter's writes the ClosedSegment's
    Avro bytes around its events' own, so no event is encoded again.
    """

    def __init__(
        self,
        config: SegmentationConfig,
        partition: int,
        watermark: int = NO_WATERMARK,
        *,
        write_bytes: Callable[[ClosedHead, list[bytes]], Any] | None = None,
    ) -> None:
        self.config = config
        self.partition = partition
        self.watermark = watermark
        # Insertion order is offset order, so the first window is the oldest: the checkpoint is O(1).
        self._windows: dict[tuple[str, int], _WindowState] = {}
        self._window_deadlines: list[tuple[int, str, int]] = []  # (close at, user, window start)
        # (close at, user, window, ordinal): one entry per open segment, pushed with its first event
        # and moved later only when it comes due (a per-event push made the heap grow with events).
        self._idle_deadlines: list[tuple[int, str, int, int]] = []
        self.closed: list[Any] = []  # ClosedSegment records (or write_bytes'), drained by the caller
        self._write: Callable[[ClosedHead, list[Any]], Any] = write_bytes or closed_segment_record
        self._keeps_bytes = write_bytes is not None
        self.late_offsets: list[int] = []  # offsets of late events to dead-letter (policy dead-letter)
        self.capped_offsets: list[int] = []  # offsets of events over the segments-per-window cap
        self.duplicates = 0
        self.late = 0
        self.next_offset = -1  # offset after the last event seen; -1 until one is seen or restored

    # --- input -----------------------------------------------------------------------------------
    def add(
        self,
        offset: int,
        user_id: str,
        item_id: str,
        action: str,
        event_time_ms: int,
        weight: float | None = None,
        event_id: str | None = None,
        event_bytes: bytes | None = None,
    ) -> None:
        """Apply one event (in offset order); closed segments accumulate in `self.closed`.
        `event_bytes`: the event's SegmentEvent encoding, which a closer made with write_bytes
        keeps instead of the fields (and needs)."""
        cfg = self.config
        self.next_offset = offset + 1
        if self._keeps_bytes:
            if event_bytes is None:
                raise ValueError("a closer made with write_bytes needs every event's event_bytes")
            event: EventTuple | bytes = event_bytes
        else:
            event = (item_id, action, event_time_ms, weight, event_id)
        window = cfg.window_start(user_id, event_time_ms)
        if window + cfg.window_ms + cfg.allowed_lateness_ms <= self.watermark:
            self._on_late(offset, user_id, window, event)
            return
        key = (user_id, window)
        state = self._windows.get(key)
        if state is None:
            state = self._windows[key] = _WindowState(offset, self.watermark)
            close_at = window + cfg.window_ms + cfg.allowed_lateness_ms
            heapq.heappush(self._window_deadlines, (close_at, user_id, window))
        identity = event_id if event_id is not None else (item_id, action, event_time_ms)
        if identity in state.seen:
            self.duplicates += 1
        elif state.open is None and state.next_ordinal >= cfg.max_segments:
            # Not remembered in `seen`: the window's state must stay bounded whatever one user sends.
            self.capped_offsets.append(offset)
        else:
            state.seen.add(identity)
            segment = state.open
            if segment is None:
                segment = state.open = _OpenSegment(state.next_ordinal, offset)
                state.next_ordinal += 1
            segment.events.append(event)
            segment.last_offset = offset
            if event_time_ms > segment.last_ms:
                if segment.last_ms == NO_WATERMARK:
                    heapq.heappush(
                        self._idle_deadlines,
                        (event_time_ms + cfg.user_idle_ms, user_id, window, segment.ordinal),
                    )
                segment.last_ms = event_time_ms
            if len(segment.events) >= cfg.max_events:
                self._close(user_id, window, state, "size")
        if event_time_ms > self.watermark:
            # Most advances close nothing: look at the two deadlines before paying for the call.
            deadlines, idle = self._window_deadlines, self._idle_deadlines
            if (deadlines and deadlines[0][0] <= event_time_ms) or (idle and idle[0][0] <= event_time_ms):
                self.advance_watermark(event_time_ms)
            else:
                self.watermark = event_time_ms

    def advance_watermark(self, watermark: int) -> None:
        """Move the watermark forward (never back) and close what it makes due."""
        if watermark <= self.watermark:
            return
        self.watermark = watermark
        deadlines = self._window_deadlines
        while deadlines and deadlines[0][0] <= watermark:
            _, user_id, window = heapq.heappop(deadlines)
            state = self._windows.pop((user_id, window))
            if state.open is not None:
                self._close(user_id, window, state, "window")
        idle = self._idle_deadlines
        idle_ms = self.config.user_idle_ms
        while idle and idle[0][0] <= watermark:
            close_at, user_id, window, ordinal = heapq.heappop(idle)
            maybe = self._windows.get((user_id, window))
            segment = maybe.open if maybe is not None else None
            if maybe is None or segment is None or segment.ordinal != ordinal:
                continue  # that segment closed already
            due = segment.last_ms + idle_ms
            if due == close_at:
                self._close(user_id, window, maybe, "idle")
            else:
                # Newer events moved its deadline: back in the heap at the right place, so that
                # closes happen in (deadline, user, window, ordinal) order as if pushed per event.
                heapq.heappush(idle, (due, user_id, window, ordinal))

    # --- state -----------------------------------------------------------------------------------
    def checkpoint(self) -> tuple[int, int] | None:
        """(offset, watermark) to resume from: the first event of the oldest open window, and the
        watermark that was in force when it arrived; None before any event. Replaying from there
        rebuilds the open windows (the store drops events of closed ones that come again)."""
        for state in self._windows.values():
            return state.first_offset, state.watermark_at_start
        return None if self.next_offset < 0 else (self.next_offset, self.watermark)

    @property
    def open_segments(self) -> int:
        return sum(1 for s in self._windows.values() if s.open is not None)

    @property
    def open_windows(self) -> int:
        return len(self._windows)

    def open_events(self) -> int:
        return sum(len(s.open.events) for s in self._windows.values() if s.open is not None)

    # --- output ----------------------------------------------------------------------------------
    def _close(self, user_id: str, window: int, state: _WindowState, reason: str) -> None:
        segment = state.open
        assert segment is not None
        state.open = None
        head = self._head(user_id, window, segment.ordinal, reason, segment.first_offset, segment.last_offset)
        self.closed.append(self._write(head, segment.events))

    def _on_late(self, offset: int, user_id: str, window: int, event: EventTuple | bytes) -> None:
        self.late += 1
        if self.config.late_events == "dead-letter":
            self.late_offsets.append(offset)
            return
        self.closed.append(self._write(self._head(user_id, window, -1, "late", offset, offset), [event]))

    def _head(
        self, user_id: str, window: int, ordinal: int, reason: str, first_offset: int, last_offset: int
    ) -> ClosedHead:
        return ClosedHead(
            f"{user_id}:{window}:{ordinal}",
            user_id,
            window,
            window + self.config.window_ms,
            ordinal,
            reason,
            self.partition,
            first_offset,
            last_offset,
        )
