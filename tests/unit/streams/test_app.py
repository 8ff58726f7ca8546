"""The worker's wiring decisions that need no broker."""

from __future__ import annotations

import os

from streams.app import torch_threads
from streams.config import MsliSettings


def test_torch_threads_leave_a_cpu_to_the_segmenter() -> None:
    assert torch_threads(MsliSettings(torch_threads=3)) == 3
    assert torch_threads(MsliSettings()) == max(1, (os.cpu_count() or 2) - 1)
