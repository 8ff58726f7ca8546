"""Segment encoders: the torch model, its reproducible batched inference, checkpoints, and the
numpy late-interaction scorers a ranker uses."""

from encoders.checkpoint import content_version
from encoders.errors import EncoderError
from encoders.inference import (
    ContextState,
    SegmentBatchArrays,
    SegmentBatchEncoder,
    SegmentInput,
    bucket_lengths,
)
from encoders.model import SegmentEncoder, SegmentEncoderConfig
from encoders.scoring import attention_scores, candidate_bias, fused_scores, maxsim_scores, seen_mask
from encoders.vocab import ItemVocabulary

__all__ = [
    "ContextState",
    "EncoderError",
    "ItemVocabulary",
    "SegmentBatchArrays",
    "SegmentBatchEncoder",
    "SegmentEncoder",
    "SegmentEncoderConfig",
    "SegmentInput",
    "attention_scores",
    "bucket_lengths",
    "candidate_bias",
    "content_version",
    "fused_scores",
    "maxsim_scores",
    "seen_mask",
]
