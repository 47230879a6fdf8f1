"""The tracking module's choice of store URI and artifact location (no store opened)."""

from __future__ import annotations

from pathlib import Path

import pytest

from migrainemamba.config import repo_root
from migrainemamba.tracking import default_artifact_root, is_database_uri, tracking_uri


@pytest.fixture(autouse=True)
def no_environment_override(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


def test_postgres_uris_get_the_installed_psycopg3_driver():
    assert tracking_uri("postgresql://u@h:5432/db") == "postgresql+psycopg://u@h:5432/db"
    assert tracking_uri("postgres://u@h/db") == "postgresql+psycopg://u@h/db"
    assert tracking_uri("postgresql+psycopg://u@h/db") == "postgresql+psycopg://u@h/db"
    assert tracking_uri("http://127.0.0.1:5000") == "http://127.0.0.1:5000"


def test_the_environment_overrides_the_config_and_the_default_is_the_repo_file(monkeypatch):
    assert tracking_uri(None) == f"sqlite:///{repo_root() / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "postgresql://postgres@db:5432/mlflow")
    assert tracking_uri("sqlite:////tmp/x.db") == "postgresql+psycopg://postgres@db:5432/mlflow"


def test_database_stores_are_told_apart_from_servers():
    for uri in ("sqlite:////tmp/a.db", "postgresql+psycopg://u@h/db", "mysql+pymysql://u@h/db"):
        assert is_database_uri(uri)
    for uri in (
        "http://127.0.0.1:5000",
        "https://mlflow.example.org",
        "databricks",
        "file:///tmp/mlruns",
    ):
        assert not is_database_uri(uri)


def test_artifacts_sit_beside_an_sqlite_file_else_in_the_repo():
    assert default_artifact_root("sqlite:////data/team/mlflow.db") == Path("/data/team/mlartifacts")
    assert default_artifact_root("sqlite:////data/team/mlflow.db?timeout=30") == Path(
        "/data/team/mlartifacts"
    )
    assert (
        default_artifact_root(f"sqlite:///{repo_root() / 'mlflow.db'}")
        == repo_root() / "mlartifacts"
    )
    assert default_artifact_root("postgresql+psycopg://u@h/db") == repo_root() / "mlartifacts"
