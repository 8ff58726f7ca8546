"""Avro schemas of msli's records and the one codec that reads and writes them."""

# First: schemas.codec imports a hot module, which this loads from its mypyc build where it matches.
from schemas.compiled import load_compiled_modules

load_compiled_modules()

from schemas.codec import (
    ACTIONS,
    CLOSE_REASONS,
    AvroCodec,
    RepresentationParts,
    SchemaError,
    SegmentColumns,
    load_schema,
)

__all__ = [
    "ACTIONS",
    "CLOSE_REASONS",
    "AvroCodec",
    "RepresentationParts",
    "SchemaError",
    "SegmentColumns",
    "load_schema",
]
