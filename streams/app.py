"""The worker's wiring: a confluent-kafka segmenter (a child process, or a thread) and a
confluent-kafka consumer of closed segments feeding the encoder stage (a thread), hosted by faust.

Raw events are many and small, so the segmenter reads them in big batches; closed segments are few
and costly to encode, so the segment consumer hands them to the encoder stage in micro-batches
(`streams/segment_consumer.py`). faust's worker hosts both as services (signals, start and stop
order, the monitor task) and reads or writes no Kafka itself; either failing stops the worker with
a non-zero status. The segmenter can run in a process of its own
(`streams/segmenter_process.py`, `MSLI_SEGMENTER_PROCESS`), so the two use two cores.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Awaitable, Callable
from typing import Any

import faust
import torch
from faust.app import BootStrategy
from mode import Service

from encoders import SegmentBatchEncoder
from store import RocksDBVectorStore, ensure_promoted
from streams.collector import tune_collector
from streams.config import MsliSettings, torch_threads
from streams.encoder_fit import check_encoder_fits
from streams.encoder_process import EncoderProcess, EncoderProcessError
from streams.encoder_stage import Encoder, EncoderStage, StageConfig
from streams.errors import DeliveryError
from streams.log_end import end_probe, log_end_offsets
from streams.metrics import WorkerMetrics
from streams.model_upgrade import backfill_new_version
from streams.operations import WorkerOperations
from streams.pipelined_encoder import PipelinedEncoder
from streams.publisher import KafkaPublisher, producer_config
from streams.segment_consumer import SegmentConsumer
from streams.segment_reader import read_partition_range
from streams.segmenter import Segmenter
from streams.segmenter_process import SegmenterProcess
from streams.topics import ensure_topics

__all__ = ["WorkerRuntime", "load_encoder", "run_worker", "torch_threads"]

log = logging.getLogger(__name__)


def load_encoder(settings: MsliSettings) -> SegmentBatchEncoder:
    """The configured checkpoint, or the reproducible untrained default."""
    if settings.encoder_checkpoint is not None:
        return SegmentBatchEncoder.load(settings.encoder_checkpoint, device=settings.device)
    return SegmentBatchEncoder.untrained(seed=0, device=settings.device)


class WorkerRuntime:
    """Everything one worker process holds, built before faust starts so errors surface early."""

    def __init__(self, settings: MsliSettings, encoder: SegmentBatchEncoder | None = None) -> None:
        self.settings = settings
        client = settings.kafka_client_config()
        ensure_topics(settings)
        torch.set_num_threads(torch_threads(settings))
        self.encoder = encoder or load_encoder(settings)
        # What is opened or started here is released again if a later step fails: a worker that
        # does not start leaves no store lock held and no encoder process running behind it.
        with contextlib.ExitStack() as release_on_failure:
            self._build(settings, client, release_on_failure)
            release_on_failure.pop_all()

    def _build(self, settings: MsliSettings, client: dict[str, Any], release: contextlib.ExitStack) -> None:
        self.store = RocksDBVectorStore(settings.state_dir / "store", vector_dtype=settings.vector_dtype)
        release.callback(self.store.close)
        for warning in check_encoder_fits(self.encoder, settings, self.store):
            log.warning("%s", warning)
        # A new store serves the first model it gets; later checkpoints wait for `msli store promote`.
        ensure_promoted(self.store, self.encoder.model_version)
        self.owned_segment_partitions: set[int] = set()  # closed-segments partitions caught up here
        self.metrics = WorkerMetrics(self)
        self.encoder_process = (
            EncoderProcess(self.encoder, torch_threads(settings))
            if settings.encoder_process and self.encoder.device.type == "cpu"
            else None
        )
        if self.encoder_process is not None:
            release.callback(self.encoder_process.close)
        self.stage = EncoderStage(
            self.store,
            self.metrics.timed(self._stage_encoder()),
            KafkaPublisher(producer_config(client)),
            StageConfig(
                segments_topic=settings.segments_topic,
                representations_topic=settings.representations_topic,
                top_k=settings.top_k_segments,
                half_life_ms=settings.recency_half_life_seconds * 1000,
                max_events=settings.max_events_per_segment,
                max_segments=settings.max_segments_per_user_window,
                dead_letter_topic=settings.dead_letter_topic,
            ),
            restorer=lambda p, start, end: read_partition_range(
                client, settings.segments_topic, p, start, end
            ),
        )
        self.segmenter: Segmenter | SegmenterProcess = (
            SegmenterProcess(settings) if settings.segmenter_process else Segmenter(settings)
        )
        self.segment_consumer = SegmentConsumer(settings, self.stage)
        self.error: BaseException | None = None
        self.request_stop: Callable[[], None] = lambda: None  # set by run_worker; call on the loop thread
        self._log_ends = end_probe(settings, f"{settings.group_id}-lag", **{"enable.auto.commit": False})

    def fail(self, exc: BaseException) -> None:
        """Remember the first fatal error; the CLI turns it into one line and a non-zero exit."""
        if self.error is None:
            self.error = exc
            log.error("stopping: %s", exc)

    def caught_up(self) -> bool:
        """True when every event has been read, no segment is open, and every closed segment is
        reflected in the store. (Single-worker view: the partitions this process owns.)"""
        seg = self.segmenter
        if not seg.assigned.is_set() or seg.describe()["open_windows"]:
            return False
        # True log ends, not high watermarks: the local broker reports those short of the end.
        for partition, end in log_end_offsets(self._log_ends, self.settings.events_topic).items():
            if partition in seg.closers and seg.stats.positions.get(partition, 0) < end and end > 0:
                return False
        return self.segments_applied()

    def segments_applied(self) -> bool:
        """Every record on the closed-segments topic, to its true end, is reflected in the store."""
        topic, version = self.settings.segments_topic, self.encoder.model_version
        ends = log_end_offsets(self._log_ends, topic)
        return all(
            end == 0 or self.store.applied_offset(version, topic, p) >= end - 1 for p, end in ends.items()
        )

    def close(self) -> None:
        """Release each part even if another fails (a full disk fails the store's close as well);
        a failure here becomes the worker's error unless it already has one."""
        parts = (
            self.segment_consumer.close,  # waits for a micro-batch in hand
            self._log_ends.close,
            self._drain_outbox,
            self._close_encoder_process,
            self.stage.publisher.close,
            self.store.close,
        )
        for release in parts:
            try:
                release()
            except Exception as exc:
                self.fail(exc)

    def _stage_encoder(self) -> Encoder:
        """On a CPU the encoder process; on a GPU the encoder behind a pipeline, so the GPU runs a
        micro-batch while the stage merges the next and stores the one before; else the encoder.
        (On a CPU a pipeline in this process would overlap nothing and store each batch later.)"""
        if self.encoder_process is not None:
            return self.encoder_process
        if self.encoder.device.type != "cpu":
            return PipelinedEncoder(self.encoder)
        return self.encoder

    def _close_encoder_process(self) -> None:
        if self.encoder_process is not None:
            self.encoder_process.close()

    def _drain_outbox(self) -> None:
        """Best effort: what Kafka has not acknowledged stays in the outbox for the next start."""
        try:
            self.stage.drain(timeout=10)
        except DeliveryError as exc:
            log.warning("stopping with representations unacknowledged (the next start sends them): %s", exc)


def run_in_thread(runtime: WorkerRuntime, target: Callable[[], None], name: str) -> threading.Thread:
    """Start `target` in a daemon thread; if it raises, the worker stops with that error."""
    loop = asyncio.get_running_loop()

    def run() -> None:
        try:
            target()
        except BaseException as exc:
            runtime.fail(exc)
            loop.call_soon_threadsafe(runtime.request_stop)

    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()
    return thread


class SegmenterService(Service):
    """Runs the segmenter for the lifetime of the worker: its process, or its blocking consumer loop
    in a thread. Its failure, or its process ending, stops the worker."""

    def __init__(self, runtime: WorkerRuntime, **kwargs: Any) -> None:
        self.runtime = runtime
        self._thread: threading.Thread | None = None
        super().__init__(**kwargs)

    async def on_start(self) -> None:
        loop = asyncio.get_running_loop()
        segmenter = self.runtime.segmenter
        if isinstance(segmenter, SegmenterProcess):

            def on_exit(error: BaseException | None) -> None:
                if error is not None:
                    self.runtime.fail(error)
                if (error is not None or not segmenter.stopping) and not loop.is_closed():
                    loop.call_soon_threadsafe(self.runtime.request_stop)

            try:
                segmenter.start(on_exit)
            except Exception as exc:  # failing here would leave faust half started
                self.runtime.fail(exc)
                loop.call_soon(self.runtime.request_stop)
            return
        self._thread = run_in_thread(self.runtime, segmenter.run, "msli-segmenter")

    async def on_stop(self) -> None:
        segmenter = self.runtime.segmenter
        segmenter.stop()
        if isinstance(segmenter, SegmenterProcess):
            await asyncio.get_running_loop().run_in_executor(None, segmenter.join)
        elif self._thread is not None:
            await asyncio.get_running_loop().run_in_executor(None, self._thread.join)


class SegmentConsumerService(Service):
    """Runs the closed-segments consumer, and with it the encoder stage, in a thread for the
    lifetime of the worker. Its failure, or its encoder process ending, stops the worker; stopping
    finishes the micro-batch in hand."""

    def __init__(self, runtime: WorkerRuntime, **kwargs: Any) -> None:
        self.runtime = runtime
        self._thread: threading.Thread | None = None
        super().__init__(**kwargs)

    async def on_start(self) -> None:
        loop = asyncio.get_running_loop()
        process = self.runtime.encoder_process
        if process is not None:

            def on_exit(error: EncoderProcessError) -> None:
                self.runtime.fail(error)
                if not loop.is_closed():
                    loop.call_soon_threadsafe(self.runtime.request_stop)

            process.on_exit = on_exit
        self._thread = run_in_thread(self.runtime, self.runtime.segment_consumer.run, "msli-encoder")

    async def on_stop(self) -> None:
        self.runtime.segment_consumer.stop()
        if self._thread is not None:
            await asyncio.get_running_loop().run_in_executor(None, self._thread.join)


class _HostOnly(BootStrategy):
    """faust starts no Kafka client, table or web server of its own: the services do the I/O."""

    enable_kafka = False
    enable_web = False


class _HostApp(faust.App):
    BootStrategy = _HostOnly


def build_app(settings: MsliSettings) -> faust.App:
    """The faust app that hosts the worker's services (and the monitor task, if any)."""
    return _HostApp(
        f"{settings.group_id}-encoder",
        datadir=str(settings.state_dir / "faust"),
        store="memory://",
        web_enabled=False,
    )


def run_worker(runtime: WorkerRuntime, monitor: Callable[[faust.App], Awaitable[None]] | None = None) -> None:
    """Run until SIGINT/SIGTERM, a fatal error, or `monitor` returning; then release everything.

    Raises the fatal error, if any, after a clean shutdown.
    """
    runtime.stage.publish_outbox()
    backfill_new_version(runtime.stage, runtime.settings.segments_topic)
    operations = WorkerOperations(runtime.settings, runtime.metrics)
    operations.start()
    runtime.segment_consumer.on_assigned = operations.on_segments_assigned
    app = build_app(runtime.settings)
    worker = faust.Worker(
        app,
        SegmenterService(runtime),
        SegmentConsumerService(runtime),
        loglevel="WARN",
        quiet=True,
        override_logging=False,
        redirect_stdouts=False,
    )
    worker.spinner = None  # its cursor escapes would end up in logs and pipes

    stopping: list[asyncio.Future] = []  # keeps the stop task referenced until it ran

    def request_stop() -> None:
        if not stopping:
            stopping.append(asyncio.ensure_future(worker.stop()))

    runtime.request_stop = request_stop
    if monitor is not None:

        @app.task
        async def _monitor() -> None:
            await monitor(app)
            runtime.request_stop()

    tune_collector()  # after start-up, before the first record
    try:
        worker.execute_from_commandline()
    except SystemExit:
        pass
    finally:
        operations.stop()
        runtime.close()
    if runtime.error is not None:
        raise runtime.error
