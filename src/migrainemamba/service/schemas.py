"""Request and response models. Contract fields are generated from ``data.schema``.

Requests are strict and closed: an unknown field, a value of the wrong JSON
type (``"5"`` for an integer, ``1`` for a boolean) or a value outside the
contract range is a 422 whose ``detail[].loc`` names the field. Dates are ISO
strings (``"2024-05-01"``; the only non-strict type). Dates in the future are rejected by the routes (they
need "today"), with the same 422 shape.

Field modes, per contract column:

- ``required`` (onboarding): not-null columns are required, nullable ones default to null.
- ``partial`` (profile update, diary submit): every column may be left out (unchanged /
  not yet known); an explicit ``null`` is accepted only where the contract allows null.
- ``response``: every column may be null (a diary row is written in stages).
"""

from __future__ import annotations

import re
from datetime import date, datetime
from typing import Annotated, Any, Literal

import polars as pl
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    create_model,
    field_validator,
)
from pydantic_core import PydanticCustomError

from migrainemamba.data.schema import (
    DAILY_LOG_COLUMNS,
    OUTCOME_FIELDS,
    SYMPTOMS,
    USER_COLUMNS,
    Column,
)
from migrainemamba.service.models_db import ALLOWED_VALUES, STRING_LENGTHS
from migrainemamba.service.schemas_insights import TrackRecord, WhatIfSet

Mode = Literal["required", "partial", "response"]

_PY_TYPES: dict[type[pl.DataType], type] = {
    pl.String: str,
    pl.Int64: int,
    pl.Float64: float,
    pl.Boolean: bool,
    pl.Date: date,
}


_ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def _iso_date_only(value: Any) -> Any:
    """Dates are ISO strings: pydantic alone would read ``0`` or ``"0"`` as 1970-01-01 (a timestamp)."""
    if isinstance(value, date):
        return value
    if not isinstance(value, str) or not _ISO_DATE.match(value):
        raise PydanticCustomError("date_format", "Input should be an ISO date YYYY-MM-DD")
    return value


def integral_float(value: Any) -> Any:
    """JSON Schema counts 32.0 as an integer: accept it as 32 (strings and booleans stay errors)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


# documents in the schema what service.hygiene enforces on every string (tab, LF, CR allowed)
NO_CONTROL_CHARACTERS = r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f]*$"
USER_ID_PATTERN = r"^[A-Za-z0-9_-]+$"

DATE_LIMITS = "ISO date YYYY-MM-DD; not after today (TIMEZONE) and at most 730 days before it"
# the one date type of requests (body, path, query): ISO strings only
IsoDate = Annotated[date, BeforeValidator(_iso_date_only)]
# the user a request body acts for (ids are issued by onboarding; deps.UserIdPath in paths)
BodyUserId = Annotated[
    str,
    Field(
        min_length=1,
        max_length=STRING_LENGTHS["user_id"],
        pattern=USER_ID_PATTERN,
        description="the user's id (the token's user)",
    ),
]


class StrictModel(BaseModel):
    """Request base: unknown fields and type coercions are errors."""

    model_config = ConfigDict(extra="forbid", strict=True)


class ResponseModel(BaseModel):
    model_config = ConfigDict(from_attributes=True)


def _describe(column: Column) -> str:
    parts = [column.doc] if column.doc else []
    if column.min is not None or column.max is not None:
        lo = "" if column.min is None else f"{column.min:g}"
        hi = "" if column.max is None else f"{column.max:g}"
        parts.append(f"range {lo}..{hi}")
    if column.nullable:
        parts.append("null = unknown")
    return "; ".join(parts)


def contract_annotation(column: Column) -> Any:
    """The pydantic type of a contract column: python type plus range, length and allowed values."""
    if column.name in ALLOWED_VALUES:
        base: Any = Literal[tuple(ALLOWED_VALUES[column.name])]
    elif isinstance(column.dtype, pl.List):
        base = list[Literal[SYMPTOMS]]  # the only list column: symptoms
    else:
        base = _PY_TYPES[type(column.dtype)]
    constraints: dict[str, Any] = {"description": _describe(column)}
    # after the constraints, so they stay JSON Schema keywords (minimum, maximum) of the type
    validators: list[Any] = []
    if column.min is not None:
        constraints["ge"] = column.min
    if column.max is not None:
        constraints["le"] = column.max
    if base is float:
        constraints["allow_inf_nan"] = False
    if base is date:
        constraints["strict"] = False  # FastAPI validates parsed JSON: dates arrive as ISO strings
        constraints["description"] = "; ".join(p for p in (constraints["description"], DATE_LIMITS) if p)
        validators.append(BeforeValidator(_iso_date_only))
    if base is int:
        validators.append(BeforeValidator(integral_float))
    if base is str:
        constraints["pattern"] = NO_CONTROL_CHARACTERS
        constraints["min_length"] = 1
        constraints["max_length"] = STRING_LENGTHS.get(column.name, 255)
    return Annotated[(base, Field(**constraints), *validators)]  # type: ignore[return-value]


def contract_fields(columns: tuple[Column, ...], mode: Mode) -> dict[str, Any]:
    """``create_model`` field definitions for contract columns in the given mode."""
    fields: dict[str, Any] = {}
    for column in columns:
        annotation = contract_annotation(column)
        if mode == "required" and not column.nullable:
            fields[column.name] = (annotation, ...)
        elif mode == "partial" and not column.nullable:
            # left out: fine (None); explicit null: rejected, since the default is not validated
            fields[column.name] = (annotation, None)
        else:
            fields[column.name] = (annotation | None, None)
    return fields


def _columns(
    columns: tuple[Column, ...], names: tuple[str, ...] | None = None, skip: tuple[str, ...] = ()
) -> tuple[Column, ...]:
    return tuple(c for c in columns if (names is None or c.name in names) and c.name not in skip)


def _unique_symptoms(value: list[str] | None) -> list[str] | None:
    """Symptoms are a set: repeats are dropped, first-seen order kept."""
    return None if value is None else list(dict.fromkeys(value))


def _outcome_consistent(value: Any, info: ValidationInfo) -> Any:
    """Severity and duration must be null or 0 when no migraine occurred."""
    if value and info.data.get("migraine_occurred") is False:
        raise PydanticCustomError(
            "outcome_inconsistent",
            "{field} must be null or 0 when migraine_occurred is false",
            {"field": info.field_name},
        )
    return value


# the same rule in the schema (JSON Schema if/then), so clients and generators know it
_NULL_OR_ZERO = {"anyOf": [{"type": "null"}, {"const": 0}]}
OUTCOME_RULE = {
    "if": {"properties": {"migraine_occurred": {"const": False}}, "required": ["migraine_occurred"]},
    "then": {"properties": {"migraine_severity": _NULL_OR_ZERO, "migraine_duration_hours": _NULL_OR_ZERO}},
}


class OutcomeRuleModel(StrictModel):
    model_config = ConfigDict(json_schema_extra=OUTCOME_RULE)


_OUTCOME_VALIDATORS = {
    "outcome_consistent": field_validator("migraine_severity", "migraine_duration_hours")(
        _outcome_consistent
    ),
}

# ------------------------------------------------------------------ users

_USER_VALUE_COLUMNS = _columns(USER_COLUMNS, skip=("user_id",))

UserCreate = create_model(
    "UserCreate",
    __base__=StrictModel,
    __doc__="Onboarding: the contract's user columns; the service assigns the user_id.",
    **contract_fields(_USER_VALUE_COLUMNS, "required"),
)

UserUpdate = create_model(
    "UserUpdate",
    __base__=StrictModel,
    __doc__="Profile update: only the fields sent change; bmi is recomputed.",
    **contract_fields(_USER_VALUE_COLUMNS, "partial"),
)

UserProfile = create_model(
    "UserProfile",
    __base__=ResponseModel,
    user_id=(str, ...),
    **contract_fields(_USER_VALUE_COLUMNS, "response"),
    bmi=(float, Field(description="body-mass index, derived from height and weight")),
    days_logged=(int, Field(description="diary days logged so far")),
    current_phase=(str, Field(description="phase of the next forecast: 1-14, 15-30 or 31+")),
    model_name=(str | None, Field(None, description="model serving that phase")),
    model_version=(str | None, Field(None, description="its version")),
    created_at=(datetime, ...),
    updated_at=(datetime, ...),
)


class OnboardingResponse(BaseModel):
    user: UserProfile  # type: ignore[valid-type]
    access_token: str
    token_type: Literal["bearer"] = "bearer"


# ------------------------------------------------------------------ logs

_LOG_VALUE_COLUMNS = _columns(DAILY_LOG_COLUMNS, skip=("user_id", "date"))

DailyLogSubmit = create_model(
    "DailyLogSubmit",
    __base__=OutcomeRuleModel,
    __doc__=(
        "One diary day. Morning fields, day fields and the outcome may come in one or several "
        "submits for the same date: a repeated date updates the fields sent and keeps the others."
    ),
    __validators__={
        "unique_symptoms": field_validator("symptoms")(_unique_symptoms),
        **_OUTCOME_VALIDATORS,
    },
    user_id=(BodyUserId, ...),
    date=(IsoDate, Field(strict=False, description=f"the diary day ({DATE_LIMITS})")),
    **contract_fields(_LOG_VALUE_COLUMNS, "partial"),
)

DailyLogOut = create_model(
    "DailyLogOut",
    __base__=ResponseModel,
    user_id=(str, ...),
    date=(date, ...),
    **contract_fields(_LOG_VALUE_COLUMNS, "response"),
    created_at=(datetime, ...),
    updated_at=(datetime, ...),
)


class LogSubmitResponse(BaseModel):
    created: bool = Field(
        description="true: a new diary day; false: fields merged into the existing day"
    )
    log: DailyLogOut  # type: ignore[valid-type]


_outcome_fields = contract_fields(_columns(DAILY_LOG_COLUMNS, OUTCOME_FIELDS), "partial")
_outcome_fields["migraine_occurred"] = (bool, Field(description="did a migraine occur on that day"))

OutcomeUpdate = create_model(
    "OutcomeUpdate",
    __base__=OutcomeRuleModel,
    __doc__="The outcome of one day; creates the diary day if it was not logged.",
    __validators__=_OUTCOME_VALIDATORS,
    **_outcome_fields,
)


class LogHistory(BaseModel):
    user_id: str
    count: int
    logs: list[DailyLogOut]  # type: ignore[valid-type]


# ------------------------------------------------------------ predictions


RISK_LEVEL_BASIS = (
    "risk_level is absolute (the chance that an attack starts today, against the service's "
    "thresholds): it is what decides whether to keep treatment at hand, and what accuracy is "
    "scored on. relative_level says whether today is unusual for this person."
)


class TriggerOut(BaseModel):
    group: str = Field(description="habit group (features.triggers.GROUP_NAMES)")
    name: str
    log_odds: float = Field(description="contribution to the forecast's log-odds")
    odds_multiplier: float = Field(description="exp(log_odds): how much it multiplies the odds")


class RecommendationOut(BaseModel):
    group: str
    name: str
    priority: int = Field(description="1 = most important")
    basis: str = Field(
        "your forecast",
        description="what it rests on: 'your forecast, what if' (the model's counterfactual forecast), 'your forecast', 'your diary' or 'clinical prior (not yet your own data)'",
    )
    action: str
    evidence: str


class PredictionOut(ResponseModel):
    user_id: str
    date: date
    phase: str
    probability: float = Field(description="P(a new attack starts on this date)")
    risk_level: Literal["minimal", "low", "moderate", "high"]
    confidence: float = Field(
        description="data sufficiency of the forecast, 0..1 (see forecasting.confidence)"
    )
    model_name: str
    model_version: str
    top_triggers: list[TriggerOut]
    recommendations: list[RecommendationOut]
    actual_outcome: bool | None = None
    actual_onset: bool | None = None
    was_correct: bool | None = None
    usual_probability: float | None = Field(
        None,
        description="the person's usual day: mean of their forecasts of the 30 days before (null: none yet)",
    )
    relative_risk: float | None = Field(None, description="probability / usual_probability")
    relative_level: Literal["lower than usual", "usual", "higher than usual"] | None = Field(
        None, description="today against the person's usual day (x0.8 / x1.25 bounds)"
    )
    risk_level_basis: str = Field(
        RISK_LEVEL_BASIS,
        description="what drives risk_level and why",
    )
    created_at: datetime
    updated_at: datetime


class PredictionHistory(BaseModel):
    user_id: str
    count: int
    predictions: list[PredictionOut]


class ModelAccuracy(BaseModel):
    model_name: str
    model_version: str
    n_scored: int
    n_correct: int
    accuracy: float | None


class AccuracyOut(TrackRecord):
    """The forecast track record (``insights.track_record``) plus the stored-forecast counts."""

    user_id: str
    n_predictions: int
    decision_threshold: float = Field(description="a forecast 'says attack' at probability >= this")
    by_model: list[ModelAccuracy]


# --------------------------------------------------------------- insights


class ModelTrigger(BaseModel):
    group: str
    name: str
    mean_log_odds: float
    odds_multiplier: float
    days_in_top: int = Field(description="days on which this group was among the forecast's top 3")


class DiaryTrigger(BaseModel):
    trigger: str
    group: str
    name: str
    days_present: int
    onsets_present: int
    days_absent: int
    onsets_absent: int
    rate_present: float | None
    rate_absent: float | None
    relative_risk: float | None


class TriggersOut(BaseModel):
    user_id: str
    window_days: int
    days_analysed: int
    model_name: str
    model_version: str
    model_explains: bool = Field(
        description="false: the serving model gives no per-trigger explanation"
    )
    model_triggers: list[ModelTrigger]
    diary_triggers: list[DiaryTrigger]
    top_triggers: list[str] = Field(description="group names, most important first")


class WeekStats(BaseModel):
    start: date
    end: date
    days_logged: int
    migraine_days: int
    attacks_started: int
    mean_severity: float | None
    total_duration_hours: float | None
    mean_sleep_hours: float | None
    poor_sleep_nights: int
    mean_stress: float | None
    alcohol_drinks: int
    mean_caffeine_drinks: float | None
    mean_water_glasses: float | None
    mean_screen_time_hours: float | None
    skipped_meals: int
    symptom_days: dict[str, int]
    mean_forecast_probability: float | None
    forecasts: int
    medication_days: int | None = Field(None, description="days with an acute medication intake")
    scored_forecasts: int = Field(0, description="forecasts of the week whose onset is known")
    forecast_brier_score: float | None = Field(None, description="the week's track record (insights.track_record)")
    forecast_accuracy: float | None = None


class WeeklyStatsOut(BaseModel):
    user_id: str
    this_week: WeekStats
    previous_week: WeekStats
    changes: dict[str, float | None] = Field(
        description="this week minus the previous week, per mean/count"
    )
    usual_week: dict[str, float | None] = Field(
        default_factory=dict, description="per mean/count, the mean over the 4 weeks before this one that have a logged day"
    )
    usual_weeks_counted: int = 0
    changes_vs_usual: dict[str, float | None] = Field(
        default_factory=dict, description="this week minus the usual week"
    )


class RecommendationsOut(BaseModel):
    user_id: str
    based_on: list[str]
    recommendations: list[RecommendationOut]
    what_if: WhatIfSet | None = Field(
        None, description="tomorrow's risk with each modifiable habit changed (the model's forecasts); null before a diary"
    )


# ------------------------------------------------------------------ status


class FieldError(BaseModel):
    type: str
    loc: list[str | int] = Field(description="where: ('body' | 'path' | 'query', field, ...)")
    msg: str


class FieldErrors(BaseModel):
    detail: list[FieldError]


class ReadinessOut(BaseModel):
    ready: bool
    database: dict[str, Any] | None = Field(None, description="operator only (OPERATOR_TOKEN)")
    models: dict[str, Any] | None = Field(None, description="operator only (OPERATOR_TOKEN)")
