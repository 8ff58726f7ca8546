"""`python -m schemas.build_compiled`: build the hot modules (schemas/compiled.py) with mypyc.

Does nothing while the build in schemas/_compiled/ matches the sources and the interpreter.
Otherwise it compiles them in a temporary folder and then replaces the build, the manifest last, so
an interrupted build leaves none that loads. Without mypyc (the `test` extra installs it, with
mypy), a C compiler or Python's headers it says so in one line and exits 0: msli runs the same,
interpreted. A hot module that mypyc cannot compile exits 1 with the compiler's words: that is a
bug to fix, not a slower run to accept.
"""

from __future__ import annotations

import argparse
import importlib.machinery
import json
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

from schemas.compiled import (
    COMPILED_DIR,
    HOT_MODULES,
    MANIFEST,
    PACKAGES_ROOT,
    read_manifest,
    source_digests,
    source_file,
    stale_reason,
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m schemas.build_compiled", description=__doc__)
    parser.add_argument("--force", action="store_true", help="rebuild even if the build is current")
    parser.add_argument("--compile-into", type=Path, help=argparse.SUPPRESS)  # the child's part
    args = parser.parse_args(argv)
    if args.compile_into is not None:
        _compile_into(args.compile_into)
        return 0
    if not args.force and stale_reason(read_manifest()) is None:
        return 0
    missing = _missing_tool()
    if missing is not None:
        print(f"==> the hot modules stay interpreted (slower, same results): {missing}")
        return 0
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="msli-compile-") as tmp:
        # In a child: mypyc and the compiler print a page per module, shown only if it fails.
        done = subprocess.run(
            [sys.executable, "-m", "schemas.build_compiled", "--compile-into", tmp],
            cwd=PACKAGES_ROOT,
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            tail = "\n".join((done.stdout + done.stderr).splitlines()[-40:])
            print(f"{tail}\nerror: mypyc could not compile the hot modules (above)", file=sys.stderr)
            return 1
        built = json.loads((Path(tmp) / "built.json").read_text())
        _install(built)
    print(f"==> compiled the hot modules with mypyc in {time.monotonic() - started:.0f} s ({COMPILED_DIR})")
    return 0


def _missing_tool() -> str | None:
    try:
        import mypyc.build  # noqa: F401
    except ImportError:
        return "mypyc is not installed (pip install mypy)"
    compiler = (sysconfig.get_config_var("CC") or "cc").split()[0]
    if shutil.which(compiler) is None:
        return f"no C compiler ({compiler})"
    headers = Path(sysconfig.get_paths()["include"]) / "Python.h"
    if not headers.is_file():
        return f"no Python headers ({headers})"
    return None


def _compile_into(directory: Path) -> None:
    """Compile the hot modules under `directory`; write built.json: module name -> extension file."""
    from mypyc.build import mypycify
    from setuptools import Distribution

    # One group: the modules call each other natively (schemas.compiled loads all or none).
    paths = [source_file(name) for name in HOT_MODULES]
    options = ["--ignore-missing-imports", "--cache-dir", str(directory / "mypy-cache")]
    extensions = mypycify([*options, *paths], opt_level="3", target_dir=str(directory / "c"))
    dist = Distribution({"name": "msli-hot-modules", "ext_modules": extensions})
    build = dist.get_command_obj("build_ext")
    build.build_lib = str(directory / "lib")
    build.build_temp = str(directory / "tmp")
    dist.run_command("build_ext")
    built = {ext.name: build.get_ext_fullpath(ext.name) for ext in extensions}
    (directory / "built.json").write_text(json.dumps({"extensions": built, "sources": source_digests()}))


def _install(built: dict[str, dict[str, str]]) -> None:
    """Replace the build with the one just compiled; the manifest last."""
    suffix = importlib.machinery.EXTENSION_SUFFIXES[0]
    shutil.rmtree(COMPILED_DIR, ignore_errors=True)
    COMPILED_DIR.mkdir(parents=True)
    extensions = {}
    for name, path in built["extensions"].items():
        extensions[name] = f"{name}{suffix}"
        shutil.copyfile(path, COMPILED_DIR / extensions[name])
    manifest = {"suffix": suffix, "sources": built["sources"], "extensions": extensions}
    (COMPILED_DIR / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")


if __name__ == "__main__":
    sys.exit(main())
