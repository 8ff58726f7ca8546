"""The hot modules, compiled with mypyc where a build of them matches their source.

msli is Python. Three modules run per event in pure Python loops: reading and writing Avro by hand
(schemas.fast_paths), reading and checking each event (streams.events) and the closing rules
(streams.windowing). mypyc compiles those same files, type annotations and all, to C extensions
that run them about 2.2 times as fast (docs/performance.md, fourteenth round).
`python -m schemas.build_compiled`, which ./dev and the Dockerfile run, builds them into
schemas/_compiled/ with a manifest of the sources they were built from.

`load_compiled_modules()` puts a finder in front of the import system that loads those builds
instead of the sources: all of them or none, because a compiled module calls the others natively,
so one edited source makes the whole build stale. Without a build, with a stale one, or with
MSLI_COMPILED=0, every module runs from its source, as it always could; the behaviour is the same.
A package whose modules are listed here calls `load_compiled_modules()` before importing them.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.abc
import importlib.machinery
import importlib.util
import json
import logging
import os
import sys
from collections.abc import Sequence
from importlib.machinery import ModuleSpec
from pathlib import Path
from types import ModuleType

__all__ = [
    "COMPILED_DIR",
    "HOT_MODULES",
    "MANIFEST",
    "PACKAGES_ROOT",
    "compiled_status",
    "load_compiled_modules",
    "read_manifest",
    "source_digests",
    "source_file",
    "stale_reason",
]

log = logging.getLogger(__name__)

HOT_MODULES = ("schemas.fast_paths", "streams.events", "streams.windowing")
PACKAGES_ROOT = Path(__file__).resolve().parent.parent  # the repository, or site-packages
COMPILED_DIR = PACKAGES_ROOT / "schemas" / "_compiled"
MANIFEST = "manifest.json"


def source_file(module: str) -> str:
    """A hot module's source, relative to PACKAGES_ROOT: what the build compiles and is checked against."""
    return module.replace(".", "/") + ".py"


def source_digests() -> dict[str, str]:
    """sha256 of each hot module's source, by module name: what a build is checked against."""
    return {
        name: hashlib.sha256((PACKAGES_ROOT / source_file(name)).read_bytes()).hexdigest()
        for name in HOT_MODULES
    }


def read_manifest() -> dict[str, object] | None:
    try:
        manifest = json.loads((COMPILED_DIR / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) else None


def stale_reason(manifest: dict[str, object] | None) -> str | None:
    """Why a build cannot be used with these sources and this interpreter (None: it can)."""
    if manifest is None:
        return "no build"
    if manifest.get("suffix") not in importlib.machinery.EXTENSION_SUFFIXES:
        return "the build is for another Python"
    if manifest.get("sources") != source_digests():
        return "a hot module changed since the build"
    return None


class _CompiledFinder(importlib.abc.MetaPathFinder):
    """Finds the built extension of each module of a build (and of its shared library)."""

    def __init__(self, extensions: dict[str, Path]) -> None:
        self.extensions = extensions

    def find_spec(
        self, fullname: str, path: Sequence[str] | None = None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        file = self.extensions.get(fullname)
        if file is None:
            return None
        loader = importlib.machinery.ExtensionFileLoader(fullname, str(file))
        return importlib.util.spec_from_file_location(fullname, file, loader=loader)


@functools.cache  # once per process: the first import of the hot modules decides
def load_compiled_modules() -> str:
    """Load the hot modules from their build from now on, if it matches. Returns what
    `compiled_status()` returns."""
    if os.environ.get("MSLI_COMPILED", "1") == "0":
        return "interpreted (MSLI_COMPILED=0)"
    manifest = read_manifest()
    reason = stale_reason(manifest)
    if reason is not None:
        if reason != "no build":  # say why it runs slower (a developer edited a hot module)
            log.warning("hot modules run interpreted: %s; ./dev setup rebuilds them", reason)
        return f"interpreted ({reason})"
    assert manifest is not None
    extensions = manifest["extensions"]
    assert isinstance(extensions, dict)
    sys.meta_path.insert(0, _CompiledFinder({name: COMPILED_DIR / file for name, file in extensions.items()}))
    return "compiled (mypyc)"


def compiled_status() -> str:
    """Which the hot modules of this process are: "compiled (mypyc)", or "interpreted (why)"."""
    status = load_compiled_modules()
    if status.startswith("compiled"):
        loaded = [name for name in HOT_MODULES if name in sys.modules]
        suffixes = tuple(importlib.machinery.EXTENSION_SUFFIXES)
        if any(not str(sys.modules[name].__file__).endswith(suffixes) for name in loaded):
            return "interpreted (imported before the build was loaded)"
    return status
