"""DVC stage `features`: forecast features and sequence arrays for the cohort -> data/features/."""

from __future__ import annotations

import logging
import time
from typing import Any

import polars as pl
from omegaconf import DictConfig

from migrainemamba.config import resolve_path, to_dict
from migrainemamba.data.prepare import PreparedCohort
from migrainemamba.features.daily import FEATURE_COLUMNS, build_features
from migrainemamba.features.sequences import build_sequence_data
from migrainemamba.stages.common import finish, tracked

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


def run(cfg: DictConfig) -> dict[str, Any]:
    cohort = PreparedCohort.read(resolve_path(cfg.paths.prepared))
    out = resolve_path(cfg.paths.features)
    out.mkdir(parents=True, exist_ok=True)
    with tracked(cfg, "features", {"features": to_dict(cfg.features)}) as mlrun:
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
        finish(cfg, "features", metrics, mlrun)
    return metrics
