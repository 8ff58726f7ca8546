"""`msli bench --quick` runs every row on a real broker and reports them in the promised shape.

Speed is never asserted here (the machine is shared); only that each row was measured, that the
ratios are the ones the rows imply, and that the table, JSON and chart agree.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from msli_processes import MSLI, msli_env

EXPECTED = {
    "broker": "events/s",
    "segmenter": "events/s",
    "memory-quarter": "MiB",
    "memory-end": "MiB",
    "naive-faust": "events/s",
    "end-to-end": "events/s",
    "freshness-p50": "s",
    "freshness-p99": "s",
    "encoder-cpu-b1": "segments/s",
    "encoder-cpu-b256": "segments/s",
    "encoder-cpu-b1024": "segments/s",
    "encoder-cpu-large-b1024": "segments/s",
    "incremental": "us/event",
    "full-history": "us/event",
    "encoder-pass": "us",
    "scoring-maxsim": "us",
    "scoring-attention": "us",
    "scoring-fused": "us",
    "store-reads": "reads/s",
    "store-p99": "us",
}


@pytest.fixture
def bench_env(kafka_bootstrap: str, tmp_path: Path) -> dict[str, str]:
    return msli_env(MSLI_BOOTSTRAP_SERVERS=kafka_bootstrap, MSLI_STATE_DIR=str(tmp_path / "state"))


def test_quick_bench_reports_every_row(bench_env: dict[str, str], tmp_path: Path) -> None:
    out_json, chart = tmp_path / "bench.json", tmp_path / "bench.png"
    run = subprocess.run(
        [MSLI, "bench", "--quick", "--json", str(out_json), "--chart", str(chart)],
        env=bench_env,
        capture_output=True,
        text=True,
        timeout=420,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads(out_json.read_text())
    rows = {row["key"]: row for row in report["rows"]}

    for key, unit in EXPECTED.items():
        assert key in rows, f"row {key} missing"
        assert rows[key]["unit"] == unit
        assert rows[key]["value"] is not None and rows[key]["value"] > 0, key
    # Each ratio is the row's value over its reference row's value, as measured in this run.
    for row in rows.values():
        ref = rows.get(row["reference"] or "")
        if row["value"] is not None and ref is not None and ref["value"]:
            assert row["ratio"] == pytest.approx(row["value"] / ref["value"])
    assert rows["freshness-p99"]["ratio"] == pytest.approx(rows["freshness-p99"]["value"])  # 1 s target
    assert rows["freshness-p50"]["value"] <= rows["freshness-p99"]["value"]
    fresh = rows["freshness-p99"]["extra"]
    assert fresh["samples"] > 0  # the closable-at header reached the stage
    for hop in ("segmenter", "stage"):  # each sample splits in two at the record's Kafka timestamp
        assert -0.01 <= fresh[hop]["p50"] <= fresh[hop]["max"] <= fresh["max"] + 0.01, hop
    # Who had the cores while the load was offered: the worker (with its child processes) and the
    # load producer; not the broker, which the test configured and so runs in no process of the bench.
    cores = fresh["offered"]["cores"]
    assert set(cores) == {"worker", "load producer"}, cores
    assert cores["worker"] > 0 and cores["load producer"] > 0, cores
    assert "cores used: worker" in rows["freshness-p99"]["detail"]
    assert rows["segmenter"]["extra"]["events"] == 40_000
    e2e = rows["end-to-end"]["extra"]
    assert e2e["events"] == 40_000
    # The clock stops at the last store write, which the log-end check confirms later.
    assert e2e["seconds"] > 0 and e2e["confirmed_after_s"] >= 0, e2e
    assert "confirmed" in rows["end-to-end"]["detail"]
    # The worker's CPU over the run: its three processes, so more than one core's worth can show.
    assert 0 < e2e["worker_cores"] <= os.cpu_count() + 0.5, e2e
    assert e2e["cpu_us_per_event"] == pytest.approx(e2e["worker_cores"] * e2e["seconds"] / 40_000 * 1e6)
    assert "worker CPU" in rows["end-to-end"]["detail"]
    cuda = [k for k in rows if k.startswith("encoder-cuda")]
    assert cuda, "a CUDA row, measured or saying why not"
    for key in cuda:
        assert rows[key]["value"] is not None or "no CUDA device" in rows[key]["detail"]

    texts = [t["text"] for t in report["targets"]]
    for goal in ("segmenter >= 50%", "end to end >= 25%", "10x naive faust", "freshness p99", "memory"):
        assert any(goal in text for text in texts), goal
    assert all(t["met"] in (True, False, None) for t in report["targets"])
    assert report["machine"]["cpus"] >= 1 and len(report["machine"]["load_average_start"]) == 3

    # The table shows every row by name, and the chart is a small PNG.
    for row in rows.values():
        assert row["name"] in run.stdout
    assert "targets" in run.stdout
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert chart.stat().st_size < 200_000


def refused(env: dict[str, str], *args: str) -> str:
    """`msli bench` with arguments it must refuse at once: exit 2 and one line, which is returned."""
    run = subprocess.run([MSLI, "bench", *args], env=env, capture_output=True, text=True, timeout=60)
    assert run.returncode == 2, run.stderr
    assert run.stderr.strip().count("\n") == 0, run.stderr
    return run.stderr


def test_unknown_row_group_is_one_line(bench_env: dict[str, str]) -> None:
    assert "warp-drive" in refused(bench_env, "--rows", "broker,warp-drive")


def test_a_cuda_worker_without_a_gpu_is_one_line(bench_env: dict[str, str]) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: --worker-device cuda is valid here")
    assert "no CUDA device" in refused(bench_env, "--rows", "worker", "--worker-device", "cuda")
