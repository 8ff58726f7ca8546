"""Generate a realistic, seeded behaviour stream without any data set, fast enough for benchmarks.

The demo falls back to it when MovieLens is absent; benchmarks and reliability tests use it because
its shape is controlled: Zipf item popularity, users who follow a few interests (item clusters) in
bursty sessions, several action types with plausible weights, and event times that arrive mostly
in order with a bounded share of late events. Everything is vectorised with numpy; dicts are made
only when asked for, a chunk at a time.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np

from schemas import ACTIONS
from streams.errors import ConfigError
from streams.readers import ItemCatalogue

__all__ = ["SyntheticConfig", "SyntheticEvents", "generate"]

# How often each action happens, and so how a session looks: mostly views and clicks, a few buys.
_ACTION_SHARES = {
    "view": 0.50,
    "click": 0.20,
    "skip": 0.07,
    "like": 0.06,
    "add_to_cart": 0.06,
    "rate": 0.04,
    "purchase": 0.03,
    "dislike": 0.02,
    "share": 0.02,
}
_RATING_SHARES = (0.06, 0.11, 0.27, 0.34, 0.22)  # 1..5 stars, close to MovieLens
_QUANTITY_SHARES = (0.80, 0.15, 0.05)  # 1..3 units in a cart or an order


@dataclass(frozen=True)
class SyntheticConfig:
    """The shape of a synthetic stream; equal configs give identical streams."""

    n_users: int = 1_000
    n_items: int = 5_000
    n_events: int = 100_000
    seed: int = 0
    start_ms: int = 1_700_000_000_000  # event time of the earliest possible event (2023-11-14)
    n_interests: int = 12  # item clusters
    max_interests_per_user: int = 3  # each user follows 1..this many clusters
    interest_share: float = 0.8  # share of a session's events from its interest; the rest from all items
    zipf_exponent: float = 1.0  # item popularity ∝ 1 / rank**exponent
    activity_sigma: float = 0.75  # lognormal spread of events per user
    mean_session_events: float = 12.0
    event_gap_ms: int = 40_000  # mean gap between events of one session
    session_gap_ms: int = 8 * 3_600_000  # mean gap between sessions of a typical user
    min_session_gap_ms: int = 45 * 60_000  # sessions of one user are at least this far apart
    user_spread_ms: int = 24 * 3_600_000  # users' first events are spread over this span
    out_of_order_fraction: float = 0.02  # share of events delayed (in sparse traffic some stay in order)
    max_delay_ms: int = 10_000  # how late: an event trails a later event by at most this

    def __post_init__(self) -> None:
        for name in ("n_users", "n_items", "n_interests", "max_interests_per_user", "event_gap_ms"):
            if getattr(self, name) < 1:
                raise ConfigError(f"synthetic {name} must be at least 1, not {getattr(self, name)}")
        for name in ("n_events", "start_ms", "max_delay_ms", "user_spread_ms", "min_session_gap_ms"):
            if getattr(self, name) < 0:
                raise ConfigError(f"synthetic {name} must not be negative, not {getattr(self, name)}")
        for name in ("interest_share", "out_of_order_fraction"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"synthetic {name} must be within [0, 1], not {getattr(self, name)}")
        if self.mean_session_events < 1 or self.zipf_exponent < 0 or self.activity_sigma < 0:
            raise ConfigError("synthetic mean_session_events must be >= 1, zipf_exponent and sigma >= 0")
        if self.session_gap_ms < self.min_session_gap_ms:
            raise ConfigError("synthetic session_gap_ms must be at least min_session_gap_ms")


@dataclass(frozen=True, eq=False)
class SyntheticEvents:
    """A generated stream in columns, in arrival order; benchmarks use the arrays, producers the dicts."""

    config: SyntheticConfig
    user: np.ndarray  # (N,) int32 user index; its id is f"u{index}"
    item: np.ndarray  # (N,) int32 item index; its id is f"i{index}"
    action: np.ndarray  # (N,) int8 index into schemas.ACTIONS
    event_time_ms: np.ndarray  # (N,) int64
    weight: np.ndarray  # (N,) float64, NaN where the action carries no weight
    session: np.ndarray  # (N,) int32 global session number: ground truth for segmentation tests
    item_cluster: np.ndarray  # (n_items,) int32 the interest each item belongs to

    def __len__(self) -> int:
        return len(self.user)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for chunk in self.chunks():
            yield from chunk

    @cached_property
    def user_ids(self) -> list[str]:
        """User id of each user index (a list, so a chunk's lookups stay in Python)."""
        return [f"u{i}" for i in range(self.config.n_users)]

    @cached_property
    def item_ids(self) -> list[str]:
        """Item id of each item index."""
        return [f"i{i}" for i in range(self.config.n_items)]

    def to_dicts(self, start: int = 0, stop: int | None = None) -> list[dict[str, Any]]:
        """Return events [start, stop) as BehaviourEvent dicts; event_id names seed and position."""
        stop = len(self) if stop is None else min(stop, len(self))
        users, items = self.user_ids, self.item_ids
        prefix = f"syn{self.config.seed}-"
        return [
            {
                "user_id": users[u],
                "item_id": items[i],
                "action": ACTIONS[a],
                "event_time_ms": t,
                "weight": None if w != w else w,  # NaN is the only value unequal to itself
                "event_id": f"{prefix}{k}",
                "context": {},
            }
            for k, u, i, a, t, w in zip(
                range(start, stop),
                self.user[start:stop].tolist(),
                self.item[start:stop].tolist(),
                self.action[start:stop].tolist(),
                self.event_time_ms[start:stop].tolist(),
                self.weight[start:stop].tolist(),
                strict=True,
            )
        ]

    def chunks(self, size: int = 65_536) -> Iterator[list[dict[str, Any]]]:
        """Yield the events as lists of at most `size` dicts, so a million never sit in memory at once."""
        if size < 1:
            raise ValueError(f"chunk size must be at least 1, not {size}")
        for start in range(0, len(self), size):
            yield self.to_dicts(start, start + size)

    def catalogue(self) -> ItemCatalogue:
        """Return titles like "Item 42 (cluster 3)", so the demo prints synthetic items as it does movies."""
        clusters = self.item_cluster.tolist()
        ids = self.item_ids
        return ItemCatalogue(
            titles={ids[i]: f"Item {i} (cluster {c})" for i, c in enumerate(clusters)},
            genres={ids[i]: (f"cluster {c}",) for i, c in enumerate(clusters)},
        )


def generate(config: SyntheticConfig | None = None, **overrides: Any) -> SyntheticEvents:
    """Generate the stream `config` (with `overrides` applied) describes; same config, same stream."""
    cfg = dataclasses.replace(config or SyntheticConfig(), **overrides)
    rng = np.random.default_rng(cfg.seed)
    n, n_users = cfg.n_events, cfg.n_users

    # Items: clusters of equal size, popularity by a shuffled Zipf rank (ids say nothing of rank).
    item_cluster = rng.permutation(np.arange(cfg.n_items) % cfg.n_interests).astype(np.int32)
    rank = rng.permutation(cfg.n_items)
    popularity = 1.0 / (rank + 1.0) ** cfg.zipf_exponent  # (n_items,)

    # Users: skewed activity, at least one event each while events last.
    activity = rng.lognormal(0.0, cfg.activity_sigma, n_users)
    base = min(n // n_users, 1)
    counts = base + rng.multinomial(n - base * n_users, activity / activity.sum())  # (n_users,)
    user = np.repeat(np.arange(n_users, dtype=np.int32), counts)  # (N,) grouped by user
    first = np.cumsum(counts) - counts  # index of each user's first event
    is_first = np.zeros(n, dtype=bool)
    is_first[first[counts > 0]] = True

    # Sessions: geometric lengths; each session follows one of its user's interests.
    new_session = is_first | (rng.random(n) < 1.0 / cfg.mean_session_events)
    session = (np.cumsum(new_session) - 1).astype(np.int32)  # (N,)
    interests = rng.integers(0, cfg.n_interests, (n_users, cfg.max_interests_per_user))
    n_followed = rng.integers(1, cfg.max_interests_per_user + 1, n_users)
    session_user = user[new_session]  # (S,)
    pick = (rng.random(len(session_user)) * n_followed[session_user]).astype(np.int64)
    event_interest = interests[session_user, pick][session]  # (N,)

    item = _sample_items(rng, popularity, item_cluster, event_interest, cfg.interest_share)
    action, weight = _sample_actions(rng, n)
    event_time = _event_times(rng, cfg, counts, first, is_first, new_session)

    # Arrival order: by event time, except a few events delayed by up to max_delay_ms. Any event
    # then trails the latest earlier arrival by at most max_delay_ms (its arrival bounds both).
    late = rng.random(n) < cfg.out_of_order_fraction
    delay = rng.integers(1, cfg.max_delay_ms + 1, n) * late if cfg.max_delay_ms else np.zeros(n, np.int64)
    order = np.argsort(event_time + delay, kind="stable")
    return SyntheticEvents(
        config=cfg,
        user=user[order],
        item=item[order],
        action=action[order],
        event_time_ms=event_time[order],
        weight=weight[order],
        session=session[order],
        item_cluster=item_cluster,
    )


def _sample_items(
    rng: np.random.Generator,
    popularity: np.ndarray,
    item_cluster: np.ndarray,
    event_interest: np.ndarray,
    interest_share: float,
) -> np.ndarray:
    """Draw each event's item by popularity, within the session's interest or, sometimes, from all items."""
    n = len(event_interest)
    draw = rng.random(n)
    from_interest = rng.random(n) < interest_share
    item = np.empty(n, dtype=np.int32)
    choices = [(~from_interest, np.arange(len(popularity)))]
    for c in range(int(item_cluster.max()) + 1 if len(item_cluster) else 0):
        choices.append((from_interest & (event_interest == c), np.flatnonzero(item_cluster == c)))
    for mask, pool in choices:
        if len(pool) == 0 or not mask.any():
            continue
        cdf = np.cumsum(popularity[pool])
        picked = np.searchsorted(cdf, draw[mask] * cdf[-1], side="right")
        item[mask] = pool[np.minimum(picked, len(pool) - 1)]
    return item


def _sample_actions(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Draw actions and their weights: watch fraction for views, stars for ratings, units for buys."""
    codes = np.array([ACTIONS.index(a) for a in _ACTION_SHARES], dtype=np.int8)
    shares = np.array(list(_ACTION_SHARES.values()))
    action = codes[rng.choice(len(codes), n, p=shares / shares.sum())]  # (N,)
    weight = np.full(n, np.nan)
    view = action == ACTIONS.index("view")
    weight[view] = np.round(np.clip(rng.beta(2.0, 1.5, int(view.sum())), 0.01, 1.0), 2)
    rate = action == ACTIONS.index("rate")
    weight[rate] = rng.choice(np.arange(1.0, 6.0), int(rate.sum()), p=_RATING_SHARES)
    buy = np.isin(action, [ACTIONS.index("purchase"), ACTIONS.index("add_to_cart")])
    weight[buy] = rng.choice(np.arange(1.0, 4.0), int(buy.sum()), p=_QUANTITY_SHARES)
    return action, weight


def _event_times(
    rng: np.random.Generator,
    cfg: SyntheticConfig,
    counts: np.ndarray,
    first: np.ndarray,
    is_first: np.ndarray,
    new_session: np.ndarray,
) -> np.ndarray:
    """Lay each user's events on a time line: bursts within sessions, long gaps between them.

    Busy users come back more often (their session gaps shrink with activity, never below the
    minimum; rare users' gaps grow at most 4x), so every user's history spans a similar stretch
    of time, as in real traffic, and the stream has no long tail of stragglers.
    """
    n = len(is_first)
    per_user_events = max(counts.mean(), 1.0)
    # (n_users,) activity relative to a typical user; the floor keeps rare users' gaps bounded.
    busy = np.maximum(counts / per_user_events, 0.25)
    user_of_event = np.repeat(np.arange(len(counts)), counts)
    extra_gap = (cfg.session_gap_ms - cfg.min_session_gap_ms) / busy[user_of_event]  # (N,)
    expo = rng.exponential(1.0, n)
    in_session = np.minimum(1 + expo * cfg.event_gap_ms, max(cfg.min_session_gap_ms // 2, 1))
    gap = np.where(new_session, cfg.min_session_gap_ms + expo * extra_gap, in_session)
    gap[is_first] = rng.uniform(0, cfg.user_spread_ms, int(is_first.sum()))
    gap = gap.astype(np.int64)
    elapsed = np.cumsum(gap)  # (N,) across users; rebase each user on its own first event
    before_user = np.zeros(len(counts), dtype=np.int64)
    active = counts > 0
    before_user[active] = elapsed[first[active]] - gap[first[active]]
    return cfg.start_ms + elapsed - np.repeat(before_user, counts)
