"""The quality protocol: leave-one-out by time, every item ranked, HR@10 and NDCG@10, per method.

Each user's last event is the test event. Its item is ranked among all items of the vocabulary,
once as is (RecBole's protocol for sequential models) and once with the items the user rated
before removed (what a production ranker does). Rows:

- popularity: training-split counts; what a ranker falls back to for a user without a representation.
- full history: the same encoder trained on, and run over, the user's last events before the test
  event, re-encoded on every event (what one would do without segments).
- segments: the representation the worker would hold when the test event arrives (its newest K
  segments closed strictly before it, vectors rounded to the store's dtype, read in context by the
  model's context layers if it has them, recency weights from streams.fuser), scored with
  encoders.scoring: MaxSim, attention and the fused vector. A user with no closed segment yet gets
  the popularity ranking, as a ranker would. The encoder cost per event includes the context
  model's, run over the newest K segments each time one closes, as the worker does.
- what-if: the same plus the open segment encoded as one more vector. The worker does not keep an
  encoded open segment; this row measures what doing so would buy.

A model with a seen-item score adds it, in every row it scores, to the items its own input holds
(a state's segments; the full-history row's input events), as a ranker adds it to a
representation's seen_item_ids; the timed requests include that step.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, replace
from typing import NamedTuple

import numpy as np

from encoders.costs import encode_seconds, one_core, per_call_seconds
from encoders.errors import EncoderError
from encoders.inference import ContextState, SegmentBatchEncoder
from encoders.metrics import RankingMetrics, rank_of_target, ranking_metrics
from encoders.model import SegmentEncoder
from encoders.quality_report import EvaluationReport, EvaluationRow
from encoders.scoring import attention_scores, candidate_bias, fused_scores, maxsim_scores, seen_mask
from encoders.segmented_log import SegmentedLog
from encoders.training_data import FIRST_ITEM_ROW, seen_candidates
from store import StoredSegment, quantize
from streams.fuser import fuse, seen_item_ids

__all__ = ["EvaluationReport", "EvaluationRow", "evaluate"]

_CANDIDATES = 1000  # per ranking request, for the scoring timings
_K = 10


class _Holdout:
    """The test events, their targets and what each user rated before, as candidate indices."""

    def __init__(self, log: SegmentedLog, which: str) -> None:
        self.events = log.holdout(which)
        if not self.events:
            raise EncoderError("no user has three or more events: nothing to evaluate")
        self.targets = [int(log.event_item[p]) - FIRST_ITEM_ROW for _, p in self.events]
        if min(self.targets) < 0:
            raise EncoderError("a held-out item is outside the checkpoint's vocabulary")
        self.rated = [
            np.array([log.event_item[q] - FIRST_ITEM_ROW for q in log.user_positions[u] if q < p], np.int64)
            for u, p in self.events
        ]

    def metrics(self, scores: Sequence[np.ndarray]) -> tuple[RankingMetrics, RankingMetrics]:
        ranked = [rank_of_target(s, t) for s, t in zip(scores, self.targets, strict=True)]
        unseen = [rank_of_target(s, t, r) for s, t, r in zip(scores, self.targets, self.rated, strict=True)]
        return ranking_metrics(ranked, _K), ranking_metrics(unseen, _K)


def evaluate(
    log: SegmentedLog,
    encoder: SegmentBatchEncoder,
    history: SegmentBatchEncoder | None,
    k: int,
    half_life_ms: float,
    vector_dtype: str = "float16",
    on_stage: Callable[[str], None] = lambda _: None,
    timing: float = 0.2,
) -> EvaluationReport:
    """Run the protocol on the log's test events; `history` adds the full-history row.

    `timing`: seconds per timed run of a scorer (five runs, the median kept).
    """
    if encoder.vocab != log.vocab:
        raise EncoderError("the log must be built with the checkpoint's vocabulary")
    holdout = _Holdout(log, "test")
    items = encoder.item_vectors(list(log.vocab.items or ()))  # (N, d) candidate vectors
    bias = encoder.item_biases(list(log.vocab.items or ()))  # (N,) or None
    rng = np.random.default_rng(0)
    candidate_rows = _timing_rows(len(items), rng)
    candidates = Candidates.gather(items, bias, candidate_rows)
    popularity = np.bincount(
        log.event_item[log.training_positions()] - FIRST_ITEM_ROW, minlength=len(items)
    ).astype(np.float32)
    rows = [_popularity_row(holdout, popularity, candidate_rows, timing)]
    if history is not None:
        on_stage("encoding every user's history (full-history reference)")
        rows.append(_history_row(log, holdout, history, timing))

    on_stage(f"encoding {len(log.segments):,} closed segments")
    inputs = [s.events for s in log.segments]
    vectors, seconds = encode_seconds(encoder, inputs)
    vectors = quantize(vectors, vector_dtype)  # type: ignore[arg-type]
    events = sum(len(s.item_ids) for s in inputs)
    tokens = sum(min(len(s.item_ids), encoder.config.max_events) for s in inputs)
    if encoder.has_context:
        on_stage("reading every representation's segments in context (as the worker builds them)")
        context_tokens, context_seconds = _context_cost(log, encoder, vectors, k)
        tokens, seconds = tokens + context_tokens, seconds + context_seconds
    states = [_stored_state(log, u, p, k, vectors) for u, p in holdout.events]
    representations = _representations(encoder, states, k, half_life_ms)
    biases = [_seen_bias(log, bias, seen_item_ids(st or ()), encoder.seen_item_score) for st in states]
    full = next((i for i, r in enumerate(representations) if r is not None and len(r[0]) == k), None)
    sample = Sample(
        *(_random_representation(k, encoder.dim, rng) if full is None else representations[full]),  # type: ignore[misc]
        seen=np.zeros(0, np.int64) if full is None else _seen_rows(log, seen_item_ids(states[full] or ())),
        seen_item_score=encoder.seen_item_score,
    )
    for name, score in _SCORERS.items():
        per_user = [
            popularity if rep is None else score(rep, items, b)
            for rep, b in zip(representations, biases, strict=True)
        ]
        with one_core():
            request_s = per_call_seconds(
                lambda score=score: score(sample.representation, candidates.vectors, sample.bias(candidates)),  # type: ignore[misc]
                timing,
            )
        rows.append(
            _row(
                f"segments · {name}",
                holdout,
                per_user,
                sum(rep is not None for rep in representations),
                tokens / events,
                1000 * seconds / events,
                request_s,
            )
        )

    on_stage("encoding the open segments (what-if row)")
    rows.append(_open_segment_row(log, holdout, encoder, states, popularity, half_life_ms, k, vector_dtype))
    report = EvaluationReport(
        rows,
        users=len(holdout.events),
        items=len(items),
        settings={
            "closing": asdict(log.closing),
            "top_k_segments": k,
            "recency_half_life_ms": half_life_ms,
            "vector_dtype": vector_dtype,
            "history_max_events": None if history is None else history.config.max_events,
            "segment_model": encoder.model_version,
            "context_layers": encoder.config.context_layers,
            "history_model": None if history is None else history.model_version,
            "segment_seen_item_score": encoder.seen_item_score,
            "history_seen_item_score": None if history is None else history.seen_item_score,
        },
    )
    on_stage("timing one request on one core")
    report.request = _request_comparison(log, encoder, history, sample, (items, bias, candidate_rows), timing)
    return report


Representation = tuple[np.ndarray, np.ndarray, np.ndarray]  # (vectors (K, d), weights (K,), fused (d,))
_SCORERS: dict[str, Callable[[Representation, np.ndarray, np.ndarray | None], np.ndarray]] = {
    "MaxSim": lambda rep, x, b: maxsim_scores(rep[0], rep[1], x, item_bias=b),
    "attention": lambda rep, x, b: attention_scores(rep[0], rep[1], x, item_bias=b),
    "fused vector (dot)": lambda rep, x, b: fused_scores(rep[2], x, item_bias=b),
}


class Candidates(NamedTuple):
    """One request's candidates: item vectors (N, d), item biases (N,) if the model has them, and
    their rows in the item table (N,)."""

    vectors: np.ndarray
    bias: np.ndarray | None
    rows: np.ndarray

    @classmethod
    def gather(cls, items: np.ndarray, bias: np.ndarray | None, rows: np.ndarray) -> Candidates:
        """The candidates at `rows` of the item table (N_items, d) and its biases (N_items,): what
        any ranker of this table does first per request, the full-history one alike."""
        return cls(np.take(items, rows, axis=0), None if bias is None else np.take(bias, rows), rows)

    def request_bias(self, seen: np.ndarray, score: float | None) -> np.ndarray | None:
        """What a ranker adds per candidate in a request: item biases plus the seen-item score on
        the candidates among `seen` (item rows); part of every timed request."""
        return candidate_bias(self.bias, seen_mask(self.rows, seen), score)


class Sample(NamedTuple):
    """The representation a timed request scores, with the item rows its segments hold."""

    vectors: np.ndarray
    weights: np.ndarray
    fused: np.ndarray
    seen: np.ndarray
    seen_item_score: float | None

    @property
    def representation(self) -> Representation:
        return self.vectors, self.weights, self.fused

    def bias(self, candidates: Candidates) -> np.ndarray | None:
        return candidates.request_bias(self.seen, self.seen_item_score)


def _seen_rows(log: SegmentedLog, item_ids: Sequence[str]) -> np.ndarray:
    """Candidate indices of the in-vocabulary items among `item_ids`, each once."""
    return seen_candidates(log.vocab.rows(item_ids))


def _seen_bias(
    log: SegmentedLog, bias: np.ndarray | None, item_ids: Sequence[str], score: float | None
) -> np.ndarray | None:
    """Per-candidate bias over every item: item biases plus the seen-item score on `item_ids` (the
    items the model's input holds), as a ranker computes it."""
    if score is None:
        return bias
    seen = np.zeros(len(log.vocab.items or ()), dtype=bool)
    seen[_seen_rows(log, item_ids)] = True
    return candidate_bias(bias, seen, score)


def _stored_state(
    log: SegmentedLog, user: int, position: int, k: int, vectors: np.ndarray
) -> list[StoredSegment] | None:
    """The newest k segments the worker's store holds for the user when the event at `position` arrives."""
    state = log.state(user, position, k)
    return [_stored(log, s, vectors[s]) for s in state.segments] or None


def _representations(
    encoder: SegmentBatchEncoder, states: Sequence[list[StoredSegment] | None], k: int, half_life_ms: float
) -> list[Representation | None]:
    """The representation the worker publishes for each state (segments newest first): the segments'
    vectors, read in context when the model has context layers, fused by streams.fuser."""
    present = [st for st in states if st is not None]
    contextual = iter(encoder.contextualize([ContextState.of(st) for st in present], k))
    out: list[Representation | None] = []
    for st in states:
        if st is None:
            out.append(None)
            continue
        vectors = next(contextual)
        weights, fused = fuse(st, half_life_ms, vectors)
        out.append((vectors, weights, fused))
    return out


def _context_cost(
    log: SegmentedLog, encoder: SegmentBatchEncoder, vectors: np.ndarray, k: int
) -> tuple[int, float]:
    """(tokens, seconds) of the context model over the whole log: the worker reads a user's newest
    k segments in context each time one of them closes (once per closed segment, as here)."""
    states = [
        ContextState.of([_stored(log, s, vectors[s]) for s in log.state_after(user, n, k).segments])
        for user in range(len(log.users))
        for n in range(1, log.n_segments(user) + 1)
    ]
    start = time.perf_counter()
    for i in range(0, len(states), 256):
        encoder.contextualize(states[i : i + 256], k)
    return sum(len(st.vectors) for st in states), time.perf_counter() - start


def _stored(log: SegmentedLog, index: int, vector: np.ndarray) -> StoredSegment:
    seg = log.segments[index]
    return StoredSegment(
        user_id=log.users[seg.user],
        window_start_ms=seg.window_start_ms,
        window_end_ms=seg.window_start_ms + log.closing.window_ms,
        ordinal=seg.ordinal,
        last_event_ms=seg.last_event_ms,
        event_count=len(seg.events.item_ids),
        vector=vector,
        item_ids=tuple(dict.fromkeys(seg.events.item_ids)),
    )


def _timing_rows(n_items: int, rng: np.random.Generator) -> np.ndarray:
    """1,000 candidates for a timed request (drawn with repeats from a smaller catalogue)."""
    return rng.choice(n_items, _CANDIDATES, replace=n_items < _CANDIDATES)


def _random_representation(k: int, dim: int, rng: np.random.Generator) -> Representation:
    vectors = rng.standard_normal((k, dim)).astype(np.float32)
    weights = np.full(k, 1.0 / k, dtype=np.float32)
    return vectors, weights, vectors.mean(axis=0)


def _row(
    name: str,
    holdout: _Holdout,
    scores: Sequence[np.ndarray],
    users_with_state: int,
    tokens: float,
    encode_ms: float,
    request_s: float,
) -> EvaluationRow:
    full, unseen = holdout.metrics(scores)
    return EvaluationRow(name, full, unseen, users_with_state, tokens, encode_ms, 1e6 * request_s)


def _popularity_row(
    holdout: _Holdout, popularity: np.ndarray, candidate_rows: np.ndarray, timing: float
) -> EvaluationRow:
    with one_core():
        request_s = per_call_seconds(lambda: popularity[candidate_rows], timing)
    n = len(holdout.events)
    return _row("popularity", holdout, [popularity] * n, n, 0.0, 0.0, request_s)


def _history_row(
    log: SegmentedLog, holdout: _Holdout, history: SegmentBatchEncoder, timing: float
) -> EvaluationRow:
    length = history.config.max_events
    inputs = [log.history_input(u, p, length) for u, p in holdout.events]
    vectors, seconds = encode_seconds(history, inputs)
    ids = list(log.vocab.items or ())
    items, bias = history.item_vectors(ids), history.item_biases(ids)
    score = history.seen_item_score
    scores = [
        fused_scores(v, items, _seen_bias(log, bias, h.item_ids, score))
        for v, h in zip(vectors, inputs, strict=True)
    ]
    # Re-encoding on every event: the event's own history, capped at `length`, for every event of the log.
    per_user = [np.minimum(np.arange(1, len(p) + 1), length) for p in log.user_positions]
    tokens = float(np.concatenate(per_user).mean())
    candidates = Candidates.gather(items, bias, _timing_rows(len(items), np.random.default_rng(0)))
    seen = _seen_rows(log, inputs[0].item_ids)
    with one_core():
        request_s = per_call_seconds(
            lambda: fused_scores(vectors[0], candidates.vectors, candidates.request_bias(seen, score)), timing
        )
    ms = 1000 * seconds / len(inputs)
    name = f"full history (last {length} events)"
    return _row(name, holdout, scores, len(inputs), tokens, ms, request_s)


def _open_segment_row(
    log: SegmentedLog,
    holdout: _Holdout,
    encoder: SegmentBatchEncoder,
    states: Sequence[list[StoredSegment] | None],
    popularity: np.ndarray,
    half_life_ms: float,
    k: int,
    vector_dtype: str,
) -> EvaluationRow:
    """MaxSim over the open segment (as the newest vector) and the newest k-1 closed ones."""
    opens = [log.open_events(u, p) for u, p in holdout.events]
    present = [o for o in opens if o is not None]
    encoded = quantize(encoder.encode(present), vector_dtype) if present else np.zeros((0, encoder.dim))  # type: ignore[arg-type]
    open_vectors = iter(encoded)
    ids = list(log.vocab.items or ())
    items, bias = encoder.item_vectors(ids), encoder.item_biases(ids)
    with_open: list[list[StoredSegment] | None] = []
    for (user, _), state, segment in zip(holdout.events, states, opens, strict=True):
        segments = list(state or [])
        if segment is not None:
            newest = StoredSegment(
                user_id=log.users[user],
                window_start_ms=2**62,  # sorts first: the newest
                window_end_ms=2**62,
                ordinal=0,
                last_event_ms=max(segment.event_times_ms),
                event_count=len(segment.item_ids),
                vector=next(open_vectors),
                item_ids=tuple(dict.fromkeys(segment.item_ids)),
            )
            segments = [newest, *segments[: k - 1]]
        with_open.append(segments or None)
    representations = _representations(encoder, with_open, k, half_life_ms)  # one batch, as the rows above
    score = encoder.seen_item_score
    scores = [
        popularity
        if rep is None
        else maxsim_scores(
            rep[0], rep[1], items, item_bias=_seen_bias(log, bias, seen_item_ids(segments or ()), score)
        )
        for rep, segments in zip(representations, with_open, strict=True)
    ]
    users = sum(rep is not None for rep in representations)
    full, unseen = holdout.metrics(scores)
    nan = float("nan")  # not a serving path: no cost to report
    return EvaluationRow("what-if: + open segment · MaxSim", full, unseen, users, nan, nan, nan)


def _request_comparison(
    log: SegmentedLog,
    encoder: SegmentBatchEncoder,
    history: SegmentBatchEncoder | None,
    sample: Sample,
    table: tuple[np.ndarray, np.ndarray | None, np.ndarray],
    timing: float,
) -> dict[str, float]:
    """One ranking request on one core: late interaction over K segment vectors against encoding
    a 200-event history with the full-history encoder (an untrained one of the same shape if none).

    `table`: the item vectors, their biases and the request's candidate rows. A timed request
    starts from the gathered candidates (Candidates.gather) and includes the seen-item step and
    every check; the gather is timed on its own (gather_us), since a ranker that encodes the
    history gathers the same candidates to score them."""
    candidates = Candidates.gather(*table)
    long_user = max(range(len(log.users)), key=lambda u: len(log.user_positions[u]))
    positions = log.user_positions[long_user]
    reader = history if history is not None and history.config.max_events >= 200 else None
    if reader is None:
        config = replace(encoder.config, max_events=200)
        reader = SegmentBatchEncoder(SegmentEncoder(config).eval(), log.vocab, device="cpu")
    events = log.history_input(long_user, positions[-1] + 1, 200)
    with one_core():
        maxsim_s = per_call_seconds(
            lambda: maxsim_scores(
                sample.vectors, sample.weights, candidates.vectors, sample.bias(candidates)
            ),
            timing,
        )
        attention_s = per_call_seconds(
            lambda: attention_scores(
                sample.vectors, sample.weights, candidates.vectors, item_bias=sample.bias(candidates)
            ),
            timing,
        )
        gather_s = per_call_seconds(lambda: Candidates.gather(*table), timing)
        encode_s = per_call_seconds(lambda: reader.encode([events]), 5 * timing)
    return {
        "candidates": float(len(candidates.vectors)),
        "segments_k": float(len(sample.vectors)),
        "dim": float(sample.vectors.shape[1]),
        "history_events": float(len(events.item_ids)),
        "maxsim_us": 1e6 * maxsim_s,
        "attention_us": 1e6 * attention_s,
        "gather_us": 1e6 * gather_s,
        "encode_history_us": 1e6 * encode_s,
        "speedup_maxsim": encode_s / maxsim_s,
        "speedup_attention": encode_s / attention_s,
    }
