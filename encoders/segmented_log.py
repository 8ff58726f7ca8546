"""Cut an offline event log into segments with the worker's closing rules, and say what a running
worker would hold for each user at each event.

The log goes through one `streams.windowing.SegmentCloser` (the worker's code, not a copy) as one
partition, in event-time order (ties keep file order). One partition because a real partition
carries many users, so its watermark is stream time; a closer per user would hold a user's last
session open until that user's next event, which a worker never does (a quiet partition's
watermark follows the wall clock). Sorted input also means no event is ever late, so the store's
rule for late events (they join their window's last segment) never applies, and the ordinals the
closer assigns are the ones the store would assign.

Each closed segment remembers the position of the event whose processing closed it. The user
state at event j is then the segments closed at positions strictly before j: exactly what the
worker's store holds when event j arrives, with the watermark as it was then; no closing decision
made at or after j is visible. The worker keeps no encoded view of the open segment, so neither
does the state: the events since the last closing are invisible until their segment closes.

Leave-one-out by time: each user's last event is the test event, the one before it validation,
the rest training (users with fewer than three events are all training).
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from encoders.errors import EncoderError
from encoders.inference import SegmentInput
from encoders.vocab import ItemVocabulary
from schemas import ACTIONS
from streams.windowing import SegmentationConfig, SegmentCloser

__all__ = ["LoggedSegment", "SegmentedLog", "UserState", "log_digest"]

_ACTION_INDEX = {name: i for i, name in enumerate(ACTIONS)}


def log_digest(events: Sequence[Mapping[str, Any]]) -> str:
    """Name an event log by its content (order-free), so a checkpoint can say what it was trained on."""
    h = hashlib.blake2b(digest_size=16, person=b"msli-events")
    for line in sorted(
        f"{e['user_id']}\t{e['item_id']}\t{e['action']}\t{e['event_time_ms']}" for e in events
    ):
        h.update(line.encode() + b"\n")
    return "blake2b:" + h.hexdigest()


@dataclass(frozen=True)
class LoggedSegment:
    """One closed segment of the log, and when (at which log position) it closed."""

    user: int  # index into SegmentedLog.users
    window_start_ms: int
    ordinal: int
    closed_at: int  # log position of the event whose processing closed it
    last_event_ms: int
    close_reason: str
    events: SegmentInput  # as the encoder stage hands it to the encoder: sorted by event time


@dataclass(frozen=True)
class UserState:
    """What the worker's store holds for a user when an event arrives: its newest K closed segments."""

    user: int
    segments: tuple[int, ...]  # indices into SegmentedLog.segments, newest first (store order)


class SegmentedLog:
    """An event log, its closed segments, the leave-one-out split, and the state before every event."""

    def __init__(
        self, events: Sequence[Mapping[str, Any]], closing: SegmentationConfig, vocab: ItemVocabulary
    ) -> None:
        if not events:
            raise EncoderError("the event log is empty")
        order = sorted(range(len(events)), key=lambda i: events[i]["event_time_ms"])  # stable
        self.events = [events[i] for i in order]
        self.closing = closing
        self.vocab = vocab
        user_ids = sorted({e["user_id"] for e in self.events})
        user_index = {u: i for i, u in enumerate(user_ids)}
        self.users: tuple[str, ...] = tuple(user_ids)
        self.event_user = np.array([user_index[e["user_id"]] for e in self.events], dtype=np.int64)
        self.event_item = vocab.rows([e["item_id"] for e in self.events])  # (n,) embedding rows
        self.event_time_ms = np.array([e["event_time_ms"] for e in self.events], dtype=np.int64)
        per_user: list[list[int]] = [[] for _ in user_ids]
        for position, user in enumerate(self.event_user.tolist()):
            per_user[user].append(position)
        self.user_positions: tuple[tuple[int, ...], ...] = tuple(tuple(p) for p in per_user)
        self.segments: tuple[LoggedSegment, ...] = tuple(self._close_segments(user_index))
        # Per user, segment indices in the order they closed (how the store fills up).
        closing_order: list[list[int]] = [[] for _ in user_ids]
        for index, segment in enumerate(self.segments):
            closing_order[segment.user].append(index)
        self._closing_order = closing_order
        self._closed_at = [np.array([self.segments[s].closed_at for s in c], np.int64) for c in closing_order]

    # --- the split -------------------------------------------------------------------------------
    def split_positions(self, user: int) -> tuple[tuple[int, ...], int | None, int | None]:
        """(training positions, validation position, test position) of one user's events."""
        positions = self.user_positions[user]
        if len(positions) < 3:
            return positions, None, None
        return positions[:-2], positions[-2], positions[-1]

    def training_positions(self) -> np.ndarray:
        """Log positions of every training event (each user's events but the last two), sorted."""
        kept = [p for u in range(len(self.users)) for p in self.split_positions(u)[0]]
        return np.array(sorted(kept), dtype=np.int64)

    def holdout(self, which: str) -> list[tuple[int, int]]:
        """(user, log position) of every user's validation (`valid`) or test (`test`) event."""
        out: list[tuple[int, int]] = []
        for user in range(len(self.users)):
            _, valid, test = self.split_positions(user)
            position = valid if which == "valid" else test
            if position is not None:
                out.append((user, position))
        return out

    # --- states ----------------------------------------------------------------------------------
    def closed_before(self, user: int, position: int) -> int:
        """How many of the user's segments had closed before the event at `position` arrived."""
        return int(np.searchsorted(self._closed_at[user], position, side="left"))

    def state(self, user: int, position: int, k: int) -> UserState:
        """The user's newest k closed segments (store order: window start, then ordinal) before `position`."""
        return self.state_after(user, self.closed_before(user, position), k)

    def state_after(self, user: int, n_closed: int, k: int) -> UserState:
        """The user's newest k segments once the first n_closed of them (in closing order) have closed."""
        closed = self._closing_order[user][:n_closed]
        newest = sorted(closed, key=lambda s: (self.segments[s].window_start_ms, self.segments[s].ordinal))
        return UserState(user, tuple(reversed(newest[-k:])))

    def n_segments(self, user: int) -> int:
        return len(self._closing_order[user])

    def history_input(self, user: int, position: int, max_events: int) -> SegmentInput:
        """The user's last max_events events before `position`, as the full-history reference reads them."""
        positions = self.user_positions[user]
        end = int(np.searchsorted(np.asarray(positions), position, side="left"))
        kept = [self.events[p] for p in positions[max(0, end - max_events) : end]]
        if not kept:
            raise EncoderError(f"user {self.users[user]} has no event before log position {position}")
        return SegmentInput.from_events(kept)  # already in event-time order

    def open_events(self, user: int, position: int) -> SegmentInput | None:
        """The user's events before `position` that no closed segment holds yet (None if there are none).

        Only for the what-if row of the evaluation: the worker keeps no encoded view of these.
        Events are matched to closed segments by (item, action, time), which is exact unless the
        log repeats one; a repeat the closer dropped as a duplicate would show up here.
        """
        closed: Counter[tuple[str, int, int]] = Counter()
        for index in self._closing_order[user][: self.closed_before(user, position)]:
            seg = self.segments[index].events
            closed.update(zip(seg.item_ids, seg.actions, seg.event_times_ms, strict=True))
        pending = []
        for p in self.user_positions[user]:
            if p >= position:
                break
            event = self.events[p]
            key = (event["item_id"], _ACTION_INDEX[event["action"]], event["event_time_ms"])
            if closed[key]:
                closed[key] -= 1
            else:
                pending.append(event)
        return SegmentInput.from_events(pending) if pending else None

    # --- internals -------------------------------------------------------------------------------
    def _close_segments(self, user_index: Mapping[str, int]) -> list[LoggedSegment]:
        closer = SegmentCloser(self.closing, partition=0)
        segments: list[LoggedSegment] = []
        for position, event in enumerate(self.events):
            closer.add(
                position,
                event["user_id"],
                event["item_id"],
                event["action"],
                event["event_time_ms"],
                event.get("weight"),
                event.get("event_id"),
            )
            for record in closer.closed:
                if record["close_reason"] == "late":  # impossible for time-sorted input; see the docstring
                    raise EncoderError(f"event at log position {position} was late in a time-sorted log")
                # Sorted by event time, stable, as streams.encoder_stage does before encoding.
                events = sorted(record["events"], key=lambda e: e["event_time_ms"])
                segments.append(
                    LoggedSegment(
                        user=user_index[record["user_id"]],
                        window_start_ms=record["window_start_ms"],
                        ordinal=record["ordinal"],
                        closed_at=position,
                        last_event_ms=events[-1]["event_time_ms"],
                        close_reason=record["close_reason"],
                        events=SegmentInput.from_events(events),
                    )
                )
            closer.closed.clear()
        return segments
