"""Experiment tracking: one place that sets the MLflow URI, experiments and run tags.

Embedded default: an SQLite file ``mlflow.db`` at the repository root, given as
an absolute path (``dvc exp run --temp`` runs elsewhere; a relative URI would
silently create a second database). ``MLFLOW_TRACKING_URI`` overrides it.
One experiment per pipeline stage, named as the stage.

Stores that work: the SQLite file; a database-backed store such as
``postgresql+psycopg://user@host:5432/mlflow`` (``postgresql://`` is given the
installed psycopg 3 driver); a tracking server ``http://host:5000``, the way a
team shares one store, one registry and one artifact root (README, "Sharing
experiments, models and data").
"""

from __future__ import annotations

import logging
import os
import subprocess
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import mlflow

from migrainemamba.config import repo_root

log = logging.getLogger(__name__)

TRACKING_URI_ENV = "MLFLOW_TRACKING_URI"


def default_tracking_uri() -> str:
    return f"sqlite:///{repo_root() / 'mlflow.db'}"


def tracking_uri(configured: str | None = None) -> str:
    uri = os.environ.get(TRACKING_URI_ENV) or configured or default_tracking_uri()
    return with_psycopg_driver(uri)


def with_psycopg_driver(uri: str) -> str:
    """``postgres://`` and ``postgresql://`` mean psycopg 3, the installed driver.

    Without a driver SQLAlchemy picks psycopg2, which is not installed.
    """
    for prefix in ("postgres://", "postgresql://"):
        if uri.startswith(prefix):
            return "postgresql+psycopg://" + uri.removeprefix(prefix)
    return uri


def is_database_uri(uri: str) -> bool:
    """A store MLflow opens itself through SQLAlchemy (``sqlite:``, ``postgresql+psycopg:``, ...)."""
    from mlflow.store.db.db_types import DATABASE_ENGINES

    return urlparse(uri).scheme.split("+")[0] in DATABASE_ENGINES


def default_artifact_root(uri: str) -> Path:
    """Where a new experiment on a database store keeps its artifacts.

    Beside an SQLite file; ``<repo>/mlartifacts`` for a database server. Left to
    MLflow, it would be ``./mlruns`` under whatever the working directory is. A
    tracking server chooses its own (``--artifacts-destination``).
    """
    if uri.startswith("sqlite:///"):
        database = uri.removeprefix("sqlite:///").split("?")[0]
        return Path(database).resolve().parent / "mlartifacts"
    return repo_root() / "mlartifacts"


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


def _point_mlflow_at(uri: str) -> None:
    """``mlflow.set_tracking_uri`` without its export to the environment.

    MLflow also writes the URI to ``MLFLOW_TRACKING_URI`` (for its subprocesses),
    where ``tracking_uri`` would take it for the user's override: a later stage run
    in the same process would silently log into the previous one's store.
    """
    before = os.environ.get(TRACKING_URI_ENV)
    mlflow.set_tracking_uri(uri)
    if before is None:
        os.environ.pop(TRACKING_URI_ENV, None)
    else:
        os.environ[TRACKING_URI_ENV] = before


def use_experiment(
    stage: str, configured_uri: str | None = None, artifact_root: Path | None = None
) -> str:
    """Point MLflow at the tracking store and the stage's experiment; returns its id.

    ``artifact_root`` places a new experiment's artifacts on a database store
    (default: ``default_artifact_root``); an existing experiment keeps its own.
    """
    uri = tracking_uri(configured_uri)
    _point_mlflow_at(uri)
    experiment = mlflow.get_experiment_by_name(stage)
    if experiment is not None:
        mlflow.set_experiment(stage)
        return experiment.experiment_id
    artifact_location = None
    if is_database_uri(uri):
        root = artifact_root or default_artifact_root(uri)
        artifact_location = (root / stage).resolve().as_uri()
    experiment_id = mlflow.create_experiment(stage, artifact_location=artifact_location)
    mlflow.set_experiment(stage)
    return experiment_id


@contextmanager
def stage_run(
    stage: str,
    params: Mapping[str, Any] | None = None,
    configured_uri: str | None = None,
    artifact_root: Path | None = None,
) -> Iterator[mlflow.ActiveRun]:
    """An MLflow run in the stage's experiment, tagged with stage and git commit."""
    use_experiment(stage, configured_uri, artifact_root)
    with mlflow.start_run(run_name=stage, tags={"stage": stage, "git_commit": git_commit()}) as run:
        if params:
            mlflow.log_params({k: str(v)[:500] for k, v in flatten(params).items()})
        log.info("MLflow run %s in experiment %r (%s)", run.info.run_id, stage, mlflow.get_tracking_uri())
        yield run
