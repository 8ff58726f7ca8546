"""A micro-batch's vectors and user representations, from what the encoder stage read for it.

Building a user's representation is pure work once its inputs are read: decode the user's newest
K stored segments, merge the batch's new ones in, read them in context, fuse, and encode the
record. So the stage reads those inputs (the store's raw entries) when it merges a micro-batch,
and hands them with the segments to its encoder; an encoder process (streams/encoder_process.py)
then does all of it on its own core, beside the stage's Python. For users with history it had
been more than half of the stage's time (docs/performance.md, twelfth round). With any other
encoder the stage runs the same code on its own thread.

The store read for micro-batch n happens while the batch before it, n-1, is still with the encoder
and not stored (the stage's pipeline). n-1's new segments are then missing from what was read, so
the job says so (`after_previous`), and the `BatchBuilder` that built n-1 just before merges the
segments it kept from it. The union of the store's newest K, n-1's and n's new segments holds
the newest K once both are stored, so each representation equals the one built after the store
write, byte for byte (tests/integration/test_encoder_pipeline.py).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from encoders import ContextState
from store import SegmentVectorHead, StoredSegment, decode_segments_many, quantize
from store.vector_codec import VectorDtype
from streams.fuser import representation_bytes

__all__ = [
    "BatchBuilder",
    "BatchOutcome",
    "RepresentationJob",
    "RepresentationSpec",
    "SegmentHead",
    "finish_batch",
    "with_vector",
]

# A new segment's fields but its vector, in StoredSegment's order: user, window start, window end,
# ordinal, last event time, event count, item ids.
SegmentHead = SegmentVectorHead
# The encoder's contextualize(states, k): each user's newest segments read in context.
Contextualize = Callable[[Sequence[ContextState], int], list[np.ndarray]]


@dataclass(frozen=True)
class RepresentationSpec:
    """What every representation of one stage is built with."""

    model_version: str
    top_k: int
    half_life_ms: float
    vector_dtype: VectorDtype  # the store's: new vectors are fused as they will read back


@dataclass(frozen=True)
class RepresentationJob:
    """A micro-batch's representation inputs, read when the batch was merged."""

    spec: RepresentationSpec
    heads: list[SegmentHead]  # the batch's new segments, in the order of their vectors
    users: list[str]  # the users they belong to, sorted: one representation each
    stored: list[list[tuple[bytes, bytes]]]  # each user's newest K entries in the store, newest first
    after_previous: bool  # read before the batch before this one was stored: merge its segments too


@dataclass(frozen=True)
class BatchOutcome:
    vectors: np.ndarray  # (segments, dim) float32, rounded to the store's dtype
    representations: list[bytes]  # UserRepresentation Avro, one per job user, in job order


def finish_batch(
    job: RepresentationJob,
    vectors: np.ndarray,
    contextualize: Contextualize | None,
    previous: Mapping[str, list[StoredSegment]],
) -> tuple[BatchOutcome, dict[str, list[StoredSegment]]]:
    """The batch's outcome from its encoder output, and its new segments by user (the `previous`
    of a job read after_previous this one). `previous` must be the batch before's when
    job.after_previous, and is ignored otherwise. `contextualize` is None for a model without
    context layers: the representations carry the stored vectors, with no state per user to build."""
    spec = job.spec
    vectors = quantize(vectors, spec.vector_dtype)
    new_by_user: dict[str, list[StoredSegment]] = defaultdict(list)
    for head, vector in zip(job.heads, vectors, strict=True):
        new_by_user[head[0]].append(with_vector(head, vector))
    earlier = previous if job.after_previous else {}
    newest = [
        _newest(stored, earlier.get(user, ()), new_by_user[user], spec.top_k)
        for user, stored in zip(job.users, decode_segments_many(job.users, job.stored), strict=True)
    ]
    contextual = None
    if contextualize is not None:
        contextual = contextualize([ContextState.of(segments) for segments in newest], spec.top_k)
    representations = representation_bytes(
        job.users, spec.model_version, newest, spec.half_life_ms, contextual
    )
    return BatchOutcome(vectors, representations), new_by_user


class BatchBuilder:
    """finish_batch() for micro-batches in the order the stage started them, each given the new
    segments of the one before (its `previous`). An encoder process runs one; so does a pipelined
    encoder in the stage's process (streams/pipelined_encoder.py)."""

    def __init__(self, contextualize: Contextualize | None) -> None:
        self._contextualize = contextualize
        self._previous: dict[str, list[StoredSegment]] = {}

    def finish(self, job: RepresentationJob, vectors: np.ndarray) -> BatchOutcome:
        """The batch's outcome; the next job read after_previous merges this batch's segments."""
        previous, self._previous = self._previous, {}  # if this raises, nothing carries over
        outcome, self._previous = finish_batch(job, vectors, self._contextualize, previous)
        return outcome

    def forget(self) -> None:
        """A batch went by without a job (or failed): no later job may merge what came before it."""
        self._previous = {}


def with_vector(head: SegmentHead, vector: np.ndarray) -> StoredSegment:
    user_id, window_start, window_end, ordinal, last_event, count, item_ids = head
    return StoredSegment(user_id, window_start, window_end, ordinal, last_event, count, vector, item_ids)


def _newest(
    stored: list[StoredSegment], earlier: Sequence[StoredSegment], new: list[StoredSegment], k: int
) -> list[StoredSegment]:
    """The newest k of a user's segments once `earlier` and then `new` are stored, newest first
    (a segment stored again, with a late event, replaces its older version)."""
    current = {(s.window_start_ms, s.ordinal): s for s in stored}
    current.update({(s.window_start_ms, s.ordinal): s for s in earlier})
    current.update({(s.window_start_ms, s.ordinal): s for s in new})
    return [current[key] for key in sorted(current, reverse=True)[:k]]
