"""Checkpoints: round trip, content-derived model_version, and refusal of anything tampered."""

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from encoders import (
    EncoderError,
    ItemVocabulary,
    SegmentBatchEncoder,
    SegmentEncoder,
    SegmentEncoderConfig,
    SegmentInput,
)
from encoders.checkpoint import CHECKPOINT_FILES, _digest

TINY = SegmentEncoderConfig(dim=16, n_layers=1, n_heads=2, max_events=32, n_item_buckets=256)


@pytest.fixture
def saved(tmp_path):
    enc = SegmentBatchEncoder.untrained(TINY, seed=3, device="cpu")
    enc.save(tmp_path / "ckpt", extra={"trained_on": "nothing", "window_ms": 1800000})
    return enc, tmp_path / "ckpt"


def _segments():
    rng = random.Random(2)
    return [
        SegmentInput(
            [f"i{rng.randrange(99)}" for _ in range(n)],
            [rng.randrange(10) for _ in range(n)],
            [1_700_000_000_000 + 60_000 * k for k in range(n)],
            [rng.choice([None, 1.0, 4.5]) for _ in range(n)],
        )
        for n in (1, 9, 40)
    ]


def test_round_trip_gives_identical_vectors_and_version(saved, tmp_path):
    enc, path = saved
    assert sorted(p.name for p in path.iterdir()) == sorted(CHECKPOINT_FILES)
    loaded = SegmentBatchEncoder.load(path, device="cpu")
    assert loaded.model_version == enc.model_version
    assert loaded.config == enc.config and loaded.vocab == enc.vocab
    assert loaded.extra == {"trained_on": "nothing", "window_ms": 1800000}
    assert np.array_equal(loaded.encode(_segments()), enc.encode(_segments()))
    assert np.array_equal(loaded.item_vectors(["x", "y"]), enc.item_vectors(["x", "y"]))
    # Saving again (new file bytes: torch writes a fresh serialization id) keeps the version.
    assert loaded.save(tmp_path / "again") == enc.model_version
    assert json.loads((tmp_path / "again" / "manifest.json").read_text())["extra"] == loaded.extra


def test_explicit_vocabulary_checkpoint(tmp_path):
    vocab = ItemVocabulary.explicit(["m1", "m2", "m3"])
    config = SegmentEncoderConfig(dim=16, n_layers=1, n_heads=2, max_events=16, n_item_buckets=vocab.n_rows)
    model = SegmentEncoder(config)
    model.reset_parameters(torch.Generator().manual_seed(0))
    enc = SegmentBatchEncoder(model, vocab, device="cpu")
    enc.save(tmp_path)
    loaded = SegmentBatchEncoder.load(tmp_path, device="cpu")
    assert loaded.vocab.items == ("m1", "m2", "m3") and loaded.model_version == enc.model_version
    np.testing.assert_array_equal(loaded.item_vectors(["m2", "unseen"]), enc.item_vectors(["m2", "unknown"]))


def test_version_follows_content():
    a = SegmentBatchEncoder.untrained(TINY, seed=3, device="cpu")
    b = SegmentBatchEncoder.untrained(TINY, seed=3, device="cpu")
    assert a.model_version == b.model_version
    model = SegmentEncoder(TINY)
    model.load_state_dict(a.model.state_dict())
    with torch.no_grad():
        model.head.weight[0, 0] += 1e-6
    assert SegmentBatchEncoder(model, a.vocab, device="cpu").model_version != a.model_version


def _flip_last_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01
    path.write_bytes(bytes(data))


def _rewrite_manifest(path: Path, **changes) -> None:
    manifest = json.loads((path / "manifest.json").read_text())
    manifest.update(changes)
    manifest["files"] = {name: _digest(path / name) for name in manifest["files"]}
    (path / "manifest.json").write_text(json.dumps(manifest))


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda p: _flip_last_byte(p / "weights.pt"), "tampered or truncated"),
        (
            lambda p: (p / "weights.pt").write_bytes((p / "weights.pt").read_bytes()[:100]),
            "tampered or truncated",
        ),
        (lambda p: _flip_last_byte(p / "vocab.json"), "tampered or truncated"),
        (lambda p: (p / "config.json").write_text("{}"), "tampered or truncated"),
        (lambda p: (p / "vocab.json").unlink(), "vocab.json is missing"),
        (lambda p: (p / "manifest.json").unlink(), "not a checkpoint"),
        (lambda p: (p / "manifest.json").write_text("{"), "not JSON"),
        (lambda p: (p / "manifest.json").write_text('{"format": "other"}'), "not a manifest"),
        (lambda p: _rewrite_manifest(p, model_version="m-000000000000"), "manifest says m-000000000000"),
    ],
)
def test_damaged_checkpoint_is_refused(saved, damage, message):
    _, path = saved
    damage(path)
    with pytest.raises(EncoderError, match=message) as info:
        SegmentBatchEncoder.load(path, device="cpu")
    assert "\n" not in str(info.value)


def test_weights_that_do_not_fit_the_config_are_refused(saved):
    _, path = saved
    config = json.loads((path / "config.json").read_text())
    config["dim"] = 32
    (path / "config.json").write_text(json.dumps(config))
    _rewrite_manifest(path)  # digests consistent: only the shapes disagree
    with pytest.raises(EncoderError, match="do not fit config") as info:
        SegmentBatchEncoder.load(path, device="cpu")
    assert "\n" not in str(info.value)


def test_vocabulary_that_does_not_fit_the_config_is_refused(saved):
    _, path = saved
    (path / "vocab.json").write_text(ItemVocabulary.hashing(100).to_json())
    _rewrite_manifest(path)
    with pytest.raises(EncoderError, match="n_item_buckets"):
        SegmentBatchEncoder.load(path, device="cpu")


class _Payload:
    """Pickles to a call of Path.touch: loading it with full unpickling would create a file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_weights_are_never_unpickled(saved, tmp_path):
    _, path = saved
    marker = tmp_path / "code-ran"
    torch.save({"item_emb.weight": _Payload(marker)}, path / "weights.pt")
    _rewrite_manifest(path)
    with pytest.raises(EncoderError, match="unreadable"):
        SegmentBatchEncoder.load(path, device="cpu")
    assert not marker.exists()


def test_extra_must_be_json(tmp_path):
    enc = SegmentBatchEncoder.untrained(TINY, device="cpu")
    with pytest.raises(EncoderError, match="extra"):
        enc.save(tmp_path, extra={"when": object()})


def test_item_biases_round_trip_and_enter_the_version(tmp_path):
    vocab = ItemVocabulary.explicit(["m1", "m2", "m3"])
    config = SegmentEncoderConfig(
        dim=16, n_layers=1, n_heads=2, max_events=16, n_item_buckets=vocab.n_rows, item_bias=True
    )
    model = SegmentEncoder(config)
    model.reset_parameters(torch.Generator().manual_seed(0))
    assert model.item_bias is not None and not model.item_bias.any()  # starts at zero
    with torch.no_grad():
        model.item_bias.copy_(torch.arange(vocab.n_rows, dtype=torch.float32) / 10)
    enc = SegmentBatchEncoder(model, vocab, device="cpu")
    enc.save(tmp_path)
    loaded = SegmentBatchEncoder.load(tmp_path, device="cpu")
    assert loaded.model_version == enc.model_version and loaded.config.item_bias
    biases = loaded.item_biases(["m3", "m1", "unseen"])
    assert biases is not None
    np.testing.assert_allclose(biases, [0.4, 0.2, 0.1], rtol=1e-6)  # rows 4, 2 and the OOV row 1
    with torch.no_grad():
        model.item_bias[2] += 1e-3
    assert SegmentBatchEncoder(model, vocab, device="cpu").model_version != enc.model_version
    # A model without biases has none to give (and its checkpoints keep loading as before).
    assert SegmentBatchEncoder.untrained(TINY, device="cpu").item_biases(["x"]) is None
