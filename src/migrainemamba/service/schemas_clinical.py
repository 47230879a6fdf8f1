"""Request and response models of the clinical diary (medications, questionnaires, summary, export).

Contract fields come from ``data.schema`` through ``schemas.contract_annotation``;
categorical columns become literals, text columns carry the contract's pattern
or the service's no-control-character one (``schemas.NO_CONTROL_CHARACTERS``,
what ``hygiene`` enforces on every string). Requests are strict and closed, as
everywhere in the API: a wrong type, an unknown field or a value out of range
is a 422 naming the field. The service's shared request types are used as they
are: ``schemas.BodyUserId``, ``schemas.IsoDate`` (with the diary's date window,
``schemas.DATE_LIMITS``), integral floats read as integers.

Rules between fields: no ``relief_2h`` for a preventive dose is stated in the
JSON Schema too (``if``/``then``, as the diary's outcome rule), so clients and
generators know it. MIDAS days of questions 1+2 (and 3+4) within the 90-day
recall is stated in the model's description: JSON Schema has no arithmetic,
and its exact form (a 91-branch ``anyOf`` per pair) is more than generators
(schemathesis' canonicaliser) and client generators take.
"""

from __future__ import annotations

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
    HIT6_ANSWERS,
    HIT6_ITEMS,
    MEDICATION_COLUMNS,
    MIDAS_ITEMS,
    MIDAS_RECALL_DAYS,
    QUESTIONNAIRE_INSTRUMENTS,
    Column,
)
from migrainemamba.service.models_clinical import ALLOWED_CLINICAL_VALUES
from migrainemamba.service.schemas import (
    DATE_LIMITS,
    BodyUserId,
    IsoDate,
    ResponseModel,
    StrictModel,
    contract_annotation,
    integral_float,
)


def clinical_annotation(column: Column) -> Any:
    """``contract_annotation`` plus the clinical literals and the contract's text patterns."""
    if column.name in ALLOWED_CLINICAL_VALUES:
        return Annotated[
            Literal[tuple(ALLOWED_CLINICAL_VALUES[column.name])], Field(description=column.doc)
        ]
    annotation = contract_annotation(column)
    if column.dtype == pl.String() and column.pattern:
        # replaces the no-control-character pattern: a contract pattern admits none either
        return Annotated[annotation, Field(pattern=column.pattern)]
    return annotation


def _fields(columns: tuple[Column, ...], partial: bool) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    for column in columns:
        if column.name in ("user_id", "date"):
            continue
        annotation = clinical_annotation(column)
        if column.nullable:
            fields[column.name] = (annotation | None, None)
        else:  # partial: may be left out, but an explicit null is still rejected
            fields[column.name] = (annotation, None) if partial else (annotation, ...)
    return fields


RELIEF_FOR_ACUTE_ONLY = (
    "relief_2h is rated for acute intakes only; leave it out for a preventive dose"
)


def _relief_for_acute_only(value: Any, info: ValidationInfo) -> Any:
    if value is not None and info.data.get("purpose") == "preventive":
        raise PydanticCustomError("relief_for_preventive", RELIEF_FOR_ACUTE_ONLY)
    return value


# the same rule in the schema: a body saying purpose "preventive" has no relief_2h (or null)
RELIEF_RULE = {
    "if": {"properties": {"purpose": {"const": "preventive"}}, "required": ["purpose"]},
    "then": {"properties": {"relief_2h": {"type": "null"}}},
}


class ReliefRuleModel(StrictModel):
    model_config = ConfigDict(json_schema_extra=RELIEF_RULE)


_MEDICATION_VALIDATORS = {"relief_acute_only": field_validator("relief_2h")(_relief_for_acute_only)}
_DATE = (IsoDate, Field(strict=False, description=f"the day of the intake ({DATE_LIMITS})"))

MedicationLog = create_model(
    "MedicationLog",
    __base__=ReliefRuleModel,
    __doc__="One intake of an acute medication, or one dose of a preventive.",
    __validators__=_MEDICATION_VALIDATORS,
    user_id=(BodyUserId, ...),
    date=_DATE,
    **_fields(MEDICATION_COLUMNS, partial=False),
)

MedicationUpdate = create_model(
    "MedicationUpdate",
    __base__=ReliefRuleModel,
    __doc__="Correct a logged medication: the fields sent change, the others stay.",
    __validators__=_MEDICATION_VALIDATORS,
    # may be left out (unchanged); an explicit null is rejected, since the default is not validated
    date=(IsoDate, Field(None, strict=False, description=f"the day of the intake ({DATE_LIMITS})")),
    **_fields(MEDICATION_COLUMNS, partial=True),
)

MedicationOut = create_model(
    "MedicationOut",
    __base__=ResponseModel,
    id=(int, ...),
    user_id=(str, ...),
    date=(date, ...),
    time=(str | None, None),
    name=(str, ...),
    medication_class=(str, ...),
    purpose=(Literal["acute", "preventive"], ...),
    dose_mg=(float | None, None),
    relief_2h=(int | None, Field(None, description="0 none, 1 mild, 2 moderate, 3 pain free")),
    created_at=(datetime, ...),
    updated_at=(datetime, ...),
)


class MedicationHistory(BaseModel):
    user_id: str
    count: int
    medications: list[MedicationOut]  # type: ignore[valid-type]


# ---------------------------------------------------------------- questionnaires

_MidasDays = Annotated[
    int,
    Field(ge=0, le=MIDAS_RECALL_DAYS, description="days in the last 3 months"),
    BeforeValidator(integral_float),
]


def _midas_pair(first: str) -> Any:
    def check(value: int, info: ValidationInfo) -> int:
        other = info.data.get(first)
        if isinstance(other, int) and other + value > MIDAS_RECALL_DAYS:
            raise PydanticCustomError(
                "midas_days_overlap",
                "{field} + {other} = {total} days exceeds the {recall}-day recall "
                "(days counted in {other} are not counted again)",
                {
                    "field": info.field_name,
                    "other": first,
                    "total": other + value,
                    "recall": MIDAS_RECALL_DAYS,
                },
            )
        return value

    return check


MidasSubmit = create_model(
    "MidasSubmit",
    __base__=StrictModel,
    __doc__=(
        "MIDAS (last 3 months): days per question; the score is their sum (grades I-IV). "
        "Days counted in question 1 are not counted again in question 2, nor 3 in 4: "
        f"{MIDAS_ITEMS[0]} + {MIDAS_ITEMS[1]} <= {MIDAS_RECALL_DAYS} and "
        f"{MIDAS_ITEMS[2]} + {MIDAS_ITEMS[3]} <= {MIDAS_RECALL_DAYS} "
        "(else 422 midas_days_overlap naming the second)."
    ),
    __validators__={
        "pair_work": field_validator(MIDAS_ITEMS[1])(_midas_pair(MIDAS_ITEMS[0])),
        "pair_household": field_validator(MIDAS_ITEMS[3])(_midas_pair(MIDAS_ITEMS[2])),
    },
    user_id=(BodyUserId, ...),
    date=(IsoDate, Field(strict=False, description=f"the day it was answered ({DATE_LIMITS})")),
    **{item: (_MidasDays, ...) for item in MIDAS_ITEMS},
)

_Hit6Answer = Literal[HIT6_ANSWERS]  # type: ignore[valid-type]

Hit6Submit = create_model(
    "Hit6Submit",
    __base__=StrictModel,
    __doc__="HIT-6 (past 4 weeks): one answer per question, never .. always (6/8/10/11/13 points).",
    user_id=(BodyUserId, ...),
    date=(IsoDate, Field(strict=False, description=f"the day it was answered ({DATE_LIMITS})")),
    **{item: (_Hit6Answer, ...) for item in HIT6_ITEMS},
)


class QuestionnaireOut(ResponseModel):
    id: int
    user_id: str
    date: date
    instrument: Literal[QUESTIONNAIRE_INSTRUMENTS]  # type: ignore[valid-type]
    score: int
    grade: str
    meaning: str
    answers: dict[str, int | str] = Field(description="per question: MIDAS days, HIT-6 answer")
    created_at: datetime
    updated_at: datetime


class QuestionnaireSubmitResponse(BaseModel):
    created: bool = Field(description="false: a questionnaire of that date was replaced")
    questionnaire: QuestionnaireOut


class QuestionnaireHistory(BaseModel):
    user_id: str
    count: int
    questionnaires: list[QuestionnaireOut] = Field(description="oldest first: a time series")


# ------------------------------------------------------------------ summary


class MonthSummaryOut(BaseModel):
    month: date
    days_in_month: int
    days_logged: int
    coverage: float
    migraine_days: int
    headache_days: int
    acute_medication_days: int
    medication_days_by_class: dict[str, int]
    attacks: int
    attacks_treated: int
    mean_relief_2h: float | None


class RuleMetOut(BaseModel):
    code: str = Field(description="ICHD-3 code, e.g. 8.2.2")
    name: str
    threshold: int = Field(description="days per month")
    months: list[date]
    days_per_month: list[int]


class OveruseOut(BaseModel):
    level: Literal["none", "watch", "overuse"]
    message: str
    months_assessed: int
    rules: list[RuleMetOut]


class PreventiveOut(BaseModel):
    name: str
    medication_class: str
    start: date
    days_logged_before: int
    migraine_days_per_30_before: float | None
    days_logged_after: int
    migraine_days_per_30_after: float | None


class ClinicalSummaryOut(BaseModel):
    user_id: str
    start: date | None
    end: date | None
    months: list[MonthSummaryOut]
    overuse: OveruseOut
    preventives: list[PreventiveOut]


class ErasureOut(BaseModel):
    user_id: str
    deleted: dict[str, int] = Field(description="rows deleted per table")
