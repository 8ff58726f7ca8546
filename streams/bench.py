"""`msli bench`: the side-by-side performance table, measured in one run on one broker.

One synthetic load (Zipf items, users with sessions and several interests, a share of
out-of-order events) is produced once; the broker's raw read limit, a naive faust app, the
segmenter alone and the whole worker then read that same topic, so each row is compared with a
reference measured minutes apart on the same machine, not with a number from elsewhere. The
encoder, scoring and store rows need no broker and run last.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from streams.bench_cpu import CpuMeter
from streams.bench_kafka import (
    head,
    measure_broker_read,
    open_load_producer,
    produce_events,
    segmenter_child,
    shift_event_times,
    start_child,
)
from streams.bench_report import BenchReport, Row, Target, machine_facts
from streams.broker import LocalBroker
from streams.config import MsliSettings, torch_threads  # not from streams.app: encoder rows run without faust
from streams.producer import EventProducer
from streams.synthetic import SyntheticConfig, generate
from streams.topics import ensure_topics

__all__ = ["ROW_GROUPS", "BenchOptions", "run_bench"]

ROW_GROUPS = ("broker", "faust", "segmenter", "worker", "encoder", "store")
HOUR_MS = 3_600_000


@dataclass(frozen=True)
class BenchOptions:
    quick: bool = False  # CI-sized: fewer events, shorter phases, fewer rounds
    events: int | None = None  # default 1,000,000 (quick: 40,000)
    users: int | None = None  # default 100,000 (quick: 4,000)
    offered_rate: float = 10_000.0  # events/s offered during the freshness phase
    groups: tuple[str, ...] = ROW_GROUPS  # which row groups to run
    seed: int = 0
    worker_device: str = "cpu"  # the worker rows' encoder: cpu (the issue's targets) or cuda

    @property
    def n_events(self) -> int:
        return self.events or (40_000 if self.quick else 1_000_000)

    @property
    def n_users(self) -> int:
        return self.users or max(1, self.n_events // 10)

    @property
    def faust_events(self) -> int:  # faust is slow: its rate is measured on a prefix of the topic
        return min(self.n_events, 2_000 if self.quick else 20_000)

    @property
    def freshness_seconds(self) -> float:
        return 5.0 if self.quick else 30.0


def run_bench(settings: MsliSettings, options: BenchOptions) -> BenchReport:
    """Measure the chosen row groups and return the report (ratios and targets filled in)."""
    machine = machine_facts()
    run = uuid.uuid4().hex[:6]
    report = BenchReport(
        title=(
            f"msli bench{' --quick' if options.quick else ''}: {options.n_events:,} synthetic events, "
            f"{options.n_users:,} users, {settings.topic_partitions} partitions"
        ),
        machine=machine,
        options={**asdict(options), "command": " ".join(["msli", *sys.argv[1:]])},
    )
    load = generate(SyntheticConfig(n_users=options.n_users, n_events=options.n_events, seed=options.seed))
    needs_broker = {"broker", "faust", "segmenter", "worker"} & set(options.groups)
    with tempfile.TemporaryDirectory(prefix="msli-bench-") as tmp, _broker(settings, needs_broker) as broker:
        machine["broker"], bootstrap, broker_pid = broker
        if needs_broker:
            settings = _bench_settings(settings, run, Path(tmp), bootstrap, options.worker_device)
            ensure_topics(settings)
            # Event times end two hours before now: the worker's quiet-partition clock then
            # closes every window of the load, and the freshness load that follows starts after it.
            span = int(load.event_time_ms.max() - load.event_time_ms.min())
            load = shift_event_times(load, int(time.time() * 1000) - span - 2 * HOUR_MS)
            with open_load_producer(settings) as producer:
                produced = produce_events(producer, load)
                report.notes.append(
                    f"load produced at {produced['events_per_s']:,.0f} events/s by msli's EventProducer"
                )
                _kafka_rows(report, settings, options, Path(tmp), broker_pid, producer)
        _local_rows(report, settings, options, load)
    machine["load_average_end"] = list(os.getloadavg())
    report.targets.extend(_targets(options))
    report.finish()
    return report


# --- rows ------------------------------------------------------------------------------------------
def _kafka_rows(
    report: BenchReport,
    settings: MsliSettings,
    options: BenchOptions,
    tmp: Path,
    broker_pid: int | None,
    producer: EventProducer,
) -> None:
    n = options.n_events
    if "broker" in options.groups:
        times = [measure_broker_read(settings, settings.events_topic, n) for _ in range(3)]
        best = statistics.median(times)
        report.add(
            Row(
                "broker",
                "broker read limit",
                n / best,
                "events/s",
                f"confluent-kafka consume({settings.consume_batch_size}), nothing else; median of 3 reads",
                reference="broker",
                extra={"seconds": times},
            )
        )
    if "segmenter" in options.groups:
        seg_settings = settings.model_copy(
            update={
                "group_id": f"{settings.group_id}-segmenter",
                "segments_topic": f"{settings.segments_topic}-segmenter",
            }
        )
        ensure_topics(seg_settings)
        with start_child("segmenter", segmenter_child, seg_settings.model_dump(), n) as child:
            result = child.result(timeout=120 + n / 2_000)
        memory = result["memory"]
        report.add(
            Row(
                "segmenter",
                "segmenter",
                result["events"] / result["seconds"],
                "events/s",
                f"decode, window, close; {result['segments']:,} segments out and acknowledged",
                reference="broker",
                extra=result,
            ),
            Row(
                "memory-quarter",
                f"segmenter memory after {memory[0]['events']:,} events",
                memory[0]["rss_mib"],
                "MiB",
                f"resident; {memory[0]['open_windows']:,} windows open",
                reference="memory-quarter",
            ),
            Row(
                "memory-end",
                f"segmenter memory after {memory[-1]['events']:,} events",
                memory[-1]["rss_mib"],
                "MiB",
                f"resident; {memory[-1]['open_windows']:,} windows open, {options.n_users:,} users",
                reference="memory-quarter",
            ),
        )
    if "faust" in options.groups:
        from streams.bench_faust import naive_faust_child

        m = options.faust_events
        with start_child(
            "naive-faust",
            naive_faust_child,
            settings.bootstrap_servers,
            settings.events_topic,
            settings.topic_partitions,
            f"{settings.group_id}-naive-faust",
            str(tmp / "naive-faust"),
            m,
            20.0 if options.quick else 120.0,
        ) as child:
            result = child.result(timeout=240 + m / 500)
        report.add(
            Row(
                "naive-faust",
                "naive faust",
                result["events_per_s"],
                "events/s",
                f"agent + windowed table appending per event; first {result['events']:,} events "
                f"of the topic in {result['seconds']:.1f} s",
                reference="broker",
                extra=result,
            )
        )
    if "worker" in options.groups:
        _worker_rows(report, settings, options, broker_pid, producer)


def _worker_rows(
    report: BenchReport,
    settings: MsliSettings,
    options: BenchOptions,
    broker_pid: int | None,
    producer: EventProducer,
) -> None:
    from streams.bench_worker import worker_child

    n = options.n_events
    rate = options.offered_rate
    offered_events = int(rate * options.freshness_seconds)
    # The synthetic stream ends in a sparse tail: its last tenth of events spans about 200 hours of
    # event time (the last users' sessions), against 2.5-3.6 hours for each other tenth. Offered
    # at a steady rate, that tail runs event time 60-80 times faster, so every open window and idle
    # deadline passes within seconds and closings jump to the encoder's limit: not a steady load.
    # Generate a ninth more and offer the dense part.
    fresh_load = head(
        generate(
            SyntheticConfig(n_users=options.n_users, n_events=offered_events * 10 // 9, seed=options.seed + 1)
        ),
        offered_events,
    )
    with start_child("worker", worker_child, settings.model_dump(), n) as child:
        e2e = child.receive("caught-up", timeout=180 + n / 1_000)
        fresh_load = shift_event_times(fresh_load, int(time.time() * 1000) + 2 * HOUR_MS)
        cpu = CpuMeter(
            trees={"worker": child.process.pid},
            processes={"broker": broker_pid, "load producer": os.getpid()},
        )
        cpu.start()
        offered = produce_events(producer, fresh_load, rate=rate)
        offered["cores"] = cpu.stop()
        child.send("load-done", offered)
        result = child.result(timeout=1900)  # a worker that fell behind the offered load catches up first
    fresh = result["freshness"]
    report.add(
        Row(
            "end-to-end",
            f"end to end ({settings.device.upper()} encoder)",
            e2e["events"] / e2e["seconds"],
            "events/s",
            f"{e2e['segments_encoded']:,} segments encoded, {e2e['published']:,} representations; "
            f"includes a {settings.partition_idle_seconds:g} s quiet-partition wait; "
            f"timed to the last store write, confirmed {e2e['confirmed_after_s']:.1f} s later; "
            f"worker RSS {e2e['rss_mib']:,.0f} MiB "
            f"+ {e2e.get('children_rss_mib', 0):,.0f} MiB in its child processes"
            f"{_worker_cpu(e2e)}",
            reference="broker",
            extra=e2e,
        )
    )
    detail = (
        f"offered {offered['events_per_s']:,.0f} events/s for {offered['seconds']:.0f} s; "
        f"{fresh['samples']:,} segments"
    )
    for q in ("p50", "p99"):
        segmenter, stage = _seconds(fresh["segmenter"][q]), _seconds(fresh["stage"][q])
        hops = f"segmenter {segmenter} + stage {stage} ({q} of each hop)"
        report.add(
            Row(
                f"freshness-{q}",
                f"freshness {q}",
                fresh[q],
                "s",
                f"{detail}; {hops}"
                if q == "p50"
                else f"{detail}; max {_seconds(fresh['max'])}; {hops}{_cores(offered['cores'])}",
                reference="1 s target",
                reference_value=1.0,
                extra={**fresh, "offered": offered},
            )
        )


def _worker_cpu(e2e: dict[str, Any]) -> str:
    """The CPU the worker's processes used: a steadier figure than events/s to compare two
    versions by on a shared machine, where the wall time moves with the neighbours' load."""
    if e2e.get("cpu_us_per_event") is None:
        return ""
    return f"; worker CPU {e2e['worker_cores']:.2f} cores, {e2e['cpu_us_per_event']:.1f} us an event"


def _cores(cores: dict[str, float]) -> str:
    """Who had the machine's cores while the load was offered: a p99 that the stage's hop sets
    means little without it on a machine the broker and the load producer share."""
    if not cores:
        return ""
    used = ", ".join(f"{name} {value:.2f}" for name, value in cores.items())
    return f"; cores used: {used} of {os.cpu_count()}"


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} s"


def _local_rows(report: BenchReport, settings: MsliSettings, options: BenchOptions, load: Any) -> None:
    from streams.bench_encoder import closed_segments, encoder_rows, history_rows, scoring_rows, store_rows
    from streams.windowing import SegmentationConfig

    quick = options.quick
    if "encoder" in options.groups:
        rules = SegmentationConfig.from_settings(settings)
        segments = closed_segments(load, rules, limit=20_000 if quick else 200_000)
        sample = segments[: 2_048 if quick else 8_192]
        rounds = 2 if quick else 3
        threads = torch_threads(settings)
        report.add(
            *encoder_rows(
                sample,
                (1, 16, 64, 256, 1024),
                rounds,
                64 if quick else 512,
                threads,
                settings.encode_batch_size,
            )
        )
        report.add(*history_rows(sample[:1024], load, settings.encode_batch_size, rounds))
        report.add(*scoring_rows(load, repeats=200 if quick else 2_000))
    if "store" in options.groups:
        report.add(*store_rows(n_users=2_000 if quick else 20_000, n_reads=20_000 if quick else 200_000))


def _targets(options: BenchOptions) -> list[Target]:
    rate = f"{options.offered_rate:,.0f}"
    return [
        Target("segmenter >= 50% of the broker read limit", "segmenter", at_least=0.5),
        Target("end to end >= 25% of the broker read limit", "end-to-end", at_least=0.25),
        Target("end to end >= 10x naive faust", "end-to-end", at_least=10.0, reference="naive-faust"),
        Target(f"freshness p99 < 1 s at {rate} events/s offered", "freshness-p99", at_most=1.0, value=True),
        Target(
            "memory bounded by open segments: RSS after all events <= 1.5x RSS after a quarter",
            "memory-end",
            at_most=1.5,
        ),
        Target("encoder on CUDA: segments/s and speed-up over CPU", "encoder-cuda-b1024", at_least=1.0),
    ]


# --- setup -----------------------------------------------------------------------------------------
@contextlib.contextmanager
def _broker(settings: MsliSettings, needed: Any) -> Iterator[tuple[str, str | None, int | None]]:
    """(what the table says about the broker, its bootstrap servers, its pid if it runs here)."""
    if not needed:
        yield "no broker needed", None, None
    elif settings.bootstrap_servers:
        yield f"broker {settings.bootstrap_servers} (configured)", settings.bootstrap_servers, None
    else:
        with LocalBroker() as broker:
            yield "local Tansu broker (memory only)", broker.bootstrap_servers, broker.pid


def _bench_settings(
    settings: MsliSettings, run: str, tmp: Path, bootstrap: str | None, device: str
) -> MsliSettings:
    """Topics and groups of this run only; a short quiet-partition wait so a caught-up worker
    closes its last windows quickly; event times far ahead allowed for the compressed freshness
    load; the worker's encoder on `device`, never on whatever the configuration's "auto" finds."""
    prefix = f"msli-bench-{run}"
    return settings.model_copy(
        update={
            "bootstrap_servers": bootstrap,
            "events_topic": f"{prefix}-events",
            "segments_topic": f"{prefix}-segments",
            "representations_topic": f"{prefix}-representations",
            "dead_letter_topic": f"{prefix}-dead-letters",
            "checkpoints_topic": f"{prefix}-checkpoints",
            "group_id": prefix,
            "state_dir": tmp / "worker",
            "partition_idle_seconds": 1.0,
            "max_future_seconds": 30 * 86_400.0,
            "device": device,
        }
    )
