"""DVC stage `evaluate`: every model family on held-out days -> data/evaluation/, data/predictions/test.parquet."""

from __future__ import annotations

import logging
import time
from typing import Any

import mlflow
import polars as pl
from omegaconf import DictConfig, OmegaConf

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
from migrainemamba.models.base import ForecastModel
from migrainemamba.models.registry import family
from migrainemamba.pipeline import write_json
from migrainemamba.split import make_split
from migrainemamba.stages.common import finish, tracked

log = logging.getLogger(__name__)


def build_models(names: list[str], cfg: DictConfig, data: SplitData) -> list[ForecastModel]:
    """Each family as its stage saved it (folder from its config key), or fitted on train."""
    models = []
    for name in names:
        fam = family(name)
        if fam.fit is not None:
            models.append(fam.fit(data.batch("train"), cfg))
        elif fam.needs_files:
            models.append(fam.load(resolve_path(OmegaConf.select(cfg, fam.model_dir_key, throw_on_missing=True))))
        else:
            models.append(fam.load(None))
    return models


def load_split_data(cfg: DictConfig) -> tuple[SplitData, PreparedCohort]:
    cohort = PreparedCohort.read(resolve_path(cfg.paths.prepared))
    features = pl.read_parquet(resolve_path(cfg.paths.features) / "features.parquet")
    split = make_split(features, to_dict(cfg.split))
    return SplitData(cohort.users, cohort.daily_logs, split), cohort


def run(cfg: DictConfig) -> dict[str, Any]:
    ev = cfg.evaluate
    started = time.perf_counter()
    data, cohort = load_split_data(cfg)
    params = {"evaluate": to_dict(ev), "split": to_dict(cfg.split), "prior": to_dict(cfg.prior)}
    with tracked(cfg, "evaluate", params) as mlrun:
        models = build_models(list(ev.models), cfg, data)
        predictions = with_oracle(predict_test(models, data, ev.audit_samples, ev.seed), cohort.truth_days)
        scores = score_predictions(predictions, ev.n_boot, ev.seed)
        out = resolve_path(cfg.paths.predictions)
        out.mkdir(parents=True, exist_ok=True)
        predictions.select("user_id", "date", "phase", "model", "p", "y", "cold_start").write_parquet(out / "test.parquet")
        report = {"scores": scores, "reliability": reliability_curves(predictions)}
        write_json(resolve_path(cfg.paths.data_dir) / "evaluation" / "report.json", report)
        metrics: dict[str, Any] = dict(headline(scores))
        for model, row in metrics.items():  # one small file per model: the `dvc metrics show` rows
            write_json(resolve_path(cfg.paths.metrics) / "evaluate" / f"{model}.json", row)
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
        metrics["seconds"] = round(time.perf_counter() - started, 1)
        finish(cfg, "evaluate", metrics, mlrun)
        if mlrun is not None:
            mlflow.log_dict(report, "evaluation_report.json")
            for name in figures:
                mlflow.log_artifact(str(plots / name), "figures")
    return metrics
