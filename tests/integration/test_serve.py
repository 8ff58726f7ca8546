"""`msli serve` as a process, asked by a real HTTP client: every status the API promises."""

from __future__ import annotations

import http.client
import json
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from msli_processes import MSLI, msli_env

from encoders import SegmentBatchEncoder, SegmentEncoderConfig, SegmentInput, maxsim_scores
from schemas import AvroCodec
from store import RocksDBVectorStore, StoredSegment, ensure_promoted, quantize
from streams.fuser import representation_record

TOKEN = "s3cret"
USER = "user/with space"  # ids travel percent-encoded


def scoring_model(path: Path) -> SegmentBatchEncoder:
    """The default model plus a seen-item score of -5, saved as the checkpoint `msli serve` loads."""
    encoder = SegmentBatchEncoder.untrained(SegmentEncoderConfig(seen_item_score=True), seed=0, device="cpu")
    with torch.no_grad():
        encoder._model.seen_item_raw.fill_(-0.5)  # type: ignore[union-attr]
    encoder.save(path)
    return SegmentBatchEncoder.load(path, device="cpu")


def build_store(path: Path, encoder: SegmentBatchEncoder) -> tuple[str, dict[str, Any]]:
    segments_in = [
        SegmentInput.from_events(
            [{"item_id": f"i{k}", "action": "click", "event_time_ms": 1000 * k} for k in range(j, j + 3)]
        )
        for j in range(3)
    ]
    vectors = quantize(encoder.encode(segments_in), "float16")
    segments = [
        StoredSegment(
            USER,
            3_600_000 * w,
            3_600_000 * (w + 1),
            0,
            3_600_000 * w + 60_000,
            3,
            vectors[w],
            tuple(segments_in[w].item_ids),
        )
        for w in (2, 1, 0)  # newest first
    ]
    record = representation_record(USER, encoder.model_version, segments, 86_400_000.0)
    with RocksDBVectorStore(path) as store:
        batch = store.batch()
        batch.put_representation(encoder.model_version, USER, AvroCodec("UserRepresentation").encode(record))
        store.write(batch)
        ensure_promoted(store, encoder.model_version)
    return encoder.model_version, record


@pytest.fixture
def api(tmp_path: Path) -> Iterator[tuple[int, str, dict[str, Any]]]:
    encoder = scoring_model(tmp_path / "model")
    version, record = build_store(tmp_path / "state" / "store", encoder)
    env = msli_env(
        MSLI_ENCODER_CHECKPOINT=str(tmp_path / "model"),
        MSLI_STATE_DIR=str(tmp_path / "state"),
        MSLI_API_TOKEN=TOKEN,
        MSLI_MAX_CANDIDATES="5",
        MSLI_DEVICE="cpu",
    )
    env.pop("KAFKA_BOOTSTRAP_SERVERS", None)  # serve reads only the store; it must not need a broker
    log = open(tmp_path / "serve.log", "w+")  # noqa: SIM115 - closed below
    proc = subprocess.Popen([MSLI, "serve", "--port", "0"], env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        port = None
        while port is None and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.2)
            found = re.search(r"on http://127\.0\.0\.1:(\d+)", (tmp_path / "serve.log").read_text())
            port = int(found.group(1)) if found else None
        assert port is not None, (tmp_path / "serve.log").read_text()
        yield port, version, record
    finally:
        proc.terminate()
        proc.wait(30)
        log.close()


def request(port: int, path: str, method: str = "GET", token: str | None = TOKEN) -> tuple[int, dict, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    conn.request(method, path, headers=headers)
    response = conn.getresponse()
    body = response.read()
    conn.close()
    return response.status, dict(response.getheaders()), body


def test_every_status(api: tuple[int, str, dict[str, Any]]) -> None:
    port, version, record = api
    user_path = "/users/user%2Fwith%20space"

    status, _, body = request(port, "/health", token=None)  # probes need no token
    assert status == 200 and json.loads(body)["model_version"] == version

    status, _, body = request(port, user_path)
    rep = json.loads(body)
    assert status == 200 and rep["user_id"] == USER and rep["model_version"] == version
    assert len(rep["segments"]) == 3 and abs(sum(s["weight"] for s in rep["segments"]) - 1) < 1e-5

    status, headers, body = request(port, user_path + "?format=avro")
    assert status == 200 and headers["Content-Type"] == "application/avro"
    assert AvroCodec("UserRepresentation").decode(body) == record

    status, _, body = request(port, user_path + "/score?items=i1,i2,zzz")
    scores = json.loads(body)["scores"]
    segs = record["segments"]
    assert record["seen_item_ids"] == ["i2", "i3", "i4", "i1", "i0"]  # newest segment first
    expected = maxsim_scores(
        np.stack([np.frombuffer(s["vector"], dtype="<f4") for s in segs]),
        np.array([s["weight"] for s in segs], dtype=np.float32),
        SegmentBatchEncoder.untrained(seed=0, device="cpu").item_vectors(["i1", "i2", "zzz"]),
    )
    expected += np.array([-5.0, -5.0, 0.0], dtype=np.float32)  # the model's seen-item score on i1 and i2
    assert status == 200 and [s["item_id"] for s in scores] == ["i1", "i2", "zzz"]
    assert np.allclose([s["score"] for s in scores], expected, atol=1e-6)
    status, _, body = request(port, user_path + "/score?items=i1&method=fused")
    assert status == 200 and json.loads(body)["method"] == "fused"

    assert request(port, "/users/nobody")[0] == 404
    assert request(port, "/users/nobody/score?items=i1")[0] == 404
    assert request(port, "/no/such/path")[0] == 404
    status, headers, _ = request(port, user_path, method="POST")
    assert status == 405 and headers["Allow"] == "GET"
    assert request(port, user_path, method="DELETE")[0] == 405
    status, headers, _ = request(port, user_path, token=None)
    assert status == 401 and headers["WWW-Authenticate"].startswith("Bearer")
    assert request(port, user_path, token="wrong")[0] == 401
    assert request(port, "/metrics", token=None)[0] == 401
    assert request(port, user_path + "/score?items=a,b,c,d,e,f")[0] == 413
    assert request(port, user_path + "/score?items=a,b,c,d,e")[0] == 200
    assert request(port, user_path + "/score")[0] == 400
    assert request(port, user_path + "/score?items=a&method=magic")[0] == 400

    status, _, body = request(port, "/metrics")
    text = body.decode()
    assert status == 200
    assert 'msli_api_requests_total{route="score",status="413"} 1.0' in text
    assert 'msli_api_requests_total{route="user",status="401"} 2.0' in text
    assert re.search(r"^msli_store_size_bytes [1-9]", text, re.MULTILINE)
