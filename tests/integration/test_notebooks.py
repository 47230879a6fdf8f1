"""Notebooks are executed on a small cohort so they never rot."""

from __future__ import annotations

import os

import nbformat
import pytest
from nbclient import NotebookClient

from migrainemamba.config import repo_root

NOTEBOOKS = sorted((repo_root() / "notebooks").glob("*.ipynb"))


@pytest.mark.integration
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs(path, monkeypatch):
    monkeypatch.setenv("MM_NOTEBOOK_USERS", "300")
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    notebook = nbformat.read(path, as_version=4)
    NotebookClient(notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}).execute()
    errors = [o for c in notebook.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors
    assert os.environ.get("MM_NOTEBOOK_USERS") == "300"
