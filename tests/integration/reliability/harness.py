"""Run real `msli worker` processes against a real broker and compare what they end with to the oracle.

A `Pipeline` owns one test's topics, consumer groups and rules. It starts workers as subprocesses
(each with its own RocksDB), produces events, reads topics back, waits until the workers have
reflected everything, and checks their stores and the output topic against the oracle computed
from the events topic as Kafka holds it (the partition order every worker saw).

Draining without the wall clock: `add_drain_events()` puts one event per partition far ahead in
event time, so every window closes on event time alone, as the oracle models it. Workers run with
MSLI_PARTITION_IDLE_SECONDS far above any pause of a test, so no window closes on the clock.
"""

from __future__ import annotations

import re
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Producer, TopicPartition
from msli_processes import MSLI, msli_env, wait_for
from oracle import Expected, Rules, expect, store_differences, topic_differences

from encoders import SegmentBatchEncoder
from schemas import AvroCodec
from store import RocksDBVectorStore, StoreError
from streams.checkpoints import CheckpointLog
from streams.config import MsliSettings
from streams.producer import EventProducer
from streams.topics import ensure_topics

MIN = 60_000
HOUR = 60 * MIN
T0 = 1_700_000_000_000 - 1_700_000_000_000 % HOUR  # event times start on an hour boundary (Nov 2023)
DRAIN_USER = "~drain"
_LOG_TIME = re.compile(r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) ")

Record = tuple[int, bytes | None, bytes | None, list[tuple[str, bytes]]]  # offset, key, value, headers


@dataclass
class Worker:
    name: str
    proc: subprocess.Popen[bytes]
    state_dir: Path
    log_path: Path
    started: float = field(default_factory=time.time)  # wall clock, comparable with log lines

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def signal(self, sig: signal.Signals) -> None:
        if self.alive:
            self.proc.send_signal(sig)

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs, as in a crash or an OOM kill."""
        self.signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def wait_exit(self, timeout: float) -> int:
        """The exit status; an assertion with the log's tail if it still runs after `timeout`."""
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"{self.name} still runs after {timeout:.0f}s; log:\n{self.log()[-4000:]}"
            ) from None

    def stop(self, timeout: float = 90.0) -> int:
        """SIGTERM and wait for the clean shutdown; returns the exit status."""
        self.signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout)

    def logged_at(self, pattern: str) -> list[float]:
        """Wall-clock times (epoch seconds) of log lines matching `pattern`."""
        times = []
        for line in self.log().splitlines():
            stamp = _LOG_TIME.search(line)  # faust may put a terminal escape before it
            if stamp and re.search(pattern, line):
                times.append(datetime.strptime(stamp.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp())
        return times


class Pipeline:
    """One test's topics, groups, rules and workers on the shared broker."""

    def __init__(
        self, bootstrap: str, names: Callable[[str], str], tmp: Path, rules: Rules, partitions: int = 4
    ) -> None:
        self.bootstrap = bootstrap
        self.rules = rules
        self.tmp = tmp
        self.partitions = partitions
        self.topics = {
            role: names(role)
            for role in ("events", "segments", "representations", "dead-letters", "checkpoints")
        }
        self.group = names("group")
        self.env = msli_env(
            **{
                "MSLI_BOOTSTRAP_SERVERS": bootstrap,
                "MSLI_EVENTS_TOPIC": self.topics["events"],
                "MSLI_SEGMENTS_TOPIC": self.topics["segments"],
                "MSLI_REPRESENTATIONS_TOPIC": self.topics["representations"],
                "MSLI_DEAD_LETTER_TOPIC": self.topics["dead-letters"],
                "MSLI_CHECKPOINTS_TOPIC": self.topics["checkpoints"],
                "MSLI_GROUP_ID": self.group,
                "MSLI_TOPIC_PARTITIONS": str(partitions),
                "MSLI_PARTITION_IDLE_SECONDS": "3600",  # never during a test: the oracle has no clock
                "MSLI_COMMIT_INTERVAL_SECONDS": "1",
                "MSLI_STATUS_INTERVAL_SECONDS": "2",
                "MSLI_DEVICE": "cpu",
                **rules.env(),
            }
        )
        ensure_topics(  # before anything is produced: a produce would auto-create with other counts
            MsliSettings(
                bootstrap_servers=bootstrap,
                events_topic=self.topics["events"],
                segments_topic=self.topics["segments"],
                representations_topic=self.topics["representations"],
                dead_letter_topic=self.topics["dead-letters"],
                checkpoints_topic=self.topics["checkpoints"],
                topic_partitions=partitions,
            )
        )
        self.workers: list[Worker] = []
        self.model_version = SegmentBatchEncoder.untrained(seed=0, device="cpu").model_version
        self._codec = AvroCodec("BehaviourEvent")
        self.last_event_ms = T0

    # --- workers -----------------------------------------------------------------------------------
    def start_worker(
        self,
        name: str = "w0",
        state_dir: Path | None = None,
        preexec_fn: Callable[[], None] | None = None,
        **env: str,
    ) -> Worker:
        """Start `msli worker`; its log (stdout and stderr) goes to a file named after it."""
        state_dir = state_dir or self.tmp / f"state-{name}"
        log_path = self.tmp / f"{name}-{sum(w.name == name for w in self.workers)}.log"
        with log_path.open("wb") as log:
            proc = subprocess.Popen(
                [MSLI, "worker"],
                env={**self.env, "MSLI_STATE_DIR": str(state_dir), **env},
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=preexec_fn,
            )
        worker = Worker(name, proc, state_dir, log_path)
        self.workers.append(worker)
        return worker

    def wait_assigned(self, worker: Worker, timeout: float = 120.0) -> float:
        """Seconds from the worker's start until its segmenter got partitions."""
        wait_for(lambda: worker.logged_at(r"assigned "), timeout, f"{worker.name} to join the group")
        return worker.logged_at(r"assigned ")[0] - worker.started

    def kill_all(self) -> None:
        for worker in self.workers:
            if worker.alive:
                worker.kill()

    def use_new_topic(self, role: str, names: Callable[[str], str]) -> str:
        """Point this pipeline (and workers started from now on) at a fresh topic for `role`."""
        self.topics[role] = names(role)
        self.env[f"MSLI_{role.upper().replace('-', '_')}_TOPIC"] = self.topics[role]
        return self.topics[role]

    # --- input -------------------------------------------------------------------------------------
    def produce(self, events: Iterable[Mapping[str, Any]]) -> int:
        with EventProducer({"bootstrap.servers": self.bootstrap}, topic=self.topics["events"]) as producer:
            for event in events:
                producer.send(event)
                self.last_event_ms = max(self.last_event_ms, int(event["event_time_ms"]))
            return producer.sent

    def produce_raw(
        self, records: Iterable[tuple[bytes | None, bytes | None, int | None]], role: str = "events"
    ) -> None:
        """Send (key, value, partition) as they are; partition None means by key (murmur2)."""
        producer = Producer(
            {
                "bootstrap.servers": self.bootstrap,
                "message.max.bytes": 10_000_000,
                "partitioner": "murmur2_random",
            }
        )
        for key, value, partition in records:
            extra = {} if partition is None else {"partition": partition}
            while True:
                try:
                    producer.produce(self.topics[role], key=key, value=value, **extra)
                    break
                except BufferError:
                    producer.poll(0.1)
            producer.poll(0)
        assert producer.flush(60) == 0

    def add_drain_events(self) -> None:
        """One event per partition, far enough ahead in event time to close every window."""
        rules = self.rules
        ahead = self.last_event_ms + 2 * rules.window_ms + rules.lateness_ms + rules.idle_ms
        self.produce_raw(
            (f"{DRAIN_USER}-{p}".encode(), self._codec.encode(drain_event(p, ahead)), p)
            for p in range(self.partitions)
        )

    # --- output ------------------------------------------------------------------------------------
    def read(self, role: str) -> dict[int, list[Record]]:
        """Every record of one of this test's topics, per partition, in offset order."""
        return read_topic(self.bootstrap, self.topics[role])

    def log_ends(self, role: str) -> dict[int, int]:
        return log_ends(self.bootstrap, self.topics[role])

    def segmenter_done(self) -> bool:
        """Every partition's checkpoint is at its drain event (the last record): all else closed."""
        saved = CheckpointLog(
            {"bootstrap.servers": self.bootstrap}, self.topics["checkpoints"], self.group
        ).load(self.topics["events"])
        highs = self.log_ends("events")
        return all(saved.get(p, (-1, 0))[0] >= high - 1 for p, high in highs.items())

    def applied(self, state_dir: Path) -> dict[int, int]:
        """The store's applied closed-segments offset per partition (-1: none), read while it runs."""
        try:
            with RocksDBVectorStore(state_dir / "store", read_only=True) as store:
                topic = self.topics["segments"]
                return {p: store.applied_offset(self.model_version, topic, p) for p in range(self.partitions)}
        except StoreError:
            return {p: -1 for p in range(self.partitions)}

    def wait_drained(self, workers: list[Worker], timeout: float = 300.0) -> None:
        """Wait until the segmenter closed everything and, per closed-segments partition, one of
        the workers' stores has applied it to the end. Fails at once if one of them exits."""

        def alive() -> None:
            for w in workers:
                assert w.alive, f"{w.name} exited with {w.proc.returncode}:\n{w.log()[-3000:]}"

        def segmenter_done() -> bool:
            alive()
            return self.segmenter_done()

        wait_for(segmenter_done, timeout, "the segmenter to close every window", every=2.0)
        highs = self.log_ends("segments")

        def applied_everywhere() -> bool:
            alive()
            best = {p: max(self.applied(w.state_dir)[p] for w in workers) for p in highs}
            return all(best[p] >= high - 1 for p, high in highs.items())

        wait_for(applied_everywhere, timeout, "the stores to apply every closed segment", every=2.0)

    # --- the oracle --------------------------------------------------------------------------------
    def expected(self) -> Expected:
        log = {p: [(r[0], r[2]) for r in records] for p, records in self.read("events").items()}
        expected = expect(
            log,
            self.rules,
            SegmentBatchEncoder.untrained(seed=0, device="cpu"),
            now_ms=int(time.time() * 1000),
        )
        for user in [u for u in expected.segments if u.startswith(DRAIN_USER)]:
            del expected.segments[user]  # never closes: nothing after it in event time
        return expected

    def store_problems(self, expected: Expected, state_dir: Path, users: set[str] | None = None) -> list[str]:
        with RocksDBVectorStore(state_dir / "store", read_only=True) as store:
            return store_differences(expected, store, self.model_version, self.rules, users)

    def assert_equal_to_oracle(self, state_dir: Path) -> Expected:
        """Compare one store and the output topic with the oracle; return the oracle's expectation."""
        expected = self.expected()
        problems = self.store_problems(expected, state_dir) + self.topic_problems(expected)
        assert problems == [], f"{len(problems)} differences from the oracle, first: {problems[:10]}"
        return expected

    def latest_representations(self) -> dict[str, bytes]:
        """The output topic's last record per user (what compaction keeps)."""
        latest: dict[str, bytes] = {}
        for records in self.read("representations").values():
            for _, key, value, _ in records:
                assert key is not None and value is not None
                latest[key.decode()] = value
        return latest

    def topic_problems(self, expected: Expected) -> list[str]:
        return topic_differences(expected, self.latest_representations(), self.rules)

    def users_by_segments_partition(self) -> dict[int, set[str]]:
        """Which closed-segments partition each user's segments live on (as Kafka placed them)."""
        return {
            p: {key.decode() for _, key, _, _ in records if key is not None}
            for p, records in self.read("segments").items()
        }


def produce_steadily(pipeline: Pipeline, events: list[dict[str, Any]], seconds: float) -> threading.Thread:
    """Send events in small chunks spread over `seconds`, in a thread: faults land mid-stream."""

    def run() -> None:
        chunks = max(1, int(seconds * 2))
        size = len(events) // chunks + 1
        for k in range(chunks):
            pipeline.produce(events[k * size : (k + 1) * size])
            time.sleep(seconds / chunks)

    thread = threading.Thread(target=run, name="steady-producer", daemon=True)
    thread.start()
    return thread


def total_applied(pipeline: Pipeline, state_dir: Path) -> int:
    """Closed-segment records the store at `state_dir` reflects, all partitions together."""
    return sum(max(0, o + 1) for o in pipeline.applied(state_dir).values())


def drain_event(partition: int, event_time_ms: int) -> dict[str, Any]:
    return {
        "user_id": f"{DRAIN_USER}-{partition}",
        "item_id": "drain",
        "action": "view",
        "event_time_ms": event_time_ms,
        "weight": None,
        "event_id": f"drain-{partition}",
        "context": {},
    }


def read_topic(bootstrap: str, topic: str, timeout: float = 60.0) -> dict[int, list[Record]]:
    """Every record of `topic` up to its current end, per partition, in offset order.

    The end is where the consumer reports partition EOF: the local broker's ListOffsets answer
    (the high watermark) is the last batch's first offset + 1, short of the real end.
    """
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "msli-test-reader",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
        }
    )
    try:
        partitions = consumer.list_topics(topic, timeout=30).topics[topic].partitions
        out: dict[int, list[Record]] = {p: [] for p in partitions}
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        todo, deadline = set(partitions), time.monotonic() + timeout
        while todo and time.monotonic() < deadline:
            for msg in consumer.consume(10_000, timeout=1.0):
                error, p = msg.error(), msg.partition()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        todo.discard(p)
                    continue
                out[p].append((msg.offset(), msg.key(), msg.value(), list(msg.headers() or [])))
        assert not todo, f"could not read {topic} to its end in {timeout:.0f}s: partitions {todo}"
        return out
    finally:
        consumer.close()


def log_ends(bootstrap: str, topic: str, timeout: float = 60.0) -> dict[int, int]:
    """The offset after the last record of each partition (see read_topic on why not ListOffsets)."""
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": "msli-test-ends", "enable.partition.eof": True}
    )
    try:
        partitions = consumer.list_topics(topic, timeout=30).topics[topic].partitions
        ends: dict[int, int] = {}
        starts = []
        for p in partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=30)
            if high <= low:
                ends[p] = high
            else:  # from the last batch's first record, whichever way the broker counts
                starts.append(TopicPartition(topic, p, high - 1))
        consumer.assign(starts)
        deadline = time.monotonic() + timeout
        while len(ends) < len(partitions) and time.monotonic() < deadline:
            for msg in consumer.consume(10_000, timeout=1.0):
                error = msg.error()
                if error is not None and error.code() == KafkaError._PARTITION_EOF:
                    ends[msg.partition()] = msg.offset()
        assert len(ends) == len(partitions), f"no end found for {topic} in {timeout:.0f}s"
        return ends
    finally:
        consumer.close()
