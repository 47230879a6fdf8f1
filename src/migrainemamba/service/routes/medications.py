"""Medications: log an intake or dose, list them, correct or remove one.

A correction is checked on the *merged* row, as a diary day is (``crud``): a
body that contradicts itself (``purpose: "preventive"`` with a ``relief_2h``)
is a 422 (the schema states the rule); a body that would contradict the stored
row (a relief for a stored preventive, or ``purpose: "preventive"`` for an
intake whose relief is stored, without ``relief_2h: null``) is a 409 naming
the field, and nothing is written.
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, HTTPException, Path, Query, Response, status

from migrainemamba.service import clinical_crud
from migrainemamba.service.db import SessionDep
from migrainemamba.service.deps import OwnedUser, TodayDep, TokenSubject, authorize, reject_future
from migrainemamba.service.models_clinical import Medication
from migrainemamba.service.schemas import FieldErrors, IsoDate
from migrainemamba.service.schemas_clinical import (
    RELIEF_FOR_ACUTE_ONLY,
    MedicationHistory,
    MedicationLog,
    MedicationOut,
    MedicationUpdate,
)

router = APIRouter(prefix="/medications", tags=["medications"])

# ids are INTEGER columns (32-bit on PostgreSQL): a larger id cannot exist, and SQLite's driver
# cannot even bind one beyond 64 bits (OverflowError, a 500), so it is a 422 naming the parameter
MAX_ROW_ID = 2**31 - 1
MedicationId = Annotated[
    int, Path(ge=1, le=MAX_ROW_ID, description="the medication's id (as returned by /log)")
]


@router.post("/log", response_model=MedicationOut, status_code=status.HTTP_201_CREATED)
def log_medication(
    body: MedicationLog,  # type: ignore[valid-type]
    subject: TokenSubject,
    session: SessionDep,
    today: TodayDep,
) -> MedicationOut:  # type: ignore[valid-type]
    """Log one acute intake (with the relief 2 h later, 0-3, if known) or one preventive dose."""
    user = authorize(session, subject, body.user_id)
    reject_future(body.date, today, ("body", "date"))
    row = clinical_crud.add_medication(session, user.user_id, body.model_dump(exclude={"user_id"}))
    session.commit()
    return MedicationOut.model_validate(row)


@router.get("/history/{user_id}", response_model=MedicationHistory)
def history(
    user: OwnedUser,
    session: SessionDep,
    start: Annotated[IsoDate | None, Query(description="first day (ISO date), inclusive")] = None,
    end: Annotated[IsoDate | None, Query(description="last day (ISO date), inclusive")] = None,
    purpose: Literal["acute", "preventive"] | None = None,
    limit: int = Query(200, ge=1, le=5000),
) -> MedicationHistory:
    """Medications, newest first (``start``/``end`` inclusive)."""
    rows = clinical_crud.list_medications(session, user.user_id, start, end, purpose, limit)
    return MedicationHistory(
        user_id=user.user_id,
        count=len(rows),
        medications=[MedicationOut.model_validate(r) for r in rows],
    )


def _owned_medication(session: SessionDep, user_id: str, medication_id: int) -> Medication:
    row = clinical_crud.get_medication(session, user_id, medication_id)
    if row is None:
        raise HTTPException(
            status.HTTP_404_NOT_FOUND, f"medication {medication_id} of user {user_id!r} not found"
        )
    return row


@router.put(
    "/{user_id}/{medication_id}",
    response_model=MedicationOut,
    responses={
        409: {
            "description": "the corrected row would contradict itself (a relief_2h for a preventive "
            "dose); detail[].loc names the field",
            "model": FieldErrors,
        }
    },
)
def edit(
    medication_id: MedicationId,
    body: MedicationUpdate,  # type: ignore[valid-type]
    user: OwnedUser,
    session: SessionDep,
    today: TodayDep,
) -> MedicationOut:  # type: ignore[valid-type]
    """Correct a logged medication: the fields sent change, the others stay.

    The corrected row must be consistent: a preventive dose has no ``relief_2h``. Making
    a stored intake with a relief preventive needs ``relief_2h: null`` in the same body,
    a relief for a stored preventive needs ``purpose: "acute"`` (else 409 naming the field).
    """
    row = _owned_medication(session, user.user_id, medication_id)
    changes = body.model_dump(exclude_unset=True)
    reject_future(changes.get("date"), today, ("body", "date"))
    purpose = changes.get("purpose", row.purpose)
    relief = changes.get("relief_2h", row.relief_2h)
    if purpose == "preventive" and relief is not None:
        # the body alone is consistent (the schema's rule): it contradicts the stored row
        if "relief_2h" in changes:
            field = "relief_2h"
            fix = 'this medication is stored as preventive: send purpose "acute" with it'
        else:
            field = "purpose"
            fix = f"this intake has relief_2h {row.relief_2h} stored: send relief_2h: null with it"
        error = {
            "type": "relief_for_preventive",
            "loc": ["body", field],
            "msg": f"{RELIEF_FOR_ACUTE_ONLY}; {fix}",
        }
        raise HTTPException(status.HTTP_409_CONFLICT, [error])
    clinical_crud.update_medication(session, row, changes)
    session.commit()
    return MedicationOut.model_validate(row)


@router.delete(
    "/{user_id}/{medication_id}", status_code=status.HTTP_204_NO_CONTENT, response_class=Response
)
def remove(medication_id: MedicationId, user: OwnedUser, session: SessionDep) -> Response:
    """Remove a medication logged by mistake."""
    clinical_crud.delete_medication(
        session, _owned_medication(session, user.user_id, medication_id)
    )
    session.commit()
    return Response(status_code=status.HTTP_204_NO_CONTENT)
