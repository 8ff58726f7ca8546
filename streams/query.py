"""Read a user's representation from the store and present it for people or machines."""

from __future__ import annotations

import datetime as dt
from typing import Any

import numpy as np

from schemas import AvroCodec
from store import RocksDBVectorStore, promoted_version
from streams.errors import StreamsError

__all__ = [
    "UnknownUserError",
    "active_model_version",
    "format_representation",
    "read_representation",
    "representation_json",
]


class UnknownUserError(StreamsError):
    """The store holds no representation for this user (under this model version)."""


def active_model_version(store: RocksDBVectorStore) -> str:
    """The model version readers get (`msli store promote` switches it)."""
    value = promoted_version(store)
    if value is None:
        raise StreamsError(f"the store at {store.path} has no representations yet: run `msli worker` first")
    return value


def read_representation(
    store: RocksDBVectorStore, user_id: str, model_version: str | None = None
) -> dict[str, Any]:
    """The decoded UserRepresentation record; UnknownUserError if there is none."""
    version = model_version or active_model_version(store)
    value = store.representation(version, user_id)
    if value is None:
        raise UnknownUserError(f"no representation for user {user_id!r} under model {version}")
    return AvroCodec("UserRepresentation").decode(value)


def _vector(data: bytes) -> np.ndarray:
    return np.frombuffer(data, dtype="<f4")


def representation_json(record: dict[str, Any]) -> dict[str, Any]:
    """JSON-ready form: vectors as float lists, times as ms and ISO-8601."""
    return {
        "user_id": record["user_id"],
        "model_version": record["model_version"],
        "dim": record["dim"],
        "updated_at_ms": record["updated_at_ms"],
        "updated_at": _iso(record["updated_at_ms"]),
        "segments": [
            {
                "segment_id": s["segment_id"],
                "window_start_ms": s["window_start_ms"],
                "window_end_ms": s["window_end_ms"],
                "window_start": _iso(s["window_start_ms"]),
                "last_event_ms": s["last_event_ms"],
                "event_count": s["event_count"],
                "weight": s["weight"],
                "vector": _vector(s["vector"]).tolist(),
            }
            for s in record["segments"]
        ],
        "fused": _vector(record["fused"]).tolist(),
        "seen_item_ids": list(record.get("seen_item_ids", [])),
    }


def format_representation(record: dict[str, Any]) -> str:
    """A short human summary: one line per segment, and the fused vector's head and norm."""
    fused = _vector(record["fused"])
    lines = [
        f"user {record['user_id']}  model {record['model_version']}  dim {record['dim']}  "
        f"updated {_iso(record['updated_at_ms'])}",
        f"{'segment':<32} {'window start':<20} {'events':>6} {'weight':>7}",
    ]
    for s in record["segments"]:
        window = _iso(s["window_start_ms"])
        lines.append(f"{s['segment_id']:<32} {window:<20} {s['event_count']:>6} {s['weight']:>7.3f}")
    head = " ".join(f"{x:+.3f}" for x in fused[:6])
    lines.append(f"fused: [{head} ...]  norm {float(np.linalg.norm(fused)):.3f}")
    seen = record.get("seen_item_ids", [])
    shown = ", ".join(seen[:5]) + (" ..." if len(seen) > 5 else "")
    lines.append(f"seen items: {len(seen)}" + (f" ({shown})" if seen else ""))
    return "\n".join(lines)


def _iso(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
