"""The `evaluate` stage as one function."""

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
from migrainemamba.evaluation.harness import (
    SplitData,
    headline,
    predict_test,
    reliability_curves,
    score_predictions,
    with_oracle,
)
from migrainemamba.evaluation.plots import plot_reliability, plot_roc, plot_scores
from migrainemamba.evaluation.registry import build_models
from migrainemamba.evaluation.split import make_split
from migrainemamba.pipeline import write_json
from migrainemamba.tracking import flatten, stage_run

log = logging.getLogger(__name__)


def load_split_data(cfg: DictConfig) -> tuple[SplitData, PreparedCohort]:
    cohort = PreparedCohort.read(resolve_path(cfg.paths.prepared))
    features = pl.read_parquet(resolve_path(cfg.paths.features) / "features.parquet")
    split = make_split(features, to_dict(cfg.evaluate.split))
    return SplitData(cohort.users, cohort.daily_logs, split), cohort


def run_evaluate(cfg: DictConfig) -> dict[str, Any]:
    ev = cfg.evaluate
    started = time.perf_counter()
    data, cohort = load_split_data(cfg)
    tracking = stage_run("evaluate", {"evaluate": to_dict(ev), "prior": to_dict(cfg.prior)}, cfg.tracking.uri)
    with tracking if cfg.tracking.enabled else nullcontext():
        models = build_models(list(ev.models), cfg, data)
        predictions = with_oracle(predict_test(models, data, ev.audit_samples, ev.seed), cohort.truth_days)
        scores = score_predictions(predictions, ev.n_boot, ev.seed)
        out = resolve_path(cfg.paths.predictions)
        out.mkdir(parents=True, exist_ok=True)
        predictions.select("user_id", "date", "phase", "model", "p", "y", "cold_start").write_parquet(out / "test.parquet")
        report = {"scores": scores, "reliability": reliability_curves(predictions)}
        write_json(resolve_path(cfg.paths.data_dir) / "evaluation" / "report.json", report)
        metrics = headline(scores)
        metrics["seconds"] = round(time.perf_counter() - started, 1)
        write_json(resolve_path(cfg.paths.metrics) / "evaluate.json", metrics)
        plots = resolve_path(cfg.paths.plots) / "evaluate"
        plots.mkdir(parents=True, exist_ok=True)
        figures = {
            "roc.png": lambda p: plot_roc(predictions, p),
            "reliability.png": lambda p: plot_reliability(predictions, p),
            "within_person_auc.png": lambda p: plot_scores(scores, p, "within_person_auc"),
            "brier_skill.png": lambda p: plot_scores(scores, p, "brier_skill"),
            "auc.png": lambda p: plot_scores(scores, p, "auc"),
        }
        if cohort.truth_days is not None:  # simulated: how well each forecast tracks the true risk
            figures["within_person_risk_corr.png"] = lambda p: plot_scores(scores, p, "within_person_risk_corr")
        for name, draw in figures.items():
            draw(plots / name)
        if cfg.tracking.enabled:
            mlflow.log_metrics({k.replace("+", "plus"): float(v) for k, v in flatten(metrics).items()})
            mlflow.log_dict(report, "evaluation_report.json")
            for name in figures:
                mlflow.log_artifact(str(plots / name), "figures")
    return metrics
