"""Explanations that fit the person (service.explanations), the same on every route.

A model that claims every habit group raises every day's risk (+0.5 log-odds, caffeine a
negligible +0.01) is served; what the person is told must still fit them: no cycle for a
man without one, no "Recent attacks" without an attack, no weather without pressure data,
nothing at x1.00, at most three recommendations, and for a new user the same labelled
clinical prior in the forecast and in the insights.
"""

from __future__ import annotations

from datetime import timedelta
from typing import ClassVar

import numpy as np
import pytest

from migrainemamba.features import PHASES
from migrainemamba.service.explanations import BASIS_PRIOR
from migrainemamba.service.forecasting import Forecaster, Route
from tests.unit.test_service_support import TODAY, full_day, make_client, make_settings, onboard

CLAIMED = ("cycle", "attacks", "weather", "sleep", "stress", "alcohol", "prodrome", "screen")


class EverythingRaisesRisk:
    name = "claims"
    odds_ratios: ClassVar[dict[str, float]] = {"perimenstrual": 2.04, "heavy_alcohol": 2.08, "stress_letdown": 1.7, "pressure_drop": 1.15}

    def fit(self, train, valid=None):
        pass

    def predict(self, batch):
        return np.full(batch.targets.height, 0.2)

    def explain(self, batch, top_k=None):
        items = [{"group": g, "name": g.title(), "log_odds": 0.5, "odds_multiplier": float(np.exp(0.5))} for g in CLAIMED]
        items.append({"group": "caffeine", "name": "Caffeine", "log_odds": 0.01, "odds_multiplier": float(np.exp(0.01))})
        return [list(items) for _ in range(batch.targets.height)]


@pytest.fixture
def client(tmp_path):
    settings = make_settings(tmp_path)
    model = EverythingRaisesRisk()
    routes = {p: Route(p, "claims", "1", model) for p in PHASES}
    with make_client(settings, forecaster=Forecaster(routes, settings, source="test")) as c:
        yield c


MAN = {"gender": "M", "age": 52, "has_menstrual_cycle": False, "cycle_start_day": None, "cycle_length_days": None}


def _log(client, headers, user_id, days, **values):
    for k in range(days, 0, -1):
        body = full_day(user_id, TODAY - timedelta(days=k), **values)
        assert client.post("/logs/submit", json=body, headers=headers).status_code == 201


def _everything_named(client, headers, user_id):
    forecast = client.get(f"/predictions/{user_id}", headers=headers).json()
    triggers = client.get(f"/insights/triggers/{user_id}", headers=headers).json()
    recs = client.get(f"/insights/recommendations/{user_id}", headers=headers).json()
    named = {t["group"] for t in forecast["top_triggers"]}
    named |= {r["group"] for r in forecast["recommendations"]}
    named |= {t["group"] for t in triggers["model_triggers"]} | set(triggers["top_triggers"])
    named |= {t["group"] for t in triggers["diary_triggers"]}
    named |= {r["group"] for r in recs["recommendations"]}
    return named, forecast, triggers, recs


def test_man_without_cycle_attacks_or_pressure_is_told_only_what_fits_him(client):
    user_id, headers = onboard(client, **MAN)
    # 40 days, no attack, no pressure logged, heavy drinking every evening (present)
    _log(client, headers, user_id, 40, barometric_pressure_hpa=None, alcohol_drinks=6, menstruating=None)
    named, forecast, triggers, recs = _everything_named(client, headers, user_id)
    assert "cycle" not in named, "a man without a menstrual cycle is never told about it"
    assert "attacks" not in named, "no attack in 40 days: never 'Recent attacks'"
    assert "weather" not in named, "no pressure logged: never the weather"
    assert "caffeine" not in named, "x1.01 is not named"
    assert [t["group"] for t in forecast["top_triggers"]] == ["alcohol"]  # the one present
    assert len(recs["recommendations"]) <= 3 and len(forecast["recommendations"]) <= 3
    for item in recs["recommendations"]:
        assert "x1.00" not in item["evidence"] and " on 1 days" not in item["evidence"]
        assert " on 0 days" not in item["evidence"]
    assert all(t["days_in_top"] >= 1 for t in triggers["model_triggers"])


def test_the_same_groups_are_named_when_they_do_apply(client):
    """Control: a woman in her perimenstrual window, after an attack, with a pressure drop."""
    start = TODAY - timedelta(days=1)
    user_id, headers = onboard(client, cycle_start_day=start.isoformat(), cycle_length_days=28)
    for k in range(20, 0, -1):
        day = TODAY - timedelta(days=k)
        values = {"barometric_pressure_hpa": 1025.0 - (5.0 if k <= 2 else 0.0), "migraine_occurred": k == 5}
        if k == 5:
            values |= {"migraine_severity": 6, "migraine_duration_hours": 5.0}
        assert client.post("/logs/submit", json=full_day(user_id, day, **values), headers=headers).status_code == 201
    morning = {"user_id": user_id, "date": TODAY.isoformat(), "barometric_pressure_hpa": 1012.0, "sleep_hours": 7.0}
    assert client.post("/logs/submit", json=morning, headers=headers).status_code == 201
    forecast = client.get(f"/predictions/{user_id}", headers=headers).json()
    assert {"cycle", "attacks", "weather"} == {t["group"] for t in forecast["top_triggers"]}


def test_new_users_get_the_same_labelled_prior_in_forecast_and_insights(client):
    for profile in ({}, MAN):
        user_id, headers = onboard(client, **profile)
        forecast = client.get(f"/predictions/{user_id}", headers=headers).json()
        recs = client.get(f"/insights/recommendations/{user_id}", headers=headers).json()
        assert forecast["top_triggers"] == []  # nothing of their own to explain yet
        assert forecast["recommendations"] == recs["recommendations"]
        prior = [r for r in recs["recommendations"] if r["basis"] == BASIS_PRIOR]
        assert prior and all("clinical studies" in r["evidence"] for r in prior)
        assert recs["recommendations"][-1]["group"] == "diary"
        groups = [r["group"] for r in prior]
        assert ("cycle" in groups) == (profile != MAN)  # the strongest prior triggers that can apply


def test_risk_is_shown_absolutely_and_against_the_usual_day(client):
    user_id, headers = onboard(client)
    _log(client, headers, user_id, 3)
    first = client.get(f"/predictions/{user_id}", headers=headers).json()
    assert first["usual_probability"] is None and first["relative_level"] is None  # no usual day yet
    assert "absolute" in first["risk_level_basis"]


def test_relative_level_compares_with_the_persons_usual_day(tmp_path):
    """Forecasts stored on earlier days make the usual day; today's is compared with it."""
    settings = make_settings(tmp_path)
    model = EverythingRaisesRisk()
    routes = {p: Route(p, "claims", "1", model) for p in PHASES}
    forecaster = Forecaster(routes, settings, source="test")
    user_id = headers = None
    for offset in (3, 2, 1, 0):
        with make_client(settings, today=TODAY - timedelta(days=offset), forecaster=forecaster) as client:
            if user_id is None:
                user_id, headers = onboard(client)
            body = full_day(user_id, TODAY - timedelta(days=offset + 1))
            assert client.post("/logs/submit", json=body, headers=headers).status_code == 201
            forecast = client.get(f"/predictions/{user_id}", headers=headers).json()
    # the model says 0.2 every day: today is the person's usual day
    assert forecast["usual_probability"] == pytest.approx(0.2)
    assert forecast["relative_risk"] == pytest.approx(1.0) and forecast["relative_level"] == "usual"
    assert forecast["risk_level"] == "moderate"  # absolute, from the thresholds (0.20 <= p < 0.35)
