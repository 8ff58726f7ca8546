"""What each worker process imports: the segmenter never encodes, so it must not load torch."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def test_the_segmenter_process_does_not_import_torch() -> None:
    """torch would cost the segmenter process about 1 s at start and 200 MiB it never uses: its
    checkpoint log once read closed-segment records through a module that imported the stage."""
    code = (
        "import sys\n"
        "import streams.segmenter_process, streams.checkpoints, streams.segment_reader\n"
        "print('torch' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"
