"""The bench report's arithmetic: ratios to reference rows and targets, JSON and table shape."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from streams.bench_report import BenchReport, Row, Target
from streams.topics import CLOSABLE_AT_HEADER, closable_at_ms


def report() -> BenchReport:
    r = BenchReport("title", {"cpus": 2, "load_average_start": [1.0, 1.0, 1.0]}, {"quick": True})
    r.add(
        Row("broker", "broker read limit", 200_000.0, "events/s", reference="broker"),
        Row("segmenter", "segmenter", 50_000.0, "events/s", reference="broker"),
        Row("naive-faust", "naive faust", 2_000.0, "events/s", reference="broker"),
        Row("end-to-end", "end to end", 30_000.0, "events/s", reference="broker"),
        Row("fresh", "freshness p99", 0.5, "s", reference="1 s target", reference_value=1.0),
        Row("cuda", "encoder CUDA", None, "segments/s", "no CUDA device"),
    )
    r.targets += [
        Target("segmenter half the broker", "segmenter", at_least=0.5),
        Target("e2e 10x faust", "end-to-end", at_least=10.0, reference="naive-faust"),
        Target("fresh", "fresh", at_most=1.0, value=True),
        Target("cuda", "cuda", at_least=1.0),
    ]
    r.finish()
    return r


def test_ratios_are_value_over_reference() -> None:
    rows = report().by_key()
    assert rows["broker"].ratio == 1.0
    assert rows["segmenter"].ratio == pytest.approx(0.25)
    assert rows["fresh"].ratio == pytest.approx(0.5)
    assert rows["cuda"].ratio is None


def test_targets_compare_ratios_values_or_another_row() -> None:
    r = report()
    rows = r.by_key()
    checks = [t.check(rows) for t in r.targets]
    assert checks[0] == (pytest.approx(0.25), False)
    assert checks[1] == (pytest.approx(15.0), True)
    assert checks[2] == (0.5, True)
    assert checks[3] == (None, None)  # not measured is neither met nor missed


def test_a_measured_figure_is_never_shown_rounded_onto_the_other_side_of_its_target() -> None:
    at_least = Target("ratio at least a quarter", "segmenter", at_least=0.25)
    assert at_least.shown(0.2497) == "0.2497" and not at_least.holds(0.2497)  # not "0.25", NOT met
    assert at_least.shown(0.25) == "0.25" and at_least.shown(0.2571) == "0.257"
    at_most = Target("p99 under a second", "fresh", at_most=1.0, value=True)
    assert at_most.shown(1.0004) == "1.0004" and at_most.shown(0.202) == "0.202"
    assert at_least.shown(16.98) == "17"  # three digits where they keep the verdict


def test_table_and_json(tmp_path: Path) -> None:
    r = report()
    text = r.table()
    assert "0.25× broker read limit" in text and "reference" in text
    assert "segmenter half the broker: NOT met" in text and "cuda: not measured" in text
    r.write_json(tmp_path / "b.json")
    data = json.loads((tmp_path / "b.json").read_text())
    assert [row["key"] for row in data["rows"]][:2] == ["broker", "segmenter"]
    assert data["targets"][1]["met"] is True


def test_closable_at_header_parses_pairs_and_mappings() -> None:
    assert closable_at_ms([("other", b"1"), (CLOSABLE_AT_HEADER, b"1700000000123")]) == 1700000000123
    assert closable_at_ms({CLOSABLE_AT_HEADER: b"42"}) == 42
    assert closable_at_ms(None) is None and closable_at_ms([(CLOSABLE_AT_HEADER, b"x")]) is None
