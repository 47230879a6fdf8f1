"""Diary: submit a day (merging repeated dates), history, and the outcome of a day."""

from __future__ import annotations

from datetime import date
from typing import Annotated

from fastapi import APIRouter, Query, Response, status
from fastapi import Path as FastAPIPath
from pydantic import BaseModel
from sqlalchemy.orm import Session

from migrainemamba.service import crud, personal_state
from migrainemamba.service.db import SessionDep
from migrainemamba.service.deps import (
    ForecasterDep,
    OwnedUser,
    RuntimeDep,
    SettingsDep,
    TodayDep,
    TokenSubject,
    authorize,
    reject_future,
)
from migrainemamba.service.forecasting import Forecaster, logs_frame, users_frame
from migrainemamba.service.models_db import Prediction, User
from migrainemamba.service.schemas import (
    DATE_LIMITS,
    DailyLogOut,
    DailyLogSubmit,
    FieldErrors,
    IsoDate,
    LogHistory,
    LogSubmitResponse,
    OutcomeUpdate,
    PredictionOut,
)
from migrainemamba.service.settings import Settings

router = APIRouter(prefix="/logs", tags=["logs"])


@router.post(
    "/submit",
    response_model=LogSubmitResponse,
    status_code=status.HTTP_201_CREATED,
    responses={
        200: {"description": "the date was already logged: the fields sent were merged into it"},
        409: {
            "description": "the merged day would contradict itself (e.g. a severity for a day without an attack); "
            "detail[].loc names the field",
            "model": FieldErrors,
        },
    },
)
def submit(
    body: DailyLogSubmit,  # type: ignore[valid-type]
    response: Response,
    subject: TokenSubject,
    session: SessionDep,
    runtime: RuntimeDep,
    forecaster: ForecasterDep,
    settings: SettingsDep,
    today: TodayDep,
) -> LogSubmitResponse:
    """Log a diary day for ``user_id`` (the token's user).

    A second submit for the same date **merges**: the fields it sends replace the
    stored ones, fields it leaves out are kept (201 for a new day, 200 for a merge).
    The merged day must be consistent: ``migraine_occurred: false`` clears a stored
    severity and duration; a severity or duration above 0 needs the merged day to say
    ``migraine_occurred: true`` (else 409 naming the field, nothing written).
    For today's date without a pressure, the weather provider (if configured) fills
    ``barometric_pressure_hpa`` from the user's city.
    """
    user = authorize(session, subject, body.user_id)
    reject_future(body.date, today, ("body", "date"))
    values = body.model_dump(exclude_unset=True, exclude={"user_id", "date"})
    existing = crud.get_log(session, user.user_id, body.date)
    weather = runtime.weather
    if (
        weather is not None
        and body.date == today
        and values.get("barometric_pressure_hpa") is None
        and (existing is None or existing.barometric_pressure_hpa is None)  # type: ignore[attr-defined]
        and user.location_city  # type: ignore[attr-defined]
    ):
        pressure = weather.pressure_hpa(user.location_city)  # type: ignore[attr-defined]
        if pressure is not None:
            values["barometric_pressure_hpa"] = pressure
    row, created = crud.upsert_log(session, user.user_id, body.date, values)
    crud.refresh_progress(session, user, forecaster)
    if "migraine_occurred" in values:
        _absorb_outcome(session, user, forecaster, settings, body.date)
    session.commit()
    response.status_code = status.HTTP_201_CREATED if created else status.HTTP_200_OK
    return LogSubmitResponse(created=created, log=DailyLogOut.model_validate(row))


@router.get("/history/{user_id}", response_model=LogHistory)
def history(
    user: OwnedUser,
    session: SessionDep,
    start: Annotated[IsoDate | None, Query(description="first day (ISO date), inclusive")] = None,
    end: Annotated[IsoDate | None, Query(description="last day (ISO date), inclusive")] = None,
    limit: int = Query(90, ge=1, le=1000),
) -> LogHistory:
    """Diary days, newest first (``start``/``end`` inclusive)."""
    rows = crud.list_logs(session, user.user_id, start, end, limit)
    return LogHistory(
        user_id=user.user_id, count=len(rows), logs=[DailyLogOut.model_validate(r) for r in rows]
    )


def _absorb_outcome(
    session: Session, user: User, forecaster: Forecaster, settings: Settings, day: date
) -> list[Prediction]:
    """An outcome of ``day`` was written: rescore the forecasts it decides and move the personal
    model's state, in the outcome's writer transaction. A state update failing on bad data never
    fails the outcome's write: the state is dropped and rebuilt later (``personal_state.absorb_outcome``)."""
    logs = logs_frame(crud.all_logs(session, user.user_id))
    scored = crud.score_predictions(session, user, crud.outcome_days(day), settings, logs=logs)
    personal_state.absorb_outcome(session, user.user_id, forecaster, users_frame(user), logs)
    return scored


class OutcomeResponse(BaseModel):
    log: DailyLogOut  # type: ignore[valid-type]
    prediction: PredictionOut | None = None


@router.put("/outcome/{user_id}/{date}", response_model=OutcomeResponse)
def outcome(
    date: Annotated[IsoDate, FastAPIPath(description=DATE_LIMITS)],
    body: OutcomeUpdate,  # type: ignore[valid-type]
    user: OwnedUser,
    session: SessionDep,
    forecaster: ForecasterDep,
    settings: SettingsDep,
    today: TodayDep,
) -> OutcomeResponse:
    """Report whether a migraine occurred on ``date`` (creating the diary day if needed).

    PUT replaces the day's outcome: severity and duration left out become null.

    The stored forecasts of ``date`` and the day after are rescored: ``actual_outcome``,
    ``actual_onset`` and ``was_correct`` (see ``/predictions/accuracy``).
    """
    reject_future(date, today, ("path", "date"))
    values = body.model_dump()
    row, _ = crud.upsert_log(session, user.user_id, date, values)
    crud.refresh_progress(session, user, forecaster)
    scored = _absorb_outcome(session, user, forecaster, settings, date)
    session.commit()
    same_day = next((p for p in scored if p.date == date), None)
    return OutcomeResponse(
        log=DailyLogOut.model_validate(row),
        prediction=None if same_day is None else PredictionOut.model_validate(same_day),
    )
