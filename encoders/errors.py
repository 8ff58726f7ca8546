"""The encoders package's one root error."""

from __future__ import annotations

__all__ = ["EncoderError"]


class EncoderError(Exception):
    """A segment, config, vocabulary or checkpoint the encoder cannot use.

    One class for the whole package, so the encoder stage can catch it around a micro-batch and
    tell a bad input or a broken checkpoint apart from a bug. Messages are one line.
    """
