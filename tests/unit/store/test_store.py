"""The vector store on a real RocksDB in tmp_path."""

from __future__ import annotations

import os
import re
import struct

import numpy as np
import pytest

from store import (
    RocksDBOptions,
    RocksDBVectorStore,
    StoredSegment,
    StoreError,
    decode_segments,
    decode_vector,
    decode_vectors,
    encode_vector,
    encode_vectors,
    keys,
    quantize,
)
from store.store import _SEGMENT_META
from store.vector_codec import VectorDtype

MODEL = "m-test"


def segment(user: str, window: int, ordinal: int, seed: int, dim: int = 8) -> StoredSegment:
    vector = np.random.default_rng(seed).standard_normal(dim).astype(np.float32)
    return StoredSegment(user, window, window + 100, ordinal, window + 50, 3, vector)


@pytest.fixture
def store(tmp_path):
    with RocksDBVectorStore(tmp_path / "db", vector_dtype="float32") as s:
        yield s


def test_vector_codec_round_trips_float32_exactly_and_float16_closely() -> None:
    v = np.random.default_rng(0).standard_normal(64).astype(np.float32)
    assert np.array_equal(decode_vector(encode_vector(v, "float32")), v)
    half = decode_vector(encode_vector(v, "float16"))
    assert half.dtype == np.float32 and np.allclose(half, v, atol=2e-3)
    assert np.array_equal(half, quantize(v, "float16"))
    assert len(encode_vector(v, "float16")) == 1 + 64 * 2


def test_vectors_decoded_together_equal_each_decoded_alone() -> None:
    rng = np.random.default_rng(1)
    same_kind = [encode_vector(rng.standard_normal(16).astype(np.float32), "float16") for _ in range(5)]
    # A store whose dtype setting changed holds both kinds, and a store may hold vectors of two sizes.
    mixed = [*same_kind[:2], encode_vector(np.ones(16, np.float32), "float32"), same_kind[2]]
    sizes = [*same_kind[:2], encode_vector(np.ones(8, np.float32), "float16")]
    for encoded in (same_kind, mixed, sizes, same_kind[:1], []):
        together = decode_vectors(encoded)
        assert len(together) == len(encoded)
        for got, data in zip(together, encoded, strict=True):
            assert got.dtype == np.float32 and np.array_equal(got, decode_vector(data))
    with pytest.raises(ValueError, match="unknown vector dtype tag"):
        decode_vectors([b"\x09" + bytes(8)] * 2)


@pytest.mark.parametrize("dtype", ["float16", "float32"])
def test_vectors_encoded_together_equal_each_encoded_alone(dtype: VectorDtype) -> None:
    rows = np.random.default_rng(2).standard_normal((5, 16)).astype(np.float32)
    for vectors in (rows, rows[:1], rows[:0], np.zeros((2, 0), np.float32), rows[:, ::2]):
        assert encode_vectors(vectors, dtype) == [encode_vector(v, dtype) for v in vectors]


def test_segment_vectors_stored_together_read_back_as_each_stored_alone(tmp_path) -> None:
    segments = [
        segment(f"u{i % 2}", 100 * i, i % 3, seed=i)._replace(item_ids=("a", f"i{i}")) for i in range(6)
    ]
    with (
        RocksDBVectorStore(tmp_path / "alone") as alone,
        RocksDBVectorStore(tmp_path / "together") as together,
    ):
        batch = alone.batch()
        for s in segments:
            batch.put_segment_vector(MODEL, s)
        alone.write(batch)
        batch = together.batch()
        batch.put_segment_vectors(
            MODEL, [(*s[:6], s.item_ids) for s in segments], np.stack([s.vector for s in segments])
        )
        together.write(batch)
        for user in ("u0", "u1"):
            assert alone.newest_segment_entries(MODEL, [user], 16) == together.newest_segment_entries(
                MODEL, [user], 16
            )
        assert len(together.newest_segments(MODEL, "u0", 16)) == 3


def test_newest_segments_come_newest_first_and_stop_at_k(store: RocksDBVectorStore) -> None:
    batch = store.batch()
    for window, ordinal in [(100, 0), (300, 0), (200, 1), (200, 0), (300, 1)]:
        batch.put_segment_vector(MODEL, segment("u1", window, ordinal, seed=window + ordinal))
    batch.put_segment_vector(MODEL, segment("u10", 999, 0, seed=1))  # a prefix of u1's key: must not leak in
    batch.put_segment_vector("m-other", segment("u1", 999, 0, seed=2))
    store.write(batch)
    got = [(s.window_start_ms, s.ordinal) for s in store.newest_segments(MODEL, "u1", k=4)]
    assert got == [(300, 1), (300, 0), (200, 1), (200, 0)]
    first = store.newest_segments(MODEL, "u1", k=1)[0]
    assert first.segment_id == "u1:300:1"
    assert np.array_equal(first.vector, segment("u1", 300, 1, seed=301).vector)
    assert store.newest_segments(MODEL, "nobody", k=4) == []
    assert store.user_segment_count(MODEL, "u1") == 5
    # Many users read with one iterator, in any order, absent ones too, as each read alone.
    users = ["u10", "nobody", "u1", "u0", "u10"]
    for user, entries in zip(users, store.newest_segment_entries(MODEL, users, 3), strict=True):
        together, alone = decode_segments(user, entries), store.newest_segments(MODEL, user, 3)
        assert [(*s[:6], s.vector.tobytes(), s.item_ids) for s in together] == [
            (*s[:6], s.vector.tobytes(), s.item_ids) for s in alone
        ]
        assert len(alone) == {"u10": 1, "nobody": 0, "u1": 3, "u0": 0}[user]


def test_window_segment_events_are_per_user_and_window(store: RocksDBVectorStore) -> None:
    batch = store.batch()
    batch.put_segment_events("u", 100, 1, b"second")
    batch.put_segment_events("u", 100, 0, b"first")
    batch.put_segment_events("u", 200, 0, b"other window")
    store.write(batch)
    assert store.window_segment_events("u", 100) == [(0, b"first"), (1, b"second")]
    assert store.window_segment_events("u", 300) == []


def test_batch_is_atomic_and_applied_offsets_persist(tmp_path) -> None:
    path = tmp_path / "db"
    with RocksDBVectorStore(path) as store:
        assert store.applied_offset(MODEL, "segs", 3) == -1
        batch = store.batch()
        batch.set_applied_offset(MODEL, "segs", 3, 41)
        batch.put_representation(MODEL, "u", b"rep")
        batch.add_outbox("reps", MODEL, ["u"], [b"rep"])
        assert store.applied_offset(MODEL, "segs", 3) == -1  # nothing visible before write()
        store.write(batch)
    with RocksDBVectorStore(path) as store:
        assert store.applied_offset(MODEL, "segs", 3) == 41
        assert store.representation(MODEL, "u") == b"rep"
        pending = store.pending_outbox()
        assert [(r.topic, r.key, r.value) for r in pending] == [("reps", b"u", b"rep")]
        batch = store.batch()
        batch.put_representation(MODEL, "v", b"rep2")
        batch.add_outbox("reps", MODEL, ["v"], [b"rep2"])  # sequence numbers continue after a reopen
        store.write(batch)
        assert [r.seq for r in store.pending_outbox()] == [pending[0].seq, pending[0].seq + 1]
        store.clear_outbox(store.pending_outbox())
        assert store.pending_outbox() == []


def test_the_outbox_names_representations_and_reads_them_as_stored(tmp_path) -> None:
    with RocksDBVectorStore(tmp_path / "db") as store:
        first = store.batch()
        first.put_representation(MODEL, "u", b"rep-1")
        first.add_outbox("reps", MODEL, ["u"], [b"rep-1"])
        store.write(first)
        assert [r.value for r in first.outbox] == [b"rep-1"]  # what the stage sends now
        second = store.batch()
        second.put_representation(MODEL, "u", b"rep-2")
        second.add_outbox("reps", MODEL, ["u"], [b"rep-2"])
        second.put_representation("m-other", "w", b"rep-w")
        second.add_outbox("reps", "m-other", ["w"], [b"rep-w"])
        store.write(second)
        # Read back after a crash: each record gives the user's representation as stored now.
        assert [(r.key, r.value) for r in store.pending_outbox()] == [
            (b"u", b"rep-2"),
            (b"u", b"rep-2"),
            (b"w", b"rep-w"),
        ]
        store.delete_model_version("m-other")
        assert [r.value for r in store.pending_outbox()] == [b"rep-2", b"rep-2", None]


def test_one_outbox_record_names_a_batchs_users_in_order(tmp_path) -> None:
    with RocksDBVectorStore(tmp_path / "db") as store:
        batch = store.batch()
        for user in ("u", "v", "w"):
            batch.put_representation(MODEL, user, f"rep-{user}".encode())
        batch.add_outbox("reps", MODEL, ["w", "u", "v"], [b"rep-w", b"rep-u", b"rep-v"])
        batch.add_outbox("reps", MODEL, [], [])  # nothing to publish: no record
        store.write(batch)
        assert len(list(store._scan(keys.OUTBOX))) == 1
        assert [(r.key, r.value) for r in batch.outbox] == [
            (b"w", b"rep-w"),
            (b"u", b"rep-u"),
            (b"v", b"rep-v"),
        ]
        pending = store.pending_outbox()
        assert pending == batch.outbox and len({r.seq for r in pending}) == 1
        store.clear_outbox(pending[:1])  # any record of it forgets them all: streams.outbox waits for all
        assert store.pending_outbox() == []
        with pytest.raises(ValueError):
            store.batch().add_outbox("reps", MODEL, ["u"], [b"a", b"b"])


def test_outbox_copies_written_by_earlier_releases_still_read(tmp_path) -> None:
    with RocksDBVectorStore(tmp_path / "db") as store:
        batch = store.batch()
        # The layout before references: topic length, key length, topic, key, value.
        batch._batch.put(keys.outbox_key(7), struct.pack(">HI", 4, 1) + b"repsu" + b"old-rep")
        store.write(batch)
    with RocksDBVectorStore(tmp_path / "db") as store:
        assert [(r.seq, r.topic, r.key, r.value) for r in store.pending_outbox()] == [
            (7, "reps", b"u", b"old-rep")
        ]
        batch = store.batch()
        batch.put_representation(MODEL, "u", b"new-rep")
        batch.add_outbox("reps", MODEL, ["u"], [b"new-rep"])  # numbered after the old records
        store.write(batch)
        assert [(r.seq, r.value) for r in store.pending_outbox()] == [(7, b"old-rep"), (8, b"new-rep")]


def test_read_only_store_sees_a_running_writers_data(tmp_path) -> None:
    path = tmp_path / "db"
    with RocksDBVectorStore(path) as writer:
        batch = writer.batch()
        batch.put_representation(MODEL, "u", b"rep")
        writer.write(batch)
        with RocksDBVectorStore(path, read_only=True) as reader:
            assert reader.representation(MODEL, "u") == b"rep"
            assert list(reader.representation_users(MODEL)) == ["u"]


def test_missing_store_and_nul_bytes_are_clear_errors(tmp_path, store: RocksDBVectorStore) -> None:
    with pytest.raises(StoreError, match="no store at"):
        RocksDBVectorStore(tmp_path / "absent", read_only=True)
    with pytest.raises(ValueError, match="NUL"):
        store.representation(MODEL, "bad\x00user")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
def test_read_only_directory_is_a_store_error(tmp_path) -> None:
    path = tmp_path / "ro"
    path.mkdir()
    path.chmod(0o500)
    try:
        with pytest.raises(StoreError, match="cannot open store"):
            RocksDBVectorStore(path / "db")
    finally:
        path.chmod(0o700)


def test_unwritable_store_path_is_a_store_error(tmp_path) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a file where the store's parent directory should be")
    with pytest.raises(StoreError, match="cannot open store"):
        RocksDBVectorStore(blocker / "db")


def test_pending_users_persist_with_their_write_until_cleared(tmp_path) -> None:
    path = tmp_path / "db"
    with RocksDBVectorStore(path) as store:
        batch = store.batch()
        batch.put_representation(MODEL, "u1", b"rep")
        batch.mark_pending("u1")
        batch.mark_pending("u2")
        store.write(batch)
    with RocksDBVectorStore(path) as store:  # as after a crash: the marks came back with the state
        assert store.pending_users() == ["u1", "u2"]
        batch = store.batch()
        batch.clear_pending("u1")
        store.write(batch)
        assert store.pending_users() == ["u2"]


def test_segments_keep_their_item_ids_and_older_values_read_without_them(store: RocksDBVectorStore) -> None:
    batch = store.batch()
    items = ("film-1", "фильм-2", "x" * 70_000)  # any text, of any length
    with_items = StoredSegment("u", 100, 200, 0, 150, 3, np.arange(8, dtype=np.float32), items)
    batch.put_segment_vector(MODEL, with_items)
    store.write(batch)
    (read,) = store.newest_segments(MODEL, "u", 4)
    assert read.item_ids == items and np.array_equal(read.vector, with_items.vector)
    # A value written before item ids were stored: meta + vector, nothing between them.
    old = _SEGMENT_META.pack(300, 250, 2) + encode_vector(np.ones(8, np.float32), "float32")
    store._db.put(keys.segment_vector_key(MODEL, "u", 200, 0), old)
    newest = store.newest_segments(MODEL, "u", 4)
    assert [s.item_ids for s in newest] == [(), items]
    assert np.array_equal(newest[0].vector, np.ones(8, np.float32)) and newest[0].event_count == 2
    # Ids the segmenter dead-letters (empty, or holding a NUL) are left out, not stored ambiguously.
    batch = store.batch()
    batch.put_segment_vector(
        MODEL, StoredSegment("v", 1, 2, 0, 1, 3, np.ones(8, np.float32), ("a", "", "b\x00c"))
    )
    store.write(batch)
    assert store.newest_segments(MODEL, "v", 1)[0].item_ids == ("a",)


class _CountingOptions(RocksDBOptions):
    """The store's options with RocksDB's statistics on, to see what its bloom filters did."""

    def to_options(self):
        opts = super().to_options()
        opts.enable_statistics()
        return opts


def _statistic(store: RocksDBVectorStore, name: str) -> int:
    dump = store._db.property_value("rocksdb.options-statistics") or ""
    found = re.search(rf"^{re.escape(name)} COUNT : (\d+)$", dump, re.MULTILINE)
    assert found, f"{name} not in RocksDB's statistics"
    return int(found.group(1))


@pytest.mark.parametrize("mode", ["read_write", "read_only", "secondary"])
def test_a_reopened_store_keeps_its_bloom_filter_and_block_cache(tmp_path, mode: str) -> None:
    # Reopening an existing database, rocksdict took the table options from its OPTIONS file, where
    # RocksDB cannot write a bloom filter, and gave them an 8 MiB cache: only the first open had ours.
    path = tmp_path / "db"
    options = _CountingOptions()
    with RocksDBVectorStore(path, options) as store:
        assert store._db.property_int_value("rocksdb.block-cache-capacity") == options.block_cache_bytes
        batch = store.batch()
        for n in range(0, 200, 2):
            batch.put_representation(MODEL, f"u{n:03}", b"rep")
        store.write(batch)
        store.flush()  # into an SST file: a point read skips it only on its filter's word
    read_only, secondary_dir = mode == "read_only", (tmp_path / "secondary" if mode == "secondary" else None)
    with RocksDBVectorStore(path, options, read_only=read_only, secondary_dir=secondary_dir) as store:
        assert store._db.property_int_value("rocksdb.block-cache-capacity") == options.block_cache_bytes
        assert store.representation(MODEL, "u100") == b"rep"
        # Absent users between stored ones, so the file's key range cannot rule them out.
        assert all(store.representation(MODEL, f"u{n:03}") is None for n in range(1, 200, 2))
        assert _statistic(store, "rocksdb.bloom.filter.useful") >= 90  # of 100; ~1% false positives
