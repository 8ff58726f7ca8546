"""Does a checkpoint fit this worker? Refuse what would write wrong vectors; warn about the rest.

Refused (the worker stops before reading anything, with one line and a non-zero exit):

- a checkpoint whose weights do not fit its own config or vocabulary (encoders.checkpoint refuses
  those when it loads them);
- vocabulary: most items of the segments already in the store are outside the checkpoint's explicit
  vocabulary (it was trained on another catalogue), so nearly every event would encode as the one
  out-of-vocabulary row. Checked on a sample of the store's segments; a fresh store has nothing to
  check against;
- segment length: the encoder reads fewer events than a segment may hold (it would drop the rest).

Warned (one line each):

- dimension: readers get the promoted model version, whose vectors have another dimension. Model
  versions live in separate namespaces and every representation names its version and dimension,
  so a new dimension is an upgrade, not an error; but rankers must switch to the new item vectors
  (`msli export-items`) when it is promoted;
- closing rules, K or recency half-life other than the ones the checkpoint was trained with: the
  vectors still mean something, but the measured quality was for the trained settings.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from encoders import SegmentBatchEncoder
from schemas import AvroCodec
from store import RocksDBVectorStore, promoted_version
from streams.config import MsliSettings
from streams.errors import StreamsError
from streams.windowing import SegmentationConfig

__all__ = ["EncoderFitError", "check_encoder_fits"]

_VOCAB_SAMPLE = 2000  # stored segment events looked at for the vocabulary check
_MIN_KNOWN = 0.5  # refuse when fewer than this fraction of sampled items are in the vocabulary


class EncoderFitError(StreamsError):
    """The checkpoint would make vectors that do not fit this worker's store or settings."""


def check_encoder_fits(
    encoder: SegmentBatchEncoder, settings: MsliSettings, store: RocksDBVectorStore
) -> list[str]:
    """Raise EncoderFitError for a checkpoint this worker must not run; return warnings (one line each)."""
    name = str(settings.encoder_checkpoint or "the untrained default encoder")
    if encoder.config.max_events < settings.max_events_per_segment:
        raise EncoderFitError(
            f"{name} reads at most {encoder.config.max_events} events per segment, but "
            f"max_events_per_segment is {settings.max_events_per_segment}"
        )
    _check_vocabulary(encoder, store, name)
    return _dimension_warnings(encoder, store, name) + _setting_warnings(encoder, settings, name)


def _dimension_warnings(encoder: SegmentBatchEncoder, store: RocksDBVectorStore, name: str) -> list[str]:
    promoted = promoted_version(store)
    if promoted is None or promoted == encoder.model_version:
        return []
    user = next(store.representation_users(promoted), None)
    value = None if user is None else store.representation(promoted, user)
    if value is None:
        return []
    dim = AvroCodec("UserRepresentation").decode(value)["dim"]
    if dim == encoder.dim:
        return []
    return [
        f"{name} makes {encoder.dim}-dimensional vectors; readers get model {promoted} ({dim}-dimensional) "
        f"until it is promoted: give rankers its item vectors (msli export-items) when promoting it"
    ]


def _check_vocabulary(encoder: SegmentBatchEncoder, store: RocksDBVectorStore, name: str) -> None:
    if encoder.vocab.mode != "explicit":
        return  # hashing takes any id
    codec = AvroCodec("ClosedSegment")
    items: list[str] = []
    for value in store.segment_event_records(limit=_VOCAB_SAMPLE):
        items.extend(e["item_id"] for e in codec.decode(value)["events"])
        if len(items) >= _VOCAB_SAMPLE:
            break
    if not items:
        return
    known = sum(1 for row in encoder.vocab.rows(items).tolist() if row >= 2) / len(items)
    if known < _MIN_KNOWN:
        raise EncoderFitError(
            f"{name} knows {known:.0%} of the items in the store's segments ({len(items):,} sampled): "
            "its vocabulary was trained on another catalogue"
        )


def _setting_warnings(encoder: SegmentBatchEncoder, settings: MsliSettings, name: str) -> list[str]:
    warnings = []
    trained = encoder.extra.get("closing")
    if isinstance(trained, dict):
        trained = SegmentationConfig.recorded(trained)
        current = dataclasses.asdict(SegmentationConfig.from_settings(settings))
        differ = [f"{k} {trained.get(k)!r} -> {v!r}" for k, v in current.items() if trained.get(k) != v]
        if differ:
            warnings.append(f"{name} was trained with other closing rules: {', '.join(differ)}")
    representation: dict[str, Any] = encoder.extra.get("representation") or {}
    for key, value in (
        ("top_k_segments", settings.top_k_segments),
        ("recency_half_life_ms", settings.recency_half_life_seconds * 1000),
    ):
        if key in representation and representation[key] != value:
            warnings.append(
                f"{name} was trained with {key} {representation[key]!r}, this worker uses {value!r}"
            )
    return warnings
