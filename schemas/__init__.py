"""Avro schemas of msli's records and the one codec that reads and writes them."""

from schemas.codec import ACTIONS, CLOSE_REASONS, AvroCodec, SchemaError, load_schema

__all__ = ["ACTIONS", "CLOSE_REASONS", "AvroCodec", "SchemaError", "load_schema"]
