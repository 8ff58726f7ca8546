"""SegmentEncoderConfig and SegmentEncoder: validation, shapes, seeded initialisation."""

import dataclasses
import json

import pytest
import torch

from encoders import EncoderError, SegmentBatchEncoder, SegmentEncoder, SegmentEncoderConfig
from encoders.model import N_TIME_FEATURES, attend
from schemas import ACTIONS

TINY = SegmentEncoderConfig(dim=16, n_layers=1, n_heads=2, max_events=32, n_item_buckets=256)


def test_defaults_follow_the_schema():
    config = SegmentEncoderConfig()
    assert config.n_actions == len(ACTIONS) == 10
    assert (config.dim, config.n_layers, config.n_heads) == (64, 2, 2)


def test_every_config_field_is_commented():
    # House style: a comment per field, as in nanoGPT's GPTConfig.
    import inspect

    import encoders.model

    source = inspect.getsource(encoders.model.SegmentEncoderConfig)
    for f in dataclasses.fields(SegmentEncoderConfig):
        lines = source.splitlines()
        i = next(n for n, line in enumerate(lines) if line.strip().startswith(f"{f.name}:"))
        assert "#" in lines[i] or lines[i - 1].strip().startswith("#"), f.name


@pytest.mark.parametrize(
    "changes",
    [
        {"dim": 20, "n_heads": 2},
        {"dim": 16, "n_heads": 3},
        {"max_events": 30},
        {"n_layers": 0},
        {"dropout": 1.0},
        {"n_item_buckets": 1},
    ],
)
def test_bad_configs_are_refused(changes):
    with pytest.raises(EncoderError, match="SegmentEncoderConfig"):
        dataclasses.replace(TINY, **changes)


def test_config_json_round_trip_and_strictness():
    data = json.loads(json.dumps(TINY.to_dict()))
    assert SegmentEncoderConfig.from_dict(data) == TINY
    assert SegmentEncoderConfig.from_dict({**data, "dropout": 0}).dropout == 0.0  # JSON int for a float
    with pytest.raises(EncoderError, match="unknown"):
        SegmentEncoderConfig.from_dict({**data, "n_experts": 4})
    with pytest.raises(EncoderError, match="must be int"):
        SegmentEncoderConfig.from_dict({**data, "dim": "16"})
    with pytest.raises(EncoderError, match="must be bool"):
        SegmentEncoderConfig.from_dict({**data, "bias": 1})


def _batch(B=3, T=8, config=TINY):
    g = torch.Generator().manual_seed(0)
    items = torch.randint(1, config.n_item_buckets, (B, T), generator=g)
    actions = torch.randint(0, config.n_actions, (B, T), generator=g)
    features = torch.rand(B, T, N_TIME_FEATURES, generator=g)
    mask = torch.arange(T)[None, :] < torch.tensor([T, 3, 1][:B])[:, None]  # (B, T)
    return items, actions, features, mask


def test_forward_shape():
    model = SegmentEncoder(TINY).eval()
    with torch.inference_mode():
        out = model(*_batch())
    assert out.shape == (3, TINY.dim) and out.dtype == torch.float32


def test_forward_refuses_too_many_positions():
    with pytest.raises(EncoderError, match="max_events"):
        SegmentEncoder(TINY)(*_batch(T=40))


def test_padding_does_not_leak_into_the_vector():
    model = SegmentEncoder(TINY).eval()
    items, actions, features, mask = _batch()
    with torch.inference_mode():
        before = model(items, actions, features, mask)
        items[~mask] = 7  # change only padded positions
        features[~mask] = 9.0
        after = model(items, actions, features, mask)
    torch.testing.assert_close(before, after)


def test_seeded_init_is_reproducible_and_leaves_global_rng_alone():
    torch.manual_seed(123)
    state = torch.get_rng_state()
    a = SegmentBatchEncoder.untrained(TINY, seed=5, device="cpu")
    assert torch.equal(torch.get_rng_state(), state)
    b = SegmentBatchEncoder.untrained(TINY, seed=5, device="cpu")
    c = SegmentBatchEncoder.untrained(TINY, seed=6, device="cpu")
    sa, sb = a.model.state_dict(), b.model.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert a.model_version == b.model_version != c.model_version
    assert a.model_version.startswith("m-") and len(a.model_version) == 14
    assert not a.model.item_emb.weight[0].any()  # padding row


def test_fused_attention_matches_explicit_form():
    # CUDA uses scaled_dot_product_attention; it must mean the same thing as the CPU form.
    g = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(2, 2, 8, 8, generator=g) for _ in range(3))
    key_mask = torch.arange(8)[None, :] < torch.tensor([8, 5])[:, None]
    torch.testing.assert_close(
        attend(q, k, v, key_mask, dropout=0.0, fused=True),
        attend(q, k, v, key_mask, dropout=0.0, fused=False),
    )
