"""Send records the worker cannot use to the dead-letter topic, with where they came from and why."""

from __future__ import annotations

import logging
from collections import Counter

from streams.publisher import MAX_RECORD_BYTES, Headers, KafkaPublisher

__all__ = ["DeadLetterSink"]

log = logging.getLogger(__name__)


class DeadLetterSink:
    """Keeps the original key and bytes; headers name the source topic, partition, offset and reason.

    Logs the first record of each reason, then only counts: one bad producer must not flood the log.
    A value over MAX_RECORD_BYTES keeps only its start (header msli.truncated gives the full size);
    the source headers still point at the whole record.
    """

    def __init__(self, publisher: KafkaPublisher, topic: str) -> None:
        self._publisher = publisher
        self.topic = topic
        self.counts: Counter[str] = Counter()

    def send(
        self,
        *,
        key: bytes | None,
        value: bytes | None,
        source_topic: str,
        partition: int,
        offset: int,
        reason: str,
        detail: str,
    ) -> None:
        if not self.counts[reason]:
            log.warning(
                "dead-lettering %s records (first: %s[%d]@%d: %s); further ones are only counted",
                reason,
                source_topic,
                partition,
                offset,
                detail,
            )
        self.counts[reason] += 1
        headers: Headers = [
            ("msli.source.topic", source_topic.encode()),
            ("msli.source.partition", str(partition).encode()),
            ("msli.source.offset", str(offset).encode()),
            ("msli.reason", reason.encode()),
            ("msli.detail", detail.encode()[:1000]),
        ]
        if value is not None and len(value) > MAX_RECORD_BYTES:
            headers.append(("msli.truncated", str(len(value)).encode()))
            value = value[:MAX_RECORD_BYTES]
        self._publisher.send(self.topic, key, value, headers)

    @property
    def total(self) -> int:
        return sum(self.counts.values())
