"""The encoder's forward passes in a process of their own, a micro-batch apart from the stage.

The encoder stage runs on one thread under one interpreter lock, and on a CPU its model took a
third of the stage's time (docs/performance.md, ninth round). With an `EncoderProcess` the stage
hands a micro-batch's segments to a child process and, while the child encodes them, merges the
next micro-batch and stores the one before (`EncoderStage.submit`): the model gets a core of its own.

The child holds a copy of the parent's encoder (pickled: the same weights and vocabulary) and runs
the same code with the same number of torch threads, so its vectors are bit for bit the parent's
(vectors do not depend on the batch, its order or the thread count; tests/unit/encoders).

The child also builds each batch's user representations (streams/representation_batch.py) from
what the stage read for them: reading and decoding the newest K, building the records and their
Avro had been 62% of the stage's thread for users with history (docs/performance.md, eleventh
round). It keeps each batch's new segments until the next one, whose store read could not see
them yet.

The parent checks each batch's segments and computes their model inputs (`inputs()`, the
numpy arrays the model reads) before it sends them. The child had set the pace of the worker's end
to end while the stage waited for it; now the two carry about the same (docs/performance.md,
eighteenth round). A bad segment is so refused in the parent, as an encoder in the stage's process
refuses it. The child answers each batch in order, with the outcome or the error it raised. A
reader thread in the parent takes the answers as they come, so neither side can wait on a full
pipe while the other waits on it too.

Crashes: like the segmenter's process, the child dies with the worker (PR_SET_PDEATHSIG) and
stops when its pipe closes. A child that dies fails the batches it holds with
`EncoderProcessError`, which stops the worker; nothing is lost, since nothing of those batches was
stored.
"""

from __future__ import annotations

import collections
import contextlib
import multiprocessing
import os
import signal
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from multiprocessing.connection import Connection
from typing import Any

import numpy as np
import torch

from encoders import ContextState, EncoderError, SegmentBatchArrays, SegmentBatchEncoder, SegmentInput
from streams.child_processes import die_with_parent, picklable, set_process_name
from streams.collector import tune_collector
from streams.representation_batch import BatchBuilder, BatchOutcome, RepresentationJob

__all__ = ["EncoderProcess", "EncoderProcessError"]


class EncoderProcessError(EncoderError):
    """The encoder process died or could not start; the worker stops with it."""


class EncoderProcess:
    """Stands in for a CPU `SegmentBatchEncoder` in the encoder stage; `close()` when done."""

    asynchronous = True  # start_encoding returns before the vectors exist: the stage pipelines
    builds_representations = True  # start_batch: the stage's representations are built here too

    def __init__(self, encoder: SegmentBatchEncoder, torch_threads: int) -> None:
        if encoder.device.type != "cpu":
            raise EncoderProcessError(f"an encoder process runs CPU encoders, not {encoder.device}")
        self.encoder = encoder  # the parent's copy: model_version, contextualize, item vectors
        ctx = multiprocessing.get_context("spawn")  # nothing of the parent's threads is forked
        self._conn, child_conn = ctx.Pipe()
        self._process = ctx.Process(
            target=_child_main,
            args=(child_conn, torch_threads, os.getpid()),
            name="msli-encoder",
            daemon=True,
        )
        self._process.start()
        child_conn.close()
        # The weights go over the pipe, not with the start: a child that dies while starting then
        # fails the send or the handshake, where spawn's own pipe would wait for it forever.
        try:
            self._conn.send(encoder)
            self._conn.recv()
        except (OSError, EOFError):
            self._process.join()
            raise EncoderProcessError(
                f"the encoder process did not start (status {self._process.exitcode}; its error is above)"
            ) from None
        self._waiting: collections.deque[Future[Any]] = collections.deque()
        self._lock = threading.Lock()
        self._gone: EncoderProcessError | None = None
        self._closing = False
        # Called on the reader thread if the child ends without close(): the worker stops then, not
        # only at its next micro-batch.
        self.on_exit: Callable[[EncoderProcessError], None] | None = None
        self._reader = threading.Thread(target=self._read, name="msli-encoder-reader", daemon=True)
        self._reader.start()

    @property
    def model_version(self) -> str:
        return self.encoder.model_version

    def start_encoding(self, segments: Sequence[SegmentInput]) -> Callable[[], np.ndarray]:
        """Send the segments' inputs to the child (raising EncoderError on a bad segment); the
        returned call waits for their vectors."""
        return self._send(self.encoder.inputs(segments), None)

    def start_batch(
        self, segments: Sequence[SegmentInput], job: RepresentationJob
    ) -> Callable[[], BatchOutcome]:
        """start_encoding() of the segments, and the job's representations built from the vectors
        in the child. A job read `after_previous` merges the new segments of the batch sent just
        before it."""
        return self._send(self.encoder.inputs(segments), job)

    def _send(self, inputs: SegmentBatchArrays, job: RepresentationJob | None) -> Callable[[], Any]:
        future: Future[Any] = Future()
        message = (inputs, job)
        with self._lock:  # answers come in the order of the sends
            if self._gone is not None:
                raise self._gone
            self._waiting.append(future)
            with contextlib.suppress(OSError):  # the child is gone: the reader fails the future
                self._conn.send(message)
        return future.result

    def encode(self, segments: Sequence[SegmentInput]) -> np.ndarray:
        return self.start_encoding(segments)()

    def contextualize(self, states: Sequence[ContextState], k: int) -> list[np.ndarray]:
        return self.encoder.contextualize(states, k)

    def close(self) -> None:
        """Stop the child and wait for it; safe to call twice."""
        self._closing = True
        with contextlib.suppress(OSError):
            self._conn.send(None)
        self._reader.join()

    def __getattr__(self, name: str) -> Any:  # dim, device, item_vectors, ... of the parent's copy
        return getattr(self.encoder, name)

    def _read(self) -> None:
        try:
            while True:
                kind, payload = self._conn.recv()
                future = self._waiting.popleft()
                if kind == "done":
                    future.set_result(payload)
                else:
                    future.set_exception(payload)
        except (EOFError, OSError):
            pass
        self._process.join()
        status = self._process.exitcode
        how = f"signal {-status}" if status is not None and status < 0 else f"status {status}"
        with self._lock:
            gone = self._gone = EncoderProcessError(f"the encoder process exited ({how})")
            while self._waiting:
                self._waiting.popleft().set_exception(gone)
        self._conn.close()
        if not self._closing and self.on_exit is not None:
            self.on_exit(gone)


# --- the child ---------------------------------------------------------------------------------------
def _child_main(conn: Connection, torch_threads: int, parent_pid: int) -> None:
    die_with_parent(parent_pid)
    set_process_name("msli-encoder")
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group; the worker says when
    torch.set_num_threads(torch_threads)
    try:
        encoder: SegmentBatchEncoder = conn.recv()
        tune_collector()
        builder = BatchBuilder(encoder.contextualize if encoder.has_context else None)
        conn.send("ready")
        while (message := conn.recv()) is not None:
            inputs, job = message
            answer: tuple[str, Any]
            try:
                vectors = encoder.encode_inputs(inputs)
                if job is None:
                    builder.forget()
                    answer = ("done", vectors)
                else:
                    answer = ("done", builder.finish(job, vectors))
            except Exception as exc:  # a bad segment: the stage raises it, as it would in-process
                builder.forget()
                answer = ("error", picklable(exc, EncoderError))
            conn.send(answer)
    except (EOFError, OSError):  # the worker is gone
        pass
    finally:
        conn.close()
