"""The real server, end to end: select -> package -> `bentoml serve` the bento -> one user's 40 days.

A small foundation model is trained here on the small simulated cohort. A
hand-made evaluation report makes the selection rule route ``1-14`` and ``31+``
to it and ``15-30`` to the built-in base rate (a tie within tolerance), so the
serving model changes at both phase boundaries. The ``package`` stage then runs
for real (a subprocess, tracking off, BENTOML_HOME in a tmp folder), and the
unpacked export of the bento it built, the layout a container runs, is served
by ``bentoml serve`` on a free 127.0.0.1 port with a tmp SQLite database.

The walk. The server runs on the real clock, so "today" (T) cannot move. The
user therefore gets their forecast for T on each of 40 steps while the diary
grows backwards from yesterday: at step k they have logged exactly the k-1
consecutive days before T (each with its outcome) plus T's morning, which is the
state of a person on their k-th day. The diary is a real simulated person's 40
consecutive days, shifted so that their last day is T. Each served probability
must equal the offline pipeline's (``build_features`` over the same history,
with T's whole row, then the routed model's ``predict``; models loaded from the
files trained here, not the bento's copies) within 1e-6; the phase must change
at steps 15 and 31 and the reported model follow the routing table.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import date, datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import polars as pl
import pytest

from migrainemamba.config import load_config, repo_root, to_dict
from migrainemamba.data.schema import MORNING_FIELDS, OUTCOME_FIELDS, USER_COLUMNS
from migrainemamba.features import PHASES, build_features, phase_of
from migrainemamba.models.base import ForecastBatch
from migrainemamba.models.baselines import RunningBaseRate
from migrainemamba.models.foundation import FoundationConfig, FoundationModel
from migrainemamba.service.settings import without_service_settings
from migrainemamba.split import make_split

pytestmark = pytest.mark.integration

REPO = repo_root()
BIN = Path(sys.executable).parent
EXACT = 1e-6
DAYS = 40
SECRET = "integration-test-secret-key-0123456789abcdef"
OPERATOR_TOKEN = "integration-test-operator-token-0123456789"
SERVICE = "migrainemamba.service.service:MigraineMamba"
START_TIMEOUT_S = 120


def _env(**extra: str) -> dict[str, str]:
    """The parent's environment without any service settings, telemetry off, plus ``extra``."""
    env = without_service_settings(os.environ)
    env.update(BENTOML_DO_NOT_TRACK="true", MLFLOW_DISABLE_TELEMETRY="true", DVC_NO_ANALYTICS="1")
    env.update(extra)
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("serve")


@pytest.fixture(scope="module")
def foundation_dir(small_cohort, work) -> Path:
    """A small foundation model fitted on the evaluation's train split of the small cohort."""
    cfg = load_config()
    features = build_features(small_cohort.users, small_cohort.daily_logs)
    split = make_split(features, to_dict(cfg.split))

    def batch(name: str) -> ForecastBatch:
        rows = split.filter((pl.col("split") == name) & pl.col("scorable") & ~pl.col("cold_start"))
        return ForecastBatch(
            small_cohort.users, small_cohort.daily_logs, rows.select("user_id", "date"), split
        )

    section = to_dict(cfg.foundation) | {"num_threads": 1, "num_boost_round": 200}
    model = FoundationModel(FoundationConfig.from_dict(section))
    model.fit(batch("train"), batch("valid"))
    return model.save(work / "models" / "foundation")


def _scores(brier_skill: float, diff_lo: float | None = None) -> dict[str, float]:
    out = {
        "brier_skill": brier_skill,
        "brier_skill_lo": brier_skill - 0.01,
        "brier_skill_hi": brier_skill + 0.01,
        "n_users": 50.0,
        "n_days": 500.0,
    }
    if diff_lo is not None:
        out |= {
            "brier_skill_minus_base_rate": brier_skill,
            "brier_skill_minus_base_rate_lo": diff_lo,
            "brier_skill_minus_base_rate_hi": brier_skill + 0.01,
        }
    return out


@pytest.fixture(scope="module")
def packaged(work, foundation_dir) -> dict[str, Any]:
    """Run the package stage for real on a hand-made report; its metrics/package.json."""
    phases = {
        "1-14": {"base_rate": _scores(0.0), "foundation": _scores(0.03, 0.01)},
        "15-30": {"base_rate": _scores(0.0), "foundation": _scores(0.001, -0.005)},  # a tie
        "31+": {"base_rate": _scores(0.0), "foundation": _scores(0.02, 0.005)},
    }
    report = work / "data" / "evaluation" / "report.json"
    report.parent.mkdir(parents=True)
    report.write_text(json.dumps({"scores": {"all": phases, "cold_start": phases}}))
    overrides = [
        f"paths.data_dir={work / 'data'}",
        f"paths.metrics={work / 'metrics'}",
        f"foundation.model_dir={foundation_dir}",
        f"temporal.model_dir={work / 'models' / 'temporal'}",  # not trained: skipped
        f"serve.bentoml_home={work / 'bentoml_home'}",
        "tracking.enabled=false",
    ]
    run = subprocess.run(
        [sys.executable, str(REPO / "pipelines" / "package.py"), *overrides],
        check=False,
        cwd=REPO,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-4000:]
    return json.loads((work / "metrics" / "package.json").read_text())


@pytest.fixture(scope="module")
def server(packaged, work) -> Iterator[dict[str, Any]]:
    """``bentoml serve`` of the unpacked bento on a free loopback port; stopped afterwards."""
    port = free_port()
    log_path = work / "server.log"
    env = _env(
        ROUTING_TABLE_PATH=packaged["bento_routing_table"],
        DATABASE_URL=f"sqlite:///{work / 'service.db'}",
        SECRET_KEY=SECRET,
        OPERATOR_TOKEN=OPERATOR_TOKEN,
        TIMEZONE="UTC",
        BENTOML_HOME=str(work / "bentoml_home"),
    )
    with log_path.open("w") as log_file:
        proc = subprocess.Popen(
            [
                str(BIN / "bentoml"),
                "serve",
                packaged["bento_dir"],
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
            ],
            cwd=work,
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                pytest.fail(
                    f"bentoml serve exited with {proc.returncode}:\n{log_path.read_text()[-4000:]}"
                )
            try:
                if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(
                    f"server not ready in {START_TIMEOUT_S} s:\n{log_path.read_text()[-4000:]}"
                )
            time.sleep(0.5)
        yield {"base": base, "api": f"{base}/api/v1", "proc": proc, "log": log_path}
    finally:
        _stop(proc)


def _stop(proc: subprocess.Popen) -> None:
    """The server's process group (start_new_session), then its workers by PID (own sessions)."""
    import psutil

    if proc.poll() is not None:
        return
    workers = psutil.Process(proc.pid).children(recursive=True)
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    for worker in workers:
        try:
            worker.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(workers, timeout=10)


# --------------------------------------------------------------- packaging


def test_package_stage_builds_a_servable_bento(packaged, foundation_dir):
    from migrainemamba.release.selection import tree_sha256

    routing = packaged["routing"]
    assert routing["15-30"] == "base_rate:builtin"
    assert routing["1-14"] == routing["31+"] and routing["1-14"].startswith("foundation:local-")
    version = routing["1-14"].split(":")[1]
    assert packaged["models"] == [f"migrainemamba-foundation:{version}"]
    bento = Path(packaged["bento_dir"])
    # the models travel inside the bento, byte-identical to the evaluated ones
    model_files = bento / "models" / "migrainemamba-foundation" / version / "foundation"
    assert tree_sha256(model_files) == tree_sha256(foundation_dir)
    assert (bento / "src" / "migrainemamba" / "service" / "service.py").is_file()
    assert not list((bento / "src").rglob("__pycache__"))
    # the generated Dockerfile: routing table inside the image, CPU torch, OpenMP for LightGBM
    dockerfile = (bento / "env" / "docker" / "Dockerfile").read_text()
    assert "ENV ROUTING_TABLE_PATH=$ROUTING_TABLE_PATH" in dockerfile
    assert (
        "ARG ROUTING_TABLE_PATH=/home/bentoml/bento/src/data/serving/routing.bento.json"
        in dockerfile
    )
    assert "libgomp1" in dockerfile
    requirements = (bento / "env" / "python" / "requirements.txt").read_text()
    assert "torch==2.13.0+cpu" in requirements and "download.pytorch.org/whl/cpu" in requirements
    # `bentoml serve .` in the repository and the bento serve the same service
    import yaml

    assert yaml.safe_load((REPO / "bentofile.yaml").read_text())["service"] == SERVICE
    assert yaml.safe_load((bento / "bento.yaml").read_text())["service"] == SERVICE


# -------------------------------------------------------------------- walk


def _walk_window(cohort) -> tuple[dict[str, Any], pl.DataFrame]:
    """A person with 40 consecutive logged days whose outcomes are all known (onsets preferred)."""
    logs = cohort.daily_logs.sort("user_id", "date")
    best = None
    for (user_id,), rows in logs.group_by("user_id", maintain_order=True):
        rows = rows.filter(pl.col("migraine_occurred").is_not_null())
        dates = rows["date"].to_list()
        for start in range(len(dates) - DAYS + 1):
            if (dates[start + DAYS - 1] - dates[start]).days == DAYS - 1:
                window = rows.slice(start, DAYS)
                attacks = int(window["migraine_occurred"].sum())
                if best is None or attacks > best[2]:
                    best = (user_id, window, attacks)
                break
        if best is not None and best[2] >= 3:
            break
    assert best is not None, "no simulated person has 40 consecutive logged days"
    user = cohort.users.filter(pl.col("user_id") == best[0]).row(0, named=True)
    return user, best[1]


def _json_values(row: dict[str, Any], fields) -> dict[str, Any]:
    out = {}
    for name in fields:
        value = row[name]
        if value is None:
            continue  # left out = not known
        out[name] = value.isoformat() if isinstance(value, date) else value
    return out


def _offline(users: pl.DataFrame, logs: pl.DataFrame, day: date, model) -> tuple[float, str]:
    """What the offline pipeline forecasts for ``day`` from ``logs`` (``day``'s whole row included)."""
    target = pl.DataFrame({"user_id": [users["user_id"][0]], "date": [day]})
    features = build_features(users, logs, forecast_dates=target)
    batch = ForecastBatch(users, logs, target, precomputed=features)
    return float(np.asarray(model.predict(batch))[0]), batch.features()["phase"][0]


def test_one_user_from_onboarding_through_40_days(server, packaged, foundation_dir, small_cohort):
    api = server["api"]
    client = httpx.Client(base_url=api, timeout=30)
    sim_user, window = _walk_window(small_cohort)

    # onboarding: the service's "today" is the day of creation (TIMEZONE=UTC)
    profile = {c.name: sim_user[c.name] for c in USER_COLUMNS if c.name != "user_id"}
    created = client.post("/users/onboarding", json=_json_values(profile, profile))
    assert created.status_code == 201, created.text
    body = created.json()
    user_id = body["user"]["user_id"]
    client.headers["Authorization"] = f"Bearer {body['access_token']}"
    today = datetime.fromisoformat(body["user"]["created_at"]).date()
    shift = today - window["date"][-1]
    if sim_user["cycle_start_day"] is not None:
        profile["cycle_start_day"] = sim_user["cycle_start_day"] + shift
        put = client.put(
            f"/users/profile/{user_id}", json=_json_values(profile, ["cycle_start_day"])
        )
        assert put.status_code == 200, put.text
    assert body["user"]["current_phase"] == "1-14"

    # the diary, re-dated so that its last day is today
    diary = window.with_columns(pl.col("date") + shift, pl.lit(user_id).alias("user_id"))
    users = pl.DataFrame(
        [{**sim_user, **profile, "user_id": user_id}], schema=small_cohort.users.schema
    )
    today_row = diary.row(DAYS - 1, named=True)
    assert today_row["date"] == today

    routing = {p: tuple(packaged["routing"][p].split(":")) for p in PHASES}
    models = {"foundation": FoundationModel.load(foundation_dir), "base_rate": RunningBaseRate()}

    operator = {"Authorization": f"Bearer {OPERATOR_TOKEN}"}
    ready = httpx.get(f"{api}/ready", headers=operator, timeout=10).json()
    assert {p: (r["model"], r["version"]) for p, r in ready["models"]["routes"].items()} == routing

    non_outcome = [c for c in diary.columns if c not in ("user_id", "date", *OUTCOME_FIELDS)]
    served: list[dict[str, Any]] = []
    for step in range(1, DAYS + 1):
        if step == 1:  # today's morning
            submit = {
                "user_id": user_id,
                "date": today.isoformat(),
                **_json_values(today_row, MORNING_FIELDS),
            }
        else:  # the day before the earliest logged one, with its outcome
            row = diary.row(DAYS - step, named=True)
            submit = {
                "user_id": user_id,
                "date": row["date"].isoformat(),
                **_json_values(row, non_outcome),
            }
        response = client.post("/logs/submit", json=submit)
        assert response.status_code == 201, response.text
        if step > 1:
            outcome = client.put(
                f"/logs/outcome/{user_id}/{row['date'].isoformat()}",
                json=_json_values(row, OUTCOME_FIELDS),
            )
            assert outcome.status_code == 200, outcome.text

        forecast = client.get(f"/predictions/{user_id}")
        assert forecast.status_code == 200, forecast.text
        got = forecast.json()
        if got["date"] != today.isoformat():
            pytest.skip("midnight (UTC) passed during the walk: the server's today moved")
        assert forecast.headers["X-Forecast"] == "new"  # its inputs changed since the last one

        history = diary.slice(DAYS - step, step)  # the k-1 days before today, and today's row
        phase = phase_of(step)
        name, version = routing[phase]
        expected, offline_phase = _offline(users, history, today, models[name])
        assert offline_phase == phase
        assert got["phase"] == phase, f"step {step}"
        assert (got["model_name"], got["model_version"]) == (name, version), f"step {step}"
        assert abs(got["probability"] - expected) <= EXACT, (step, got["probability"], expected)
        assert 0.0 <= got["confidence"] <= 1.0
        if name == "foundation":
            assert all(t["log_odds"] > 0 for t in got["top_triggers"])
        else:
            assert got["top_triggers"] == []  # the base rate explains nothing
        served.append(got)

    phases = [f["phase"] for f in served]
    assert phases == ["1-14"] * 14 + ["15-30"] * 16 + ["31+"] * 10
    assert (phases[13], phases[14]) == ("1-14", "15-30") and (phases[29], phases[30]) == (
        "15-30",
        "31+",
    )
    models_used = [f["model_name"] for f in served]
    assert models_used[13] != models_used[14] and models_used[29] != models_used[30]

    # one stored forecast for today (recomputed at every step), the last one
    stored = client.get(f"/predictions/history/{user_id}").json()
    assert (
        stored["count"] == 1
        and stored["predictions"][0]["probability"] == served[-1]["probability"]
    )
    again = client.get(f"/predictions/{user_id}")  # nothing changed: the stored one
    assert again.headers["X-Forecast"] == "stored"
    assert again.json()["probability"] == served[-1]["probability"]
    # the 39 past days have their outcomes; today has its morning only
    logs = client.get(f"/logs/history/{user_id}", params={"limit": 100}).json()
    assert logs["count"] == DAYS
    outcomes = {r["date"]: r["migraine_occurred"] for r in logs["logs"]}
    assert outcomes.pop(today.isoformat()) is None
    assert all(v is not None for v in outcomes.values())
    profile_now = client.get(f"/users/profile/{user_id}").json()
    assert profile_now["days_logged"] == DAYS
    # someone else's token cannot read this user
    other = httpx.post(f"{api}/users/onboarding", json=_json_values(profile, profile)).json()
    denied = httpx.get(
        f"{api}/predictions/{user_id}", headers={"Authorization": f"Bearer {other['access_token']}"}
    )
    assert denied.status_code == 403


def test_service_docs_health_and_metrics(server):
    base = server["base"]
    for path in ("/healthz", "/livez", "/readyz", "/api/v1/health", "/api/v1/docs", "/"):
        assert httpx.get(base + path, timeout=10).status_code == 200, path
    schema = httpx.get(f"{base}/api/v1/openapi.json", timeout=10).json()
    assert "/predictions/{user_id}" in schema["paths"]
    metrics = httpx.get(f"{base}/metrics", timeout=10)
    assert metrics.status_code == 200 and "bentoml" in metrics.text
