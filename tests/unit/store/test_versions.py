"""Model-version namespaces: promote, drop, and reads that stay whole while the promotion flips."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from schemas import AvroCodec
from store import (
    RocksDBVectorStore,
    StoredSegment,
    StoreError,
    drop_version,
    ensure_promoted,
    open_replica,
    promote_version,
    promoted_version,
)
from streams.fuser import representation_record

V1, V2 = "m-one", "m-two"
USERS = [f"u{i}" for i in range(50)]


def fill(store: RocksDBVectorStore, version: str, users: list[str], seed: int) -> None:
    codec = AvroCodec("UserRepresentation")
    rng = np.random.default_rng(seed)
    batch = store.batch()
    for user in users:
        segments = [
            StoredSegment(
                user, w * 1000, w * 1000 + 1000, 0, w * 1000 + 500, 2, rng.standard_normal(8).astype("f4")
            )
            for w in (3, 2, 1)
        ]
        for s in segments:
            batch.put_segment_vector(version, s)
        batch.put_representation(
            version, user, codec.encode(representation_record(user, version, segments, 1e6))
        )
        batch.set_applied_offset(version, "segs", 0, 10)
    store.write(batch)


@pytest.fixture
def store(tmp_path):
    with RocksDBVectorStore(tmp_path / "store", vector_dtype="float32") as s:
        fill(s, V1, USERS, seed=1)
        fill(s, V2, USERS, seed=2)
        yield s


def test_first_version_is_promoted_and_later_ones_wait(store: RocksDBVectorStore) -> None:
    assert promoted_version(store) is None
    assert ensure_promoted(store, V1) == V1
    assert ensure_promoted(store, V2) == V1  # a new checkpoint does not switch readers by itself
    assert store.model_versions() == [V1, V2]


def test_promote_refuses_a_version_without_representations(store: RocksDBVectorStore) -> None:
    with pytest.raises(StoreError, match="m-three has no representations"):
        promote_version(store, "m-three")
    promote_version(store, V2)
    assert promoted_version(store) == V2


def test_drop_removes_one_namespace_and_never_the_promoted_one(store: RocksDBVectorStore) -> None:
    promote_version(store, V2)
    with pytest.raises(StoreError, match="promoted"):
        drop_version(store, V2)
    drop_version(store, V1)
    assert store.model_versions() == [V2]
    assert store.representation(V1, "u1") is None and store.newest_segments(V1, "u1", 5) == []
    assert store.applied_offsets("segs") == {V2: {0: 10}}
    assert store.representation(V2, "u1") is not None and len(store.newest_segments(V2, "u1", 5)) == 3


def test_a_reader_on_another_handle_follows_the_writer(store: RocksDBVectorStore) -> None:
    promote_version(store, V1)
    with open_replica(store.path, refresh_seconds=0.0) as reader:
        assert reader.get("u1")["model_version"] == V1
        fill(store, V1, ["late-user"], seed=3)
        assert reader.get("late-user")["user_id"] == "late-user"
        assert reader.get("nobody") is None
        assert reader.get("u1", model_version=V2)["model_version"] == V2


def test_promote_is_atomic_under_concurrent_reads(store: RocksDBVectorStore) -> None:
    """Readers on their own RocksDB handles never see a missing user or a mixed record while the
    promotion flips back and forth (and the old version is dropped at the end)."""
    promote_version(store, V1)
    stop = threading.Event()
    seen: list[set[str]] = []
    errors: list[str] = []

    def read() -> None:
        versions: set[str] = set()
        with open_replica(store.path, refresh_seconds=0.0) as reader:
            i = 0
            while not stop.is_set():
                user = USERS[i % len(USERS)]
                rep = reader.get(user)
                if rep is None or rep["user_id"] != user or len(rep["segments"]) != 3:
                    errors.append(f"{user}: {rep and rep['model_version']}")
                else:
                    versions.add(rep["model_version"])
                i += 1
        seen.append(versions)

    readers = [threading.Thread(target=read) for _ in range(3)]
    for t in readers:
        t.start()
    for i in range(40):
        promote_version(store, V2 if i % 2 == 0 else V1)
        time.sleep(0.005)
    promote_version(store, V2)
    drop_version(store, V1)
    time.sleep(0.05)
    stop.set()
    for t in readers:
        t.join()
    assert errors == []
    assert all(versions == {V1, V2} for versions in seen), seen
