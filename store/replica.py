"""Read representations from a RocksDB that another process writes: a worker's store for
`msli serve`, or the local replica that `msli store sync` keeps for a ranking service.

The reader is a RocksDB secondary instance: it never takes the writer's lock, and catching up
with the writer costs milliseconds (reopening read-only costs ~100 ms under writes), so it does so
at most every `refresh_seconds` on the read path. A read sees whole write batches only.

    from store import open_replica

    replica = open_replica("/var/lib/msli/replica")
    rep = replica.get("u42")  # the UserRepresentation record (dict), or None
"""

from __future__ import annotations

import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from schemas import AvroCodec
from store.store import RocksDBVectorStore
from store.versions import promoted_version

__all__ = ["RepresentationReader", "open_replica"]


class RepresentationReader:
    """Point reads of user representations, under the promoted model version unless one is named."""

    def __init__(self, path: Path | str, *, refresh_seconds: float = 0.1) -> None:
        self.refresh_seconds = refresh_seconds
        self._secondary_dir = Path(tempfile.mkdtemp(prefix="msli-secondary-"))
        try:
            self.store = RocksDBVectorStore(path, secondary_dir=self._secondary_dir)
        except BaseException:
            shutil.rmtree(self._secondary_dir, ignore_errors=True)
            raise
        self._codec = AvroCodec("UserRepresentation")
        self._lock = threading.Lock()
        self._refreshed_at = time.monotonic()

    def refresh(self, force: bool = False) -> None:
        """Catch up with the writer if the last catch-up is older than `refresh_seconds`."""
        now = time.monotonic()
        if not force and now - self._refreshed_at < self.refresh_seconds:
            return
        with self._lock:
            if force or now - self._refreshed_at >= self.refresh_seconds:
                self.store.catch_up()
                self._refreshed_at = time.monotonic()

    def promoted_version(self) -> str | None:
        self.refresh()
        return promoted_version(self.store)

    def model_versions(self) -> list[str]:
        self.refresh()
        return self.store.model_versions()

    def get_bytes(self, user_id: str, model_version: str | None = None) -> tuple[str, bytes] | None:
        """(model version, UserRepresentation Avro bytes), or None if the user has none."""
        self.refresh()
        version = model_version or promoted_version(self.store)
        if version is None:
            return None
        value = self.store.representation(version, user_id)
        if value is None and model_version is None:
            # The promoted version may have changed (and the old one been dropped) since we read it.
            again = promoted_version(self.store)
            if again is not None and again != version:
                version, value = again, self.store.representation(again, user_id)
        return None if value is None else (version, value)

    def get(self, user_id: str, model_version: str | None = None) -> dict[str, Any] | None:
        """The decoded UserRepresentation record, or None."""
        found = self.get_bytes(user_id, model_version)
        return None if found is None else self._codec.decode(found[1])

    def close(self) -> None:
        self.store.close()
        shutil.rmtree(self._secondary_dir, ignore_errors=True)

    def __enter__(self) -> RepresentationReader:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def open_replica(path: Path | str, *, refresh_seconds: float = 0.1) -> RepresentationReader:
    """Open a replica (or a worker's store) for reading while its writer runs."""
    return RepresentationReader(path, refresh_seconds=refresh_seconds)
