"""The `features` stage as one function: forecast features and sequence arrays for the cohort."""

from __future__ import annotations

import logging
import time
from contextlib import nullcontext
from typing import Any

import mlflow
import polars as pl
from omegaconf import DictConfig

from migrainemamba.config import resolve_path, to_dict
from migrainemamba.data.prepare import PreparedCohort
from migrainemamba.features.daily import FEATURE_COLUMNS, build_features
from migrainemamba.features.sequences import build_sequence_data
from migrainemamba.pipeline import write_json
from migrainemamba.tracking import stage_run

log = logging.getLogger(__name__)


def feature_metrics(features: pl.DataFrame) -> dict[str, Any]:
    scorable = features.filter(pl.col("scorable"))
    metrics: dict[str, Any] = {
        "n_feature_columns": len(FEATURE_COLUMNS),
        "n_grid_days": features.height,
        "n_logged_days": int(features["logged"].sum()),
        "n_scorable_days": scorable.height,
        "n_onsets": int(scorable["onset"].sum()),
        "onset_rate": float(scorable["onset"].mean() or 0),
    }
    for (phase,), part in scorable.group_by("phase"):
        metrics[f"onset_rate_{phase.replace('+', 'plus').replace('-', '_')}"] = float(part["onset"].mean() or 0)
        metrics[f"scorable_days_{phase.replace('+', 'plus').replace('-', '_')}"] = part.height
    return metrics


def run_features(cfg: DictConfig) -> dict[str, Any]:
    cohort = PreparedCohort.read(resolve_path(cfg.paths.prepared))
    out = resolve_path(cfg.paths.features)
    out.mkdir(parents=True, exist_ok=True)
    tracking = stage_run("features", {"features": to_dict(cfg.features)}, cfg.tracking.uri)
    with tracking if cfg.tracking.enabled else nullcontext():
        started = time.perf_counter()
        features = build_features(cohort.users, cohort.daily_logs)
        features.write_parquet(out / "features.parquet")
        built = time.perf_counter()
        # Standardisation stats over all logged days: label-free; the temporal stage
        # refits them on its training split when it rebuilds sequences.
        build_sequence_data(cohort.users, cohort.daily_logs).save(out / "sequences.npz")
        metrics = feature_metrics(features) | {
            "features_seconds": round(built - started, 2),
            "sequences_seconds": round(time.perf_counter() - built, 2),
        }
        write_json(resolve_path(cfg.paths.metrics) / "features.json", metrics)
        if cfg.tracking.enabled:
            mlflow.log_metrics({k: float(v) for k, v in metrics.items()})
    return metrics
