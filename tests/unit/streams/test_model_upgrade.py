"""A new checkpoint's backfill plan, and the control topic's decisions applied to a store."""

from __future__ import annotations

import pytest

from store import RocksDBVectorStore, ensure_promoted, promoted_version
from streams.control import PROMOTED, drop_key
from streams.encoder_stage import SourceRecord
from streams.model_upgrade import ControlMirror, backfill_targets
from streams.replay import _AlignedChunks


@pytest.fixture
def store(tmp_path):
    with RocksDBVectorStore(tmp_path / "store") as s:
        yield s


def put(store: RocksDBVectorStore, version: str, offsets: dict[int, int]) -> None:
    batch = store.batch()
    for partition, offset in offsets.items():
        batch.set_applied_offset(version, "segs", partition, offset)
    batch.put_representation(version, "u", b"rep")
    store.write(batch)


def test_backfill_covers_what_other_versions_reflect(store: RocksDBVectorStore) -> None:
    put(store, "old", {0: 99, 1: 10, 2: 5})
    put(store, "new", {1: 10, 2: 2})
    assert backfill_targets(store, "segs", "new") == {0: 100, 2: 6}
    assert backfill_targets(store, "segs", "old") == {}
    assert backfill_targets(store, "other-topic", "new") == {}
    store._db.put(b"Asegs\x00\x00\x00\x00\x01", b"\x00" * 8)  # a first-release key: no model version
    assert backfill_targets(store, "segs", "new") == {0: 100, 2: 6}


def test_mirror_promotes_only_what_the_store_holds_and_keeps_the_running_version(
    store: RocksDBVectorStore,
) -> None:
    put(store, "old", {0: 1})
    ensure_promoted(store, "old")
    mirror = ControlMirror(store, running_version="new")
    mirror({PROMOTED: "new"})
    assert promoted_version(store) == "old"  # "new" has no representations here yet: wait
    put(store, "new", {0: 1})
    mirror({PROMOTED: "new", drop_key("new"): "1"})
    assert promoted_version(store) == "new"
    assert store.model_versions() == ["new", "old"]  # the running version is never dropped
    mirror({PROMOTED: "new", drop_key("old"): "1"})
    assert store.model_versions() == ["new"]


def test_replay_chunks_are_cut_at_offset_multiples() -> None:
    chunks = _AlignedChunks(size=4)
    done = [c for o in (2, 3, 4, 5, 6, 7, 8) if (c := chunks.add(SourceRecord(0, o, b"")))]
    assert [[r.offset for r in c] for c in done] == [[2, 3], [4, 5, 6, 7]]
    assert [r.offset for r in chunks.drain(0)] == [8]
    assert chunks.drain(0) == []
