"""A pipelined encoder stage (an encoder process, or an encoder in the stage's process as on a GPU;
`submit`) stores and publishes exactly what the synchronous stage (`process`) does, on a stream
whose windows run across micro-batches: the representations are built from the store as read
before the batch ahead of it was stored, plus that batch's segments, which the builder kept
(streams/representation_batch.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from topic_values import read_values

from encoders import SegmentBatchEncoder, SegmentEncoderConfig
from schemas import AvroCodec
from store import RocksDBVectorStore, keys
from streams import encoder_stage
from streams.encoder_process import EncoderProcess
from streams.encoder_stage import EncoderStage, SourceRecord, StageConfig
from streams.pipelined_encoder import PipelinedEncoder
from streams.publisher import KafkaPublisher, producer_config
from streams.synthetic import generate
from streams.windowing import SegmentationConfig, SegmentCloser

BATCH = 5  # small: a user's window often spans two micro-batches


def closed_segment_records() -> list[SourceRecord]:
    """Closed segments of 12 users, late records included, and re-sent fragments (a segmenter
    restarted after a crash sends some segments again): duplicates the stage must recognise."""
    closer = SegmentCloser(SegmentationConfig(max_events=3, allowed_lateness_ms=0), partition=0)
    events = generate(n_users=12, n_events=900, seed=11).to_dicts()
    for offset, e in enumerate(events):
        closer.add(
            offset, e["user_id"], e["item_id"], e["action"], e["event_time_ms"], e["weight"], e["event_id"]
        )
        if offset % 40 == 39:  # an event of an earlier one's user and time, arriving late
            old = events[offset - 300] if offset >= 300 else events[0]
            closer.add(offset, old["user_id"], "late", "view", old["event_time_ms"], None, f"late-{offset}")
    closer.advance_watermark(2**62)
    segments: list[dict[str, Any]] = list(closer.closed)
    segments[40:40] = segments[30:36]  # sent again
    codec = AvroCodec("ClosedSegment")
    return [
        SourceRecord(0, offset, codec.encode(segment), key=segment["user_id"].encode())
        for offset, segment in enumerate(segments)
    ]


def run_stage(
    bootstrap: str, topic: str, path: Path, encoder: Any, records: list[SourceRecord], pipelined: bool
) -> tuple[dict[bytes, bytes], encoder_stage.StageReport, list[SourceRecord]]:
    """The store's segments, vectors, representations and offsets, the totals, and the records in
    the order the stage said it stored them."""
    publisher = KafkaPublisher(producer_config({"bootstrap.servers": bootstrap}))
    config = StageConfig("segments", topic, top_k=4, half_life_ms=3.6e6, max_events=3)
    stored: list[SourceRecord] = []
    with RocksDBVectorStore(path) as store:
        stage = EncoderStage(store, encoder, publisher, config)
        for start in range(0, len(records), BATCH):
            batch = records[start : start + BATCH]
            if pipelined:
                stored += stage.submit(batch)
                assert stage.pending  # this batch waits at the encoder
            else:
                stage.process(batch)
                stored += batch
        stored += stage.flush()
        stage.drain()
        state = {k: v for k, v in store._db.items() if not k.startswith(keys.OUTBOX)}
    publisher.close()
    return state, stage.totals, stored


@pytest.mark.parametrize("in_child", [True, False], ids=["encoder-process", "in-process"])
@pytest.mark.parametrize("context_layers", [0, 1], ids=["stored-vectors", "contextual-vectors"])
def test_a_pipelined_stage_stores_and_publishes_what_the_synchronous_one_does(
    kafka_bootstrap: str,
    create_topic,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    context_layers: int,
    in_child: bool,
) -> None:
    records = closed_segment_records()
    config = SegmentEncoderConfig(context_layers=context_layers)
    encoder = SegmentBatchEncoder.untrained(config, seed=0, device="cpu")
    sync_topic, piped_topic = create_topic("reps-sync"), create_topic("reps-piped")
    sync_state, sync_totals, sync_stored = run_stage(
        kafka_bootstrap, sync_topic, tmp_path / "sync", encoder, records, pipelined=False
    )

    successors = []  # windows the next micro-batch took from the pending one's state
    original = encoder_stage._Window.successor
    monkeypatch.setattr(encoder_stage._Window, "successor", lambda w: successors.append(w) or original(w))
    piped = EncoderProcess(encoder, torch_threads=1) if in_child else PipelinedEncoder(encoder)
    try:
        piped_state, piped_totals, piped_stored = run_stage(
            kafka_bootstrap, piped_topic, tmp_path / "piped", piped, records, pipelined=True
        )
    finally:
        if isinstance(piped, EncoderProcess):
            piped.close()

    assert len(successors) > 10  # the overlay was exercised
    assert sync_totals.duplicates > 0 and sync_totals.reasons["late"] > 0  # so was the merging
    assert piped_stored == sync_stored == records  # each record reported stored once, in order
    assert piped_state == sync_state  # every segment, vector, representation and applied offset
    for name in ("records", "encoded", "duplicates", "skipped", "published"):
        assert getattr(piped_totals, name) == getattr(sync_totals, name), name
    published = read_values(kafka_bootstrap, sync_topic, expect=sync_totals.published)
    assert read_values(kafka_bootstrap, piped_topic, expect=piped_totals.published) == published
