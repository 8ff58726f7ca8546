"""What a worker runs beside the pipeline for its operators: /metrics, the control-topic follower
that applies promotions and drops to the store, and the advertisement of its API's partitions."""

from __future__ import annotations

import logging
from collections.abc import Iterable

from store import promoted_version
from streams.config import MsliSettings
from streams.control import PROMOTED, ControlFollower, publish_control
from streams.log_end import end_probe, log_end_offsets
from streams.metrics import MetricsServer, WorkerMetrics
from streams.model_upgrade import ControlMirror
from streams.routing import advertise_routes

__all__ = ["WorkerOperations"]

log = logging.getLogger(__name__)


class WorkerOperations:
    """Started after the runtime is built and stopped before it closes."""

    def __init__(self, settings: MsliSettings, metrics: WorkerMetrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.metrics_server: MetricsServer | None = None
        self.follower: ControlFollower | None = None
        self._end_probe = end_probe(settings, f"{settings.group_id}-end-probe")

    def start(self) -> None:
        runtime = self.metrics.runtime
        if self.settings.metrics_port is not None:
            self.metrics_server = MetricsServer(self.metrics.registry, self.settings.metrics_port)
        mirror = ControlMirror(runtime.store, runtime.encoder.model_version)
        self.follower = ControlFollower(self.settings, on_change=mirror).start()
        if PROMOTED not in self.follower.state:
            # The deployment's first worker tells replicas and other workers what readers get.
            current = promoted_version(runtime.store)
            if current is not None:
                publish_control(self.settings, {PROMOTED: current})

    def on_segments_assigned(self, partitions: Iterable[int]) -> None:
        """The group gave this worker closed-segments partitions (all it owns now). Runs on the
        encoder's thread, before any of their records is processed: first bring partitions new to
        this process up to date (a partition that moved here may get no new record for a long
        time), then route their users' queries here."""
        runtime = self.metrics.runtime
        owned = set(partitions)
        new = sorted(owned - runtime.owned_segment_partitions)
        if new:
            ends = log_end_offsets(self._end_probe, self.settings.segments_topic, new)
            for partition in new:
                runtime.stage.backfill(partition, ends[partition])
        runtime.owned_segment_partitions = owned
        advertise_routes(self.settings, owned)

    def stop(self) -> None:
        if self.follower is not None:
            self.follower.stop()
        if self.metrics_server is not None:
            self.metrics_server.close()
        self._end_probe.close()
        self.metrics.close()
