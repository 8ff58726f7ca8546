"""Make sure a finished worker's process ends.

When the worker stops, after a fatal error or a signal, it has already released what matters (the
store closed, the producer flushed). At interpreter exit Python still joins every non-daemon thread
(concurrent.futures' workers among them), and one that a library left blocked holds the process
open for good: a supervisor then sees a live worker that does nothing. That happened once in the
full-disk test: the one-line error was printed and the process ran on for 300 s. So the exit gets
a deadline. The thread, named by this module's log line since, was "Thread-1": the consumer thread
of faust's own Kafka client (mode's WorkerThread, not a daemon), which the worker no longer starts
(streams/segment_consumer.py); the deadline stays for any other library thread. After a fatal
error, whose one line must stay the last thing the worker prints, the process ends at once instead
(`end_if_released`).
"""

from __future__ import annotations

import logging
import os
import sys
import threading

__all__ = ["end_if_released", "exit_within"]

log = logging.getLogger(__name__)
_released = False  # set by exit_within: the worker has released its store and producer


def exit_within(seconds: float, code: int) -> None:
    """End the process with `code` if it is still running `seconds` from now, naming the threads
    that held it open. A normal exit before then ends this timer with the process."""

    def force_exit() -> None:
        held_by = [t.name for t in threading.enumerate() if not t.daemon and t is not threading.main_thread()]
        log.error("exit took over %g s; threads still running: %s", seconds, ", ".join(held_by) or "none")
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)

    global _released
    _released = True
    timer = threading.Timer(seconds, force_exit)
    timer.name = "msli-exit-deadline"
    timer.daemon = True
    timer.start()


def end_if_released(code: int) -> None:
    """End the process now with `code` if the worker has released what matters (exit_within was
    called): nothing is left to wait for but library threads. Otherwise return."""
    if _released:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
