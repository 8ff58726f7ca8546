"""The quality table that `msli evaluate` prints (and its JSON), one row per way of serving a user."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from encoders.metrics import RankingMetrics

__all__ = ["EvaluationReport", "EvaluationRow"]

_NAME = 34  # width of the method column


@dataclass(frozen=True)
class EvaluationRow:
    name: str
    all_items: RankingMetrics  # every item ranked
    unseen: RankingMetrics  # items the user rated before removed
    users_with_state: int  # users scored by this method itself (the rest fell back to popularity)
    tokens_per_event: float  # encoder input tokens per new event
    encode_ms_per_event: float  # measured encoder time per new event (this machine, all cores)
    score_us_per_request: float  # scoring 1,000 candidates on one core


@dataclass
class EvaluationReport:
    rows: list[EvaluationRow]
    users: int
    items: int
    settings: dict[str, Any]  # closing rules, K, half-life, store dtype, model versions
    request: dict[str, float] = field(default_factory=dict)  # the per-request comparison (one core)

    def as_json(self) -> dict[str, Any]:
        return {
            "protocol": "leave-one-out by time; all items ranked; HR@10, NDCG@10",
            "users": self.users,
            "items": self.items,
            "settings": self.settings,
            "rows": [
                {
                    **{k: v for k, v in asdict(row).items() if k not in ("all_items", "unseen")},
                    "all_items": row.all_items.as_dict(),
                    "rated_removed": row.unseen.as_dict(),
                }
                for row in self.rows
            ],
            "request": self.request,
        }

    def text(self) -> str:
        """The table, then what it was measured under and the per-request comparison."""
        head = (
            f"{'method':<{_NAME}} {'HR@10':>6} {'NDCG@10':>7} | {'HR@10':>6} {'NDCG@10':>7} | "
            f"{'users':>5} {'tokens/ev':>9} {'enc ms/ev':>9} {'score µs':>8}"
        )
        lines = [f"{'':<{_NAME}} {'all items ranked':^16} | {'rated removed':^16} |", head, "-" * len(head)]
        lines += [_row_line(r) for r in self.rows]
        return "\n".join([*lines, "", *self._notes()])

    def _notes(self) -> list[str]:
        c, s = self.settings["closing"], self.settings
        window, lateness, idle = (c[k] / 1000 for k in ("window_ms", "allowed_lateness_ms", "user_idle_ms"))
        half_life_h = s["recency_half_life_ms"] / 3.6e6
        notes = [
            f"{self.users:,} test events (each user's last), {self.items:,} items ranked.",
            f"Closing rules: window {window:g} s, lateness {lateness:g} s, idle {idle:g} s, "
            f"at most {c['max_events']} events per segment; K = {s['top_k_segments']}, "
            f"recency half-life {half_life_h:g} h, vectors stored as {s['vector_dtype']}.",
            "users: scored by the method itself (segment rows rank the others by popularity).",
            "tokens/ev: encoder input tokens per new event; enc ms/ev: encoder time per new event, "
            "this machine, all cores; score µs: one request of 1,000 candidates, one core.",
        ]
        if s.get("context_layers"):
            layers = s["context_layers"]
            notes.append(
                f"Segment rows read each representation's segments in context ({layers} context "
                f"layer{'s' if layers > 1 else ''}, run whenever a segment closes): tokens/ev and enc ms/ev "
                "include that work."
            )
        scores = [(name, s.get(f"{name}_seen_item_score")) for name in ("segment", "history")]
        learned = [f"{name} model {score:+.2f}" for name, score in scores if score is not None]
        if learned:
            notes.append(
                f"Seen-item score ({', '.join(learned)}): added to the items the model's own input holds "
                "(a state's segments; the full-history row's input events), as rankers add it to "
                "seen_item_ids; the timed requests include that step."
            )
        errors = ", ".join(f"{r.name.split(' (')[0]} {r.all_items.ndcg_se:.4f}" for r in self.rows)
        notes.append(f"One standard error of NDCG@10 (all items ranked): {errors}.")
        history = next((r for r in self.rows if r.name.startswith("full history")), None)
        segments = next((r for r in self.rows if r.name.startswith("segments")), None)
        if history is not None and segments is not None:
            ratio = history.tokens_per_event / segments.tokens_per_event
            notes.append(
                f"Encoder tokens per event: full history {history.tokens_per_event:.1f}, "
                f"segments {segments.tokens_per_event:.1f} ({ratio:.0f}x fewer)."
            )
        if self.request:
            q = self.request
            k, d, n = int(q["segments_k"]), int(q["dim"]), int(q["history_events"])
            notes.append(
                f"One request on one core, {q['candidates']:.0f} candidates against K = {k} vectors of "
                f"d = {d}: MaxSim {q['maxsim_us']:.1f} µs, attention {q['attention_us']:.1f} µs; encoding "
                f"a {n}-event history {q['encode_history_us']:,.0f} µs ({q['speedup_maxsim']:,.0f}x and "
                f"{q['speedup_attention']:,.0f}x as long). Gathering the candidates' vectors and "
                f"biases from the item table first, as a full-history ranker does too: "
                f"{q['gather_us']:.1f} µs."
            )
        return notes


def _row_line(r: EvaluationRow) -> str:
    return (
        f"{r.name:<{_NAME}} {r.all_items.hr:>6.4f} {r.all_items.ndcg:>7.4f} | {r.unseen.hr:>6.4f} "
        f"{r.unseen.ndcg:>7.4f} | {r.users_with_state:>5} {_num(r.tokens_per_event, 9, 1)} "
        f"{_num(r.encode_ms_per_event, 9, 3)} {_num(r.score_us_per_request, 8, 1)}"
    )


def _num(value: float, width: int, digits: int) -> str:
    """A figure, or '-' for NaN (a what-if row is not a serving path and has no cost)."""
    return f"{'-':>{width}}" if math.isnan(value) else f"{value:>{width}.{digits}f}"
