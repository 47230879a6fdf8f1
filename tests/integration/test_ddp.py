"""A real two-process Lightning DDP run on CPU (gloo): the multi-device path of the sequence stages.

``trainer=cpu_ddp`` is the same code path as ``trainer=gpu`` (strategy ``ddp``, Lightning's script
launcher) on two CPU processes. The pretrain and temporal stages train on a tiny cohort; the test
checks that both ranks trained (each on half of the batches) and ended with the same weights, that
only rank 0 wrote (one MLflow run per stage, one registered version, the model folders), that the
saved model is the one the ranks trained and that it loads and forecasts, and that no process of
the run is left behind.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import psutil
import pytest

from migrainemamba.config import load_config, repo_root

DIGEST = re.compile(r"ddp rank (\d): weights sha256 ([0-9a-f]{64}) after (\d+) steps")


def _session_processes(sid: int) -> list[psutil.Process]:
    out = []
    for proc in psutil.process_iter(["pid"]):
        try:
            if os.getsid(proc.pid) == sid:
                out.append(proc)
        except (ProcessLookupError, PermissionError, psutil.Error):
            continue
    return out


def _run_ranks(overrides: list[str], log: Path, timeout: float = 300) -> int:
    """The stages' command in its own session; every process of the session is gone afterwards."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(repo_root() / "src"), os.environ.get("PYTHONPATH", "")]))
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.integration.ddp_stages", *overrides],
            cwd=repo_root(), env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )
        try:
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise
        finally:
            left = _session_processes(proc.pid)
            for p in left:  # never leave a rank behind, even when the assertion below fails
                p.kill()
    assert not left, f"processes of the DDP run left behind: {[p.pid for p in left]}"
    return code


@pytest.mark.integration
def test_two_process_cpu_ddp_trains_pretrain_and_temporal_stages(tmp_path, mlflow_sqlite_store):
    from mlflow import MlflowClient

    from migrainemamba.data.prepare import PreparedCohort
    from migrainemamba.models.base import ForecastBatch
    from migrainemamba.models.pretrain import weights_digest
    from migrainemamba.models.temporal import TemporalModel
    from migrainemamba.stages.features import run as run_features
    from migrainemamba.stages.prepare import run as run_prepare

    tracking = mlflow_sqlite_store(tmp_path / "mlflow.db")  # migrated once per session
    overrides = (
        ["+debug=tiny", "data.n_users=60", "data.n_days=60", "pretrain=debug", "temporal=debug", f"tracking.uri={tracking}"]
        + [f"paths.{k}={tmp_path / k}" for k in ("prepared", "features", "models", "metrics", "plots")]
        + [f"paths.data_dir={tmp_path}"]
    )
    cfg = load_config([*overrides, "tracking.enabled=false"])
    run_prepare(cfg, progress=False)
    run_features(cfg)

    log = tmp_path / "ddp.log"
    # without the post-training recalibration, so the saved weights are exactly the trained ones
    # (recalibrate() reads every validation day on each rank alike: tested in test_temporal.py)
    code = _run_ranks([*overrides, "trainer=cpu_ddp", "temporal.recalibrate=false"], log)
    text = log.read_text()
    assert code == 0, text[-4000:]
    assert "distributed_backend=gloo" in text and "Starting with 2 processes" in text

    # both ranks trained each model (pretrain, temporal, GRU) and ended with the same weights
    digests: dict[int, list[tuple[str, int]]] = {0: [], 1: []}
    for rank, digest, steps in DIGEST.findall(text):
        digests[int(rank)].append((digest, int(steps)))
    assert len(digests[0]) == 3 and digests[0] == digests[1], digests
    assert len({d for d, _ in digests[0]}) == 3  # three different models

    # each rank trained on half of the batches: 256 windows / 64 per batch = 4 per epoch, 2 epochs
    pretrain = json.loads((tmp_path / "metrics" / "pretrain.json").read_text())
    assert pretrain["world_size"] == 2 and pretrain["steps"] == 2 * 4 // 2
    assert digests[0][0][1] == pretrain["steps"]
    temporal_metrics = json.loads((tmp_path / "metrics" / "temporal.json").read_text())
    assert temporal_metrics["temporal"]["world_size"] == 2 and temporal_metrics["gru"]["world_size"] == 2

    # written once, by rank 0: one MLflow run per stage (the temporal one with its two fits), one version
    client = MlflowClient(tracking_uri=tracking)
    runs = {
        name: client.search_runs([client.get_experiment_by_name(name).experiment_id])
        for name in ("pretrain", "temporal")
    }
    assert len(runs["pretrain"]) == 1
    parents = [r for r in runs["temporal"] if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 1 and len(runs["temporal"]) == 3
    assert len(client.search_model_versions("name='migrainemamba-temporal'")) == 1
    assert sorted(p.name for p in (tmp_path / "models" / "pretrain").iterdir()) == ["encoder.pt", "pretrain.json"]
    for name in ("temporal", "gru"):
        assert sorted(p.name for p in (tmp_path / "models" / name).iterdir()) == ["model.pt", "temporal.json"]

    # the saved models are the ones both ranks trained, and they forecast
    cohort = PreparedCohort.read(tmp_path / "prepared")
    targets = cohort.daily_logs.select("user_id", "date").sort("user_id", "date").tail(40)
    for name, (digest, _) in zip(("temporal", "gru"), digests[0][1:], strict=True):
        model = TemporalModel.load(tmp_path / "models" / name)
        assert weights_digest(model.classifier.state_dict()) == digest
        p = np.asarray(model.predict(ForecastBatch(cohort.users, cohort.daily_logs, targets)))
        assert p.shape == (targets.height,) and np.all((p > 0) & (p < 1))
        assert np.unique(np.round(p, 6)).size > 1  # forecasts differ by day, not a constant
