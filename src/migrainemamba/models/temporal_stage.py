"""The `pretrain` and `temporal` stages as functions (DESIGN.md §5, Temporal).

Both stages read the prepared cohort and the evaluation split (``make_split`` with
``evaluate.split``) and lay the diaries out with ``build_sequence_data``, standardised with stats
fitted on TRAINING days only.

- ``run_pretrain``: self-supervised pretraining (masked days + next day, labels unused) on windows
  ending in the training period of every non-held-out user; early stopping on windows ending in
  the validation period. The test period and the held-out (cold-start) users are never read, so
  their outcomes cannot reach the encoder. Writes ``data/models/pretrain`` and
  ``metrics/pretrain.json``.
- ``run_temporal``: fine-tunes the pretrained Mamba encoder + onset head on the training split
  (by default on top of the foundation model: its log-odds are the offset the sequence model
  corrects, as the foundation model corrects the clinical prior; ``temporal.offset: none`` trains a
  stand-alone sequence model). ``temporal.model`` says how the fine-tuned model reads the diary:
  by default causally over the whole history (recurrent serving; it starts from the forward half
  of the bidirectionally pretrained encoder); ``temporal.variant`` trains the other reading (the
  bidirectional 30-day window) for comparison
  (``data/models/temporal``, registered as ``migrainemamba-temporal``), trains the GRU baseline by
  the same code (``data/models/gru``), the variant (``data/models/temporal/<variant.name>``), and
  runs the label-efficiency experiment (a share of
  the training users' labels, pretrained vs from scratch, scored on the test split with bootstrap
  intervals; plot in MLflow and ``plots/temporal/``). Writes ``metrics/temporal.json``.
"""

from __future__ import annotations

import json
import logging
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import polars as pl
import torch
from omegaconf import DictConfig

from migrainemamba.config import resolve_path, to_dict
from migrainemamba.data.prepare import PreparedCohort
from migrainemamba.evaluation.baselines import RunningBaseRate
from migrainemamba.evaluation.scoring import Scored, bootstrap_replicates, summarize
from migrainemamba.evaluation.split import make_split
from migrainemamba.features.sequences import SequenceData, SequenceStats, build_sequence_data
from migrainemamba.models.base import ForecastBatch
from migrainemamba.models.mamba import MambaEncoder, save_checkpoint
from migrainemamba.models.pretrain import (
    PretrainConfig,
    TrainConfig,
    WindowBatches,
    evaluate_pretrain,
    mse_baselines,
    pretrain_encoder,
    pretrain_rows,
)
from migrainemamba.models.sequence_heads import SequenceModelConfig
from migrainemamba.models.temporal import (
    TemporalModel,
    TemporalPyfunc,
    fit_stats,
    pip_requirements,
)
from migrainemamba.pipeline import write_json
from migrainemamba.tracking import flatten, stage_run, tracking_uri

log = logging.getLogger(__name__)

ENCODER_FILE = "encoder.pt"
PRETRAIN_META = "pretrain.json"


# ----------------------------------------------------------------------------------------------
# Data shared by both stages


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
    split = make_split(features, to_dict(cfg.evaluate.split))
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


def _lightning_logger(run: Any, cfg: DictConfig) -> Any:
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


def _seconds(started: float) -> float:
    return round(time.perf_counter() - started, 1)


# ----------------------------------------------------------------------------------------------
# pretrain


def run_pretrain(cfg: DictConfig) -> dict[str, Any]:
    pc = cfg.pretrain
    started = time.perf_counter()
    model_cfg = SequenceModelConfig.from_dict(to_dict(pc.model))
    pre_cfg = PretrainConfig.from_dict(to_dict(pc.objective))
    train_cfg = TrainConfig.from_dict(to_dict(pc.train))
    torch.set_num_threads(train_cfg.num_threads)
    data = load_stage_data(cfg)
    loaded = _seconds(started)
    out = resolve_path(pc.model_dir)
    out.mkdir(parents=True, exist_ok=True)
    train_rows, val_rows = data.rows("train"), data.rows("valid")
    params = {"pretrain": to_dict(pc), "split": to_dict(cfg.evaluate.split)}
    tracking = stage_run("pretrain", params, cfg.tracking.uri) if cfg.tracking.enabled else nullcontext()
    with tracking as run:
        module, summary = pretrain_encoder(
            data.seq, train_rows, val_rows, model_cfg, pre_cfg, train_cfg,
            logger=_lightning_logger(run, cfg), checkpoint_dir=out / "lightning", progress=bool(pc.progress),
        )
        val = WindowBatches(data.seq, pretrain_rows(data.seq, val_rows), model_cfg.window_days)
        rng = np.random.default_rng(train_cfg.seed)
        if 0 < train_cfg.val_samples < len(val):
            val = WindowBatches(data.seq, rng.choice(val.rows, train_cfg.val_samples, replace=False), model_cfg.window_days)
        scores = evaluate_pretrain(module, val, train_cfg.batch_size, seed=train_cfg.seed)
        baselines = mse_baselines(data.seq, val.rows, model_cfg.window_days)
        if isinstance(module.encoder, MambaEncoder):
            save_checkpoint(module.encoder, out / ENCODER_FILE)
        else:
            torch.save({"state_dict": module.encoder.state_dict()}, out / ENCODER_FILE)
        stats = data.seq.stats
        meta = {
            "model": model_cfg.to_dict(),
            "objective": asdict(pre_cfg),
            "train": asdict(train_cfg),
            "stats": {"columns": list(stats.columns), "mean": stats.mean.tolist(), "std": stats.std.tolist()},
            "summary": summary,
            "rows": "windows ending in the training period of non-held-out users (labels unused)",
        }
        write_json(out / PRETRAIN_META, meta)
        metrics = {
            "val_masked_mse": scores["masked_mse"],
            "val_next_mse": scores["next_mse"],
            "val_mean_mse": baselines["mean_mse"],  # predicting the training mean for every value
            "val_persistence_mse": baselines["persistence_mse"],  # predicting D's values = D-1's
            "n_train_windows": summary["n_train_windows"],
            "epochs": summary["epochs"],
            "steps": summary["steps"],
            "data_seconds": loaded,
            "seconds": _seconds(started),
        }
        write_json(resolve_path(cfg.paths.metrics) / "pretrain.json", metrics)
        if run is not None:
            mlflow.log_metrics({f"final_{k}": float(v) for k, v in metrics.items()})
            mlflow.log_dict(meta, "pretrain.json")
            mlflow.log_artifact(str(out / ENCODER_FILE), "encoder")
    log.info("pretrain: %s", metrics)
    return metrics


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


# ----------------------------------------------------------------------------------------------
# temporal


def _fit(
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
) -> TemporalModel:
    model = TemporalModel(name, model_cfg, train_cfg, encoder_lr_scale, stats=data.seq.stats, offset_model=data.offset_model)
    child = mlflow.start_run(run_name=run_name, nested=True) if parent is not None else nullcontext()
    with child as run:
        if run is not None:
            mlflow.log_params({k: str(v)[:500] for k, v in flatten({"model": model_cfg.to_dict(), "train": asdict(train_cfg)}).items()})
        summary = model.fit_sequences(
            data.seq, train_rows, data.rows("valid", scorable=True), encoder_state,
            logger=_lightning_logger(run, cfg), checkpoint_dir=checkpoint_dir, progress=bool(cfg.temporal.progress),
            offset=data.offset,
        )
        if run is not None:
            mlflow.log_metrics({f"final_{k}": float(v) for k, v in summary.items() if isinstance(v, int | float) and not isinstance(v, bool)})
    return model


LABEL_EFFICIENCY_METRICS = ("auc", "within_person_auc", "brier", "brier_skill")


def _replicates(model: TemporalModel, data: StageData, rows: np.ndarray, p_ref: np.ndarray, n_boot: int, seed: int) -> dict[str, np.ndarray]:
    """Bootstrap replicates over users (shared resamples: differences between models are paired)."""
    seq = data.seq
    s = Scored(user=seq.user_of_rows(rows), y=seq.onset[rows], p=model.predict_rows(seq, rows, data.offset), p_ref=p_ref)
    reps = bootstrap_replicates(s, n_boot, seed)
    return {k: reps[k] for k in LABEL_EFFICIENCY_METRICS}


def _rounded(summary: dict[str, float]) -> dict[str, float]:
    return {k: round(v, 5) for k, v in summary.items()}


def _base_rate(data: StageData, rows: np.ndarray) -> np.ndarray:
    keys = data.seq.keys()[rows].select("user_id", "date")
    return RunningBaseRate().predict(ForecastBatch(data.users, data.daily_logs, keys, precomputed=data.features))


def label_efficiency(
    cfg: DictConfig, data: StageData, model_cfg: SequenceModelConfig, encoder_state: dict[str, torch.Tensor], parent: Any
) -> dict[str, Any]:
    """Fine-tune on the labels of a share of the training users, pretrained vs from scratch.

    For each ``offsets`` entry: ``foundation`` (the temporal model as configured, on top of the
    foundation model) and ``none`` (the sequence model alone, where the encoder must learn
    everything). Scored on the test split; ``pretrained_minus_scratch`` is paired over users.
    Results: ``{offset: {fraction: {pretrained, scratch, pretrained_minus_scratch}}}``.
    """
    le = cfg.temporal.label_efficiency
    train_cfg = TrainConfig.from_dict(to_dict(cfg.temporal.train) | to_dict(le.train))
    train_rows = data.rows("train", scorable=True)
    train_users = np.unique(data.seq.user_of_rows(train_rows))
    test_rows = data.rows("test", scorable=True)
    p_ref = _base_rate(data, test_rows)
    results: dict[str, Any] = {}
    for offset in le.offsets:
        if offset == "foundation" and data.offset_model is None:
            log.warning("label efficiency: no foundation offset in this run (temporal.offset: none), skipped")
            continue
        part = data if offset == "foundation" else replace(data, offset_model=None, offset=None)
        for fraction in le.fractions:
            rng = np.random.default_rng(int(le.seed))
            chosen = rng.choice(train_users, max(1, round(float(fraction) * len(train_users))), replace=False)
            rows = train_rows[np.isin(data.seq.user_of_rows(train_rows), chosen)]
            key = f"{float(fraction):g}"
            out = results.setdefault(str(offset), {}).setdefault(key, {})
            reps = {}
            for variant, state in (("pretrained", encoder_state), ("scratch", None)):
                run_name = f"label_efficiency_{offset}_{key}_{variant}"
                model = _fit("temporal", model_cfg, train_cfg, part, rows, state, cfg, parent, run_name)
                reps[variant] = _replicates(model, part, test_rows, p_ref, int(le.n_boot), int(le.seed))
                out[variant] = _rounded(summarize(reps[variant])) | {
                    "n_train_days": len(rows),
                    "n_train_users": len(chosen),
                    "best_val_loss": round(model.summary["best_val_loss"], 5),
                }
                log.info("label efficiency %s %s %s: %s", offset, key, variant, out[variant])
            diff = {m: reps["pretrained"][m] - reps["scratch"][m] for m in LABEL_EFFICIENCY_METRICS}
            out["pretrained_minus_scratch"] = _rounded(summarize(diff))  # paired over users
    return results


def plot_label_efficiency(results: dict[str, Any], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = [("auc", "pooled AUC"), ("within_person_auc", "within-person AUC"), ("brier_skill", "Brier skill vs base rate")]
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.4 * len(metrics), 4.0), squeeze=False)
    styles = {"pretrained": "-", "scratch": "--"}
    for ax, (metric, label) in zip(axes[0], metrics, strict=True):
        for j, (offset, by_fraction) in enumerate(results.items()):
            fractions = sorted(by_fraction, key=float)
            for i, variant in enumerate(("pretrained", "scratch")):
                x = np.array([float(f) for f in fractions]) * (1.0 + 0.05 * (i - 0.5))
                y = np.array([by_fraction[f][variant].get(metric, np.nan) for f in fractions])
                lo = np.array([by_fraction[f][variant].get(f"{metric}_lo", np.nan) for f in fractions])
                hi = np.array([by_fraction[f][variant].get(f"{metric}_hi", np.nan) for f in fractions])
                ax.errorbar(
                    x, y, yerr=[y - lo, hi - y], marker="o", capsize=3, ls=styles[variant], color=f"C{j}",
                    label=f"{variant} (offset: {offset})",
                )
        ax.set_xscale("log")
        ax.set(xlabel="share of training users' labels", ylabel=label, title=label)
        ax.legend(fontsize=7)
    fig.suptitle("Label efficiency on test days (95% bootstrap intervals over users)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def foundation_offset(cfg: DictConfig, data: StageData) -> tuple[Any, np.ndarray]:
    """The trained foundation model and its log-odds for every sequence row (its own features)."""
    from migrainemamba.models.foundation import FoundationModel

    model = FoundationModel.load(resolve_path(cfg.temporal.foundation_dir))
    rows = data.seq.keys().select("user_id", "date").join(data.features, on=["user_id", "date"], how="left", maintain_order="left")
    return model, np.asarray(model.logit(rows), dtype=np.float32)


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


def _summary(model: TemporalModel) -> dict[str, Any]:
    s = model.summary
    return {
        "val_loss": round(s["best_val_loss"], 5), "best_epoch": s["best_epoch"], "steps": s["steps"],
        "n_parameters": s["n_parameters"], "n_encoder_parameters": s["n_encoder_parameters"],
        "window_days": model.config.window_days, "bidirectional": model.config.bidirectional,
        "fit_seconds": s["fit_seconds"],
    }


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


def run_temporal(cfg: DictConfig) -> dict[str, Any]:
    tc = cfg.temporal
    started = time.perf_counter()
    pre_cfg, stats, encoder_state = load_pretrained(resolve_path(tc.pretrained_dir))
    model_cfg = SequenceModelConfig.from_dict(pre_cfg.to_dict() | to_dict(tc.model))
    init_state = encoder_init(pre_cfg, model_cfg, encoder_state)
    train_cfg = TrainConfig.from_dict(to_dict(tc.train))
    torch.set_num_threads(train_cfg.num_threads)
    data = load_stage_data(cfg, stats=stats)
    if tc.offset == "foundation":
        data.offset_model, data.offset = foundation_offset(cfg, data)
    elif tc.offset not in (None, "none"):
        raise ValueError(f"temporal.offset must be 'foundation' or 'none', got {tc.offset!r}")
    timings: dict[str, float] = {"data_seconds": _seconds(started)}
    train_rows = data.rows("train", scorable=True)
    model_dir, gru_dir = resolve_path(tc.model_dir), resolve_path(tc.gru_dir)
    params = {"temporal": to_dict(tc), "pretrained_model": pre_cfg.to_dict(), "split": to_dict(cfg.evaluate.split)}
    tracking = stage_run("temporal", params, cfg.tracking.uri) if cfg.tracking.enabled else nullcontext()
    metrics: dict[str, Any] = {}
    with tracking as run:
        # the temporal model: pretrained Mamba encoder + onset head
        t = time.perf_counter()
        temporal = _fit(
            "temporal", model_cfg, train_cfg, data, train_rows, init_state, cfg, run, "temporal",
            checkpoint_dir=model_dir / "lightning", encoder_lr_scale=float(tc.encoder_lr_scale),
        )
        temporal.save(model_dir)
        timings["temporal_seconds"] = _seconds(t)
        # the GRU baseline: the same reading of the diary, head, losses, early stopping; no pretraining
        t = time.perf_counter()
        gru_cfg = SequenceModelConfig.from_dict(model_cfg.to_dict() | {"encoder": "gru", "gru_hidden": 0} | to_dict(tc.gru.model))
        gru = _fit("gru", gru_cfg, TrainConfig.from_dict(to_dict(tc.train) | to_dict(tc.gru.train)), data, train_rows, None, cfg, run, "gru", checkpoint_dir=gru_dir / "lightning")
        gru.save(gru_dir)
        timings["gru_seconds"] = _seconds(t)
        metrics["temporal"], metrics["gru"] = _summary(temporal), _summary(gru)
        # the other reading of the diary, for comparison (saved beside the model, not registered)
        if tc.variant.enabled:
            t = time.perf_counter()
            variant_cfg = SequenceModelConfig.from_dict(pre_cfg.to_dict() | to_dict(tc.variant.model))
            variant = _fit(
                "temporal", variant_cfg, TrainConfig.from_dict(to_dict(tc.train) | to_dict(tc.variant.train)),
                data, train_rows, encoder_init(pre_cfg, variant_cfg, encoder_state), cfg, run, f"temporal_{tc.variant.name}",
            )
            variant.save(model_dir / str(tc.variant.name))
            timings["variant_seconds"] = _seconds(t)
            metrics[f"temporal_{tc.variant.name}"] = _summary(variant)
        # label efficiency
        if tc.label_efficiency.enabled:
            t = time.perf_counter()
            results = label_efficiency(cfg, data, model_cfg, init_state, run)
            figure = plot_label_efficiency(results, resolve_path(cfg.paths.plots) / "temporal" / "label_efficiency.png")
            write_json(model_dir / "label_efficiency.json", results)
            metrics["label_efficiency"] = results
            timings["label_efficiency_seconds"] = _seconds(t)
            if run is not None:
                mlflow.log_artifact(str(figure), "figures")
                mlflow.log_dict(results, "label_efficiency.json")
        if run is not None:
            t = time.perf_counter()
            info = register(model_dir, str(tc.registered_model_name))
            log.info("registered %r version %s", str(tc.registered_model_name), info.registered_model_version)
            timings["register_seconds"] = _seconds(t)
        timings["seconds"] = _seconds(started)
        metrics |= timings
        write_json(resolve_path(cfg.paths.metrics) / "temporal.json", metrics)
        if run is not None:
            mlflow.log_metrics({k.replace("+", "plus"): float(v) for k, v in flatten(metrics).items() if isinstance(v, int | float)})
    return metrics
