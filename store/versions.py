"""Model-version namespaces in one store: which one readers get, and removing old ones.

Writers write the version of the checkpoint they run; readers read the promoted version, a single
meta key. Switching it is one RocksDB put, so every read sees the old version or the new one, never
a mix, and both namespaces stay complete while the switch happens.
"""

from __future__ import annotations

from store.errors import StoreError
from store.store import RocksDBVectorStore

__all__ = ["PROMOTED_KEY", "drop_version", "ensure_promoted", "promote_version", "promoted_version"]

# The meta key readers resolve; named "active" since the first release, whose readers read it too.
PROMOTED_KEY = "active_model_version"


def promoted_version(store: RocksDBVectorStore) -> str | None:
    value = store.get_meta(PROMOTED_KEY)
    return None if value is None else value.decode()


def _set_promoted(store: RocksDBVectorStore, version: str) -> None:
    batch = store.batch()
    batch.put_meta(PROMOTED_KEY, version.encode())
    store.write(batch)


def ensure_promoted(store: RocksDBVectorStore, version: str) -> str:
    """Promote `version` if nothing is promoted yet (a new store); return what readers get."""
    current = promoted_version(store)
    if current is None:
        _set_promoted(store, version)
        return version
    return current


def promote_version(store: RocksDBVectorStore, version: str, *, allow_empty: bool = False) -> None:
    """Switch readers to `version`, atomically. A version without representations is refused
    unless `allow_empty`: promoting it would answer 404 for every user."""
    if not allow_empty and version not in store.model_versions():
        known = ", ".join(store.model_versions()) or "none"
        raise StoreError(f"model version {version} has no representations in {store.path} (has: {known})")
    _set_promoted(store, version)


def drop_version(store: RocksDBVectorStore, version: str) -> None:
    """Delete a version's namespace; the promoted one is refused (readers would lose every user)."""
    if version == promoted_version(store):
        raise StoreError(f"model version {version} is the promoted one: promote another before dropping it")
    store.delete_model_version(version)
