"""The naive-faust baseline: what a user would write by hand, measured on the same topic.

A faust agent decodes each behaviour event and appends its item to the user's list in a tumbling
windowed table (one hour, as msli's default window). Every append rewrites the user's list in
the table and sends it to the table's changelog topic, which is how faust tables work; that and
faust's per-event iteration are what msli's batched segmenter avoids. The table windows by the
records' Kafka timestamps (faust's default), as most faust examples do.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from datetime import timedelta
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

__all__ = ["naive_faust_child"]


def naive_faust_child(
    conn: Connection,
    bootstrap_servers: str,
    topic: str,
    partitions: int,
    app_id: str,
    datadir: str,
    n_events: int,
    max_seconds: float,
) -> dict[str, Any]:
    """Run the app until it has handled n_events (or max_seconds of handling); return its rate.

    The clock starts at the first event the agent handles, so faust's start-up, group join and
    table recovery are not counted against it.
    """
    import faust

    from schemas import AvroCodec

    codec = AvroCodec("BehaviourEvent")
    app = faust.App(
        app_id,
        broker=[f"kafka://{server}" for server in bootstrap_servers.split(",")],
        datadir=str(Path(datadir)),
        store="memory://",
        web_enabled=False,
        broker_session_timeout=6.0,
        broker_heartbeat_interval=2.0,
        consumer_auto_offset_reset="earliest",
        topic_partitions=partitions,
        producer_partitioner=None,
    )
    source = app.topic(topic, key_serializer="raw", value_serializer="raw")
    table = app.Table("events-by-user", default=list, partitions=partitions).tumbling(
        timedelta(hours=1), expires=timedelta(hours=2)
    )
    state: dict[str, Any] = {"n": 0, "first": None, "last": None}
    done = asyncio.Event()

    @app.agent(source, name="append-events")
    async def append_events(stream: faust.StreamT) -> None:
        async for value in stream:
            event = codec.decode(value)
            user = event["user_id"]
            table[user] = [*table[user].current(), event["item_id"]]
            now = time.monotonic()
            state["n"] += 1
            state["first"] = state["first"] or now
            state["last"] = now
            if state["n"] >= n_events or now - state["first"] >= max_seconds:
                done.set()

    worker = faust.Worker(app, loglevel="WARN", quiet=True, override_logging=False, redirect_stdouts=False)
    stopping: list[asyncio.Future[Any]] = []

    @app.task
    async def stop_when_done() -> None:
        await done.wait()
        stopping.append(asyncio.ensure_future(worker.stop()))

    with contextlib.suppress(SystemExit):  # the worker exits this way when stopped
        worker.execute_from_commandline()
    if state["first"] is None:
        raise RuntimeError("the faust agent handled no event")
    seconds = state["last"] - state["first"]
    handled = state["n"] - 1  # events after the first, over the time since the first
    return {
        "events": state["n"],
        "seconds": seconds,
        "events_per_s": handled / seconds if seconds > 0 else None,
    }
