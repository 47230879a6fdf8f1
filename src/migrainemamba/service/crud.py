"""The data layer: every read and write of the service's tables. Routes stay thin over it.

Functions take a ``Session`` and commit nothing themselves except where noted;
the route (one request = one unit of work) commits.

Duplicate diary dates: :func:`upsert_log` *merges*. A second submit for a date
updates the fields it sends and keeps the others, so a day can be written in
stages (morning fields, day fields in the evening, the outcome later). Writers
of one user are serialised (``db`` module docstring: the user's row is locked,
or SQLite's single writer), so a merge reads the latest day; the unique
``(user_id, date)`` constraint stays as a guard, its loser retrying as an update.

The merge rule of the outcome (``merge_outcome``), checked on the *merged* row:

- ``migraine_occurred: false`` clears a stored severity and duration (they
  belonged to the attack that is now reported as not having happened);
- a severity or duration above 0 needs the merged day to say
  ``migraine_occurred: true``: sending one for a day stored as (or left)
  without an attack is a 409 naming the field (``DayInconsistent``), nothing
  is guessed and nothing is written.

``days_logged`` and ``current_phase`` are recounted (``refresh_progress``) in the
transaction of every diary write, under the same lock, so they always equal the
diary.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from datetime import date, timedelta
from typing import Any

import polars as pl
from sqlalchemy import Boolean, Integer, case, cast, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from migrainemamba.data.schema import MORNING_FIELDS, USER_COLUMNS
from migrainemamba.features import phase_of
from migrainemamba.service.forecasting import (
    Forecast,
    Forecaster,
    fingerprint,
    logs_frame,
    onset_labels,
    users_frame,
)
from migrainemamba.service.models_db import DailyLog, Prediction, User, compute_bmi
from migrainemamba.service.settings import Settings

# ------------------------------------------------------------------ users


def new_user_id() -> str:
    return uuid.uuid4().hex


def get_user(session: Session, user_id: str, lock: bool = False) -> User | None:
    """The user; ``lock``: and hold their row until the transaction ends (``SELECT ... FOR UPDATE``;
    SQLite ignores it, its writer transaction already excludes other writers)."""
    return session.get(User, user_id, with_for_update=lock or None)


def create_user(session: Session, values: Mapping[str, Any], forecaster: Forecaster) -> User:
    user = User(user_id=new_user_id(), days_logged=0, **values)
    user.bmi = compute_bmi(user.height_cm, user.weight_kg)  # type: ignore[attr-defined]
    _set_progress(user, 0, forecaster)
    session.add(user)
    session.flush()
    return user


def update_user(session: Session, user: User, changes: Mapping[str, Any]) -> User:
    for name, value in changes.items():
        setattr(user, name, value)
    user.bmi = compute_bmi(user.height_cm, user.weight_kg)  # type: ignore[attr-defined]
    session.flush()
    return user


def _set_progress(user: User, days_logged: int, forecaster: Forecaster) -> None:
    user.days_logged = days_logged
    user.current_phase = phase_of(days_logged + 1)
    route = forecaster.route(user.current_phase)
    user.model_name, user.model_version = route.model_name, route.model_version


def refresh_progress(session: Session, user: User, forecaster: Forecaster) -> User:
    """Recount the diary days; phase and serving model follow (phase of the next unlogged day)."""
    count = session.scalar(
        select(func.count()).select_from(DailyLog).where(DailyLog.user_id == user.user_id)
    )
    _set_progress(user, int(count or 0), forecaster)
    session.flush()
    return user


# ------------------------------------------------------------------- logs


def get_log(session: Session, user_id: str, day: date) -> DailyLog | None:
    return session.scalar(select(DailyLog).where(DailyLog.user_id == user_id, DailyLog.date == day))


class DayInconsistent(ValueError):
    """The merged diary day would contradict itself; ``field`` is the one to fix."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


_ATTACK_DETAILS = ("migraine_severity", "migraine_duration_hours")


def merge_outcome(stored: Mapping[str, Any], values: Mapping[str, Any]) -> dict[str, Any]:
    """``values`` with the outcome merge rule applied against the ``stored`` day (module docstring)."""
    merged_values = dict(values)
    if merged_values.get("migraine_occurred") is False:
        for name in _ATTACK_DETAILS:
            merged_values.setdefault(name, None)
    merged = {**stored, **merged_values}
    if merged.get("migraine_occurred") is not True:
        for name in _ATTACK_DETAILS:
            if merged.get(name):
                state = {None: "has no attack reported", False: "says no migraine occurred"}[
                    merged.get("migraine_occurred")
                ]
                source = "sent" if name in merged_values else "stored"
                raise DayInconsistent(
                    name,
                    f"{name} ({source}: {merged[name]}) needs migraine_occurred true, but the day "
                    f"{state}: send migraine_occurred true with it, or leave {name} out",
                )
    return merged_values


def upsert_log(
    session: Session, user_id: str, day: date, values: Mapping[str, Any]
) -> tuple[DailyLog, bool]:
    """Merge ``values`` into the diary day (created if absent). Returns (row, created).

    Raises :class:`DayInconsistent` (before writing anything) when the merged day contradicts itself.
    """
    row = get_log(session, user_id, day)
    if row is None:
        try:
            with session.begin_nested():
                row = DailyLog(user_id=user_id, date=day, **merge_outcome({}, values))
                session.add(row)
            return row, True
        except IntegrityError:  # a concurrent insert of the same day (a writer without the lock)
            row = get_log(session, user_id, day)
            if row is None:
                raise
    values = merge_outcome(_outcome_of(row), values)
    for name, value in values.items():
        setattr(row, name, value)
    session.flush()
    return row, False


def _outcome_of(row: DailyLog) -> dict[str, Any]:
    return {name: getattr(row, name) for name in ("migraine_occurred", *_ATTACK_DETAILS)}


def list_logs(
    session: Session,
    user_id: str,
    start: date | None = None,
    end: date | None = None,
    limit: int | None = None,
) -> Sequence[DailyLog]:
    """Diary days, newest first."""
    query = select(DailyLog).where(DailyLog.user_id == user_id)
    if start is not None:
        query = query.where(DailyLog.date >= start)
    if end is not None:
        query = query.where(DailyLog.date <= end)
    query = query.order_by(DailyLog.date.desc())
    if limit is not None:
        query = query.limit(limit)
    return session.scalars(query).all()


def all_logs(session: Session, user_id: str, end: date | None = None) -> Sequence[DailyLog]:
    """The diary, oldest first (up to ``end`` inclusive)."""
    query = select(DailyLog).where(DailyLog.user_id == user_id)
    if end is not None:
        query = query.where(DailyLog.date <= end)
    return session.scalars(query.order_by(DailyLog.date)).all()


# ------------------------------------------------------------ predictions


def _comparable(column: Any) -> Any:
    """A column MAX() works on in every backend (PostgreSQL has no max(boolean))."""
    return cast(column, Integer) if isinstance(column.type, Boolean) else column


def forecast_inputs_version(session: Session, user: User, day: date, forecaster: Forecaster) -> str:
    """A cheap fingerprint of everything the forecast of ``day`` reads (no diary is loaded).

    One aggregate statement: count and latest ``updated_at`` of the diary days before ``day``
    (any edit, insert or removal of an earlier day changes them), and ``day``'s own morning fields
    (its day fields and outcome are not inputs). With the user's contract values and the
    model routed for the phase, that is what the forecast sees; it changes when they change.
    """
    before, on_day = DailyLog.date < day, DailyLog.date == day
    n_before, last_update, *morning = session.execute(  # one statement
        select(
            func.count(case((before, 1))),
            func.max(case((before, DailyLog.updated_at))),
            *(func.max(case((on_day, _comparable(getattr(DailyLog, f))))) for f in MORNING_FIELDS),
        ).where(DailyLog.user_id == user.user_id, DailyLog.date <= day)
    ).one()
    morning_values = None if all(v is None for v in morning) else [str(v) for v in morning]
    route = forecaster.route(phase_of(int(n_before) + 1))
    profile = [getattr(user, c.name) for c in USER_COLUMNS]
    return fingerprint(
        day, profile, int(n_before), last_update, morning_values, route.model_name, route.model_version
    )


def get_prediction(session: Session, user_id: str, day: date) -> Prediction | None:
    return session.scalar(
        select(Prediction).where(Prediction.user_id == user_id, Prediction.date == day)
    )


def save_prediction(
    session: Session, forecast: Forecast, recommendations: list[dict[str, Any]]
) -> Prediction:
    """Insert or replace the stored forecast of (user, date); the outcome columns are kept."""
    values = {
        "phase": forecast.phase,
        "probability": forecast.probability,
        "risk_level": forecast.risk_level,
        "confidence": forecast.confidence,
        "model_name": forecast.model_name,
        "model_version": forecast.model_version,
        "top_triggers": forecast.top_triggers,
        "recommendations": recommendations,
        "inputs_fingerprint": forecast.inputs_fingerprint,
    }
    return upsert(session, Prediction, {"user_id": forecast.user_id, "date": forecast.date}, values)


def upsert(session: Session, model: type[Any], key: Mapping[str, Any], values: Mapping[str, Any]) -> Any:
    """Insert the ``model`` row with ``key`` (its unique columns) or update it with ``values``.

    The insert runs under a savepoint: a concurrent writer's first insert of the same key
    (IntegrityError) rolls back only the savepoint, and its row is updated instead.
    """
    query = select(model).filter_by(**key)
    row = session.scalar(query)
    if row is None:
        try:
            with session.begin_nested():
                row = model(**key, **values)
                session.add(row)
            return row
        except IntegrityError:
            row = session.scalar(query)
            if row is None:
                raise
    for name, value in values.items():
        setattr(row, name, value)
    session.flush()
    return row


USUAL_DAY_WINDOW = 30
# relative_level bounds of probability / usual_probability
LOWER_THAN_USUAL, HIGHER_THAN_USUAL = 0.8, 1.25


def _usual_probability_query(user_id: str, day: date) -> Any:
    return select(func.avg(Prediction.probability)).where(
        Prediction.user_id == user_id,
        Prediction.date < day,
        Prediction.date >= day - timedelta(days=USUAL_DAY_WINDOW),
    )


def usual_probability(session: Session, user_id: str, day: date) -> float | None:
    """The person's usual day: the mean of their stored forecasts of the 30 days before ``day``."""
    value = session.scalar(_usual_probability_query(user_id, day))
    return None if value is None else float(value)


def get_prediction_and_usual(
    session: Session, user_id: str, day: date
) -> tuple[Prediction | None, float | None]:
    """The stored forecast of ``day`` and the person's usual day, in one statement."""
    usual = _usual_probability_query(user_id, day).scalar_subquery()
    found = session.execute(
        select(Prediction, usual).where(Prediction.user_id == user_id, Prediction.date == day)
    ).first()
    if found is None:
        return None, None
    return found[0], None if found[1] is None else float(found[1])


def relative_to_usual(probability: float, usual: float | None) -> dict[str, Any]:
    """``usual_probability``, ``relative_risk`` and ``relative_level`` of a forecast."""
    if usual is None or usual <= 0:
        return {"usual_probability": None, "relative_risk": None, "relative_level": None}
    ratio = probability / usual
    level = "lower than usual" if ratio < LOWER_THAN_USUAL else "higher than usual" if ratio > HIGHER_THAN_USUAL else "usual"
    return {"usual_probability": round(usual, 6), "relative_risk": round(ratio, 3), "relative_level": level}


def list_predictions(
    session: Session,
    user_id: str,
    start: date | None = None,
    end: date | None = None,
    limit: int | None = None,
) -> Sequence[Prediction]:
    """Stored forecasts, newest first."""
    query = select(Prediction).where(Prediction.user_id == user_id)
    if start is not None:
        query = query.where(Prediction.date >= start)
    if end is not None:
        query = query.where(Prediction.date <= end)
    query = query.order_by(Prediction.date.desc())
    if limit is not None:
        query = query.limit(limit)
    return session.scalars(query).all()


def score_predictions(
    session: Session,
    user: User,
    days: Sequence[date],
    settings: Settings,
    logs: pl.DataFrame | None = None,
) -> list[Prediction]:
    """Set actual_outcome, actual_onset and was_correct of the stored forecasts of ``days``.

    The onset label follows the training rule (``features.label_columns``): an
    attack begins on D when D is an attack day and D-1 was reported attack-free.
    A forecast "says attack" at probability >= MODERATE_RISK_THRESHOLD; it is
    correct when that agrees with the onset. Unscorable days get was_correct
    null. An outcome of D can change the scoring of D+1 too, so callers pass both.
    """
    rows = [p for d in days if (p := get_prediction(session, user.user_id, d)) is not None]
    if not rows:
        return []
    if logs is None:  # the caller's frame of the diary, when it has one
        logs = logs_frame(all_logs(session, user.user_id))
    labels = onset_labels(users_frame(user), logs, [p.date for p in rows])
    for p in rows:
        occurred, onset = labels[p.date]
        p.actual_outcome = occurred
        p.actual_onset = onset
        p.was_correct = (
            None if onset is None else settings.predicts_attack(p.probability) == bool(onset)
        )
    session.flush()
    return rows


def outcome_days(day: date) -> list[date]:
    """The forecasts whose scoring an outcome of ``day`` can change."""
    return [day, day + timedelta(days=1)]
