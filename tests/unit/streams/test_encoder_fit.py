"""The worker refuses a checkpoint that does not fit its store or settings, and warns about the rest."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from encoders import ItemVocabulary, SegmentBatchEncoder, SegmentEncoder, SegmentEncoderConfig
from schemas import AvroCodec
from store import RocksDBVectorStore, StoredSegment, ensure_promoted
from streams.config import MsliSettings
from streams.encoder_fit import EncoderFitError, check_encoder_fits
from streams.fuser import representation_record
from streams.windowing import SegmentationConfig

ITEMS = [f"movie-{i}" for i in range(40)]


def encoder(dim: int = 16, items: list[str] = ITEMS, max_events: int = 32, extra: dict | None = None):
    vocab = ItemVocabulary.explicit(items)
    config = SegmentEncoderConfig(
        dim=dim, n_layers=1, n_heads=2, max_events=max_events, n_item_buckets=vocab.n_rows
    )
    return SegmentBatchEncoder(SegmentEncoder(config), vocab, device="cpu", extra=extra)


def settings(**changes) -> MsliSettings:
    return MsliSettings(encoder_checkpoint=Path("ckpt"), max_events_per_segment=32, **changes)


@pytest.fixture
def store(tmp_path):
    """A store a worker has filled with 16-dimensional vectors of model m-previous (promoted), for ITEMS."""
    s = RocksDBVectorStore(tmp_path / "store")
    batch = s.batch()
    events = [
        {"item_id": item, "action": "click", "event_time_ms": 1_000 + i, "weight": None, "event_id": None}
        for i, item in enumerate(ITEMS[:10])
    ]
    record = {
        "segment_id": "u:0:0",
        "user_id": "u",
        "window_start_ms": 0,
        "window_end_ms": 3_600_000,
        "ordinal": 0,
        "close_reason": "window",
        "events": events,
        "source_partition": 0,
        "first_offset": 0,
        "last_offset": 9,
    }
    batch.put_segment_events("u", 0, 0, AvroCodec("ClosedSegment").encode(record))
    segment = StoredSegment("u", 0, 3_600_000, 0, 1_009, 10, np.ones(16, dtype=np.float32))
    rep = representation_record("u", "m-previous", [segment], 3_600_000.0)
    batch.put_representation("m-previous", "u", AvroCodec("UserRepresentation").encode(rep))
    s.write(batch)
    ensure_promoted(s, "m-previous")
    yield s
    s.close()


def test_a_fitting_checkpoint_passes_silently(store):
    assert check_encoder_fits(encoder(), settings(), store) == []


def test_another_dimension_than_the_promoted_version_is_an_upgrade_with_a_warning(store):
    warnings = check_encoder_fits(encoder(dim=32), settings(), store)
    assert len(warnings) == 1
    assert "makes 32-dimensional vectors; readers get model m-previous (16-dimensional)" in warnings[0]


def test_a_vocabulary_of_another_catalogue_is_refused(store):
    with pytest.raises(EncoderFitError, match="knows 0% of the items"):
        check_encoder_fits(encoder(items=["book-1", "book-2"]), settings(), store)
    # Half the items known is enough: a catalogue grows.
    assert check_encoder_fits(encoder(items=[*ITEMS[:5], "book-1"]), settings(), store) == []


def test_an_encoder_shorter_than_a_segment_is_refused(store):
    with pytest.raises(EncoderFitError, match="reads at most 16 events per segment"):
        check_encoder_fits(encoder(max_events=16), settings(), store)


def test_a_fresh_store_accepts_any_dimension_and_vocabulary(tmp_path):
    """Nothing is promoted and no segment is stored yet: nothing to compare with."""
    with RocksDBVectorStore(tmp_path / "fresh") as fresh:
        assert check_encoder_fits(encoder(dim=32, items=["x"]), settings(), fresh) == []


def test_other_closing_rules_and_fusion_settings_are_warned_about(store):
    trained_with = dataclasses.asdict(SegmentationConfig(max_events=8))
    extra = {"closing": trained_with, "representation": {"top_k_segments": 8, "recency_half_life_ms": 1.0}}
    warnings = check_encoder_fits(encoder(extra=extra), settings(), store)
    assert len(warnings) == 3
    assert "closing rules: max_events 8 -> 32" in warnings[0]
    assert "top_k_segments 8, this worker uses 16" in warnings[1]
    same = {"closing": dataclasses.asdict(SegmentationConfig.from_settings(settings()))}
    assert check_encoder_fits(encoder(extra=same), settings(), store) == []
