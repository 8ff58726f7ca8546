"""--log-format json: one JSON object per line, extra fields kept."""

from __future__ import annotations

import json
import logging

from streams.logs import JsonFormatter


def test_json_lines_carry_level_logger_message_and_extras() -> None:
    record = logging.LogRecord("streams.x", logging.WARNING, __file__, 1, "lag %d\nhigh", (5,), None)
    record.partition = 3
    line = JsonFormatter().format(record)
    assert "\n" not in line
    entry = json.loads(line)
    assert entry["level"] == "warning" and entry["logger"] == "streams.x"
    assert entry["message"] == "lag 5\nhigh" and entry["partition"] == 3
    assert entry["ts"].endswith("+00:00")
