"""DVC stage `package`: champion per phase -> data/serving/ (routing table + model copies), MLflow
``champion`` aliases, BentoML model store + bento (steps in :mod:`migrainemamba.release.packaging`).
"""

from __future__ import annotations

import json
import logging
from typing import Any

from omegaconf import DictConfig

from migrainemamba.config import repo_root, resolve_path, to_dict
from migrainemamba.evaluation.harness import HEADLINE_METRICS
from migrainemamba.pipeline import write_json
from migrainemamba.release.packaging import STAGE, package
from migrainemamba.release.selection import (
    ROUTING_FILE,
    Candidate,
    Selection,
    SelectionRule,
    run_selection,
)
from migrainemamba.stages.common import finish, tracked
from migrainemamba.tracking import tracking_uri

log = logging.getLogger(__name__)


def champion_headline(selection: Selection, report: dict[str, Any]) -> dict[str, Any]:
    """The champion per phase with the headline scores of ``metrics/evaluate/<model>.json`` (all
    test days), so ``dvc metrics show`` prints it as one more row of the same table."""
    row: dict[str, Any] = {}
    for phase, choice in selection.choices.items():
        ref = selection.routes[phase]
        row[f"{phase}.model"] = f"{ref.name}:{ref.version}"
        scores = report["scores"]["all"][phase].get(choice.champion, {})
        for short, metric in HEADLINE_METRICS.items():
            if metric in scores:
                row[f"{phase}.{short}"] = round(scores[metric], 4)
    return row


def run(cfg: DictConfig) -> dict[str, Any]:
    """The DVC stage: select (report -> data/serving/), import, build; metrics/package.json."""
    scfg = to_dict(cfg.serve)
    rule = SelectionRule.from_dict(scfg["selection"])
    candidates = [
        Candidate.from_dict(
            {**c, **({"model_dir": resolve_path(c["model_dir"])} if c.get("model_dir") else {})}
        )
        for c in scfg["selection"]["candidates"]
    ]
    report_path = resolve_path(scfg["report"])
    if not report_path.is_file():
        raise FileNotFoundError(
            f"package: no evaluation report at {report_path}; run the evaluate stage first"
        )
    report = json.loads(report_path.read_text())
    serving_dir = resolve_path(scfg["serving_dir"])
    enabled = bool(cfg.tracking.enabled)
    with tracked(cfg, STAGE, {"serve": scfg}) as mlrun:
        selection = run_selection(
            report,
            candidates,
            rule,
            serving_dir,
            tracking_uri=tracking_uri(cfg.tracking.uri) if enabled else None,
        )
        metrics = package(
            selection,
            serving_dir,
            resolve_path(scfg["bentofile"]),
            repo_root(),
            resolve_path(scfg["bentoml_home"]),
            build=bool(scfg["build"]),
        )
        metrics["routing_table"] = str(serving_dir / ROUTING_FILE)
        for phase, choice in selection.choices.items():
            metrics[f"champion_{rule.metric}"] = metrics.get(f"champion_{rule.metric}", {})
            metrics[f"champion_{rule.metric}"][phase] = choice.scores[choice.champion][rule.metric]
        finish(cfg, STAGE, metrics, mlrun)
        write_json(resolve_path(cfg.paths.metrics) / "champion.json", champion_headline(selection, report))
        if mlrun is not None:
            import mlflow

            mlflow.log_dict(selection.record(rule), "selection.json")
            mlflow.log_dict(selection.table, "routing.json")
            if "bento_tag" in metrics:
                mlflow.set_tag("bento_tag", metrics["bento_tag"])
    return metrics
