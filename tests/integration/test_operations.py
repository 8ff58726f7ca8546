"""Operating the worker on a real broker: metrics that move, a replay that equals the live run
(byte for byte, twice), a model upgrade that readers never notice until it is promoted, and two
workers whose APIs answer every user from the owner of the user's partition."""

from __future__ import annotations

import http.client
import json
import re
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition
from msli_processes import MSLI, Processes, quick_worker_env, wait_for

from encoders import SegmentBatchEncoder
from store import open_replica
from streams.producer import EventProducer
from streams.routing import partition_for

MIN = 60_000
WINDOW = 10 * MIN
T0 = 1_700_000_000_000 - 1_700_000_000_000 % WINDOW
USERS = [f"user-{u}" for u in range(12)]


def make_events() -> list[dict[str, Any]]:
    events = []
    for u, user in enumerate(USERS):
        for window in range(1 + u % 3):
            start = T0 + (u % 4 + 2 * window) * WINDOW + MIN
            for k in range(2 + u % 7):
                events.append(
                    {
                        "user_id": user,
                        "item_id": f"item-{(u * 5 + k) % 17}",
                        "action": "click",
                        "event_time_ms": start + k * 10_000,
                        "event_id": f"e-{u}-{window}-{k}",
                    }
                )
    return sorted(events, key=lambda e: e["event_time_ms"])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def env(kafka_bootstrap: str, unique_name: Callable[[str], str], tmp_path: Path) -> dict[str, str]:
    return quick_worker_env(
        kafka_bootstrap,
        unique_name,
        tmp_path / "live",
        partitions=3,
        window_seconds=WINDOW // 1000,
        max_events=3,
    )


@pytest.fixture
def start(msli_processes: Processes) -> Callable[[list[str], dict[str, str]], subprocess.Popen]:
    return msli_processes.start


def metrics(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    return {m[0]: float(m[1]) for m in re.findall(r"^(msli_\S+) (\S+)$", text, re.MULTILINE)}


def store_families(path: Path) -> dict[bytes, bytes]:
    """Segments, vectors and representations of a store (not offsets or meta), read while it runs."""
    with open_replica(path) as reader:
        return {bytes(k): bytes(v) for k, v in reader.store._db.items() if bytes(k)[:1] in (b"E", b"V", b"R")}


def read_all(bootstrap: str, topic: str) -> dict[int, list[tuple[bytes, bytes]]]:
    """(key, value) per partition, to the end of each (found by EOF: the local broker's high
    watermark counts record batches, not records)."""
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": f"read-{time.time_ns()}", "enable.partition.eof": True}
    )
    partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
    out: dict[int, list[tuple[bytes, bytes]]] = {p: [] for p in partitions}
    at_end: set[int] = set()
    deadline = time.monotonic() + 60
    while at_end != set(partitions) and time.monotonic() < deadline:
        for msg in consumer.consume(1000, timeout=1.0):
            if msg.error() is None:
                out[msg.partition()].append((msg.key(), msg.value()))
            elif msg.error().code() == KafkaError._PARTITION_EOF:
                at_end.add(msg.partition())
    consumer.close()
    assert at_end == set(partitions), f"could not read {topic} to its end"
    return out


def run_msli(args: list[str], env: dict[str, str], timeout: float = 120) -> str:
    out = subprocess.run([MSLI, *args], env=env, capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_metrics_replay_and_model_upgrade(
    env: dict[str, str], start, kafka_bootstrap: str, tmp_path: Path, unique_name: Callable[[str], str]
) -> None:
    events = make_events()
    reps_topic = env["MSLI_REPRESENTATIONS_TOPIC"]
    port = free_port()
    worker = start(["worker"], {**env, "MSLI_METRICS_PORT": str(port)})
    wait_for(
        lambda: worker.poll() is not None or metrics(port) if _port_open(port) else False, 60, "/metrics"
    )
    before = metrics(port)
    assert before["msli_events_total"] == 0

    with EventProducer({"bootstrap.servers": kafka_bootstrap}, topic=env["MSLI_EVENTS_TOPIC"]) as producer:
        producer.send_many(events)
    live_store = tmp_path / "live" / "store"

    def everyone_stored() -> bool:
        with open_replica(live_store) as reader:
            return all(reader.get(u) is not None for u in USERS)

    wait_for(everyone_stored, 120, "every user's representation")

    # --- metrics moved with the events --------------------------------------------------------------
    def settled() -> dict[str, float] | None:
        """Every event read, every closed segment encoded, every user's representation acknowledged,
        no lag (a segment the segmenter has just closed may still be on its way to Kafka, and the
        stage counts a representation once it sees Kafka's acknowledgement, after its store write:
        so this is waited for, not read once)."""
        m = metrics(port)
        lags = [v for k, v in m.items() if k.startswith("msli_consumer_lag{")]
        closed = sum(v for k, v in m.items() if k.startswith("msli_segments_closed_total"))
        done = m["msli_events_total"] == len(events) and m["msli_open_segments"] == 0
        done = done and closed == m["msli_segments_encoded_total"] > 0
        done = done and m["msli_representations_published_total"] >= len(USERS)
        return m if done and lags and not any(lags) else None

    m = wait_for(settled, 60, "metrics to show every event read, encoded and published, and no lag")
    assert m["msli_encode_batch_size_sum"] == m["msli_segments_encoded_total"]
    assert m["msli_encode_seconds_count"] >= 1 and m["msli_store_size_bytes"] > 0
    assert len([k for k in m if k.startswith("msli_consumer_lag{")]) == 6  # 3 events + 3 segments partitions
    assert any(k.startswith("msli_watermark_delay_seconds{") for k in m)
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(60) == 0
    live = store_families(live_store)

    # --- a replay of the whole history equals the live run, and replaying again changes nothing -----
    published = {}
    for name in ("replay-1", "replay-2"):  # each into a fresh store and a topic of its own
        replay_env = {
            **env,
            "MSLI_STATE_DIR": str(tmp_path / name),
            "MSLI_REPRESENTATIONS_TOPIC": unique_name(name),
        }
        out = run_msli(["replay", "--source", "segments"], replay_env)
        assert "segments encoded" in out
        assert store_families(tmp_path / name / "store") == live
        published[name] = read_all(kafka_bootstrap, replay_env["MSLI_REPRESENTATIONS_TOPIC"])
    assert published["replay-1"] == published["replay-2"]  # the same records, in the same order
    final = lambda topic: {k: v for records in topic.values() for k, v in records}  # noqa: E731
    assert set(final(published["replay-1"])) == {u.encode() for u in USERS}
    assert final(published["replay-1"]) == final(read_all(kafka_bootstrap, reps_topic))  # compacted: equal

    # --- a new checkpoint: backfilled into its own namespace while readers keep the old one -------
    old = SegmentBatchEncoder.untrained(seed=0, device="cpu").model_version
    new = SegmentBatchEncoder.untrained(seed=1, device="cpu").save(tmp_path / "ckpt-new")
    assert new != old
    start(["worker"], {**env, "MSLI_ENCODER_CHECKPOINT": str(tmp_path / "ckpt-new")})

    def backfilled() -> bool:
        with open_replica(live_store) as reader:
            return all(reader.get(u, model_version=new) is not None for u in USERS)

    wait_for(backfilled, 120, "the new model's representations")
    # The backfill equals a replay of the new model into a fresh store.
    run_msli(
        ["replay"],
        {
            **env,
            "MSLI_STATE_DIR": str(tmp_path / "replay-new"),
            "MSLI_ENCODER_CHECKPOINT": str(tmp_path / "ckpt-new"),
            "MSLI_REPRESENTATIONS_TOPIC": unique_name("replay-new"),
        },
    )
    prefixes = (b"V" + new.encode() + b"\x00", b"R" + new.encode() + b"\x00")
    namespace = lambda families: {k: v for k, v in families.items() if k.startswith(prefixes)}  # noqa: E731
    assert namespace(store_families(live_store)) == namespace(
        store_families(tmp_path / "replay-new" / "store")
    )
    assert namespace(store_families(live_store))
    with open_replica(live_store) as reader:
        assert {reader.get(u)["model_version"] for u in USERS} == {old}  # not promoted yet

    run_msli(["store", "promote", new], env)  # the worker holds the store: via the control topic

    def promoted() -> bool:
        with open_replica(live_store) as reader:
            return {reader.get(u)["model_version"] for u in USERS} == {new}

    wait_for(promoted, 30, "readers to get the promoted model")
    run_msli(["store", "drop", old], env)

    def dropped() -> bool:
        with open_replica(live_store) as reader:
            return reader.model_versions() == [new]

    wait_for(dropped, 30, "the old model to be dropped")


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def get(url: str) -> tuple[int, str | None, dict | None]:
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    conn.request("GET", parts.path)
    response = conn.getresponse()
    body = response.read()
    conn.close()
    return response.status, response.getheader("Location"), json.loads(body) if body else None


def test_queries_reach_the_owner(
    env: dict[str, str], start: Callable, kafka_bootstrap: str, tmp_path: Path
) -> None:
    apis = {}
    for name in ("a", "b"):
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        mine = {**env, "MSLI_STATE_DIR": str(tmp_path / name), "MSLI_API_URL": url}
        start(["worker"], mine)
        start(["serve", "--port", str(port)], mine)
        apis[name] = url
    with EventProducer({"bootstrap.servers": kafka_bootstrap}, topic=env["MSLI_EVENTS_TOPIC"]) as producer:
        producer.send_many(make_events())

    def answered_by_owner() -> dict[str, str] | None:
        """user -> the API that answers it, once both APIs agree: the owner answers, the other
        redirects there (during a rebalance the routes converge within seconds)."""
        owners = {}
        for user in USERS:
            try:
                answers = {name: get(f"{url}/users/{user}") for name, url in apis.items()}
            except OSError:  # an API is still starting
                return None
            for owner, other in (("a", "b"), ("b", "a")):
                status, _, body = answers[owner]
                answered = status == 200 and body is not None and body["user_id"] == user
                if answered and answers[other][:2] == (307, f"{apis[owner]}/users/{user}"):
                    owners[user] = owner
            if user not in owners:
                return None
        return owners if set(owners.values()) == {"a", "b"} else None

    owners = wait_for(answered_by_owner, 150, "both workers to own users and both APIs to agree")
    # Ownership is by partition: users of one partition share an owner.
    by_partition: dict[int, set[str]] = {}
    for user, owner in owners.items():
        by_partition.setdefault(partition_for(user, 3), set()).add(owner)
    assert all(len(o) == 1 for o in by_partition.values()), by_partition
    # Following the redirect gives the owner's answer.
    user = next(u for u, o in owners.items() if o == "b")
    status, location, _ = get(f"{apis['a']}/users/{user}")
    assert status == 307 and get(location or "")[2]["user_id"] == user
