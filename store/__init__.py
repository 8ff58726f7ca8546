"""RocksDB store of segment vectors and user representations (rocksdict)."""

from store.errors import StoreError
from store.options import RocksDBOptions
from store.store import OutboxRecord, RocksDBVectorStore, StoreBatch, StoredSegment, segment_id
from store.vector_codec import decode_vector, encode_vector, quantize

__all__ = [
    "OutboxRecord",
    "RocksDBOptions",
    "RocksDBVectorStore",
    "StoreBatch",
    "StoreError",
    "StoredSegment",
    "decode_vector",
    "encode_vector",
    "quantize",
    "segment_id",
]
