"""A worker runs a trained checkpoint (its version on every representation, its context model over
each user's segments) and refuses one trained on another catalogue: one line, non-zero exit."""

from __future__ import annotations

import dataclasses
import json
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from msli_processes import MSLI, quick_worker_env

from encoders import ContextState, ItemVocabulary, SegmentBatchEncoder, SegmentEncoder
from encoders.commands import train_checkpoint
from encoders.training import TrainingConfig
from schemas import AvroCodec
from store import RocksDBVectorStore
from streams.producer import EventProducer
from streams.synthetic import generate
from streams.windowing import SegmentationConfig

RULES = SegmentationConfig(
    window_ms=600_000, allowed_lateness_ms=30_000, user_idle_ms=300_000, max_events=8, staggered_windows=True
)


def test_worker_stamps_the_trained_version_and_refuses_another_catalogue(
    kafka_bootstrap: str, unique_name: Callable[[str], str], tmp_path: Path
) -> None:
    events = generate(n_users=20, n_items=50, n_events=600, seed=4, out_of_order_fraction=0.0).to_dicts()
    config = TrainingConfig.quick(dim=16, epochs=1, context_layers=1)
    trained = train_checkpoint(events, "synthetic", tmp_path / "trained", RULES, 16, 604_800_000.0, config)
    env = quick_worker_env(
        kafka_bootstrap,
        unique_name,
        tmp_path / "state",
        partitions=1,
        window_seconds=RULES.window_ms // 1000,
        max_events=RULES.max_events,
        MSLI_ENCODER_CHECKPOINT=str(tmp_path / "trained"),
        MSLI_MAX_FUTURE_SECONDS=str(10**9),  # synthetic event times may lie ahead of the clock
    )
    with open(tmp_path / "worker.log", "w") as log:
        worker = subprocess.Popen([MSLI, "worker"], env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            with EventProducer({"bootstrap.servers": kafka_bootstrap}, topic=env["MSLI_EVENTS_TOPIC"]) as p:
                p.send_many(sorted(events, key=lambda e: e["event_time_ms"]))
            user = events[0]["user_id"]
            deadline = time.monotonic() + 120
            rep = None
            while rep is None and time.monotonic() < deadline:
                out = subprocess.run([MSLI, "query", user, "--json"], env=env, capture_output=True, text=True)
                rep = json.loads(out.stdout) if out.returncode == 0 else None
                time.sleep(1.0)
            assert rep is not None, (tmp_path / "worker.log").read_text()[-2000:]
            assert rep["model_version"] == trained.model_version and rep["dim"] == 16
            user_items = {e["item_id"] for e in events if e["user_id"] == user}
            assert rep["seen_item_ids"] and set(rep["seen_item_ids"]) <= user_items
        finally:
            worker.send_signal(signal.SIGTERM)
            worker.wait(timeout=60)
    assert_representations_read_segments_in_context(tmp_path / "state" / "store", trained, user)

    books = ItemVocabulary.explicit([f"book-{i}" for i in range(50)])
    config = dataclasses.replace(trained.config, n_item_buckets=books.n_rows)
    SegmentBatchEncoder(SegmentEncoder(config), books, device="cpu").save(tmp_path / "books")
    refused = subprocess.run(
        [MSLI, "worker"],
        env={**env, "MSLI_ENCODER_CHECKPOINT": str(tmp_path / "books")},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert refused.returncode == 1
    last = refused.stderr.strip().splitlines()[-1]
    assert last.startswith("msli: ") and "knows 0% of the items in the store's segments" in last


def assert_representations_read_segments_in_context(
    store_path: Path, trained: SegmentBatchEncoder, user: str
) -> None:
    """The stored representation carries the context model's vectors for the user's stored segments,
    bit for bit as the checkpoint computes them offline, and not the stored vectors themselves."""
    with RocksDBVectorStore(store_path, read_only=True) as store:
        record = AvroCodec("UserRepresentation").decode(
            store.representation(trained.model_version, user) or b""
        )
        newest = store.newest_segments(trained.model_version, user, 16)
    assert [s["segment_id"] for s in record["segments"]] == [s.segment_id for s in newest]
    published = np.stack([np.frombuffer(s["vector"], dtype="<f4") for s in record["segments"]])
    [expected] = trained.contextualize([ContextState.of(newest)], 16)
    assert np.array_equal(published, expected)
    assert not np.allclose(published, np.stack([s.vector for s in newest]))
    # What rankers give the seen-item score: the stored segments' items, each once, newest first.
    assert all(0 < len(s.item_ids) <= s.event_count for s in newest)
    assert record["seen_item_ids"] == list(dict.fromkeys(i for s in newest for i in s.item_ids))
