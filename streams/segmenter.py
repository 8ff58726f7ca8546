"""The segmenter: behaviour events in (confluent-kafka, batch consume), closed segments out.

Runs in its own thread (librdkafka releases the GIL while it waits). Progress is safe in this order:
produce closed segments and dead letters, flush and verify delivery, write checkpoints, then commit
offsets. A checkpoint points at the first event of the oldest window still open, so a restart
replays exactly what was not yet reflected downstream; the store drops the re-sent events.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Consumer, KafkaError, Message, TopicPartition

from schemas import AvroCodec
from streams.checkpoints import CheckpointLog
from streams.config import MsliSettings
from streams.consuming import IDLE_WAIT_SECONDS, consume_available, prompt_consumer_config
from streams.dead_letters import DeadLetterSink
from streams.events import BadEvent, EventValidator
from streams.faults import crash_point
from streams.publisher import Headers, KafkaPublisher, producer_config
from streams.topics import CLOSABLE_AT_HEADER, kafka_timestamp_ms
from streams.windowing import ClosedHead, SegmentationConfig, SegmentCloser

__all__ = ["Segmenter", "SegmenterStats"]

log = logging.getLogger(__name__)


@dataclass
class SegmenterStats:
    events: int = 0
    dead_letters: int = 0
    late: int = 0
    duplicates: int = 0
    capped: int = 0  # events over the segments-per-window cap (dead-lettered)
    stalls: int = 0  # checkpoints Kafka took longer than the session timeout to acknowledge
    stalled_seconds: float = 0.0
    closed: Counter[str] = field(default_factory=Counter)
    positions: dict[int, int] = field(default_factory=dict)  # next offset to read, per partition

    @property
    def segments_closed(self) -> int:
        return sum(n for reason, n in self.closed.items() if reason != "late")

    @property
    def records_read(self) -> int:
        """Records consumed: valid events and dead-lettered ones (what "caught up" counts)."""
        return self.events + self.dead_letters


class Segmenter:
    """Consume behaviour events as one member of the group; `run()` until `stop()`."""

    def __init__(self, settings: MsliSettings) -> None:
        self.settings = settings
        client = settings.kafka_client_config()
        self.topic = settings.events_topic
        self.consumer = Consumer(
            prompt_consumer_config(
                settings,
                **{
                    "group.id": settings.group_id,
                    "enable.auto.commit": False,
                    "auto.offset.reset": "earliest",
                    "session.timeout.ms": int(settings.session_timeout_seconds * 1000),
                    "heartbeat.interval.ms": max(500, int(settings.session_timeout_seconds * 1000) // 3),
                },
            )
        )
        self.publisher = KafkaPublisher(producer_config(client))
        self.dead_letters = DeadLetterSink(self.publisher, settings.dead_letter_topic)
        self.checkpoints = CheckpointLog(client, settings.checkpoints_topic, settings.group_id)
        self.rules = SegmentationConfig.from_settings(settings)
        self.validator = EventValidator(
            AvroCodec("BehaviourEvent"),
            max_record_bytes=settings.max_record_bytes,
            max_future_ms=int(settings.max_future_seconds * 1000),
        )
        self.codec = AvroCodec("ClosedSegment")
        self.closers: dict[int, SegmentCloser] = {}
        # Per partition, when each record now in closer.closed became closable (wall-clock ms).
        self._closable_at: dict[int, list[int]] = {}
        self.stats = SegmenterStats()
        self._last_record_at: dict[int, float] = {}
        self._stop = threading.Event()
        self._last_checkpoint = self._last_status = time.monotonic()
        self.assigned = threading.Event()  # set once the group has given this member partitions
        # A replay (`msli replay --source events`) starts here instead of at its checkpoints,
        # and may cap its speed: throttle(n) is called before handling n records.
        self.start_offsets: dict[int, int] | None = None
        self.throttle: Callable[[int], None] | None = None
        self.on_progress: Callable[[], None] | None = None  # called once per consume loop, on its thread

    # --- lifecycle -------------------------------------------------------------------------------
    def stop(self) -> None:
        self._stop.set()

    def run(self) -> None:
        """Consume until stopped; on the way out, checkpoint and leave the group cleanly."""
        self.consumer.subscribe([self.topic], on_assign=self._on_assign, on_revoke=self._on_revoke)
        try:
            while not self._stop.is_set():
                messages = consume_available(
                    self.consumer, self.settings.consume_batch_size, IDLE_WAIT_SECONDS
                )
                if messages:
                    if self.throttle is not None:
                        self.throttle(len(messages))
                    self._handle(messages)
                self._advance_quiet_partitions()
                if time.monotonic() - self._last_checkpoint >= self.settings.commit_interval_seconds:
                    self.checkpoint()
                if time.monotonic() - self._last_status >= self.settings.status_interval_seconds:
                    self._log_status()
                if self.on_progress is not None:
                    self.on_progress()
            self.checkpoint()
        finally:
            self.consumer.close()
            self.publisher.close()

    # --- per batch -------------------------------------------------------------------------------
    def _handle(self, messages: list[Message]) -> None:
        now = time.time()
        now_ms = int(now * 1000)
        read = self.validator.read
        events = 0
        for msg in messages:
            error = msg.error()
            if error is not None:
                self._on_consume_error(error)
                continue
            # Set on every consumed record; the stubs say Optional because produced messages lack them.
            partition: int = msg.partition()  # type: ignore[assignment]
            offset: int = msg.offset()  # type: ignore[assignment]
            closer = self.closers.get(partition)
            if closer is None:  # a record fetched just before its partition was revoked
                continue
            self._last_record_at[partition] = now
            event = read(msg.value(), now_ms)
            if isinstance(event, BadEvent):
                closer.next_offset = offset + 1
                self._dead_letter(msg, event.reason, event.detail)
                continue
            events += 1
            late_before, capped_before = len(closer.late_offsets), len(closer.capped_offsets)
            closed_before = len(closer.closed)
            closer.add(offset, *event)
            if len(closer.closed) > closed_before:  # this event made segments closable
                stamp = kafka_timestamp_ms(msg) or now_ms
                self._stamp(partition, len(closer.closed) - closed_before, stamp)
            if len(closer.late_offsets) > late_before:
                self._dead_letter(msg, "late", f"window closed; watermark {closer.watermark}")
            elif len(closer.capped_offsets) > capped_before:
                self.stats.capped += 1
                self._dead_letter(
                    msg, "segment-cap", f"user has {self.rules.max_segments} segments in this window already"
                )
        self.stats.events += events
        self._emit_closed()

    def _stamp(self, partition: int, count: int, closable_at_ms: int) -> None:
        self._closable_at.setdefault(partition, []).extend([closable_at_ms] * count)

    def _emit_closed(self) -> None:
        for partition, closer in self.closers.items():
            stamps = self._closable_at.pop(partition, [])
            for i, (user_id, reason, value) in enumerate(closer.closed):
                self.stats.closed[reason] += 1
                headers: Headers | None = (
                    [(CLOSABLE_AT_HEADER, str(stamps[i]).encode())] if i < len(stamps) else None
                )
                self.publisher.send(self.settings.segments_topic, user_id.encode(), value, headers)
            closer.closed.clear()
            closer.late_offsets.clear()
            closer.capped_offsets.clear()
            self.stats.positions[partition] = closer.next_offset
        self.stats.late = sum(c.late for c in self.closers.values())
        self.stats.duplicates = sum(c.duplicates for c in self.closers.values())
        self.publisher.poll()

    def _closed_segment(self, head: ClosedHead, event_bytes: list[bytes]) -> tuple[str, str, bytes]:
        """(user id, close reason, ClosedSegment bytes): what the closers collect. The events' bytes
        are those they came in, cut out of their BehaviourEvents, so no event is encoded again."""
        return head.user_id, head.close_reason, self.codec.encode_closed_segment_parts(head, event_bytes)

    def _advance_quiet_partitions(self) -> None:
        """A partition without records for `partition_idle_seconds` follows the wall clock, so a
        quiet topic still closes its segments (faust and Quix Streams leave them open)."""
        now = time.time()
        for partition, closer in self.closers.items():
            if (
                closer.open_windows
                and now - self._last_record_at.get(partition, now) >= self.settings.partition_idle_seconds
                and not self._has_unread_records(partition, closer.next_offset)
            ):
                closed_before = len(closer.closed)
                closer.advance_watermark(int(now * 1000))
                self._stamp(partition, len(closer.closed) - closed_before, int(now * 1000))
        self._emit_closed()

    def _has_unread_records(self, partition: int, next_offset: int) -> bool:
        """Whether the broker holds records of `partition` this consumer has not read yet.

        While catching up, librdkafka hands over one partition's fetched records after another,
        so a partition with a backlog can go without records for a while; it is behind, not
        quiet, and following the clock would make all its backlog late. The high watermark is
        the one cached from fetch responses (no broker round trip); unknown counts as no backlog.
        (The local broker reports it short by up to one record batch, which is in flight anyway.)
        """
        if next_offset < 0:
            return False
        _, high = self.consumer.get_watermark_offsets(TopicPartition(self.topic, partition), cached=True)
        return high > next_offset

    def _dead_letter(self, msg: Message, reason: str, detail: str) -> None:
        self.stats.dead_letters += 1
        self.dead_letters.send(
            key=msg.key(),
            value=msg.value(),
            source_topic=msg.topic() or "",
            partition=msg.partition() or 0,
            offset=msg.offset() or 0,
            reason=reason,
            detail=detail,
        )

    def _on_consume_error(self, error: KafkaError) -> None:
        if error.code() == KafkaError._PARTITION_EOF:
            return
        if error.fatal():
            raise RuntimeError(f"Kafka consumer failed: {error.str()}")
        log.warning("Kafka consumer: %s", error.str())

    # --- progress ----------------------------------------------------------------------------------
    def checkpoint(self, partitions: list[int] | None = None) -> None:
        """Make everything produced so far durable, then record where a restart resumes."""
        started = self._last_checkpoint = time.monotonic()
        self._save_progress(partitions)
        self._note_stall(time.monotonic() - started)

    def _save_progress(self, partitions: list[int] | None) -> None:
        chosen = {p: c for p, c in self.closers.items() if partitions is None or p in partitions}
        self.publisher.flush()
        if not chosen:
            return
        points = {p: point for p, c in chosen.items() if (point := c.checkpoint()) is not None}
        if not points:
            return
        crash_point("segments-published")
        self.checkpoints.save(self.publisher, self.topic, points)
        self.publisher.flush()
        offsets = [TopicPartition(self.topic, p, offset) for p, (offset, _) in points.items()]
        try:
            self.consumer.commit(offsets=offsets, asynchronous=False)
        except Exception as exc:  # the checkpoint topic already holds the truth; the commit is for lag tools
            log.warning("offset commit failed (checkpoints are saved): %s", exc)
        crash_point("checkpoint-committed")

    def _note_stall(self, seconds: float) -> None:
        """A checkpoint is a round trip to every broker we write to: one that takes longer than the
        session timeout means Kafka stalled. The worker waits it out; the log and stats say so."""
        if seconds <= self.settings.session_timeout_seconds:
            return
        self.stats.stalls += 1
        self.stats.stalled_seconds += seconds
        log.warning(
            "Kafka stalled: a checkpoint took %.1f s to be acknowledged (session timeout %.0f s); resumed",
            seconds,
            self.settings.session_timeout_seconds,
        )

    def _log_status(self) -> None:
        self._last_status = time.monotonic()
        stats, closers = self.stats, self.closers.values()
        log.info(
            "status: %d events, %d segments closed, %d open segments (%d windows, %d events), "
            "%d dead letters, %d duplicates, %d stalls",
            stats.events,
            stats.segments_closed,
            sum(c.open_segments for c in closers),
            sum(c.open_windows for c in closers),
            sum(c.open_events() for c in closers),
            stats.dead_letters,
            stats.duplicates,
            stats.stalls,
        )

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        saved = self.checkpoints.load(self.topic)
        for tp in partitions:
            closer = SegmentCloser(self.rules, tp.partition, write_bytes=self._closed_segment)
            if self.start_offsets is not None and tp.partition in self.start_offsets:
                tp.offset = closer.next_offset = self.start_offsets[tp.partition]
            elif tp.partition in saved:
                tp.offset, closer.watermark = saved[tp.partition]
                closer.next_offset = tp.offset
            self.closers[tp.partition] = closer
            self._last_record_at[tp.partition] = time.time()
        consumer.assign(partitions)
        log.info("assigned %s[%s]", self.topic, ",".join(str(tp.partition) for tp in partitions))
        self.assigned.set()

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        revoked = [tp.partition for tp in partitions]
        self.checkpoint(revoked)
        for p in revoked:
            self.closers.pop(p, None)
            self._last_record_at.pop(p, None)
            self._closable_at.pop(p, None)
        log.info("revoked %s[%s]", self.topic, ",".join(map(str, revoked)))

    def describe(self) -> dict[str, Any]:
        return {
            "open_segments": sum(c.open_segments for c in self.closers.values()),
            "open_windows": sum(c.open_windows for c in self.closers.values()),
            "partitions": sorted(self.closers),
        }
