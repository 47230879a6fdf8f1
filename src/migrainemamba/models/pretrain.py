"""Self-supervised pretraining of the diary encoder, and the training plumbing it shares with
fine-tuning (batches over ``SequenceData``, a DataModule, one Lightning ``Trainer`` recipe).

Pretraining reads windows of L days before a day D (labels unused) and learns two tasks:

- masked-day reconstruction: a random share of the OBSERVED days in the window is hidden exactly
  as a missing day is hidden (values zeroed, observed-flag off), and their values are predicted
  from the rest of the window. The loss counts hidden observed days only: a missing day is never
  a target, and its stored values never reach the encoder (``MambaEncoder`` hides them), so
  missing days cannot affect the loss (tested).
- next-day prediction: the last day's representation predicts day D's values, counted only when
  D has a diary row (training windows are drawn for days D that do).

Shapes: B batch, L window days, F per-day inputs, D d_model.
"""

from __future__ import annotations

import copy
import hashlib
import logging
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback, EarlyStopping, ModelCheckpoint
from torch import nn
from torch.utils.data import BatchSampler, DataLoader, Dataset, RandomSampler, SequentialSampler

from migrainemamba import distributed
from migrainemamba.features.sequences import SequenceData
from migrainemamba.models.sequence_heads import SequenceModelConfig, build_encoder

log = logging.getLogger(__name__)

Batch = dict[str, torch.Tensor]


# ----------------------------------------------------------------------------------------------
# Configs


def _from_dict(cls, d: dict[str, Any]):
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(d) - known)
    if unknown:
        raise ValueError(f"{cls.__name__}: unknown keys {unknown}; known: {sorted(known)}")
    return cls(**d)


@dataclass
class TrainConfig:
    """How a Lightning module is trained (pretraining and fine-tuning alike)."""

    lr: float = 2e-3
    weight_decay: float = 0.01
    batch_size: int = 256  # windows per batch (history mode: users per batch = batch_size // 16)
    max_epochs: int = 5
    samples_per_epoch: int = 0  # training windows drawn per epoch (0 = all); history mode: users
    val_samples: int = 0  # validation windows (0 = all), a fixed seeded subset; history mode: users
    patience: int = 2  # early stopping on val_loss, in epochs
    grad_clip: float = 1.0
    seed: int = 0
    num_threads: int = 1  # torch CPU threads (2 threads on 2 shared cores was ~3x slower)
    group_users: int = 0  # window mode: draw each batch as this many users x (batch_size / it) days
    within_person_weight: float = 0.0  # fine-tuning: weight of the within-person (case-crossover) loss
    limit_train_batches: int | float = 1.0  # Lightning's, for tests

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        return _from_dict(cls, d)


@dataclass
class TrainerConfig:
    """Where Lightning trains (``configs/trainer/``): one CPU process by default; ``gpu`` uses CUDA
    devices (and the mamba-ssm kernels, when installed) with DDP across several."""

    accelerator: str = "cpu"
    devices: int | str = 1
    strategy: str = "auto"
    precision: str = "32-true"
    num_nodes: int = 1

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainerConfig:
        return _from_dict(cls, d)


@dataclass
class PretrainConfig:
    mask_prob: float = 0.15  # share of observed window days hidden for reconstruction
    masked_weight: float = 1.0
    next_weight: float = 1.0

    def __post_init__(self) -> None:
        if not 0.0 < self.mask_prob < 1.0:
            raise ValueError(f"pretrain mask_prob must be in (0, 1), got {self.mask_prob}")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PretrainConfig:
        return _from_dict(cls, d)


# ----------------------------------------------------------------------------------------------
# Batches over SequenceData


def _check_offset(seq: SequenceData, offset: np.ndarray | None) -> np.ndarray:
    """Per-row log-odds offset added to the classifier's logit (zeros when not given)."""
    if offset is None:
        return np.zeros(seq.n_rows, dtype=np.float32)
    offset = np.asarray(offset, dtype=np.float32)
    if offset.shape != (seq.n_rows,) or not np.all(np.isfinite(offset)):
        raise ValueError(f"offset must be {seq.n_rows} finite log-odds (one per sequence row)")
    return offset


class WindowBatches(Dataset):
    """Windows of ``length`` days before each of ``rows``; ``dataset[indices]`` is one batch.

    Keys: x (B, L, F), mask (B, L), morning (B, Fm), static (B, Fs), y (B,) onset,
    weight (B,) 1 where the day is scorable, next (B, F) day D's values, next_mask (B,) D observed,
    row (B,), user (B,), offset (B,) log-odds added to the logit (0 unless given).
    """

    def __init__(self, seq: SequenceData, rows: np.ndarray, length: int, offset: np.ndarray | None = None) -> None:
        if length < 1:
            raise ValueError(f"window length must be >= 1, got {length}")
        self.seq = seq
        self.rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        self.length = length
        self.offset = _check_offset(seq, offset)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, indices) -> Batch:
        rows = self.rows[np.asarray(indices, dtype=np.int64)]
        seq = self.seq
        x, mask, morning = seq.windows(rows, self.length)
        users = seq.user_of_rows(rows)
        observed = seq.observed[rows]
        nxt = np.where(observed[:, None], seq.values[rows], np.float32(0.0))
        return {
            "x": torch.from_numpy(x),
            "mask": torch.from_numpy(mask),
            "morning": torch.from_numpy(np.ascontiguousarray(morning)),
            "static": torch.from_numpy(np.ascontiguousarray(seq.static[users])),
            "y": torch.from_numpy(seq.onset[rows].astype(np.float32)),
            "weight": torch.from_numpy(seq.scorable[rows].astype(np.float32)),
            "next": torch.from_numpy(np.ascontiguousarray(nxt, dtype=np.float32)),
            "next_mask": torch.from_numpy(observed.copy()),
            "row": torch.from_numpy(rows.copy()),
            "user": torch.from_numpy(users.astype(np.int64)),
            "offset": torch.from_numpy(self.offset[rows]),
        }


class HistoryBatches(Dataset):
    """Whole diaries (history mode, causal models); ``dataset[indices]`` is a batch of users.

    User ``users[i]`` is read from their first grid day to row ``ends[i]`` (exclusive); targets
    are the days whose row is in ``target_rows`` (and scorable). Position 0 is the empty day before
    day 0, so the output at position t has read days < t. Right-padded with missing days.

    Keys: x (B, T, F), mask (B, T), morning (B, T, Fm), static (B, Fs), y (B, T), weight (B, T),
    row (B, T) (−1 on padding), user (B,), offset (B, T).
    """

    def __init__(
        self, seq: SequenceData, users: np.ndarray, ends: np.ndarray, target_rows: np.ndarray, offset: np.ndarray | None = None
    ) -> None:
        self.seq = seq
        self.offset = _check_offset(seq, offset)
        self.users = np.asarray(users, dtype=np.int64)
        self.ends = np.asarray(ends, dtype=np.int64)
        self.is_target = np.zeros(seq.n_rows, dtype=bool)
        self.is_target[np.asarray(target_rows, dtype=np.int64)] = True

    def __len__(self) -> int:
        return len(self.users)

    def __getitem__(self, indices) -> Batch:
        idx = np.asarray(indices, dtype=np.int64)
        seq = self.seq
        starts = seq.offsets[self.users[idx]]
        lengths = self.ends[idx] - starts  # T_i days to forecast
        T = int(lengths.max())
        B = len(idx)
        rows = starts[:, None] + np.arange(T)[None, :]  # (B, T): day t
        inside = np.arange(T)[None, :] < lengths[:, None]
        safe = np.where(inside, rows, 0)
        # inputs: position 0 = empty day, position t = day t - 1
        in_rows = np.concatenate([np.zeros((B, 1), dtype=np.int64), safe[:, :-1]], axis=1)
        in_ok = np.concatenate([np.zeros((B, 1), dtype=bool), inside[:, :-1]], axis=1)
        mask = in_ok & seq.observed[in_rows]
        x = np.where(mask[..., None], seq.values[in_rows], np.float32(0.0))
        morning = np.where(inside[..., None], seq.morning[safe], np.float32(0.0))
        weight = inside & self.is_target[safe] & seq.scorable[safe]
        return {
            "x": torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)),
            "mask": torch.from_numpy(mask),
            "morning": torch.from_numpy(np.ascontiguousarray(morning, dtype=np.float32)),
            "static": torch.from_numpy(np.ascontiguousarray(seq.static[self.users[idx]])),
            "y": torch.from_numpy((seq.onset[safe] & weight).astype(np.float32)),
            "weight": torch.from_numpy(weight.astype(np.float32)),
            "row": torch.from_numpy(np.where(inside, rows, -1)),
            "user": torch.from_numpy(self.users[idx].copy()),
            "offset": torch.from_numpy(np.where(inside, self.offset[safe], np.float32(0.0))),
        }


def history_users(seq: SequenceData, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Users owning ``rows`` and, per user, the end (exclusive) of the diary needed to forecast them."""
    rows = np.asarray(rows, dtype=np.int64)
    users = seq.user_of_rows(rows)
    order = np.unique(users)
    ends = np.zeros(seq.user_ids.shape[0], dtype=np.int64)
    np.maximum.at(ends, users, rows + 1)
    return order, ends[order]


class UserGroupedBatches:
    """Batch sampler for window datasets: each batch is ``n_users`` users, each with up to
    ``per_user`` of their windows (so a batch holds several days of the same person, as the
    within-person loss needs). ``n_batches`` per epoch; users drawn in proportion to their days."""

    def __init__(self, dataset: WindowBatches, n_users: int, per_user: int, n_batches: int, seed: int) -> None:
        users = dataset.seq.user_of_rows(dataset.rows)
        order = np.argsort(users, kind="stable")
        self.sorted_index = order
        uniq, starts, counts = np.unique(users[order], return_index=True, return_counts=True)
        self.starts, self.counts = starts, counts
        self.p = counts / counts.sum()
        self.n_users, self.per_user, self.n_batches = min(n_users, len(uniq)), per_user, n_batches
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return self.n_batches

    def __iter__(self):
        for _ in range(self.n_batches):
            chosen = self.rng.choice(len(self.counts), self.n_users, replace=False, p=self.p)
            parts = []
            for u in chosen:
                k = min(self.per_user, self.counts[u])
                pick = self.rng.choice(self.counts[u], k, replace=False)
                parts.append(self.sorted_index[self.starts[u] + pick])
            yield np.concatenate(parts).tolist()


class SequenceDataModule(L.LightningDataModule):
    """Training batches drawn at random each epoch (``samples_per_epoch``), validation fixed."""

    def __init__(
        self,
        train: Dataset,
        val: Dataset | None,
        batch_size: int,
        samples_per_epoch: int = 0,
        val_samples: int = 0,
        seed: int = 0,
        group_users: int = 0,
    ) -> None:
        super().__init__()
        self.train, self.val = train, val
        self.group_users = group_users
        self.batch_size = batch_size
        self.samples_per_epoch = samples_per_epoch
        self.seed = seed
        self.val_index: np.ndarray | None = None
        if val is not None:
            n = len(val)
            self.val_index = np.arange(n)
            if 0 < val_samples < n:
                self.val_index = np.sort(np.random.default_rng(seed).choice(n, val_samples, replace=False))

    def train_dataloader(self) -> DataLoader:
        n = len(self.train)
        num = self.samples_per_epoch if 0 < self.samples_per_epoch < n else n
        if self.group_users > 0 and isinstance(self.train, WindowBatches):
            n_batches = max(1, num // self.batch_size)
            per_user = max(1, self.batch_size // self.group_users)
            self.seed += 1  # a new draw each epoch, reproducibly
            grouped = UserGroupedBatches(self.train, self.group_users, per_user, n_batches, self.seed)
            return DataLoader(self.train, sampler=grouped, batch_size=None)
        generator = torch.Generator().manual_seed(self.seed)
        sampler = BatchSampler(RandomSampler(range(n), num_samples=num, generator=generator), self.batch_size, drop_last=False)
        return DataLoader(self.train, sampler=sampler, batch_size=None)

    def val_dataloader(self) -> DataLoader:
        if self.val is None:
            return []  # type: ignore[return-value]
        sampler = BatchSampler(self.val_index.tolist(), self.batch_size, drop_last=False)
        return DataLoader(self.val, sampler=sampler, batch_size=None)


def eval_batches(dataset: Dataset, batch_size: int):
    """Batches of ``dataset`` in order (inference)."""
    for indices in BatchSampler(SequentialSampler(range(len(dataset))), batch_size, drop_last=False):
        yield dataset[indices]


# ----------------------------------------------------------------------------------------------
# Training recipe


class BestState(Callback):
    """Keeps an in-memory copy of the weights at the best ``val_loss`` (restored after fit)."""

    def __init__(self, monitor: str = "val_loss") -> None:
        self.monitor = monitor
        self.best = float("inf")
        self.state: dict[str, torch.Tensor] | None = None
        self.epoch = -1

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        value = trainer.callback_metrics.get(self.monitor)
        if value is not None and float(value) < self.best:
            self.best = float(value)
            self.epoch = trainer.current_epoch
            self.state = copy.deepcopy(pl_module.state_dict())


def train_module(
    module: L.LightningModule,
    data: SequenceDataModule,
    cfg: TrainConfig,
    logger: Any = None,
    checkpoint_dir: Path | None = None,
    progress: bool = False,
    trainer_cfg: TrainerConfig | None = None,
) -> dict[str, Any]:
    """Fit ``module`` (early stopping on val_loss), restore its best weights, return a summary.

    The best weights are kept in memory (:class:`BestState`); ``checkpoint_dir`` additionally
    writes Lightning checkpoints there (never inside a model folder: docs/architecture.md)."""
    trainer_cfg = trainer_cfg or TrainerConfig()
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    torch.set_num_threads(cfg.num_threads)
    best = BestState()
    callbacks: list[Callback] = [best]
    if data.val is not None:
        callbacks.append(EarlyStopping(monitor="val_loss", patience=cfg.patience, mode="min"))
    if checkpoint_dir is not None:
        if distributed.is_global_zero():  # Lightning saves checkpoints from rank 0 only
            checkpoint_dir.mkdir(parents=True, exist_ok=True)
            for stale in checkpoint_dir.glob("*.ckpt"):  # a fixed folder: no versioned leftovers
                stale.unlink()
        callbacks.append(
            ModelCheckpoint(dirpath=checkpoint_dir, filename="best", monitor="val_loss", mode="min", save_top_k=1, enable_version_counter=False)
        )
    trainer = L.Trainer(
        accelerator=trainer_cfg.accelerator,
        devices=trainer_cfg.devices,
        strategy=trainer_cfg.strategy,
        precision=trainer_cfg.precision,
        num_nodes=trainer_cfg.num_nodes,
        max_epochs=cfg.max_epochs,
        logger=logger if logger is not None else False,
        callbacks=callbacks,
        enable_progress_bar=progress,
        enable_checkpointing=checkpoint_dir is not None,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        gradient_clip_val=cfg.grad_clip,
        limit_train_batches=cfg.limit_train_batches,
        limit_val_batches=1.0 if data.val is not None else 0,
        log_every_n_steps=10,
        deterministic=False,
    )
    trainer.fit(module, datamodule=data)
    distributed.remember_children(getattr(trainer.strategy, "launcher", None))  # rank 0 waits for them
    if best.state is not None:
        module.load_state_dict(best.state)
    module.eval()
    summary = {
        "best_val_loss": best.best,
        "best_epoch": best.epoch,
        "epochs": trainer.current_epoch,
        "steps": trainer.global_step,
        "world_size": trainer.world_size,
    }
    if trainer.world_size > 1:
        check_ranks_agree(module, trainer.global_rank, summary)
    return summary


def weights_digest(state: dict[str, torch.Tensor]) -> str:
    """SHA-256 of a state dict's tensors in sorted key order (shapes and float32 bytes; the key names
    do not count, so a module and the submodule it saves give the same digest)."""
    h = hashlib.sha256()
    for key in sorted(state):
        t = state[key].detach().cpu().to(torch.float32).contiguous()
        h.update(str(tuple(t.shape)).encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()


def check_ranks_agree(module: nn.Module, rank: int, summary: dict[str, Any]) -> None:
    """DDP keeps every rank's weights equal, and every rank restores the same best epoch (the
    validation loss is computed over all ranks' days); a difference means the sync broke."""
    digest = weights_digest(module.state_dict())
    log.info("ddp rank %d: weights sha256 %s after %d steps", rank, digest, summary["steps"])
    digests = distributed.all_gather_object(digest)
    if len(set(digests)) != 1:
        raise RuntimeError(f"ddp: the ranks ended with different weights (sha256 per rank: {digests})")


def _adamw(module: nn.Module, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    """AdamW without decay on biases, norms and the SSM's A_log / D (``_no_weight_decay``)."""
    decay, no_decay = [], []
    for name, p in module.named_parameters():
        if not p.requires_grad:
            continue
        if p.ndim < 2 or getattr(p, "_no_weight_decay", False) or "norm" in name:
            no_decay.append(p)
        else:
            decay.append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr)


# ----------------------------------------------------------------------------------------------
# The pretraining system


class PretrainModule(L.LightningModule):
    """Encoder + reconstruction head + next-day head, trained without labels."""

    def __init__(self, model: dict[str, Any], pretrain: dict[str, Any], train: dict[str, Any]) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.model_cfg = SequenceModelConfig.from_dict(model)
        self.cfg = PretrainConfig.from_dict(pretrain)
        self.train_cfg = TrainConfig.from_dict(train)
        D, F_ = self.model_cfg.d_model, self.model_cfg.n_features
        self.encoder = build_encoder(self.model_cfg)
        self.recon_head = nn.Linear(D, F_)  # hidden day t's values from h_t
        self.next_head = nn.Sequential(nn.Linear(D, D), nn.GELU(), nn.Linear(D, F_))  # day D's values

    def draw_hidden(self, mask: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """(B, L) bool: observed days chosen for reconstruction."""
        u = torch.rand(mask.shape, generator=generator, device=mask.device)
        return mask & (u < self.cfg.mask_prob)

    def losses(self, batch: Batch, hidden: torch.Tensor) -> dict[str, torch.Tensor]:
        """Masked-day MSE over ``hidden & observed`` days, next-day MSE where D is observed."""
        x, mask = batch["x"], batch["mask"]  # (B, L, F), (B, L)
        hidden = hidden & mask  # only observed days are ever targets
        h = self.encoder(x, mask & ~hidden)  # hidden days look exactly like missing days
        zero = torch.zeros((), dtype=x.dtype, device=x.device)
        target = torch.where(hidden.unsqueeze(-1), x, zero)  # values of other days never enter
        sq = (self.recon_head(h) - target).square().mean(-1)  # (B, L)
        sq = torch.where(hidden, sq, zero)
        n_hidden = hidden.sum()
        masked = sq.sum() / n_hidden.clamp(min=1)
        nxt = self.next_head(h[:, -1])  # (B, F)
        nm = batch["next_mask"]
        target_next = torch.where(nm.unsqueeze(-1), batch["next"], zero)
        sq_next = torch.where(nm, (nxt - target_next).square().mean(-1), zero)
        next_day = sq_next.sum() / nm.sum().clamp(min=1)
        loss = self.cfg.masked_weight * masked + self.cfg.next_weight * next_day
        return {"loss": loss, "masked": masked, "next": next_day, "n_hidden": n_hidden.float()}

    def training_step(self, batch: Batch, batch_idx: int) -> torch.Tensor:
        out = self.losses(batch, self.draw_hidden(batch["mask"]))
        bs = batch["x"].shape[0]
        self.log("train_loss", out["loss"], prog_bar=True, batch_size=bs)
        self.log("train_masked_mse", out["masked"], batch_size=bs)
        self.log("train_next_mse", out["next"], batch_size=bs)
        return out["loss"]

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        generator = torch.Generator().manual_seed(10_000 + batch_idx)  # the same hidden days each epoch
        out = self.losses(batch, self.draw_hidden(batch["mask"], generator))
        bs = batch["x"].shape[0]
        self.log("val_loss", out["loss"], sync_dist=True, prog_bar=True, batch_size=bs)
        self.log("val_masked_mse", out["masked"], sync_dist=True, batch_size=bs)
        self.log("val_next_mse", out["next"], sync_dist=True, batch_size=bs)

    def configure_optimizers(self):
        return _adamw(self, self.train_cfg.lr, self.train_cfg.weight_decay)


def pretrain_rows(seq: SequenceData, rows: np.ndarray) -> np.ndarray:
    """Days D (of ``rows``) whose window has a next day to predict: D has a diary row."""
    rows = np.asarray(rows, dtype=np.int64)
    return rows[seq.observed[rows]]


def pretrain_encoder(
    seq: SequenceData,
    train_rows: np.ndarray,
    val_rows: np.ndarray | None,
    model_cfg: SequenceModelConfig,
    pretrain_cfg: PretrainConfig,
    train_cfg: TrainConfig,
    logger: Any = None,
    checkpoint_dir: Path | None = None,
    progress: bool = False,
    trainer_cfg: TrainerConfig | None = None,
) -> tuple[PretrainModule, dict[str, Any]]:
    """Pretrain on windows ending before the given days (labels unused); returns the module."""
    if model_cfg.window_days < 1:
        raise ValueError("pretraining reads windows: model.window_days must be >= 1")
    L.seed_everything(train_cfg.seed, workers=True, verbose=False)  # the initial weights too
    module = PretrainModule(model_cfg.to_dict(), asdict(pretrain_cfg), asdict(train_cfg))
    train = WindowBatches(seq, pretrain_rows(seq, train_rows), model_cfg.window_days)
    val = WindowBatches(seq, pretrain_rows(seq, val_rows), model_cfg.window_days) if val_rows is not None else None
    data = SequenceDataModule(train, val, train_cfg.batch_size, train_cfg.samples_per_epoch, train_cfg.val_samples, train_cfg.seed)
    summary = train_module(module, data, train_cfg, logger, checkpoint_dir, progress, trainer_cfg)
    summary |= {"n_train_windows": len(train), "n_val_windows": len(val) if val is not None else 0}
    return module, summary


@torch.no_grad()
def evaluate_pretrain(module: PretrainModule, dataset: WindowBatches, batch_size: int, seed: int = 0) -> dict[str, float]:
    """Mean masked-day and next-day MSE over ``dataset`` (hidden days drawn with a fixed seed)."""
    module.eval()
    generator = torch.Generator().manual_seed(seed)
    sums = {"masked": 0.0, "next": 0.0}
    counts = {"masked": 0.0, "next": 0.0}
    for batch in eval_batches(dataset, batch_size):
        out = module.losses(batch, module.draw_hidden(batch["mask"], generator))
        n_next = float(batch["next_mask"].sum())
        sums["masked"] += float(out["masked"]) * float(out["n_hidden"])
        counts["masked"] += float(out["n_hidden"])
        sums["next"] += float(out["next"]) * n_next
        counts["next"] += n_next
    return {f"{k}_mse": sums[k] / max(counts[k], 1.0) for k in sums}


def mse_baselines(seq: SequenceData, rows: np.ndarray, length: int) -> dict[str, float]:
    """Reference MSEs: predicting 0 (the training mean) for every value, and D−1's values for D."""
    rows = pretrain_rows(seq, rows)
    prev = rows - 1
    ok = (prev >= seq.offsets[seq.user_of_rows(rows)]) & seq.observed[np.maximum(prev, 0)]
    target = seq.values[rows]
    return {
        "mean_mse": float(np.mean(np.square(target).mean(-1))),
        "persistence_mse": float(np.mean(np.square(target[ok] - seq.values[prev[ok]]).mean(-1))) if ok.any() else float("nan"),
    }


__all__ = [
    "HistoryBatches",
    "PretrainConfig",
    "PretrainModule",
    "SequenceDataModule",
    "TrainConfig",
    "TrainerConfig",
    "WindowBatches",
    "eval_batches",
    "evaluate_pretrain",
    "history_users",
    "pretrain_encoder",
    "train_module",
    "weights_digest",
]
