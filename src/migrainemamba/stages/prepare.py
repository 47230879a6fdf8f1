"""DVC stage `prepare`: a cohort in the data contract (simulated or real) -> data/prepared/."""

from __future__ import annotations

import logging
from typing import Any

import mlflow
from omegaconf import DictConfig

from migrainemamba.config import resolve_path, to_dict
from migrainemamba.data.prepare import prepare_cohort
from migrainemamba.data.report import quality_report, write_figures
from migrainemamba.pipeline import write_json
from migrainemamba.stages.common import finish, tracked

log = logging.getLogger(__name__)


def headline_metrics(report: dict[str, Any]) -> dict[str, Any]:
    """The flat numbers for metrics/prepare.json (`dvc metrics show`)."""
    metrics = {k: v for k, v in report["diary"].items()}
    metrics.update({f"band_logged_{k}": v for k, v in report["band_shares_logged"].items()})
    truth = report.get("truth")
    if truth:
        metrics.update({k: v for k, v in truth.items() if not isinstance(v, dict)})
        metrics.update({f"band_true_{k}": v for k, v in truth["band_shares_true"].items()})
    return metrics


def run(cfg: DictConfig, progress: bool = True) -> dict[str, Any]:
    data_cfg = to_dict(cfg.data)
    out_dir = resolve_path(cfg.paths.prepared)
    plots_dir = resolve_path(cfg.paths.plots) / "prepare"
    with tracked(cfg, "prepare", {"data": data_cfg}) as mlrun:
        cohort = prepare_cohort(data_cfg, progress=progress)
        cohort.write(out_dir)
        report = quality_report(cohort)
        write_json(out_dir / "quality_report.json", report)
        figures = write_figures(cohort, plots_dir)
        metrics = headline_metrics(report)
        finish(cfg, "prepare", metrics, mlrun)
        if mlrun is not None:
            mlflow.log_dict(report, "quality_report.json")
            for fig in figures:
                mlflow.log_artifact(str(fig), "figures")
    return metrics

