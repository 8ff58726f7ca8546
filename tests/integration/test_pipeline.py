"""The whole path on a real broker: events in, segments closed on event time, vectors in RocksDB,
representations on the output topic, and the same answer from `msli query`."""

from __future__ import annotations

import json
import signal
import subprocess
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from confluent_kafka import Consumer, Producer
from msli_processes import MSLI, Processes, quick_worker_env, wait_for

from encoders import SegmentBatchEncoder, SegmentInput
from schemas import AvroCodec
from store import quantize
from streams.producer import EventProducer

MIN = 60_000
WINDOW = 10 * MIN
T0 = 1_700_000_000_000 - 1_700_000_000_000 % WINDOW  # a window boundary
MAX_EVENTS = 5


def make_events() -> list[dict[str, Any]]:
    """Six users, each with a burst in one or two windows, each burst shorter than the idle timeout,
    so the segments are each (staggered) window's events in chunks of MAX_EVENTS."""
    events = []
    for u in range(6):
        for window in range(1 + u % 2):
            start = T0 + (u + 3 * window) * WINDOW + MIN
            for k in range(3 + 2 * u):
                events.append(
                    {
                        "user_id": f"user-{u}",
                        "item_id": f"item-{(u * 7 + k) % 23}",
                        "action": "click",
                        "event_time_ms": start + k * 20_000,
                        "weight": None,
                        "event_id": f"e-{u}-{window}-{k}",
                        "context": {},
                    }
                )
    return sorted(events, key=lambda e: e["event_time_ms"])


def expected_segments(events: list[dict[str, Any]]) -> dict[str, list[list[str]]]:
    """user -> item ids of each segment, oldest first."""
    by_window: dict[tuple[str, int], list[str]] = {}
    for e in events:
        # The worker's default staggered windows: each user's shifted by crc32(user id) mod WINDOW.
        phase = zlib.crc32(e["user_id"].encode()) % WINDOW
        window = (e["event_time_ms"] - phase) // WINDOW * WINDOW + phase
        by_window.setdefault((e["user_id"], window), []).append(e["item_id"])
    out: dict[str, list[list[str]]] = {}
    for (user, _), items in sorted(by_window.items(), key=lambda kv: kv[0][1]):
        out.setdefault(user, []).extend(items[i : i + MAX_EVENTS] for i in range(0, len(items), MAX_EVENTS))
    return out


@pytest.fixture
def worker_env(kafka_bootstrap: str, unique_name: Callable[[str], str], tmp_path: Path) -> dict[str, str]:
    return quick_worker_env(
        kafka_bootstrap,
        unique_name,
        tmp_path / "state",
        partitions=3,
        window_seconds=WINDOW // 1000,
        max_events=MAX_EVENTS,
    )


@pytest.fixture
def start_worker(worker_env: dict[str, str], msli_processes: Processes) -> Callable[[], subprocess.Popen]:
    return lambda: msli_processes.start(["worker"], worker_env)


def query(env: dict[str, str], user: str) -> dict[str, Any] | None:
    out = subprocess.run([MSLI, "query", user, "--json"], env=env, capture_output=True, text=True, timeout=60)
    return json.loads(out.stdout) if out.returncode == 0 else None


def read_topic(bootstrap: str, topic: str, expect: int, timeout: float = 30.0) -> list[Any]:
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"reader-{time.time_ns()}",
            "auto.offset.reset": "earliest",
            "session.timeout.ms": 6000,
        }
    )
    consumer.subscribe([topic])
    records: list[Any] = []
    deadline = time.monotonic() + timeout
    while len(records) < expect and time.monotonic() < deadline:
        records += [m for m in consumer.consume(1000, timeout=1.0) if m.error() is None]
    consumer.close()
    return records


# Without an encoder process, the encoder runs on the stage's thread (MSLI_ENCODER_PROCESS=false).
@pytest.mark.parametrize("encoder_process", ["true", "false"], ids=["encoder-process", "in-process"])
def test_events_in_representations_out(
    worker_env: dict[str, str], start_worker, kafka_bootstrap: str, encoder_process: str
) -> None:
    env = worker_env
    env["MSLI_ENCODER_PROCESS"] = encoder_process  # the dict start_worker starts the worker with
    events = make_events()
    expected = expected_segments(events)
    worker = start_worker()

    with EventProducer({"bootstrap.servers": kafka_bootstrap}, topic=env["MSLI_EVENTS_TOPIC"]) as producer:
        producer.send_many(events)
    poison = Producer({"bootstrap.servers": kafka_bootstrap})
    codec = AvroCodec("BehaviourEvent")
    bad = [
        b"\xde\xad\xbe\xef not avro",
        codec.encode({**events[0], "user_id": ""}),
        codec.encode({**events[0], "event_time_ms": int(time.time() * 1000) + 30 * 86_400_000}),
    ]
    for value in bad:
        poison.produce(env["MSLI_EVENTS_TOPIC"], key=b"poison", value=value)
    poison.flush(10)
    poison.close()

    def all_users_complete() -> dict[str, dict[str, Any]] | None:
        reps = {u: query(env, u) for u in expected}
        if all(r is not None and len(r["segments"]) == len(expected[u]) for u, r in reps.items()):
            return reps  # type: ignore[return-value]
        return None

    reps = wait_for(all_users_complete, timeout=120, what="every user's representation")
    assert worker.poll() is None, "the worker exited"

    encoder = SegmentBatchEncoder.untrained(seed=0, device="cpu")
    for user, rep in reps.items():
        segments = rep["segments"]  # newest first
        assert [s["event_count"] for s in reversed(segments)] == [len(items) for items in expected[user]]
        weights = np.array([s["weight"] for s in segments], dtype=np.float32)
        vectors = np.array([s["vector"] for s in segments], dtype=np.float32)
        assert abs(float(weights.sum()) - 1.0) < 1e-5
        assert np.allclose(np.array(rep["fused"]), (weights[:, None] * vectors).sum(0), atol=1e-6)
        # Each segment was encoded once, by the same model a ranker would load: same bits here.
        user_events = [e for e in events if e["user_id"] == user]
        for s, items in zip(reversed(segments), expected[user], strict=True):
            mine = [
                e
                for e in user_events
                if e["item_id"] in items and s["window_start_ms"] <= e["event_time_ms"] < s["window_end_ms"]
            ][: len(items)]
            local = quantize(encoder.encode([SegmentInput.from_events(mine)]), "float16")[0]
            assert np.array_equal(local, np.array(s["vector"], dtype=np.float32)), s["segment_id"]

    # The output topic carries the same representation as the store, byte for byte.
    rep_codec = AvroCodec("UserRepresentation")
    published = read_topic(kafka_bootstrap, env["MSLI_REPRESENTATIONS_TOPIC"], expect=len(expected))
    latest = {m.key().decode(): rep_codec.decode(m.value()) for m in published}
    assert set(latest) == set(expected)
    for user, record in latest.items():
        assert [s["segment_id"] for s in record["segments"]] == [
            s["segment_id"] for s in reps[user]["segments"]
        ]
        assert record["model_version"] == encoder.model_version

    # Bad input went to the dead-letter topic with its bytes and where it came from.
    dead = read_topic(kafka_bootstrap, env["MSLI_DEAD_LETTER_TOPIC"], expect=3)
    assert sorted(m.value() for m in dead) == sorted(bad)
    reasons = sorted(dict(m.headers())["msli.reason"].decode() for m in dead)
    assert reasons == ["future-timestamp", "missing-user", "undecodable"]
    for m in dead:
        headers = dict(m.headers())
        assert headers["msli.source.topic"].decode() == env["MSLI_EVENTS_TOPIC"]
        assert int(headers["msli.source.offset"]) >= 0

    # A clean stop, then a restart: new events add segments, nothing closed before is lost.
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=60) == 0
    start_worker()
    later = [
        {
            **events[0],
            "event_time_ms": T0 + 20 * WINDOW + k * 1000,
            "event_id": f"later-{k}",
            "item_id": f"item-{k}",
        }
        for k in range(2)
    ]
    with EventProducer({"bootstrap.servers": kafka_bootstrap}, topic=env["MSLI_EVENTS_TOPIC"]) as producer:
        producer.send_many(later)
    user = events[0]["user_id"]
    rep = wait_for(
        lambda: (r := query(env, user)) and len(r["segments"]) == len(expected[user]) + 1 and r,
        timeout=120,
        what="the restarted worker's new segment",
    )
    assert rep["segments"][0]["event_count"] == 2
    assert [s["segment_id"] for s in rep["segments"][1:]] == [s["segment_id"] for s in reps[user]["segments"]]


def test_configuration_errors_are_one_line(worker_env: dict[str, str]) -> None:
    env = {**worker_env, "MSLI_WINDOW_SECONDS": "-5"}
    out = subprocess.run([MSLI, "worker"], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert out.stderr.strip().count("\n") == 0 and "window_seconds" in out.stderr
    env = {**worker_env, "MSLI_BOOTSTRAP_SERVERS": "127.0.0.1:1"}
    out = subprocess.run([MSLI, "worker"], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode != 0
    assert "cannot reach Kafka" in out.stderr.strip().splitlines()[-1]
