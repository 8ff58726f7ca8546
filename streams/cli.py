"""The `msli` command. Every failure a user can cause ends in one line and a non-zero status."""

from __future__ import annotations

import json
import logging
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from streams.config import MsliSettings, load_settings
from streams.errors import ConfigError, StreamsError
from streams.exit_guard import end_if_released
from streams.logs import setup_logging

__all__ = ["main"]

F = TypeVar("F", bound=Callable[..., Any])
EXIT_DEADLINE_SECONDS = 10.0  # after the worker released everything, for the interpreter to exit
# Errors of the other packages are as user-facing as ours; imported lazily in _user_errors().


def _user_errors() -> tuple[type[BaseException], ...]:
    from encoders import EncoderError
    from schemas import SchemaError
    from store import StoreError

    return (StreamsError, StoreError, EncoderError, SchemaError)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar="MSLI_CONFIG",
    help="TOML settings file (also MSLI_CONFIG); MSLI_* variables override it.",
)
@click.option(
    "--log-level",
    default="info",
    show_default=True,
    type=click.Choice(["debug", "info", "warning", "error"], case_sensitive=False),
)
@click.option(
    "--log-format",
    default="text",
    show_default=True,
    type=click.Choice(["text", "json"]),
    help="json: one JSON object per line, for log shippers.",
)
@click.pass_context
def cli(ctx: click.Context, config_file: Path | None, log_level: str, log_format: str) -> None:
    """msli: segment-level user representations, kept fresh from a Kafka stream."""
    ctx.obj = {"config_file": config_file, "log_level": log_level}


def _settings(ctx: click.Context, **overrides: Any) -> MsliSettings:
    return load_settings(ctx.obj["config_file"], **overrides)


@cli.command()
@click.option(
    "--synthetic-events",
    default=100_000,
    show_default=True,
    help="Events to generate when MovieLens is not in MSLI_DATA_DIR.",
)
@click.option("--user", "user_id", help="User whose recommendations to print (default: the most active).")
@click.option(
    "--checkpoint",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="A trained encoder (default: MSLI_ENCODER_CHECKPOINT, else a quick one is trained first).",
)
@click.pass_context
def demo(ctx: click.Context, synthetic_events: int, user_id: str | None, checkpoint: Path | None) -> None:
    """Start a local broker (unless one is configured), replay a data set, run the worker until it
    has caught up, and print a summary and one user's recommendations."""
    from streams.demo import DemoOptions, run_demo

    if ctx.obj["log_level"] == "info":  # progress bars say it all; keep warnings
        logging.getLogger().setLevel(logging.WARNING)
    settings = _settings(ctx)
    demo_defaults = {"partition_idle_seconds": 2.0, "state_dir": settings.state_dir / "demo"}
    settings = settings.model_copy(
        update={k: v for k, v in demo_defaults.items() if k not in settings.model_fields_set}
    )
    run_demo(settings, DemoOptions(synthetic_events=synthetic_events, user_id=user_id, checkpoint=checkpoint))


@cli.command()
@click.pass_context
def worker(ctx: click.Context) -> None:
    """Run the stream worker: segmenter, encoder stage, store and publisher. Start several with the
    same MSLI_GROUP_ID to split the partitions; stop with SIGINT or SIGTERM."""
    from streams.app import WorkerRuntime, run_worker
    from streams.exit_guard import exit_within

    settings = _settings(ctx)
    runtime = WorkerRuntime(settings)
    logging.getLogger(__name__).info(
        "worker for %s -> %s, model %s on %s, state in %s",
        settings.events_topic,
        settings.representations_topic,
        runtime.encoder.model_version,
        runtime.encoder.device,
        settings.state_dir,
    )
    try:
        run_worker(runtime)
    except KeyboardInterrupt:
        exit_within(EXIT_DEADLINE_SECONDS, 130)
        raise
    except BaseException:
        exit_within(EXIT_DEADLINE_SECONDS, 1)  # main() prints the error and exits 1
        raise
    exit_within(EXIT_DEADLINE_SECONDS, 0)


@cli.command()
@click.pass_context
def topics(ctx: click.Context) -> None:
    """Create the topics msli uses (with their retention and compaction) if they are missing."""
    from streams.topics import ensure_topics

    settings = _settings(ctx)
    created = ensure_topics(settings)
    click.echo(f"created {', '.join(created)}" if created else "every topic exists")


@cli.command()
@click.argument("file", required=False, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--synthetic", type=click.IntRange(min=1), help="Produce N generated events instead of a FILE.")
@click.option(
    "--format", "fmt", type=click.Choice(["inter", "jsonl", "csv"]), help="Default: from the extension."
)
@click.option(
    "--skip-bad", is_flag=True, help="Skip malformed rows (counted) instead of stopping at the first."
)
@click.option("--no-sort", is_flag=True, help="Keep file order instead of sorting by event time.")
@click.option(
    "--rate", type=click.FloatRange(min=0, min_open=True), help="At most this many events per second."
)
@click.option(
    "--speedup",
    type=click.FloatRange(min=0, min_open=True),
    help="Replay event times N times faster than real time (1 = as they happened).",
)
@click.pass_context
def produce(
    ctx: click.Context,
    file: Path | None,
    synthetic: int | None,
    fmt: str | None,
    skip_bad: bool,
    no_sort: bool,
    rate: float | None,
    speedup: float | None,
) -> None:
    """Produce behaviour events from a MovieLens .inter, JSONL or CSV FILE (or --synthetic N
    generated ones), keyed by user id.

    The whole file is checked before anything is sent, so a bad row costs nothing."""
    from streams.pacing import paced_events
    from streams.producer import EventProducer
    from streams.readers import EventFileReader, sort_by_event_time
    from streams.topics import ensure_topics

    settings = _settings(ctx)
    if file is not None and synthetic is None:
        reader = EventFileReader(file, fmt, on_error="skip" if skip_bad else "raise")
        events = list(reader)
        skipped = f", skipped {reader.rows_skipped} bad rows" if skip_bad else ""
    elif synthetic is not None and file is None:
        from streams.synthetic import generate

        events, skipped = list(generate(n_events=synthetic)), ""
    else:
        raise click.UsageError("give a FILE or --synthetic N")
    if not no_sort:
        events = sort_by_event_time(events)
    # A first produce would otherwise let the broker auto-create the topic with its own partition count.
    ensure_topics(settings)
    with EventProducer(settings.kafka_client_config(), topic=settings.events_topic) as producer:
        producer.send_many(paced_events(events, rate=rate, speedup=speedup) if rate or speedup else events)
    click.echo(f"produced {len(events):,} events to {settings.events_topic}{skipped}")


@cli.command()
@click.argument("user_id")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--model-version", help="Read this model version's namespace (default: the worker's).")
@click.pass_context
def query(ctx: click.Context, user_id: str, as_json: bool, model_version: str | None) -> None:
    """Print USER_ID's representation from the worker's store (safe while a worker runs)."""
    from store import RocksDBVectorStore
    from streams.query import format_representation, read_representation, representation_json

    settings = _settings(ctx)
    with RocksDBVectorStore(settings.state_dir / "store", read_only=True) as store:
        record = read_representation(store, user_id, model_version)
    click.echo(json.dumps(representation_json(record)) if as_json else format_representation(record))


@cli.command()
@click.option(
    "--from",
    "start",
    default="earliest",
    show_default=True,
    help="earliest, an ISO-8601 time or Unix ms (event time), or PARTITION:OFFSET,...",
)
@click.option(
    "--source",
    type=click.Choice(["segments", "events"]),
    default="segments",
    show_default=True,
    help="segments: re-encode closed segments; events: re-segment raw events too.",
)
@click.option(
    "--rate", type=click.FloatRange(min=0, min_open=True), help="At most this many records per second."
)
@click.option("--follow", is_flag=True, help="Keep going once caught up.")
@click.pass_context
def replay(ctx: click.Context, start: str, source: str, rate: float | None, follow: bool) -> None:
    """Rebuild the store at MSLI_STATE_DIR from history with the configured model, under a consumer
    group of its own; stops when caught up. No worker may be running on that store."""
    from streams.replay import ReplayOptions
    from streams.replay import replay as run_replay
    from streams.replay_positions import parse_start

    settings = _settings(ctx)
    options = ReplayOptions(source=source, start=parse_start(start), rate=rate, follow=follow)  # type: ignore[arg-type]
    summary = run_replay(settings, options)
    click.echo(
        f"replayed {summary.records:,} records in {summary.seconds:.1f} s: {summary.encoded:,} segments "
        f"encoded, {summary.published:,} representations published, model {summary.model_version}"
    )


@cli.command()
@click.option("--host", help="Interface to listen on (default: MSLI_SERVE_HOST).")
@click.option("--port", type=int, help="Port (default: MSLI_SERVE_PORT; 0 picks a free one).")
@click.pass_context
def serve(ctx: click.Context, host: str | None, port: int | None) -> None:
    """Answer read-only HTTP queries from the worker's store at MSLI_STATE_DIR (see `streams/serve.py`)."""
    from streams.serve_runtime import run_serve

    settings = _settings(ctx, serve_host=host, serve_port=port)
    run_serve(settings)


@cli.group()
def store() -> None:
    """Model versions in the worker's store, and local read replicas."""


@store.command("versions")
@click.pass_context
def store_versions(ctx: click.Context) -> None:
    """List the model versions in the store; * marks the promoted one (what readers get)."""
    from streams.store_admin import list_versions

    for line in list_versions(_settings(ctx)):
        click.echo(line)


@store.command("promote")
@click.argument("version")
@click.option("--force", is_flag=True, help="Promote even if the store holds no representation of VERSION.")
@click.pass_context
def store_promote(ctx: click.Context, version: str, force: bool) -> None:
    """Switch readers to model VERSION, atomically (running workers apply it from the control topic)."""
    from streams.store_admin import promote

    click.echo(promote(_settings(ctx), version, force=force))


@store.command("drop")
@click.argument("version")
@click.pass_context
def store_drop(ctx: click.Context, version: str) -> None:
    """Delete model VERSION's vectors and representations (never the promoted one)."""
    from streams.store_admin import drop

    click.echo(drop(_settings(ctx), version))


@store.command("sync")
@click.argument("replica_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--until-caught-up", is_flag=True, help="Stop once every partition is read (default: follow).")
@click.pass_context
def store_sync(ctx: click.Context, replica_dir: Path, until_caught_up: bool) -> None:
    """Keep a local RocksDB replica of the user-representations topic in REPLICA_DIR; read it with
    `store.open_replica(REPLICA_DIR).get(user_id)`."""
    import signal

    from streams.replica_sync import ReplicaSync

    sync = ReplicaSync(_settings(ctx), replica_dir)
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: sync.stop())
    sync.run(until_caught_up=until_caught_up)
    click.echo(f"replica {replica_dir}: {sync.records:,} representations applied")


@cli.command()
@click.option("--quick", is_flag=True, help="CI-sized run (about a minute): 40,000 events, short phases.")
@click.option(
    "--json",
    "json_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also write every figure here.",
)
@click.option(
    "--chart",
    "chart_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("msli-bench.png"),
    show_default=True,
    help="PNG chart of the main rows.",
)
@click.option("--events", type=click.IntRange(min=1_000), help="Events in the load (default 1,000,000).")
@click.option("--users", type=click.IntRange(min=1), help="Users in the load (default: events / 10).")
@click.option(
    "--rows",
    default="all",
    show_default=True,
    help="Comma-separated row groups: broker, faust, segmenter, worker, encoder, store.",
)
@click.option("--offered-rate", default=10_000.0, show_default=True, help="Events/s for the freshness row.")
@click.option(
    "--worker-device",
    type=click.Choice(["cpu", "cuda"]),
    default="cpu",
    show_default=True,
    help="Where the worker rows' encoder runs (the targets are for cpu).",
)
@click.pass_context
def bench(
    ctx: click.Context,
    quick: bool,
    json_path: Path | None,
    chart_path: Path,
    events: int | None,
    users: int | None,
    rows: str,
    offered_rate: float,
    worker_device: str,
) -> None:
    """Measure throughput, freshness, encoder, scoring and store figures side by side in one run, on
    a local broker unless one is configured; print a table, write a PNG chart (and JSON)."""
    from streams.bench import ROW_GROUPS, BenchOptions, run_bench

    groups = ROW_GROUPS if rows == "all" else tuple(g.strip() for g in rows.split(",") if g.strip())
    unknown = sorted(set(groups) - set(ROW_GROUPS))
    if unknown:
        raise ConfigError(f"--rows: unknown row group {unknown[0]!r}; known: {', '.join(ROW_GROUPS)}")
    if worker_device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise ConfigError("--worker-device cuda: torch sees no CUDA device on this machine")
    if ctx.obj["log_level"] == "info":  # the table says it all; keep warnings
        logging.getLogger().setLevel(logging.WARNING)
    options = BenchOptions(
        quick=quick,
        events=events,
        users=users,
        offered_rate=offered_rate,
        groups=groups,
        worker_device=worker_device,
    )
    # SIGTERM unwinds like Ctrl-C, so the local broker and the temporary state are cleaned up.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    report = run_bench(_settings(ctx), options)
    click.echo(report.table())
    report.write_chart(chart_path)
    click.echo(f"chart: {chart_path}")
    if json_path is not None:
        report.write_json(json_path)
        click.echo(f"json: {json_path}")


@cli.command()
@click.argument("events_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Checkpoint directory to write.",
)
@click.option("--quick", is_flag=True, help="A small model and few epochs (tests, demos).")
@click.option(
    "--epochs", type=click.IntRange(1), help="At most this many epochs (early stopping may end sooner)."
)
@click.option(
    "--patience",
    type=click.IntRange(1),
    help="Stop after this many epochs without a better validation NDCG@10 (default 12, 3 with --quick).",
)
@click.option(
    "--objective",
    type=click.Choice(["segments", "history"]),
    default="segments",
    show_default=True,
    help="segments: late interaction over closed segments; history: the full-history reference.",
)
@click.option("--aggregator", type=click.Choice(["maxsim", "attention", "fused"]), help="Default: maxsim.")
@click.option(
    "--dim", type=click.IntRange(8), help="Model width (a multiple of 8); default 64, 32 with --quick."
)
@click.option("--layers", type=click.IntRange(1), help="Transformer blocks.")
@click.option("--heads", type=click.IntRange(1), help="Attention heads.")
@click.option(
    "--history-events",
    "history_max_events",
    type=click.IntRange(8),
    help="--objective history: read this many latest events (rounded up to a multiple of 8; default 200).",
)
@click.option(
    "--context-layers",
    type=click.IntRange(0),
    help="Blocks that read a user's segment vectors together when a representation is built (default 2).",
)
@click.option(
    "--seen-item-score/--no-seen-item-score",
    default=None,
    help="Learn a score for the items a representation's own segments hold (default on).",
)
@click.option("--seed", type=int, help="Seed of weights, dropout and shuffling (default 0).")
@click.pass_context
def train(ctx: click.Context, events_file: Path, out_dir: Path, quick: bool, **options: Any) -> None:
    """Train the segment encoder on EVENTS_FILE (cut by the worker's closing rules) into a checkpoint.

    Each user's last event is held out for testing and the one before for early stopping."""
    from encoders.commands import train_checkpoint
    from encoders.training import TrainingConfig
    from streams.readers import read_events
    from streams.windowing import SegmentationConfig

    settings = _settings(ctx)
    renamed = {"layers": "n_layers", "heads": "n_heads"}
    changes = {renamed.get(k, k): v for k, v in options.items() if v is not None}
    config = (TrainingConfig.quick if quick else TrainingConfig)(device=settings.device, **changes)
    train_checkpoint(
        read_events(events_file),
        events_file.name,
        out_dir,
        SegmentationConfig.from_settings(settings),
        settings.top_k_segments,
        settings.recency_half_life_seconds * 1000,
        config,
    )


@cli.command()
@click.argument("events_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--checkpoint",
    required=True,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="A checkpoint written by `msli train`.",
)
@click.option(
    "--history-checkpoint",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="The full-history reference (`msli train --objective history`); trained here if not given.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the numbers as JSON instead of the table.")
@click.option(
    "--timing-seconds",
    default=0.2,
    show_default=True,
    type=click.FloatRange(min=0.001),
    help="Length of each of the five timed runs per scorer (shorter is quicker and noisier).",
)
@click.pass_context
def evaluate(
    ctx: click.Context,
    events_file: Path,
    checkpoint: Path,
    history_checkpoint: Path | None,
    as_json: bool,
    timing_seconds: float,
) -> None:
    """Print the quality table for CHECKPOINT on EVENTS_FILE: leave-one-out by time, all items
    ranked, HR@10 and NDCG@10, with the encoder and scoring cost of each method."""
    from encoders.commands import evaluate_checkpoint
    from streams.readers import read_events

    settings = _settings(ctx)
    report = evaluate_checkpoint(
        read_events(events_file),
        events_file.name,
        checkpoint,
        history_checkpoint,
        settings.vector_dtype,
        timing=timing_seconds,
    )
    if as_json:
        click.echo(json.dumps({"command": " ".join(sys.argv), **report.as_json()}, indent=2))
    else:
        click.echo(report.text())


@cli.command("export-items")
@click.argument("out", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--checkpoint",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Default: the worker's MSLI_ENCODER_CHECKPOINT.",
)
@click.pass_context
def export_items(ctx: click.Context, out: Path, checkpoint: Path | None) -> None:
    """Write the candidate item vectors rankers score against representations to OUT (.npz or
    .jsonl), stamped with the model version."""
    from encoders.commands import export_items as export

    checkpoint = checkpoint or _settings(ctx).encoder_checkpoint
    if checkpoint is None:
        raise click.UsageError("name a checkpoint: --checkpoint DIR or MSLI_ENCODER_CHECKPOINT")
    count, version = export(checkpoint, out)
    click.echo(f"wrote {count:,} item vectors of model {version} to {out}")


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the command; map every user-facing error to one line on stderr."""
    try:
        args = argv if argv is not None else sys.argv[1:]
        setup_logging(_peek_option(args, "--log-level", "info"), _peek_option(args, "--log-format", "text"))
        cli.main(args=argv, prog_name="msli", standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except ConfigError as exc:
        click.echo(f"msli: {exc}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)
    except _user_errors() as exc:
        click.echo(f"msli: {exc}", err=True)
        end_if_released(1)  # a stopped worker: its one line stays the last, whatever threads linger
        sys.exit(1)


def _peek_option(argv: list[str], name: str, default: str) -> str:
    """Logging is set up before click parses (its errors are logged too)."""
    for i, arg in enumerate(argv):
        if arg == name and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return default
