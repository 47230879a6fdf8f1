"""Insights routes return values computed from the diary (checked against hand counts)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from tests.unit.test_service_support import TODAY, full_day, make_client, make_settings, onboard


@pytest.fixture
def client(tmp_path):
    with make_client(make_settings(tmp_path)) as c:
        yield c


def _submit(client, headers, body):
    response = client.post("/logs/submit", json=body, headers=headers)
    assert response.status_code in (200, 201), response.text


def test_weekly_stats_summarise_this_and_the_previous_week(client):
    user_id, headers = onboard(client)
    # previous week (TODAY-13 .. TODAY-7): 7 days, sleep 8 h, stress 3, no attacks
    for k in range(7, 14):
        _submit(
            client,
            headers,
            full_day(user_id, TODAY - timedelta(days=k), sleep_hours=8.0, stress_level=3),
        )
    # this week: 5 of 7 days logged, sleep 6 h, stress 7, one 2-day attack starting TODAY-3
    this_week = {
        6: {},
        4: {"alcohol_drinks": 3},
        3: {
            "migraine_occurred": True,
            "migraine_severity": 6,
            "migraine_duration_hours": 20.0,
            "symptoms": ["nausea"],
        },
        2: {
            "migraine_occurred": True,
            "migraine_severity": 4,
            "migraine_duration_hours": 5.0,
            "symptoms": ["nausea", "aura"],
            "sleep_quality_good": False,
        },
        0: {"alcohol_drinks": 1},
    }
    for k, values in this_week.items():
        _submit(
            client,
            headers,
            full_day(user_id, TODAY - timedelta(days=k), sleep_hours=6.0, stress_level=7, **values),
        )
    client.get(f"/predictions/{user_id}", headers=headers)

    stats = client.get(f"/insights/weekly-stats/{user_id}", headers=headers).json()
    week, prev = stats["this_week"], stats["previous_week"]
    assert (week["start"], week["end"]) == (
        (TODAY - timedelta(days=6)).isoformat(),
        TODAY.isoformat(),
    )
    assert (week["days_logged"], week["migraine_days"], week["attacks_started"]) == (5, 2, 1)
    assert week["mean_severity"] == 5.0 and week["total_duration_hours"] == 25.0
    assert (week["mean_sleep_hours"], week["mean_stress"], week["alcohol_drinks"]) == (6.0, 7.0, 4)
    assert week["poor_sleep_nights"] == 1
    assert week["symptom_days"]["nausea"] == 2 and week["symptom_days"]["aura"] == 1
    assert week["forecasts"] == 1 and week["mean_forecast_probability"] is not None
    assert (prev["days_logged"], prev["migraine_days"], prev["mean_sleep_hours"]) == (7, 0, 8.0)
    assert prev["mean_severity"] is None and prev["forecasts"] == 0
    assert stats["changes"]["mean_sleep_hours"] == -2.0 and stats["changes"]["days_logged"] == -2.0
    assert stats["changes"]["mean_severity"] is None


def _heavy_drinking_diary(client, headers, user_id, days=40):
    """Every 5th evening 6 drinks; an attack begins on the next day in 3 of 4 cases, never otherwise."""
    start = TODAY - timedelta(days=days)
    outcome = {}
    for k in range(days):
        day = start + timedelta(days=k)
        heavy = k % 5 == 0
        after_heavy = k % 5 == 1
        attack = after_heavy and (k // 5) % 4 != 3
        outcome[day] = (heavy, attack)
        _submit(
            client,
            headers,
            full_day(
                user_id,
                day,
                alcohol_drinks=6 if heavy else 0,
                migraine_occurred=attack,
                migraine_severity=5 if attack else None,
            ),
        )
    return outcome


def _expected_heavy_alcohol(outcome):
    """Scorable days (today and yesterday reported, yesterday attack-free) with/without heavy drinking yesterday."""
    with_, without = [0, 0], [0, 0]
    for day, (_heavy, attack) in outcome.items():
        prev = outcome.get(day - timedelta(days=1))
        if prev is None or prev[1]:
            continue
        bucket = with_ if prev[0] else without
        bucket[0] += 1
        bucket[1] += int(attack)
    return with_, without


def test_triggers_and_recommendations_from_the_diary_match_hand_counts(client):
    user_id, headers = onboard(client, has_menstrual_cycle=False, cycle_start_day=None)
    outcome = _heavy_drinking_diary(client, headers, user_id)
    (n_with, k_with), (n_without, k_without) = _expected_heavy_alcohol(outcome)
    assert k_with > 0 and k_without == 0
    insight = client.get(f"/insights/triggers/{user_id}", headers=headers).json()
    assert (
        insight["model_explains"] is False and insight["model_triggers"] == []
    )  # built-in base rate
    alcohol = next(t for t in insight["diary_triggers"] if t["trigger"] == "heavy_alcohol")
    assert (alcohol["days_present"], alcohol["onsets_present"]) == (n_with, k_with)
    assert (alcohol["days_absent"], alcohol["onsets_absent"]) == (n_without, k_without)
    assert alcohol["rate_present"] == pytest.approx(k_with / n_with, abs=1e-4)
    expected_rr = ((k_with + 0.5) / (n_with + 1)) / ((k_without + 0.5) / (n_without + 1))
    assert alcohol["relative_risk"] == pytest.approx(expected_rr, rel=1e-3)
    assert insight["diary_triggers"][0]["trigger"] == "heavy_alcohol"
    assert insight["top_triggers"] == ["alcohol"]

    recs = client.get(f"/insights/recommendations/{user_id}", headers=headers).json()
    assert recs["based_on"] == ["alcohol"]
    first = recs["recommendations"][0]
    assert (first["group"], first["priority"]) == ("alcohol", 1)
    assert f"attacks began on {k_with} of {n_with} days with it" in first["evidence"]


def test_recommendations_for_a_new_user_are_the_labelled_prior_then_more_diary(client):
    user_id, headers = onboard(client)
    _submit(client, headers, full_day(user_id, TODAY))
    recs = client.get(f"/insights/recommendations/{user_id}", headers=headers).json()
    assert recs["based_on"] == []
    items = recs["recommendations"]
    assert len(items) == 3 and [r["priority"] for r in items] == [1, 2, 3]
    assert all(r["basis"].startswith("clinical prior") for r in items[:2])
    assert items[-1]["group"] == "diary"
    assert items[-1]["evidence"] == "you logged 1 of the last 14 days"
    # the forecast of the same new user carries the same labelled prior
    forecast = client.get(f"/predictions/{user_id}", headers=headers).json()
    assert forecast["recommendations"] == items


def test_weekly_stats_count_medication_days_accuracy_and_compare_with_the_usual_week(client):
    from tests.unit.test_service_clinical import med

    user_id, headers = onboard(client)
    # 5 weeks before this one: 4 logged days each with stress 3 (the usual week), then this week
    # 7 days with stress 6; acute medication on 2 days of this week (twice on one of them),
    # once in the previous week, and a preventive every day (never counted)
    for w in range(1, 5):
        for k in range(4):
            _submit(client, headers, full_day(user_id, TODAY - timedelta(days=7 * w + k), stress_level=3))
    for k in range(7):
        _submit(client, headers, full_day(user_id, TODAY - timedelta(days=k), stress_level=6))
    for day, values in [
        (TODAY - timedelta(days=1), {}),
        (TODAY - timedelta(days=1), {"time": "18:00"}),
        (TODAY - timedelta(days=3), {"name": "ibuprofen", "medication_class": "simple_analgesic"}),
        (TODAY - timedelta(days=8), {}),
        (TODAY - timedelta(days=2), {"name": "topiramate", "medication_class": "antiepileptic", "purpose": "preventive", "relief_2h": None}),
    ]:
        r = client.post("/medications/log", json=med(user_id, day, **values), headers=headers)
        assert r.status_code == 201, r.text
    forecast = client.get(f"/predictions/{user_id}", headers=headers).json()
    client.put(f"/logs/outcome/{user_id}/{TODAY}", json={"migraine_occurred": False}, headers=headers)

    stats = client.get(f"/insights/weekly-stats/{user_id}", headers=headers).json()
    week, usual = stats["this_week"], stats["usual_week"]
    assert week["medication_days"] == 2 and stats["previous_week"]["medication_days"] == 1
    assert stats["usual_weeks_counted"] == 4
    assert usual["days_logged"] == 4.0 and usual["mean_stress"] == 3.0 and usual["medication_days"] == 0.25
    assert stats["changes_vs_usual"]["mean_stress"] == 3.0 and stats["changes_vs_usual"]["days_logged"] == 3.0
    # today's forecast was scored (attack-free): the week's track record has it
    assert week["scored_forecasts"] == 1
    assert week["forecast_brier_score"] == pytest.approx(forecast["probability"] ** 2, abs=1e-6)
    assert week["forecast_accuracy"] == (1.0 if forecast["probability"] < 0.2 else 0.0)
