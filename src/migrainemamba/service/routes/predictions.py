"""Forecasts: today's (computed once, stored, recomputed when its inputs change), history, accuracy."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Query, Response

from migrainemamba.service import crud, personal_state
from migrainemamba.service.db import SessionDep, begin_writer
from migrainemamba.service.deps import ForecasterDep, OwnedUser, SettingsDep, TodayDep, authorize
from migrainemamba.service.forecasting import logs_frame, users_frame
from migrainemamba.service.insights import forecast_recommendations, track_record_of
from migrainemamba.service.models_db import Prediction
from migrainemamba.service.schemas import (
    AccuracyOut,
    IsoDate,
    ModelAccuracy,
    PredictionHistory,
    PredictionOut,
)

router = APIRouter(prefix="/predictions", tags=["predictions"])


@router.get("/history/{user_id}", response_model=PredictionHistory)
def history(
    user: OwnedUser,
    session: SessionDep,
    start: Annotated[IsoDate | None, Query(description="first day (ISO date), inclusive")] = None,
    end: Annotated[IsoDate | None, Query(description="last day (ISO date), inclusive")] = None,
    limit: int = Query(90, ge=1, le=1000),
) -> PredictionHistory:
    """Stored forecasts, newest first, with their outcomes once reported."""
    rows = crud.list_predictions(session, user.user_id, start, end, limit)
    return PredictionHistory(
        user_id=user.user_id,
        count=len(rows),
        predictions=[PredictionOut.model_validate(p) for p in rows],
    )


@router.get("/accuracy/{user_id}", response_model=AccuracyOut)
def accuracy(
    user: OwnedUser, session: SessionDep, settings: SettingsDep, today: TodayDep
) -> AccuracyOut:
    """Your forecasts' track record on the days whose onset is known (``insights.track_record``):
    Brier score and skill against your own onset rate, calibration by risk band, hits and misses
    at the risk thresholds, the trend over weeks, and a plain statement when too few days."""
    rows = crud.list_predictions(session, user.user_id)
    record = track_record_of(rows, settings, today)
    by_model: dict[tuple[str, str], list[Prediction]] = {}
    for p in rows:
        if p.actual_onset is not None:
            by_model.setdefault((p.model_name, p.model_version), []).append(p)
    per_model = {k: track_record_of(v, settings, today) for k, v in sorted(by_model.items())}
    return AccuracyOut(
        user_id=user.user_id,
        n_predictions=len(rows),
        decision_threshold=settings.moderate_risk_threshold,
        by_model=[
            ModelAccuracy(
                model_name=name,
                model_version=version,
                n_scored=r["n_scored"],
                n_correct=r["n_correct"],
                accuracy=r["accuracy"],
            )
            for (name, version), r in per_model.items()
        ],
        **record,
    )


@router.get(
    "/{user_id}",
    response_model=PredictionOut,
    responses={
        200: {
            "headers": {
                "X-Forecast": {
                    "description": "stored: returned unchanged; new: computed now",
                    "schema": {"type": "string"},
                }
            }
        }
    },
)
def today_forecast(
    user: OwnedUser,
    response: Response,
    session: SessionDep,
    forecaster: ForecasterDep,
    settings: SettingsDep,
    today: TodayDep,
) -> PredictionOut:
    """Today's forecast from the model routed for the user's phase, stored once per day.

    A second request the same day returns the stored forecast (``X-Forecast: stored``)
    unless something it was computed from changed since: today's morning fields, an
    earlier diary day, the profile, or the model serving the phase. Then it is
    recomputed and replaces the stored one (``X-Forecast: new``).
    """
    version = crud.forecast_inputs_version(session, user, today, forecaster)
    stored, usual = crud.get_prediction_and_usual(session, user.user_id, today)
    if stored is not None and stored.inputs_fingerprint == version:
        response.headers["X-Forecast"] = "stored"
        return _with_usual_day(session, stored, usual)
    # compute and store: one writer transaction, the user locked, the check taken again under it
    begin_writer(session)
    user = authorize(session, user.user_id, user.user_id)
    version = crud.forecast_inputs_version(session, user, today, forecaster)
    stored = crud.get_prediction(session, user.user_id, today)
    if stored is not None and stored.inputs_fingerprint == version:  # a concurrent request stored it
        response.headers["X-Forecast"] = "stored"
        return _with_usual_day(session, stored)
    users = users_frame(user)
    logs = logs_frame(crud.all_logs(session, user.user_id, end=today))
    # the personal family forecasts from the user's stored state (personal_state)
    predict = personal_state.StatefulPredict(session, user.user_id)
    forecast = forecaster.forecast(users, logs, today, inputs_fingerprint=version, predict=predict)
    recent = logs.filter(logs["date"] > today - timedelta(days=14)).height
    recommendations = forecast_recommendations(
        forecast, forecaster.clinical_prior(), bool(user.has_menstrual_cycle), recent  # type: ignore[attr-defined]
    )
    row = crud.save_prediction(session, forecast, recommendations)
    crud.score_predictions(session, user, [today], settings, logs=logs)
    crud.refresh_progress(session, user, forecaster)
    out = _with_usual_day(session, row)
    session.commit()
    response.headers["X-Forecast"] = "new"
    return out


def _with_usual_day(session: SessionDep, row: Prediction, usual: float | None = None) -> PredictionOut:
    """The forecast with its usual-day comparison (``usual`` when already read, else read now)."""
    out = PredictionOut.model_validate(row)
    if usual is None:
        usual = crud.usual_probability(session, row.user_id, row.date)
    return out.model_copy(update=crud.relative_to_usual(row.probability, usual))
