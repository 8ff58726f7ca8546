"""A worker that fails while it is being built releases what it had already opened and started."""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable
from pathlib import Path

import pytest

import streams.app
from store import RocksDBVectorStore
from streams.app import WorkerRuntime
from streams.config import MsliSettings


def _encoder_processes() -> list[multiprocessing.process.BaseProcess]:
    return [p for p in multiprocessing.active_children() if p.name == "msli-encoder"]


def test_a_failed_start_leaves_no_encoder_process_and_no_store_lock(
    kafka_bootstrap: str, unique_name: Callable[[str], str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = MsliSettings(
        bootstrap_servers=kafka_bootstrap,
        events_topic=unique_name("events"),
        segments_topic=unique_name("segments"),
        representations_topic=unique_name("representations"),
        group_id=unique_name("group"),
        state_dir=tmp_path,
        encoder_process=True,
        device="cpu",
    )

    class SegmentConsumerThatFails:
        """The last step of the build fails, after the store is open and the encoder process runs."""

        def __init__(self, *args: object) -> None:
            assert _encoder_processes(), "the encoder process should be running by now"
            raise RuntimeError("the closed-segments consumer could not be made")

    monkeypatch.setattr(streams.app, "SegmentConsumer", SegmentConsumerThatFails)
    before = _encoder_processes()
    with pytest.raises(RuntimeError, match="could not be made"):
        WorkerRuntime(settings)

    assert _encoder_processes() == before  # the child was stopped and joined, not left running
    RocksDBVectorStore(tmp_path / "store").close()  # the lock was released: it opens again
