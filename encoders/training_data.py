"""Training and validation examples from a SegmentedLog, and the padded tensors a forward pass takes.

Segments objective. Every training event is a target scored from the user's state when it arrived
(the newest K segments closed before it; see encoders.segmented_log). Consecutive events share a
state until the next segment closes, so examples are grouped by state: each state's segments are
encoded and scored against all items once, and every target of that state reads the same scores.
A batch is a group of users, so each of their segments is encoded once per epoch however many
states hold it. Events that arrive before the user's first segment closes have no state and train
nothing (a ranker has no representation for that user yet).

History objective (the full-history reference). Each target is scored from one vector: the same
encoder run over the user's last `history_max_events` events before it, re-encoded per event.
Every prefix needs its own forward pass, so each epoch samples a few targets per user.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch

from encoders.context import N_CONTEXT_FEATURES, context_features
from encoders.inference import SegmentInput, pad_segments, segment_arrays
from encoders.model import SegmentEncoderConfig
from encoders.objectives import recency_log_weights
from encoders.segmented_log import SegmentedLog, UserState
from encoders.vocab import ItemVocabulary

__all__ = [
    "ScoredState",
    "SegmentExamples",
    "StateTensors",
    "pad_arrays",
    "seen_candidates",
    "seen_pairs",
    "state_tensors",
]

SegmentArrays = tuple[np.ndarray, np.ndarray, np.ndarray]  # (rows (n,), actions (n,), features (n, 4))
FIRST_ITEM_ROW = 2  # rows 0 and 1 are padding and out-of-vocabulary; candidates are the rows after


@dataclass(frozen=True)
class ScoredState:
    """A user state and the items (candidate indices) it is asked to rank first."""

    state: UserState
    log_weights: np.ndarray  # (K,) float32, -inf past the state's segments
    targets: np.ndarray  # (t,) int64 candidate indices (embedding row - FIRST_ITEM_ROW)
    features: np.ndarray  # (K, N_CONTEXT_FEATURES) float32, zeros past the state's segments
    seen: np.ndarray  # (m,) int64 candidate indices of the items the state's segments hold, each once


def seen_candidates(item_rows: np.ndarray) -> np.ndarray:
    """Candidate indices of the in-vocabulary items among embedding rows, each once, sorted."""
    rows = np.unique(np.asarray(item_rows, dtype=np.int64))
    return rows[rows >= FIRST_ITEM_ROW] - FIRST_ITEM_ROW


def scored_state(log: SegmentedLog, state: UserState, targets: Sequence[int], k: int, half_life_ms: float):
    segments = [log.segments[s] for s in state.segments]
    held = [log.vocab.rows(s.events.item_ids) for s in segments]
    last_ms = [s.last_event_ms for s in segments]
    features = np.zeros((k, N_CONTEXT_FEATURES), dtype=np.float32)
    features[: len(segments)] = context_features(last_ms, [len(s.events.item_ids) for s in segments])
    return ScoredState(
        state,
        recency_log_weights(last_ms, half_life_ms, k),
        np.asarray(targets, dtype=np.int64) - FIRST_ITEM_ROW,
        features,
        seen_candidates(np.concatenate(held)) if held else np.zeros(0, np.int64),
    )


class SegmentExamples:
    """The segments objective's examples: per user, its states with their training targets."""

    def __init__(
        self,
        log: SegmentedLog,
        config: SegmentEncoderConfig,
        k: int,
        half_life_ms: float,
        target_horizon: int = 0,
    ) -> None:
        self.log, self.k, self.half_life_ms = log, k, half_life_ms
        self.arrays: list[SegmentArrays] = [
            segment_arrays(s.events, log.vocab, config, i) for i, s in enumerate(log.segments)
        ]
        self.by_user: list[list[ScoredState]] = []
        self.user_targets: list[int] = []  # training targets per user (those with a state)
        self.targets = 0
        for user in range(len(log.users)):
            train, _, _ = log.split_positions(user)
            by_state: dict[int, list[int]] = {}
            first_of_state: dict[int, int] = {}  # index into train of each state's first event
            for i, position in enumerate(train):
                n_closed = log.closed_before(user, position)
                if n_closed:
                    first_of_state.setdefault(n_closed, i)
                    by_state.setdefault(n_closed, []).append(int(log.event_item[position]))
            for n_closed, first in first_of_state.items():
                # A state also asks for the user's next `target_horizon` training events, even those
                # that arrive once later segments have closed (never validation or test events).
                extra = train[first + len(by_state[n_closed]) : first + target_horizon]
                by_state[n_closed] += [int(log.event_item[p]) for p in extra]
            states = [
                scored_state(log, log.state_after(user, n, k), items, k, half_life_ms)
                for n, items in sorted(by_state.items())
            ]
            self.by_user.append(states)
            self.user_targets.append(sum(len(items) for items in by_state.values()))
            self.targets += self.user_targets[-1]

    def holdout(self, which: str) -> list[ScoredState | None]:
        """One state per validation or test event (None where the user has no closed segment yet)."""
        out: list[ScoredState | None] = []
        for user, position in self.log.holdout(which):
            state = self.log.state(user, position, self.k)
            item = [int(self.log.event_item[position])]
            out.append(
                scored_state(self.log, state, item, self.k, self.half_life_ms) if state.segments else None
            )
        return out


def pad_arrays(arrays: Sequence[SegmentArrays], device: torch.device) -> tuple[torch.Tensor, ...]:
    """Stack segments into (B, T) model inputs, T the longest of them (training need not bucket)."""
    return pad_segments(arrays, max(len(rows) for rows, _, _ in arrays), device)


class StateTensors(NamedTuple):
    segments: list[int]  # segments to encode; each appears once however many states hold it
    slots: torch.Tensor  # (S, K) int64 index into their vectors, -1 past a state's end
    log_weights: torch.Tensor  # (S, K) float32
    features: torch.Tensor  # (S, K, N_CONTEXT_FEATURES) float32, for the context model
    seen: tuple[torch.Tensor, torch.Tensor]  # (state rows, candidate columns) of the items each state holds


def seen_pairs(seen: Sequence[np.ndarray], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(rows, columns) index tensors pairing row i with each candidate index in seen[i]."""
    rows = np.concatenate([np.full(len(s), i, dtype=np.int64) for i, s in enumerate(seen)])
    columns = np.concatenate(seen).astype(np.int64, copy=False)
    return torch.from_numpy(rows).to(device), torch.from_numpy(columns).to(device)


def state_tensors(states: Sequence[ScoredState], device: torch.device) -> StateTensors:
    k = len(states[0].log_weights)
    order: dict[int, int] = {}
    slots = np.full((len(states), k), -1, dtype=np.int64)
    for i, scored in enumerate(states):
        for j, segment in enumerate(scored.state.segments):
            slots[i, j] = order.setdefault(segment, len(order))
    log_weights = np.stack([s.log_weights for s in states])
    features = np.stack([s.features for s in states])
    return StateTensors(
        list(order),
        torch.from_numpy(slots).to(device),
        torch.from_numpy(log_weights).to(device),
        torch.from_numpy(features).to(device),
        seen_pairs([s.seen for s in states], device),
    )


def history_arrays(
    log: SegmentedLog, user: int, position: int, config: SegmentEncoderConfig, vocab: ItemVocabulary
) -> SegmentArrays:
    """The full-history reference's input for the event at `position`: the history before it."""
    history: SegmentInput = log.history_input(user, position, config.max_events)
    return segment_arrays(history, vocab, config)
