"""The encoder stage publishes its outbox without waiting: a micro-batch's representations stay in
the store's outbox until a later write (or settle/drain) sees them acknowledged, oldest first."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from topic_values import read_values

from encoders import SegmentBatchEncoder
from schemas import AvroCodec
from store import RocksDBVectorStore
from streams.encoder_stage import EncoderStage, SourceRecord, StageConfig
from streams.publisher import KafkaPublisher, producer_config
from streams.synthetic import generate
from streams.windowing import SegmentationConfig, SegmentCloser


def closed_segments(n_events: int) -> list[dict[str, Any]]:
    closer = SegmentCloser(SegmentationConfig(max_events=4), partition=0)
    for offset, e in enumerate(generate(n_users=30, n_events=n_events, seed=5).to_dicts()):
        closer.add(
            offset, e["user_id"], e["item_id"], e["action"], e["event_time_ms"], e["weight"], e["event_id"]
        )
    closer.advance_watermark(2**62)
    return [r for r in closer.closed if r["close_reason"] != "late"]


def test_the_outbox_empties_after_the_write_that_follows_its_acknowledgement(
    kafka_bootstrap: str, create_topic, tmp_path: Path
) -> None:
    reps_topic = create_topic("representations")
    codec = AvroCodec("ClosedSegment")
    records = [
        SourceRecord(0, offset, codec.encode(rec), key=rec["user_id"].encode())
        for offset, rec in enumerate(closed_segments(400))
    ]
    half = len(records) // 2
    publisher = KafkaPublisher(producer_config({"bootstrap.servers": kafka_bootstrap}))
    store = RocksDBVectorStore(tmp_path / "store")
    try:
        stage = EncoderStage(
            store,
            SegmentBatchEncoder.untrained(seed=0, device="cpu"),
            publisher,
            StageConfig("segments", reps_topic, top_k=4, half_life_ms=3.6e6, max_events=4),
        )
        first = stage.process(records[:half])
        sent_first = store.pending_outbox()
        # Returned without waiting: the batch's representations are still in the outbox.
        assert first.published == 0 and len(sent_first) == len({r.key for r in records[:half]})
        stage.outbox.wait()  # acknowledged now, but the store forgets them only at its next write
        assert store.pending_outbox() == sent_first

        second = stage.process(records[half:])
        sent_second = store.pending_outbox()
        assert second.published == len(sent_first)  # forgotten in the second batch's write
        assert sent_second and min(r.seq for r in sent_second) > max(r.seq for r in sent_first)

        stage.drain()
        assert store.pending_outbox() == []
        assert stage.totals.published == len(sent_first) + len(sent_second)
        published = read_values(kafka_bootstrap, reps_topic, expect=stage.totals.published)
        assert published == [r.value for r in sent_first + sent_second]  # in outbox order, once each
        for record in sent_second:  # each user's newest state is the one the store holds
            assert store.representation(stage.encoder.model_version, record.key.decode()) == record.value
    finally:
        publisher.close()
        store.close()


def test_a_restart_publishes_each_user_the_outbox_names_once_as_stored(
    kafka_bootstrap: str, create_topic, tmp_path: Path
) -> None:
    reps_topic = create_topic("representations")
    encoder = SegmentBatchEncoder.untrained(seed=0, device="cpu")
    version = encoder.model_version
    publisher = KafkaPublisher(producer_config({"bootstrap.servers": kafka_bootstrap}))
    store = RocksDBVectorStore(tmp_path / "store")
    try:
        # What a crash leaves after three micro-batches' writes, none of them acknowledged: the
        # outbox names u twice; the store holds u's second state.
        for user_id, value in (("u", b"u-1"), ("w", b"w-1"), ("u", b"u-2")):
            batch = store.batch()
            batch.put_representation(version, user_id, value)
            batch.add_outbox(reps_topic, version, [user_id], [value])
            store.write(batch)
        config = StageConfig("segments", reps_topic, top_k=4, half_life_ms=3.6e6, max_events=4)
        assert EncoderStage(store, encoder, publisher, config).publish_outbox() == 2
        assert store.pending_outbox() == []
        # Flushed before publish_outbox returned: a third record would be there by now.
        assert read_values(kafka_bootstrap, reps_topic, expect=3, timeout=3.0) == [b"u-2", b"w-1"]
    finally:
        publisher.close()
        store.close()
