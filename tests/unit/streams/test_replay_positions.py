"""`msli replay --from`: earliest, a time, or partition offsets; anything else is one clear error."""

from __future__ import annotations

import pytest

from streams.errors import ConfigError
from streams.replay_positions import parse_start


def test_parse_start() -> None:
    assert parse_start("earliest") == ("earliest", None)
    assert parse_start("0:120,3:40") == ("offsets", {0: 120, 3: 40})
    assert parse_start("1700000000000") == ("timestamp", 1_700_000_000_000)
    assert parse_start("2023-11-14T22:13:20Z") == ("timestamp", 1_700_000_000_000)
    assert parse_start("2023-11-14T22:13:20") == ("timestamp", 1_700_000_000_000)  # UTC when unzoned
    with pytest.raises(ConfigError, match="--from 'yesterday'"):
        parse_start("yesterday")
