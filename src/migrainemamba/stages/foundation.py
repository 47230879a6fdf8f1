"""DVC stage `foundation`: split, fit, save, plot, track, register -> data/models/foundation/.

Uses the evaluation's own split (``migrainemamba.split``, settings in ``configs/split/``)
so the model never trains on a day the evaluation tests: fit on scorable
train rows, early-stop on scorable valid rows (each person's later days);
held-out (cold-start) users are never seen.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt
import mlflow
import numpy as np
import polars as pl
from omegaconf import DictConfig
from sklearn.metrics import log_loss

from migrainemamba.config import resolve_path, to_dict
from migrainemamba.data.prepare import PreparedCohort
from migrainemamba.features.daily import build_features
from migrainemamba.features.triggers import GROUP_NAMES
from migrainemamba.metrics import pooled_auc, within_person_auc
from migrainemamba.models.base import ForecastBatch
from migrainemamba.models.foundation import (
    GROUPS,
    FoundationConfig,
    FoundationModel,
    pyfunc_kwargs,
    split_batches,
)
from migrainemamba.models.out_of_fold import out_of_fold_logits
from migrainemamba.models.prior import sigmoid
from migrainemamba.split import make_split
from migrainemamba.stages.common import finish, seconds_since, tracked

log = logging.getLogger(__name__)

STAGE = "foundation"
TOP_FEATURES = 25
EXAMPLE_ROWS = 5


def load_features(cfg: DictConfig, cohort: PreparedCohort) -> pl.DataFrame:
    """The features stage's output when present (same function, same rows), else built now."""
    path = resolve_path(cfg.paths.features) / "features.parquet"
    if path.is_file():
        log.info("features from %s", path)
        return pl.read_parquet(path)
    log.info("no %s: building features (run the features stage to cache them)", path)
    return build_features(cohort.users, cohort.daily_logs)


def valid_metrics(model: FoundationModel, valid: ForecastBatch) -> dict[str, float]:
    """Valid AUCs and log loss of the model and, for comparison, of its calibrated prior alone.

    Pooled AUC mostly reflects that some people have more attacks than others;
    the within-person AUC is the honest one (docs/clinical_sources.md).
    """
    features = valid.features()
    users = features["user_id"].to_numpy()
    y = valid.labels().astype(bool)
    p = model.predict(valid)
    p_prior = sigmoid(model.offset(features))
    return {
        "valid_auc": pooled_auc(y, p),
        "valid_within_person_auc": within_person_auc(users, y, p)[0],
        "valid_within_person_auc_prior": within_person_auc(users, y, p_prior)[0],
        "valid_logloss": float(log_loss(y, p, labels=[False, True])),
        "valid_auc_prior": pooled_auc(y, p_prior),
        "valid_logloss_prior": float(log_loss(y, p_prior, labels=[False, True])),
        "valid_onset_rate": float(y.mean()),
        "valid_mean_forecast": float(p.mean()),
    }


def out_of_fold_metrics(
    logits: pl.DataFrame, model: FoundationModel, features: pl.DataFrame, split_cfg: dict[str, Any]
) -> dict[str, float]:
    """Log loss on the training people's train and valid days: the full model (in sample on
    train days) beside the out-of-fold log-odds. The train-day gap is how much sharper the
    full model looks where it was fitted than on people it never saw."""
    rows = make_split(features, split_cfg).filter(pl.col("scorable") & ~pl.col("cold_start") & pl.col("split").is_in(["train", "valid"]))
    rows = rows.join(logits.select("user_id", "date", oof=pl.col("logit")), on=["user_id", "date"], how="left")
    out: dict[str, float] = {}
    for name in ("train", "valid"):
        part = rows.filter(pl.col("split") == name)
        y = part["onset"].to_numpy().astype(bool)
        out[f"{name}_logloss_full_model"] = float(log_loss(y, sigmoid(model.logit(part)), labels=[False, True]))
        out[f"{name}_logloss_out_of_fold"] = float(log_loss(y, sigmoid(part["oof"].to_numpy()), labels=[False, True]))
    return out


# ------------------------------------------------------------------ plots


def plot_feature_importance(model: FoundationModel, path: Path, top: int = TOP_FEATURES) -> Path:
    """Gain importance of the top features, labelled with their human descriptions."""
    imp = model.feature_importance("gain").head(top).reverse()
    total = float(model.feature_importance("gain")["importance"].sum()) or 1.0
    fig, ax = plt.subplots(figsize=(9, 0.32 * imp.height + 1.2))
    ax.barh(imp["description"].to_list(), (imp["importance"] / total).to_numpy(), color="#4c72b0")
    ax.set_xlabel("share of total gain")
    ax.set_title(
        f"Foundation model: top {imp.height} features by gain\n(what the trees learned beyond the clinical prior)"
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_group_importance(model: FoundationModel, valid: ForecastBatch, path: Path) -> Path:
    """Per habit group: share of the trees' gain, and mean |log-odds| on valid days (prior vs learned)."""
    imp = model.feature_importance("gain").group_by("group").agg(pl.col("importance").sum())
    gain = dict(zip(imp["group"].to_list(), imp["importance"].to_list(), strict=True))
    parts = model.decompose(valid.features())
    names = [GROUP_NAMES[g] for g in GROUPS]
    total_gain = sum(gain.values()) or 1.0
    order = np.argsort(
        [np.abs(parts.prior[:, j] + parts.learned[:, j]).mean() for j in range(len(GROUPS))]
    )
    y = np.arange(len(GROUPS))
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 6), sharey=True)
    left.barh(y, [gain.get(names[j], 0.0) / total_gain for j in order], color="#4c72b0")
    left.set_xlabel("share of the trees' gain")
    left.set_yticks(y, [names[j] for j in order])
    right.barh(
        y - 0.2,
        np.abs(parts.prior).mean(axis=0)[order],
        height=0.4,
        label="clinical prior",
        color="#dd8452",
    )
    right.barh(
        y + 0.2,
        np.abs(parts.learned).mean(axis=0)[order],
        height=0.4,
        label="learned",
        color="#4c72b0",
    )
    right.set_xlabel("mean |log-odds contribution| on validation days")
    right.legend(loc="lower right")
    fig.suptitle("Foundation model: importance per habit group")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# ------------------------------------------------------------------ stage


def _log_to_mlflow(
    model: FoundationModel,
    model_dir: Path,
    example: pl.DataFrame,
    metrics: dict[str, Any],
    figures: list[Path],
    registered_name: str,
) -> None:
    for fig in figures:
        mlflow.log_artifact(str(fig), "figures")
    mlflow.log_dict(model.feature_importance("gain").to_dicts(), "feature_importance.json")
    info = mlflow.pyfunc.log_model(
        name="model", registered_model_name=registered_name, **pyfunc_kwargs(model_dir, example)
    )
    log.info(
        "logged %s, registered as %r version %s",
        info.model_uri,
        registered_name,
        info.registered_model_version,
    )


def run(cfg: DictConfig) -> dict[str, Any]:
    """Fit the foundation model on the evaluation's train split; write model, metrics, plots; track."""
    fcfg = to_dict(cfg.foundation)
    config = FoundationConfig.from_dict(fcfg)
    split_cfg = to_dict(cfg.split)
    model_dir = resolve_path(fcfg["model_dir"])
    plots_dir = resolve_path(cfg.paths.plots) / STAGE
    cohort = PreparedCohort.read(resolve_path(cfg.paths.prepared))
    features = load_features(cfg, cohort)
    train, valid = split_batches(features, cohort, split_cfg)

    params = {"foundation": fcfg, "split": split_cfg}
    with tracked(cfg, STAGE, params) as mlrun:
        model = FoundationModel(config)
        model.fit(train, valid)
        model.save(model_dir)
        summary = model.summary
        metrics = {
            "best_iteration": summary.best_iteration,
            "fit_seconds": round(summary.fit_seconds, 2),
            "n_train": summary.n_train,
            "n_valid": summary.n_valid,
            "prior_intercept": model.intercept,
            "prior_slope": model.slope,
        } | valid_metrics(model, valid)
        oof = fcfg["out_of_fold"]
        if int(oof["folds"]) > 0:
            path = resolve_path(oof["path"])
            path.parent.mkdir(parents=True, exist_ok=True)
            started = time.perf_counter()
            logits = out_of_fold_logits(
                config, make_split(features, split_cfg), cohort.users, cohort.daily_logs, int(oof["folds"]), int(oof["seed"])
            )
            logits.write_parquet(path)
            metrics["out_of_fold_seconds"] = seconds_since(started)
            metrics |= out_of_fold_metrics(logits, model, features, split_cfg)
        figures = [
            plot_feature_importance(model, plots_dir / "feature_importance.png"),
            plot_group_importance(model, valid, plots_dir / "group_importance.png"),
        ]
        finish(cfg, STAGE, metrics, mlrun)
        if mlrun is not None:
            example = valid.features().head(EXAMPLE_ROWS)
            _log_to_mlflow(
                model, model_dir, example, metrics, figures, fcfg["registered_model_name"]
            )
    return metrics
