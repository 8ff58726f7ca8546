"""Segment encoders: the torch model, its reproducible batched inference, checkpoints, and the
numpy late-interaction scorers a ranker uses."""

from encoders.checkpoint import content_version
from encoders.errors import EncoderError
from encoders.inference import ContextState, SegmentBatchEncoder, SegmentInput, bucket_lengths
from encoders.model import SegmentEncoder, SegmentEncoderConfig
from encoders.scoring import attention_scores, fused_scores, maxsim_scores
from encoders.vocab import ItemVocabulary

__all__ = [
    "ContextState",
    "EncoderError",
    "ItemVocabulary",
    "SegmentBatchEncoder",
    "SegmentEncoder",
    "SegmentEncoderConfig",
    "SegmentInput",
    "attention_scores",
    "bucket_lengths",
    "content_version",
    "fused_scores",
    "maxsim_scores",
]
