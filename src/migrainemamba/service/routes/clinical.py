"""Clinical summary (monthly days, ICHD-3 overuse check, preventives) and the clinician report."""

from __future__ import annotations

from datetime import date
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Response
from fastapi.exceptions import RequestValidationError

from migrainemamba.service import clinical
from migrainemamba.service.db import SessionDep
from migrainemamba.service.deps import (
    MAX_DAYS_BACK,
    ForecasterDep,
    OwnedUser,
    SettingsDep,
    TodayDep,
    reject_future,
)
from migrainemamba.service.schemas import DATE_LIMITS, IsoDate
from migrainemamba.service.schemas_clinical import ClinicalSummaryOut

router = APIRouter(tags=["clinical"])

# start <= end is a rule between two parameters, which OpenAPI cannot state: said in words
PeriodStart = Annotated[
    IsoDate | None, Query(description=f"first day, inclusive ({DATE_LIMITS}); not after end")
]
PeriodEnd = Annotated[
    IsoDate | None, Query(description=f"last day, inclusive ({DATE_LIMITS}); not before start")
]


def _check_period(start: date | None, end: date | None, today: date) -> None:
    reject_future(start, today, ("query", "start"))
    reject_future(end, today, ("query", "end"))
    if start is not None and end is not None and start > end:
        raise RequestValidationError(
            [
                {
                    "type": "period_reversed",
                    "loc": ("query", "start"),
                    "msg": f"start {start} is after end {end}",
                    "input": start.isoformat(),
                }
            ]
        )


@router.get("/clinical/summary/{user_id}", response_model=ClinicalSummaryOut)
def summary(
    user: OwnedUser,
    session: SessionDep,
    today: TodayDep,
    start: PeriodStart = None,
    end: PeriodEnd = None,
) -> ClinicalSummaryOut:
    """Per calendar month: migraine, headache and acute-medication days (per class), attacks
    treated and relief; the ICHD-3 medication-overuse check with the rule met; migraine days
    before and after each preventive's start."""
    _check_period(start, end, today)
    return ClinicalSummaryOut.model_validate(clinical.summary_for(session, user, start, end))


@router.get(
    "/reports/{user_id}",
    response_class=Response,
    responses={
        200: {
            "content": {"text/html": {}, "application/pdf": {}},
            "description": "the clinician report",
        }
    },
)
def report(
    user: OwnedUser,
    session: SessionDep,
    forecaster: ForecasterDep,
    settings: SettingsDep,
    today: TodayDep,
    format: Literal["html", "pdf"] = "html",
    start: PeriodStart = None,
    end: PeriodEnd = None,
) -> Response:
    """The clinician report for ``start``..``end`` (default: the 183 days to today), HTML or
    PDF, rendered offline; at most 730 days."""
    _check_period(start, end, today)
    first, last = clinical.default_period(start, end, today)
    if (last - first).days > MAX_DAYS_BACK:
        raise RequestValidationError(
            [
                {
                    "type": "period_too_long",
                    "loc": ("query", "start"),
                    "msg": f"the period may span at most {MAX_DAYS_BACK} days",
                    "input": first.isoformat(),
                }
            ]
        )
    data = clinical.report_for(session, user, forecaster, settings, first, last, today)
    body = clinical.render(data, format)
    media = "application/pdf" if format == "pdf" else "text/html; charset=utf-8"
    filename = f"migraine-report-{user.user_id}-{first}-{last}.{format}"
    return Response(
        body, media_type=media, headers={"Content-Disposition": f'inline; filename="{filename}"'}
    )
