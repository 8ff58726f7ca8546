"""A partition with unread records is behind, not quiet: its watermark must not follow the clock."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

from streams.config import MsliSettings
from streams.producer import EventProducer
from streams.segmenter import Segmenter
from streams.synthetic import generate
from streams.topics import ensure_topics


def test_catching_up_on_a_backlog_makes_no_event_late(
    kafka_bootstrap: str, unique_name: Callable[[str], str], tmp_path: Path
) -> None:
    settings = MsliSettings(
        bootstrap_servers=kafka_bootstrap,
        events_topic=unique_name("events"),
        segments_topic=unique_name("segments"),
        dead_letter_topic=unique_name("dead-letters"),
        checkpoints_topic=unique_name("checkpoints"),
        group_id=unique_name("group"),
        topic_partitions=6,
        partition_idle_seconds=0.05,  # far shorter than reading the backlog takes
        max_future_seconds=10 * 365 * 86_400.0,
        state_dir=tmp_path,
    )
    ensure_topics(settings)
    events = generate(n_events=60_000, n_users=3_000, seed=3)  # event times in 2023: far behind the clock
    with EventProducer(settings.kafka_client_config(), topic=settings.events_topic) as producer:
        for chunk in events.chunks(20_000):
            producer.send_many(chunk)

    segmenter = Segmenter(settings)
    thread = threading.Thread(target=segmenter.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 120
    while segmenter.stats.events < len(events) and time.monotonic() < deadline and thread.is_alive():
        time.sleep(0.05)
    segmenter.stop()
    thread.join(60)

    assert segmenter.stats.events == len(events)
    # Once read, the partitions are quiet for real and the clock closes their windows, but while
    # their backlog was being read none of its events may have been made late.
    assert segmenter.stats.late == 0 and "late" not in segmenter.stats.closed
