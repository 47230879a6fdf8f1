"""Experiment tracking: one place that sets the MLflow URI, experiments and run tags.

Embedded default: an SQLite file ``mlflow.db`` at the repository root, given as
an absolute path (``dvc exp run --temp`` runs elsewhere; a relative URI would
silently create a second database). ``MLFLOW_TRACKING_URI`` overrides it.
One experiment per pipeline stage, named as the stage.
"""

from __future__ import annotations

import logging
import os
import subprocess
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import mlflow

from migrainemamba.config import repo_root

log = logging.getLogger(__name__)


def default_tracking_uri() -> str:
    return f"sqlite:///{repo_root() / 'mlflow.db'}"


def tracking_uri(configured: str | None = None) -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or configured or default_tracking_uri()


def git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=repo_root(), capture_output=True, text=True, check=True
        )
        return out.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def pinned_requirements(*distributions: str) -> list[str]:
    """``name==version`` of installed distributions, for ``log_model(pip_requirements=...)``.

    Explicit requirements spare MLflow its inference subprocess (docs/architecture.md, Machine notes); local
    version labels (torch's ``+cpu``) are dropped so the pin installs anywhere.
    """
    from importlib.metadata import version

    return [f"{name}=={version(name).split('+')[0]}" for name in distributions]


def flatten(params: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested config -> {'a.b.c': value} for mlflow.log_params (values truncated by MLflow)."""
    flat: dict[str, Any] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def use_experiment(stage: str, configured_uri: str | None = None) -> str:
    """Point MLflow at the tracking store and the stage's experiment; returns its id."""
    mlflow.set_tracking_uri(tracking_uri(configured_uri))
    experiment = mlflow.get_experiment_by_name(stage)
    if experiment is not None:
        mlflow.set_experiment(stage)
        return experiment.experiment_id
    uri = tracking_uri(configured_uri)
    artifact_location = None
    if uri.startswith("sqlite:///"):
        # keep artifacts beside the database, as an absolute path
        artifact_location = (repo_root() / "mlartifacts" / stage).as_uri()
    experiment_id = mlflow.create_experiment(stage, artifact_location=artifact_location)
    mlflow.set_experiment(stage)
    return experiment_id


@contextmanager
def stage_run(
    stage: str, params: Mapping[str, Any] | None = None, configured_uri: str | None = None
) -> Iterator[mlflow.ActiveRun]:
    """An MLflow run in the stage's experiment, tagged with stage and git commit."""
    use_experiment(stage, configured_uri)
    with mlflow.start_run(run_name=stage, tags={"stage": stage, "git_commit": git_commit()}) as run:
        if params:
            mlflow.log_params({k: str(v)[:500] for k, v in flatten(params).items()})
        log.info("MLflow run %s in experiment %r (%s)", run.info.run_id, stage, mlflow.get_tracking_uri())
        yield run
