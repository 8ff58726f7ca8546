"""RocksDB tuning for the vector store, as a frozen dataclass so callers never import rocksdict."""

from __future__ import annotations

from dataclasses import dataclass

import rocksdict

__all__ = ["RocksDBOptions"]


@dataclass(frozen=True)
class RocksDBOptions:
    """How the store's RocksDB is opened. The defaults suit point reads of small values."""

    block_cache_bytes: int = 64 * 1024 * 1024  # reads of hot users' representations come from here
    write_buffer_bytes: int = 32 * 1024 * 1024  # memtable size before a flush to an SST file
    bloom_bits_per_key: int = 10  # point lookups of absent keys skip SST files
    compression: str = "lz4"  # "lz4", "zstd" or "none"; vectors compress little, keys and events do
    sync_writes: bool = False  # fsync every write: survives a power cut, not only a process crash
    max_open_files: int = 512

    def to_options(self) -> rocksdict.Options:
        """Build the rocksdict Options; raw mode stores our bytes as they are (no pickling)."""
        opts = rocksdict.Options(raw_mode=True)
        opts.create_if_missing(True)
        opts.set_write_buffer_size(self.write_buffer_bytes)
        opts.set_max_open_files(self.max_open_files)
        opts.set_compression_type(_COMPRESSION[self.compression]())
        table = rocksdict.BlockBasedOptions()
        table.set_block_cache(rocksdict.Cache(self.block_cache_bytes))
        table.set_bloom_filter(int(self.bloom_bits_per_key), False)
        opts.set_block_based_table_factory(table)
        return opts

    def write_options(self) -> rocksdict.WriteOptions:
        wo = rocksdict.WriteOptions()
        wo.sync = self.sync_writes
        return wo


_COMPRESSION = {
    "lz4": rocksdict.DBCompressionType.lz4,
    "zstd": rocksdict.DBCompressionType.zstd,
    "none": rocksdict.DBCompressionType.none,
}
