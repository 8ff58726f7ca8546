"""The segment encoder: a small transformer that turns one closed segment's events into one vector.

In eval mode, the CPU forward pass is built so that a segment's vector depends on that segment alone (and the
bucket length it is padded to), never on the other rows of its batch: the linear layers give each
row the same bits whatever the others (RowwiseLinear), attention runs per segment and head,
LayerNorm and softmax work row by row, and the only elementwise ops are exactly rounded ones (add,
mul, div, ReLU).
encoders.inference explains why, with what was measured, and supplies the rest (bucketing).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, cast

import torch
from torch import nn
from torch.nn import functional as F

from encoders.context import SegmentContext
from encoders.errors import EncoderError
from schemas import ACTIONS

__all__ = ["N_TIME_FEATURES", "SEEN_ITEM_SCALE", "PackedGroup", "SegmentEncoder", "SegmentEncoderConfig"]

# Per-event time features, computed by encoders.inference.segment_arrays: log1p seconds since the
# segment's earliest event, signed log1p seconds since the previous event, signed log1p of the
# weight (0 when absent), and 1/0 for whether a weight is present.
N_TIME_FEATURES = 4

# The seen-item score is learned as a multiple of a raw parameter so that it can reach scores of the
# size of item biases and dot products (several units) within a run: AdamW moves a parameter by about
# the learning rate per step, which would take a raw score thousands of steps to get there.
SEEN_ITEM_SCALE = 10.0


@dataclass(frozen=True)
class SegmentEncoderConfig:
    """Shape and initialisation of a SegmentEncoder; a bigger GPU model is only a bigger config."""

    dim: int = 64  # width of tokens, segment vectors and item embeddings (one space; a multiple of 8)
    n_layers: int = 2  # transformer blocks
    n_heads: int = 2  # attention heads per block; dim must be a multiple of it
    mlp_ratio: int = 4  # the feed-forward hidden width is mlp_ratio * dim
    dropout: float = 0.1  # dropout rate while training; inference runs in eval mode, where it is off
    max_events: int = 256  # learned positions (a multiple of 8); a longer segment keeps its last max_events
    n_actions: int = len(ACTIONS)  # rows of the action embedding: one per schemas.ACTIONS symbol
    # rows of the item embedding, row 0 padding: hash buckets for an untrained model, or an explicit
    # vocabulary's size + 2 (padding and out-of-vocabulary rows) for a trained one
    n_item_buckets: int = 2**15
    bias: bool = True  # biases in the Linear layers and LayerNorms
    init_std: float = 0.02  # std of the normal initialisation of every weight matrix and embedding
    layer_norm_eps: float = 1e-5  # LayerNorm epsilon
    # a learned score per item (a popularity prior) that rankers add to every late-interaction score;
    # a separate parameter, so the item vectors and the segment vectors are unchanged by it
    item_bias: bool = False
    # transformer blocks that read a user's newest segment vectors together when a representation is
    # built (encoders.context); 0: the representation carries the stored vectors as they are
    context_layers: int = 0
    # a learned score that rankers add to every candidate the representation's own segments hold
    # (the items the user just interacted with): negative where users rarely return to an item, as
    # on MovieLens, positive where they do (re-orders, replays); see encoders.scoring
    seen_item_score: bool = False

    def __post_init__(self) -> None:
        problem = self._problem()
        if problem:
            raise EncoderError(f"SegmentEncoderConfig: {problem}")

    def _problem(self) -> str | None:
        for name in ("dim", "n_layers", "n_heads", "mlp_ratio", "max_events", "n_actions"):
            if getattr(self, name) < 1:
                return f"{name} must be >= 1, got {getattr(self, name)}"
        if self.context_layers < 0:
            return f"context_layers must be >= 0, got {self.context_layers}"
        if self.n_item_buckets < 2:
            return f"n_item_buckets must be >= 2, got {self.n_item_buckets}"
        if self.dim % self.n_heads:
            return f"dim {self.dim} is not a multiple of n_heads {self.n_heads}"
        # Reproducible CPU vectors are measured for these shapes only: odd widths and lengths change
        # the alignment of a segment's rows with its place in the batch, and MKL's kernels with it.
        if self.dim % 8 or self.max_events % 8:
            return f"dim ({self.dim}) and max_events ({self.max_events}) must be multiples of 8"
        if not 0.0 <= self.dropout < 1.0:
            return f"dropout must be in [0, 1), got {self.dropout}"
        return None

    def to_dict(self) -> dict[str, Any]:
        """Return the fields as plain JSON values (what config.json holds).

        Fields added after the first checkpoints were written appear only when set, so a model that
        does not use them keeps its config bytes, and with them its content version.
        """
        data = dataclasses.asdict(self)
        for name in _LATER_FIELDS:
            if data[name] == getattr(_DEFAULTS, name):
                del data[name]
        return data

    @classmethod
    def from_dict(cls, data: Any) -> SegmentEncoderConfig:
        """Build a config from config.json's object, refusing unknown fields and wrong types."""
        if not isinstance(data, dict):
            raise EncoderError(f"encoder config must be a JSON object, got {type(data).__name__}")
        known = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise EncoderError(f"unknown encoder config fields: {', '.join(unknown)}")
        defaults = cls()
        values: dict[str, Any] = {}
        for name, value in data.items():
            want = type(getattr(defaults, name))
            if want is float and type(value) is int:
                value = float(value)  # JSON writes 0.0 as 0 in some tools; keep the content canonical
            if type(value) is not want:
                raise EncoderError(f"encoder config field {name} must be {want.__name__}, got {value!r}")
            values[name] = value
        return cls(**values)


_LATER_FIELDS = ("context_layers", "seen_item_score")
_DEFAULTS = SegmentEncoderConfig()


# A CPU product in eval mode pads its rows to a multiple of this (see RowwiseLinear).
ROW_MULTIPLE = 32


class RowwiseLinear(nn.Linear):
    """nn.Linear whose every output row has the same bits whatever the other rows (CPU, eval mode).

    The batch is folded into the rows of one GEMM, as nn.Linear does, but the row count is padded
    to a multiple of ROW_MULTIPLE first. MKL picks its sgemm kernel by shape: with 1, 2 or 3 rows
    (and 5 with two threads) a row's output differs in the last bit from the same row inside a
    larger product, while for every multiple of 32 from 32 to 4,096 rows each row matched a product
    of 128 rows bit for bit, in any position and company (measured: torch 2.13, MKL 2024.2, AVX-512,
    and MKL held to AVX2 or SSE4.2 by MKL_ENABLE_INSTRUCTIONS; 1 to 8 threads; weights from 4x64 to
    2048x512). tests/unit/encoders/test_encoders_inference.py holds every build to it.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training or x.device.type != "cpu":  # no bit-identity promised there (inference.py)
            return F.linear(x, self.weight, self.bias)
        *lead, width = x.shape
        rows = x.reshape(-1, width)
        n = rows.size(0)
        short = -n % ROW_MULTIPLE
        if short:
            rows = torch.cat([rows, rows.new_zeros(short, width)])
        return F.linear(rows, self.weight, self.bias)[:n].view(*lead, -1)


class SelfAttention(nn.Module):
    """Bidirectional multi-head self-attention: a closed segment is read as a whole, not causally."""

    def __init__(self, config: SegmentEncoderConfig) -> None:
        super().__init__()
        self.n_heads = config.n_heads
        self.dropout = config.dropout
        self.c_attn = RowwiseLinear(config.dim, 3 * config.dim, bias=config.bias)
        self.c_proj = RowwiseLinear(config.dim, config.dim, bias=config.bias)
        self.resid_drop = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor) -> torch.Tensor:
        return self.resid_drop(self.c_proj(self._attend(self.c_attn(x), key_mask)))

    def forward_packed(self, x: torch.Tensor, groups: Sequence[PackedGroup]) -> torch.Tensor:
        """forward() for packed tokens x (N, C): each group gathered into its padded (B, T) layout
        for attention, the projections over all N rows at once."""
        width = x.size(1)
        qkv = self.c_attn(x)
        # Padding rows stay finite (zero where no group writes), since attention reads them as
        # masked keys: a zero weight times a finite value adds an exact zero, as in forward().
        y = qkv.new_zeros(x.size(0), width)  # in qkv's dtype under autocast
        for group in groups:
            rows = group.gather.view(-1)
            if group.gather.size(1) == 1:  # one event attends to itself alone: exactly its value
                y[rows] = qkv[rows, 2 * width :]
            else:
                # Rows copied by index_select and index_copy_, not indexed by the (B, T) tensor:
                # 2-3 us a segment less, the same bits. Every padded position writes the one
                # padding row, each a finite value, so whichever lands there is as good.
                attended = self._attend(_gather_rows(qkv, group.gather), group.mask)
                y.index_copy_(0, rows, attended.view(-1, width))
        return self.c_proj(y)

    def _attend(self, qkv: torch.Tensor, key_mask: torch.Tensor) -> torch.Tensor:
        B, T, C3 = qkv.size()
        C = C3 // 3
        hs = C // self.n_heads
        # contiguous(): a strided view reaches MKL with another leading dimension (and, at B=1,
        # without the copy matmul makes for B>1), which changes its kernel and the last bits. One
        # copy lays out q, k and v, each then a contiguous (B, nh, T, hs) block of it: three ops
        # instead of ten, which a pass runs per group and layer.
        q, k, v = qkv.view(B, T, 3, self.n_heads, hs).permute(2, 0, 3, 1, 4).contiguous()
        # Not the fused kernel on CPU, even while training: its CPU backward is not reproducible with
        # more than one thread (measured: 1 of 4 seeded runs differed), and training must be.
        y = attend(q, k, v, key_mask, dropout=self.dropout if self.training else 0.0, fused=qkv.is_cuda)
        return y.transpose(1, 2).contiguous().view(B, T, C)  # (B, T, C)


def attend(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_mask: torch.Tensor, dropout: float, fused: bool
) -> torch.Tensor:
    """Attend from every position to the segment's real events only (padding keys are masked out).

    The fused kernel is for CUDA. On CPU the explicit form keeps every step row-independent: a
    batched matmul per (segment, head), an exact masked_fill, and softmax over the last dimension.
    Every segment has at least one real event, so no row is masked entirely.
    """
    mask = key_mask[:, None, None, :]  # (B, 1, 1, T)
    if fused:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout)
    att = q @ k.transpose(-2, -1)  # (B, nh, T, T)
    # In place: two fewer copies per group and layer. Autograd allows it (neither op's gradient
    # reads its input) and the arithmetic is the same.
    att.mul_(1.0 / math.sqrt(k.size(-1))).masked_fill_(~mask, float("-inf"))
    att = F.softmax(att, dim=-1)
    if dropout > 0.0:
        att = F.dropout(att, p=dropout)
    return att @ v  # (B, nh, T, hs)


class MLP(nn.Module):
    """Position-wise feed-forward with ReLU, the one activation that is exact in every code path."""

    def __init__(self, config: SegmentEncoderConfig) -> None:
        super().__init__()
        self.c_fc = RowwiseLinear(config.dim, config.mlp_ratio * config.dim, bias=config.bias)
        self.c_proj = RowwiseLinear(config.mlp_ratio * config.dim, config.dim, bias=config.bias)
        self.drop = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.c_proj(F.relu(self.c_fc(x))))


class Block(nn.Module):
    """Pre-LayerNorm transformer block, as in GPT-2 and nanoGPT."""

    def __init__(self, config: SegmentEncoderConfig) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.dim, eps=config.layer_norm_eps, bias=config.bias)
        self.attn = SelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.dim, eps=config.layer_norm_eps, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), key_mask)
        return x + self.mlp(self.ln_2(x))

    def forward_packed(self, x: torch.Tensor, groups: Sequence[PackedGroup]) -> torch.Tensor:
        x = x + self.attn.forward_packed(self.ln_1(x), groups)
        return x + self.mlp(self.ln_2(x))


class SegmentEncoder(nn.Module):
    """Encode segments into vectors that live in the item-embedding space.

    The item embedding is shared between input and output: a segment vector scores a candidate
    item by a dot product with that item's input embedding, so a ranker needs nothing but the
    embedding table (and, with config.item_bias, one learned bias per item added to every score)
    and the user's few segment vectors.
    """

    def __init__(self, config: SegmentEncoderConfig) -> None:
        super().__init__()
        self.config = config
        self.item_emb = nn.Embedding(config.n_item_buckets, config.dim, padding_idx=0)
        self.action_emb = nn.Embedding(config.n_actions, config.dim)
        self.pos_emb = nn.Embedding(config.max_events, config.dim)
        self.time_proj = RowwiseLinear(N_TIME_FEATURES, config.dim, bias=config.bias)
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList([Block(config) for _ in range(config.n_layers)])
        self.ln_f = nn.LayerNorm(config.dim, eps=config.layer_norm_eps, bias=config.bias)
        self.head = RowwiseLinear(config.dim, config.dim, bias=False)  # token states -> item space
        # Not read by forward(): scorers add it to a candidate's score (row 0 and 1 stay unused).
        self.item_bias = nn.Parameter(torch.zeros(config.n_item_buckets)) if config.item_bias else None
        # Not read by forward() either: run over a user's segment vectors when a representation is built.
        self.context = SegmentContext(config) if config.context_layers else None
        # Not read by forward(): the seen-item score is SEEN_ITEM_SCALE times this (zero at the start).
        self.seen_item_raw = nn.Parameter(torch.zeros(())) if config.seen_item_score else None

    def seen_item_score(self) -> torch.Tensor | None:
        """The score added to a candidate that the state's own segments hold, or None."""
        return None if self.seen_item_raw is None else self.seen_item_raw * SEEN_ITEM_SCALE

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator) -> None:
        """Initialise every parameter from `generator` alone, so a seed pins the weights exactly."""
        std = self.config.init_std
        # GPT-2's scaled init of the projections that write into the residual stream.
        resid_std = std / math.sqrt(2 * self.config.n_layers)
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=resid_std, generator=generator)
            elif p.dim() >= 2:
                nn.init.normal_(p, mean=0.0, std=std, generator=generator)
            elif (name.startswith("ln_") or ".ln_" in name) and name.endswith("weight"):
                nn.init.ones_(p)
            else:
                nn.init.zeros_(p)
        self.item_emb.weight[0].zero_()  # padding row

    def forward(
        self, items: torch.Tensor, actions: torch.Tensor, features: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor:
        """Map padded segments to one vector each.

        items, actions: (B, T) int64 rows of the item and action embeddings (0 where padded);
        features: (B, T, N_TIME_FEATURES) float32; mask: (B, T) bool, True on real events, which
        come first in each row. Returns (B, dim).
        """
        length = items.size(1)
        if length > self.config.max_events:
            raise EncoderError(f"{length} positions exceed max_events {self.config.max_events}")
        pos = torch.arange(length, dtype=torch.long, device=items.device)  # (T,)
        x = self.item_emb(items) + self.action_emb(actions) + self.pos_emb(pos)  # (B, T, C)
        x = self.drop(x + self.time_proj(features))  # (B, T, C)
        for block in self.blocks:
            x = block(x, mask)
        # The head maps every token before pooling (in exact arithmetic the same as after, as it
        # has no bias).
        x = self.head(self.ln_f(x)).float()  # (B, T, C)
        return _masked_mean(x, mask)

    def forward_packed(
        self,
        items: torch.Tensor,
        actions: torch.Tensor,
        features: torch.Tensor,
        positions: torch.Tensor,
        groups: Sequence[PackedGroup],
        n_segments: int,
    ) -> torch.Tensor:
        """forward() in eval mode for segments of many lengths at once, given as their events one
        after the other: items, actions, positions (R,) and features (R, N_TIME_FEATURES), where
        the real events are followed by padding rows (item row 0, action 0, position 0, zero
        features) up to a multiple of ROW_MULTIPLE, at least one: the row the groups' padded
        positions read. The linear layers and norms run once over the R rows, so RowwiseLinear
        pads nothing itself (one product per layer, no copies to pad or to cut each layer's
        input); attention and pooling run per group, each a bucket of segments in forward()'s
        padded layout. Returns (n_segments, dim), row i for the segment that groups place at
        output row i.

        On CPU each vector is bit for bit what forward() gives for its segment padded to its group's
        length (tests/unit/encoders), since every step is row by row or per segment, and padding
        only ever adds exact zeros.
        """
        x = self.item_emb(items) + self.action_emb(actions) + self.pos_emb(positions)  # (R, C)
        x = self.drop(x + self.time_proj(features))
        for block in self.blocks:
            x = cast(Block, block).forward_packed(x, groups)
        x = self.head(self.ln_f(x)).float()  # (R, C)
        out = x.new_empty(n_segments, x.size(1))
        for group in groups:
            out[group.rows] = _masked_mean(_gather_rows(x, group.gather), group.mask)
        return out


class PackedGroup(NamedTuple):
    """Segments of one padded length in a packed batch (SegmentEncoder.forward_packed)."""

    gather: torch.Tensor  # (B, T) int64 row of each of the segments' events; a padding row where padded
    mask: torch.Tensor  # (B, T) bool, True on real events (which come first)
    rows: torch.Tensor  # (B,) int64 output row of each segment


def _gather_rows(x: torch.Tensor, gather: torch.Tensor) -> torch.Tensor:
    """x[gather] for rows x (N, C) and a (B, T) index: (B, T, C), by index_select (a row copy)."""
    return x.index_select(0, gather.view(-1)).view(*gather.shape, x.size(1))


def _masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B, T, C), (B, T) -> (B, C): the mean over real events, as one small matmul per segment
    (padding gets weight 0 and adds exact zeros). In float32 even under bf16 autocast, where 1/n
    would keep only three digits."""
    w = mask.float() / mask.sum(dim=1, keepdim=True).float()  # (B, T)
    with torch.autocast(device_type=x.device.type, enabled=False):
        return torch.bmm(w.unsqueeze(1), x).squeeze(1)  # (B, 1, T) @ (B, T, C) -> (B, C)
