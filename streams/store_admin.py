"""`msli store versions|promote|drop`: operator commands on a store's model versions.

A running worker holds its store's lock, so a promotion or drop goes to the control topic, where
every worker of the group (and every `msli store sync` replica) applies it within a second; a
store that no worker holds is changed directly as well.
"""

from __future__ import annotations

from collections.abc import Callable

from store import RepresentationReader, RocksDBVectorStore, StoreError, drop_version, promote_version
from store.versions import promoted_version
from streams.config import MsliSettings
from streams.control import PROMOTED, drop_key, publish_control

__all__ = ["drop", "list_versions", "promote"]


def list_versions(settings: MsliSettings) -> list[str]:
    with RepresentationReader(settings.state_dir / "store") as reader:
        store = reader.store
        promoted = promoted_version(store)
        lines = []
        for version in store.model_versions():
            users = sum(1 for _ in store.representation_users(version))
            lines.append(f"{'*' if version == promoted else ' '} {version}  {users:,} users")
        return lines or [f"no model versions in {store.path}"]


def promote(settings: MsliSettings, version: str, *, force: bool = False) -> str:
    path = settings.state_dir / "store"
    if not force and (path / "CURRENT").exists():
        with RepresentationReader(path) as reader:
            if version not in reader.store.model_versions():
                known = ", ".join(reader.store.model_versions()) or "none"
                raise StoreError(
                    f"model version {version} has no representations in {path} (has: {known}); "
                    "run a worker or `msli replay` with its checkpoint first, or pass --force"
                )
    return _apply(
        settings,
        {PROMOTED: version, drop_key(version): None},
        lambda store: promote_version(store, version, allow_empty=force),
        f"promoted {version}",
    )


def drop(settings: MsliSettings, version: str) -> str:
    path = settings.state_dir / "store"
    if (path / "CURRENT").exists():
        with RepresentationReader(path) as reader:
            if promoted_version(reader.store) == version:
                raise StoreError(
                    f"model version {version} is the promoted one: promote another before dropping it"
                )
    return _apply(
        settings, {drop_key(version): "1"}, lambda store: drop_version(store, version), f"dropped {version}"
    )


def _apply(
    settings: MsliSettings,
    control: dict[str, str | None],
    change: Callable[[RocksDBVectorStore], None],
    done: str,
) -> str:
    notes = []
    if settings.bootstrap_servers:
        publish_control(settings, control)
        notes.append(f"running workers and replicas apply it from {settings.control_topic}")
    path = settings.state_dir / "store"
    if (path / "CURRENT").exists():
        try:
            store = RocksDBVectorStore(path, vector_dtype=settings.vector_dtype)
        except StoreError as exc:
            if "lock" not in str(exc).lower():
                raise
            if not settings.bootstrap_servers:
                raise StoreError(
                    f"the store at {path} is in use by a running worker: set MSLI_BOOTSTRAP_SERVERS "
                    "so the worker applies the change from the control topic"
                ) from None
        else:
            with store:
                change(store)
            notes.append(f"store {path} updated")
    if not notes:
        raise StoreError(f"no store at {path} and no broker configured: nothing to change")
    return f"{done}: " + "; ".join(notes)
