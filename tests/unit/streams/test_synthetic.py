"""Synthetic streams: deterministic under a seed, shaped like real traffic, and valid BehaviourEvents."""

from __future__ import annotations

import numpy as np
import pytest

import streams.synthetic as synthetic
from schemas import ACTIONS, AvroCodec
from streams.errors import ConfigError
from streams.synthetic import SyntheticConfig, SyntheticEvents, generate

SMALL = SyntheticConfig(n_users=200, n_items=2_000, n_events=20_000, seed=7)


@pytest.fixture(scope="module")
def stream() -> SyntheticEvents:
    return generate(SMALL)


def by_user(events: SyntheticEvents) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return user, event time and session of every event, ordered by user, then event time."""
    order = np.lexsort((events.event_time_ms, events.user))
    return events.user[order], events.event_time_ms[order], events.session[order]


def test_public_surface() -> None:
    assert set(synthetic.__all__) == {"SyntheticConfig", "SyntheticEvents", "generate"}


def test_same_seed_same_stream_other_seed_other_stream(stream: SyntheticEvents) -> None:
    again = generate(SMALL)
    for column in ("user", "item", "action", "event_time_ms", "weight", "session", "item_cluster"):
        np.testing.assert_array_equal(getattr(stream, column), getattr(again, column), err_msg=column)
    assert stream.to_dicts(0, 100) == again.to_dicts(0, 100)
    other = generate(SMALL, seed=8)
    assert not np.array_equal(stream.item, other.item)


def test_counts_and_ranges(stream: SyntheticEvents) -> None:
    assert len(stream) == SMALL.n_events
    assert set(np.unique(stream.user)) == set(range(SMALL.n_users))  # everyone acts at least once
    assert stream.item.min() >= 0 and stream.item.max() < SMALL.n_items
    assert stream.event_time_ms.min() >= SMALL.start_ms
    assert len(stream.item_cluster) == SMALL.n_items
    assert set(np.unique(stream.item_cluster)) == set(range(SMALL.n_interests))


@pytest.mark.parametrize(("n_users", "n_events"), [(10, 0), (50, 20), (1, 5)])
def test_edge_sizes(n_users: int, n_events: int) -> None:
    events = generate(n_users=n_users, n_items=30, n_events=n_events)
    assert len(events) == n_events == len(events.to_dicts())
    if n_events:
        assert np.all(np.diff(np.maximum.accumulate(events.event_time_ms)) >= 0)


def test_disorder_is_bounded_by_max_delay(stream: SyntheticEvents) -> None:
    times = stream.event_time_ms
    behind = np.maximum.accumulate(times) - times  # how far each event trails the latest before it
    assert behind.max() <= SMALL.max_delay_ms
    late_share = (behind > 0).mean()
    assert 0.002 < late_share <= SMALL.out_of_order_fraction

    in_order = generate(SMALL, out_of_order_fraction=0.0)
    assert np.all(np.diff(in_order.event_time_ms) >= 0)
    very_late = generate(SMALL, out_of_order_fraction=0.5, max_delay_ms=60_000)
    behind = np.maximum.accumulate(very_late.event_time_ms) - very_late.event_time_ms
    assert behind.max() <= 60_000 and (behind > 0).mean() > 0.1


def test_zipf_popularity_top_items_take_a_large_share(stream: SyntheticEvents) -> None:
    counts = np.sort(np.bincount(stream.item, minlength=SMALL.n_items))[::-1]
    top_share = counts[: SMALL.n_items // 100].sum() / len(stream)
    assert top_share > 0.25  # 1% of items; uniform popularity would give 1%
    flat = generate(SMALL, zipf_exponent=0.0)
    flat_counts = np.sort(np.bincount(flat.item, minlength=SMALL.n_items))[::-1]
    assert flat_counts[: SMALL.n_items // 100].sum() / len(flat) < 0.03


def test_sessions_are_bursts_separated_by_gaps(stream: SyntheticEvents) -> None:
    user, times, session = by_user(stream)
    same_user = user[1:] == user[:-1]
    gaps = np.diff(times)[same_user]
    new_session = (session[1:] != session[:-1])[same_user]
    # Delays change arrival order only, so in event time the gap between sessions is exact.
    assert gaps[new_session].min() >= SMALL.min_session_gap_ms
    assert gaps[~new_session].max() < SMALL.min_session_gap_ms
    assert np.median(gaps[~new_session]) < 2 * SMALL.event_gap_ms
    sessions_per_user = np.bincount(user[np.r_[True, session[1:] != session[:-1]]])
    assert np.median(sessions_per_user) >= 3


def test_sessions_stay_mostly_within_one_interest(stream: SyntheticEvents) -> None:
    cluster = stream.item_cluster[stream.item].astype(np.int64)
    n_sessions = int(stream.session.max()) + 1
    per_session = np.zeros((n_sessions, SMALL.n_interests), dtype=np.int64)
    np.add.at(per_session, (stream.session, cluster), 1)
    sizes = per_session.sum(axis=1)
    dominant_share = per_session.max(axis=1)[sizes >= 5].sum() / sizes[sizes >= 5].sum()
    assert dominant_share > 0.75  # interest_share 0.8, plus chance hits from the global draws


def test_actions_and_their_weights(stream: SyntheticEvents) -> None:
    names = np.array(ACTIONS)[stream.action]
    assert len(set(names)) >= 8
    assert (names == "view").mean() > 0.4
    view = stream.weight[names == "view"]
    assert view.min() > 0 and view.max() <= 1
    assert set(np.unique(stream.weight[names == "rate"])) <= {1.0, 2.0, 3.0, 4.0, 5.0}
    assert set(np.unique(stream.weight[names == "purchase"])) <= {1.0, 2.0, 3.0}
    assert np.isnan(stream.weight[np.isin(names, ["click", "skip", "share"])]).all()


def test_every_record_encodes_with_the_avro_codec(stream: SyntheticEvents) -> None:
    codec = AvroCodec("BehaviourEvent")
    events = stream.to_dicts()
    for event in events:
        decoded = codec.decode(codec.encode(event))
        assert decoded["user_id"] == event["user_id"] and decoded["action"] == event["action"]
    assert len({e["event_id"] for e in events}) == len(events)
    assert events[0]["event_id"] == "syn7-0"
    assert any(e["weight"] is None for e in events) and any(e["weight"] is not None for e in events)


def test_chunks_and_iteration_match_to_dicts(stream: SyntheticEvents) -> None:
    chunks = list(stream.chunks(7_000))
    assert [len(c) for c in chunks] == [7_000, 7_000, 6_000]
    assert [e for c in chunks for e in c][6_999:7_001] == stream.to_dicts(6_999, 7_001)
    first = next(iter(stream))
    assert first == stream.to_dicts(0, 1)[0]
    assert first["user_id"] == f"u{stream.user[0]}" and first["item_id"] == f"i{stream.item[0]}"
    with pytest.raises(ValueError, match="chunk size"):
        next(stream.chunks(0))


def test_catalogue_titles_name_item_and_cluster(stream: SyntheticEvents) -> None:
    catalogue = stream.catalogue()
    assert len(catalogue.titles) == SMALL.n_items
    assert catalogue.title("i42") == f"Item 42 (cluster {stream.item_cluster[42]})"
    assert catalogue.genres["i42"] == (f"cluster {stream.item_cluster[42]}",)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"n_users": 0}, "n_users must be at least 1"),
        ({"n_events": -1}, "n_events must not be negative"),
        ({"out_of_order_fraction": 1.5}, r"out_of_order_fraction must be within \[0, 1\]"),
        ({"session_gap_ms": 1_000}, "session_gap_ms must be at least min_session_gap_ms"),
    ],
)
def test_bad_configs_are_refused(override: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        generate(SMALL, **override)
