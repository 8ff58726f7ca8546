"""Kafka processors of msli: the segmenter, the encoder stage, the worker, the CLI.

Applications that produce behaviour events use `EventProducer`; everything else is the worker's.
"""

# First: streams.events and streams.windowing are hot modules (schemas/compiled.py).
from schemas.compiled import load_compiled_modules

load_compiled_modules()

from streams.config import MsliSettings, load_settings
from streams.errors import ConfigError, StreamsError
from streams.producer import EventProducer
from streams.windowing import SegmentationConfig, SegmentCloser

__all__ = [
    "ConfigError",
    "EventProducer",
    "MsliSettings",
    "SegmentCloser",
    "SegmentationConfig",
    "StreamsError",
    "load_settings",
]
