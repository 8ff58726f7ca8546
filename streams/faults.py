"""Crash on purpose at a named boundary, so tests can prove a crash there loses and doubles nothing.

Inert unless the environment variable MSLI_CRASH_AT is set when the worker starts:

    MSLI_CRASH_AT=store-written      SIGKILL the worker the first time it passes that boundary
    MSLI_CRASH_AT=store-written@3    ... the third time

The boundaries, in the order one unit of work passes them:

    segments-published    segmenter: closed segments acknowledged by Kafka, checkpoint not yet saved
    checkpoint-committed  segmenter: checkpoint saved and consumer offsets committed
    encoded               encoder stage: vectors computed, nothing stored yet
    store-written         encoder stage: the atomic store write done, representations not published
    published             encoder stage: representations acknowledged, outbox not yet cleared
                          (seen by a later micro-batch, or by the stage's idle settle)

A crash in the worker's segmenter process (streams/segmenter_process.py) SIGKILLs the worker
first: it is a crash of the one worker the process is part of.

SIGKILL, not an exception: nothing runs after it (no finally, no flush, no commit), as in a real
crash. A line on stderr says where it happened, so a test can tell its crash from a bug.
"""

from __future__ import annotations

import os
import signal

from streams.errors import ConfigError

__all__ = ["BOUNDARIES", "crash_point", "kill_also"]

BOUNDARIES = ("segments-published", "checkpoint-committed", "encoded", "store-written", "published")

_name, _, _nth = os.environ.get("MSLI_CRASH_AT", "").partition("@")
if _name and (_name not in BOUNDARIES or not (_nth or "1").isdigit()):
    raise ConfigError(f"MSLI_CRASH_AT must be BOUNDARY[@N], BOUNDARY one of {', '.join(BOUNDARIES)}")
_remaining = int(_nth or 1) if _name else 0
_also: int | None = None  # the worker, when this is its segmenter process


def kill_also(pid: int) -> None:
    """A crash here is a crash of the worker `pid` this process is part of: kill it first."""
    global _also
    _also = pid


def crash_point(name: str) -> None:
    """Kill this process here if MSLI_CRASH_AT names this boundary and its count is reached."""
    global _remaining
    if name != _name:
        return
    _remaining -= 1
    if _remaining == 0:
        os.write(2, f"msli: crash injected at {name} (MSLI_CRASH_AT)\n".encode())
        if _also is not None:
            os.kill(_also, signal.SIGKILL)
        os.kill(os.getpid(), signal.SIGKILL)
