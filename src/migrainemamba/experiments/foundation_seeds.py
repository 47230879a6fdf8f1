"""The foundation's fit-to-fit spread, and two changes measured against it (test days, all people).

LightGBM bags rows and features (``bagging_fraction``, ``feature_fraction``), so two fits that
differ only in ``seed`` forecast differently. This fits the foundation (``configs/foundation``)
with several seeds, with and without a set of features (default: the person's warning-sign record,
``features.daily.WARNING_RECORD_COLUMNS``), and scores on the cohort's test days with the harness:

- each seed's change from adding the features (paired by seed), and the spread over seeds;
- the bag of fits: the mean of the seeds' log-odds, for both feature sets, against one fit.

::

    .venv/bin/python -m migrainemamba.experiments.foundation_seeds [seeds=1,2,3,4]

Needs the prepare and features stages' outputs. Writes ``data/experiments/foundation_seeds.json``.
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np
import polars as pl

from migrainemamba.config import load_config, resolve_path, to_dict
from migrainemamba.data.prepare import PreparedCohort
from migrainemamba.evaluation.harness import score_predictions
from migrainemamba.experiments import save_result
from migrainemamba.features.daily import WARNING_RECORD_COLUMNS
from migrainemamba.models.base import ForecastBatch
from migrainemamba.models.baselines import RunningBaseRate
from migrainemamba.models.bayes_logistic import sigmoid
from migrainemamba.models.foundation import FoundationConfig, FoundationModel, split_batches
from migrainemamba.runtime import configure_entry_point
from migrainemamba.split import make_split

PHASES = ("1-14", "15-30", "31+")
METRICS = ("brier_skill", "within_person_risk_corr", "ece")


def seed_fits(cfg: Any, features: pl.DataFrame, cohort: PreparedCohort, seeds: list[int], exclude: list[str]) -> list[FoundationModel]:
    """The foundation fitted once per seed on the stage's train split (early stopping on valid)."""
    train, valid = split_batches(features, cohort, to_dict(cfg.split))
    fits = []
    for seed in seeds:
        model = FoundationModel(FoundationConfig.from_dict(to_dict(cfg.foundation) | {"exclude_features": exclude, "seed": seed}))
        model.fit(train, valid)
        fits.append(model)
    return fits


def bag_logit(fits: list[FoundationModel], features: pl.DataFrame) -> np.ndarray:
    """The bag of fits' forecast: the mean of the fits' log-odds."""
    return np.mean([fit.logit(features) for fit in fits], axis=0)


def run(cfg: Any, seeds: list[int], features_tested: tuple[str, ...] = WARNING_RECORD_COLUMNS) -> dict[str, Any]:
    cohort = PreparedCohort.read(resolve_path(cfg.paths.prepared))
    features = pl.read_parquet(resolve_path(cfg.paths.features) / "features.parquet")
    split = make_split(features, to_dict(cfg.split))
    test = split.filter((pl.col("split") == "test") & pl.col("scorable"))
    batch = ForecastBatch(cohort.users, cohort.daily_logs, test.select("user_id", "date"), precomputed=split)
    keys = test.select("user_id", "date", "cold_start", "phase", y=pl.col("onset").cast(pl.Boolean))
    frames = [keys.with_columns(model=pl.lit("base_rate"), p=pl.Series(np.asarray(RunningBaseRate().predict(batch), float)))]
    for tag, exclude in (("without", list(features_tested)), ("with", [])):
        fits = seed_fits(cfg, features, cohort, seeds, exclude)
        for seed, fit in zip(seeds, fits, strict=True):
            frames.append(keys.with_columns(model=pl.lit(f"{tag}_{seed}"), p=pl.Series(sigmoid(fit.logit(test)))))
        frames.append(keys.with_columns(model=pl.lit(f"{tag}_bag"), p=pl.Series(sigmoid(bag_logit(fits, test)))))
    preds = pl.concat(frames).join(cohort.truth_days.select("user_id", "date", "p_oracle", "p_true"), on=["user_id", "date"], how="left")
    scores = score_predictions(preds, int(cfg.evaluate.n_boot), 0, phases=list(PHASES))["all"]

    def diff(phase: str, model: str, other: str, metric: str) -> list[float]:
        s = scores[phase][model]
        return [round(s[f"{metric}_minus_{other}{q}"], 4) for q in ("", "_lo", "_hi")]

    out: dict[str, Any] = {"seeds": seeds, "features_tested": list(features_tested)}
    for phase in PHASES:
        row: dict[str, Any] = {}
        for metric in METRICS:
            without = [scores[phase][f"without_{s}"][metric] for s in seeds]
            row[metric] = {
                "without_per_seed": [round(v, 4) for v in without],
                "sd_over_seeds": round(float(np.std(without, ddof=1)), 4) if len(seeds) > 1 else None,
                "with_minus_without_per_seed": [round(scores[phase][f"with_{s}"][f"{metric}_minus_without_{s}"], 4) for s in seeds],
                "bag_without_minus_one_fit": diff(phase, "without_bag", f"without_{seeds[0]}", metric),
                "bag_with_minus_bag_without": diff(phase, "with_bag", "without_bag", metric),
            }
        out[phase] = row
    return out


def main() -> None:
    configure_entry_point()
    args = dict(a.split("=", 1) for a in sys.argv[1:])
    seeds = [int(s) for s in args.get("seeds", "1,2,3,4").split(",")]
    cfg = load_config(["tracking.enabled=false"])
    result = run(cfg, seeds)
    save_result(cfg, "foundation_seeds", result)


if __name__ == "__main__":
    main()
