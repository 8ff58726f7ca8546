"""CPU used by each process of a benchmark phase, so a latency figure can be read against who had the cores.

On a small machine the broker, the load producer and the worker share the cores, and what one of
them takes the others do not get: the freshness row reports each one's share of the load.
Linux /proc only; elsewhere every share reads as unknown.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping

__all__ = ["CpuMeter"]

_TICKS_PER_SECOND = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _stat_fields(pid: int) -> list[str] | None:
    """/proc/PID/stat's fields after the command name (which may hold spaces), or None if gone."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            text = stat.read()
    except OSError:
        return None
    return text[text.rindex(")") + 2 :].split()


def _descendants(root: int) -> set[int]:
    """`root` and every process below it, from each process's parent pid."""
    children: dict[int, list[int]] = {}
    try:
        pids = [int(name) for name in os.listdir("/proc") if name.isdigit()]
    except OSError:
        return {root}
    for pid in pids:
        fields = _stat_fields(pid)
        if fields is not None:
            children.setdefault(int(fields[1]), []).append(pid)
    tree, todo = set(), [root]
    while todo:
        pid = todo.pop()
        tree.add(pid)
        todo.extend(children.get(pid, ()))
    return tree


def _cpu_seconds(pids: set[int]) -> dict[int, float]:
    """User plus system CPU seconds of each live process."""
    seconds = {}
    for pid in pids:
        fields = _stat_fields(pid)
        if fields is not None:
            seconds[pid] = (int(fields[11]) + int(fields[12])) / _TICKS_PER_SECOND
    return seconds


class CpuMeter:
    """Cores each named process used between `start()` and `stop()` (CPU seconds / wall seconds).

    `trees` count a process and everything below it at either read, so a worker's segmenter and
    encoder processes count as the worker's; `processes` count the process alone (the benchmark's
    own, whose children are the other rows). A process that ends between the reads is not counted.
    """

    def __init__(self, trees: Mapping[str, int | None], processes: Mapping[str, int | None]) -> None:
        self._roots = {name: (pid, True) for name, pid in trees.items() if pid is not None}
        self._roots.update({name: (pid, False) for name, pid in processes.items() if pid is not None})
        self._started: dict[str, dict[int, float]] = {}
        self._started_at = 0.0

    def start(self) -> None:
        self._started = {name: self._read(name) for name in self._roots}
        self._started_at = time.monotonic()

    def stop(self) -> dict[str, float]:
        """Cores used by each named process since `start()`."""
        wall = max(time.monotonic() - self._started_at, 1e-9)
        cores = {}
        for name in self._roots:
            before = self._started.get(name, {})
            used = sum(seconds - before.get(pid, 0.0) for pid, seconds in self._read(name).items())
            cores[name] = used / wall
        return cores

    def _read(self, name: str) -> dict[int, float]:
        pid, whole_tree = self._roots[name]
        return _cpu_seconds(_descendants(pid) if whole_tree else {pid})
