"""What `msli bench` prints and writes: rows with ratios to their reference rows, targets, JSON, a chart.

Every figure is a measurement of this run. A row names its reference row (or a fixed target), and
the ratio is computed here, after all rows are in, so that a row measured later can still be the
reference of one measured earlier.
"""

from __future__ import annotations

import json
import os
import platform
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from schemas.compiled import compiled_status

__all__ = ["BenchReport", "Row", "Target", "machine_facts"]


@dataclass
class Row:
    """One measured figure, compared with a reference row (or a fixed reference value, a target)."""

    key: str  # stable id for JSON and the chart, e.g. "segmenter"
    name: str  # what the table shows
    value: float | None  # None: not measured here (the detail says why)
    unit: str  # "events/s", "s", "us", "MiB", ...
    detail: str = ""
    reference: str | None = None  # key of the row this one is compared with, or a target's name
    reference_value: float | None = None  # the target's value when `reference` names no row
    extra: dict[str, Any] = field(default_factory=dict)  # more numbers, for --json
    ratio: float | None = None  # value / reference value, filled in by BenchReport.finish


@dataclass(frozen=True)
class Target:
    """A goal from the performance issue: `row`'s ratio to its reference must reach `at_least`
    (or stay below `at_most`)."""

    text: str
    row: str
    at_least: float | None = None
    at_most: float | None = None
    reference: str | None = None  # compare with this row instead of the row's own reference
    value: bool = False  # compare the row's value itself, not a ratio

    def check(self, rows: dict[str, Row]) -> tuple[float | None, bool | None]:
        row = rows.get(self.row)
        if row is None or row.value is None:
            return None, None
        if self.value:
            measured: float | None = row.value
        elif self.reference is not None:
            ref = rows.get(self.reference)
            measured = None if ref is None or not ref.value else row.value / ref.value
        else:
            measured = row.ratio
        if measured is None:
            return None, None
        return measured, self.holds(measured)

    def holds(self, measured: float) -> bool:
        return (self.at_least is None or measured >= self.at_least) and (
            self.at_most is None or measured <= self.at_most
        )

    def shown(self, measured: float) -> str:
        """`measured` to three significant digits, or as many more as it takes for the shown
        number to get the same verdict: 0.2497 against at least 0.25 is "0.2497", not "0.25"."""
        ok = self.holds(measured)
        for digits in range(3, 17):
            text = f"{measured:,.{digits}g}"
            if self.holds(float(text.replace(",", ""))) == ok:
                return text
        return repr(measured)


@dataclass
class BenchReport:
    title: str
    machine: dict[str, Any]
    options: dict[str, Any]
    rows: list[Row] = field(default_factory=list)
    targets: list[Target] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, *rows: Row) -> None:
        self.rows.extend(rows)

    def by_key(self) -> dict[str, Row]:
        return {row.key: row for row in self.rows}

    def finish(self) -> None:
        """Fill in each row's ratio to its reference row."""
        rows = self.by_key()
        for row in self.rows:
            ref = rows.get(row.reference) if row.reference else None
            base = ref.value if ref is not None else row.reference_value
            if row.value is not None and base:
                row.ratio = row.value / base

    # --- text ------------------------------------------------------------------------------------
    def table(self) -> str:
        rows = self.by_key()
        lines = [self.title, _machine_line(self.machine), ""]
        header = ("row", "figure", "vs reference", "detail")
        cells = [(r.name, _figure(r), _ratio(r, rows), r.detail) for r in self.rows]
        widths = [max(len(c[i]) for c in [header, *cells]) for i in range(3)]
        for c in [header, *cells]:
            lines.append("  ".join(c[i].ljust(widths[i]) for i in range(3)) + "  " + c[3])
        if self.targets:
            lines += ["", "targets"]
            for target in self.targets:
                measured, ok = target.check(rows)
                verdict = "not measured" if ok is None else ("met" if ok else "NOT met")
                shown = "" if measured is None else f" (measured {target.shown(measured)})"
                lines.append(f"  {target.text}: {verdict}{shown}")
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)

    # --- machines --------------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        rows = self.by_key()
        return {
            "title": self.title,
            "machine": self.machine,
            "options": self.options,
            "rows": [asdict(r) for r in self.rows],
            "targets": [
                {"text": t.text, "measured": m, "met": ok} for t in self.targets for m, ok in [t.check(rows)]
            ],
            "notes": self.notes,
        }

    def write_json(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_json(), indent=2) + "\n")

    def write_chart(self, path: Path) -> None:
        """A small PNG: throughput rows, freshness and encoder rates, log scales where they span decades."""
        import matplotlib

        matplotlib.use("Agg")  # no display on servers and CI
        from matplotlib import pyplot as plt

        rows = self.by_key()
        fig, axes = plt.subplots(
            1, 3, figsize=(11, 3.2), dpi=72, gridspec_kw={"width_ratios": [1.2, 0.8, 1.2]}
        )
        _bars(axes[0], rows, ["broker", "naive-faust", "segmenter", "end-to-end"], "events/s", log=True)
        _bars(axes[1], rows, ["freshness-p50", "freshness-p99"], "seconds (dashed: 1 s target)", log=False)
        axes[1].axvline(1.0, color="#c44", linewidth=1, linestyle="--")
        encoder = [r.key for r in self.rows if r.unit == "segments/s" and r.value]
        _bars(axes[2], rows, encoder, "encoder segments/s", log=True)
        fig.suptitle(self.title, fontsize=9)
        fig.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=72, metadata={"Software": None})  # no version stamp: smaller, stable
        plt.close(fig)


def _bars(ax: Any, rows: dict[str, Row], keys: list[str], label: str, *, log: bool) -> None:
    shown = [rows[k] for k in keys if k in rows and rows[k].value]
    values = [float(r.value or 0.0) for r in shown]
    labels = [r.name.removeprefix("encoder ").replace(" torch threads", " threads") for r in shown]
    ax.barh(labels, values, color="#4a7ebb")
    ax.margins(x=0.25)  # room for the value labels
    ax.invert_yaxis()
    ax.set_xlabel(label, fontsize=8)
    ax.tick_params(labelsize=7)
    if log and shown:
        ax.set_xscale("log")
    for i, value in enumerate(values):
        ax.text(value, i, f" {_number(value)}", va="center", fontsize=7)


def _number(value: float) -> str:
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 1:
        return f"{value:.2f}"
    return f"{value:.3g}"


def _figure(row: Row) -> str:
    return "-" if row.value is None else f"{_number(row.value)} {row.unit}"


def _ratio(row: Row, rows: dict[str, Row]) -> str:
    if row.reference is None:
        return ""
    if row.reference == row.key:
        return "reference"
    ref = rows.get(row.reference)
    name = ref.name if ref is not None else row.reference
    if row.ratio is None:
        return f"- {name}"
    return f"{row.ratio:,.3g}× {name}"


def _machine_line(machine: dict[str, Any]) -> str:
    load = machine.get("load_average_start")
    end = machine.get("load_average_end")
    load_text = "" if load is None else f"; load average {load[0]:.2f} at start"
    if end is not None:
        load_text += f", {end[0]:.2f} at end"
    return (
        f"machine: {machine.get('cpu', '?')}, {machine.get('cpus', '?')} CPUs, "
        f"{machine.get('memory_gib', '?')} GiB; {machine.get('broker', '?')}; Python {machine.get('python')}"
        f" (hot modules {machine.get('hot_modules', '?')}){load_text}"
    )


def machine_facts() -> dict[str, Any]:
    """What the numbers depend on: CPU, cores, memory, load, versions."""
    import confluent_kafka

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        pages, page_size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
        memory_gib = round(pages * page_size / 2**30, 1)
    except (ValueError, OSError):
        memory_gib = None
    return {
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "memory_gib": memory_gib,
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        # The per-event modules run 2.2 times as fast compiled (schemas/compiled.py).
        "hot_modules": compiled_status(),
        "librdkafka": confluent_kafka.libversion()[0],
        "load_average_start": list(os.getloadavg()),
    }
