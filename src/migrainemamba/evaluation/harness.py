"""The evaluation harness: split, fit/predict each model family, audit, score, report.

Models plug in through ``ForecastModel`` (``migrainemamba.models.base``); the
harness hands them ``ForecastBatch``es, never labels of the days they forecast.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl
from tqdm.auto import tqdm

from migrainemamba.evaluation.leakage import require_no_leakage
from migrainemamba.evaluation.scoring import (
    Scored,
    bootstrap_replicates,
    is_scorable,
    oracle_replicates,
    reliability_curve,
    summarize,
)
from migrainemamba.features import PHASES
from migrainemamba.models.base import ForecastBatch, ForecastModel

log = logging.getLogger(__name__)

REFERENCE_MODEL = "base_rate"  # Brier skill is measured against the running personal base rate
BASELINES = ("base_rate", "prior_logistic")  # the baselines of every report (docs/architecture.md §4)
# the report's paired differences: to these in every table; the full report pairs every two models
PAIRED_METRICS = ("auc", "within_person_auc", "brier_skill", "ece")
# on simulated data also (scores against the true onset probability, free of the selection effect)
TRUTH_METRICS = ("within_person_risk_corr", "risk_mse")
POPULATIONS = ("all", "cold_start")


@dataclass
class SplitData:
    """The cohort with its split, as batches the models consume."""

    users: pl.DataFrame
    daily_logs: pl.DataFrame
    features: pl.DataFrame  # build_features output + split + cold_start

    def batch(self, split: str, scorable_only: bool = True) -> ForecastBatch:
        rows = self.features.filter(pl.col("split") == split)
        if scorable_only:
            rows = rows.filter(pl.col("scorable"))
        return ForecastBatch(self.users, self.daily_logs, rows.select("user_id", "date"), precomputed=self.features)


def predict_test(
    models: Sequence[ForecastModel],
    data: SplitData,
    audit_samples: int = 12,
    seed: int = 0,
) -> pl.DataFrame:
    """Forecast every scorable test day with each (already fitted) model.

    Each model first passes the leakage audit on sampled test days.
    Returns ``user_id, date, phase, cold_start, model, p, y``.
    """
    test = data.features.filter((pl.col("split") == "test") & pl.col("scorable"))
    batch = data.batch("test")
    frames = []
    for model in tqdm(models, desc="predict test days", leave=False):
        require_no_leakage(model, data.users, data.daily_logs, batch.targets, n_samples=audit_samples, seed=seed)
        p = np.asarray(model.predict(batch), dtype=float)
        if p.shape != (test.height,) or not np.all(np.isfinite(p)) or p.min() < 0 or p.max() > 1:
            raise ValueError(f"model {model.name!r}: predict must return {test.height} probabilities in [0, 1]")
        frames.append(
            test.select(
                "user_id", "date", "phase", "cold_start",
                model=pl.lit(model.name), p=pl.Series(p), y=pl.col("onset").cast(pl.Boolean),
            )
        )
    return pl.concat(frames)


def with_oracle(predictions: pl.DataFrame, truth_days: pl.DataFrame | None) -> pl.DataFrame:
    """Attach the simulator's p_oracle (the ceiling) and p_true (the generating probability) to
    every prediction row, when known."""
    if truth_days is None:
        return predictions
    truth = truth_days.select("user_id", "date", *[c for c in ("p_oracle", "p_true") if c in truth_days.columns])
    return predictions.join(truth, on=["user_id", "date"], how="left")


def score_predictions(
    predictions: pl.DataFrame, n_boot: int, seed: int, phases: Sequence[str] = PHASES
) -> dict[str, Any]:
    """Scores per population (all test days, cold-start users) x phase x model.

    ``phases``: the values of the ``phase`` column to score (another grouping, e.g. bins
    of days logged, may be put in that column).

    Besides each score's interval, every model gets paired bootstrap intervals of its
    difference to every other model (``<metric>_minus_<other>``): the same resampled
    users score both, so "beats" means the interval of the difference lies above 0.
    """
    has_oracle = _known(predictions, "p_oracle")
    has_truth = _known(predictions, "p_true")
    user_index = {u: i for i, u in enumerate(predictions["user_id"].unique().sort().to_list())}
    reference = predictions.filter(pl.col("model") == REFERENCE_MODEL).select(
        "user_id", "date", p_ref=pl.col("p")
    )
    if reference.height == 0:
        raise ValueError(f"the reference model {REFERENCE_MODEL!r} must be among the evaluated models")
    rows = predictions.join(reference, on=["user_id", "date"], how="left")
    models = rows["model"].unique().sort().to_list()
    results: dict[str, Any] = {}
    jobs = [(pop, phase) for pop in POPULATIONS for phase in phases]
    for population, phase in tqdm(jobs, desc="bootstrap scores", leave=False):
        replicates = {}
        in_job = (pl.col("phase") == phase) & (pl.col("cold_start") if population == "cold_start" else pl.lit(True))
        # the oracle scored once on the job's days, shared by every model that forecasts all of them
        days = _scored(rows.filter(in_job).unique(["user_id", "date"]), user_index, has_oracle, has_truth)
        oracle = oracle_replicates(days, n_boot, seed) if has_oracle and is_scorable(days) else None
        for model in models:
            part = rows.filter(in_job & (pl.col("model") == model))
            scored = _scored(part, user_index, has_oracle, has_truth)
            summary = {"n_days": float(part.height), "n_onsets": float(part["y"].sum()), "n_users": float(part["user_id"].n_unique())}
            if is_scorable(scored):
                shared = oracle if part.height == len(days.y) else None  # else computed on the model's own days
                replicates[model] = bootstrap_replicates(scored, n_boot, seed, shared)
                summary |= summarize(replicates[model])
            results.setdefault(population, {}).setdefault(phase, {})[model] = summary
        for model, reps in replicates.items():
            for other, other_reps in replicates.items():
                if other != model:
                    diffs = {f"{m}_minus_{other}": reps[m] - other_reps[m] for m in (*PAIRED_METRICS, *TRUTH_METRICS) if m in reps}
                    results[population][phase][model] |= summarize(diffs)
    return results


def _known(predictions: pl.DataFrame, column: str) -> bool:
    return column in predictions.columns and predictions[column].null_count() == 0


def _scored(part: pl.DataFrame, user_index: Mapping[Any, int], with_oracle: bool, with_truth: bool = False) -> Scored:
    return Scored(
        user=part["user_id"].replace_strict(user_index, return_dtype=pl.Int64).to_numpy(),
        y=part["y"].to_numpy(),
        p=part["p"].to_numpy(),
        p_ref=part["p_ref"].to_numpy(),
        p_oracle=part["p_oracle"].to_numpy() if with_oracle else None,
        p_true=part["p_true"].to_numpy() if with_truth else None,
    )


def reliability_curves(predictions: pl.DataFrame) -> dict[str, dict[str, dict[str, list[float]]]]:
    out: dict[str, dict[str, dict[str, list[float]]]] = {}
    for (phase, model), part in predictions.group_by("phase", "model"):
        out.setdefault(phase, {})[model] = reliability_curve(part["y"].to_numpy(), part["p"].to_numpy())
    return out


HEADLINE_METRICS = {"brier_skill": "brier_skill", "risk_corr": "within_person_risk_corr"}


def headline(scores: Mapping[str, Any], population: str = "all") -> dict[str, dict[str, Any]]:
    """Per model (and the oracle), the few numbers ``dvc metrics show`` prints: Brier skill and,
    on simulated data, the within-person risk correlation, per phase (``"1-14.brier_skill"``).

    One file per model with the same keys, so the table has a row per model and a column per
    phase and score, and fits a screen. Intervals, paired differences and every other score live
    in ``data/evaluation/report.json`` (``python -m migrainemamba.evaluation.table``) and MLflow.
    """
    rows: dict[str, dict[str, Any]] = {}
    for phase, models in scores.get(population, {}).items():
        for model, values in models.items():
            for short, metric in HEADLINE_METRICS.items():
                if metric in values:
                    rows.setdefault(model, {})[f"{phase}.{short}"] = round(values[metric], 4)
                if f"oracle_{metric}" in values:
                    rows.setdefault("oracle", {})[f"{phase}.{short}"] = round(values[f"oracle_{metric}"], 4)
    return rows
