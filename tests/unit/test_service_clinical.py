"""The clinical diary's routes in-process: medications, questionnaires, summary, report, export, erasure."""

from __future__ import annotations

import io
import json
import zipfile
from datetime import date, timedelta

import jsonschema
import pytest
from pydantic import ValidationError
from pypdf import PdfReader
from sqlalchemy import event

from migrainemamba.data.schema import MIDAS_ITEMS, MIDAS_RECALL_DAYS
from migrainemamba.service.db import WRITER
from migrainemamba.service.schemas_clinical import MedicationLog, MedicationUpdate, MidasSubmit
from tests.unit.test_service_support import TODAY, full_day, make_client, make_settings, onboard

HIT6 = [
    "severe_pain",
    "limits_daily_activities",
    "wish_to_lie_down",
    "too_tired",
    "fed_up_or_irritated",
    "limits_concentration",
]
MIDAS = {
    "missed_work_or_school_days": 2,
    "reduced_work_or_school_productivity_days": 3,
    "missed_household_work_days": 1,
    "reduced_household_productivity_days": 4,
    "missed_family_social_leisure_days": 2,
}


@pytest.fixture
def client(tmp_path):
    with make_client(make_settings(tmp_path)) as c:
        yield c


@pytest.fixture
def user(client):
    return onboard(client)


def med(user_id: str, day: date, /, **values):
    body = {
        "user_id": user_id,
        "date": day.isoformat(),
        "time": "08:30",
        "name": "sumatriptan",
        "medication_class": "triptan",
        "purpose": "acute",
        "dose_mg": 50.0,
        "relief_2h": 2,
    }
    body.update(values)
    return body


def _errors(response) -> dict[str, str]:
    assert response.status_code == 422, response.text
    return {e["loc"][-1]: e["type"] for e in response.json()["detail"]}


def diary_with_medication(client, user_id, headers, days=45):
    """A diary ending today: a migraine every 4th day after a heavy-drinking evening,
    a triptan on each migraine day. Returns (migraine days, triptan days) per month."""
    per_month: dict[str, list[int]] = {}
    for k in range(days):
        day = TODAY - timedelta(days=days - 1 - k)
        migraine = k % 4 == 3
        r = client.post(
            "/logs/submit",
            headers=headers,
            json=full_day(
                user_id,
                day,
                migraine_occurred=migraine,
                alcohol_drinks=6 if k % 4 == 2 else 0,
                migraine_severity=6 if migraine else None,
            ),
        )
        assert r.status_code == 201, r.text
        counts = per_month.setdefault(f"{day:%b %Y}", [0, 0])
        if migraine:
            assert (
                client.post("/medications/log", json=med(user_id, day), headers=headers).status_code
                == 201
            )
            counts[0] += 1
            counts[1] += 1
    return per_month


# ------------------------------------------------------------- medications


def test_log_list_edit_and_remove_a_medication(client, user):
    user_id, headers = user
    r = client.post("/medications/log", json=med(user_id, TODAY), headers=headers)
    assert r.status_code == 201
    logged = r.json()
    assert (logged["name"], logged["medication_class"], logged["relief_2h"], logged["time"]) == (
        "sumatriptan",
        "triptan",
        2,
        "08:30",
    )
    pre = client.post(
        "/medications/log",
        headers=headers,
        json=med(
            user_id,
            TODAY - timedelta(days=3),
            name="propranolol",
            medication_class="beta_blocker",
            purpose="preventive",
            dose_mg=80.0,
            relief_2h=None,
            time=None,
        ),
    )
    assert pre.status_code == 201
    history = client.get(f"/medications/history/{user_id}", headers=headers).json()
    assert history["count"] == 2 and [m["date"] for m in history["medications"]] == [
        TODAY.isoformat(),
        (TODAY - timedelta(days=3)).isoformat(),
    ]
    only_preventive = client.get(
        f"/medications/history/{user_id}?purpose=preventive", headers=headers
    ).json()
    assert [m["name"] for m in only_preventive["medications"]] == ["propranolol"]

    edited = client.put(
        f"/medications/{user_id}/{logged['id']}",
        json={"relief_2h": 3, "dose_mg": 100.0},
        headers=headers,
    )
    assert edited.status_code == 200 and (edited.json()["relief_2h"], edited.json()["dose_mg"]) == (
        3,
        100.0,
    )
    assert edited.json()["name"] == "sumatriptan"  # fields not sent stay
    # relief is for acute intakes: making it preventive without clearing the stored relief
    # contradicts the stored row (409 naming the field, nothing written) ...
    refused = client.put(
        f"/medications/{user_id}/{logged['id']}",
        json={"purpose": "preventive", "dose_mg": 10.0},
        headers=headers,
    )
    assert refused.status_code == 409, refused.text
    assert [(e["loc"], e["type"]) for e in refused.json()["detail"]] == [
        (["body", "purpose"], "relief_for_preventive")
    ]
    # ... and so does a relief for a stored preventive
    refused = client.put(
        f"/medications/{user_id}/{pre.json()['id']}", json={"relief_2h": 2}, headers=headers
    )
    assert refused.status_code == 409 and refused.json()["detail"][0]["loc"] == [
        "body",
        "relief_2h",
    ]
    # a body that contradicts itself is a 422 (the schema states the rule)
    assert _errors(
        client.put(
            f"/medications/{user_id}/{logged['id']}",
            json={"purpose": "preventive", "relief_2h": 1},
            headers=headers,
        )
    ) == {"relief_2h": "relief_for_preventive"}
    unchanged = client.get(f"/medications/history/{user_id}", headers=headers).json()
    assert {(m["purpose"], m["relief_2h"], m["dose_mg"]) for m in unchanged["medications"]} == {
        ("acute", 3, 100.0),
        ("preventive", None, 80.0),
    }
    ok = client.put(
        f"/medications/{user_id}/{logged['id']}",
        json={"purpose": "preventive", "relief_2h": None},
        headers=headers,
    )
    assert ok.status_code == 200 and ok.json()["relief_2h"] is None
    assert (
        client.delete(f"/medications/{user_id}/{logged['id']}", headers=headers).status_code == 204
    )
    assert client.get(f"/medications/history/{user_id}", headers=headers).json()["count"] == 1
    assert (
        client.delete(f"/medications/{user_id}/{logged['id']}", headers=headers).status_code == 404
    )


@pytest.mark.parametrize(
    ("change", "field", "kind"),
    [
        ({"medication_class": "aspirin"}, "medication_class", "literal_error"),
        ({"purpose": "rescue"}, "purpose", "literal_error"),
        ({"time": "25:10"}, "time", "string_pattern_mismatch"),
        ({"relief_2h": 4}, "relief_2h", "less_than_equal"),
        ({"relief_2h": "2"}, "relief_2h", "int_type"),
        ({"dose_mg": -5.0}, "dose_mg", "greater_than_equal"),
        ({"name": ""}, "name", "string_too_short"),
        # control characters: the input hygiene answers first, on every route (service.hygiene)
        ({"name": "suma\x00triptan"}, "name", "string_character"),
        ({"user_id": "a b"}, "user_id", "string_pattern_mismatch"),
        ({"date": 0}, "date", "date_format"),
        ({"date": "0"}, "date", "date_format"),
        ({"purpose": "preventive"}, "relief_2h", "relief_for_preventive"),
        ({"date": (TODAY + timedelta(days=1)).isoformat()}, "date", "date_in_future"),
        ({"colour": "red"}, "colour", "extra_forbidden"),
    ],
)
def test_medication_validation_names_the_field(client, user, change, field, kind):
    user_id, headers = user
    assert (
        _errors(
            client.post("/medications/log", json=med(user_id, TODAY, **change), headers=headers)
        )[field]
        == kind
    )


def test_medication_name_is_required(client, user):
    user_id, headers = user
    body = med(user_id, TODAY)
    del body["name"]
    assert _errors(client.post("/medications/log", json=body, headers=headers)) == {
        "name": "missing"
    }


def test_integral_floats_are_integers_as_in_the_schema(client, user):
    """JSON Schema counts 2.0 as an integer: so does the service (schemas.integral_float)."""
    user_id, headers = user
    logged = client.post(
        "/medications/log", json=med(user_id, TODAY, relief_2h=2.0), headers=headers
    )
    assert logged.status_code == 201 and logged.json()["relief_2h"] == 2
    body = {
        "user_id": user_id,
        "date": TODAY.isoformat(),
        **{k: float(v) for k, v in MIDAS.items()},
    }
    midas = client.post("/questionnaires/midas", json=body, headers=headers)
    assert midas.status_code == 201 and midas.json()["questionnaire"]["score"] == 12


def _schema_accepts(model, body) -> bool:
    return jsonschema.Draft202012Validator(model.model_json_schema()).is_valid(body)


def _model_accepts(model, body) -> bool:
    try:
        model.model_validate(body)
    except ValidationError:
        return False
    return True


def test_the_schemas_cross_field_rules_are_the_validators():
    """What the OpenAPI says is what the service accepts: the relief rule as if/then; the MIDAS
    recall (in words: JSON Schema has no arithmetic) at the boundary, per pair."""
    for purpose in ("acute", "preventive"):
        for relief in (None, 0, 2):
            body = med("u1", TODAY, purpose=purpose, relief_2h=relief)
            expected = purpose == "acute" or relief is None
            assert (
                _schema_accepts(MedicationLog, body)
                == _model_accepts(MedicationLog, body)
                == expected
            )
            change = {"purpose": purpose, "relief_2h": relief}
            assert (
                _schema_accepts(MedicationUpdate, change)
                == _model_accepts(MedicationUpdate, change)
                == expected
            )
    # the rule reads the body only: a relief alone is for the merged-row check (409)
    assert _schema_accepts(MedicationUpdate, {"relief_2h": 2})
    assert _model_accepts(MedicationUpdate, {"relief_2h": 2})

    description = MidasSubmit.model_json_schema()["description"]
    pairs = [(MIDAS_ITEMS[0], MIDAS_ITEMS[1]), (MIDAS_ITEMS[2], MIDAS_ITEMS[3])]
    for first, second in pairs:
        assert f"{first} + {second} <= {MIDAS_RECALL_DAYS}" in description
        for days in range(MIDAS_RECALL_DAYS + 1):
            at_recall = {"user_id": "u1", "date": TODAY.isoformat(), **MIDAS, first: days}
            at_recall[second] = MIDAS_RECALL_DAYS - days
            over = {**at_recall, second: MIDAS_RECALL_DAYS - days + 1}
            assert _schema_accepts(MidasSubmit, at_recall) and _model_accepts(
                MidasSubmit, at_recall
            )
            assert not _model_accepts(MidasSubmit, over)


# ---------------------------------------------------------- questionnaires


def test_midas_and_hit6_are_scored_and_kept_as_a_time_series(client, user):
    user_id, headers = user
    earlier = (TODAY - timedelta(days=30)).isoformat()
    r = client.post(
        "/questionnaires/midas",
        json={"user_id": user_id, "date": earlier, **MIDAS},
        headers=headers,
    )
    assert r.status_code == 201
    assert (r.json()["questionnaire"]["score"], r.json()["questionnaire"]["grade"]) == (12, "III")
    hit6 = {"user_id": user_id, "date": TODAY.isoformat(), **{k: "sometimes" for k in HIT6}}
    r = client.post("/questionnaires/hit6", json=hit6, headers=headers)
    assert r.status_code == 201 and r.json()["questionnaire"]["score"] == 60
    assert r.json()["questionnaire"]["grade"] == "severe impact"
    # the same instrument on the same day replaces it
    again = client.post(
        "/questionnaires/hit6", json={**hit6, "severe_pain": "never"}, headers=headers
    )
    assert again.status_code == 200 and again.json()["questionnaire"]["score"] == 56
    assert again.json()["questionnaire"]["answers"]["severe_pain"] == "never"
    later = client.post(
        "/questionnaires/midas",
        json={
            "user_id": user_id,
            "date": TODAY.isoformat(),
            **MIDAS,
            "missed_work_or_school_days": 12,
        },
        headers=headers,
    )
    assert later.json()["questionnaire"]["grade"] == "IV"
    series = client.get(
        f"/questionnaires/history/{user_id}?instrument=MIDAS", headers=headers
    ).json()
    assert [(q["date"], q["score"]) for q in series["questionnaires"]] == [
        (earlier, 12),
        (TODAY.isoformat(), 22),
    ]
    assert client.get(f"/questionnaires/history/{user_id}", headers=headers).json()["count"] == 3


@pytest.mark.parametrize(
    ("path", "change", "field", "kind"),
    [
        (
            "midas",
            {"missed_work_or_school_days": 91},
            "missed_work_or_school_days",
            "less_than_equal",
        ),
        (
            "midas",
            {"missed_work_or_school_days": 60, "reduced_work_or_school_productivity_days": 40},
            "reduced_work_or_school_productivity_days",
            "midas_days_overlap",
        ),
        ("midas", {"missed_household_work_days": 2.5}, "missed_household_work_days", "int_type"),
        ("midas", {"missed_household_work_days": "2"}, "missed_household_work_days", "int_type"),
        ("midas", {"user_id": "../x"}, "user_id", "string_pattern_mismatch"),
        ("hit6", {"date": 19000}, "date", "date_format"),
        ("hit6", {"too_tired": "often"}, "too_tired", "literal_error"),
    ],
)
def test_questionnaire_validation_names_the_item(client, user, path, change, field, kind):
    user_id, headers = user
    body = {
        "user_id": user_id,
        "date": TODAY.isoformat(),
        **(MIDAS if path == "midas" else {k: "never" for k in HIT6}),
        **change,
    }
    assert (
        _errors(client.post(f"/questionnaires/{path}", json=body, headers=headers))[field] == kind
    )


def test_a_missing_hit6_item_is_named(client, user):
    user_id, headers = user
    body = {"user_id": user_id, "date": TODAY.isoformat(), **{k: "never" for k in HIT6[:-1]}}
    assert _errors(client.post("/questionnaires/hit6", json=body, headers=headers)) == {
        "limits_concentration": "missing"
    }


# ----------------------------------------------------- summary and report


def test_summary_route_counts_the_users_own_days(client, user):
    user_id, headers = user
    per_month = diary_with_medication(client, user_id, headers)
    body = client.get(f"/clinical/summary/{user_id}", headers=headers).json()
    got = {
        date.fromisoformat(m["month"]).strftime("%b %Y"): [
            m["migraine_days"],
            m["medication_days_by_class"]["triptan"],
        ]
        for m in body["months"]
    }
    assert got == per_month
    assert (
        body["overuse"]["level"] == "none"
    )  # ~8 migraine days a month: below the headache criterion
    assert _errors(
        client.get(f"/clinical/summary/{user_id}?start=2024-02-10&end=2024-02-01", headers=headers)
    ) == {"start": "period_reversed"}


def test_report_html_and_pdf_carry_the_users_numbers(client, user):
    user_id, headers = user
    per_month = diary_with_medication(client, user_id, headers)
    client.post(
        "/questionnaires/midas",
        json={"user_id": user_id, "date": TODAY.isoformat(), **MIDAS},
        headers=headers,
    )
    insights = client.get(f"/insights/triggers/{user_id}", headers=headers).json()
    alcohol = next(t for t in insights["diary_triggers"] if t["trigger"] == "heavy_alcohol")
    assert alcohol["relative_risk"] > 1

    html = client.get(f"/reports/{user_id}?format=html", headers=headers)
    assert html.status_code == 200 and html.headers["content-type"].startswith("text/html")
    pdf = client.get(
        f"/reports/{user_id}?format=pdf&start={TODAY - timedelta(days=90)}&end={TODAY}",
        headers=headers,
    )
    assert pdf.status_code == 200 and pdf.headers["content-type"] == "application/pdf"
    text = " ".join(page.extract_text() for page in PdfReader(io.BytesIO(pdf.content)).pages)
    flat = " ".join(text.split())
    for document in (flat, " ".join(html.text.split())):
        assert user_id in document and "MIDAS" in document and "Score" in document
        assert alcohol["name"] in document and "Source: MigraineMamba insights" in document
        assert (
            f"attack onset on {alcohol['onsets_present']} of {alcohol['days_present']} days"
            in document
        )
        assert "sumatriptan" in document and "Overuse check" in document
    # each month's row: month, then logged days, migraine days, headache days, acute medication days, triptan days
    for month, (migraine, triptan) in per_month.items():
        row = flat[flat.index(month) :]
        numbers = row.split()[2:7]
        assert (
            numbers[1] == str(migraine)
            and numbers[3] == str(triptan)
            and numbers[4] == str(triptan)
        ), (month, numbers)


def test_report_rejects_a_bad_period_and_format(client, user):
    user_id, headers = user
    assert _errors(client.get(f"/reports/{user_id}?format=docx", headers=headers)) == {
        "format": "literal_error"
    }
    assert _errors(
        client.get(f"/reports/{user_id}?end={TODAY + timedelta(days=1)}", headers=headers)
    ) == {"end": "date_in_future"}
    assert _errors(
        client.get(f"/reports/{user_id}?start=2024-02-01&end=2024-01-01", headers=headers)
    ) == {"start": "period_reversed"}


# --------------------------------------------------------- export, erasure


def test_export_then_erase_then_export_is_404(client, user):
    user_id, headers = user
    other_id, other_headers = onboard(client)
    diary_with_medication(client, user_id, headers, days=20)
    client.post(
        "/questionnaires/midas",
        json={"user_id": user_id, "date": TODAY.isoformat(), **MIDAS},
        headers=headers,
    )
    assert client.get(f"/predictions/{user_id}", headers=headers).status_code == 200
    client.post("/logs/submit", json=full_day(other_id, TODAY), headers=other_headers)

    exported = client.get(f"/users/export/{user_id}", headers=headers)
    assert exported.status_code == 200
    document = exported.json()
    assert document["counts"] == {
        "daily_logs": 20,
        "medications": 5,
        "personal_states": 0,  # the built-in base rate serves here: no personal model state
        "predictions": 1,
        "questionnaires": 1,
        "users": 1,
    }
    assert all(len(document["tables"][k]) == n for k, n in document["counts"].items())
    assert document["tables"]["users"][0]["user_id"] == user_id
    assert {r["user_id"] for rows in document["tables"].values() for r in rows} == {user_id}

    archive = zipfile.ZipFile(
        io.BytesIO(client.get(f"/users/export/{user_id}?format=zip", headers=headers).content)
    )
    assert sorted(archive.namelist()) == [
        "daily_logs.csv",
        "manifest.json",
        "medications.csv",
        "personal_states.csv",
        "predictions.csv",
        "questionnaires.csv",
        "users.csv",
    ]
    assert archive.read("medications.csv").decode().count("\n") == 1 + 5
    assert json.loads(archive.read("manifest.json"))["counts"] == document["counts"]

    erased = client.delete(f"/users/{user_id}", headers=headers)
    assert erased.status_code == 200 and erased.json()["deleted"] == document["counts"]
    assert client.get(f"/users/export/{user_id}", headers=headers).status_code == 404
    # the token stops working everywhere, and creates nothing
    for path in (
        f"/users/profile/{user_id}",
        f"/medications/history/{user_id}",
        f"/reports/{user_id}",
        f"/logs/history/{user_id}",
        f"/questionnaires/history/{user_id}",
    ):
        assert client.get(path, headers=headers).status_code == 404, path
    assert (
        client.post("/logs/submit", json=full_day(user_id, TODAY), headers=headers).status_code
        == 404
    )
    assert (
        client.post("/medications/log", json=med(user_id, TODAY), headers=headers).status_code
        == 404
    )
    assert client.delete(f"/users/{user_id}", headers=headers).status_code == 404
    # the other user is untouched
    assert (
        client.get(f"/users/export/{other_id}", headers=other_headers).json()["counts"][
            "daily_logs"
        ]
        == 1
    )


# -------------------------------------------------------------------- auth


def _new_routes(user_id: str, medication_id: int):
    day = TODAY.isoformat()
    return [
        ("post", "/medications/log", med(user_id, TODAY)),
        ("get", f"/medications/history/{user_id}", None),
        ("put", f"/medications/{user_id}/{medication_id}", {"relief_2h": 1}),
        ("delete", f"/medications/{user_id}/{medication_id}", None),
        ("post", "/questionnaires/midas", {"user_id": user_id, "date": day, **MIDAS}),
        (
            "post",
            "/questionnaires/hit6",
            {"user_id": user_id, "date": day, **{k: "never" for k in HIT6}},
        ),
        ("get", f"/questionnaires/history/{user_id}", None),
        ("get", f"/clinical/summary/{user_id}", None),
        ("get", f"/reports/{user_id}?format=pdf", None),
        ("get", f"/users/export/{user_id}", None),
        ("delete", f"/users/{user_id}", None),
    ]


def test_every_new_route_needs_the_users_own_token(client, user):
    user_id, headers = user
    _other, other_headers = onboard(client)
    medication_id = client.post(
        "/medications/log", json=med(user_id, TODAY), headers=headers
    ).json()["id"]
    for method, path, body in _new_routes(user_id, medication_id):
        kwargs = {"json": body} if body is not None else {}
        assert client.request(method, path, **kwargs).status_code == 401, path
        forbidden = client.request(method, path, headers=other_headers, **kwargs)
        assert forbidden.status_code == 403, (path, forbidden.text)
    # nothing changed for the owner
    assert client.get(f"/medications/history/{user_id}", headers=headers).json()["count"] == 1
    assert client.get(f"/users/profile/{user_id}", headers=headers).status_code == 200


def test_report_cli_renders_from_the_services_database(tmp_path, monkeypatch):
    from migrainemamba.service.clinical import main

    settings = make_settings(tmp_path)
    with make_client(settings) as client:
        user_id, headers = onboard(client)
        diary_with_medication(client, user_id, headers, days=12)
    monkeypatch.chdir(tmp_path)  # no .env of the repository
    monkeypatch.setenv("DATABASE_URL", settings.database_url)
    monkeypatch.setenv("SECRET_KEY", "test-secret-key-with-enough-entropy-0123456789")
    out = tmp_path / "report.pdf"
    assert (
        main(
            ["--user-id", user_id, "--format", "pdf", "--end", TODAY.isoformat(), "--out", str(out)]
        )
        == 0
    )
    text = " ".join(p.extract_text() for p in PdfReader(out).pages)
    assert user_id in text and "Headache diary report" in text
    assert main(["--user-id", "nobody", "--out", str(tmp_path / "x.html"), "--format", "html"]) == 2


def test_bad_input_on_every_new_route_is_a_422_naming_the_field(client, user):
    user_id, headers = user
    medication_id = client.post(
        "/medications/log", json=med(user_id, TODAY), headers=headers
    ).json()["id"]
    day = TODAY.isoformat()
    cases = [
        ("post", "/medications/log", med(user_id, TODAY, dose_mg="fifty"), "dose_mg"),
        ("get", f"/medications/history/{user_id}?limit=0", None, "limit"),
        ("get", f"/medications/history/{user_id}?purpose=rescue", None, "purpose"),
        ("put", f"/medications/{user_id}/{medication_id}", {"time": "8am"}, "time"),
        ("put", f"/medications/{user_id}/{medication_id}", {"name": None}, "name"),
        ("put", f"/medications/{user_id}/{medication_id}", {"date": None}, "date"),
        ("put", f"/medications/{user_id}/one", {"relief_2h": 1}, "medication_id"),
        ("delete", f"/medications/{user_id}/one", None, "medication_id"),
        ("put", f"/medications/{user_id}/{2**64}", {"relief_2h": 1}, "medication_id"),
        ("delete", f"/medications/{user_id}/0", None, "medication_id"),
        (
            "post",
            "/questionnaires/midas",
            {"user_id": user_id, "date": "2024-13-01", **MIDAS},
            "date",
        ),
        (
            "post",
            "/questionnaires/hit6",
            {"user_id": user_id, "date": day, **{k: "never" for k in HIT6}, "extra": 1},
            "extra",
        ),
        ("get", f"/questionnaires/history/{user_id}?instrument=PHQ-9", None, "instrument"),
        ("get", f"/clinical/summary/{user_id}?end=yesterday", None, "end"),
        ("get", f"/clinical/summary/{user_id}?start=0", None, "start"),
        ("get", f"/questionnaires/history/{user_id}?start=0", None, "start"),
        ("get", f"/medications/history/{user_id}?end=19000", None, "end"),
        ("get", f"/reports/{user_id}?start=2020-01-01", None, "start"),
        ("get", f"/users/export/{user_id}?format=xml", None, "format"),
    ]
    for method, path, body, field in cases:
        kwargs = {"json": body} if body is not None else {}
        response = client.request(method, path, headers=headers, **kwargs)
        assert response.status_code == 422, (path, response.status_code, response.text)
        assert field in {e["loc"][-1] for e in response.json()["detail"]}, (path, response.json())
    # nothing was changed by the rejected requests
    (stored,) = client.get(f"/medications/history/{user_id}", headers=headers).json()["medications"]
    assert (stored["time"], stored["name"]) == ("08:30", "sumatriptan")


# ------------------------------------------------------------- transactions


class _Transactions:
    """What one request does on the engine: transactions begun (writer or not), ended, and the
    statements sent (SQLite: the writer's BEGIN IMMEDIATE is one of them, db module docstring)."""

    def __init__(self, engine) -> None:
        self.events: list[str] = []
        event.listen(engine, "begin", self._begin)
        event.listen(engine, "commit", lambda _c: self.events.append("commit"))
        event.listen(engine, "rollback", lambda _c: self.events.append("rollback"))
        event.listen(engine, "before_cursor_execute", self._statement)

    def _begin(self, connection) -> None:
        writer = connection.get_execution_options().get(WRITER, False)
        self.events.append("begin writer" if writer else "begin reader")

    def _statement(self, _conn, _cursor, statement, _params, _context, _many) -> None:
        self.events.append(
            statement.split()[0].upper() + (" IMMEDIATE" if "IMMEDIATE" in statement else "")
        )

    def take(self) -> list[str]:
        taken, self.events = self.events, []
        return taken


def _one_writer_transaction(events: list[str], ends: str = "commit") -> bool:
    """Exactly one transaction, begun as a writer (BEGIN IMMEDIATE), every write inside it."""
    begins = [e for e in events if e.startswith("begin")]
    return (
        begins == ["begin writer"]
        and set(events[:2]) == {"begin writer", "BEGIN IMMEDIATE"}  # before any other statement
        and events.count("BEGIN") == 0
        and events[-1] == ends
        and events.count("commit") + events.count("rollback") == 1
    )


def test_every_clinical_write_is_one_writer_transaction(client, user):
    """As the hardened service expects (service.db): a request that writes is one transaction that
    begins as the writer (the user's row locked on PostgreSQL, BEGIN IMMEDIATE on SQLite)."""
    user_id, headers = user
    spy = _Transactions(client.app.state.runtime.engine)
    day = TODAY.isoformat()
    logged = client.post("/medications/log", json=med(user_id, TODAY), headers=headers)
    assert logged.status_code == 201
    writes = {"POST /medications/log": spy.take()}
    medication = f"/medications/{user_id}/{logged.json()['id']}"
    assert client.put(medication, json={"relief_2h": 3}, headers=headers).status_code == 200
    writes["PUT medication"] = spy.take()
    midas = {"user_id": user_id, "date": day, **MIDAS}
    assert client.post("/questionnaires/midas", json=midas, headers=headers).status_code == 201
    writes["POST midas"] = spy.take()
    again = {**midas, "missed_work_or_school_days": 5}
    assert client.post("/questionnaires/midas", json=again, headers=headers).status_code == 200
    writes["POST midas again (replaces)"] = spy.take()
    hit6 = {"user_id": user_id, "date": day, **{k: "rarely" for k in HIT6}}
    assert client.post("/questionnaires/hit6", json=hit6, headers=headers).status_code == 201
    writes["POST hit6"] = spy.take()
    assert client.delete(medication, headers=headers).status_code == 204
    writes["DELETE medication"] = spy.take()
    for name, events in writes.items():
        assert _one_writer_transaction(events), (name, events)
        assert {"INSERT", "UPDATE", "DELETE"} & set(events), (name, events)

    # a refused write (409) is one writer transaction too, rolled back with nothing written
    preventive = med(
        user_id, TODAY, purpose="preventive", relief_2h=None, medication_class="beta_blocker"
    )
    stored = client.post("/medications/log", json=preventive, headers=headers).json()
    spy.take()
    refused = client.put(
        f"/medications/{user_id}/{stored['id']}", json={"relief_2h": 2}, headers=headers
    )
    assert refused.status_code == 409
    events = spy.take()
    assert _one_writer_transaction(events, ends="rollback"), events
    assert not {"INSERT", "UPDATE", "DELETE"} & set(events), events

    # the report and the export read only (no writer, no write)
    for path in (f"/reports/{user_id}?format=pdf", f"/users/export/{user_id}?format=zip"):
        assert client.get(path, headers=headers).status_code == 200
        events = spy.take()
        assert "begin writer" not in events and not {"INSERT", "UPDATE", "DELETE"} & set(events), (
            path,
            events,
        )

    assert client.delete(f"/users/{user_id}", headers=headers).status_code == 200
    events = spy.take()
    assert _one_writer_transaction(events), events
    assert events.count("DELETE") >= 4, events  # every owned table, the user last
