"""`msli replay`: rebuild a store (and the output topic) from history, under its own consumer group.

`--source segments` re-encodes every closed segment with the configured model into that model
version's namespace, without re-segmenting; segments the store already holds under another
version are encoded too. Records are handed to the encoder stage in chunks aligned to offsets
(`[k*B, (k+1)*B)` per partition), so the same input gives the same store writes and the same
output records however the broker batches its replies. `--source events` re-segments as well: a
worker under the group `<group>-replay` from the chosen position until caught up.

Both write the store at MSLI_STATE_DIR, which no running worker may hold: replay into a fresh
directory (a new deployment, or checking a model), or with that directory's worker stopped.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any, Literal

from confluent_kafka import Consumer, KafkaError, TopicPartition

from store import RocksDBVectorStore, ensure_promoted
from streams.app import WorkerRuntime, load_encoder, run_worker
from streams.config import MsliSettings
from streams.encoder_stage import EncoderStage, StageConfig, StageReport
from streams.log_end import end_probe, log_end_offsets
from streams.pacing import RateLimiter
from streams.progress import Progress
from streams.publisher import KafkaPublisher, producer_config
from streams.replay_positions import Start, resolve_start
from streams.source_record import SourceRecord
from streams.topics import ensure_topics

__all__ = ["ReplayOptions", "ReplaySummary", "replay"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReplayOptions:
    source: Literal["events", "segments"] = "segments"
    start: Start = ("earliest", None)
    rate: float | None = None  # records (segments or events) per second at most
    follow: bool = False  # keep going once caught up


@dataclass
class ReplaySummary:
    model_version: str
    records: int
    encoded: int
    published: int
    seconds: float


def replay(settings: MsliSettings, options: ReplayOptions) -> ReplaySummary:
    if options.source == "events":
        return _replay_events(settings, options)
    return _replay_segments(settings, options)


def _stage_config(settings: MsliSettings, *, encode_missing: bool) -> StageConfig:
    return StageConfig(
        segments_topic=settings.segments_topic,
        representations_topic=settings.representations_topic,
        top_k=settings.top_k_segments,
        half_life_ms=settings.recency_half_life_seconds * 1000,
        max_events=settings.max_events_per_segment,
        encode_missing=encode_missing,
    )


class _AlignedChunks:
    """Per-partition buffers cut at offset multiples of `size`: deterministic micro-batches."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.buffers: dict[int, list[SourceRecord]] = {}

    def add(self, record: SourceRecord) -> list[SourceRecord] | None:
        """Buffer `record`; return the chunk it completed, if any."""
        buffer = self.buffers.setdefault(record.partition, [])
        done = None
        if buffer and buffer[0].offset // self.size != record.offset // self.size:
            done, self.buffers[record.partition] = buffer, [record]
        else:
            buffer.append(record)
        return done

    def drain(self, partition: int) -> list[SourceRecord]:
        return self.buffers.pop(partition, [])


def _replay_segments(settings: MsliSettings, options: ReplayOptions) -> ReplaySummary:
    encoder = load_encoder(settings)
    version = encoder.model_version
    topic = settings.segments_topic
    client = settings.kafka_client_config()
    ensure_topics(settings)  # a replay may publish to a representations topic no worker has used yet
    store = RocksDBVectorStore(settings.state_dir / "store", vector_dtype=settings.vector_dtype)
    publisher = KafkaPublisher(producer_config(client))
    stage = EncoderStage(store, encoder, publisher, _stage_config(settings, encode_missing=True))
    consumer = Consumer(
        {
            **client,
            "group.id": f"{settings.group_id}-replay-{version}",  # assign() only; commits show the lag
            "enable.auto.commit": False,
            "enable.partition.eof": True,
        }
    )
    limiter = RateLimiter(options.rate)
    started = time.monotonic()
    try:
        ensure_promoted(store, version)
        stage.publish_outbox()
        starts = resolve_start(consumer, topic, options.start)
        highs = log_end_offsets(consumer, topic, starts)
        total = sum(max(0, highs[p] - s) for p, s in starts.items())
        log.info("replaying %d closed segments of %s into model %s", total, topic, version)
        consumer.assign([TopicPartition(topic, p, offset) for p, offset in starts.items()])
        chunks = _AlignedChunks(settings.encode_batch_size)
        positions = dict(starts)
        at_end: set[int] = set()

        def process(records: list[SourceRecord]) -> None:
            if records:
                limiter.wait(len(records))
                stage.process(records)
                positions[records[0].partition] = records[-1].offset + 1

        with Progress(f"replay {topic}", total, unit="seg") as progress:
            while True:
                for msg in consumer.consume(settings.encode_batch_size, timeout=0.5):
                    error, partition = msg.error(), msg.partition() or 0
                    if error is not None:
                        if error.code() != KafkaError._PARTITION_EOF:
                            log.warning("replay: %s", error.str())
                            continue
                        at_end.add(partition)  # the rest of its buffer is complete: process it
                        process(chunks.drain(partition))
                        continue
                    at_end.discard(partition)
                    done = chunks.add(SourceRecord(partition, msg.offset() or 0, msg.value()))
                    if done:
                        process(done)
                _report(progress, stage.totals, positions, highs, started)
                if at_end >= set(starts) and not options.follow:
                    break
                _commit(consumer, topic, positions)
        stage.drain()
        _commit(consumer, topic, positions)
    finally:
        consumer.close()
        publisher.close()
        store.close()
    totals = stage.totals
    return ReplaySummary(
        version, totals.records, totals.encoded, totals.published, time.monotonic() - started
    )


def _report(
    progress: Progress, totals: StageReport, positions: dict[int, int], highs: dict[int, int], started: float
) -> None:
    lag = sum(max(0, highs[p] - positions[p]) for p in positions)
    rate = totals.records / max(1e-9, time.monotonic() - started)
    left = f"{lag / rate:.0f}s" if rate > 0 else "?"
    progress.update_to(totals.records, lag=lag, left=left, encoded=totals.encoded)


def _commit(consumer: Consumer, topic: str, positions: dict[int, int]) -> None:
    try:
        consumer.commit(
            offsets=[TopicPartition(topic, p, o) for p, o in positions.items()], asynchronous=True
        )
    except Exception as exc:  # the store's applied offsets are the truth; this is for lag tools
        log.debug("replay offset commit failed: %s", exc)


def _replay_events(settings: MsliSettings, options: ReplayOptions) -> ReplaySummary:
    """Re-segment and re-encode: a worker under its own group, from the chosen start, until caught up."""
    replay_settings = settings.model_copy(
        update={"group_id": f"{settings.group_id}-replay", "metrics_port": None, "api_url": None}
    )
    runtime = WorkerRuntime(replay_settings)
    probe = end_probe(replay_settings, f"{replay_settings.group_id}-probe")
    starts = resolve_start(probe, settings.events_topic, options.start)
    highs = log_end_offsets(probe, settings.events_topic, starts)
    total = sum(max(0, highs[p] - s) for p, s in starts.items())
    runtime.segmenter.start_offsets = starts
    runtime.segmenter.throttle = RateLimiter(options.rate).wait
    started = time.monotonic()
    progress = Progress(f"replay {settings.events_topic}", total)

    settled: list[bool] = []

    async def until_caught_up(_app: Any) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(0.5)
            stats = runtime.segmenter.stats
            read = stats.records_read
            rate = read / max(1e-9, time.monotonic() - started)
            lag = max(0, total - read)
            progress.update_to(read, lag=lag, left=f"{lag / rate:.0f}s" if rate else "?")
            # Twice in a row: closed segments the segmenter just sent may not have reached Kafka.
            if not options.follow and read >= total and await loop.run_in_executor(None, all_applied):
                settled.append(True)
                if len(settled) >= 2:
                    return
            else:
                settled.clear()

    def all_applied() -> bool:
        """No segment open, and every closed segment on the topic reflected in the store."""
        return not runtime.segmenter.describe()["open_windows"] and runtime.segments_applied()

    try:
        run_worker(runtime, until_caught_up)
    finally:
        progress.close()
        probe.close()
    totals = runtime.stage.totals
    return ReplaySummary(
        runtime.encoder.model_version,
        runtime.segmenter.stats.events,
        totals.encoded,
        totals.published,
        time.monotonic() - started,
    )
