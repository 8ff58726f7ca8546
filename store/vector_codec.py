"""Compact bytes for vectors: a one-byte dtype tag, then little-endian values."""

from __future__ import annotations

from typing import Literal

import numpy as np

__all__ = ["VectorDtype", "decode_vector", "encode_vector", "quantize"]

VectorDtype = Literal["float16", "float32"]
_TAGS: dict[str, int] = {"float32": 1, "float16": 2}
_DTYPES = {tag: np.dtype(name).newbyteorder("<") for name, tag in _TAGS.items()}


def encode_vector(vector: np.ndarray, dtype: VectorDtype = "float16") -> bytes:
    """Serialise a 1-D vector; float16 halves the store at ~3 significant digits."""
    tag = _TAGS[dtype]
    return bytes([tag]) + np.ascontiguousarray(vector, dtype=_DTYPES[tag]).tobytes()


def decode_vector(data: bytes) -> np.ndarray:
    """Return the vector as float32, whatever it was stored as."""
    dtype = _DTYPES.get(data[0]) if data else None
    if dtype is None:
        raise ValueError(f"unknown vector dtype tag {data[:1]!r}")
    return np.frombuffer(data, dtype=dtype, offset=1).astype(np.float32)


def quantize(vectors: np.ndarray, dtype: VectorDtype) -> np.ndarray:
    """Round float32 vectors to what the store keeps, so fresh and stored vectors fuse identically."""
    return np.asarray(vectors, dtype=np.float32).astype(dtype).astype(np.float32)
