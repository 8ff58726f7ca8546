"""The encoder stage's consumer on a real broker and a real store: micro-batches bounded by the
batch size, assignment handled before any record, commits never ahead of the store, an idle outbox
settled, a restart positioned by the store, and a group that splits its partitions between members."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, TopicPartition
from msli_processes import wait_for

from encoders import SegmentBatchEncoder
from schemas import AvroCodec
from store import RocksDBVectorStore
from streams.config import MsliSettings
from streams.encoder_stage import EncoderStage, SourceRecord, StageConfig
from streams.log_end import log_end_offsets
from streams.publisher import KafkaPublisher, producer_config
from streams.segment_consumer import SegmentConsumer
from streams.synthetic import generate
from streams.topics import CLOSABLE_AT_HEADER
from streams.windowing import SegmentationConfig, SegmentCloser

PARTITIONS = 4
BATCH = 40


class Member:
    """One SegmentConsumer over a store of its own, run in a thread; records what it saw, in order."""

    def __init__(self, settings: MsliSettings, reps_topic: str, state_dir: Path) -> None:
        self.settings = settings
        self.store = RocksDBVectorStore(state_dir / "store")
        self.publisher = KafkaPublisher(producer_config(settings.kafka_client_config()))
        self.stage = EncoderStage(
            self.store,
            SegmentBatchEncoder.untrained(seed=0, device="cpu"),
            self.publisher,
            StageConfig(settings.segments_topic, reps_topic, top_k=4, half_life_ms=3.6e6, max_events=4),
        )
        self.seen: list[tuple[str, Any]] = []  # ("assigned", partitions) and ("batch", records)
        self.stage.on_applied = lambda records: self.seen.append(("batch", list(records)))
        self.consumer = SegmentConsumer(
            settings, self.stage, lambda owned: self.seen.append(("assigned", owned))
        )
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.consumer.run()
        except BaseException as exc:  # the test asserts there was none
            self.error = exc

    def applied(self) -> dict[int, int]:
        version, topic = self.stage.encoder.model_version, self.settings.segments_topic
        return {p: self.store.applied_offset(version, topic, p) for p in range(PARTITIONS)}

    def batches(self) -> list[list[SourceRecord]]:
        return [records for kind, records in self.seen if kind == "batch"]

    def close(self) -> None:
        self.consumer.close()  # stops the run and waits for it
        self.thread.join(30)
        self.publisher.close()
        self.store.close()
        assert self.error is None, repr(self.error)


def produce_segments(bootstrap: str, topic: str, seed: int, n_events: int) -> int:
    """Closed segments cut by the real closing rules, keyed by user, each with a closable-at header."""
    closer = SegmentCloser(SegmentationConfig(max_events=4), partition=0)
    for offset, e in enumerate(generate(n_users=40, n_events=n_events, seed=seed).to_dicts()):
        closer.add(
            offset, e["user_id"], e["item_id"], e["action"], e["event_time_ms"], e["weight"], e["event_id"]
        )
    closer.advance_watermark(2**62)
    records = [r for r in closer.closed if r["close_reason"] != "late"]
    codec = AvroCodec("ClosedSegment")
    publisher = KafkaPublisher(producer_config({"bootstrap.servers": bootstrap}))
    for k, record in enumerate(records):
        stamp = str(1_700_000_000_000 + k).encode()
        publisher.send(topic, record["user_id"].encode(), codec.encode(record), [(CLOSABLE_AT_HEADER, stamp)])
    publisher.close()
    return len(records)


def committed(settings: MsliSettings) -> dict[int, int]:
    consumer = Consumer(settings.kafka_client_config(**{"group.id": f"{settings.group_id}-encoder"}))
    try:
        found = consumer.committed(
            [TopicPartition(settings.segments_topic, p) for p in range(PARTITIONS)], timeout=30
        )
        return {tp.partition: tp.offset for tp in found}
    finally:
        consumer.close()


def log_ends(settings: MsliSettings) -> dict[int, int]:
    consumer = Consumer(settings.kafka_client_config(**{"group.id": "ends", "enable.partition.eof": True}))
    try:
        return log_end_offsets(consumer, settings.segments_topic)
    finally:
        consumer.close()


def all_applied(member: Member, ends: dict[int, int], partitions: Sequence[int] = range(PARTITIONS)) -> bool:
    applied = member.applied()
    return all(applied[p] >= ends[p] - 1 for p in partitions)


@pytest.fixture
def settings(
    kafka_bootstrap: str, create_topic, unique_name: Callable[[str], str], tmp_path: Path
) -> MsliSettings:
    return MsliSettings(
        bootstrap_servers=kafka_bootstrap,
        segments_topic=create_topic("segments", partitions=PARTITIONS),
        group_id=unique_name("group"),
        encode_batch_size=BATCH,
        encode_batch_seconds=0.1,
        session_timeout_seconds=6,
        state_dir=tmp_path,
    )


@pytest.fixture
def members(create_topic, tmp_path: Path) -> Iterator[Callable[[MsliSettings, str], Member]]:
    started: list[Member] = []
    reps_topic = create_topic("representations", partitions=PARTITIONS)

    def start(settings: MsliSettings, name: str) -> Member:
        started.append(Member(settings, reps_topic, tmp_path / name))
        return started[-1]

    yield start
    for member in started:
        if member.thread.is_alive():
            member.close()


def test_micro_batches_commits_and_a_restart_positioned_by_the_store(
    settings, members, kafka_bootstrap
) -> None:
    n = produce_segments(kafka_bootstrap, settings.segments_topic, seed=1, n_events=1_500)
    ends = log_ends(settings)
    assert sum(ends.values()) == n
    member = members(settings, "a")
    wait_for(lambda: all_applied(member, ends), 120, "every closed segment in the store")

    # The assignment (the catch-up and routes) came before any record; no batch above the size.
    assert member.seen[0] == ("assigned", list(range(PARTITIONS)))
    batches = member.batches()
    assert batches and max(len(b) for b in batches) <= BATCH
    applied = [(r.partition, r.offset) for b in batches for r in b]
    assert sorted(applied) == sorted((p, o) for p in ends for o in range(ends[p]))  # each once
    first = batches[0][0]
    assert (
        first.key is not None
        and first.closable_at_ms is not None
        and first.closable_at_ms >= 1_700_000_000_000
    )
    # Idle: the outbox empties without another micro-batch (the consumer settles it).
    wait_for(lambda: member.store.pending_outbox() == [], 30, "the idle outbox to be settled")
    member.close()
    assert committed(settings) == ends  # committed after the store write, and all of it

    # A restart reads from the store's applied offsets, not from the group's commits: rewound
    # commits would otherwise redeliver everything (harmless, skipped, but read again).
    rewind = Consumer(settings.kafka_client_config(**{"group.id": f"{settings.group_id}-encoder"}))
    rewind.commit(offsets=[TopicPartition(settings.segments_topic, p, 0) for p in ends], asynchronous=False)
    rewind.close()
    more = produce_segments(kafka_bootstrap, settings.segments_topic, seed=2, n_events=300)
    ends = log_ends(settings)
    member = members(settings, "a")
    wait_for(lambda: all_applied(member, ends), 120, "the new closed segments in the store")
    assert member.stage.totals.skipped == 0 and member.stage.totals.records == more
    member.close()


def test_a_second_member_takes_partitions_and_their_new_records(settings, members, kafka_bootstrap) -> None:
    produce_segments(kafka_bootstrap, settings.segments_topic, seed=3, n_events=600)
    ends = log_ends(settings)
    first = members(settings, "first")
    wait_for(lambda: all_applied(first, ends), 120, "the first member to apply everything")
    second = members(settings, "second")

    def split() -> bool:
        a, b = first.consumer.owned, second.consumer.owned
        return bool(a) and bool(b) and not a & b and a | b == set(range(PARTITIONS))

    wait_for(split, 120, "the group to split the partitions between the two members")
    mine, theirs = sorted(first.consumer.owned), sorted(second.consumer.owned)
    assert first.seen[0] == ("assigned", list(range(PARTITIONS)))
    assert ("assigned", mine) in first.seen
    assert second.seen[0] == ("assigned", theirs)  # before any record of its partitions
    before = log_ends(settings)
    produce_segments(kafka_bootstrap, settings.segments_topic, seed=4, n_events=600)
    ends = log_ends(settings)
    wait_for(lambda: all_applied(first, ends, mine), 120, "the first member's partitions applied")
    wait_for(lambda: all_applied(second, ends, theirs), 120, "the second member's partitions applied")
    # Each new record was processed by its partition's owner only.
    late = {(r.partition, r.offset) for b in second.batches() for r in b if r.offset >= before[r.partition]}
    assert {p for p, _ in late} <= set(theirs)
    assert not [
        r for b in first.batches() for r in b if r.offset >= before[r.partition] and r.partition in theirs
    ]
    second.close()
    first.close()
    assert committed(settings) == ends
