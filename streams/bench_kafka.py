"""Benchmark rows on the broker: the load, the raw read limit, and the segmenter alone.

Rows that run a component of their own (the segmenter, a faust app, the worker) run in a child
process each: its resident memory is then the component's own, faust gets a fresh event loop,
and one row's threads cannot slow the next. The parent only waits while a child measures.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import threading
import time
import traceback
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from streams.collector import tune_collector
from streams.config import MsliSettings
from streams.errors import StreamsError
from streams.producer import EventProducer
from streams.synthetic import SyntheticEvents

__all__ = [
    "BenchError",
    "Child",
    "measure_broker_read",
    "open_load_producer",
    "produce_events",
    "rss_mib",
    "settings_from",
    "shift_event_times",
    "start_child",
]


class BenchError(StreamsError):
    """A benchmark row could not be measured (a child failed or timed out)."""


# --- child processes --------------------------------------------------------------------------------
def settings_from(data: dict[str, Any]) -> MsliSettings:
    """Rebuild settings in a child as the parent had them: no second read of files or environment."""
    return MsliSettings.model_construct(**data)


def _child_main(target: Callable[..., dict[str, Any]], conn: Connection, args: tuple[Any, ...]) -> None:
    try:
        conn.send(("result", target(conn, *args)))
    except BaseException as exc:
        conn.send(("error", f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=6)}"))
    finally:
        conn.close()


class Child:
    """A row's child process and its end of a pipe. Messages are (kind, payload) tuples."""

    def __init__(self, name: str, target: Callable[..., dict[str, Any]], *args: Any) -> None:
        ctx = multiprocessing.get_context("spawn")  # no fork of a process holding librdkafka threads
        # Not a daemon: the worker row's child starts the segmenter process of its own. `stop()`
        # (on every way out) ends it, and its children die with it (streams/segmenter_process.py).
        self.name = name
        self.conn, child_conn = ctx.Pipe()
        self.process = ctx.Process(
            target=_child_main, args=(target, child_conn, args), name=f"msli-bench-{name}"
        )
        self.process.start()
        child_conn.close()

    def receive(self, kind: str, timeout: float) -> Any:
        """Wait for the child's next message, which must be of `kind` (or its result when it failed)."""
        if not self.conn.poll(timeout):
            self.stop()
            raise BenchError(f"{self.name}: no answer within {timeout:.0f} s")
        try:
            got, payload = self.conn.recv()
        except EOFError:
            self.stop()
            raise BenchError(f"{self.name}: the child exited with status {self.process.exitcode}") from None
        if got == "error":
            self.stop()
            raise BenchError(f"{self.name} failed: {payload}")
        if got != kind:
            self.stop()
            raise BenchError(f"{self.name}: expected {kind!r}, got {got!r}")
        return payload

    def send(self, kind: str, payload: Any = None) -> None:
        self.conn.send((kind, payload))

    def result(self, timeout: float) -> dict[str, Any]:
        result: dict[str, Any] = self.receive("result", timeout)
        self.process.join(30)
        return result

    def __enter__(self) -> Child:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()  # on any way out, SIGTERM included: never leave a child (or its faust) running

    def stop(self) -> None:
        if self.process.is_alive():
            self.process.terminate()
            self.process.join(10)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()
        self.conn.close()


def start_child(name: str, target: Callable[..., dict[str, Any]], *args: Any) -> Child:
    return Child(name, target, *args)


def rss_mib(pid: int | str = "self") -> float:
    """Resident memory of a process (this one) now, in MiB (Linux /proc; this one's peak elsewhere)."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    if pid != "self":
        return 0.0
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def children_rss_mib() -> float:
    """Resident memory of this process's child processes (a worker's segmenter and encoder), MiB."""
    return sum(rss_mib(child.pid) for child in multiprocessing.active_children() if child.pid)


# --- load ------------------------------------------------------------------------------------------
def shift_event_times(events: SyntheticEvents, start_ms: int) -> SyntheticEvents:
    """The same stream with its earliest event at `start_ms` (relative times kept)."""
    offset = start_ms - int(events.event_time_ms.min()) if len(events) else 0
    return dataclasses.replace(events, event_time_ms=events.event_time_ms + offset)


def head(events: SyntheticEvents, n: int) -> SyntheticEvents:
    """The first `n` events of the stream, in arrival order."""
    columns = ("user", "item", "action", "event_time_ms", "weight", "session")
    return dataclasses.replace(events, **{name: getattr(events, name)[:n] for name in columns})


def open_load_producer(settings: MsliSettings) -> EventProducer:
    """The benchmark's load producer, connected: one for the whole run, as an application keeps one.

    A new idempotent producer may wait 0.5 s for its producer id before its first records go out
    (librdkafka asks again on a 500 ms timer when no broker was up at its start; measured: half of
    new producers on the local broker). A producer made for the freshness load put that wait into
    the freshness of the segments its first records closed, 4% of a `--quick` run's samples; one
    opened before the other rows has its id long before the freshness load starts.
    """
    producer = EventProducer(settings.kafka_client_config(), topic=settings.events_topic)
    producer.connect()
    return producer


def produce_events(
    producer: EventProducer, events: SyntheticEvents, rate: float | None = None
) -> dict[str, Any]:
    """Produce the stream with a connected producer, as fast as possible or paced at `rate`
    events/s, and flush.

    Paced sends go out in slices every 10 ms, so the offered load is steady at that scale.
    """
    started_wall = time.time()
    started = time.monotonic()
    if rate is None:
        for chunk in events.chunks(20_000):
            producer.send_many(chunk)
    else:
        step = max(1, round(rate / 100))
        for i, start in enumerate(range(0, len(events), step)):
            delay = started + i * step / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            producer.send_many(events.to_dicts(start, start + step))
    producer.flush()
    seconds = time.monotonic() - started
    return {
        "events": len(events),
        "seconds": seconds,
        "events_per_s": len(events) / seconds if seconds else None,
        "started_ms": int(started_wall * 1000),
        "ended_ms": int(time.time() * 1000),
    }


# --- broker read limit -----------------------------------------------------------------------------
def measure_broker_read(settings: MsliSettings, topic: str, n_events: int, timeout: float = 300) -> float:
    """Seconds to consume the first n_events of `topic` with consume(batch), touching nothing else.

    Partitions are assigned, not subscribed: the clock starts at the first fetch, as the
    segmenter row's starts at its assignment, so neither counts a group join.
    """
    consumer = Consumer(
        {
            **settings.kafka_client_config(),
            "group.id": f"{settings.group_id}-broker-read",
            "enable.auto.commit": False,
        }
    )
    try:
        partitions = consumer.list_topics(topic, timeout=30).topics[topic].partitions
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        started = time.monotonic()
        got = 0
        while got < n_events:
            for msg in consumer.consume(settings.consume_batch_size, timeout=1.0):
                if msg.error() is None:
                    got += 1
            if time.monotonic() - started > timeout:
                raise BenchError(f"broker read: {got:,} of {n_events:,} events after {timeout:.0f} s")
        return time.monotonic() - started
    finally:
        consumer.close()


# --- the segmenter alone ---------------------------------------------------------------------------
def segmenter_child(conn: Connection, settings_data: dict[str, Any], n_events: int) -> dict[str, Any]:
    """Run the real Segmenter until every event is read and its closed segments are acknowledged.

    Resident memory is sampled after each quarter of the events: bounded state means the last
    samples stay close to the first even though the history keeps growing.
    """
    from streams.segmenter import Segmenter

    settings = settings_from(settings_data)
    segmenter = Segmenter(settings)
    tune_collector()  # as the worker's segmenter process does
    thread = threading.Thread(target=segmenter.run, name="msli-segmenter", daemon=True)
    thread.start()
    if not segmenter.assigned.wait(120):
        raise BenchError("segmenter: no partitions assigned within 120 s")
    started = time.monotonic()
    stats = segmenter.stats
    marks = [n_events * q // 4 for q in (1, 2, 3, 4)]
    memory: list[dict[str, Any]] = []
    read_at = None
    while thread.is_alive():
        read = stats.records_read
        while marks and read >= marks[0]:
            open_windows = sum(c.open_windows for c in list(segmenter.closers.values()))
            memory.append({"events": marks.pop(0), "rss_mib": rss_mib(), "open_windows": open_windows})
        if read >= n_events:
            read_at = read_at or time.monotonic()
            sent = sum(stats.closed.values()) + stats.dead_letters
            if segmenter.publisher.delivered >= sent:
                break
        time.sleep(0.01)
    finished = time.monotonic()
    segmenter.stop()
    thread.join(60)
    if read_at is None:
        raise BenchError(f"segmenter stopped after {stats.events:,} of {n_events:,} events")
    return {
        "events": stats.events,
        "dead_letters": stats.dead_letters,
        "seconds": finished - started,
        "read_seconds": read_at - started,
        "segments": sum(stats.closed.values()),
        "closed": dict(stats.closed),
        "memory": memory,
    }
