"""Shared fixtures: the real Hydra config, shrunk, and simulated cohorts."""

from __future__ import annotations

import os

import pytest

for key, value in {
    "BENTOML_DO_NOT_TRACK": "true",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DVC_NO_ANALYTICS": "1",
}.items():
    os.environ.setdefault(key, value)

from migrainemamba.config import load_config, to_dict
from migrainemamba.data.simulator import SimulatorConfig, simulate_cohort


def simulator_config(**overrides) -> SimulatorConfig:
    data = to_dict(load_config().data)
    data.update(overrides)
    return SimulatorConfig.from_dict(data)


@pytest.fixture(scope="session")
def small_cohort():
    """120 people x 120 days: fast, for contract and plumbing tests."""
    return simulate_cohort(simulator_config(n_users=120, n_days=120, seed=7))


@pytest.fixture(scope="session")
def large_cohort():
    """4,000 people x 365 days: enough onsets to check effects and calibration (~7 s)."""
    return simulate_cohort(simulator_config(n_users=4000, n_days=365, seed=11))


@pytest.fixture(scope="session")
def mlflow_store_template(tmp_path_factory):
    """An empty MLflow SQLite store (tables migrated), made once per session.

    Creating an MLflow SQLite store runs MLflow's ~130 Alembic migrations (2-5 s each time).
    Tests whose subject is a stage, not the store's creation, start from a copy of this one
    (``mlflow_sqlite_store``); test_tracking_postgres still creates its stores from scratch.
    """
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    folder = tmp_path_factory.mktemp("mlflow_template")
    store = SqlAlchemyStore(f"sqlite:///{folder / 'mlflow.db'}", (folder / "mlartifacts").as_uri())
    store.engine.dispose()
    return folder / "mlflow.db"


@pytest.fixture
def mlflow_sqlite_store(mlflow_store_template):
    """``put(path)``: a copy of the migrated empty store at ``path``; returns its ``sqlite:///`` URI."""
    import shutil

    def put(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(mlflow_store_template, path)
        return f"sqlite:///{path}"

    return put
