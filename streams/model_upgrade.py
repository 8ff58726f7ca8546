"""Model upgrades without downtime, on the worker's side.

A worker started with a new checkpoint writes that checkpoint's model version; readers keep
getting the promoted one. Before it takes live segments, the worker fills the new namespace with
every closed segment its store already reflects under other versions (re-encoded from the
closed-segments topic, never re-segmented). Promotions and drops arrive on the control topic,
because the store is locked by the worker; `ControlMirror` applies them to the store.
"""

from __future__ import annotations

import logging

from store import RocksDBVectorStore, drop_version, promote_version, promoted_version
from streams.control import PROMOTED
from streams.encoder_stage import EncoderStage, StageReport

__all__ = ["ControlMirror", "backfill_new_version", "backfill_targets"]

log = logging.getLogger(__name__)


def backfill_targets(store: RocksDBVectorStore, topic: str, model_version: str) -> dict[int, int]:
    """partition -> end offset (exclusive) that other versions reflect beyond `model_version`."""
    offsets = store.applied_offsets(topic)
    mine = offsets.get(model_version, {})
    targets: dict[int, int] = {}
    for version, partitions in offsets.items():
        if version == model_version:
            continue
        for partition, offset in partitions.items():
            if offset > mine.get(partition, -1):
                targets[partition] = max(targets.get(partition, 0), offset + 1)
    return targets


def backfill_new_version(stage: EncoderStage, topic: str) -> StageReport:
    """Bring the stage's model version up to what the store holds under any other version."""
    version = stage.encoder.model_version
    targets = backfill_targets(stage.store, topic, version)
    total = StageReport()
    if targets:
        log.info(
            "model %s is new to this store: re-encoding %s partitions %s", version, topic, sorted(targets)
        )
    for partition, end in sorted(targets.items()):
        total.add(stage.backfill(partition, end))
    if targets:
        log.info(
            "model %s backfilled: %d segments encoded from %d records", version, total.encoded, total.restored
        )
    return total


class ControlMirror:
    """Applies the control topic's promotion and drops to a worker's store (on the follower thread).

    A promotion of a version this store does not hold yet waits (it is retried every second) so a
    worker still backfilling never answers 404 for its users; the running version is never dropped.
    """

    def __init__(self, store: RocksDBVectorStore, running_version: str | None) -> None:
        self.store = store
        self.running_version = running_version

    def __call__(self, state: dict[str, str]) -> None:
        wanted = state.get(PROMOTED)
        if wanted and wanted != promoted_version(self.store) and wanted in self.store.model_versions():
            promote_version(self.store, wanted)
            log.info("promoted model %s (readers now get it)", wanted)
        current = promoted_version(self.store)
        for key in state:
            if not key.startswith("drop|"):
                continue
            version = key.split("|", 1)[1]
            if version in (current, self.running_version) or version not in self.store.model_versions():
                continue
            drop_version(self.store, version)
            log.info("dropped model %s from the store", version)
