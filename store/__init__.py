"""RocksDB store of segment vectors and user representations (rocksdict)."""

from store.errors import StoreError
from store.options import RocksDBOptions
from store.replica import RepresentationReader, open_replica
from store.store import (
    OutboxRecord,
    RocksDBVectorStore,
    SegmentVectorHead,
    StoreBatch,
    StoredSegment,
    decode_segments,
    decode_segments_many,
    segment_id,
)
from store.vector_codec import decode_vector, decode_vectors, encode_vector, encode_vectors, quantize
from store.versions import drop_version, ensure_promoted, promote_version, promoted_version

__all__ = [
    "OutboxRecord",
    "RepresentationReader",
    "RocksDBOptions",
    "RocksDBVectorStore",
    "SegmentVectorHead",
    "StoreBatch",
    "StoreError",
    "StoredSegment",
    "decode_segments",
    "decode_segments_many",
    "decode_vector",
    "decode_vectors",
    "drop_version",
    "encode_vector",
    "encode_vectors",
    "ensure_promoted",
    "open_replica",
    "promote_version",
    "promoted_version",
    "quantize",
    "segment_id",
]
