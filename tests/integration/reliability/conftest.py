"""Fixtures of the reliability tests: a pipeline per test, and figures printed at the end of the run."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from harness import Pipeline
from oracle import Rules

_FIGURES: list[tuple[str, str]] = []


@pytest.fixture
def make_pipeline(
    kafka_bootstrap: str, unique_name: Callable[[str], str], tmp_path: Path
) -> Iterator[Callable[..., Pipeline]]:
    """Build a Pipeline (own topics and groups); every worker it started is killed at teardown."""
    made: list[Pipeline] = []

    def make(rules: Rules, partitions: int = 4, bootstrap: str | None = None) -> Pipeline:
        pipeline = Pipeline(bootstrap or kafka_bootstrap, unique_name, tmp_path, rules, partitions)
        made.append(pipeline)
        return pipeline

    yield make
    for pipeline in made:
        pipeline.kill_all()


@pytest.fixture
def figures(request: pytest.FixtureRequest) -> Callable[[str], None]:
    """Report a measured figure: shown in the terminal summary and kept in the JUnit properties."""

    def report(text: str) -> None:
        _FIGURES.append((request.node.name, text))
        request.node.user_properties.append(("figure", text))
        print(text)

    return report


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _FIGURES:
        terminalreporter.section("reliability figures")
        for test, text in _FIGURES:
            terminalreporter.write_line(f"{test}: {text}")
