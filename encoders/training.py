"""Train the segment encoder (and the full-history reference) on an event log; write a checkpoint.

The objective is the ranker's: a state's segment vectors score every item with the configured
late-interaction aggregator (encoders.objectives), and a softmax over all items asks for the item
the user turned to next. Item embeddings are trained with the encoder; they are the candidate
vectors a ranker scores (`msli export-items`). Early stopping keeps the epoch with the best
validation NDCG@10 (each user's second-to-last event); the test events are never read here.

Reproducible on CPU: weights start from `seed` alone, and dropout and shuffling draw from
generators seeded from it (the caller's RNG state is left as it was). On CUDA the forward pass runs
under bf16 autocast; that path is written for GPUs but has not been run on one.
"""

from __future__ import annotations

import contextlib
import copy
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

import numpy as np
import torch
from torch.nn import functional as F

from encoders.errors import EncoderError
from encoders.metrics import rank_of_target, ranking_metrics
from encoders.model import SegmentEncoder, SegmentEncoderConfig
from encoders.objectives import Aggregator, add_seen_item_score, late_interaction_logits
from encoders.segmented_log import SegmentedLog
from encoders.training_data import (
    FIRST_ITEM_ROW,
    ScoredState,
    SegmentExamples,
    history_arrays,
    pad_arrays,
    seen_candidates,
    seen_pairs,
    state_tensors,
)

__all__ = ["EpochReport", "TrainedModel", "TrainingConfig", "train"]

Objective = Literal["segments", "history"]


@dataclass(frozen=True)
class TrainingConfig:
    """What `msli train` does; the model's shape is here too, so a larger GPU model is a config change."""

    objective: Objective = "segments"  # segments (late interaction) or history (the full-history reference)
    aggregator: Aggregator = "maxsim"  # how the segments objective scores an item from a state's segments
    temperature: float = 1.0  # of the attention aggregator
    dim: int = 64  # encoder width and item-embedding size
    n_layers: int = 2  # transformer blocks
    n_heads: int = 2  # attention heads
    dropout: float = 0.3  # dropout while training
    # std of the item embeddings' initialisation, above the encoder's 0.02: with 0.02 (or 0.1) training
    # sits at the popularity solution for several epochs before item identity starts to count
    item_init_std: float = 0.3
    history_max_events: int = 200  # the full-history reference reads this many latest events (multiple of 8)
    history_samples_per_user: int = 8  # history objective: targets drawn per user per epoch
    epochs: int = 40  # at most; early stopping usually ends sooner
    # epochs without a better validation NDCG@10 before stopping: 12, because context models improve
    # slowly and unevenly (with 8 the third round's seed-0 model stopped at epoch 16 and tested at the
    # level of a model without context; with 12 it went on to its best epoch 33, docs/quality.md)
    patience: int = 12
    lr: float = 5e-3  # AdamW learning rate of the first epoch
    lr_decay: float = 0.9  # the learning rate is multiplied by this after every epoch
    weight_decay: float = 0.05  # AdamW decoupled weight decay
    users_per_batch: int = 16  # users per optimiser step (all of their states and targets)
    # segments objective: weigh each user's targets by 1/their number, so that every user counts once
    # (as in the evaluation) rather than the few with hundreds of events dominating. On MovieLens at
    # 8 events per segment it made no difference beyond noise (validation NDCG@10 0.039, 0.043 without)
    balance_users: bool = True
    seed: int = 0  # weights, dropout and shuffling
    # torch threads on CPU. One is bit-reproducible; with two, 2 of 8 seeded runs differed
    # (MKL and OpenMP reductions vary with load), and on a busy 2-core machine one was as fast.
    threads: int = 1
    device: str = "auto"  # auto (CUDA when present), cpu or cuda
    # a learned per-item bias (popularity prior) added to every score, in training and by rankers
    # (exported by `msli export-items`). Validation NDCG@10 on MovieLens at 4 events per segment:
    # 0.0469 with it, 0.0465 without, a difference well within noise (one standard error is about
    # 0.005 on 943 users); see docs/quality.md
    item_bias: bool = True
    # segments objective: each state also targets the user's next this-many training events (not only
    # those that arrive before the next segment closes); 0 for only those. On MovieLens at 4 events
    # per segment, 8 gave validation NDCG@10 0.0444 by epoch 9 against 0.0469 with 0 (stopped there)
    target_horizon: int = 0
    # segments objective: transformer blocks that read a state's segment vectors together before they
    # score (encoders.context); the worker runs them when it builds a representation. On MovieLens
    # (2 events per segment) test NDCG@10 0.0360 and 0.0476 with 2 layers against 0.0318 and 0.0318
    # without, seeds 0 and 1; see docs/quality.md
    context_layers: int = 2
    # a learned score added to every candidate the state's own segments hold (for the history
    # objective: its input events), as rankers add it (encoders.scoring.candidate_bias)
    seen_item_score: bool = True

    @classmethod
    def quick(cls, **changes: Any) -> TrainingConfig:
        """A small model and few epochs: for tests and `msli demo` on two CPU cores. No context
        layers: in 8 epochs they do not train (the demo's model stopped at validation NDCG@10 0.012
        with them; they need tens of epochs, docs/quality.md)."""
        return replace(cls(dim=32, n_layers=1, epochs=8, patience=3, context_layers=0), **changes)

    def encoder_config(self, n_item_rows: int, max_events: int) -> SegmentEncoderConfig:
        """The encoder's shape: max_events rounded up to a multiple of 8 (the inference ladder's unit)."""
        return SegmentEncoderConfig(
            dim=self.dim,
            n_layers=self.n_layers,
            n_heads=self.n_heads,
            dropout=self.dropout,
            max_events=max(8, -(-max_events // 8) * 8),
            n_item_buckets=n_item_rows,
            item_bias=self.item_bias,
            context_layers=self.context_layers if self.objective == "segments" else 0,
            seen_item_score=self.seen_item_score,
        )


@dataclass(frozen=True)
class EpochReport:
    epoch: int
    loss: float  # mean training cross-entropy over the epoch's targets
    valid_ndcg: float  # NDCG@10 on the validation events, full ranking without removing rated items
    valid_hr: float
    seconds: float


@dataclass
class TrainedModel:
    model: SegmentEncoder  # the best epoch's weights, on CPU, in eval mode
    config: TrainingConfig
    epochs: list[EpochReport] = field(default_factory=list)
    best_epoch: int = 0
    targets: int = 0  # training targets per epoch
    seconds: float = 0.0

    def metadata(self) -> dict[str, Any]:
        """What the checkpoint's manifest records about this run (plain JSON)."""
        best = self.epochs[self.best_epoch - 1] if self.best_epoch else None
        return {
            "config": asdict(self.config),
            "epochs_run": len(self.epochs),
            "best_epoch": self.best_epoch,
            "valid_ndcg@10": None if best is None else round(best.valid_ndcg, 6),
            "valid_hr@10": None if best is None else round(best.valid_hr, 6),
            "targets_per_epoch": self.targets,
            "seconds": round(self.seconds, 1),
            "torch": torch.__version__,
        }


ProgressCallback = Callable[[int, int, float], None]  # (step, steps in the epoch, running loss)


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise EncoderError("device cuda requested but torch sees no CUDA device")
    return torch.device(name)


@contextlib.contextmanager
def _threads(n: int) -> Iterator[None]:
    """Run torch on n threads (0: leave as is), then restore the caller's setting."""
    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def train(
    log: SegmentedLog,
    config: TrainingConfig,
    k: int,
    half_life_ms: float,
    on_step: ProgressCallback | None = None,
    on_epoch: Callable[[EpochReport], None] | None = None,
) -> TrainedModel:
    """Train on the log's training events, early-stopping on its validation events."""
    if log.vocab.mode != "explicit":
        raise EncoderError("training needs an explicit item vocabulary")
    device = _device(config.device)
    max_events = config.history_max_events if config.objective == "history" else log.closing.max_events
    enc_config = config.encoder_config(log.vocab.n_rows, max_events)
    started = time.monotonic()
    with torch.random.fork_rng(devices=[]), _threads(config.threads if device.type == "cpu" else 0):
        torch.manual_seed(config.seed)  # dropout
        model = SegmentEncoder(enc_config)
        generator = torch.Generator().manual_seed(config.seed)
        model.reset_parameters(generator)
        with torch.no_grad():
            torch.nn.init.normal_(model.item_emb.weight, std=config.item_init_std, generator=generator)
            model.item_emb.weight[0].zero_()  # padding row
        model.to(device)
        run = _Run(log, config, model, device, k, half_life_ms)
        result = TrainedModel(model, config, targets=run.targets)
        optimiser = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        # Without decay, validation NDCG@10 swung between 0.028 and 0.043 from epoch to epoch on
        # MovieLens (measured), so early stopping picked a lucky epoch rather than a better model.
        schedule = torch.optim.lr_scheduler.ExponentialLR(optimiser, gamma=config.lr_decay)
        rng = np.random.default_rng(config.seed)
        best_state, best_ndcg = copy.deepcopy(model.state_dict()), -1.0
        for epoch in range(1, config.epochs + 1):
            epoch_started = time.monotonic()
            loss = run.epoch(optimiser, rng, on_step)
            schedule.step()
            hr, ndcg = run.validate()
            report = EpochReport(epoch, loss, ndcg, hr, time.monotonic() - epoch_started)
            result.epochs.append(report)
            if on_epoch is not None:
                on_epoch(report)
            if ndcg > best_ndcg:
                best_state, best_ndcg, result.best_epoch = copy.deepcopy(model.state_dict()), ndcg, epoch
            elif epoch - result.best_epoch >= config.patience:
                break
    model.load_state_dict(best_state)
    result.model = model.to("cpu").eval()
    result.seconds = time.monotonic() - started
    return result


class _Run:
    """One training run's examples and steps, for either objective."""

    def __init__(
        self,
        log: SegmentedLog,
        config: TrainingConfig,
        model: SegmentEncoder,
        device: torch.device,
        k: int,
        half_life_ms: float,
    ) -> None:
        self.log, self.config, self.model, self.device = log, config, model, device
        self.autocast: Callable[[], contextlib.AbstractContextManager[Any]] = (
            (lambda: torch.autocast("cuda", dtype=torch.bfloat16))
            if device.type == "cuda"
            else contextlib.nullcontext
        )
        if config.objective == "segments":
            self.examples = SegmentExamples(log, model.config, k, half_life_ms, config.target_horizon)
            self.targets = self.examples.targets
            self.valid_states = self.examples.holdout("valid")
        else:
            self.history_positions = [
                [p for p in log.split_positions(u)[0][1:]] for u in range(len(log.users))
            ]
            self.targets = sum(min(len(p), config.history_samples_per_user) for p in self.history_positions)
        self.valid = log.holdout("valid")
        if not self.valid:
            raise EncoderError("no user has three or more events: nothing to validate on")

    def epoch(
        self, optimiser: torch.optim.Optimizer, rng: np.random.Generator, on_step: ProgressCallback | None
    ) -> float:
        self.model.train()
        users = rng.permutation(len(self.log.users))
        per_batch = self.config.users_per_batch
        batches = [users[i : i + per_batch] for i in range(0, len(users), per_batch)]
        total, count = 0.0, 0
        for step, batch in enumerate(batches, start=1):
            with self.autocast():
                loss_sum, n = self._batch_loss(batch, rng)
            if n:
                optimiser.zero_grad(set_to_none=True)
                (loss_sum / n).backward()
                optimiser.step()
                total, count = total + float(loss_sum.detach()), count + n
            if on_step is not None:
                on_step(step, len(batches), total / max(count, 1))
        return total / max(count, 1)

    def _batch_loss(self, users: np.ndarray, rng: np.random.Generator) -> tuple[torch.Tensor, int]:
        if self.config.objective == "segments":
            states = [s for u in users for s in self.examples.by_user[u]]
            if not states:
                return torch.zeros(()), 0
            logits = self._state_logits(states)  # (S, N)
            state_of = np.concatenate([np.full(len(s.targets), i) for i, s in enumerate(states)])
            targets = np.concatenate([s.targets for s in states])
            if self.config.balance_users:
                # Each user counts once, as in the evaluation, however many events they have.
                per_user = self.examples.user_targets
                weights = np.concatenate(
                    [np.full(len(s.targets), 1.0 / per_user[s.state.user]) for s in states]
                )
                nll = -self._log_probs(logits, state_of, targets)
                users_in_batch = len({s.state.user for s in states})
                return (nll * torch.from_numpy(weights).to(nll)).sum(), users_in_batch
        else:
            samples = []
            for u in users:
                positions = self.history_positions[u]
                take = min(len(positions), self.config.history_samples_per_user)
                samples += [(int(u), positions[i]) for i in rng.choice(len(positions), take, replace=False)]
            if not samples:
                return torch.zeros(()), 0
            logits = self._history_logits(samples)  # (S, N)
            state_of = np.arange(len(samples))
            targets = np.array([self.log.event_item[p] for _, p in samples]) - FIRST_ITEM_ROW
        return -self._log_probs(logits, state_of, targets).sum(), len(targets)

    def _log_probs(self, logits: torch.Tensor, state_of: np.ndarray, targets: np.ndarray) -> torch.Tensor:
        """log p(target) under a softmax over all items, one per target; (T,)."""
        log_probs = F.log_softmax(logits.float(), dim=-1)  # (S, N)
        return log_probs[
            torch.from_numpy(state_of).to(self.device), torch.from_numpy(targets).to(self.device)
        ]

    def _items(self) -> torch.Tensor:
        return self.model.item_emb.weight[FIRST_ITEM_ROW:]  # (N, d) candidate vectors

    def _item_bias(self) -> torch.Tensor | None:
        bias = self.model.item_bias
        return None if bias is None else bias[FIRST_ITEM_ROW:]  # (N,)

    def _state_logits(self, states: list[ScoredState]) -> torch.Tensor:
        t = state_tensors(states, self.device)
        vectors = self.model(
            *pad_arrays([self.examples.arrays[s] for s in t.segments], self.device)
        )  # (M, d)
        padded = torch.cat([vectors, vectors.new_zeros(1, vectors.size(1))])  # row M: an empty slot
        per_state = padded[t.slots]  # (S, K, d); -1 reads row M
        if self.model.context is not None:
            per_state = self.model.context(per_state, t.features, t.slots >= 0)
        config = self.config
        logits = late_interaction_logits(
            per_state, t.log_weights, self._items(), config.aggregator, config.temperature, self._item_bias()
        )
        return self._with_seen_items(logits, t.seen)

    def _history_logits(self, samples: list[tuple[int, int]]) -> torch.Tensor:
        arrays = [history_arrays(self.log, u, p, self.model.config, self.log.vocab) for u, p in samples]
        vectors = self.model(*pad_arrays(arrays, self.device))  # (S, d)
        scores = vectors @ self._items().t()  # (S, d) @ (d, N) -> (S, N)
        bias = self._item_bias()
        logits = scores if bias is None else scores + bias
        if self.model.seen_item_raw is None:
            return logits
        seen = seen_pairs([seen_candidates(rows) for rows, _, _ in arrays], self.device)
        return self._with_seen_items(logits, seen)

    def _with_seen_items(self, logits: torch.Tensor, seen: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        score = self.model.seen_item_score()
        return logits if score is None else add_seen_item_score(logits, seen, score)

    @torch.no_grad()
    def validate(self) -> tuple[float, float]:
        """(HR@10, NDCG@10) on the validation events, ranking all items without removing rated ones."""
        self.model.eval()
        ranks: list[int] = []
        with self.autocast():
            for start in range(0, len(self.valid), 256):
                ranks += self._valid_ranks(start, start + 256)
        m = ranking_metrics(ranks, 10)
        return m.hr, m.ndcg

    def _valid_ranks(self, start: int, stop: int) -> list[int]:
        if self.config.objective == "history":
            chunk = self.valid[start:stop]
            targets = [int(self.log.event_item[p]) - FIRST_ITEM_ROW for _, p in chunk]
            scores = self._history_logits(chunk).float().cpu().numpy()
            return [rank_of_target(row, t) for row, t in zip(scores, targets, strict=True)]
        states = self.valid_states[start:stop]
        present = [s for s in states if s is not None]
        scores = self._state_logits(present).float().cpu().numpy() if present else np.zeros((0, 0))
        by_state = iter(
            rank_of_target(row, int(s.targets[0])) for row, s in zip(scores, present, strict=True)
        )
        # A user without a closed segment has no representation yet: counted as a miss.
        return [len(self.log.vocab.items or ()) if s is None else next(by_state) for s in states]
