"""The hot modules' mypyc build: loaded only where it matches the sources, and the same in behaviour.

`./dev test` runs the unit suite once more with MSLI_COMPILED=0, so every test of the hot modules
runs both ways; the differential test here closes one stream both ways and compares the bytes.
"""

from __future__ import annotations

import importlib.machinery
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from schemas import build_compiled
from schemas.compiled import (
    COMPILED_DIR,
    HOT_MODULES,
    _CompiledFinder,
    read_manifest,
    source_digests,
    stale_reason,
)

ROOT = Path(__file__).resolve().parents[3]

# Closes a synthetic stream the segmenter's way (events read and checked, segments written as
# bytes); prints the build's status, where windowing came from, and a digest of every segment.
CLOSE_A_STREAM = """
import hashlib, json
from schemas import AvroCodec
from schemas.compiled import compiled_status
from streams.config import MsliSettings
from streams.events import BadEvent, EventValidator
from streams.synthetic import generate
from streams.windowing import SegmentationConfig, SegmentCloser
import streams.windowing

codec, segments = AvroCodec("BehaviourEvent"), AvroCodec("ClosedSegment")
values = [codec.encode(e) for e in generate(n_events=20_000, n_users=2_000, seed=3).to_dicts()]
values += [b"", b"\\x00garbage", values[0][:-3]]  # refused: the same way both ways
settings = MsliSettings()
validator = EventValidator(codec, max_record_bytes=settings.max_record_bytes, max_future_ms=3_600_000)
rules = SegmentationConfig.from_settings(settings)
closer = SegmentCloser(rules, 0, write_bytes=segments.encode_closed_segment_parts)
refused = []
for offset, value in enumerate(values):
    event = validator.read(value, 1_800_000_000_000)
    if isinstance(event, BadEvent):
        refused.append(event.reason)
    else:
        closer.add(offset, *event)
closer.advance_watermark(2**62)
digest = hashlib.sha256(b"".join(closer.closed)).hexdigest()
print(json.dumps([compiled_status(), streams.windowing.__file__, len(closer.closed), refused, digest]))
"""


def close_a_stream(compiled: bool) -> list:
    env = {**os.environ, "MSLI_COMPILED": "1" if compiled else "0"}
    done = subprocess.run(
        [sys.executable, "-c", CLOSE_A_STREAM], cwd=ROOT, env=env, capture_output=True, text=True, check=True
    )
    return json.loads(done.stdout)


def build_is_expected() -> None:
    """Where mypyc and a C compiler are, ./dev has built the hot modules: check that it did."""
    missing = build_compiled._missing_tool()
    if missing is not None:
        pytest.skip(f"the hot modules cannot be compiled here: {missing}")
    assert stale_reason(read_manifest()) is None, "./dev setup should have built the hot modules"


def test_compiled_and_interpreted_modules_close_a_stream_into_the_same_bytes() -> None:
    build_is_expected()
    status, windowing_file, closed, refused, digest = close_a_stream(compiled=True)
    assert status == "compiled (mypyc)"
    assert Path(windowing_file).parent == COMPILED_DIR
    status_0, windowing_file_0, closed_0, refused_0, digest_0 = close_a_stream(compiled=False)
    assert status_0 == "interpreted (MSLI_COMPILED=0)"
    assert windowing_file_0.endswith("streams/windowing.py")
    assert closed > 1_000 and len(refused) == 3
    assert (closed_0, refused_0, digest_0) == (closed, refused, digest)


def test_a_build_is_used_only_for_these_sources_and_this_python() -> None:
    suffix = importlib.machinery.EXTENSION_SUFFIXES[0]
    manifest = {"suffix": suffix, "sources": source_digests(), "extensions": {}}
    assert stale_reason(manifest) is None
    assert stale_reason(None) == "no build"
    assert stale_reason({**manifest, "suffix": ".cpython-27.so"}) == "the build is for another Python"
    edited = {**source_digests(), HOT_MODULES[-1]: "0" * 64}
    assert stale_reason({**manifest, "sources": edited}) == "a hot module changed since the build"
    fewer = dict(list(source_digests().items())[:-1])
    assert stale_reason({**manifest, "sources": fewer}) == "a hot module changed since the build"


def test_the_finder_serves_only_the_modules_of_the_build(tmp_path: Path) -> None:
    finder = _CompiledFinder({"streams.windowing": tmp_path / "streams.windowing.so"})
    spec = finder.find_spec("streams.windowing")
    assert spec is not None and spec.origin == str(tmp_path / "streams.windowing.so")
    assert finder.find_spec("streams.segmenter") is None


def test_without_a_c_compiler_the_build_says_so_and_leaves_msli_interpreted(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest_before = read_manifest()
    monkeypatch.setattr(build_compiled.shutil, "which", lambda name: None)
    assert build_compiled.main(["--force"]) == 0
    assert "the hot modules stay interpreted (slower, same results): no C compiler" in capsys.readouterr().out
    assert read_manifest() == manifest_before  # nothing built, nothing removed
