"""What each package promises is what its `__all__` lists, and every name there exists."""

from __future__ import annotations

import importlib

import pytest


@pytest.mark.parametrize("package", ["schemas", "streams", "encoders", "store"])
def test_all_names_exist(package: str) -> None:
    module = importlib.import_module(package)
    assert module.__all__, f"{package} lists no public names"
    missing = [name for name in module.__all__ if not hasattr(module, name)]
    assert missing == []


def test_applications_get_the_event_producer_from_streams() -> None:
    from streams import EventProducer

    assert EventProducer.__module__ == "streams.producer"
