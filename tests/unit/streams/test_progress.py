"""Without a terminal, progress is a plain line every few seconds, and always a last one at the end."""

from __future__ import annotations

import pytest

from streams.progress import Progress


def test_a_log_gets_the_final_figures(capsys: pytest.CaptureFixture[str]) -> None:
    with Progress("worker", 100, interval=3600) as progress:
        progress.update_to(40, closed=3)
        progress.update_to(100, closed=7)
    lines = capsys.readouterr().err.splitlines()
    assert (
        len(lines) == 1 and lines[0].startswith("worker: 100/100 ev (") and lines[0].endswith(", closed 7)")
    )


def test_nothing_counted_prints_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    Progress("idle", None).close()
    assert capsys.readouterr().err == ""


def test_the_final_figures_are_not_printed_twice(capsys: pytest.CaptureFixture[str]) -> None:
    with Progress("worker", 100, interval=0) as progress:
        progress.update_to(100, closed=7)
    assert len(capsys.readouterr().err.splitlines()) == 1
