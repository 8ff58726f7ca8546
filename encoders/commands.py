"""What `msli train`, `msli evaluate` and `msli export-items` do, without the command line around it.

A trained checkpoint's manifest `extra` records what the vectors depend on besides the weights: the
closing rules the segments were cut with, K and the recency half-life of the representation, and
the training run (settings, data digest, validation metrics). Evaluation reads them back, so it
cuts and fuses exactly as training did; the worker compares them with its own settings
(streams.encoder_fit).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, fields, replace
from pathlib import Path
from typing import Any

import numpy as np

from encoders.errors import EncoderError
from encoders.evaluation import EvaluationReport, evaluate
from encoders.inference import SegmentBatchEncoder
from encoders.segmented_log import SegmentedLog, log_digest
from encoders.training import EpochReport, TrainedModel, TrainingConfig, train
from encoders.training_data import FIRST_ITEM_ROW
from encoders.vocab import ItemVocabulary
from streams.progress import Progress
from streams.windowing import SegmentationConfig

__all__ = [
    "closing_from_extra",
    "evaluate_checkpoint",
    "export_items",
    "load_log",
    "train_checkpoint",
    "train_model",
]

Echo = Callable[[str], None]


def _echo(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def load_log(
    events: Sequence[Mapping[str, Any]], closing: SegmentationConfig, vocab: ItemVocabulary | None = None
) -> tuple[SegmentedLog, str]:
    """Cut events into segments; the vocabulary defaults to every item among them."""
    if vocab is None:
        vocab = ItemVocabulary.explicit(sorted({e["item_id"] for e in events}))
    return SegmentedLog(events, closing, vocab), log_digest(events)


def train_model(
    log: SegmentedLog, config: TrainingConfig, k: int, half_life_ms: float, echo: Echo = _echo
) -> TrainedModel:
    """Train with a progress bar per epoch and one line per epoch."""
    echo(
        f"training ({config.objective}, {config.aggregator if config.objective == 'segments' else 'dot'}) on "
        f"{len(log.events):,} events of {len(log.users):,} users, {len(log.segments):,} closed segments, "
        f"{len(log.vocab.items or ()):,} items"
    )
    bar: list[Progress] = []

    def on_step(step: int, steps: int, loss: float) -> None:
        if not bar:
            bar.append(Progress(f"epoch {len(reports) + 1}", steps, unit="step"))
        bar[0].update_to(step, loss=f"{loss:.4f}")

    reports: list[EpochReport] = []

    def on_epoch(report: EpochReport) -> None:
        reports.append(report)
        if bar:
            bar.pop().close()
        echo(
            f"epoch {report.epoch:>3}: loss {report.loss:.4f}  valid NDCG@10 {report.valid_ndcg:.4f} "
            f"HR@10 {report.valid_hr:.4f}  ({report.seconds:.1f} s)"
        )

    result = train(log, config, k, half_life_ms, on_step=on_step, on_epoch=on_epoch)
    echo(f"best epoch {result.best_epoch} of {len(result.epochs)}; trained in {result.seconds:.0f} s")
    return result


def train_checkpoint(
    events: Sequence[Mapping[str, Any]],
    source: str,
    out_dir: str | os.PathLike[str],
    closing: SegmentationConfig,
    k: int,
    half_life_ms: float,
    config: TrainingConfig,
    echo: Echo = _echo,
) -> SegmentBatchEncoder:
    """Train on events (read from `source`) and write a checkpoint directory; return its encoder."""
    log, digest = load_log(events, closing)
    result = train_model(log, config, k, half_life_ms, echo)
    extra = {
        "closing": asdict(closing),
        "representation": {"top_k_segments": k, "recency_half_life_ms": half_life_ms},
        "training": {
            **result.metadata(),
            "data": {
                "source": source,
                "digest": digest,
                "events": len(log.events),
                "users": len(log.users),
                "items": len(log.vocab.items or ()),
                "holdout": "each user's last event (test) and the one before (validation)",
            },
        },
    }
    encoder = SegmentBatchEncoder(result.model, log.vocab, device="cpu", extra=extra)
    encoder.save(out_dir)
    echo(f"wrote {out_dir} (model {encoder.model_version})")
    return encoder


def closing_from_extra(extra: Mapping[str, Any], where: str) -> SegmentationConfig:
    """The closing rules a checkpoint was trained with; EncoderError if it records none."""
    closing = extra.get("closing")
    names = {f.name for f in fields(SegmentationConfig)}
    if isinstance(closing, dict):
        closing = SegmentationConfig.recorded(closing)
    if not isinstance(closing, dict) or set(closing) != names:
        raise EncoderError(f"{where} records no closing settings: it was not written by `msli train`")
    return SegmentationConfig(**closing)


def _training_config(extra: Mapping[str, Any]) -> TrainingConfig:
    recorded = extra.get("training", {}).get("config", {})
    known = {f.name for f in fields(TrainingConfig)}
    return TrainingConfig(**{k: v for k, v in recorded.items() if k in known})


def evaluate_checkpoint(
    events: Sequence[Mapping[str, Any]],
    source: str,
    checkpoint: str | os.PathLike[str],
    history_checkpoint: str | os.PathLike[str] | None,
    vector_dtype: str,
    train_history: bool = True,
    echo: Echo = _echo,
    timing: float = 0.2,
) -> EvaluationReport:
    """Evaluate a trained checkpoint on events (read from `source`); train the full-history reference
    with the checkpoint's training settings if no history checkpoint is given."""
    encoder = SegmentBatchEncoder.load(checkpoint, device="cpu")
    closing = closing_from_extra(encoder.extra, str(checkpoint))
    representation = encoder.extra.get("representation", {})
    k = int(representation.get("top_k_segments", 16))
    half_life_ms = float(representation.get("recency_half_life_ms", 7 * 86_400_000))
    log, digest = load_log(events, closing, encoder.vocab)
    missing = int((log.event_item < FIRST_ITEM_ROW).sum())
    if missing:
        raise EncoderError(
            f"{missing:,} events of {source} are for items outside the checkpoint's vocabulary"
        )
    trained_on = encoder.extra.get("training", {}).get("data", {}).get("digest")
    if trained_on != digest:
        echo(f"warning: {checkpoint} was trained on other data: its training may have seen these test events")
    history: SegmentBatchEncoder | None = None
    if history_checkpoint is not None:
        history = SegmentBatchEncoder.load(history_checkpoint, device="cpu")
        if history.vocab != encoder.vocab:
            raise EncoderError(f"{history_checkpoint} has another item vocabulary than {checkpoint}")
    elif train_history:
        config = replace(_training_config(encoder.extra), objective="history")
        echo("no --history-checkpoint: training the full-history reference with the same settings")
        result = train_model(log, config, k, half_life_ms, echo)
        history = SegmentBatchEncoder(result.model, log.vocab, device="cpu")
    stage = lambda s: echo(s + " ...")  # noqa: E731
    return evaluate(log, encoder, history, k, half_life_ms, vector_dtype, on_stage=stage, timing=timing)


def export_items(checkpoint: str | os.PathLike[str], out: str | os.PathLike[str]) -> tuple[int, str]:
    """Write the candidate item vectors a ranker scores with; (items written, model version).

    `.npz`: arrays item_ids, vectors (n, d) float32 and model_version, plus biases (n,) float32 when
    the model learned item biases and seen_item_score (a scalar) when it learned one. `.jsonl`: a
    header line {"model_version", "dim", "items", "item_bias", "seen_item_score"} (the score null
    when the model has none), then one {"item_id", "vector"} per item, with "bias" when the model
    has them. A ranker adds an item's bias to every late-interaction score of that item, and the
    seen-item score to each candidate in the representation's seen_item_ids (encoders.scoring).
    """
    encoder = SegmentBatchEncoder.load(checkpoint, device="cpu")
    ids = list(encoder.vocab.items or ())
    if not ids:
        raise EncoderError(f"{checkpoint} hashes item ids: it has no item list to export (train one)")
    vectors = encoder.item_vectors(ids)
    biases = encoder.item_biases(ids)
    path = Path(out)
    tmp = path.with_name(f".{path.name}.tmp")
    if path.suffix == ".npz":
        with tmp.open("wb") as f:
            arrays = {
                "item_ids": np.array(ids),
                "vectors": vectors,
                "model_version": np.array(encoder.model_version),
            }
            if biases is not None:
                arrays["biases"] = biases
            if encoder.seen_item_score is not None:
                arrays["seen_item_score"] = np.array(encoder.seen_item_score, dtype=np.float32)
            np.savez(f, **arrays)  # type: ignore[arg-type]
    elif path.suffix == ".jsonl":
        with tmp.open("w", encoding="utf-8") as f:
            header = {
                "model_version": encoder.model_version,
                "dim": encoder.dim,
                "items": len(ids),
                "item_bias": biases is not None,
                "seen_item_score": encoder.seen_item_score,
            }
            f.write(json.dumps(header) + "\n")
            for i, (item_id, vector) in enumerate(zip(ids, vectors.tolist(), strict=True)):
                line = {"item_id": item_id, "vector": vector}
                if biases is not None:
                    line["bias"] = float(biases[i])
                f.write(json.dumps(line) + "\n")
    else:
        raise EncoderError(f"{out}: name the output .npz or .jsonl")
    os.replace(tmp, path)
    return len(ids), encoder.model_version
