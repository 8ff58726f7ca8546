"""`msli train`, `msli evaluate` and `msli export-items` on a small file, as a user runs them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from encoders import SegmentBatchEncoder
from streams.cli import main
from streams.synthetic import generate


def run(argv: list[str]) -> int:
    try:
        main(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


@pytest.fixture(scope="module")
def events_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "events.jsonl"
    events = generate(n_users=60, n_items=80, n_events=2500, n_interests=4, zipf_exponent=0.0, seed=2)
    path.write_text("".join(json.dumps(e) + "\n" for e in events.to_dicts()))
    return path


@pytest.fixture(scope="module")
def checkpoints(events_file, tmp_path_factory) -> tuple[Path, Path]:
    out = tmp_path_factory.mktemp("models")
    tiny = ["--quick", "--epochs", "2", "--dim", "16"]
    context = ["--context-layers", "1", "--patience", "5"]
    assert run(["train", str(events_file), "--out", str(out / "segments"), *tiny, *context]) == 0
    history = ["--objective", "history", "--no-seen-item-score"]
    assert run(["train", str(events_file), "--out", str(out / "history"), *history, *tiny]) == 0
    return out / "segments", out / "history"


def test_train_writes_a_checkpoint_with_the_closing_rules(checkpoints, monkeypatch):
    segments, history = checkpoints
    encoder = SegmentBatchEncoder.load(segments, device="cpu")
    assert encoder.extra["closing"]["max_events"] == 32  # the settings' default closing rules
    assert encoder.extra["training"]["config"]["objective"] == "segments"
    assert encoder.extra["training"]["config"]["patience"] == 5 and encoder.has_context
    assert encoder.seen_item_score is not None  # on by default
    reference = SegmentBatchEncoder.load(history, device="cpu")
    assert reference.extra["training"]["config"]["objective"] == "history"
    assert reference.seen_item_score is None and not reference.extra["training"]["config"]["seen_item_score"]


def test_evaluate_prints_the_table_and_json(events_file, checkpoints, capsys):
    segments, history = checkpoints
    args = ["evaluate", str(events_file), "--checkpoint", str(segments), "--history-checkpoint", str(history)]
    args += ["--timing-seconds", "0.005"]
    assert run(args) == 0
    table = capsys.readouterr().out
    for row in ("popularity", "full history (last 200 events)", "segments · MaxSim", "segments · attention"):
        assert row in table
    assert run([*args, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    names = [row["name"] for row in report["rows"]]
    assert names[:3] == ["popularity", "full history (last 200 events)", "segments · MaxSim"]
    for row in report["rows"]:
        assert 0.0 <= row["all_items"]["ndcg@10"] <= row["all_items"]["hr@10"] <= 1.0
        assert row["rated_removed"]["users"] == report["users"]
    assert report["request"]["candidates"] == 1000 and report["request"]["speedup_maxsim"] > 0


def test_export_items(checkpoints, tmp_path, capsys):
    segments, _ = checkpoints
    assert run(["export-items", str(tmp_path / "items.npz"), "--checkpoint", str(segments)]) == 0
    assert "item vectors of model m-" in capsys.readouterr().out
    data = np.load(tmp_path / "items.npz")
    assert data["vectors"].shape == (len(data["item_ids"]), 16)


def test_user_errors_are_one_line(events_file, checkpoints, tmp_path, capsys):
    segments, _ = checkpoints
    untrained = tmp_path / "untrained"
    SegmentBatchEncoder.untrained(device="cpu").save(untrained)
    assert run(["evaluate", str(events_file), "--checkpoint", str(untrained)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("msli: ") and "records no closing settings" in err and "\n" not in err
    assert run(["export-items", str(tmp_path / "items.csv"), "--checkpoint", str(segments)]) == 1
    assert "name the output .npz or .jsonl" in capsys.readouterr().err
    assert run(["export-items", str(tmp_path / "x.npz"), "--checkpoint", str(untrained)]) == 1
    assert "no item list to export" in capsys.readouterr().err
