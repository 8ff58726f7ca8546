"""The encoder stage's consumer: closed segments in micro-batches, straight from confluent-kafka.

One thread does all of the stage's work: consume up to `encode_batch_size` records (what has
arrived once the first one has, see streams/consuming.py), hand them to `EncoderStage.submit`,
commit what the store holds, and settle the outbox when no record comes. With an encoder process
(streams/encoder_process.py) a micro-batch waits at the encoder until the next one is merged, or
until a poll finds nothing more: then it is stored at once. It replaced a faust agent, whose per-message
path (a callback awaited per message, an event built, queued, iterated and acknowledged) held the
interpreter lock about as long as the whole encoder stage did (docs/performance.md, third and
fourth rounds); librdkafka hands over a batch in one call and waits without the lock.

Group: `<group id>-encoder`, the group faust's agent used, so the offsets it committed carry over.
(A faust-based worker and this one cannot be in the group at the same moment: faust's assignor is
"faust", librdkafka's are range and roundrobin, and Kafka refuses a member that shares no
assignment protocol with the group. Stop old workers before starting new ones.)

Rebalances: librdkafka runs the callbacks inside `consume()`, on this thread, so a micro-batch in
hand (or at the encoder) is always stored before its partitions are given up, and nothing is
processed while one runs.
On assignment, partitions new to this process are first caught up (restored from the topic up to
its log end) and their queries routed here (`on_assigned`, see streams/operations.py); then each
partition is read from the store's applied offset + 1. A partition the store has never applied
starts at the group's committed offset, else at the earliest record, as faust's consumer did
(committed offsets, auto.offset.reset=earliest). Offsets are committed after the store write,
every `commit_interval_seconds` without waiting, and when partitions go or the consumer stops:
they serve lag tools; the store's applied offsets are the truth (a redelivered
record is skipped), so a lost commit costs a re-read, nothing else.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from streams.config import MsliSettings
from streams.consuming import IDLE_WAIT_SECONDS, consume_available, prompt_consumer_config
from streams.encoder_stage import EncoderStage
from streams.source_record import SourceRecord
from streams.topics import closable_at_ms, kafka_timestamp_ms

__all__ = ["SegmentConsumer"]

log = logging.getLogger(__name__)

OUTBOX_SETTLE_SECONDS = 0.5  # how often an idle stage forgets acknowledged outbox records
# A catch-up (a restore of partitions new to this worker) runs inside the assignment callback and
# may take minutes; faust's consumer allowed 1000 s between polls, and so does this one.
MAX_POLL_INTERVAL_MS = 1_000_000


class SegmentConsumer:
    """Consume closed segments as one member of `<group>-encoder`; `run()` until `stop()`."""

    def __init__(
        self,
        settings: MsliSettings,
        stage: EncoderStage,
        on_assigned: Callable[[list[int]], None] = lambda _: None,
    ) -> None:
        self.settings = settings
        self.stage = stage
        self.topic = settings.segments_topic
        # Called with every partition this member owns after each assignment, before any of their
        # records is processed: the catch-up and route advertisement (WorkerOperations).
        self.on_assigned = on_assigned
        session_ms = int(settings.session_timeout_seconds * 1000)
        self.consumer = Consumer(
            prompt_consumer_config(
                settings,
                **{
                    "group.id": f"{settings.group_id}-encoder",
                    "enable.auto.commit": False,
                    "auto.offset.reset": "earliest",
                    "session.timeout.ms": session_ms,
                    "heartbeat.interval.ms": max(500, session_ms // 3),
                    "max.poll.interval.ms": MAX_POLL_INTERVAL_MS,
                },
            )
        )
        self.owned: set[int] = set()  # partitions assigned to this member now
        # Next offset per partition past the records this member stored since it was assigned it:
        # what it commits (never a position it only read from its store, which may lag the group's).
        self._positions: dict[int, int] = {}
        self._committed_at = time.monotonic()
        self._stop = threading.Event()
        self._idle = threading.Event()  # set while `run()` is not running
        self._idle.set()
        self._lock = threading.Lock()
        self._closing = False  # once set, `run()` does not start
        self._released = False

    def stop(self) -> None:
        self._stop.set()

    def close(self) -> None:
        """Stop, wait for a `run()` in progress to end (it leaves the group on its way out), and
        release the client; safe to call twice, and before or without `run()`."""
        self.stop()
        with self._lock:
            self._closing = True
        self._idle.wait()
        self._leave()

    def run(self) -> None:
        """Consume until stopped; on the way out, commit what is stored and leave the group."""
        with self._lock:
            if self._closing:
                return
            self._idle.clear()
        settled_at = time.monotonic()
        size, linger = self.settings.encode_batch_size, self.settings.encode_batch_seconds
        try:
            self.consumer.subscribe(
                [self.topic], on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_lost
            )
            while not self._stop.is_set():
                # With a micro-batch at the encoder, take only what has arrived: store it at once
                # if nothing has.
                wait = 0.0 if self.stage.pending else IDLE_WAIT_SECONDS
                # Filtered after both of consume_available's calls: a rebalance may run in either.
                records = self._records(consume_available(self.consumer, size, wait, linger))
                if records:
                    self._stored(self.stage.submit(records))
                    settled_at = time.monotonic()
                elif self.stage.pending:
                    self._stored(self.stage.flush())
                elif time.monotonic() - settled_at >= OUTBOX_SETTLE_SECONDS:
                    self.stage.settle()  # between micro-batches their writes do it
                    settled_at = time.monotonic()
            self._stored(self.stage.flush())
            self._commit(self._positions, asynchronous=False)
        finally:
            self._leave()
            self._idle.set()

    def _leave(self) -> None:
        """Leave the group (the revoke callback commits what is stored) and release the client."""
        with self._lock:
            if not self._released:
                self._released = True
                self.consumer.close()

    # --- per micro-batch ---------------------------------------------------------------------------
    def _records(self, messages: list[Message]) -> list[SourceRecord]:
        records = []
        owned = self.owned
        for msg in messages:
            error = msg.error()
            if error is not None:
                self._on_consume_error(error)
                continue
            partition: int = msg.partition()  # type: ignore[assignment]  # set on consumed records
            if partition not in owned:  # fetched just before its partition was given up
                continue
            records.append(
                SourceRecord(
                    partition,
                    msg.offset(),  # type: ignore[arg-type]
                    msg.value(),
                    key=msg.key(),  # type: ignore[arg-type]  # bytes: no deserializer is set
                    closable_at_ms=closable_at_ms(msg.headers()),
                    sent_at_ms=kafka_timestamp_ms(msg),
                )
            )
        return records

    def _stored(self, records: list[SourceRecord]) -> None:
        """The store holds `records` now: move the positions past them, and now and then commit."""
        if not records:
            return
        positions = self._positions
        for record in records:
            if record.offset >= positions.get(record.partition, 0):
                positions[record.partition] = record.offset + 1
        if time.monotonic() - self._committed_at >= self.settings.commit_interval_seconds:
            self._commit(positions, asynchronous=True)

    def _commit(self, positions: dict[int, int], *, asynchronous: bool) -> None:
        self._committed_at = time.monotonic()
        if not positions:
            return
        offsets = [TopicPartition(self.topic, p, offset) for p, offset in positions.items()]
        try:
            if asynchronous:
                self.consumer.commit(offsets=offsets, asynchronous=True)
            else:
                self.consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as exc:  # the store's applied offsets are the truth
            log.warning("closed-segments offset commit failed (the store holds the records): %s", exc)

    def _on_consume_error(self, error: KafkaError) -> None:
        if error.fatal():
            raise RuntimeError(f"Kafka consumer failed: {error.str()}")
        log.warning("Kafka consumer (closed segments): %s", error.str())

    # --- rebalances (inside consume(), on this thread) ----------------------------------------------
    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        started = time.monotonic()
        self._stored(self.stage.flush())  # a catch-up restores after what the store holds
        owned = sorted(tp.partition for tp in partitions)
        self.on_assigned(owned)  # catch up first: the store then knows where each partition starts
        stage = self.stage
        for tp in partitions:
            applied = stage.store.applied_offset(stage.encoder.model_version, self.topic, tp.partition)
            if applied >= 0:  # else the group's committed offset, else the earliest record
                tp.offset = applied + 1
        consumer.assign(partitions)
        self.owned = set(owned)
        # Not "assigned ...": tests and operators read that word as the segmenter's group join.
        log.info(
            "encoder stage owns %s[%s] (caught up in %.1f s)",
            self.topic,
            ",".join(map(str, owned)),
            time.monotonic() - started,
        )

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._stored(self.stage.flush())  # a micro-batch at the encoder is stored before they go
        gone = {tp.partition for tp in partitions}
        self._commit({p: o for p, o in self._positions.items() if p in gone}, asynchronous=True)
        self._forget(gone)
        log.info("encoder stage gives up %s[%s]", self.topic, ",".join(map(str, sorted(gone))))

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._stored(self.stage.flush())  # stored here as it would have been without the pipeline
        gone = {tp.partition for tp in partitions}
        self._forget(gone)  # another member may own them already: commit nothing for them
        log.warning("encoder stage lost %s[%s]", self.topic, ",".join(map(str, sorted(gone))))

    def _forget(self, partitions: set[int]) -> None:
        self.owned = self.owned - partitions
        for p in partitions:
            self._positions.pop(p, None)
