"""What-if recommendations are the serving model's counterfactual forecasts, explained by the
same contributions as the forecast, and change when the person's diary changes."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import polars as pl
import pytest

from migrainemamba.config import load_config, to_dict
from migrainemamba.data.simulator import simulate_cohort
from migrainemamba.features import PHASES, build_features
from migrainemamba.insights.what_if import percent
from migrainemamba.models.base import ForecastBatch
from migrainemamba.models.foundation import FoundationConfig, FoundationModel
from migrainemamba.release.routing import Route
from migrainemamba.service.explanations import present_groups
from migrainemamba.service.forecasting import Forecaster
from migrainemamba.service.insights import recommendations
from migrainemamba.service.what_if import what_if
from tests.conftest import simulator_config
from tests.unit.test_service_support import make_settings


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    cohort = simulate_cohort(simulator_config(n_users=120, n_days=120, seed=7))
    cfg = to_dict(load_config().foundation)
    cfg.update(num_boost_round=25, num_threads=1, min_data_in_leaf=50)
    model = FoundationModel(FoundationConfig.from_dict(cfg))
    features = build_features(cohort.users, cohort.daily_logs)
    model.fit(ForecastBatch(cohort.users, cohort.daily_logs, features.filter(pl.col("scorable")).select("user_id", "date"), precomputed=features))
    routes = {p: Route(p, "foundation", "t", model) for p in PHASES}
    forecaster = Forecaster(routes, make_settings(tmp_path_factory.mktemp("s")), source="test")
    counts = cohort.daily_logs.group_by("user_id").len().filter(pl.col("len") >= 60).sort("user_id")
    uid = counts["user_id"][0]
    users = cohort.users.filter(pl.col("user_id") == uid)
    diary = cohort.daily_logs.filter(pl.col("user_id") == uid).sort("date").head(45)
    return model, forecaster, users, diary


def _risky_today(diary: pl.DataFrame) -> tuple[pl.DataFrame, object]:
    """The diary with its last day made risky for tomorrow: a short night, high stress, 5 drinks."""
    today = diary["date"][-1]
    risky = diary.with_columns(
        pl.when(pl.col("date") == today).then(pl.lit(4.0)).otherwise(pl.col("sleep_hours")).alias("sleep_hours"),
        pl.when(pl.col("date") == today).then(pl.lit(False)).otherwise(pl.col("sleep_quality_good")).alias("sleep_quality_good"),
        pl.when(pl.col("date") == today).then(pl.lit(9)).otherwise(pl.col("stress_level")).cast(diary.schema["stress_level"]).alias("stress_level"),
        pl.when(pl.col("date") == today).then(pl.lit(5)).otherwise(pl.col("alcohol_drinks")).cast(diary.schema["alcohol_drinks"]).alias("alcohol_drinks"),
        pl.when(pl.col("date") == today).then(pl.lit(1000.0)).otherwise(pl.col("barometric_pressure_hpa")).alias("barometric_pressure_hpa"),
    )
    return risky, today


def _model_forecast(model, users, diary, tomorrow, **morning):
    """The model's own forecast for tomorrow, on a diary plus a hand-written morning row."""
    row = {c: None for c in diary.columns} | {"user_id": users["user_id"][0], "date": tomorrow, "symptoms": []} | morning
    full = pl.concat([diary, pl.DataFrame([row], schema=diary.schema)])
    target = pl.DataFrame({"user_id": [users["user_id"][0]], "date": [tomorrow]})
    batch = ForecastBatch(users, full, target, precomputed=build_features(users, full, forecast_dates=target))
    return float(model.predict(batch)[0]), model.explain(batch, top_k=None)[0], batch


def test_what_ifs_are_the_models_counterfactual_forecasts(served):
    model, forecaster, users, diary = served
    risky, today = _risky_today(diary)
    tomorrow = today + timedelta(days=1)
    result = what_if(forecaster, users, risky, today)
    night = {"sleep_hours": 4.0, "sleep_quality_good": False, "barometric_pressure_hpa": 1000.0}
    p_now, explanation, batch = _model_forecast(model, users, risky, tomorrow, **night)
    assert result["day"] == tomorrow and result["risk_now"] == pytest.approx(p_now, abs=1e-12)
    groups = [i["group"] for i in result["items"]]
    assert groups and set(groups) <= {"sleep", "stress", "alcohol"}, groups  # only what this day has
    present = present_groups(batch.features(), bool(users["has_menstrual_cycle"][0]))[0]
    by_group = {e["group"]: e["log_odds"] for e in explanation}
    for item in result["items"]:
        # explained by the same contributions as the forecast
        assert item["group"] in present
        assert item["contribution_log_odds"] == pytest.approx(by_group[item["group"]], abs=1e-4)
        # the counterfactual written by hand, forecast by the model itself
        if item["group"] == "sleep":
            usual = float(np.median(risky.tail(14)["sleep_hours"].drop_nulls().to_numpy()))
            target = max(7.0, float(np.ceil(usual * 2) / 2))
            p_if, _, _ = _model_forecast(model, users, risky, tomorrow, **{**night, "sleep_hours": target, "sleep_quality_good": True})
        else:
            field, value = {"stress": ("stress_level", 5), "alcohol": ("alcohol_drinks", 0)}[item["group"]]
            changed = risky.with_columns(
                pl.when(pl.col("date") == today).then(pl.lit(value)).otherwise(pl.col(field)).cast(risky.schema[field]).alias(field)
            )
            p_if, _, _ = _model_forecast(model, users, changed, tomorrow, **night)
        assert item["risk_if_changed"] == pytest.approx(p_if, abs=1e-12)
        assert item["risk_if_changed"] < item["risk_now"]
        assert item["sentence"].endswith(
            f"tomorrow's risk from {percent(item['risk_now'], p_if)} to {percent(p_if, item['risk_now'])}"
        )
    contributions = [i["contribution_log_odds"] for i in result["items"]]
    assert contributions == sorted(contributions, reverse=True)  # ranked by what each adds


def test_what_ifs_change_when_the_diary_changes(served):
    _, forecaster, users, diary = served
    risky, today = _risky_today(diary)
    before = what_if(forecaster, users, risky, today)
    calm = risky.with_columns(
        pl.when(pl.col("date") == today).then(pl.lit(0)).otherwise(pl.col("alcohol_drinks")).cast(risky.schema["alcohol_drinks"]).alias("alcohol_drinks"),
        pl.when(pl.col("date") == today).then(pl.lit(8.5)).otherwise(pl.col("sleep_hours")).alias("sleep_hours"),
        pl.when(pl.col("date") == today).then(pl.lit(True)).otherwise(pl.col("sleep_quality_good")).alias("sleep_quality_good"),
    )
    after = what_if(forecaster, users, calm, today)
    groups_before = {i["group"] for i in before["items"]}
    groups_after = {i["group"] for i in after["items"]}
    assert groups_before != groups_after and not ({"alcohol", "sleep"} & groups_after)
    assert after["risk_now"] < before["risk_now"]


def test_recommendations_lead_with_the_what_ifs_and_never_a_generic_sentence(served):
    _, forecaster, users, diary = served
    risky, today = _risky_today(diary)
    result = what_if(forecaster, users, risky, today)
    insight = {"history_days": 44, "has_menstrual_cycle": False, "model_triggers": [], "diary_triggers": [], "top_triggers": ["sleep", "caffeine"]}
    recs = recommendations(insight, 14, {}, result["items"])
    assert [r["group"] for r in recs[: len(result["items"])]] == [i["group"] for i in result["items"]][:3]
    assert all("tomorrow's risk from" in r["evidence"] for r in recs[: len(result["items"])])
    assert len({r["group"] for r in recs}) == len(recs)  # one per group


def test_with_the_personal_model_each_what_if_diary_is_replayed_once_to_the_same_numbers(served, small_cohort, tmp_path, monkeypatch):
    """The personal family serving (on the served foundation's log-odds): the forecast as things
    stand and its explanation come from one replay of the diary, each counterfactual from one
    ``predict``; the result equals, to the bit, the former path (``predict`` then a replaying
    ``explain`` for every diary)."""
    from migrainemamba.models.personal import PersonalConfig, PersonalModel
    from migrainemamba.service import what_if as what_if_module
    from migrainemamba.service.forecasting import model_predict

    foundation, _, users, diary = served
    features = build_features(small_cohort.users, small_cohort.daily_logs)
    targets = features.filter(pl.col("scorable")).select("user_id", "date")
    personal = PersonalModel(PersonalConfig(weighted_effects=("recent_attacks",)), foundation)
    personal.fit(ForecastBatch(small_cohort.users, small_cohort.daily_logs, targets, precomputed=features))
    forecaster = Forecaster({p: Route(p, "personal", "t", personal) for p in PHASES}, make_settings(tmp_path), source="test")
    risky, today = _risky_today(diary)
    calls = {"resume": 0, "predict": 0, "explain": 0}

    def counted(name):
        method = getattr(personal, name)

        def call(*args, **kwargs):
            calls[name] += 1
            return method(*args, **kwargs)

        return call

    for name in calls:
        monkeypatch.setattr(personal, name, counted(name))
    result = what_if(forecaster, users, risky, today)
    assert result["model_name"] == "personal" and result["items"], result
    assert result["items"][0]["contribution_log_odds"] is not None
    counterfactuals = calls["predict"]
    assert calls == {"resume": 1, "predict": counterfactuals, "explain": 0} and counterfactuals >= len(result["items"])
    # the former path: predict, then the replaying explain, for every diary
    forecast = forecaster.forecast
    monkeypatch.setattr(what_if_module, "ReplayOnce", lambda: model_predict)
    monkeypatch.setattr(forecaster, "forecast", lambda *args, explain=True, **kwargs: forecast(*args, **kwargs))
    calls.update(resume=0, predict=0, explain=0)
    former = what_if(forecaster, users, risky, today)
    assert calls == {"resume": 0, "predict": 1 + counterfactuals, "explain": 1 + counterfactuals}
    assert result == former

