"""The forecasting seam: routing tables, loaders, no leakage, training/serving parity with a real model."""

from __future__ import annotations

import json
import re
from datetime import date, timedelta

import numpy as np
import polars as pl
import pytest

from migrainemamba.data.schema import DAILY_LOG_COLUMNS, DAY_FIELDS, OUTCOME_FIELDS, USER_COLUMNS
from migrainemamba.features import PHASES, build_features
from migrainemamba.models.base import ForecastBatch
from migrainemamba.models.baselines import RunningBaseRate
from migrainemamba.models.registry import loaders
from migrainemamba.service.explanations import present_groups
from migrainemamba.service.forecasting import (
    BUILTIN_VERSION,
    Forecaster,
    load_routing_table,
    logs_frame,
    visible_logs,
)
from tests.unit.test_service_support import OPERATOR, make_client, make_settings, onboard

# ------------------------------------------------------------- routing table


def _write_table(tmp_path, table) -> object:
    path = tmp_path / "routing.json"
    path.write_text(json.dumps(table))
    return path


def test_without_routing_table_every_phase_is_the_builtin_base_rate(tmp_path):
    forecaster = Forecaster.from_settings(make_settings(tmp_path))
    status = forecaster.status()
    assert status["source"] == BUILTIN_VERSION
    for phase in PHASES:
        route = forecaster.route(phase)
        assert isinstance(route.model, RunningBaseRate)
        assert (route.model_name, route.model_version, route.explains) == (
            "base_rate",
            "builtin",
            False,
        )


class _CountingLoader:
    def __init__(self):
        self.paths = []

    def __call__(self, path):
        self.paths.append(path)
        return RunningBaseRate()


def test_routing_table_loads_each_model_once_and_resolves_paths(tmp_path):
    loader = _CountingLoader()
    (tmp_path / "m").mkdir()
    path = _write_table(
        tmp_path,
        {
            "1-14": {"model": "counting", "version": "7", "path": "m"},
            "15-30": {"model": "counting", "version": "7", "path": "m"},
            "31+": {"model": "base_rate", "version": "builtin"},
        },
    )
    routes = load_routing_table(path, {**loaders(), "counting": loader})
    assert loader.paths == [(tmp_path / "m").resolve()]
    assert routes["1-14"].model is routes["15-30"].model
    assert (routes["15-30"].model_name, routes["15-30"].model_version) == ("counting", "7")
    assert routes["31+"].model_name == "base_rate"


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"1-14": {"model": "base_rate", "version": "1"}}, "phases missing"),
        ({p: {"model": "base_rate", "version": "1"} for p in (*PHASES, "90+")}, "unknown ['90+']"),
        (
            {p: {"model": "mystery", "version": "1"} for p in PHASES},
            "no loader for model 'mystery'",
        ),
        ({p: {"model": "base_rate"} for p in PHASES}, "needs {'model', 'version'"),
        ({p: {"model": "foundation", "version": "1"} for p in PHASES}, "needs a 'path'"),
        ({p: {"model": "foundation", "version": "1", "path": "nowhere"} for p in PHASES}, "lacks"),
    ],
)
def test_broken_routing_tables_say_what_is_wrong(tmp_path, table, message):
    with pytest.raises((ValueError, FileNotFoundError), match=re.escape(message)):
        load_routing_table(_write_table(tmp_path, table))


def test_missing_routing_file_is_an_error_not_a_silent_fallback(tmp_path):
    settings = make_settings(tmp_path, routing_table_path=tmp_path / "absent.json")
    with pytest.raises(FileNotFoundError, match="absent.json"):
        Forecaster.from_settings(settings)


# ------------------------------------------------------------------ leakage


def _diary(user_id: str, start: date, n: int) -> pl.DataFrame:
    rng = np.random.default_rng(0)
    rows = []
    for k in range(n):
        rows.append(
            type(
                "Row",
                (),
                {
                    "user_id": user_id,
                    "date": start + timedelta(days=k),
                    "sleep_hours": float(rng.uniform(4, 9)),
                    "sleep_quality_good": bool(rng.random() > 0.3),
                    "stress_level": int(rng.integers(1, 11)),
                    "skipped_meals": int(rng.integers(0, 3)),
                    "had_snack": bool(rng.random() > 0.5),
                    "alcohol_drinks": int(rng.integers(0, 6)),
                    "caffeine_drinks": int(rng.integers(0, 5)),
                    "water_glasses": int(rng.integers(2, 10)),
                    "bright_light_exposure": bool(rng.random() > 0.7),
                    "screen_time_hours": float(rng.uniform(1, 10)),
                    "menstruating": bool(rng.random() > 0.8),
                    "barometric_pressure_hpa": float(rng.uniform(990, 1030)),
                    "symptoms": ["fatigue"] if rng.random() > 0.7 else [],
                    "migraine_occurred": bool(rng.random() > 0.8),
                    "migraine_severity": None,
                    "migraine_duration_hours": None,
                },
            )()
        )
    return logs_frame(rows)


def test_visible_logs_hide_todays_day_fields_outcome_and_later_rows():
    logs = _diary("u", date(2024, 1, 1), 10)
    day = date(2024, 1, 8)
    seen = visible_logs(logs, day)
    assert seen["date"].max() == day and seen.height == 8
    today = seen.filter(pl.col("date") == day).row(0, named=True)
    assert all(today[f] is None for f in (*DAY_FIELDS, *OUTCOME_FIELDS))
    assert today["sleep_hours"] is not None


def test_forecast_ignores_todays_day_fields_and_outcome(tmp_path):
    forecaster = Forecaster.from_settings(make_settings(tmp_path))
    users = pl.DataFrame(
        [
            {
                c.name: v
                for c, v in zip(
                    USER_COLUMNS,
                    ["u", "F", 30, 165.0, 60.0, None, 4.0, True, None, None],
                    strict=True,
                )
            }
        ]
    )
    users = users.cast({c.name: c.dtype for c in USER_COLUMNS})
    logs = _diary("u", date(2024, 1, 1), 20)
    day = date(2024, 1, 20)
    base = forecaster.forecast(users, logs, day)
    changed = logs.with_columns(
        pl.when(pl.col("date") == day)
        .then(pl.lit(True))
        .otherwise(pl.col("migraine_occurred"))
        .alias("migraine_occurred"),
        pl.when(pl.col("date") == day)
        .then(pl.lit(10))
        .otherwise(pl.col("stress_level"))
        .alias("stress_level"),
    )
    again = forecaster.forecast(users, changed, day)
    assert again.probability == base.probability
    assert again.inputs_fingerprint == base.inputs_fingerprint
    earlier = forecaster.forecast(users, logs, date(2024, 1, 15))  # later rows exist: never seen
    reference = forecaster.forecast(
        users, logs.filter(pl.col("date") < date(2024, 1, 15)), date(2024, 1, 15)
    )
    assert earlier.probability == reference.probability


# ---------------------------------------------- a real explaining model


class _GroupModel:
    """A tiny explaining model: fixed per-group log-odds (only to test trigger selection)."""

    name = "groups"

    def fit(self, train, valid=None):
        pass

    def predict(self, batch: ForecastBatch) -> np.ndarray:
        return np.full(batch.targets.height, 0.3)

    def explain(self, batch, top_k=3):
        items = [
            ("person", 2.0),
            ("sleep", 0.8),
            ("alcohol", -0.5),
            ("stress", 0.4),
            ("diary", 1.0),
            ("caffeine", 0.1),
            ("cycle", 0.3),
        ]
        return [
            [
                {"group": g, "name": g.title(), "log_odds": v, "odds_multiplier": float(np.exp(v))}
                for g, v in items
            ]
            for _ in range(batch.targets.height)
        ]


def test_top_triggers_are_the_largest_risk_raising_habit_groups(tmp_path):
    path = _write_table(tmp_path, {p: {"model": "groups", "version": "1"} for p in PHASES})
    routes = load_routing_table(path, {**loaders(), "groups": lambda _p: _GroupModel()})
    forecaster = Forecaster(routes, make_settings(tmp_path), source=str(path))
    users = pl.DataFrame(
        [
            {
                c.name: v
                for c, v in zip(
                    USER_COLUMNS,
                    ["u", "M", 30, 180.0, 80.0, None, 2.0, False, None, None],
                    strict=True,
                )
            }
        ]
    )
    users = users.cast({c.name: c.dtype for c in USER_COLUMNS})
    diary, day = _diary("u", date(2024, 1, 1), 5), date(2024, 1, 6)
    forecast = forecaster.forecast(users, diary, day)
    target = pl.DataFrame({"user_id": ["u"], "date": [day]})
    row = build_features(users, diary, forecast_dates=target).filter(pl.col("date") == day)
    present = present_groups(row, has_menstrual_cycle=False)[0]
    # by log-odds, the risk-raising habit groups present that day; never person/diary, never < 0,
    # never the cycle of a man without one (the model gives it +0.3)
    expected = [g for g in ("sleep", "stress", "cycle", "caffeine") if g in present][:3]
    assert [t["group"] for t in forecast.top_triggers] == expected
    assert "cycle" not in expected and expected, "the diary has some trigger present"
    odds = {"sleep": 0.8, "stress": 0.4, "caffeine": 0.1}
    assert forecast.top_triggers[0]["odds_multiplier"] == pytest.approx(np.exp(odds[expected[0]]), rel=1e-3)
    assert forecast.risk_level == "moderate" and forecast.model_name == "groups"


# ------------------------------------------------ foundation model, end to end


@pytest.fixture(scope="module")
def foundation_dir(tmp_path_factory):
    """A small LightGBM foundation model fitted on a simulated cohort and saved as the pipeline would."""
    from migrainemamba.config import load_config, to_dict
    from migrainemamba.data.simulator import simulate_cohort
    from migrainemamba.models.foundation import FoundationConfig, FoundationModel
    from tests.conftest import simulator_config

    cohort = simulate_cohort(simulator_config(n_users=120, n_days=120, seed=7))
    cfg = to_dict(load_config().foundation)
    cfg.update(num_boost_round=25, num_threads=1, min_data_in_leaf=50)
    model = FoundationModel(FoundationConfig.from_dict(cfg))
    features = build_features(cohort.users, cohort.daily_logs)
    train = features.filter(pl.col("scorable"))
    model.fit(
        ForecastBatch(
            cohort.users, cohort.daily_logs, train.select("user_id", "date"), precomputed=features
        )
    )
    out = tmp_path_factory.mktemp("models")
    model.save(out / "foundation" / "t1")
    (out / "routing.json").write_text(
        json.dumps(
            {
                "1-14": {"model": "foundation", "version": "t1", "path": "foundation/t1"},
                "15-30": {"model": "foundation", "version": "t1", "path": "foundation/t1"},
                "31+": {"model": "base_rate", "version": "builtin"},
            }
        )
    )
    return out, cohort, features


def _json_row(row: dict, columns) -> dict:
    out = {}
    for c in columns:
        value = row[c.name]
        out[c.name] = value.isoformat() if isinstance(value, date) else value
    return out


def test_service_forecast_equals_the_model_on_training_features(tmp_path, foundation_dir):
    """A simulated diary imported through the API gets the forecast the model gives on the cohort's features."""
    from migrainemamba.models.foundation import FoundationModel

    models, cohort, features = foundation_dir
    logs = cohort.daily_logs
    counts = logs.group_by("user_id").len().filter(pl.col("len") >= 25)
    candidates = cohort.users.filter(
        pl.col("user_id").is_in(counts["user_id"].implode()) & pl.col("cycle_start_day").is_null()
    )
    user_row = candidates.row(0, named=True)
    diary = logs.filter(pl.col("user_id") == user_row["user_id"]).sort("date").head(20)
    day = diary["date"][-1]  # the 20th logged day: imported whole, day fields and outcome included
    settings = make_settings(tmp_path, routing_table_path=models / "routing.json")
    with make_client(settings, today=day) as client:
        profile = _json_row(user_row, USER_COLUMNS[1:])
        user_id, headers = onboard(client, **profile)
        for row in diary.iter_rows(named=True):
            body = _json_row(row, DAILY_LOG_COLUMNS[2:])
            body = {k: v for k, v in body.items() if v is not None}
            response = client.post(
                "/logs/submit",
                json={"user_id": user_id, "date": row["date"].isoformat(), **body},
                headers=headers,
            )
            assert response.status_code == 201, response.text
        served = client.get(f"/predictions/{user_id}", headers=headers).json()
        ready = client.get("/ready", headers=OPERATOR).json()
        triggers = client.get(f"/insights/triggers/{user_id}", headers=headers).json()
        recs = client.get(f"/insights/recommendations/{user_id}", headers=headers).json()

    model = FoundationModel.load(models / "foundation" / "t1")
    reference_row = features.filter(
        (pl.col("user_id") == user_row["user_id"]) & (pl.col("date") == day)
    )
    expected = float(model.predict_features(reference_row)[0])
    assert reference_row["phase"][0] == served["phase"] == "15-30"
    assert served["probability"] == pytest.approx(expected, rel=1e-5)
    assert (served["model_name"], served["model_version"]) == ("foundation", "t1")
    assert ready["models"]["routes"]["15-30"]["explains"] is True
    # what it names fits the person: only groups present on the day (service.explanations)
    present = present_groups(reference_row, bool(user_row["has_menstrual_cycle"]))[0]
    assert {t["group"] for t in served["top_triggers"]} <= present
    assert all(
        t["log_odds"] > 0 and t["group"] not in {"person", "diary"} for t in served["top_triggers"]
    )
    assert [r["group"] for r in served["recommendations"]] == [
        t["group"] for t in served["top_triggers"]
    ]
    assert ready["models"]["routes"]["15-30"] == {
        "model": "foundation",
        "version": "t1",
        "path": str((models / "foundation" / "t1").resolve()),
        "explains": True,
    }
    assert triggers["model_explains"] is True and triggers["days_analysed"] == 20
    assert (
        triggers["model_triggers"]
        and triggers["top_triggers"][0] == triggers["model_triggers"][0]["group"]
    )
    # the what-ifs lead (the model's counterfactual forecasts for tomorrow), then the top triggers
    what_ifs = recs["what_if"]["items"]
    led = recs["recommendations"][: len(what_ifs)]
    assert [r["group"] for r in led] == [w["group"] for w in what_ifs][: len(led)]
    assert all(r["evidence"] == w["sentence"] and "tomorrow's risk from" in r["evidence"] for r, w in zip(led, what_ifs, strict=False))
    rest = recs["recommendations"][len(what_ifs):]
    if rest:
        assert rest[0]["group"] == next(g for g in triggers["top_triggers"] if g not in {w["group"] for w in what_ifs})
        assert "x" in rest[0]["evidence"]
