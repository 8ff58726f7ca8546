"""The public surface is what encoders.__all__ lists, and every name there exists."""

import encoders

EXPECTED = {
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
}


def test_all_lists_the_public_surface():
    assert set(encoders.__all__) == EXPECTED
    assert all(hasattr(encoders, name) for name in encoders.__all__)


def test_one_root_error():
    assert issubclass(encoders.EncoderError, Exception)
    from encoders import checkpoint, inference, model, scoring, vocab

    for module in (checkpoint, inference, model, scoring, vocab):
        errors = [v for v in vars(module).values() if isinstance(v, type) and issubclass(v, Exception)]
        assert errors == [encoders.EncoderError] or errors == [], module.__name__
