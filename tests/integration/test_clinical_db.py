"""Export and erasure on SQLite and PostgreSQL (a fresh database per test), through the API.

The export must hold every row the user has in the database (counted table by
table, straight from the database), the erasure must leave no row of the user
in any table (every table with a ``user_id``, found from the schema), and a
second export is a 404.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import func, inspect, select, text

from migrainemamba.service.db import make_engine
from migrainemamba.service.models import Base
from tests.integration.test_service_db import database_url  # noqa: F401 - the per-backend fixture
from tests.unit.test_service_clinical import HIT6, MIDAS, med
from tests.unit.test_service_support import (
    TODAY,
    full_day,
    log_days,
    make_client,
    make_settings,
    onboard,
)

pytestmark = pytest.mark.integration


def _rows_per_table(url: str, user_id: str) -> dict[str, int]:
    """Rows of ``user_id`` in every table of the database that has a user_id column."""
    engine = make_engine(url)
    try:
        names = [
            t
            for t in inspect(engine).get_table_names()
            if "user_id" in {c["name"] for c in inspect(engine).get_columns(t)}
        ]
        with engine.connect() as connection:
            return {
                name: int(
                    connection.execute(
                        select(func.count())
                        .select_from(Base.metadata.tables[name])
                        .where(Base.metadata.tables[name].c.user_id == user_id)
                    ).scalar_one()
                )
                for name in names
            }
    finally:
        engine.dispose()


def test_export_erase_export_on_each_backend(database_url, tmp_path):  # noqa: F811
    settings = make_settings(tmp_path, database_url=database_url)
    with make_client(settings) as client:
        user_id, headers = onboard(client)
        other_id, other_headers = onboard(client)
        log_days(client, headers, user_id, 20, TODAY - timedelta(days=1))
        log_days(client, other_headers, other_id, 3, TODAY)
        for k in range(4):
            day = TODAY - timedelta(days=2 * k + 1)
            client.post(
                "/logs/submit",
                json=full_day(user_id, day, migraine_occurred=True, migraine_severity=5),
                headers=headers,
            )
            assert (
                client.post("/medications/log", json=med(user_id, day), headers=headers).status_code
                == 201
            )
        assert (
            client.post(
                "/medications/log", json=med(other_id, TODAY), headers=other_headers
            ).status_code
            == 201
        )
        client.post(
            "/questionnaires/midas",
            json={"user_id": user_id, "date": TODAY.isoformat(), **MIDAS},
            headers=headers,
        )
        client.post(
            "/questionnaires/hit6",
            json={"user_id": user_id, "date": TODAY.isoformat(), **{k: "rarely" for k in HIT6}},
            headers=headers,
        )
        assert client.get(f"/predictions/{user_id}", headers=headers).status_code == 200

        before = _rows_per_table(database_url, user_id)
        assert before == {
            "users": 1,
            "daily_logs": 20,
            "predictions": 1,
            "medications": 4,
            "questionnaires": 2,
            "personal_states": 0,  # no personal model routed here (test_service_personal covers it)
        }
        exported = client.get(f"/users/export/{user_id}", headers=headers).json()
        assert exported["counts"] == before
        assert {k: len(v) for k, v in exported["tables"].items()} == before

        report = client.get(f"/reports/{user_id}?format=pdf", headers=headers)
        assert report.status_code == 200 and report.content.startswith(b"%PDF")

        erased = client.delete(f"/users/{user_id}", headers=headers)
        assert erased.status_code == 200 and erased.json()["deleted"] == before
        assert set(_rows_per_table(database_url, user_id).values()) == {0}
        assert client.get(f"/users/export/{user_id}", headers=headers).status_code == 404
        assert client.get(f"/medications/history/{user_id}", headers=headers).status_code == 404
        # the other user's rows are all still there
        assert _rows_per_table(database_url, other_id) == {
            "users": 1,
            "daily_logs": 3,
            "predictions": 0,
            "medications": 1,
            "questionnaires": 0,
            "personal_states": 0,
        }
    engine = make_engine(database_url)
    try:
        with engine.connect() as connection:  # the database itself agrees (no ORM in between)
            assert connection.execute(text("SELECT count(*) FROM medications")).scalar_one() == 1
    finally:
        engine.dispose()
