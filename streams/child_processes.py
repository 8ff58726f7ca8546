"""What the worker's child processes (the segmenter's, the encoder's) share: a name, dying with the
worker, and errors that survive the pipe back to it."""

from __future__ import annotations

import ctypes
import logging
import os
import pickle
import signal
import sys

__all__ = ["die_with_parent", "picklable", "set_process_name"]

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1
_PR_SET_NAME = 15


def set_process_name(name: str) -> None:
    """Name this process for ps, top and /proc/PID/comm (Linux; 15 bytes): every child of a worker
    has the same command line."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None).prctl(_PR_SET_NAME, name.encode()[:15], 0, 0, 0)


def die_with_parent(parent_pid: int) -> None:
    """SIGKILL this process when the worker dies (Linux); elsewhere the closed pipe stops it."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            log.warning("prctl(PR_SET_PDEATHSIG) failed: errno %d", ctypes.get_errno())
    if os.getppid() != parent_pid:  # the worker died before the death signal was armed
        os._exit(1)


def picklable(exc: BaseException, fallback: type[Exception]) -> BaseException:
    """`exc` if it survives pickling, else a `fallback` that names it."""
    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:
        return fallback(f"{type(exc).__name__}: {exc}")
