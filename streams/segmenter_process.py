"""The segmenter in a process of its own, so it and the encoder stage each get a core.

One worker process holds one interpreter lock: the segmenter thread, faust's event loop and the
encoder stage's thread took turns on it, and a worker ran on about one core whatever the machine
had (docs/performance.md). `SegmenterProcess` runs the same `Segmenter` in a child (multiprocessing,
spawn: nothing of the parent's librdkafka threads is forked) and stands in for it in the parent:
`stats`, `closers`, `dead_letters.counts`, `assigned` and `describe()` read the child's latest
snapshot, which it sends over a pipe every `SNAPSHOT_SECONDS` (and at once when its partitions
change), so /metrics, `caught_up()` and the benchmark read what they read before.

Crashes: the child asks Linux to SIGKILL it when the worker dies (PR_SET_PDEATHSIG), and also stops
when its pipe to the worker closes, so a killed worker leaves no segmenter behind in the group. A
child that fails or dies makes the worker stop with a non-zero status; an injected crash
(MSLI_CRASH_AT) in the child kills the worker too, as a crash of the one worker it is part of.
Nothing is lost either way: the child's checkpoints are what a restart resumes from.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

from streams import faults
from streams.child_processes import die_with_parent, picklable, set_process_name
from streams.collector import tune_collector
from streams.config import MsliSettings
from streams.errors import StreamsError
from streams.logs import JsonFormatter, setup_logging
from streams.segmenter import Segmenter, SegmenterStats

__all__ = ["PartitionView", "SegmenterProcess", "SegmenterProcessError"]

log = logging.getLogger(__name__)

SNAPSHOT_SECONDS = 0.1  # how stale the parent's view may be; a snapshot costs ~0.1 ms to send
OPEN_SEGMENTS_SECONDS = 1.0  # how stale its open-segment counts (a gauge) may be


class SegmenterProcessError(StreamsError):
    """The segmenter process failed or died; the worker stops with it."""


@dataclass(frozen=True)
class PartitionView:
    """What the parent needs of one partition's `SegmentCloser`."""

    watermark: int
    open_segments: int
    open_windows: int
    next_offset: int


@dataclass
class _DeadLetterCounts:
    counts: Counter[str] = field(default_factory=Counter)


@dataclass
class _Snapshot:
    stats: SegmenterStats
    partitions: dict[int, PartitionView]
    dead_letters: Counter[str]
    assigned: bool


class SegmenterProcess:
    """Stands in for a `Segmenter` in the worker; `start()` it, then `stop()` and `join()`."""

    def __init__(self, settings: MsliSettings) -> None:
        self.settings = settings
        self.stats = SegmenterStats()  # updated in place: callers may hold on to it
        self.closers: dict[int, PartitionView] = {}  # replaced whole on each snapshot
        self.dead_letters = _DeadLetterCounts()
        self.assigned = threading.Event()
        self.start_offsets: dict[int, int] | None = None  # as on Segmenter; read at start()
        self.throttle: Callable[[int], None] | None = None
        self._process: multiprocessing.process.BaseProcess | None = None
        self._conn: Connection | None = None
        self._reader: threading.Thread | None = None
        self._stopping = False

    def start(self, on_exit: Callable[[BaseException | None], None]) -> None:
        """Start the child; `on_exit(error)` runs on a reader thread once it is gone (error None:
        it stopped cleanly). Call from a thread that outlives the child (the death signal is tied
        to the thread that started it)."""
        ctx = multiprocessing.get_context("spawn")
        self._conn, child_conn = ctx.Pipe()
        root = logging.getLogger()
        log_format = "json" if any(isinstance(h.formatter, JsonFormatter) for h in root.handlers) else "text"
        self._process = ctx.Process(
            target=_child_main,
            args=(
                child_conn,
                # A plain MsliSettings (a config file's settings class is local, so not picklable);
                # the values as the worker has them: the child reads no file or environment.
                MsliSettings.model_construct(**self.settings.model_dump()),
                self.start_offsets,
                self.throttle,
                logging.getLevelName(root.level),
                log_format,
                os.getpid(),
            ),
            name="msli-segmenter",
        )
        self._process.start()
        child_conn.close()
        self._reader = threading.Thread(
            target=self._read, args=(on_exit,), name="msli-segmenter-reader", daemon=True
        )
        self._reader.start()

    def stop(self) -> None:
        """Ask the child to checkpoint and leave the group."""
        self._stopping = True
        if self._conn is not None:
            with contextlib.suppress(OSError):  # already gone; the reader reports how
                self._conn.send("stop")

    @property
    def stopping(self) -> bool:
        """Whether the worker asked the child to stop (its clean exit is then no news)."""
        return self._stopping

    def join(self) -> None:
        if self._reader is not None:
            self._reader.join()

    def describe(self) -> dict[str, Any]:
        closers = self.closers
        return {
            "open_segments": sum(c.open_segments for c in closers.values()),
            "open_windows": sum(c.open_windows for c in closers.values()),
            "partitions": sorted(closers),
        }

    def _read(self, on_exit: Callable[[BaseException | None], None]) -> None:
        assert self._conn is not None and self._process is not None
        error: BaseException | None = None
        try:
            while True:
                kind, payload = self._conn.recv()
                if kind == "snapshot":
                    self._apply(payload)
                elif kind == "error":
                    error = payload
        except (EOFError, OSError):
            pass
        self._process.join()
        self._conn.close()
        status = self._process.exitcode
        if error is None and status != 0:
            how = f"signal {-status}" if status is not None and status < 0 else f"status {status}"
            error = SegmenterProcessError(f"the segmenter process died ({how})")
        elif error is None and not self._stopping:
            log.warning("the segmenter process stopped on its own (SIGTERM?); stopping the worker")
        on_exit(error)

    def _apply(self, snap: _Snapshot) -> None:
        vars(self.stats).update(vars(snap.stats))
        self.closers = snap.partitions
        self.dead_letters.counts = snap.dead_letters
        if snap.assigned:
            self.assigned.set()


# --- the child ---------------------------------------------------------------------------------------
def _child_main(
    conn: Connection,
    settings: MsliSettings,
    start_offsets: dict[int, int] | None,
    throttle: Callable[[int], None] | None,
    log_level: str,
    log_format: str,
    parent_pid: int,
) -> None:
    die_with_parent(parent_pid)
    set_process_name("msli-segmenter")
    setup_logging(log_level, log_format)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group; the worker says when
    faults.kill_also(parent_pid)
    try:
        segmenter = Segmenter(settings)
        segmenter.start_offsets = start_offsets
        segmenter.throttle = throttle
        signal.signal(signal.SIGTERM, lambda *_: segmenter.stop())
        reporter = _Reporter(conn, segmenter)
        segmenter.on_progress = reporter.maybe_send
        threading.Thread(
            target=_listen, args=(conn, segmenter), name="msli-segmenter-listener", daemon=True
        ).start()
        tune_collector()  # a process of its own: the worker's tuning does not reach it
        segmenter.run()
        reporter.send()
    except BaseException as exc:
        log.error("segmenter failed: %s", exc)
        _send(conn, ("error", picklable(exc, SegmenterProcessError)))
        sys.exit(1)
    finally:
        conn.close()


class _Reporter:
    def __init__(self, conn: Connection, segmenter: Segmenter) -> None:
        self.conn, self.segmenter = conn, segmenter
        self._sent_at = 0.0
        self._sent_partitions: list[int] | None = None
        self._counted_at = 0.0
        self._open_segments: dict[int, int] = {}

    def maybe_send(self) -> None:
        partitions = sorted(self.segmenter.closers)
        if time.monotonic() - self._sent_at >= SNAPSHOT_SECONDS or partitions != self._sent_partitions:
            self.send()

    def send(self) -> None:
        seg = self.segmenter
        now = self._sent_at = time.monotonic()
        self._sent_partitions = sorted(seg.closers)
        if now - self._counted_at >= OPEN_SEGMENTS_SECONDS or set(seg.closers) != set(self._open_segments):
            # A walk over every open window: 6 ms for 100k (measured), too much for every snapshot.
            self._counted_at = now
            self._open_segments = {p: c.open_segments for p, c in seg.closers.items()}
        views = {
            p: PartitionView(c.watermark, self._open_segments[p], c.open_windows, c.next_offset)
            for p, c in seg.closers.items()
        }
        snapshot = _Snapshot(seg.stats, views, seg.dead_letters.counts, seg.assigned.is_set())
        _send(self.conn, ("snapshot", snapshot))


def _send(conn: Connection, message: tuple[str, Any]) -> None:
    with contextlib.suppress(OSError):  # the worker is gone; the listener stops the segmenter
        conn.send(message)


def _listen(conn: Connection, segmenter: Segmenter) -> None:
    """Stop on the worker's word, or when the pipe closes because the worker died."""
    try:
        while conn.recv() != "stop":
            pass
    except (EOFError, OSError):
        pass
    segmenter.stop()
