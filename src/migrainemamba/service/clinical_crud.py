"""Data layer of the clinical diary: medications, questionnaires, a user's export and erasure.

As in ``crud``: functions take a ``Session`` and flush; the route commits (one
request = one unit of work).

Export and erasure cover every table that has rows per user
(``models_clinical.owned_tables``: any table with a ``user_id`` foreign key to
``users``), so a table added later is exported and erased without touching this
module.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import date, datetime
from typing import Any

import polars as pl
from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from migrainemamba.data.schema import MEDICATION_COLUMNS, MEDICATIONS_SCHEMA
from migrainemamba.service import models as _every_table  # noqa: F401 - owned_tables sees every table
from migrainemamba.service.models_clinical import Medication, Questionnaire, owned_tables

__all__ = ["owned_tables"]  # re-exported for the export route

# ------------------------------------------------------------- medications


def add_medication(session: Session, user_id: str, values: Mapping[str, Any]) -> Medication:
    row = Medication(user_id=user_id, **values)
    session.add(row)
    session.flush()
    return row


def get_medication(session: Session, user_id: str, medication_id: int) -> Medication | None:
    return session.scalar(
        select(Medication).where(Medication.id == medication_id, Medication.user_id == user_id)
    )


def update_medication(session: Session, row: Medication, changes: Mapping[str, Any]) -> Medication:
    for name, value in changes.items():
        setattr(row, name, value)
    session.flush()
    return row


def delete_medication(session: Session, row: Medication) -> None:
    session.delete(row)
    session.flush()


def list_medications(
    session: Session,
    user_id: str,
    start: date | None = None,
    end: date | None = None,
    purpose: str | None = None,
    limit: int | None = None,
) -> Sequence[Medication]:
    """Medications, newest first (by date, then time, then entry)."""
    query = select(Medication).where(Medication.user_id == user_id)
    if start is not None:
        query = query.where(Medication.date >= start)
    if end is not None:
        query = query.where(Medication.date <= end)
    if purpose is not None:
        query = query.where(Medication.purpose == purpose)
    query = query.order_by(Medication.date.desc(), Medication.time.desc(), Medication.id.desc())
    if limit is not None:
        query = query.limit(limit)
    return session.scalars(query).all()


def medications_frame(rows: Sequence[Any]) -> pl.DataFrame:
    """The contract ``medications`` frame of medication rows, sorted by date."""
    data = [{c.name: getattr(r, c.name) for c in MEDICATION_COLUMNS} for r in rows]
    return pl.DataFrame(data, schema=MEDICATIONS_SCHEMA).sort("date", "time", nulls_last=True)


# ---------------------------------------------------------- questionnaires


def upsert_questionnaire(
    session: Session,
    user_id: str,
    day: date,
    instrument: str,
    answers: list[int],
    score: int,
    grade: str,
) -> tuple[Questionnaire, bool]:
    """One questionnaire per instrument and date: a second one the same day replaces it."""
    query = select(Questionnaire).where(
        Questionnaire.user_id == user_id,
        Questionnaire.instrument == instrument,
        Questionnaire.date == day,
    )
    values = {"answers": answers, "score": score, "grade": grade}
    row = session.scalar(query)
    if row is None:
        try:
            with session.begin_nested():
                row = Questionnaire(user_id=user_id, date=day, instrument=instrument, **values)
                session.add(row)
            return row, True
        except IntegrityError:  # a concurrent request stored the same one first
            row = session.scalar(query)
            if row is None:
                raise
    for name, value in values.items():
        setattr(row, name, value)
    session.flush()
    return row, False


def list_questionnaires(
    session: Session,
    user_id: str,
    instrument: str | None = None,
    start: date | None = None,
    end: date | None = None,
) -> Sequence[Questionnaire]:
    """Questionnaires, oldest first (a time series)."""
    query = select(Questionnaire).where(Questionnaire.user_id == user_id)
    if instrument is not None:
        query = query.where(Questionnaire.instrument == instrument)
    if start is not None:
        query = query.where(Questionnaire.date >= start)
    if end is not None:
        query = query.where(Questionnaire.date <= end)
    return session.scalars(query.order_by(Questionnaire.date, Questionnaire.id)).all()


# ------------------------------------------------------- export and erasure


def _plain(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    return value


def export_user(session: Session, user_id: str) -> dict[str, list[dict[str, Any]]]:
    """Every row of the user, per table (JSON-ready values), the ``users`` row included."""
    out: dict[str, list[dict[str, Any]]] = {}
    for table in owned_tables():
        order = [table.c[k] for k in ("date", "id") if k in table.c] or [table.c.user_id]
        rows = session.execute(
            select(table).where(table.c.user_id == user_id).order_by(*order)
        ).mappings()
        out[table.name] = [{k: _plain(v) for k, v in row.items()} for row in rows]
    return out


def count_user_rows(session: Session, user_id: str) -> dict[str, int]:
    """Rows of the user per table."""
    return {
        table.name: int(
            session.scalar(
                select(func.count()).select_from(table).where(table.c.user_id == user_id)
            )
            or 0
        )
        for table in owned_tables()
    }


def erase_user(session: Session, user_id: str) -> dict[str, int]:
    """Delete every row of the user, table by table (children first, the user last).

    Explicit deletes rather than relying on ``ON DELETE CASCADE`` alone, so that the
    erasure does not depend on SQLite's per-connection foreign-key switch; the counts
    deleted are returned.
    """
    deleted = {}
    for table in owned_tables():
        result = session.execute(delete(table).where(table.c.user_id == user_id))
        deleted[table.name] = int(result.rowcount or 0)
    session.flush()
    session.expunge_all()  # no stale objects of the erased user stay in the session
    return deleted
