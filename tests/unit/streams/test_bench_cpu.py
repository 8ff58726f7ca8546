"""CpuMeter counts the CPU a process, or a process and its children, used between two reads."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from streams.bench_cpu import CpuMeter

# A child that uses 0.4 s of CPU (its own clock, whatever else the machine does), says so, then
# waits: the meter reads it while it still exists.
_BURN = "import time\nwhile time.process_time() < 0.4: pass\nprint('burnt', flush=True)\ntime.sleep(60)\n"
# A parent that only starts that child and waits for it.
_PARENT = f"import subprocess, sys; subprocess.run([sys.executable, '-c', {_BURN!r}])"


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="reads Linux /proc")
def test_a_tree_counts_its_children_and_a_process_alone_does_not() -> None:
    parent = subprocess.Popen(
        [sys.executable, "-c", _PARENT], stdout=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        meter = CpuMeter(trees={"tree": parent.pid}, processes={"alone": parent.pid, "gone": None})
        meter.start()
        started = time.monotonic()
        assert parent.stdout is not None and parent.stdout.readline() == "burnt\n"
        cores = meter.stop()
        wall = time.monotonic() - started
    finally:
        os.killpg(parent.pid, signal.SIGKILL)
        parent.communicate()  # reaps it and closes the pipe

    assert set(cores) == {"tree", "alone"}  # a process not given (None) is not reported
    tree_seconds, alone_seconds = cores["tree"] * wall, cores["alone"] * wall
    assert tree_seconds >= 0.3  # the child's 0.4 s, counted from its start (it began after start())
    assert alone_seconds < tree_seconds - 0.3  # the parent alone only started it
