"""The pipeline's outputs round-trip through a DVC remote (a local directory remote here).

A throwaway git clone of the project at HEAD gets a tiny cohort and tracking off
(committed in that clone only; the committed HEAD, not uncommitted edits) and a default remote; the real `dvc repro` runs
`prepare` and `features`; the outputs are pushed; a fresh clone of that repository
pulls them and `dvc status` finds the two stages up to date, with the same bytes.
The `cache: false` outputs (metrics, plots) travel with git, the cached ones
through the remote. Stage commands run with the venv's python on PATH, on the
clone's own code (PYTHONPATH) and paths (MIGRAINEMAMBA_ROOT).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from migrainemamba.config import repo_root

STAGES = ("prepare", "features")
TINY = {"n_users": 60, "n_days": 60}
# cached outputs of the two stages (through the remote) and their `cache: false` ones (through git)
CACHED = (
    "data/prepared/users.parquet",
    "data/prepared/daily_logs.parquet",
    "data/features/features.parquet",
)
IN_GIT = ("metrics/prepare.json", "metrics/features.json", "plots/prepare/attack_frequency.png")
UP_TO_DATE = "Data and pipelines are up to date."


def run(args: list[str], cwd: Path, env: dict[str, str]) -> str:
    done = subprocess.run(
        args, cwd=cwd, env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, (
        f"{' '.join(args)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
    )
    return done.stdout.strip()


def git(cwd: Path, env: dict[str, str], *args: str) -> str:
    return run(
        ["git", "-c", "user.name=test", "-c", "user.email=test@example.org", *args], cwd, env
    )


def environment(project: Path) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("MLFLOW_TRACKING")}
    env.update(
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
        PYTHONPATH=str(project / "src"),
        MIGRAINEMAMBA_ROOT=str(project),
        DVC_NO_ANALYTICS="1",
        MLFLOW_DISABLE_TELEMETRY="true",
        GIT_TERMINAL_PROMPT="0",
    )
    return env


def shrink(project: Path) -> None:
    """Tiny cohort in the simulator's config file (a declared param of `prepare`), no MLflow.

    Line edits keep the file as it is otherwise (its dates, its comments).
    """
    data = project / "configs" / "data" / "synthetic.yaml"
    text = data.read_text()
    for key, value in TINY.items():
        text, count = re.subn(rf"(?m)^{key}: *\d+", f"{key}: {value}", text)
        assert count == 1, f"{key} not found once in {data}"
    data.write_text(text)
    root = project / "configs" / "config.yaml"
    text, count = re.subn(r"(?m)^(\s+enabled:) *true", r"\1 false", root.read_text())
    assert count == 1, f"tracking.enabled not found once in {root}"
    root.write_text(text)


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.integration
@pytest.mark.slow
def test_outputs_round_trip_through_a_dvc_remote(tmp_path):
    if not (repo_root() / ".git").exists():
        pytest.skip("needs a git checkout of the project (the test clones it)")
    dvc = str(Path(sys.executable).parent / "dvc")
    project, fresh, remote = tmp_path / "project", tmp_path / "fresh", tmp_path / "remote"
    base_env = environment(project)
    git(tmp_path, base_env, "clone", "--quiet", "--no-hardlinks", str(repo_root()), str(project))

    shrink(project)
    run([dvc, "remote", "add", "--default", "shared", str(remote)], project, base_env)
    git(project, base_env, "commit", "--quiet", "-am", "tiny cohort, tracking off, local remote")

    run([dvc, "repro", *STAGES], project, base_env)
    assert (
        json.loads((project / "metrics" / "prepare.json").read_text())["n_users"] == TINY["n_users"]
    )
    git(project, base_env, "add", "dvc.lock", "metrics", "plots")
    git(project, base_env, "commit", "--quiet", "-m", "prepare, features on the tiny cohort")
    # every output is in git's or in DVC's care
    assert git(project, base_env, "status", "--porcelain") == ""
    run([dvc, "push", *STAGES], project, base_env)
    assert (
        run([dvc, "status", "--cloud", *STAGES], project, base_env)
        == "Cache and remote 'shared' are in sync."
    )

    fresh_env = environment(fresh)
    git(tmp_path, fresh_env, "clone", "--quiet", str(project), str(fresh))
    assert not (fresh / "data" / "prepared").exists()
    run([dvc, "pull", *STAGES], fresh, fresh_env)
    assert run([dvc, "status", *STAGES], fresh, fresh_env) == UP_TO_DATE
    for relative in CACHED + IN_GIT:
        assert digest(fresh / relative) == digest(project / relative), relative
