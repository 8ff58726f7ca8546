"""An encoder in the stage's own process that the stage pipelines with, as with an encoder process.

On a GPU, `SegmentBatchEncoder.start_encoding` returns once the model's passes are queued. Behind
this wrapper the stage then merges the next micro-batch and stores the one before while the GPU
runs this one (`EncoderStage.submit`), instead of waiting for each batch's vectors and leaving the
GPU idle while it merges and stores. The stage's thread builds the representations when it
collects a batch's outcome, in the order the batches were started, each merging the new segments
of the batch before (`BatchBuilder`), as an encoder process builds them
(streams/encoder_process.py).

On a CPU the passes run inside start_encoding, so nothing would overlap and each batch would be
stored a batch later: the worker puts a GPU encoder behind this wrapper, a CPU one in an encoder
process or, with that off, in the stage as it is. The stage stores exactly what it stores without
a pipeline (tests/integration/test_encoder_pipeline.py, which runs this wrapper on a CPU).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from encoders import ContextState, SegmentBatchEncoder, SegmentInput
from streams.representation_batch import BatchBuilder, BatchOutcome, RepresentationJob

__all__ = ["PipelinedEncoder"]


class PipelinedEncoder:
    """Stands in for a `SegmentBatchEncoder` in the encoder stage, a micro-batch apart."""

    asynchronous = True  # start_batch returns before the outcome exists: the stage pipelines
    builds_representations = True

    def __init__(self, encoder: SegmentBatchEncoder) -> None:
        self.encoder = encoder
        self._builder = BatchBuilder(encoder.contextualize if encoder.has_context else None)

    @property
    def model_version(self) -> str:
        return self.encoder.model_version

    def start_batch(
        self, segments: Sequence[SegmentInput], job: RepresentationJob
    ) -> Callable[[], BatchOutcome]:
        """Start encoding the segments (raising EncoderError on a bad one); the call returned waits
        for their vectors and builds the job's representations. Call them in the order started."""
        vectors = self.encoder.start_encoding(segments)

        def outcome() -> BatchOutcome:
            try:
                found = vectors()
            except BaseException:
                self._builder.forget()
                raise
            return self._builder.finish(job, found)

        return outcome

    def start_encoding(self, segments: Sequence[SegmentInput]) -> Callable[[], np.ndarray]:
        """Vectors alone, for callers without a job (the stage always gives one)."""
        return self.encoder.start_encoding(segments)

    def contextualize(self, states: Sequence[ContextState], k: int) -> list[np.ndarray]:
        return self.encoder.contextualize(states, k)

    def __getattr__(self, name: str) -> Any:  # dim, device, item_vectors, ... of the encoder
        return getattr(self.encoder, name)
