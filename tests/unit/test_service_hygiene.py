"""Input hygiene on every route (service.hygiene), the day merge rule, and what OpenAPI documents."""

from __future__ import annotations

from datetime import timedelta

import pytest
from pydantic import ValidationError

from migrainemamba.service.app import create_app
from migrainemamba.service.settings import Settings
from tests.unit.test_service_support import (
    PROFILE,
    TODAY,
    full_day,
    make_client,
    make_settings,
    onboard,
)

JSON = {"Content-Type": "application/json"}


@pytest.fixture
def client(tmp_path):
    with make_client(make_settings(tmp_path)) as c:
        yield c


@pytest.fixture
def user(client):
    return onboard(client)


def _raw(client, method, url, text, headers=None):
    return client.request(method, url, content=text.encode("utf-8", "surrogatepass"), headers={**JSON, **(headers or {})})


def _loc(response):
    assert response.status_code == 422, response.text
    return [tuple(e["loc"]) for e in response.json()["detail"]]


NON_FINITE = ["NaN", "Infinity", "-Infinity", "1e309"]


@pytest.mark.parametrize("literal", NON_FINITE)
def test_non_finite_numbers_are_422_naming_the_field_on_every_body_route(client, user, literal):
    user_id, headers = user
    day = (TODAY - timedelta(days=1)).isoformat()
    onboarding = f'{{"gender":"F","age":30,"height_cm":{literal},"weight_kg":60.0,"attacks_per_month":2.0,"has_menstrual_cycle":false}}'
    assert _loc(_raw(client, "POST", "/users/onboarding", onboarding)) == [("body", "height_cm")]
    profile = f'{{"weight_kg":{literal}}}'
    assert _loc(_raw(client, "PUT", f"/users/profile/{user_id}", profile, headers)) == [("body", "weight_kg")]
    submit = f'{{"user_id":"{user_id}","date":"{day}","sleep_hours":{literal}}}'
    assert _loc(_raw(client, "POST", "/logs/submit", submit, headers)) == [("body", "sleep_hours")]
    outcome = f'{{"migraine_occurred":true,"migraine_duration_hours":{literal}}}'
    url = f"/logs/outcome/{user_id}/{day}"
    assert _loc(_raw(client, "PUT", url, outcome, headers)) == [("body", "migraine_duration_hours")]
    # nothing was stored
    assert client.get(f"/logs/history/{user_id}", headers=headers).json()["count"] == 0


@pytest.mark.parametrize(
    ("text", "kind"),
    [("\\ud800", "surrogate"), ("\\udfff x", "surrogate"), ("Oslo\\u0000", "control"), ("a\\u001bb", "control")],
)
def test_lone_surrogates_and_control_characters_are_422_naming_the_field(client, user, text, kind):
    user_id, headers = user
    body = f'{{"location_city":"{text}"}}'
    response = _raw(client, "PUT", f"/users/profile/{user_id}", body, headers)
    assert _loc(response) == [("body", "location_city")]
    assert kind in response.json()["detail"][0]["msg"]
    onboarding = '{"gender":"F","age":30,"height_cm":170.0,"weight_kg":60.0,"attacks_per_month":2.0,' \
        f'"has_menstrual_cycle":false,"location_city":"{text}"}}'
    assert _loc(_raw(client, "POST", "/users/onboarding", onboarding)) == [("body", "location_city")]
    # a string in a list, and in a key
    submit = f'{{"user_id":"{user_id}","date":"{TODAY}","symptoms":["{text}"]}}'
    assert _loc(_raw(client, "POST", "/logs/submit", submit, headers)) == [("body", "symptoms", 0)]
    assert client.get(f"/users/profile/{user_id}", headers=headers).json()["location_city"] == "Oslo"


def test_control_characters_in_path_and_query_are_422_naming_the_parameter(client, user):
    user_id, headers = user
    assert _loc(client.get("/predictions/history/%00", headers=headers)) == [("path", "user_id")]
    assert _loc(client.get("/users/profile/a%01b", headers=headers)) == [("path", "user_id")]
    assert _loc(client.get(f"/logs/history/{user_id}?start=%00", headers=headers)) == [("query", "start")]
    # a well-formed but foreign id is still 404 / 403, an id of the wrong shape a 422
    assert client.get("/users/profile/nobody", headers=headers).status_code == 404
    assert _loc(client.get("/users/profile/no%20body", headers=headers)) == [("path", "user_id")]


def test_dates_are_iso_strings_only_start_0_is_rejected(client, user):
    user_id, headers = user
    for bad in ("0", "1700000000", "2024-3-1"):
        response = client.get(f"/logs/history/{user_id}", params={"start": bad}, headers=headers)
        assert _loc(response) == [("query", "start")], bad
        assert _loc(client.get(f"/predictions/history/{user_id}", params={"end": bad}, headers=headers)) == [("query", "end")]
    assert _loc(client.put(f"/logs/outcome/{user_id}/0", json={"migraine_occurred": False}, headers=headers)) == [("path", "date")]
    body = full_day(user_id, TODAY) | {"date": 0}
    assert _loc(client.post("/logs/submit", json=body, headers=headers)) == [("body", "date")]
    ok = client.get(f"/logs/history/{user_id}", params={"start": "2024-01-01"}, headers=headers)
    assert ok.status_code == 200


def test_error_bodies_are_bounded_and_large_bodies_are_413(client, user):
    user_id, headers = user
    huge = {**full_day(user_id, TODAY), "location_city": "x" * 200_000}
    response = client.post("/logs/submit", json=huge, headers=headers)
    assert response.status_code == 422 and len(response.content) < 2_000
    many = {f"unknown_{i}": "y" * 1000 for i in range(150)}
    response = client.put(f"/users/profile/{user_id}", json=many, headers=headers)
    assert response.status_code == 422 and len(response.content) < 4_000
    body = b'{"a":"' + b"z" * (20 * 1024 * 1024) + b'"}'
    response = client.post("/logs/submit", content=body, headers={**JSON, **headers})
    assert response.status_code == 413 and len(response.content) < 200


def test_wrong_content_type_is_415(client, user):
    user_id, headers = user
    text = '{"weight_kg": 70.0}'
    for content_type in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"):
        response = client.put(f"/users/profile/{user_id}", content=text, headers={**headers, "Content-Type": content_type})
        assert response.status_code == 415, content_type
    response = client.put(f"/users/profile/{user_id}", content=text, headers={**headers, "Content-Type": "application/json; charset=utf-8"})
    assert response.status_code == 200


def test_a_day_never_contradicts_itself_merge_rule(client, user):
    user_id, headers = user
    day = (TODAY - timedelta(days=2)).isoformat()
    first = client.post("/logs/submit", json={"user_id": user_id, "date": day, "migraine_occurred": False}, headers=headers)
    assert first.status_code == 201
    # severity and duration for a day stored as "no attack": refused, naming the field, nothing written
    later = {"user_id": user_id, "date": day, "migraine_severity": 8, "migraine_duration_hours": 12.0}
    response = client.post("/logs/submit", json=later, headers=headers)
    assert response.status_code == 409
    assert [tuple(e["loc"]) for e in response.json()["detail"]] == [("body", "migraine_severity")]
    assert "migraine_occurred true" in response.json()["detail"][0]["msg"]
    row = client.get(f"/logs/history/{user_id}", headers=headers).json()["logs"][0]
    assert (row["migraine_occurred"], row["migraine_severity"]) == (False, None)
    # with the attack stated it merges; then "no attack" clears severity and duration
    ok = client.post("/logs/submit", json={**later, "migraine_occurred": True}, headers=headers)
    assert ok.status_code == 200 and ok.json()["log"]["migraine_severity"] == 8
    cleared = client.post("/logs/submit", json={"user_id": user_id, "date": day, "migraine_occurred": False}, headers=headers)
    assert cleared.json()["log"]["migraine_severity"] is None and cleared.json()["log"]["migraine_duration_hours"] is None
    # a severity on a day without a reported outcome is refused too
    fresh = {"user_id": user_id, "date": (TODAY - timedelta(days=3)).isoformat(), "migraine_severity": 3}
    response = client.post("/logs/submit", json=fresh, headers=headers)
    assert response.status_code == 409 and response.json()["detail"][0]["loc"] == ["body", "migraine_severity"]


def test_short_secret_key_and_operator_token_stop_start_up(tmp_path):
    with pytest.raises(ValidationError, match="at least 32 characters"):
        make_settings(tmp_path, secret_key="twelve-bytes")
    with pytest.raises(ValidationError, match="OPERATOR_TOKEN must be at least"):
        make_settings(tmp_path, operator_token="short")


def test_openapi_documents_every_status_and_limit():
    app = create_app(Settings(_env_file=None, database_url="sqlite://", secret_key="x" * 40))
    schema = app.openapi()
    paths = schema["paths"]
    submit = paths["/logs/submit"]["post"]["responses"]
    assert {"200", "201", "401", "403", "404", "409", "413", "415", "422", "503"} <= set(submit)
    profile = paths["/users/profile/{user_id}"]["get"]["responses"]
    assert {"200", "401", "403", "404", "422", "503"} <= set(profile)
    assert {"201", "413", "415", "422", "503"} <= set(paths["/users/onboarding"]["post"]["responses"])
    outcome = paths["/logs/outcome/{user_id}/{date}"]["put"]
    date_param = next(p for p in outcome["parameters"] if p["name"] == "date")
    assert "730 days" in date_param["description"]
    user_param = next(p for p in outcome["parameters"] if p["name"] == "user_id")
    assert user_param["schema"]["maxLength"] == 64
    body = schema["components"]["schemas"]["DailyLogSubmit"]["properties"]
    assert "730 days" in body["date"]["description"]
    description = paths["/logs/submit"]["post"]["description"]
    assert "migraine_occurred: false" in description and "needs the merged day" in description


def test_readiness_details_are_for_the_operator_only(client):
    assert client.get("/ready").json() == {"ready": True}
    assert client.get("/ready", headers={"Authorization": "Bearer wrong-token"}).json() == {"ready": True}


def test_profile_sent_unchanged_keeps_onboarding_values(client, user):
    """A control run for the checks above: well-formed input still goes through."""
    user_id, headers = user
    response = client.put(f"/users/profile/{user_id}", json={"location_city": "Tromsø\tNord"}, headers=headers)
    assert response.status_code == 200 and response.json()["location_city"] == "Tromsø\tNord"
    assert PROFILE["location_city"] == "Oslo"
