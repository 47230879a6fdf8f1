"""The `prepare` stage as one function: prepare, write, report, track."""

from __future__ import annotations

import logging
from contextlib import nullcontext
from typing import Any

import mlflow
from omegaconf import DictConfig

from migrainemamba.config import resolve_path, to_dict
from migrainemamba.data.prepare import prepare_cohort
from migrainemamba.data.report import quality_report, write_figures
from migrainemamba.pipeline import write_json
from migrainemamba.tracking import flatten, stage_run

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


def run_prepare(cfg: DictConfig, progress: bool = True) -> dict[str, Any]:
    data_cfg = to_dict(cfg.data)
    out_dir = resolve_path(cfg.paths.prepared)
    plots_dir = resolve_path(cfg.paths.plots) / "prepare"
    with stage_run("prepare", {"data": data_cfg}, cfg.tracking.uri) if cfg.tracking.enabled else nullcontext():
        cohort = prepare_cohort(data_cfg, progress=progress)
        cohort.write(out_dir)
        report = quality_report(cohort)
        write_json(out_dir / "quality_report.json", report)
        figures = write_figures(cohort, plots_dir)
        metrics = headline_metrics(report)
        write_json(resolve_path(cfg.paths.metrics) / "prepare.json", metrics)
        if cfg.tracking.enabled:
            mlflow.log_metrics({k: float(v) for k, v in flatten(metrics).items() if v == v})
            mlflow.log_dict(report, "quality_report.json")
            for fig in figures:
                mlflow.log_artifact(str(fig), "figures")
    return metrics

