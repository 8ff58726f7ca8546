"""The worker's local store: lost entirely (rebuilt from Kafka), or full (the worker stops cleanly,
commits nothing it did not store, and a restart with room finishes the job)."""

from __future__ import annotations

import contextlib
import re
import resource
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import Consumer, TopicPartition
from harness import MIN, Pipeline
from oracle import Rules

from streams.synthetic import generate

RULES = Rules(window_ms=60 * MIN, lateness_ms=5_000, idle_ms=30 * MIN, max_events=8)
_RESTORED = re.compile(r"restored (\d+) records of .* in ([\d.]+) s")


@pytest.mark.parametrize(
    ("n_users", "n_events"),
    [pytest.param(300, 4_000, id="short"), pytest.param(5_000, 100_000, id="full", marks=pytest.mark.slow)],
)
def test_a_deleted_store_is_rebuilt_from_kafka(
    make_pipeline, figures, unique_name, n_users, n_events
) -> None:
    pipeline = make_pipeline(RULES)
    pipeline.produce(generate(n_users=n_users, n_events=n_events, seed=21).to_dicts())
    pipeline.add_drain_events()
    worker = pipeline.start_worker("w")
    pipeline.wait_drained([worker])
    assert worker.stop() == 0
    pipeline.assert_equal_to_oracle(worker.state_dir)

    shutil.rmtree(worker.state_dir)  # the whole state directory, as a lost disk would
    # A fresh output topic, so a publication the restore loses shows; and a crash in the middle of
    # the restore, after its first write, to prove the restore's publications survive one.
    pipeline.use_new_topic("representations", unique_name)
    crashed = pipeline.start_worker("w", MSLI_CRASH_AT="store-written@1")
    assert crashed.wait_exit(timeout=240) == -signal.SIGKILL, crashed.log()[-3000:]
    worker = pipeline.start_worker("w")
    pipeline.wait_drained([worker])  # no new records arrive: the restore must not wait for any
    assert worker.stop() == 0, worker.log()[-3000:]
    pipeline.assert_equal_to_oracle(worker.state_dir)
    restores = [(int(n), float(s)) for n, s in _RESTORED.findall(worker.log())]
    records, seconds = sum(n for n, _ in restores), sum(s for _, s in restores)
    assert 0 < records <= sum(len(r) for r in pipeline.read("segments").values())  # the crash did a chunk
    # The log gives seconds to one decimal: a short restore's rate would be noise.
    rate = f" ({records / seconds:,.0f} records/s)" if seconds >= 1 else ""
    figures(
        f"cold restore: {records:,} closed-segment records in {seconds:.1f} s{rate}, "
        f"{len(restores)} partitions; equal to the oracle"
    )


@contextlib.contextmanager
def small_disk(path: Path, size: str) -> Iterator[str]:
    """A tmpfs of `size` at `path`, or, where mounting is not permitted, nothing (yields how)."""
    path.mkdir(parents=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True
    )
    try:
        yield "tmpfs" if mounted.returncode == 0 else "rlimit"
    finally:
        if mounted.returncode == 0:
            subprocess.run(["umount", "-l", str(path)], check=False)


def grow(path: Path) -> None:
    subprocess.run(["mount", "-o", "remount,size=256m", str(path)], check=True)


def committed(pipeline: Pipeline, group: str) -> dict[int, int]:
    consumer = Consumer(
        {"bootstrap.servers": pipeline.bootstrap, "group.id": group, "enable.auto.commit": False}
    )
    try:
        topic = pipeline.topics["segments"]
        found = consumer.committed([TopicPartition(topic, p) for p in range(pipeline.partitions)], timeout=30)
        return {tp.partition: tp.offset for tp in found}
    finally:
        consumer.close()


def test_a_full_disk_stops_the_worker_without_committing_what_it_did_not_store(
    make_pipeline, figures, tmp_path
) -> None:
    pipeline = make_pipeline(RULES)
    events = generate(n_users=400, n_events=8_000, seed=22).to_dicts()
    with small_disk(tmp_path / "disk", "1500k") as how:
        state_dir = tmp_path / "disk" / "state"
        if how == "tmpfs":
            worker = pipeline.start_worker("w", state_dir)
        else:  # no permission to mount: cap the size of any file the worker writes (EFBIG, not ENOSPC)
            worker = pipeline.start_worker("w", state_dir, preexec_fn=lambda: _limit_file_size(1_500_000))
        # Events arrive after the worker joined, so they pass through its segment consumer, which commits.
        pipeline.wait_assigned(worker)
        for k in range(0, len(events), 500):
            if not worker.alive:
                break
            pipeline.produce(events[k : k + 500])
            time.sleep(0.5)
        status = worker.wait_exit(timeout=300)
        output = worker.log().strip().splitlines()
        assert status == 1, "\n".join(output[-20:])
        assert re.match(r"msli: cannot write store at .*(No space left on device|File too large)", output[-1])
        assert "Traceback" not in worker.log()

        # The segment consumer commits what the stage stored: never past what the store holds.
        applied = pipeline.applied(state_dir)
        offsets = committed(pipeline, f"{pipeline.group}-encoder")
        assert all(offsets[p] <= applied[p] + 1 for p in offsets), (offsets, applied)

        pipeline.produce(events[k:])
        pipeline.add_drain_events()
        if how == "tmpfs":
            grow(tmp_path / "disk")
        worker = pipeline.start_worker("w", state_dir)  # with room, or without the file-size cap
        pipeline.wait_drained([worker])
        assert worker.stop() == 0, worker.log()[-3000:]
        pipeline.assert_equal_to_oracle(state_dir)
    figures(
        f"full disk ({how}): exit 1 with {output[-1][:90]!r}...; committed {offsets} <= applied+1 {applied}; "
        "after making room, state equal to the oracle"
    )


def _limit_file_size(limit: int) -> None:
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
