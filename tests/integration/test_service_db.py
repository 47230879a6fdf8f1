"""The service's data layer on SQLite (a tmp file) and on PostgreSQL (a fresh database per test).

PostgreSQL: ``MIGRAINEMAMBA_TEST_PG_URL`` (default ``postgresql://postgres@127.0.0.1:5432/test``)
is the admin connection used to create and drop ``mm_test_<random>`` databases;
the PostgreSQL cases are skipped when it is unreachable.
"""

from __future__ import annotations

import os
import uuid
from datetime import date, timedelta

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, inspect, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError, OperationalError

from migrainemamba.service import crud
from migrainemamba.service.db import (
    database_status,
    head_revision,
    make_engine,
    make_sessionmaker,
    migrate,
)
from migrainemamba.service.forecasting import Forecast, Forecaster
from migrainemamba.service.models import Base
from migrainemamba.service.models_db import DailyLog, Prediction, User
from migrainemamba.service.settings import normalize_database_url
from tests.unit.test_service_support import (
    OPERATOR,
    TODAY,
    full_day,
    log_days,
    make_client,
    make_settings,
    onboard,
)

pytestmark = pytest.mark.integration

PG_ADMIN_URL = normalize_database_url(
    os.environ.get("MIGRAINEMAMBA_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
)

USER = {
    "gender": "F",
    "age": 30,
    "height_cm": 165.0,
    "weight_kg": 60.0,
    "location_city": "Bergen",
    "attacks_per_month": 4.0,
    "has_menstrual_cycle": True,
    "cycle_start_day": date(2024, 2, 20),
    "cycle_length_days": 30,
}


def _pg_admin():
    engine = create_engine(
        PG_ADMIN_URL, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 3}
    )
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except OperationalError as exc:
        engine.dispose()
        pytest.skip(
            f"PostgreSQL not reachable at {make_url(PG_ADMIN_URL).render_as_string()}: {exc.orig}"
        )
    return engine


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path):
    """A fresh, empty database of each backend; dropped afterwards."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'service.db'}"
        return
    admin = _pg_admin()
    name = f"mm_test_{uuid.uuid4().hex[:12]}"
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture
def engine(database_url):
    engine = make_engine(database_url)
    migrate(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def forecaster(tmp_path):
    return Forecaster.from_settings(make_settings(tmp_path))


# -------------------------------------------------------------- migrations


def test_migrations_create_exactly_the_models_tables(database_url):
    engine = make_engine(database_url)
    try:
        assert database_status(engine)["ok"] is False  # empty database: not at head
        migrate(engine)
        status = database_status(engine)
        assert status["ok"] is True and status["revision"] == head_revision()
        assert {"users", "daily_logs", "predictions", "alembic_version"} <= set(
            inspect(engine).get_table_names()
        )
        with engine.connect() as connection:
            diff = compare_metadata(
                MigrationContext.configure(connection, opts={"compare_type": True}), Base.metadata
            )
        assert diff == [], f"models_db and the migrations disagree: {diff}; add a migration"
        migrate(engine)  # idempotent
        from alembic import command

        from migrainemamba.service.db import alembic_config

        with engine.begin() as connection:
            cfg = alembic_config()
            cfg.attributes["connection"] = connection
            command.downgrade(cfg, "base")
        assert not {"users", "daily_logs", "predictions"} & set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


# -------------------------------------------------------------- constraints


def _user_id(engine, forecaster) -> str:
    with make_sessionmaker(engine)() as session:
        user = crud.create_user(session, USER, forecaster)
        session.commit()
        return user.user_id


@pytest.mark.parametrize(
    "values",
    [
        {"stress_level": 11},
        {"sleep_hours": -0.5},
        {"barometric_pressure_hpa": 2000.0},
        {"migraine_severity": 11},
    ],
    ids=["stress", "sleep", "pressure", "severity"],
)
def test_contract_ranges_are_database_constraints(engine, forecaster, values):
    user_id = _user_id(engine, forecaster)
    with make_sessionmaker(engine)() as session:
        session.add(DailyLog(user_id=user_id, date=TODAY, **values))
        with pytest.raises(IntegrityError):
            session.commit()


def test_unique_user_date_foreign_key_and_allowed_gender(engine, forecaster):
    user_id = _user_id(engine, forecaster)
    sessions = make_sessionmaker(engine)
    with sessions() as session:
        session.add_all(
            [DailyLog(user_id=user_id, date=TODAY), DailyLog(user_id=user_id, date=TODAY)]
        )
        with pytest.raises(IntegrityError):
            session.commit()
    with sessions() as session:
        session.add(DailyLog(user_id="no-such-user", date=TODAY))
        with pytest.raises(IntegrityError):
            session.commit()
    with sessions() as session:
        session.add(
            User(
                user_id="x",
                **{**USER, "gender": "Q"},
                bmi=22.0,
                days_logged=0,
                current_phase="1-14",
            )
        )
        with pytest.raises(IntegrityError):
            session.commit()


# ------------------------------------------------------------------ crud


def test_users_logs_predictions_roundtrip(engine, forecaster, tmp_path):
    settings = make_settings(tmp_path)
    sessions = make_sessionmaker(engine)
    with sessions() as session:
        user = crud.create_user(session, USER, forecaster)
        assert user.bmi == pytest.approx(60.0 / 1.65**2, abs=0.01)
        crud.update_user(session, user, {"weight_kg": 66.0})
        assert user.bmi == pytest.approx(66.0 / 1.65**2, abs=0.01)
        yesterday = TODAY - timedelta(days=1)
        row, created = crud.upsert_log(
            session,
            user.user_id,
            yesterday,
            {"sleep_hours": 6.0, "symptoms": ["aura"], "migraine_occurred": False},
        )
        assert created
        row, created = crud.upsert_log(session, user.user_id, yesterday, {"stress_level": 7})
        assert not created and (row.sleep_hours, row.stress_level) == (6.0, 7)
        crud.upsert_log(session, user.user_id, TODAY, {"sleep_hours": 7.0})
        crud.refresh_progress(session, user, forecaster)
        session.commit()
        user_id = user.user_id

    with sessions() as session:
        user = crud.get_user(session, user_id)
        assert (user.days_logged, user.current_phase, user.model_version) == (2, "1-14", "builtin")
        assert user.cycle_start_day == date(2024, 2, 20) and user.created_at.tzinfo is not None
        logs = crud.all_logs(session, user_id)
        assert [r.date for r in logs] == [TODAY - timedelta(days=1), TODAY]
        assert logs[0].symptoms == ["aura"] and logs[1].symptoms is None
        forecast = Forecast(
            user_id,
            TODAY,
            "1-14",
            0.3,
            "moderate",
            0.5,
            "base_rate",
            "builtin",
            [{"group": "sleep", "name": "Sleep", "log_odds": 0.4, "odds_multiplier": 1.49}],
            "f1",
        )
        crud.save_prediction(session, forecast, [{"group": "sleep", "priority": 1}])
        crud.upsert_log(session, user_id, TODAY, {"migraine_occurred": True})
        (scored,) = crud.score_predictions(session, user, [TODAY], settings)
        assert (scored.actual_outcome, scored.actual_onset, scored.was_correct) == (
            True,
            True,
            True,
        )
        forecast.probability, forecast.inputs_fingerprint = 0.05, "f2"
        replaced = crud.save_prediction(session, forecast, [])
        assert replaced.id == scored.id and replaced.actual_outcome is True  # outcome columns kept
        session.commit()

    with sessions() as session:
        (stored,) = crud.list_predictions(session, user_id)
        assert stored.top_triggers[0]["group"] == "sleep" and stored.probability == 0.05
        session.delete(crud.get_user(session, user_id))
        session.commit()
        assert (
            session.scalars(select(DailyLog)).all() == []
            and session.scalars(select(Prediction)).all() == []
        )


def test_concurrent_insert_of_the_same_day_becomes_a_merge(engine, forecaster, monkeypatch):
    """The loser of an insert race (unique violation) retries as an update, inside a savepoint."""
    user_id = _user_id(engine, forecaster)
    sessions = make_sessionmaker(engine)
    with sessions() as first:
        crud.upsert_log(first, user_id, TODAY, {"sleep_hours": 5.0})
        first.commit()
    real_get_log = crud.get_log
    calls = []

    def stale_get_log(session, uid, day):
        calls.append(day)
        return (
            None if len(calls) == 1 else real_get_log(session, uid, day)
        )  # it had not seen the row yet

    monkeypatch.setattr(crud, "get_log", stale_get_log)
    with sessions() as second:
        row, created = crud.upsert_log(second, user_id, TODAY, {"stress_level": 6})
        second.commit()
        assert not created and (row.sleep_hours, row.stress_level) == (5.0, 6)
    with sessions() as check:
        assert len(crud.list_logs(check, user_id)) == 1


# ----------------------------------------------------------- the whole API


def test_api_flow_on_each_backend(database_url, tmp_path):
    settings = make_settings(tmp_path, database_url=database_url)
    with make_client(settings) as client:
        assert (
            client.get("/ready", headers=OPERATOR).json()["database"]["backend"]
            == make_url(database_url).get_backend_name()
        )
        user_id, headers = onboard(client)
        log_days(client, headers, user_id, 15, TODAY - timedelta(days=1))
        dup = client.post(
            "/logs/submit",
            json=full_day(user_id, TODAY - timedelta(days=1), stress_level=9),
            headers=headers,
        )
        assert dup.status_code == 200 and dup.json()["log"]["stress_level"] == 9
        profile = client.get(f"/users/profile/{user_id}", headers=headers).json()
        assert (profile["days_logged"], profile["current_phase"]) == (15, "15-30")
        prediction = client.get(f"/predictions/{user_id}", headers=headers)
        assert prediction.headers["X-Forecast"] == "new" and prediction.json()["phase"] == "15-30"
        assert (
            client.get(f"/predictions/{user_id}", headers=headers).headers["X-Forecast"] == "stored"
        )
        outcome = client.put(
            f"/logs/outcome/{user_id}/{TODAY}", json={"migraine_occurred": False}, headers=headers
        )
        assert outcome.json()["prediction"]["was_correct"] is True
        accuracy = client.get(f"/predictions/accuracy/{user_id}", headers=headers).json()
        assert (accuracy["n_scored"], accuracy["accuracy"]) == (1, 1.0)
        stats = client.get(f"/insights/weekly-stats/{user_id}", headers=headers).json()
        assert stats["this_week"]["days_logged"] == 7 and stats["this_week"]["forecasts"] == 1
        assert client.get(f"/insights/triggers/{user_id}", headers=headers).status_code == 200
        assert (
            client.get(f"/insights/recommendations/{user_id}", headers=headers).status_code == 200
        )
        history = client.get(f"/predictions/history/{user_id}", headers=headers).json()
        created = history["predictions"][0]["created_at"]
        assert created.endswith(("Z", "+00:00"))  # timezone-aware on both backends


def test_input_hygiene_and_one_transaction_per_request_on_each_backend(database_url, tmp_path):
    """NUL (PostgreSQL cannot store it), lone surrogates and non-finite numbers are 422 on both
    backends; a request refused half-way leaves nothing behind (SQLite: real SAVEPOINTs)."""
    settings = make_settings(tmp_path, database_url=database_url)
    with make_client(settings) as client:
        user_id, headers = onboard(client)
        json_headers = {**headers, "Content-Type": "application/json"}
        for text in ('"Oslo\\u0000"', '"\\ud800"'):
            response = client.put(
                f"/users/profile/{user_id}", content=f'{{"location_city":{text}}}', headers=json_headers
            )
            assert response.status_code == 422 and response.json()["detail"][0]["loc"] == ["body", "location_city"]
        response = client.get("/predictions/history/%00", headers=headers)
        assert response.status_code == 422 and response.json()["detail"][0]["loc"] == ["path", "user_id"]
        nan = f'{{"user_id":"{user_id}","date":"{TODAY}","sleep_hours":NaN}}'
        assert client.post("/logs/submit", content=nan, headers=json_headers).status_code == 422
        # 20 distinct days in a row, then the counter is exact and the phase agrees with it
        log_days(client, headers, user_id, 20, TODAY - timedelta(days=1))
        profile = client.get(f"/users/profile/{user_id}", headers=headers).json()
        assert (profile["days_logged"], profile["current_phase"]) == (20, "15-30")
    engine = make_engine(database_url)
    try:
        with make_sessionmaker(engine)() as session:
            # a released SAVEPOINT is part of the outer transaction: rolling that back undoes both
            # (pysqlite without SQLAlchemy's recipe commits at RELEASE: a request half-written)
            assert crud.get_user(session, user_id) is not None  # reads first, as a request does
            with session.begin_nested():
                session.add(DailyLog(user_id=user_id, date=TODAY + timedelta(days=1), stress_level=4))
            session.add(DailyLog(user_id=user_id, date=TODAY, stress_level=3))
            session.flush()
            session.rollback()
        with make_sessionmaker(engine)() as session:
            assert crud.get_log(session, user_id, TODAY) is None
            assert crud.get_log(session, user_id, TODAY + timedelta(days=1)) is None
            assert len(crud.list_logs(session, user_id)) == 20
    finally:
        engine.dispose()
