"""Insights: personal triggers, weekly statistics, recommendations (all computed from real data)."""

from __future__ import annotations

from datetime import timedelta

from fastapi import APIRouter

from migrainemamba.service import clinical_crud, crud, personal_map
from migrainemamba.service import insights as compute
from migrainemamba.service.db import SessionDep
from migrainemamba.service.deps import ForecasterDep, OwnedUser, SettingsDep, TodayDep
from migrainemamba.service.forecasting import logs_frame, users_frame
from migrainemamba.service.schemas import RecommendationsOut, WeeklyStatsOut
from migrainemamba.service.schemas_insights import PatternsOut, WhatIfSet
from migrainemamba.service.schemas_personal import PersonalTriggersOut
from migrainemamba.service.what_if import what_if

router = APIRouter(prefix="/insights", tags=["insights"])


@router.get("/triggers/{user_id}", response_model=PersonalTriggersOut)
def triggers(
    user: OwnedUser,
    session: SessionDep,
    forecaster: ForecasterDep,
    settings: SettingsDep,
    today: TodayDep,
) -> PersonalTriggersOut:
    """The model's explanations over the recent days, onset rates with/without each trigger in the
    diary, and ``personal_map``: from day 31 your own trigger map (class, odds ratio with interval,
    evidence, attacks still needed), before it the clinical prior, labelled as such."""
    logs = logs_frame(crud.all_logs(session, user.user_id))
    users = users_frame(user)
    result = compute.triggers(forecaster, users, logs, today, settings.insights_window_days)
    result["personal_map"] = personal_map.trigger_map(forecaster, users, logs, today)
    return PersonalTriggersOut.model_validate(result)


@router.get("/weekly-stats/{user_id}", response_model=WeeklyStatsOut)
def weekly_stats(
    user: OwnedUser, session: SessionDep, settings: SettingsDep, today: TodayDep
) -> WeeklyStatsOut:
    """The last 7 days (ending today) at a glance: days logged, attacks, migraine and acute
    medication days, sleep, stress, the forecasts' accuracy; against the 7 days before and
    against your usual week (the mean of the 4 weeks before)."""
    start = today - timedelta(days=7 * (compute.USUAL_WEEKS + 1))
    logs = logs_frame(crud.list_logs(session, user.user_id, start=start, end=today))
    predictions = crud.list_predictions(session, user.user_id, start=start, end=today)
    medications = clinical_crud.medications_frame(
        clinical_crud.list_medications(session, user.user_id, start=start, end=today)
    )
    return WeeklyStatsOut.model_validate(
        compute.weekly_stats(
            user.user_id, logs, predictions, today, medications, compute.thresholds(settings)
        )
    )


@router.get("/recommendations/{user_id}", response_model=RecommendationsOut)
def recommendations(
    user: OwnedUser,
    session: SessionDep,
    forecaster: ForecasterDep,
    settings: SettingsDep,
    today: TodayDep,
) -> RecommendationsOut:
    """At most three recommendations, one per top trigger, with the user's own numbers as evidence
    (a user without a diary day before today: the labelled clinical prior, as in the forecast).

    With a diary: first the what-ifs (``service.what_if``): the modifiable habits that raise
    tomorrow's forecast, each with the model's counterfactual forecast ("7+ hours of good sleep
    tonight: tomorrow's risk from 18% to 11%"), then the habits the model and diary rank."""
    logs = logs_frame(crud.all_logs(session, user.user_id))
    insight = compute.triggers(
        forecaster, users_frame(user), logs, today, settings.insights_window_days
    )
    recent = logs.filter(logs["date"] > today - timedelta(days=14)).height
    scenarios = (
        what_if(forecaster, users_frame(user), logs.filter(logs["date"] <= today), today)
        if insight["history_days"] > 0
        else None
    )
    return RecommendationsOut(
        user_id=user.user_id,
        based_on=insight["top_triggers"],
        recommendations=compute.recommendations(
            insight, recent, forecaster.clinical_prior(), scenarios["items"] if scenarios else []
        ),
        what_if=WhatIfSet.model_validate(scenarios) if scenarios else None,
    )


@router.get("/patterns/{user_id}", response_model=PatternsOut)
def patterns(user: OwnedUser, session: SessionDep, today: TodayDep) -> PatternsOut:
    """Patterns in your diary (weekday, cycle phase, earlier exposures, pairs, streaks) that hold
    after allowing for the number tried (Benjamini-Hochberg, ``insights.patterns``); a plain
    statement when there is too little data."""
    logs = logs_frame(crud.all_logs(session, user.user_id, end=today))
    return PatternsOut.model_validate(compute.patterns(users_frame(user), logs, today))
