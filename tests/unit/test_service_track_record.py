"""The accuracy route (the forecast track record) equals a hand computation on a fixture."""

from __future__ import annotations

from datetime import timedelta

import pytest

from migrainemamba.insights.track_record import MIN_SCORED_DAYS, Scored, Thresholds, track_record
from migrainemamba.service.models_db import Prediction
from tests.unit.test_service_support import TODAY, make_client, make_settings, onboard

# 16 scored days ending TODAY (newest last) + one unscored day; thresholds 0.10 / 0.20 / 0.35
FIXTURE = [
    (0.05, False), (0.05, False), (0.08, False), (0.08, True),
    (0.12, False), (0.12, False), (0.15, True), (0.15, False),
    (0.25, False), (0.25, True), (0.30, False), (0.30, True),
    (0.40, True), (0.40, False), (0.50, True), (0.50, True),
]


@pytest.fixture
def client(tmp_path):
    with make_client(make_settings(tmp_path)) as c:
        yield c


def _store(client, user_id: str) -> None:
    runtime = client.app.state.runtime
    with runtime.sessions() as session:
        n = len(FIXTURE)
        for i, (p, onset) in enumerate(FIXTURE):
            session.add(
                Prediction(
                    user_id=user_id, date=TODAY - timedelta(days=n - 1 - i), phase="15-30", probability=p,
                    risk_level="low", confidence=0.5, model_name="m", model_version="1", top_triggers=[],
                    recommendations=[], inputs_fingerprint="x", actual_outcome=onset, actual_onset=onset,
                    was_correct=None,
                )
            )
        session.add(
            Prediction(
                user_id=user_id, date=TODAY - timedelta(days=n), phase="15-30", probability=0.9,
                risk_level="high", confidence=0.5, model_name="m", model_version="1", top_triggers=[],
                recommendations=[], inputs_fingerprint="x", actual_outcome=True, actual_onset=None,
                was_correct=None,
            )
        )
        session.commit()


def test_accuracy_route_equals_a_hand_computation(client):
    user_id, headers = onboard(client)
    _store(client, user_id)
    body = client.get(f"/predictions/accuracy/{user_id}", headers=headers).json()

    # by hand: 16 scored days, 7 onsets
    assert (body["n_predictions"], body["n_scored"], body["onsets"]) == (17, 16, 7)
    squares = [(p - y) ** 2 for p, y in FIXTURE]
    assert body["brier_score"] == pytest.approx(sum(squares) / 16, abs=1e-6)
    rate = 7 / 16
    assert body["brier_reference"] == pytest.approx(rate * (1 - rate), abs=1e-6)  # 0.24609375
    assert body["brier_skill"] == pytest.approx(1 - (sum(squares) / 16) / (rate * (1 - rate)), abs=1e-4)
    assert body["mean_probability"] == pytest.approx(sum(p for p, _ in FIXTURE) / 16, abs=1e-6)
    assert body["observed_onset_rate"] == pytest.approx(rate, abs=1e-6)
    bands = {b["band"]: b for b in body["calibration"]}
    # minimal (<0.10): 0.05 0.05 0.08 0.08 -> 1 onset; low: 0.12 0.12 0.15 0.15 -> 1;
    # moderate (0.20-0.35): 0.25 0.25 0.30 0.30 -> 2; high: 0.40 0.40 0.50 0.50 -> 3
    assert [(b["days"], b["onsets"]) for b in body["calibration"]] == [(4, 1), (4, 1), (4, 2), (4, 3)]
    assert bands["minimal"]["mean_forecast"] == pytest.approx(0.065) and bands["minimal"]["observed_rate"] == 0.25
    assert bands["moderate"]["mean_forecast"] == pytest.approx(0.275) and bands["moderate"]["observed_rate"] == 0.5
    assert bands["high"]["mean_forecast"] == pytest.approx(0.45) and bands["high"]["observed_rate"] == 0.75
    moderate, high = body["hits_and_misses"]
    # at 0.20: says attack on the 8 days >= 0.25 (5 onsets): hits 5, false alarms 3; misses 2, quiet 6
    assert (moderate["hits"], moderate["misses"], moderate["false_alarms"], moderate["correct_quiet_days"]) == (5, 2, 3, 6)
    assert moderate["sensitivity"] == pytest.approx(5 / 7, abs=1e-4)
    assert moderate["false_alarm_rate"] == pytest.approx(3 / 9, abs=1e-4)
    # at 0.35: 4 days (3 onsets)
    assert (high["hits"], high["misses"], high["false_alarms"], high["correct_quiet_days"]) == (3, 4, 1, 8)
    assert (body["n_correct"], body["accuracy"]) == (11, pytest.approx(11 / 16, abs=1e-4))
    # weeks ending TODAY: the last 7 fixture days, the 7 before, then the first 2
    weeks = body["weeks"]
    assert [w["scored_days"] for w in weeks[:3]] == [7, 7, 2]
    last7 = FIXTURE[-7:]
    assert weeks[0]["onsets"] == sum(y for _, y in last7)
    assert weeks[0]["brier_score"] == pytest.approx(sum((p - y) ** 2 for p, y in last7) / 7, abs=1e-6)
    assert body["enough_data"] is True and body["statement"].startswith("Over 16 scored days")
    assert body["by_model"] == [
        {"model_name": "m", "model_version": "1", "n_scored": 16, "n_correct": 11, "accuracy": pytest.approx(0.6875)}
    ]


def test_too_few_days_give_a_plain_statement():
    days = [Scored(TODAY - timedelta(days=i), 0.2, i == 3) for i in range(MIN_SCORED_DAYS - 1)]
    record = track_record(days, Thresholds(0.1, 0.2, 0.35), TODAY)
    assert record["enough_data"] is False and record["brier_skill"] is None
    assert record["statement"].startswith("Too few days to judge")
    assert record["n_scored"] == MIN_SCORED_DAYS - 1 and record["brier_score"] is not None
    no_onset = [Scored(TODAY - timedelta(days=i), 0.2, False) for i in range(30)]
    record = track_record(no_onset, Thresholds(0.1, 0.2, 0.35), TODAY)
    assert record["enough_data"] is False and "No attack began" in record["statement"]


def test_a_perfectly_sharp_forecast_has_skill_one_and_a_constant_one_at_the_rate_has_zero():
    days = [Scored(TODAY - timedelta(days=i), 1.0 if i % 4 == 0 else 0.0, i % 4 == 0) for i in range(28)]
    assert track_record(days, Thresholds(0.1, 0.2, 0.35), TODAY)["brier_skill"] == pytest.approx(1.0)
    flat = [Scored(d.date, 0.25, d.onset) for d in days]
    assert track_record(flat, Thresholds(0.1, 0.2, 0.35), TODAY)["brier_skill"] == pytest.approx(0.0, abs=1e-9)
