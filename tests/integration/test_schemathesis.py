"""Property-based run over the API's OpenAPI schema (schemathesis): no input yields a 5xx.

The in-process ASGI app (``create_app`` on a tmp SQLite file, "today" fixed)
is called with requests schemathesis generates from ``/openapi.json``, both
valid and invalid ones, a bounded number per operation. One user is onboarded
first; most generated cases carry that user's token and id (path and body) so
that the deep paths (forecasts, insights, outcome scoring) run, the rest keep
the generated id (unknown user: 404, someone else's: 403). The only check is
``not_a_server_error``: every answer must be a deliberate 2xx/4xx.
"""

from __future__ import annotations

import os
from datetime import date, timedelta

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from migrainemamba.data.schema import MIDAS_ITEMS, MIDAS_RECALL_DAYS
from migrainemamba.service.app import create_app
from migrainemamba.service.deps import MAX_DAYS_BACK, get_today
from migrainemamba.service.settings import Settings
from tests.unit.test_service_support import TODAY, log_days, make_client, make_settings, onboard

pytestmark = pytest.mark.integration

MAX_EXAMPLES = int(os.environ.get('SCHEMATHESIS_MAX_EXAMPLES', '25'))  # per operation and generation mode
# Fewer for the routes that recompute over the whole diary: generated submits log dates back to
# year 1, and a diary spanning centuries makes each such request take ~1 s (the daily grid).
# The clinician report renders three figures and a PDF per request (~1 s).
FEWER_EXAMPLES = {
    "/insights/triggers/{user_id}": 6,
    "/insights/recommendations/{user_id}": 6,
    "/reports/{user_id}": 6,
    "/insights/patterns/{user_id}": 6,
}


@pytest.fixture(scope="module")
def service_settings(tmp_path_factory):
    return make_settings(tmp_path_factory.mktemp("schemathesis"))


@pytest.fixture(scope="module")
def owner(service_settings):
    """A user with three weeks of diary (so forecasts and insights have data); (user_id, headers)."""
    with make_client(service_settings) as client:
        user_id, headers = onboard(client)
        log_days(client, headers, user_id, 21, TODAY)
        for day in range(1, 4):  # medications for the clinical routes (ids 1-3)
            client.post("/medications/log", headers=headers, json={
                "user_id": user_id, "date": f"{TODAY:%Y-%m}-0{day}", "name": "ibuprofen",
                "medication_class": "simple_analgesic", "purpose": "acute", "relief_2h": 1})
    return user_id, headers


# Erasing the owner would leave every later operation without its user: that one gets its own.
ERASES_THE_USER = ("DELETE", "/users/{user_id}")

# The diary's dates must lie in the window ending today (deps.MAX_DAYS_BACK), a rule of the
# request's day that JSON Schema cannot state: valid ("positive") dates are drawn from it.
schemathesis.openapi.format(
    "date",
    st.dates(min_value=TODAY - timedelta(days=MAX_DAYS_BACK), max_value=TODAY).map(date.isoformat),
)


@pytest.fixture(scope="module")
def api_schema(service_settings, owner):
    app = create_app(service_settings)
    app.dependency_overrides[get_today] = lambda: TODAY
    return schemathesis.openapi.from_asgi("/openapi.json", app)


def _operations() -> list[tuple[str, str]]:
    """(method, path) of every operation; creating the app touches nothing (no database, no model)."""
    app = create_app(Settings(_env_file=None, database_url="sqlite://", secret_key="x" * 40))
    return [
        (method.upper(), path)
        for path, item in app.openapi()["paths"].items()
        for method in item
        if method in {"get", "post", "put", "patch", "delete"}
    ]


def _iso_date(value) -> date | None:
    try:
        return date.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        return None


def _days(value) -> bool:
    """An answer the schema accepts on its own: an integral number of days within the recall."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    return value == int(value) and 0 <= value <= MIDAS_RECALL_DAYS


def _within_unstated_rules(case) -> None:
    """Cases obey the rules the schema states only in words (each tested on its own in
    tests/unit/test_service_clinical.py): a period's start is not after its end (a rule between
    two query parameters, which OpenAPI cannot state); MIDAS days of questions 1+2 and 3+4 within
    the recall (arithmetic, which JSON Schema lacks). Only values valid on their own are touched,
    so a negative case keeps what makes it invalid; schemathesis checks a negative case that came
    out valid as a positive one (ST202)."""
    query = case.query or {}
    start, end = _iso_date(query.get("start")), _iso_date(query.get("end"))
    if start is not None and end is not None and start > end:
        query["start"], query["end"] = query["end"], query["start"]
    body = case.body
    if isinstance(body, dict):
        for first, second in ((MIDAS_ITEMS[0], MIDAS_ITEMS[1]), (MIDAS_ITEMS[2], MIDAS_ITEMS[3])):
            a, b = body.get(first), body.get(second)
            if _days(a) and _days(b) and a + b > MIDAS_RECALL_DAYS:
                body[second] = MIDAS_RECALL_DAYS - int(a)


def _as_owner(case, user_id: str, headers: dict[str, str], swap: bool) -> None:
    """Positive cases: three in four act as the owner, the rest keep the generated user id.
    Negative cases keep their (invalid) values, so they must be rejected; all carry the token,
    and all obey the rules the schema states only in words."""
    _within_unstated_rules(case)
    if not swap:
        case.headers = {**(case.headers or {}), **headers}
        return
    path = case.path_parameters or {}
    if "user_id" in path and len(str(path["user_id"])) % 4:
        path["user_id"] = user_id
    if (
        isinstance(case.body, dict)
        and "user_id" in case.body
        and len(str(case.body["user_id"])) % 4
    ):
        case.body["user_id"] = user_id
    case.headers = {**(case.headers or {}), **headers}


# schemathesis' own pytest integration (schema.parametrize / from_fixture) does not run on
# pytest 9 ('Function' object has no attribute '_nodeid'); the strategies are used directly.
@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=str)
@pytest.mark.parametrize(("method", "path"), _operations(), ids=lambda v: str(v))
def test_no_input_causes_a_server_error(api_schema, owner, service_settings, method, path, mode):
    operation = api_schema[path][method]
    user_id, headers = owner
    if (method, path) == ERASES_THE_USER:
        with make_client(service_settings) as client:
            user_id, headers = onboard(client)

    @given(case=operation.as_strategy(mode))
    @settings(
        max_examples=FEWER_EXAMPLES.get(path, MAX_EXAMPLES),
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def check(case):
        _as_owner(case, user_id, headers, swap=mode == GenerationMode.POSITIVE)
        case.call_and_validate()  # every check schemathesis has (the CLI's --checks all)

    try:
        check()
    except Unsatisfiable:
        pytest.skip(f"{method} {path} has no input that can be made invalid")
