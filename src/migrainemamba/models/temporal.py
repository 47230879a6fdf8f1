"""The temporal model: a diary encoder (pretrained Mamba, or the GRU baseline) fine-tuned for onset.

``TemporalModel`` is a ``ForecastModel`` (name ``"temporal"`` or ``"gru"``). It may carry an
offset model (the foundation model): the classifier's logit is then added to that model's log-odds,
so the sequence model learns what the tabular model misses (as the foundation model boosts from
the clinical prior). Training adds to BCE an optional case-crossover loss (``within_person_loss``)
that contrasts each onset day with the same person's other days. Its forecasts are
computed from ``batch.daily_logs`` by ``build_sequence_data(..., forecast_dates=targets,
stats=<training stats>)``: the window for day D holds rows of dates < D plus D's morning fields,
so nothing logged at or after the forecast moment can move a forecast (the harness audits it).

Serving (the stage's default temporal model is causal over the whole history):

- ``forecast_user(model, user, diary_rows, date)``: one person's diary in, P(onset on ``date``)
  out, by the same code as ``predict`` (one pass over the history, or over the last L days for a
  window model: cost linear in the days read).
- ``RecurrentForecaster``: for a causal model over the whole history (``window_days: 0``,
  ``bidirectional: false``), a per-user state is carried forward one day at a time, O(1) per
  day, equal to the full-sequence forecast (tested). A bidirectional window model reads each
  window as a whole and cannot be stepped: its serving form is ``forecast_user``.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import lightning as L
import mlflow
import numpy as np
import pandas as pd
import polars as pl
import torch
import torch.nn.functional as F

from migrainemamba import distributed
from migrainemamba.data.schema import DAILY_LOGS_SCHEMA, MORNING_FIELDS, USERS_SCHEMA
from migrainemamba.features.sequences import SequenceData, SequenceStats, build_sequence_data
from migrainemamba.models.base import ForecastBatch
from migrainemamba.models.pretrain import (
    Batch,
    HistoryBatches,
    SequenceDataModule,
    TrainConfig,
    TrainerConfig,
    WindowBatches,
    _adamw,
    eval_batches,
    history_users,
    train_module,
)
from migrainemamba.models.prior import fit_calibration
from migrainemamba.models.sequence_heads import (
    OnsetClassifier,
    SequenceModelConfig,
    count_parameters,
)
from migrainemamba.tracking import pinned_requirements

log = logging.getLogger(__name__)

MODEL_FILE = "model.pt"
META_FILE = "temporal.json"
OFFSET_DIR = "offset"
USERS_PER_HISTORY_BATCH = 16
PREDICT_BATCH = 1024


# ----------------------------------------------------------------------------------------------
# Fine-tuning system


class OnsetModule(L.LightningModule):
    """Onset classifier trained with BCE on scorable days; val_loss / val_auc per epoch."""

    def __init__(self, model: dict[str, Any], train: dict[str, Any], encoder_lr_scale: float = 1.0) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.classifier = OnsetClassifier(SequenceModelConfig.from_dict(model))
        self.train_cfg = TrainConfig.from_dict(train)
        self.encoder_lr_scale = encoder_lr_scale
        self._val: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]] = []

    def logits(self, batch: Batch) -> torch.Tensor:
        args = (batch["x"], batch["mask"], batch["morning"], batch["static"])
        if batch["y"].dim() == 2:  # history batch: (B, T) targets
            out = self.classifier.forward_history(*args)
        else:
            out = self.classifier(*args)
        return out + batch["offset"] if "offset" in batch else out

    def loss_terms(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        logits = self.logits(batch)
        w = batch["weight"]
        bce = F.binary_cross_entropy_with_logits(logits, batch["y"], weight=w, reduction="sum")
        return bce, w.sum(), logits

    def training_step(self, batch: Batch, batch_idx: int) -> torch.Tensor:
        bce, n, logits = self.loss_terms(batch)
        loss = bce / n.clamp(min=1)
        self.log("train_bce", loss, batch_size=int(n.item()) or 1)
        if self.train_cfg.within_person_weight > 0:
            wp = within_person_loss(logits, batch)
            self.log("train_within_person", wp)
            loss = loss + self.train_cfg.within_person_weight * wp
        self.log("train_loss", loss, prog_bar=True, batch_size=int(n.item()) or 1)
        return loss

    def on_validation_epoch_start(self) -> None:
        self._val = []

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        _, _, logits = self.loss_terms(batch)
        keep = batch["weight"] > 0
        user = batch["user"] if batch["user"].dim() == keep.dim() else batch["user"][:, None].expand_as(keep)
        self._val.append((logits[keep].detach(), batch["y"][keep], user[keep], batch["row"][keep]))

    def validation_days(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(logits, y, user) of every validation day scored this epoch, over all ranks of a
        distributed run (each scored a share; the sampler's padding repeats are dropped), so
        every rank computes the same validation loss and picks the same best epoch."""
        parts = [tuple(torch.cat([v[i] for v in self._val]).numpy() for i in range(4))] if self._val else []
        gathered = [p for rank_parts in distributed.all_gather_object(parts) for p in rank_parts]
        if not gathered:
            return np.empty(0, np.float32), np.empty(0, np.float32), np.empty(0, np.int64)
        logits, y, users, rows = (np.concatenate([p[i] for p in gathered]) for i in range(4))
        if len(gathered) > len(parts):  # days of other ranks: keep each day once
            _, first = np.unique(rows, return_index=True)
            logits, y, users = logits[first], y[first], users[first]
        return logits, y, users

    def on_validation_epoch_end(self) -> None:
        logits, y, users = self.validation_days()
        if not len(y):
            return
        loss = F.binary_cross_entropy_with_logits(torch.from_numpy(logits), torch.from_numpy(y))
        # equal on every rank already; sync_dist averages equal values (and says so to Lightning)
        self.log("val_loss", loss, prog_bar=True, sync_dist=True)
        self.log("val_auc", _auc(y, logits), prog_bar=True, sync_dist=True)
        self.log("val_within_person_auc", _within_person_auc(users, y, logits), prog_bar=True, sync_dist=True)

    def configure_optimizers(self):
        if self.encoder_lr_scale == 1.0:
            return _adamw(self, self.train_cfg.lr, self.train_cfg.weight_decay)
        enc = _adamw(self.classifier.encoder, self.train_cfg.lr * self.encoder_lr_scale, self.train_cfg.weight_decay)
        head = _adamw(self.classifier.head, self.train_cfg.lr, self.train_cfg.weight_decay)
        return torch.optim.AdamW(enc.param_groups + head.param_groups)


def within_person_loss(logits: torch.Tensor, batch: Batch) -> torch.Tensor:
    """Case-crossover (conditional logistic) loss: each onset day against the same person's
    scorable days in the batch, softmax over them. Only within-person contrasts count, so it
    learns what makes one of a person's days riskier than their others, not who is at risk.

    Window batches: logits (B,), with ``user`` (B,); history batches: logits (B, T), one user per row.
    """
    y, w = batch["y"], batch["weight"] > 0
    neg_inf = torch.tensor(float("-inf"), dtype=logits.dtype)
    if logits.dim() == 2:  # history: one person per row
        lse = torch.logsumexp(torch.where(w, logits, neg_inf), dim=1, keepdim=True)  # (B, 1)
        onset = (y > 0.5) & w
        terms = (lse - logits)[onset]
    else:
        same = batch["user"][:, None] == batch["user"][None, :]  # (B, B)
        scores = torch.where(same & w[None, :], logits[None, :].expand(len(logits), -1), neg_inf)
        lse = torch.logsumexp(scores, dim=1)  # (B,): over the person's days
        onset = (y > 0.5) & w
        terms = (lse - logits)[onset]
    return terms.mean() if terms.numel() else logits.sum() * 0.0


def _within_person_auc(users: np.ndarray, y: np.ndarray, score: np.ndarray) -> float:
    from migrainemamba.metrics import per_user_auc

    auc = per_user_auc(users, np.asarray(y) > 0.5, score)["auc"].drop_nulls()
    return float(auc.mean()) if auc.len() else float("nan")


def _auc(y: np.ndarray, score: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    y = np.asarray(y) > 0.5
    return float(roc_auc_score(y, score)) if 0 < y.sum() < len(y) else float("nan")


# ----------------------------------------------------------------------------------------------
# Sequences from a diary (training stats), and rows of targets


def fit_stats(users: pl.DataFrame, training_logs: pl.DataFrame) -> SequenceStats:
    """Standardisation fitted on training diary rows only."""
    return build_sequence_data(users, training_logs).stats


def target_rows(seq: SequenceData, targets: pl.DataFrame) -> np.ndarray:
    """Row of each (user_id, date) target in ``seq`` (in target order); raises if one is absent."""
    keys = seq.keys()
    t = targets.select(pl.col("user_id").cast(pl.String), pl.col("date").cast(pl.Date))
    joined = t.join(keys, on=["user_id", "date"], how="left", maintain_order="left")
    if joined.height != t.height or joined["row"].null_count():
        raise ValueError("targets: some (user_id, date) pairs are not on the sequence grid")
    return joined["row"].to_numpy().astype(np.int64)


# ----------------------------------------------------------------------------------------------
# The model family


class TemporalModel:
    """Fine-tuned sequence classifier (a ForecastModel); ``name`` is "temporal" or "gru"."""

    def __init__(
        self,
        name: str,
        config: SequenceModelConfig,
        train_config: TrainConfig | None = None,
        encoder_lr_scale: float = 1.0,
        stats: SequenceStats | None = None,
        offset_model: Any = None,
    ) -> None:
        self.name = name
        self.offset_model = offset_model  # e.g. a FoundationModel: its logit is the offset
        self.config = config
        self.train_config = train_config or TrainConfig()
        self.encoder_lr_scale = encoder_lr_scale
        self.stats = stats
        self.classifier = OnsetClassifier(config).eval()
        self.summary: dict[str, Any] = {}

    # ------------------------------------------------------------ fitting

    def fit(self, train: ForecastBatch, valid: ForecastBatch | None = None) -> None:
        """ForecastModel API: stats on the training days, windows for the targets, fit."""
        last = train.targets.group_by("user_id").agg(pl.col("date").max().alias("_last"))
        logs = train.daily_logs.join(last, on="user_id").filter(pl.col("date") <= pl.col("_last")).drop("_last")
        self.stats = fit_stats(train.users, logs)
        targets = train.targets if valid is None else pl.concat([train.targets, valid.targets])
        seq = build_sequence_data(train.users, train.daily_logs, forecast_dates=targets.select("user_id", "date"), stats=self.stats)
        rows = target_rows(seq, train.targets)
        valid_rows = target_rows(seq, valid.targets) if valid is not None else None
        offset = None
        if self.offset_model is not None:
            offset = np.zeros(seq.n_rows, dtype=np.float32)
            offset[rows] = self.offset_of(train)
            if valid is not None:
                offset[valid_rows] = self.offset_of(valid)
        self.fit_sequences(seq, rows, valid_rows, offset=offset)

    def recalibrate(self, seq: SequenceData, rows: np.ndarray, offset: np.ndarray | None = None) -> dict[str, float]:
        """Scale and shift the sequence model's own log-odds (its correction of the offset) by
        (alpha, beta) fitted on the labelled ``rows`` with the offset held fixed:
        ``logit = offset + beta + alpha * correction``. Fitted on days the network did not train
        on: a correction learned against the offset on training days can be too bold or too timid
        elsewhere, and a sharper ranking then costs Brier score. Folded into the head's output
        layer, so every forecasting path (batch, history, recurrent) applies it unchanged."""
        rows = np.asarray(rows, dtype=np.int64)
        rows = rows[seq.scorable[rows]]
        base = np.zeros(len(rows)) if offset is None else np.asarray(offset[rows], dtype=np.float64)
        correction = self.logits_rows(seq, rows, offset) - base
        beta, alpha = fit_calibration(correction, seq.onset[rows].astype(np.float64), base=base)
        layer = self.classifier.head.net[-1]
        with torch.no_grad():
            layer.weight.mul_(alpha)
            layer.bias.mul_(alpha).add_(beta)
        self.summary["recalibration"] = {"alpha": alpha, "beta": beta, "n_days": len(rows)}
        log.info("%s recalibrated on %d days: alpha=%.3f beta=%.3f", self.name, len(rows), alpha, beta)
        return self.summary["recalibration"]

    def offset_of(self, batch: ForecastBatch) -> np.ndarray:
        """The offset model's log-odds per target (its features: the shared, leakage-safe ones)."""
        if self.offset_model is None:
            return np.zeros(batch.targets.height)
        return np.asarray(self.offset_model.logit(batch.features()), dtype=np.float64)

    def fit_sequences(
        self,
        seq: SequenceData,
        train_rows: np.ndarray,
        valid_rows: np.ndarray | None = None,
        encoder_state: dict[str, torch.Tensor] | None = None,
        logger: Any = None,
        checkpoint_dir: Path | None = None,
        progress: bool = False,
        offset: np.ndarray | None = None,
        trainer_cfg: TrainerConfig | None = None,
    ) -> dict[str, Any]:
        """Fit on scorable ``train_rows`` of ``seq`` (built with this model's stats), early stopping
        on ``valid_rows``; ``encoder_state`` initialises the encoder (pretrained weights);
        ``offset`` (N,) the offset model's log-odds per row of ``seq`` (needed iff it has one)."""
        if (offset is None) != (self.offset_model is None):
            raise ValueError(f"{self.name}: pass offset= exactly when the model has an offset model")
        if self.stats is None:
            self.stats = seq.stats
        elif self.stats is not seq.stats and not _same_stats(self.stats, seq.stats):
            raise ValueError("fit_sequences: seq was standardised with other stats than this model's")
        started = time.perf_counter()
        cfg, tcfg = self.config, self.train_config
        L.seed_everything(tcfg.seed, workers=True, verbose=False)  # the initial weights too
        module = OnsetModule(cfg.to_dict(), asdict(tcfg), self.encoder_lr_scale)
        if encoder_state is not None:
            module.classifier.encoder.load_state_dict(encoder_state, strict=True)
        train_rows = np.asarray(train_rows, dtype=np.int64)
        train_rows = train_rows[seq.scorable[train_rows]]
        train_set, valid_set, batch_size, per_epoch = self._datasets(seq, train_rows, valid_rows, offset)
        data = SequenceDataModule(
            train_set, valid_set, batch_size, per_epoch, tcfg.val_samples, tcfg.seed, tcfg.group_users
        )
        summary = train_module(module, data, tcfg, logger, checkpoint_dir, progress, trainer_cfg)
        self.classifier = module.classifier.eval()
        self.summary = summary | {
            "name": self.name,
            "fit_seconds": round(time.perf_counter() - started, 1),
            "n_train_days": len(train_rows),
            "n_parameters": count_parameters(self.classifier),
            "n_encoder_parameters": count_parameters(self.classifier.encoder),
            "pretrained": encoder_state is not None,
            "offset": self.offset_model is not None,
        }
        log.info("%s fitted: %s", self.name, json.dumps(self.summary, default=str))
        return self.summary

    def _datasets(self, seq: SequenceData, train_rows: np.ndarray, valid_rows: np.ndarray | None, offset: np.ndarray | None):
        cfg, tcfg = self.config, self.train_config
        if cfg.window_days > 0:
            train = WindowBatches(seq, train_rows, cfg.window_days, offset)
            valid = None
            if valid_rows is not None:
                valid_rows = np.asarray(valid_rows, dtype=np.int64)
                valid = WindowBatches(seq, valid_rows[seq.scorable[valid_rows]], cfg.window_days, offset)
            return train, valid, tcfg.batch_size, tcfg.samples_per_epoch
        users, ends = history_users(seq, train_rows)
        train = HistoryBatches(seq, users, ends, train_rows, offset)
        valid = None
        if valid_rows is not None:
            vusers, vends = history_users(seq, valid_rows)
            valid = HistoryBatches(seq, vusers, vends, valid_rows, offset)
        per_batch = max(1, tcfg.batch_size // USERS_PER_HISTORY_BATCH)
        return train, valid, per_batch, tcfg.samples_per_epoch  # history mode: people per epoch

    # ---------------------------------------------------------- forecasts

    def sequences(self, users: pl.DataFrame, daily_logs: pl.DataFrame, targets: pl.DataFrame) -> SequenceData:
        """The shared sequence builder with the training stats (training = serving)."""
        if self.stats is None:
            raise RuntimeError(f"{self.name}: the model is not fitted; call fit() or TemporalModel.load()")
        forecast = targets.select("user_id", "date", *[c for c in MORNING_FIELDS if c in targets.columns])
        return build_sequence_data(users, daily_logs, forecast_dates=forecast, stats=self.stats)

    def predict(self, batch: ForecastBatch) -> np.ndarray:
        """P(onset) per target, from rows before each target date and its morning fields."""
        if batch.targets.height == 0:
            return np.zeros(0)
        seq = self.sequences(batch.users, batch.daily_logs, batch.targets)
        rows = target_rows(seq, batch.targets)
        offset = None
        if self.offset_model is not None:
            offset = np.zeros(seq.n_rows, dtype=np.float32)
            offset[rows] = self.offset_of(batch)
        return self.predict_rows(seq, rows, offset)

    @torch.no_grad()
    def logits_rows(self, seq: SequenceData, rows: np.ndarray, offset: np.ndarray | None = None) -> np.ndarray:
        """Forecast log-odds for ``rows`` of ``seq`` (built with this model's stats); ``offset``
        (N,) the offset model's log-odds per row (required iff the model has an offset model)."""
        if (offset is None) != (self.offset_model is None):
            raise ValueError(f"{self.name}: pass offset= exactly when the model has an offset model")
        rows = np.asarray(rows, dtype=np.int64)
        clf = self.classifier.eval()
        if self.config.window_days > 0:
            windows = WindowBatches(seq, rows, self.config.window_days, offset)
            out = [clf(b["x"], b["mask"], b["morning"], b["static"]) + b["offset"] for b in eval_batches(windows, PREDICT_BATCH)]
            return torch.cat(out).double().numpy() if out else np.zeros(0)
        users, ends = history_users(seq, rows)
        order = np.argsort(ends - seq.offsets[users], kind="stable")  # similar lengths together
        data = HistoryBatches(seq, users[order], ends[order], rows, offset)
        found_rows, found_logits = [], []
        for b in eval_batches(data, USERS_PER_HISTORY_BATCH):
            logits = clf.forward_history(b["x"], b["mask"], b["morning"], b["static"]) + b["offset"]
            inside = b["row"] >= 0
            found_rows.append(b["row"][inside].numpy())
            found_logits.append(logits[inside].double().numpy())
        all_rows, all_logits = np.concatenate(found_rows), np.concatenate(found_logits)
        pos = np.searchsorted(all_rows, rows) if np.all(np.diff(all_rows) > 0) else None
        if pos is None:
            order = np.argsort(all_rows)
            all_rows, all_logits = all_rows[order], all_logits[order]
            pos = np.searchsorted(all_rows, rows)
        return all_logits[pos]

    def predict_rows(self, seq: SequenceData, rows: np.ndarray, offset: np.ndarray | None = None) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-self.logits_rows(seq, rows, offset)))

    def forecast_user(
        self, user: pl.DataFrame | dict[str, Any], diary_rows: pl.DataFrame, date: dt.date, morning: dict[str, Any] | None = None
    ) -> float:
        """Serving: one person's diary rows -> P(an attack starts on ``date``).

        Rows dated after ``date`` are ignored; ``morning`` may give ``date``'s morning fields when
        they are not in the diary yet.
        """
        users = user if isinstance(user, pl.DataFrame) else pl.DataFrame([user], schema_overrides={k: v for k, v in USERS_SCHEMA.items() if k in user})
        if users.height != 1:
            raise ValueError(f"forecast_user: one user expected, got {users.height} rows")
        user_id = users["user_id"][0]
        logs = diary_rows.filter((pl.col("user_id") == user_id) & (pl.col("date").cast(pl.Date) <= date))
        target = pl.DataFrame({"user_id": [user_id], "date": [date]}, schema={"user_id": pl.String, "date": pl.Date})
        if morning:
            target = target.with_columns(pl.lit(v, dtype=DAILY_LOGS_SCHEMA[k]).alias(k) for k, v in morning.items() if k in MORNING_FIELDS)
        return float(self.predict(ForecastBatch(users, logs, target))[0])

    def recurrent(self, seq: SequenceData, user_index: int) -> RecurrentForecaster:
        """A recurrent forecaster for user ``user_index`` of ``seq`` (causal history models)."""
        return RecurrentForecaster(self, seq.static[user_index])

    # ---------------------------------------------------------- persistence

    def save(self, directory: str | Path) -> Path:
        """``model.pt`` (config, training config, stats, weights; weights_only-safe) + ``temporal.json``
        (+ ``offset/``, the offset model, when there is one)."""
        if self.stats is None:
            raise RuntimeError(f"{self.name}: nothing to save, the model is not fitted")
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        if self.offset_model is not None:
            self.offset_model.save(out / OFFSET_DIR)
        meta = {
            "name": self.name,
            "config": self.config.to_dict(),
            "train_config": asdict(self.train_config),
            "encoder_lr_scale": self.encoder_lr_scale,
            "stats": {"columns": list(self.stats.columns), "mean": self.stats.mean.tolist(), "std": self.stats.std.tolist()},
            "summary": self.summary,
            "offset": "foundation" if self.offset_model is not None else None,
        }
        state = {k: v.detach().cpu() for k, v in self.classifier.state_dict().items()}
        torch.save({"meta": json.dumps(meta, default=float), "state_dict": state}, out / MODEL_FILE)
        (out / META_FILE).write_text(json.dumps({k: v for k, v in meta.items() if k != "stats"}, indent=2, default=float) + "\n")
        return out

    @classmethod
    def load(cls, directory: str | Path) -> TemporalModel:
        src = Path(directory)
        if not (src / MODEL_FILE).is_file():
            raise FileNotFoundError(f"temporal: {src} has no {MODEL_FILE}; run pipelines/temporal.py")
        ckpt = torch.load(src / MODEL_FILE, map_location="cpu", weights_only=True)
        meta = json.loads(ckpt["meta"])
        s = meta["stats"]
        stats = SequenceStats(tuple(s["columns"]), np.asarray(s["mean"]), np.asarray(s["std"]))
        model = cls(
            meta["name"],
            SequenceModelConfig.from_dict(meta["config"]),
            TrainConfig.from_dict(meta["train_config"]),
            meta.get("encoder_lr_scale", 1.0),
            stats,
        )
        if meta.get("offset") == "foundation":
            from migrainemamba.models.foundation import FoundationModel

            model.offset_model = FoundationModel.load(src / OFFSET_DIR)
        model.classifier.load_state_dict(ckpt["state_dict"], strict=True)
        model.classifier.eval()
        model.summary = meta.get("summary", {})
        return model


def _same_stats(a: SequenceStats, b: SequenceStats) -> bool:
    return a.columns == b.columns and np.allclose(a.mean, b.mean) and np.allclose(a.std, b.std)


def forecast_user(
    model: TemporalModel, user: pl.DataFrame | dict[str, Any], diary_rows: pl.DataFrame, date: dt.date, morning: dict[str, Any] | None = None
) -> float:
    """Serving function: one user's diary rows -> the forecast for ``date`` (see ``TemporalModel``)."""
    return model.forecast_user(user, diary_rows, date, morning)


# ----------------------------------------------------------------------------------------------
# Recurrent serving (causal history models)


class RecurrentForecaster:
    """One person's state, carried forward one day at a time (O(1) work per day).

    Protocol per calendar day D: ``forecast(morning_D)`` in the morning, then ``advance(values_D,
    observed_D)`` once the day is over (a day without a diary row is advanced with
    ``observed=False``: time passes, its content is hidden). Equals the model's full-sequence
    forecasts for the same diary (tested). ``state``/``load_state`` move it to and from storage.
    """

    def __init__(self, model: TemporalModel, static: np.ndarray) -> None:
        cfg = model.config
        if cfg.window_days != 0 or not cfg.causal:
            raise ValueError(
                f"{model.name}: recurrent serving needs a causal model over the whole history "
                "(window_days: 0, bidirectional: false); this one reads windows as a whole — "
                "serve it with forecast_user()"
            )
        self.classifier = model.classifier.eval()
        self.static = torch.as_tensor(np.asarray(static, dtype=np.float32)).reshape(1, -1)
        self._state = self.classifier.allocate_state(1)
        self.n_features = cfg.n_features
        self.days = 0
        # position 0 of every history: the empty day before the diary starts
        self._h = self._step(np.zeros(cfg.n_features, dtype=np.float32), False)

    @torch.no_grad()
    def _step(self, values: np.ndarray, observed: bool) -> torch.Tensor:
        x = torch.as_tensor(np.asarray(values, dtype=np.float32)).reshape(1, -1)
        h, self._state = self.classifier.step(x, torch.tensor([bool(observed)]), self._state)
        return h

    @torch.no_grad()
    def logit(self, morning: np.ndarray, offset: float = 0.0) -> float:
        m = torch.as_tensor(np.asarray(morning, dtype=np.float32)).reshape(1, -1)
        return float(self.classifier.head(self._h, m, self.static)[0]) + float(offset)

    def forecast(self, morning: np.ndarray, offset: float = 0.0) -> float:
        """P(onset today) from the days read so far, today's morning vector (Fm,) and, for a model
        with an offset model, that model's log-odds for today."""
        return float(1.0 / (1.0 + np.exp(-self.logit(morning, offset))))

    def advance(self, values: np.ndarray, observed: bool) -> None:
        """Read the day just over: its standardised values (F,) and whether it was logged."""
        self._h = self._step(values, observed)
        self.days += 1

    def state(self) -> list[torch.Tensor]:
        flat: list[torch.Tensor] = [self._h.clone()]
        for s in self._state if isinstance(self._state, list) else [self._state]:
            flat.extend(t.clone() for t in (s if isinstance(s, tuple) else (s,)))
        return flat

    def replay(
        self, seq: SequenceData, user_index: int, through_row: int | None = None, offset: np.ndarray | None = None
    ) -> np.ndarray:
        """Forecast every grid day of user ``user_index`` in ``seq`` by stepping (returns (T,) P)."""
        start, end = int(seq.offsets[user_index]), int(seq.offsets[user_index + 1])
        end = end if through_row is None else through_row + 1
        out = np.empty(end - start)
        for i, row in enumerate(range(start, end)):
            out[i] = self.forecast(seq.morning[row], 0.0 if offset is None else float(offset[row]))
            self.advance(seq.values[row], bool(seq.observed[row]))
        return out


# ----------------------------------------------------------------------------------------------
# MLflow pyfunc


class TemporalPyfunc(mlflow.pyfunc.PythonModel):
    """MLflow wrapper. Input: one frame of diary rows (contract columns) carrying their user's
    columns (``users`` contract) and a boolean ``forecast`` marking the days to forecast (such a
    row may hold only morning fields). Output: P(onset) for the ``forecast`` rows, in order."""

    ARTIFACT = "temporal"

    def __init__(self) -> None:
        self.model: TemporalModel | None = None

    def load_context(self, context) -> None:
        path = Path(context.artifacts[self.ARTIFACT])  # the model.pt file (or its directory)
        self.model = TemporalModel.load(path.parent if path.is_file() else path)

    def predict(self, context, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> np.ndarray:
        if self.model is None:
            self.load_context(context)
        frame = model_input if isinstance(model_input, pl.DataFrame) else pl.from_pandas(model_input)
        return self.model.predict(pyfunc_batch(frame))


def pyfunc_batch(frame: pl.DataFrame) -> ForecastBatch:
    """The pyfunc's single input frame -> ForecastBatch (users, diary rows, targets)."""
    if "forecast" not in frame.columns:
        raise ValueError("temporal pyfunc: the input needs a boolean column 'forecast' marking days to forecast")
    frame = frame.with_columns(pl.col("date").cast(pl.Date))
    user_cols = [c for c in USERS_SCHEMA if c in frame.columns]
    users = frame.select(user_cols).unique("user_id", keep="first", maintain_order=True)
    log_cols = [c for c in DAILY_LOGS_SCHEMA if c in frame.columns]
    logs = frame.select(log_cols)
    targets = frame.filter(pl.col("forecast")).select("user_id", "date")
    return ForecastBatch(users, logs, targets)


def pip_requirements() -> list[str]:
    """Pinned requirements of the pyfunc (explicit: MLflow's inference costs a subprocess per model)."""
    return pinned_requirements(
        "mlflow", "torch", "lightning", "polars", "numpy", "pandas", "pyarrow", "scikit-learn"
    )
