"""Prometheus metrics of the worker, read from the counters it already keeps.

A custom collector reads `SegmenterStats`, the stage's `StageReport` totals, the dead-letter
counts, the closers' watermarks and the store's size at scrape time, so the per-event loop pays
nothing for metrics. Only the encode batch size and latency are observed as they happen, once per
encoder call. Consumer lag asks the broker for the partitions' ends, at scrape time only.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
from prometheus_client import CollectorRegistry, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from encoders import ContextState, SegmentInput
from streams.log_end import end_probe, log_end_offsets
from streams.windowing import NO_WATERMARK

if TYPE_CHECKING:
    from streams.app import WorkerRuntime
    from streams.encoder_stage import Encoder
    from streams.representation_batch import BatchOutcome, RepresentationJob
    from streams.segmenter_process import PartitionView
    from streams.windowing import SegmentCloser

__all__ = ["MetricsServer", "TimedEncoder", "WorkerMetrics"]

log = logging.getLogger(__name__)

T = TypeVar("T")


class TimedEncoder:
    """The stage's encoder, observing each call's batch size and latency."""

    def __init__(self, encoder: Encoder, size: Histogram, seconds: Histogram) -> None:
        self._encoder = encoder
        self._size = size
        self._seconds = seconds

    @property
    def model_version(self) -> str:
        return self._encoder.model_version

    def start_encoding(self, segments: Sequence[SegmentInput]) -> Callable[[], np.ndarray]:
        """Observes the time from the hand-off to the vectors (in an encoder process, the stage
        works meanwhile)."""
        return self._timed(len(segments), lambda: self._encoder.start_encoding(segments))

    def start_batch(
        self, segments: Sequence[SegmentInput], job: RepresentationJob
    ) -> Callable[[], BatchOutcome]:
        """start_encoding() of an encoder that builds representations too (`builds_representations`):
        the time observed includes building them."""
        start_batch = self._encoder.start_batch  # type: ignore[attr-defined]
        return self._timed(len(segments), lambda: start_batch(segments, job))

    def _timed(self, size: int, start: Callable[[], Callable[[], T]]) -> Callable[[], T]:
        started = time.perf_counter()
        result = start()

        def finished() -> T:
            found = result()
            self._seconds.observe(time.perf_counter() - started)
            self._size.observe(size)
            return found

        return finished

    def contextualize(self, states: Sequence[ContextState], k: int) -> list[np.ndarray]:
        return self._encoder.contextualize(states, k)

    def __getattr__(self, name: str) -> Any:  # dim, device, item_vectors, ... of the real encoder
        return getattr(self._encoder, name)


class WorkerMetrics(Collector):
    """The worker's registry: the collector below plus the two encode histograms."""

    def __init__(self, runtime: WorkerRuntime) -> None:
        self.runtime = runtime
        self.registry = CollectorRegistry()
        self.encode_batch_size = Histogram(
            "msli_encode_batch_size",
            "Segments per encoder call.",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024),
            registry=self.registry,
        )
        self.encode_seconds = Histogram(
            "msli_encode_seconds",
            "Wall time of one encoder call.",
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=self.registry,
        )
        self.registry.register(self)
        self._probe = end_probe(runtime.settings, f"{runtime.settings.group_id}-metrics")
        self._probe_lock = threading.Lock()

    def close(self) -> None:
        self._probe.close()

    def timed(self, encoder: Encoder) -> TimedEncoder:
        return TimedEncoder(encoder, self.encode_batch_size, self.encode_seconds)

    def collect(self) -> Iterator[Any]:
        runtime = self.runtime
        seg, totals = runtime.segmenter, runtime.stage.totals
        yield _counter("msli_events", "Behaviour events read (valid ones).", seg.stats.events)
        closed = CounterMetricFamily("msli_segments_closed", "Segments closed, by reason.", labels=["reason"])
        for reason, n in sorted(seg.stats.closed.items()):
            closed.add_metric([reason], n)
        yield closed
        yield _counter("msli_segments_encoded", "Segment vectors computed.", totals.encoded)
        yield _counter(
            "msli_representations_published",
            "User representations published to the output topic.",
            totals.published,
        )
        dead = CounterMetricFamily(
            "msli_dead_letters", "Records sent to the dead-letter topic, by reason.", labels=["reason"]
        )
        counts = seg.dead_letters.counts + runtime.stage.dead_letters.counts  # events and closed segments
        for reason, n in sorted(counts.items()):
            dead.add_metric([reason], n)
        yield dead
        yield _counter(
            "msli_kafka_stalls",
            "Checkpoints Kafka took longer than the session timeout to acknowledge.",
            seg.stats.stalls,
        )
        yield _counter(
            "msli_kafka_stalled_seconds", "Time spent in those checkpoints.", seg.stats.stalled_seconds
        )
        # Copied: the segmenter thread may change the dict (a segmenter process's view is replaced whole).
        closers: list[tuple[int, SegmentCloser | PartitionView]] = list(seg.closers.items())
        delay = GaugeMetricFamily(
            "msli_watermark_delay_seconds",
            "Wall clock minus the partition's watermark (event time).",
            labels=["partition"],
        )
        now_ms = time.time() * 1000
        for partition, closer in closers:
            if closer.watermark != NO_WATERMARK:
                delay.add_metric([str(partition)], max(0.0, (now_ms - closer.watermark) / 1000))
        yield delay
        yield GaugeMetricFamily(
            "msli_open_segments", "Segments still open.", value=sum(c.open_segments for _, c in closers)
        )
        yield self._lag({p: c.next_offset for p, c in closers})
        yield GaugeMetricFamily("msli_store_size_bytes", "RocksDB size.", value=runtime.store.size_bytes())

    def _lag(self, positions: dict[int, int]) -> GaugeMetricFamily:
        runtime, settings = self.runtime, self.runtime.settings
        lag = GaugeMetricFamily(
            "msli_consumer_lag",
            "Records not yet processed, per partition this worker owns.",
            labels=["topic", "partition"],
        )
        try:
            with self._probe_lock:  # scrapes may overlap; the probe consumer is not shared
                events_high = log_end_offsets(self._probe, settings.events_topic, positions, timeout=5)
                segments_high = log_end_offsets(
                    self._probe, settings.segments_topic, runtime.owned_segment_partitions, timeout=5
                )
        except Exception as exc:  # a scrape must answer even when the broker does not
            log.warning("consumer lag unavailable: %s", exc)
            return lag
        for partition, position in sorted(positions.items()):
            high = events_high.get(partition, 0)
            lag.add_metric([settings.events_topic, str(partition)], max(0, high - max(position, 0)))
        version = runtime.encoder.model_version
        for partition in sorted(runtime.owned_segment_partitions):
            applied = runtime.store.applied_offset(version, settings.segments_topic, partition)
            high = segments_high.get(partition, 0)
            lag.add_metric([settings.segments_topic, str(partition)], max(0, high - 1 - applied))
        return lag


def _counter(name: str, doc: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, doc, value=value)


class MetricsServer:
    """/metrics on `port` (0 picks a free one) in a thread of its own."""

    def __init__(self, registry: CollectorRegistry, port: int, host: str = "0.0.0.0") -> None:
        self._server, self._thread = start_http_server(port, addr=host, registry=registry)
        self.port: int = self._server.server_port
        log.info("metrics on http://%s:%d/metrics", host, self.port)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)
