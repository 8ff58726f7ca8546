"""Save and load encoder checkpoints: a directory of weights, config, vocabulary and a manifest.

Layout of a checkpoint directory:

    weights.pt      the model's state_dict (torch.save; read back with weights_only=True only)
    config.json     SegmentEncoderConfig fields
    vocab.json      ItemVocabulary
    manifest.json   {"format", "model_version", "files": {name: "sha256:<hex>"}, "extra": {...}}

`extra` is free JSON for whoever writes the checkpoint (training settings, the closing settings a
model was trained with, metrics); it does not enter model_version, which names what decides the
vectors: config, weights and vocabulary.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from encoders.errors import EncoderError
from encoders.model import SegmentEncoder, SegmentEncoderConfig
from encoders.vocab import ItemVocabulary

__all__ = ["CHECKPOINT_FILES", "Checkpoint", "content_version", "read_checkpoint", "write_checkpoint"]

_FORMAT = "msli-encoder-checkpoint/1"
WEIGHTS, CONFIG, VOCAB, MANIFEST = "weights.pt", "config.json", "vocab.json", "manifest.json"
CHECKPOINT_FILES = (WEIGHTS, CONFIG, VOCAB, MANIFEST)


@dataclass(frozen=True)
class Checkpoint:
    """What a checkpoint directory holds, verified."""

    config: SegmentEncoderConfig
    state_dict: dict[str, torch.Tensor]
    vocab: ItemVocabulary
    model_version: str
    extra: dict[str, Any] = field(default_factory=dict)


def _canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def content_version(
    config: SegmentEncoderConfig, state_dict: Mapping[str, torch.Tensor], vocab: ItemVocabulary
) -> str:
    """Name a model by its content: equal config, weights and vocabulary give the same version.

    Hashes tensor bytes, not weights.pt's bytes: torch.save writes a fresh serialization id into
    every file, so two saves of the same weights differ on disk.
    """
    h = hashlib.blake2b(digest_size=16, person=b"msli-model")
    h.update(_canonical_json(config.to_dict()).encode())
    h.update(b"\0" + vocab.to_json().encode() + b"\0")
    for name in sorted(state_dict):
        t = state_dict[name].detach().to("cpu").contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}\0".encode())
        h.update(t.view(-1).view(torch.uint8).numpy().tobytes())
    return "m-" + h.hexdigest()[:12]


def _digest(path: Path) -> str:
    with path.open("rb") as f:
        return "sha256:" + hashlib.file_digest(f, "sha256").hexdigest()


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def write_checkpoint(
    directory: str | os.PathLike[str],
    config: SegmentEncoderConfig,
    state_dict: Mapping[str, torch.Tensor],
    vocab: ItemVocabulary,
    extra: Mapping[str, Any] | None = None,
) -> str:
    """Write a checkpoint directory and return its model_version.

    Each file is replaced atomically and the manifest goes last, so a crash mid-save leaves a
    directory that fails verification instead of one that loads a mix of two models.
    """
    try:
        extra_json = _canonical_json(dict(extra or {}))
    except (TypeError, ValueError) as exc:
        raise EncoderError(f"checkpoint extra must be plain JSON: {exc}") from None
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state_dict.items()}
    version = content_version(config, tensors, vocab)
    weights_tmp = directory / f".{WEIGHTS}.tmp"
    torch.save(tensors, weights_tmp)
    os.replace(weights_tmp, directory / WEIGHTS)
    _write_atomic(directory / CONFIG, (json.dumps(config.to_dict(), indent=2) + "\n").encode())
    _write_atomic(directory / VOCAB, (vocab.to_json() + "\n").encode())
    manifest = {
        "format": _FORMAT,
        "model_version": version,
        "files": {name: _digest(directory / name) for name in (WEIGHTS, CONFIG, VOCAB)},
        "extra": json.loads(extra_json),
    }
    _write_atomic(directory / MANIFEST, (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode())
    return version


def _read_manifest(directory: Path) -> dict[str, Any]:
    path = directory / MANIFEST
    if not path.is_file():
        raise EncoderError(f"{directory}: not a checkpoint (no {MANIFEST})")
    try:
        manifest = json.loads(path.read_bytes())
    except (ValueError, UnicodeDecodeError) as exc:
        raise EncoderError(f"{path}: not JSON ({exc})") from None
    files = manifest.get("files") if isinstance(manifest, dict) else None
    if (
        not isinstance(manifest, dict)
        or manifest.get("format") != _FORMAT
        or not isinstance(manifest.get("model_version"), str)
        or not isinstance(files, dict)
        or not isinstance(manifest.get("extra", {}), dict)
    ):
        raise EncoderError(f"{path}: not a manifest of format {_FORMAT}")
    for name in (WEIGHTS, CONFIG, VOCAB):
        if name not in files:
            raise EncoderError(f"{path}: lists no digest for {name}")
    return manifest


def _shape_mismatch(expected: Mapping[str, torch.Tensor], found: Mapping[str, Any]) -> str | None:
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    if missing or unexpected:
        return f"missing {missing[:3]}, unexpected {unexpected[:3]}"
    for name, want in expected.items():
        got = found[name]
        if not isinstance(got, torch.Tensor):
            return f"{name} is a {type(got).__name__}, not a tensor"
        if got.shape != want.shape or got.dtype != want.dtype:
            return f"{name} is {tuple(got.shape)} {got.dtype}, config wants {tuple(want.shape)} {want.dtype}"
    return None


def _expected_state(config: SegmentEncoderConfig) -> dict[str, torch.Tensor]:
    """Return the names, shapes and dtypes a model of `config` has, without allocating its weights."""
    with torch.device("meta"):
        return SegmentEncoder(config).state_dict()


def read_checkpoint(directory: str | os.PathLike[str]) -> Checkpoint:
    """Read and verify a checkpoint directory.

    Every file must match its digest, the weights must fit the config (names, shapes, dtypes:
    refused here with a one-line EncoderError rather than by load_state_dict's multi-line
    RuntimeError), and the content must hash to the manifest's model_version.
    """
    directory = Path(directory)
    manifest = _read_manifest(directory)
    for name in (WEIGHTS, CONFIG, VOCAB):
        path = directory / name
        if not path.is_file():
            raise EncoderError(f"{directory}: {name} is missing")
        if _digest(path) != manifest["files"][name]:
            raise EncoderError(f"{path}: does not match the manifest's digest (tampered or truncated)")
    try:
        config = SegmentEncoderConfig.from_dict(json.loads((directory / CONFIG).read_bytes()))
    except (ValueError, UnicodeDecodeError) as exc:
        raise EncoderError(f"{directory / CONFIG}: not JSON ({exc})") from None
    vocab = ItemVocabulary.from_json((directory / VOCAB).read_bytes())
    if vocab.n_rows != config.n_item_buckets:
        raise EncoderError(
            f"{directory}: vocabulary has {vocab.n_rows} rows, config.n_item_buckets {config.n_item_buckets}"
        )
    try:
        # weights_only: the file is data, never code; torch refuses anything but tensors and containers.
        state_dict = torch.load(directory / WEIGHTS, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types on a bad file (RuntimeError, UnpicklingError, ...)
        first_line = str(exc).splitlines()[0] if str(exc) else ""
        reason = f"{type(exc).__name__}: {first_line}"
        raise EncoderError(f"{directory / WEIGHTS}: unreadable ({reason})") from None
    if not isinstance(state_dict, dict):
        raise EncoderError(f"{directory / WEIGHTS}: not a state_dict")
    problem = _shape_mismatch(_expected_state(config), state_dict)
    if problem:
        raise EncoderError(f"{directory / WEIGHTS}: weights do not fit config.json: {problem}")
    version = content_version(config, state_dict, vocab)
    if version != manifest["model_version"]:
        claimed = manifest["model_version"]
        raise EncoderError(f"{directory}: content hashes to {version}, manifest says {claimed}")
    return Checkpoint(config, dict(state_dict), vocab, version, dict(manifest.get("extra", {})))
