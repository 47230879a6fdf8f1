"""The REST routes in-process (TestClient over create_app) on a SQLite file: auth, validation, flows."""

from __future__ import annotations

from datetime import timedelta

import pytest

from migrainemamba.data.schema import DAILY_LOG_COLUMNS
from tests.unit.test_service_support import (
    OPERATOR,
    PROFILE,
    TODAY,
    full_day,
    log_days,
    make_client,
    make_settings,
    onboard,
)


@pytest.fixture
def client(tmp_path):
    with make_client(make_settings(tmp_path)) as c:
        yield c


@pytest.fixture
def user(client):
    return onboard(client)


def _field_errors(response) -> dict[str, str]:
    assert response.status_code == 422, response.text
    # loc is (where, field[, index...]): the field is the second element
    return {e["loc"][1]: e["type"] for e in response.json()["detail"]}


# ------------------------------------------------------------------ users


def test_onboarding_returns_token_and_profile(client):
    response = client.post(
        "/users/onboarding",
        json={
            "gender": "M",
            "age": 40,
            "height_cm": 180.0,
            "weight_kg": 81.0,
            "attacks_per_month": 2.0,
            "has_menstrual_cycle": False,
        },
    )
    assert response.status_code == 201
    body = response.json()
    assert body["token_type"] == "bearer" and body["access_token"].count(".") == 2
    profile = body["user"]
    assert profile["bmi"] == pytest.approx(81.0 / 1.8**2, abs=0.01)
    assert profile["days_logged"] == 0 and profile["current_phase"] == "1-14"
    assert (profile["model_name"], profile["model_version"]) == ("base_rate", "builtin")
    assert profile["location_city"] is None and profile["cycle_length_days"] is None


def test_profile_get_and_put_recomputes_bmi(client, user):
    user_id, headers = user
    got = client.get(f"/users/profile/{user_id}", headers=headers).json()
    assert got["bmi"] == pytest.approx(65.0 / 1.7**2, abs=0.01)
    put = client.put(
        f"/users/profile/{user_id}",
        json={"weight_kg": 72.5, "location_city": None},
        headers=headers,
    )
    assert put.status_code == 200
    assert put.json()["bmi"] == pytest.approx(72.5 / 1.7**2, abs=0.01)
    assert (
        put.json()["location_city"] is None and put.json()["age"] == 34
    )  # only the fields sent change
    assert client.get(f"/users/profile/{user_id}", headers=headers).json()["weight_kg"] == 72.5


def test_profile_put_rejects_null_for_required_field_and_future_cycle_start(client, user):
    user_id, headers = user
    assert _field_errors(
        client.put(f"/users/profile/{user_id}", json={"age": None}, headers=headers)
    ) == {"age": "int_type"}
    future = (TODAY + timedelta(days=1)).isoformat()
    errors = _field_errors(
        client.put(f"/users/profile/{user_id}", json={"cycle_start_day": future}, headers=headers)
    )
    assert errors == {"cycle_start_day": "date_in_future"}


@pytest.mark.parametrize(
    ("change", "field", "kind"),
    [
        ({"age": "34"}, "age", "int_type"),
        ({"age": 5}, "age", "greater_than_equal"),
        ({"gender": "female"}, "gender", "literal_error"),
        ({"height_cm": 300.0}, "height_cm", "less_than_equal"),
        ({"has_menstrual_cycle": "yes"}, "has_menstrual_cycle", "bool_type"),
        ({"favourite_colour": "blue"}, "favourite_colour", "extra_forbidden"),
    ],
)
def test_onboarding_validation_names_the_field(client, change, field, kind):
    assert (
        _field_errors(client.post("/users/onboarding", json={**PROFILE, **change}))[field] == kind
    )


def test_onboarding_requires_not_null_contract_fields(client):
    body = {k: v for k, v in PROFILE.items() if k != "weight_kg"}
    assert _field_errors(client.post("/users/onboarding", json=body)) == {"weight_kg": "missing"}


# ------------------------------------------------------------------- auth


def test_auth_missing_token_401_unknown_user_404_other_users_token_403(client, user):
    user_id, headers = user
    _other_id, other_headers = onboard(client)
    routes = [
        ("get", f"/users/profile/{user_id}"),
        ("get", f"/logs/history/{user_id}"),
        ("get", f"/predictions/{user_id}"),
        ("get", f"/predictions/history/{user_id}"),
        ("get", f"/predictions/accuracy/{user_id}"),
        ("get", f"/insights/triggers/{user_id}"),
        ("get", f"/insights/weekly-stats/{user_id}"),
        ("get", f"/insights/recommendations/{user_id}"),
    ]
    for method, path in routes:
        assert getattr(client, method)(path).status_code == 401, path
        bad = {"Authorization": "Bearer not-a-token"}
        assert getattr(client, method)(path, headers=bad).status_code == 401, path
        assert getattr(client, method)(path, headers=other_headers).status_code == 403, path
        assert getattr(client, method)(path, headers=headers).status_code == 200, path
        unknown = path.replace(user_id, "nobody")
        assert getattr(client, method)(unknown, headers=headers).status_code == 404, path
    put = client.put(f"/users/profile/{user_id}", json={"age": 50}, headers=other_headers)
    assert put.status_code == 403
    outcome = client.put(
        f"/logs/outcome/{user_id}/{TODAY}", json={"migraine_occurred": False}, headers=other_headers
    )
    assert outcome.status_code == 403
    submit = client.post("/logs/submit", json=full_day(user_id, TODAY), headers=other_headers)
    assert submit.status_code == 403
    assert client.post("/logs/submit", json=full_day(user_id, TODAY)).status_code == 401
    assert (
        client.post("/logs/submit", json=full_day("nobody", TODAY), headers=headers).status_code
        == 404
    )
    assert (
        client.get(f"/users/profile/{user_id}", headers=headers).json()["age"] == 34
    )  # nothing changed


def test_token_signed_with_another_key_is_rejected(tmp_path, user, client):
    user_id, _ = user
    from datetime import UTC, datetime

    from migrainemamba.service.security import create_access_token

    forged = create_access_token(
        user_id, "another-key-of-this-service-0123456789abcdef", timedelta(days=1)
    )
    expired = create_access_token(
        user_id,
        "test-secret-key-with-enough-entropy-0123456789",
        timedelta(days=1),
        now=datetime.now(UTC) - timedelta(days=2),
    )
    for token in (forged, expired):
        response = client.get(
            f"/users/profile/{user_id}", headers={"Authorization": f"Bearer {token}"}
        )
        assert response.status_code == 401


# ------------------------------------------------------------------- logs


@pytest.mark.parametrize(
    ("change", "field", "kind"),
    [
        ({"stress_level": "5"}, "stress_level", "int_type"),
        ({"stress_level": 4.5}, "stress_level", "int_type"),
        ({"sleep_quality_good": 1}, "sleep_quality_good", "bool_type"),
        ({"sleep_hours": "seven"}, "sleep_hours", "float_type"),
        ({"stress_level": 11}, "stress_level", "less_than_equal"),
        ({"sleep_hours": -1.0}, "sleep_hours", "greater_than_equal"),
        ({"barometric_pressure_hpa": 700.0}, "barometric_pressure_hpa", "greater_than_equal"),
        ({"skipped_meals": 4}, "skipped_meals", "less_than_equal"),
        ({"symptoms": ["headache"]}, "symptoms", "literal_error"),
        ({"stres_level": 3}, "stres_level", "extra_forbidden"),
        ({"date": "2024-02-30"}, "date", "date_from_datetime_parsing"),
        ({"date": (TODAY + timedelta(days=1)).isoformat()}, "date", "date_in_future"),
        ({"stress_level": None}, "stress_level", "int_type"),
        (
            {"migraine_occurred": False, "migraine_severity": 5},
            "migraine_severity",
            "outcome_inconsistent",
        ),
    ],
)
def test_log_submit_bad_input_is_422_naming_the_field(client, user, change, field, kind):
    user_id, headers = user
    response = client.post("/logs/submit", json=full_day(user_id, TODAY, **change), headers=headers)
    errors = _field_errors(response)
    assert field in errors, errors
    if kind != "date_from_datetime_parsing":
        assert errors[field] == kind
    assert client.get(f"/logs/history/{user_id}", headers=headers).json()["count"] == 0


def test_log_fields_in_the_api_schema_carry_the_contract_ranges(client):
    schema = client.get("/openapi.json").json()["components"]["schemas"]["DailyLogSubmit"][
        "properties"
    ]
    for column in DAILY_LOG_COLUMNS:
        if column.name == "user_id":
            continue
        assert column.name in schema
        if column.min is not None:
            prop = schema[column.name]
            bounds = prop.get(
                "minimum",
                next((a.get("minimum") for a in prop.get("anyOf", []) if "minimum" in a), None),
            )
            assert bounds == column.min, column.name


def test_second_submit_for_a_date_merges_fields(client, user):
    user_id, headers = user
    morning = {
        "user_id": user_id,
        "date": TODAY.isoformat(),
        "sleep_hours": 6.0,
        "sleep_quality_good": False,
    }
    first = client.post("/logs/submit", json=morning, headers=headers)
    assert first.status_code == 201 and first.json()["created"] is True
    evening = {
        "user_id": user_id,
        "date": TODAY.isoformat(),
        "stress_level": 8,
        "symptoms": ["aura", "nausea", "aura"],
    }
    second = client.post("/logs/submit", json=evening, headers=headers)
    assert second.status_code == 200 and second.json()["created"] is False
    log = second.json()["log"]
    assert (log["sleep_hours"], log["sleep_quality_good"], log["stress_level"]) == (6.0, False, 8)
    assert log["symptoms"] == ["aura", "nausea"]
    fix = client.post("/logs/submit", json={**morning, "sleep_hours": 6.5}, headers=headers)
    assert fix.status_code == 200 and fix.json()["log"]["sleep_hours"] == 6.5
    assert fix.json()["log"]["stress_level"] == 8
    history = client.get(f"/logs/history/{user_id}", headers=headers).json()
    assert history["count"] == 1
    assert client.get(f"/users/profile/{user_id}", headers=headers).json()["days_logged"] == 1


def test_reporting_no_attack_clears_a_stored_severity(client, user):
    user_id, headers = user
    attack = {
        "user_id": user_id,
        "date": TODAY.isoformat(),
        "migraine_occurred": True,
        "migraine_severity": 5,
    }
    assert client.post("/logs/submit", json=attack, headers=headers).status_code == 201
    fix = {"user_id": user_id, "date": TODAY.isoformat(), "migraine_occurred": False}
    log = client.post("/logs/submit", json=fix, headers=headers).json()["log"]
    assert (log["migraine_occurred"], log["migraine_severity"], log["migraine_duration_hours"]) == (
        False,
        None,
        None,
    )


def test_history_is_newest_first_and_filters(client, user):
    user_id, headers = user
    log_days(client, headers, user_id, 10, TODAY)
    history = client.get(f"/logs/history/{user_id}", headers=headers).json()
    dates = [r["date"] for r in history["logs"]]
    assert history["count"] == 10 and dates == sorted(dates, reverse=True)
    start = (TODAY - timedelta(days=3)).isoformat()
    window = client.get(
        f"/logs/history/{user_id}", params={"start": start, "limit": 2}, headers=headers
    ).json()
    assert [r["date"] for r in window["logs"]] == [
        TODAY.isoformat(),
        (TODAY - timedelta(days=1)).isoformat(),
    ]
    assert (
        client.get(f"/logs/history/{user_id}", params={"limit": 0}, headers=headers).status_code
        == 422
    )


def test_outcome_route_validates_path_date_and_body(client, user):
    user_id, headers = user
    future = TODAY + timedelta(days=2)
    errors = _field_errors(
        client.put(
            f"/logs/outcome/{user_id}/{future}", json={"migraine_occurred": True}, headers=headers
        )
    )
    assert errors == {"date": "date_in_future"}
    errors = _field_errors(
        client.put(
            f"/logs/outcome/{user_id}/{TODAY}", json={"migraine_severity": 3}, headers=headers
        )
    )
    assert errors == {"migraine_occurred": "missing"}
    errors = _field_errors(
        client.put(
            f"/logs/outcome/{user_id}/{TODAY}",
            json={"migraine_occurred": True, "migraine_severity": 12},
            headers=headers,
        )
    )
    assert errors == {"migraine_severity": "less_than_equal"}
    # an outcome for a day not yet logged creates the day
    ok = client.put(
        f"/logs/outcome/{user_id}/{TODAY}",
        json={"migraine_occurred": True, "migraine_severity": 6},
        headers=headers,
    )
    assert (
        ok.status_code == 200
        and ok.json()["log"]["migraine_severity"] == 6
        and ok.json()["prediction"] is None
    )


# ------------------------------------------------------------ predictions


def test_today_prediction_is_stored_and_reused_until_inputs_change(client, user):
    user_id, headers = user
    log_days(client, headers, user_id, 5, TODAY - timedelta(days=1))
    first = client.get(f"/predictions/{user_id}", headers=headers)
    assert first.status_code == 200 and first.headers["X-Forecast"] == "new"
    body = first.json()
    assert body["date"] == TODAY.isoformat() and body["phase"] == "1-14"
    assert 0.0 < body["probability"] < 1.0
    assert (body["model_name"], body["model_version"]) == ("base_rate", "builtin")
    assert body["risk_level"] in {"minimal", "low", "moderate", "high"}
    assert 0.0 <= body["confidence"] <= 1.0
    second = client.get(f"/predictions/{user_id}", headers=headers)
    assert second.headers["X-Forecast"] == "stored" and second.json() == body
    # a day field of today is not an input of today's forecast: still stored
    client.post(
        "/logs/submit",
        json={"user_id": user_id, "date": TODAY.isoformat(), "stress_level": 9},
        headers=headers,
    )
    assert client.get(f"/predictions/{user_id}", headers=headers).headers["X-Forecast"] == "stored"
    # new morning data is: recomputed, and the stored row replaced (still one per day)
    client.post(
        "/logs/submit",
        json={"user_id": user_id, "date": TODAY.isoformat(), "sleep_hours": 4.0},
        headers=headers,
    )
    third = client.get(f"/predictions/{user_id}", headers=headers)
    assert third.headers["X-Forecast"] == "new"
    assert third.json()["confidence"] > body["confidence"]
    history = client.get(f"/predictions/history/{user_id}", headers=headers).json()
    assert history["count"] == 1


def test_probability_is_the_running_base_rate_of_the_users_rows(client, user):
    user_id, headers = user
    # 3 attacks a month self-reported -> prior rate 0.1 with weight 30 scorable days;
    # 20 scorable attack-free days -> (0 + 30 * 0.1) / (20 + 30) = 0.06
    log_days(client, headers, user_id, 21, TODAY - timedelta(days=1))
    body = client.get(f"/predictions/{user_id}", headers=headers).json()
    assert body["probability"] == pytest.approx(3.0 / 50.0, rel=1e-6)
    assert body["risk_level"] == "minimal"


def test_outcome_sets_was_correct_and_accuracy(client, user):
    user_id, headers = user
    yesterday = TODAY - timedelta(days=1)
    log_days(
        client, headers, user_id, 3, yesterday
    )  # yesterday reported attack-free: today is scorable
    prediction = client.get(f"/predictions/{user_id}", headers=headers).json()
    assert prediction["probability"] < 0.2  # below MODERATE: "no attack expected"
    before = client.get(f"/predictions/accuracy/{user_id}", headers=headers).json()
    assert before["n_predictions"] == 1 and before["n_scored"] == 0 and before["accuracy"] is None

    response = client.put(
        f"/logs/outcome/{user_id}/{TODAY}",
        json={"migraine_occurred": True, "migraine_severity": 7, "migraine_duration_hours": 10.0},
        headers=headers,
    )
    assert response.status_code == 200
    scored = response.json()["prediction"]
    assert (scored["actual_outcome"], scored["actual_onset"], scored["was_correct"]) == (
        True,
        True,
        False,
    )
    after = client.get(f"/predictions/accuracy/{user_id}", headers=headers).json()
    assert (after["n_scored"], after["n_correct"], after["accuracy"]) == (1, 0, 0.0)
    assert after["brier_score"] == pytest.approx((1 - prediction["probability"]) ** 2, rel=1e-4)
    assert after["by_model"][0]["model_name"] == "base_rate"

    corrected = client.put(
        f"/logs/outcome/{user_id}/{TODAY}", json={"migraine_occurred": False}, headers=headers
    ).json()
    assert corrected["prediction"]["was_correct"] is True
    final = client.get(f"/predictions/accuracy/{user_id}", headers=headers).json()
    assert (final["n_scored"], final["n_correct"], final["accuracy"]) == (1, 1, 1.0)
    history = client.get(f"/predictions/history/{user_id}", headers=headers).json()["predictions"]
    assert history[0]["actual_outcome"] is False and history[0]["was_correct"] is True


def test_day_after_an_attack_is_not_scored_and_previous_outcome_rescores(client, user):
    user_id, headers = user
    yesterday = TODAY - timedelta(days=1)
    log_days(client, headers, user_id, 3, yesterday)
    client.get(f"/predictions/{user_id}", headers=headers)
    client.put(
        f"/logs/outcome/{user_id}/{TODAY}", json={"migraine_occurred": False}, headers=headers
    )
    assert (
        client.get(f"/predictions/history/{user_id}", headers=headers).json()["predictions"][0][
            "was_correct"
        ]
        is True
    )
    # yesterday turns out to have been an attack day: today's attack is not an onset -> not scored
    client.put(
        f"/logs/outcome/{user_id}/{yesterday}", json={"migraine_occurred": True}, headers=headers
    )
    row = client.get(f"/predictions/history/{user_id}", headers=headers).json()["predictions"][0]
    assert row["actual_onset"] is None and row["was_correct"] is None
    assert client.get(f"/predictions/accuracy/{user_id}", headers=headers).json()["n_scored"] == 0


def test_phase_moves_to_15_30_after_14_logged_days(client, user):
    user_id, headers = user
    log_days(client, headers, user_id, 13, TODAY - timedelta(days=1))
    profile = client.get(f"/users/profile/{user_id}", headers=headers).json()
    assert (profile["days_logged"], profile["current_phase"]) == (13, "1-14")
    assert client.get(f"/predictions/{user_id}", headers=headers).json()["phase"] == "1-14"
    client.post("/logs/submit", json=full_day(user_id, TODAY - timedelta(days=14)), headers=headers)
    profile = client.get(f"/users/profile/{user_id}", headers=headers).json()
    assert (profile["days_logged"], profile["current_phase"]) == (14, "15-30")
    recomputed = client.get(f"/predictions/{user_id}", headers=headers)
    assert recomputed.headers["X-Forecast"] == "new" and recomputed.json()["phase"] == "15-30"


def test_new_user_without_diary_gets_a_forecast(client, user):
    user_id, headers = user
    body = client.get(f"/predictions/{user_id}", headers=headers).json()
    assert body["probability"] == pytest.approx(0.1)  # the self-reported 3 attacks a month
    assert body["phase"] == "1-14" and body["top_triggers"] == []


# ----------------------------------------------------------------- status


def test_health_ready_and_offline_docs(client):
    assert client.get("/health").json() == {"status": "ok"}
    ready = client.get("/ready", headers=OPERATOR)
    assert ready.status_code == 200
    assert client.get("/ready").json() == {"ready": True}  # no details without the operator token
    body = ready.json()
    assert body["ready"] is True and body["database"]["revision"] == body["database"]["head"]
    assert body["models"]["source"] == "builtin"
    assert {r["model"] for r in body["models"]["routes"].values()} == {"base_rate"}
    docs = client.get("/docs")
    assert docs.status_code == 200 and "/docs-static/swagger-ui-bundle.js" in docs.text
    assert "cdn" not in docs.text.lower()
    assert client.get("/docs-static/swagger-ui-bundle.js").status_code == 200
    paths = client.get("/openapi.json").json()["paths"]
    for path in (
        "/users/onboarding",
        "/logs/submit",
        "/logs/outcome/{user_id}/{date}",
        "/predictions/{user_id}",
        "/insights/weekly-stats/{user_id}",
    ):
        assert path in paths


def test_ready_is_503_when_the_database_is_unreachable(tmp_path):
    settings = make_settings(tmp_path, database_url="postgresql://postgres@127.0.0.1:1/nothing")
    with make_client(settings) as client:
        response = client.get("/ready", headers=OPERATOR)
        assert response.status_code == 503
        assert client.get("/ready").json() == {"ready": False}
        assert (
            response.json()["database"]["ok"] is False and response.json()["models"]["ok"] is True
        )
        assert client.get("/health").status_code == 200
        assert client.post("/users/onboarding", json=PROFILE).status_code == 503


def test_cors_origins_from_settings(tmp_path):
    with make_client(
        make_settings(tmp_path, cors_origins="https://app.example.org, http://localhost:3000")
    ) as client:
        response = client.options(
            "/health",
            headers={"Origin": "http://localhost:3000", "Access-Control-Request-Method": "GET"},
        )
        assert response.headers["access-control-allow-origin"] == "http://localhost:3000"



def test_a_diary_day_far_in_the_past_is_rejected_naming_the_field(client, user):
    """An absurd date (a typo) would make the day-by-day feature grid huge: 422, not a slow user."""
    user_id, headers = user
    body = {**full_day(user_id, TODAY), "date": "0001-01-01"}
    response = client.post("/logs/submit", json=body, headers=headers)
    assert _field_errors(response) == {"date": "date_too_old"}
