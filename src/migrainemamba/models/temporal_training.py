"""Training the sequence models on a prepared cohort: the data every sequence stage shares, the
pretrained encoder's files, the foundation offset, and one fine-tuning run.

Used by the `pretrain` and `temporal` stages and by the experiments (temporal sweep, label
efficiency, the window variant). Every sequence stage reads the prepared cohort and the shared
split (``configs/split/``) and lays the diaries out with ``build_sequence_data``, standardised with
stats fitted on TRAINING days only; the test period and the held-out (cold-start) users never
reach training.
"""

from __future__ import annotations

import json
import logging
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import polars as pl
import torch
from omegaconf import DictConfig

from migrainemamba.config import resolve_path, to_dict
from migrainemamba.data.prepare import PreparedCohort, prepare_cohort
from migrainemamba.features.daily import build_features
from migrainemamba.features.sequences import SequenceData, SequenceStats, build_sequence_data
from migrainemamba.models.base import ForecastBatch
from migrainemamba.models.baselines import RunningBaseRate
from migrainemamba.models.pretrain import TrainConfig, TrainerConfig
from migrainemamba.models.sequence_heads import SequenceModelConfig
from migrainemamba.models.temporal import TemporalModel, TemporalPyfunc, fit_stats, pip_requirements
from migrainemamba.split import make_split
from migrainemamba.tracking import flatten, tracking_uri

log = logging.getLogger(__name__)

ENCODER_FILE = "encoder.pt"
PRETRAIN_META = "pretrain.json"


@dataclass
class StageData:
    users: pl.DataFrame
    daily_logs: pl.DataFrame
    features: pl.DataFrame  # build_features output + split + cold_start (the harness's frame)
    seq: SequenceData
    split: np.ndarray  # (N,) split of every seq row: train / valid / test
    cold_start: np.ndarray  # (N,) bool
    offset_model: Any = None  # the foundation model when the temporal models build on it
    offset: np.ndarray | None = None  # (N,) its log-odds for every seq row

    def rows(self, split: str, scorable: bool = False) -> np.ndarray:
        keep = self.split == split
        if scorable:
            keep &= self.seq.scorable
        return np.flatnonzero(keep)


def load_stage_data(cfg: DictConfig, stats: SequenceStats | None = None) -> StageData:
    """Cohort + split; sequences standardised with ``stats`` or with stats fitted on training days."""
    cohort = PreparedCohort.read(resolve_path(cfg.paths.prepared))
    features = pl.read_parquet(resolve_path(cfg.paths.features) / "features.parquet")
    split = make_split(features, to_dict(cfg.split))
    keys = split.select("user_id", "date", "split", "cold_start")
    if stats is None:
        train_logs = cohort.daily_logs.join(keys.filter(pl.col("split") == "train"), on=["user_id", "date"], how="semi")
        stats = fit_stats(cohort.users, train_logs)
    seq = build_sequence_data(cohort.users, cohort.daily_logs, stats=stats)
    rows = seq.keys().join(keys, on=["user_id", "date"], how="left", maintain_order="left")
    if rows.height != seq.n_rows or rows["split"].null_count():
        raise ValueError(
            "the sequence grid and data/features/features.parquet disagree; rerun the features stage"
        )
    return StageData(
        cohort.users, cohort.daily_logs, split, seq, rows["split"].to_numpy().astype(str), rows["cold_start"].to_numpy()
    )


def training_data(cfg: DictConfig, data: StageData) -> StageData:
    """What the sequence models fine-tune on (``temporal.train_cohort``): the cohort's own training
    people (``own``: their training days, early stopping on their validation days), or a fresh
    simulated cohort of the same story (``fresh``)."""
    source = cfg.temporal.get("train_cohort", {}).get("source", "own")
    if source == "own":
        return data
    if source == "fresh":
        return fresh_cohort_data(cfg, data)
    raise ValueError(f"temporal.train_cohort.source must be 'own' or 'fresh', got {source!r}")


def fresh_cohort_data(cfg: DictConfig, data: StageData) -> StageData:
    """A fresh simulated cohort of the configured story (``data: synthetic`` only), for fine-tuning.

    Its people are drawn with another seed (``temporal.train_cohort``): neither the foundation
    model nor anything else has seen them, so the foundation log-odds the sequence model corrects
    are out of sample there, as on the people it will forecast (on its own training days they are
    in sample: the trees were fitted there). Standardised with ``data``'s training stats; split by
    person into ``train`` and ``valid`` (early stopping). Nothing is written.
    """
    fc = cfg.temporal.train_cohort
    data_cfg = to_dict(cfg.data)
    if data_cfg.get("source") != "synthetic":
        raise ValueError("temporal.train_cohort.source: fresh draws people from the simulator; it needs data: synthetic")
    data_cfg |= {"n_users": int(fc.n_users), "seed": int(data_cfg["seed"]) + int(fc.seed_offset)}
    cohort = prepare_cohort(data_cfg)
    features = build_features(cohort.users, cohort.daily_logs)
    seq = build_sequence_data(cohort.users, cohort.daily_logs, stats=data.seq.stats)
    held = np.random.default_rng(int(fc.seed_offset)).random(seq.user_ids.shape[0]) < float(fc.valid_share)
    split = np.where(held[seq.user_of_rows(np.arange(seq.n_rows))], "valid", "train")
    fresh = StageData(cohort.users, cohort.daily_logs, features, seq, split, np.zeros(seq.n_rows, dtype=bool), data.offset_model)
    if data.offset_model is not None:
        rows = seq.keys().select("user_id", "date").join(features, on=["user_id", "date"], how="left", maintain_order="left")
        fresh.offset = np.asarray(data.offset_model.logit(rows), dtype=np.float32)
    log.info("fresh cohort for fine-tuning: %d people, %d scorable days", seq.user_ids.shape[0], int(seq.scorable.sum()))
    return fresh


def lightning_logger(run: Any, cfg: DictConfig) -> Any:
    """Lightning's MLflow logger writing into an already open run (which it must not close)."""
    if run is None:
        return None
    from lightning.pytorch.loggers import MLFlowLogger

    class _OpenRunLogger(MLFlowLogger):
        def finalize(self, status: str = "success") -> None:  # the stage closes its own runs
            return None

    return _OpenRunLogger(
        experiment_name=mlflow.get_experiment(run.info.experiment_id).name,
        tracking_uri=tracking_uri(cfg.tracking.uri),
        run_id=run.info.run_id,
    )


def trainer_config(cfg: DictConfig) -> TrainerConfig:
    """The composed ``trainer`` group (cpu by default, ``trainer=gpu`` on CUDA machines)."""
    return TrainerConfig.from_dict(to_dict(cfg.trainer))


def load_pretrained(directory: Path) -> tuple[SequenceModelConfig, SequenceStats, dict[str, torch.Tensor]]:
    """(architecture, training stats, encoder weights) written by ``run_pretrain``."""
    meta_path, enc_path = directory / PRETRAIN_META, directory / ENCODER_FILE
    if not meta_path.is_file() or not enc_path.is_file():
        raise FileNotFoundError(f"{directory}: no pretrained encoder; run pipelines/pretrain.py first")
    meta = json.loads(meta_path.read_text())
    s = meta["stats"]
    stats = SequenceStats(tuple(s["columns"]), np.asarray(s["mean"]), np.asarray(s["std"]))
    state = torch.load(enc_path, map_location="cpu", weights_only=True)["state_dict"]
    return SequenceModelConfig.from_dict(meta["model"]), stats, state


def fit_sequence_model(
    name: str,
    model_cfg: SequenceModelConfig,
    train_cfg: TrainConfig,
    data: StageData,
    train_rows: np.ndarray,
    encoder_state: dict[str, torch.Tensor] | None,
    cfg: DictConfig,
    parent: Any,
    run_name: str,
    checkpoint_dir: Path | None = None,
    encoder_lr_scale: float = 1.0,
    recalibrate: bool = False,
) -> TemporalModel:
    """Fine-tune one sequence model; ``recalibrate``: then fit (alpha, beta) of its correction on
    the validation days (``TemporalModel.recalibrate``)."""
    model = TemporalModel(name, model_cfg, train_cfg, encoder_lr_scale, stats=data.seq.stats, offset_model=data.offset_model)
    child = mlflow.start_run(run_name=run_name, nested=True) if parent is not None else nullcontext()
    with child as run:
        if run is not None:
            mlflow.log_params({k: str(v)[:500] for k, v in flatten({"model": model_cfg.to_dict(), "train": asdict(train_cfg)}).items()})
        summary = model.fit_sequences(
            data.seq, train_rows, data.rows("valid", scorable=True), encoder_state,
            logger=lightning_logger(run, cfg), checkpoint_dir=checkpoint_dir, progress=bool(cfg.temporal.progress),
            offset=data.offset, trainer_cfg=trainer_config(cfg),
        )
        if recalibrate:
            summary |= {f"recalibration_{k}": v for k, v in model.recalibrate(data.seq, data.rows("valid", scorable=True), data.offset).items()}
        if run is not None:
            mlflow.log_metrics({f"final_{k}": float(v) for k, v in summary.items() if isinstance(v, int | float) and not isinstance(v, bool)})
    return model


def running_base_rate(data: StageData, rows: np.ndarray) -> np.ndarray:
    """The Brier-skill reference forecast for sequence rows."""
    keys = data.seq.keys()[rows].select("user_id", "date")
    return RunningBaseRate().predict(ForecastBatch(data.users, data.daily_logs, keys, precomputed=data.features))


def foundation_offset(cfg: DictConfig, data: StageData) -> tuple[Any, np.ndarray]:
    """The trained foundation model and its log-odds for every sequence row (its own features)."""
    from migrainemamba.models.foundation import FoundationModel

    model = FoundationModel.load(resolve_path(cfg.temporal.foundation_dir))
    rows = data.seq.keys().select("user_id", "date").join(data.features, on=["user_id", "date"], how="left", maintain_order="left")
    return model, np.asarray(model.logit(rows), dtype=np.float32)


def training_offset(cfg: DictConfig, data: StageData) -> tuple[Any, np.ndarray]:
    """The foundation model and the log-odds its correction is learned against
    (``temporal.offset_fit``). ``out_of_fold``: each training person's rows from a foundation
    fitted without them (migrainemamba.models.out_of_fold), as uncertain as log-odds are at
    forecast time; held-out people keep the full model's. ``in_sample``: the full model's
    everywhere (on its own training days its trees fitted those outcomes)."""
    model, logit = foundation_offset(cfg, data)
    fit = cfg.temporal.get("offset_fit", "in_sample")
    if fit == "in_sample":
        return model, logit
    if fit != "out_of_fold":
        raise ValueError(f"temporal.offset_fit must be 'out_of_fold' or 'in_sample', got {fit!r}")
    from migrainemamba.models.out_of_fold import read_out_of_fold, with_out_of_fold

    oof = read_out_of_fold(resolve_path(cfg.temporal.out_of_fold))
    return model, with_out_of_fold(data.seq.keys(), logit, oof).astype(np.float32)


def encoder_init(pretrained: SequenceModelConfig, target: SequenceModelConfig, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Pretrained weights for ``target``'s encoder: all of them, or, for a causal target from a
    bidirectional pretraining, its forward half (input projection, forward mixers, norms)."""
    same = ("encoder", "d_model", "n_layers", "d_state", "d_conv", "expand", "n_features")
    if any(getattr(pretrained, k) != getattr(target, k) for k in same):
        raise ValueError(
            f"temporal: the model differs from the pretrained encoder in {[k for k in same if getattr(pretrained, k) != getattr(target, k)]}; "
            "change configs/pretrain (and rerun pretrain) instead"
        )
    if pretrained.bidirectional and not target.bidirectional:
        return {k: v for k, v in state.items() if ".mixer_bwd." not in k}
    if target.bidirectional and not pretrained.bidirectional:
        raise ValueError("temporal: a bidirectional model cannot start from a causal pretrained encoder")
    return state


def fit_summary(model: TemporalModel) -> dict[str, Any]:
    s = model.summary
    return {
        "val_loss": round(s["best_val_loss"], 5), "best_epoch": s["best_epoch"], "steps": s["steps"],
        "n_parameters": s["n_parameters"], "n_encoder_parameters": s["n_encoder_parameters"],
        "window_days": model.config.window_days, "bidirectional": model.config.bidirectional,
        "fit_seconds": s["fit_seconds"], "world_size": s.get("world_size", 1),
    } | {f"recalibration_{k}": v for k, v in s.get("recalibration", {}).items()}


def register(model_dir: Path, name: str) -> Any:
    """Log the saved model folder as an MLflow pyfunc and register it as ``name``.

    The folder is logged as it is (the evaluated files, byte for byte), so model
    selection can find the registered version by its tree hash and set aliases.
    """
    return mlflow.pyfunc.log_model(
        name="model",
        python_model=TemporalPyfunc(),
        artifacts={TemporalPyfunc.ARTIFACT: str(model_dir)},
        pip_requirements=pip_requirements(),
        registered_model_name=name,
    )
