"""The tracking module on database-backed MLflow stores: PostgreSQL, the embedded SQLite file,
and (slow) a tracking server on PostgreSQL, the way a team shares one (README).

What a stage does, through ``migrainemamba.tracking``: a run in the stage's
experiment (tags, the config as params), metrics, an artifact, the foundation
model logged and registered, a ``champion`` alias, and
``models:/<name>@champion`` resolved and loaded back. PostgreSQL gets a fresh
database per run (random name; ``DROP DATABASE ... WITH (FORCE)`` at the end also
closes MLflow's pooled connections); it skips only when no server answers at
127.0.0.1:5432. MLflow creates its schema on first use: about 5 s of migrations
on an empty PostgreSQL database (idle machine).
"""

from __future__ import annotations

import json
import os
import sys
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import mlflow
import numpy as np
import polars as pl
import psycopg
import pytest

from migrainemamba.config import load_config, to_dict
from migrainemamba.features import FEATURE_COLUMNS, build_features
from migrainemamba.models.base import ForecastBatch
from migrainemamba.models.foundation import FoundationConfig, FoundationModel, pyfunc_kwargs
from migrainemamba.split import make_split
from migrainemamba.tracking import flatten, stage_run, tracking_uri
from tests.integration.server_support import start_listening, stop_process

PG_SERVER = "host=127.0.0.1 port=5432 user=postgres connect_timeout=3"
STAGE = "foundation"
REGISTERED = "migrainemamba-foundation"
SERVER_START_TIMEOUT_S = 180


class Store(NamedTuple):
    uri: str  # as a user writes it in tracking.uri or MLFLOW_TRACKING_URI
    postgres_database: str | None
    artifacts: Path  # where the stage's experiment must keep its artifacts
    artifact_location: str  # the experiment's artifact location as the store records it


@pytest.fixture()
def postgres_database() -> Iterator[str]:
    """A fresh, empty database's name; dropped afterwards."""
    try:
        admin = psycopg.connect(f"{PG_SERVER} dbname=postgres", autocommit=True)
    except psycopg.OperationalError as exc:
        pytest.skip(f"no PostgreSQL server answers at 127.0.0.1:5432: {exc}")
    name = f"mm_tracking_{uuid.uuid4().hex[:12]}"
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield name
        finally:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture()
def mlflow_state_restored() -> Iterator[None]:
    """MLflow's process-wide URI back as it was; ``set_tracking_uri`` also exports it to the environment."""
    keys = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")
    saved = {key: os.environ.pop(key, None) for key in keys}
    previous = mlflow.get_tracking_uri()
    yield
    mlflow.set_tracking_uri(previous)
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture()
def tracking_server(postgres_database, tmp_path) -> Iterator[tuple[str, Path]]:
    """``mlflow server`` on the fresh database with proxied artifacts, started as the README says
    on a free loopback port (``server_support.start_listening``: another if it is taken meanwhile)."""
    artifacts = tmp_path / "server-artifacts"

    def command(port: int) -> list[str]:
        return [
            str(Path(sys.executable).parent / "mlflow"), "server",
            "--backend-store-uri", f"postgresql+psycopg://postgres@127.0.0.1:5432/{postgres_database}",
            "--artifacts-destination", str(artifacts),
            "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
        ]  # fmt: skip

    env = os.environ | {
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
        "MLFLOW_DISABLE_TELEMETRY": "true",
    }
    server, port = start_listening(command, tmp_path / "server.log", env, timeout=SERVER_START_TIMEOUT_S)
    url = f"http://127.0.0.1:{port}"
    try:
        # uvicorn binds once the application has started: listening is serving
        with urllib.request.urlopen(f"{url}/health", timeout=10) as response:
            assert response.status == 200
        yield url, artifacts
    finally:
        stop_process(server)


@pytest.fixture(params=["postgresql", "sqlite", pytest.param("server", marks=pytest.mark.slow)])
def store(request, tmp_path, mlflow_state_restored) -> Store:
    local = tmp_path / "artifacts" / STAGE
    if request.param == "postgresql":
        database = request.getfixturevalue("postgres_database")
        # no driver given: the tracking module picks psycopg 3 (psycopg2 is not installed)
        return Store(
            f"postgresql://postgres@127.0.0.1:5432/{database}", database, local, local.as_uri()
        )
    if request.param == "sqlite":
        return Store(f"sqlite:///{tmp_path}/store/mlflow.db", None, local, local.as_uri())
    url, artifacts = request.getfixturevalue("tracking_server")
    # the server's first experiment after "Default" (id 0) is 1; it proxies artifacts
    database = request.getfixturevalue("postgres_database")
    return Store(url, database, artifacts / "1", "mlflow-artifacts:/1")


@pytest.fixture(scope="module")
def fitted_foundation(small_cohort) -> tuple[FoundationModel, ForecastBatch]:
    """The real foundation model fitted on the small simulated cohort, and its test batch."""
    cfg = load_config()
    split = make_split(
        build_features(small_cohort.users, small_cohort.daily_logs), to_dict(cfg.split)
    )

    def batch(name: str) -> ForecastBatch:
        rows = split.filter((pl.col("split") == name) & pl.col("scorable"))
        return ForecastBatch(
            small_cohort.users,
            small_cohort.daily_logs,
            rows.select("user_id", "date"),
            precomputed=split,
        )

    model = FoundationModel(
        FoundationConfig.from_dict(to_dict(cfg.foundation) | {"num_threads": 1})
    )
    model.fit(batch("train"), batch("valid"))
    return model, batch("test")


def run_like_the_stage(
    uri: str, model: FoundationModel, example: pl.DataFrame, params: dict, folder: Path
) -> tuple[str, str]:
    """Log a run as the foundation stage does; returns (run id, registered version)."""
    model_dir = model.save(folder / "model")
    report = folder / "report.json"
    report.write_text(json.dumps({"n_train": model.summary.n_train}))
    with stage_run(STAGE, params, uri, artifact_root=folder.parent / "artifacts") as run:
        mlflow.log_metrics(
            {
                "best_iteration": float(model.summary.best_iteration),
                "n_train": float(model.summary.n_train),
            }
        )
        mlflow.log_artifact(str(report), "reports")
        info = mlflow.pyfunc.log_model(
            name="model", registered_model_name=REGISTERED, **pyfunc_kwargs(model_dir, example)
        )
    return run.info.run_id, str(info.registered_model_version)


@pytest.mark.integration
def test_a_stage_run_round_trips_through_the_store(store, fitted_foundation, tmp_path):
    model, test_batch = fitted_foundation
    features = test_batch.features()
    params = {"foundation": to_dict(load_config().foundation)}
    run_id, version = run_like_the_stage(
        store.uri, model, features.head(5), params, tmp_path / "first"
    )
    # the stage's next run: same experiment, the next registry version
    second_id, second_version = run_like_the_stage(
        store.uri, model, features.head(5), params, tmp_path / "second"
    )
    assert (version, second_version) == ("1", "2")
    # MLflow's own export of the URI to the environment must not pass for the user's override:
    # the next stage in this process, configured for another store, logs there
    assert tracking_uri("sqlite:////elsewhere/mlflow.db") == "sqlite:////elsewhere/mlflow.db"

    client = mlflow.MlflowClient(tracking_uri=tracking_uri(store.uri))
    client.set_registered_model_alias(REGISTERED, "champion", version)

    # the run: tags, flattened config, metrics, and artifacts where the store keeps them
    run = client.get_run(run_id)
    experiment = client.get_experiment(run.info.experiment_id)
    assert experiment.name == STAGE
    assert client.get_run(second_id).info.experiment_id == experiment.experiment_id
    assert experiment.artifact_location == store.artifact_location
    assert run.data.tags["stage"] == STAGE and len(run.data.tags["git_commit"]) == 40
    assert run.data.params == {key: str(value) for key, value in flatten(params).items()}
    assert run.data.params["foundation.registered_model_name"] == REGISTERED
    assert run.data.metrics == {
        "best_iteration": float(model.summary.best_iteration),
        "n_train": float(model.summary.n_train),
    }
    report = mlflow.artifacts.download_artifacts(
        run_id=run_id, artifact_path="reports/report.json", dst_path=str(tmp_path / "download")
    )
    assert json.loads(Path(report).read_text()) == {"n_train": model.summary.n_train}
    assert (store.artifacts / run_id / "artifacts" / "reports" / "report.json").is_file()

    # the registry: the alias resolves to version 1, whose model predicts as the local one
    champion = client.get_model_version_by_alias(REGISTERED, "champion")
    assert (str(champion.version), champion.run_id) == (version, run_id)
    loaded = mlflow.pyfunc.load_model(f"models:/{REGISTERED}@champion")
    assert loaded.metadata.run_id == run_id
    inputs = features.select(FEATURE_COLUMNS).to_pandas()
    np.testing.assert_allclose(
        np.asarray(loaded.predict(inputs)), model.predict(test_batch), rtol=0, atol=1e-12
    )

    if store.postgres_database:
        # the rows are in PostgreSQL itself, not in some fallback file
        with psycopg.connect(f"{PG_SERVER} dbname={store.postgres_database}") as conn:
            runs = conn.execute("SELECT run_uuid, status FROM runs ORDER BY start_time").fetchall()
            aliases = conn.execute(
                "SELECT name, alias, version FROM registered_model_aliases"
            ).fetchall()
        assert runs == [(run_id, "FINISHED"), (second_id, "FINISHED")]
        assert aliases == [(REGISTERED, "champion", 1)]
