"""Questionnaires: MIDAS and HIT-6 submitted, scored as published, kept as a time series."""

from __future__ import annotations

from datetime import date
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Response, status

from migrainemamba.clinical.questionnaires import (
    HIT6_ANSWER_OF_POINTS,
    Score,
    score_hit6,
    score_midas,
    score_stored,
)
from migrainemamba.data.schema import HIT6_ITEMS, MIDAS_ITEMS
from migrainemamba.service import clinical_crud
from migrainemamba.service.db import SessionDep
from migrainemamba.service.deps import OwnedUser, TodayDep, TokenSubject, authorize, reject_future
from migrainemamba.service.models_clinical import Questionnaire
from migrainemamba.service.schemas import IsoDate
from migrainemamba.service.schemas_clinical import (
    Hit6Submit,
    MidasSubmit,
    QuestionnaireHistory,
    QuestionnaireOut,
    QuestionnaireSubmitResponse,
)

router = APIRouter(prefix="/questionnaires", tags=["questionnaires"])

ITEMS = {"MIDAS": MIDAS_ITEMS, "HIT-6": HIT6_ITEMS}


def questionnaire_out(row: Questionnaire) -> QuestionnaireOut:
    score = score_stored(row.instrument, row.answers)
    answers: dict[str, int | str] = dict(
        zip(
            ITEMS[row.instrument],
            row.answers
            if row.instrument == "MIDAS"
            else [HIT6_ANSWER_OF_POINTS[p] for p in row.answers],
            strict=True,
        )
    )
    return QuestionnaireOut(
        id=row.id,
        user_id=row.user_id,
        date=row.date,
        instrument=row.instrument,  # type: ignore[arg-type]
        score=row.score,
        grade=row.grade,
        meaning=score.meaning,
        answers=answers,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def _store(
    session: SessionDep, user_id: str, day: date, score: Score, response: Response
) -> QuestionnaireSubmitResponse:
    row, created = clinical_crud.upsert_questionnaire(
        session, user_id, day, score.instrument, list(score.answers), score.score, score.grade
    )
    session.commit()
    response.status_code = status.HTTP_201_CREATED if created else status.HTTP_200_OK
    return QuestionnaireSubmitResponse(created=created, questionnaire=questionnaire_out(row))


_SUBMIT_RESPONSES = {200: {"description": "a questionnaire of that date was replaced"}}


@router.post(
    "/midas",
    response_model=QuestionnaireSubmitResponse,
    status_code=status.HTTP_201_CREATED,
    responses=_SUBMIT_RESPONSES,
)
def submit_midas(
    body: MidasSubmit,  # type: ignore[valid-type]
    response: Response,
    subject: TokenSubject,
    session: SessionDep,
    today: TodayDep,
) -> QuestionnaireSubmitResponse:
    """MIDAS over the last 3 months (90 days): score = sum of the five answers (days);
    grade I 0-5, II 6-10, III 11-20, IV 21+. Days counted in question 1 are not counted
    again in question 2 (3 and 4 likewise)."""
    user = authorize(session, subject, body.user_id)
    reject_future(body.date, today, ("body", "date"))
    score = score_midas([getattr(body, item) for item in MIDAS_ITEMS])
    return _store(session, user.user_id, body.date, score, response)


@router.post(
    "/hit6",
    response_model=QuestionnaireSubmitResponse,
    status_code=status.HTTP_201_CREATED,
    responses=_SUBMIT_RESPONSES,
)
def submit_hit6(
    body: Hit6Submit,  # type: ignore[valid-type]
    response: Response,
    subject: TokenSubject,
    session: SessionDep,
    today: TodayDep,
) -> QuestionnaireSubmitResponse:
    """HIT-6 over the past 4 weeks: never 6, rarely 8, sometimes 10, very often 11, always 13;
    total 36-78; <= 49 little or no impact, 50-55 some, 56-59 substantial, >= 60 severe."""
    user = authorize(session, subject, body.user_id)
    reject_future(body.date, today, ("body", "date"))
    score = score_hit6([getattr(body, item) for item in HIT6_ITEMS])
    return _store(session, user.user_id, body.date, score, response)


@router.get("/history/{user_id}", response_model=QuestionnaireHistory)
def history(
    user: OwnedUser,
    session: SessionDep,
    instrument: Literal["MIDAS", "HIT-6"] | None = None,
    start: Annotated[IsoDate | None, Query(description="first day (ISO date), inclusive")] = None,
    end: Annotated[IsoDate | None, Query(description="last day (ISO date), inclusive")] = None,
) -> QuestionnaireHistory:
    """The questionnaires, oldest first (a time series per instrument)."""
    rows = clinical_crud.list_questionnaires(session, user.user_id, instrument, start, end)
    return QuestionnaireHistory(
        user_id=user.user_id, count=len(rows), questionnaires=[questionnaire_out(r) for r in rows]
    )
