"""`msli demo`: a broker, a data set, the worker until caught up, and what it made of one user."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from encoders import maxsim_scores
from encoders.commands import train_checkpoint
from encoders.training import TrainingConfig
from store import RocksDBVectorStore
from streams.app import WorkerRuntime, load_encoder, run_worker
from streams.broker import LocalBroker
from streams.config import MsliSettings
from streams.producer import EventProducer
from streams.progress import Progress
from streams.query import read_representation
from streams.readers import ItemCatalogue, item_file_for, read_events, read_item_catalogue, sort_by_event_time
from streams.synthetic import generate
from streams.windowing import SegmentationConfig

__all__ = ["DemoOptions", "run_demo"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DemoOptions:
    synthetic_events: int = 100_000  # used when MovieLens is not in settings.data_dir
    user_id: str | None = None  # whose recommendations to print; default: the most active user
    keep_state: bool = False  # keep an earlier demo's store instead of starting empty
    # a trained encoder; default: MSLI_ENCODER_CHECKPOINT, else a quick one trained first
    checkpoint: Path | None = None


@dataclass
class _DataSet:
    name: str
    events: list[dict[str, Any]]
    catalogue: ItemCatalogue


def run_demo(settings: MsliSettings, options: DemoOptions) -> None:
    data = _load_data(settings, options)
    print(
        f"data: {data.name}: {len(data.events):,} events, "
        f"{len({e['user_id'] for e in data.events}):,} users, {len(data.catalogue.titles):,} items"
    )
    checkpoint = options.checkpoint or settings.encoder_checkpoint or _train_quick_model(settings, data)
    settings = settings.model_copy(update={"encoder_checkpoint": checkpoint})
    with _broker(settings) as bootstrap:
        settings = settings.model_copy(update={"bootstrap_servers": bootstrap})
        if not options.keep_state:
            shutil.rmtree(settings.state_dir / "store", ignore_errors=True)
        encoder = load_encoder(settings)
        runtime = WorkerRuntime(settings, encoder=encoder)
        _produce(settings, data.events)
        elapsed = _run_until_caught_up(runtime, len(data.events))
        _summary(runtime, elapsed)
    _recommendations(settings, data, encoder, options.user_id)
    msli = Path(sys.executable).with_name("msli")
    print(f"\nquery any user:  MSLI_STATE_DIR={settings.state_dir} {msli} query USER_ID [--json]")


def _train_quick_model(settings: MsliSettings, data: _DataSet) -> Path:
    """Train a small model on the demo's data with the worker's closing rules (about a minute on 2 cores)."""
    out = settings.state_dir / "model"
    print(f"training a quick model on {data.name} (pass --checkpoint to use a trained one)")
    train_checkpoint(
        data.events,
        data.name,
        out,
        SegmentationConfig.from_settings(settings),
        settings.top_k_segments,
        settings.recency_half_life_seconds * 1000,
        TrainingConfig.quick(device=settings.device),
        echo=print,
    )
    return out


def _load_data(settings: MsliSettings, options: DemoOptions) -> _DataSet:
    inter = settings.data_dir / "ml-100k.inter"
    if inter.is_file():
        events = sort_by_event_time(read_events(inter))
        item_file = item_file_for(inter)
        catalogue = read_item_catalogue(item_file) if item_file else ItemCatalogue({}, {})
        return _DataSet(f"MovieLens 100K ({inter})", events, catalogue)
    print(f"MovieLens not found in {settings.data_dir}: using the synthetic generator")
    synthetic = generate(n_events=options.synthetic_events)
    return _DataSet("synthetic", list(synthetic), synthetic.catalogue())


@contextlib.contextmanager
def _broker(settings: MsliSettings) -> Iterator[str]:
    if settings.bootstrap_servers:
        print(f"broker: {settings.bootstrap_servers} (configured)")
        yield settings.bootstrap_servers
        return
    with LocalBroker() as broker:
        print(f"broker: started a local Tansu broker at {broker.bootstrap_servers} (stopped at the end)")
        yield broker.bootstrap_servers
    print("broker: stopped")


def _produce(settings: MsliSettings, events: list[dict[str, Any]]) -> None:
    with (
        EventProducer(settings.kafka_client_config(), topic=settings.events_topic) as producer,
        Progress("producing", len(events)) as progress,
    ):
        for start in range(0, len(events), 10_000):
            producer.send_many(events[start : start + 10_000])
            progress.update_to(min(len(events), start + 10_000))
    print(f"produced {len(events):,} events to {settings.events_topic} in event-time order")


def _run_until_caught_up(runtime: WorkerRuntime, n_events: int) -> dict[str, float]:
    started = time.monotonic()
    timings: dict[str, float] = {}
    progress = Progress("worker", n_events)

    async def monitor(_app: Any) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(0.5)
            stats = runtime.segmenter.stats
            read = stats.records_read
            if read >= n_events and "read" not in timings:
                timings["read"] = time.monotonic() - started
            caught_up = read >= n_events and await loop.run_in_executor(None, runtime.caught_up)
            totals = runtime.stage.totals  # after caught_up, so the last line shows the final counts
            progress.update_to(
                read, closed=stats.segments_closed, encoded=totals.encoded, published=totals.published
            )
            if caught_up:
                timings["caught_up"] = time.monotonic() - started
                return

    try:
        run_worker(runtime, monitor)
    finally:
        progress.close()
    return timings


def _summary(runtime: WorkerRuntime, timings: dict[str, float]) -> None:
    stats, totals = runtime.segmenter.stats, runtime.stage.totals
    reasons = ", ".join(f"{n:,} {r}" for r, n in sorted(stats.closed.items()))
    total_s = timings.get("caught_up", float("nan"))
    print("\nsummary")
    extra = f"+{stats.dead_letters:,} dead-lettered, {stats.duplicates:,} duplicates"
    print(f"  events read            {stats.events:,} ({extra})")
    print(f"  segments closed        {stats.segments_closed:,} ({reasons})")
    print(f"  segments encoded       {totals.encoded:,} (model {runtime.encoder.model_version})")
    with RocksDBVectorStore(runtime.settings.state_dir / "store", read_only=True) as store:
        users = sum(1 for _ in store.representation_users(runtime.encoder.model_version))
    print(f"  representations        {totals.published:,} published, {users:,} users in the store")
    print(
        f"  time                   {timings.get('read', float('nan')):.1f} s to read every event, "
        f"{total_s:.1f} s until every representation was stored (includes the group join "
        f"and a {runtime.settings.partition_idle_seconds:.0f} s quiet-partition wait)"
    )
    print(f"  throughput             {stats.events / total_s:,.0f} events/s end to end")


def _recommendations(settings: MsliSettings, data: _DataSet, encoder: Any, user_id: str | None) -> None:
    per_user = Counter(e["user_id"] for e in data.events)
    user = user_id or per_user.most_common(1)[0][0]
    with RocksDBVectorStore(settings.state_dir / "store", read_only=True) as store:
        rep = read_representation(store, user, encoder.model_version)
    vectors = np.stack([np.frombuffer(s["vector"], dtype="<f4") for s in rep["segments"]])
    weights = np.array([s["weight"] for s in rep["segments"]], dtype=np.float32)
    seen = {e["item_id"] for e in data.events if e["user_id"] == user}
    items = sorted(set(data.catalogue.titles) or {e["item_id"] for e in data.events})
    candidates = encoder.item_vectors(items)
    bias = encoder.candidate_biases(items, rep.get("seen_item_ids", ()))
    scores = maxsim_scores(vectors, weights, candidates, item_bias=bias)
    order = [i for i in np.argsort(-scores, kind="stable") if items[i] not in seen][:10]
    latest = [e for e in data.events if e["user_id"] == user][-10:]
    print(f"\nuser {user}: {per_user[user]} events, {len(rep['segments'])} segments in the representation")
    left = [f"{_what(e)}  {data.catalogue.title(e['item_id'])}" for e in latest]
    right = [f"{rank:>2}. {data.catalogue.title(items[i])}" for rank, i in enumerate(order, start=1)]
    print(f"  {'latest events':<48}  top 10 unseen by late interaction (recency-weighted MaxSim)")
    for n in range(max(len(left), len(right))):
        a = left[n] if n < len(left) else ""
        b = right[n] if n < len(right) else ""
        print(f"  {_clip(a, 48):<48}  {_clip(b, 60)}")


def _what(event: dict[str, Any]) -> str:
    """A rating as "4/5", any other action by name."""
    if event["action"] == "rate" and event.get("weight") is not None:
        return f"{event['weight']:g}/5"
    return event["action"]


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"
