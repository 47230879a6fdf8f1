"""The clinical diary's tables: ``medications`` and ``questionnaires`` (migration 0002_clinical).

Contract columns come from ``migrainemamba.data.schema`` (``MEDICATION_COLUMNS``,
``QUESTIONNAIRE_COLUMNS``) through the same generators as ``models_db``; both
tables belong to a user (``user_id`` with ``ON DELETE CASCADE``), so erasing a
user erases them. Imported by ``models_db`` so that ``Base.metadata`` (Alembic,
the schema test) holds them.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import CheckConstraint, Column, Date, Index, Integer, Table, UniqueConstraint

from migrainemamba.data.schema import (
    MEDICATION_CLASSES,
    MEDICATION_COLUMNS,
    MEDICATION_PURPOSES,
    QUESTIONNAIRE_COLUMNS,
    QUESTIONNAIRE_INSTRUMENTS,
)
from migrainemamba.service.models_db import (
    Base,
    _owner_column,
    _timestamps,
    contract_checks,
    contract_value_columns,
)

ALLOWED_CLINICAL_VALUES: dict[str, tuple[str, ...]] = {
    "medication_class": MEDICATION_CLASSES,
    "purpose": MEDICATION_PURPOSES,
    "instrument": QUESTIONNAIRE_INSTRUMENTS,
}


def _allowed(names: tuple[str, ...]) -> list[CheckConstraint]:
    checks = []
    for name in names:
        values = ", ".join(f"'{v}'" for v in ALLOWED_CLINICAL_VALUES[name])
        checks.append(CheckConstraint(f"{name} IN ({values})", name=f"{name}_allowed"))
    return checks


medications_table = Table(
    "medications",
    Base.metadata,
    Column("id", Integer(), primary_key=True, autoincrement=True),
    _owner_column(),
    Column("date", Date(), nullable=False),
    *contract_value_columns(MEDICATION_COLUMNS, all_nullable=False),
    *_timestamps(),
    *contract_checks(MEDICATION_COLUMNS),
    *_allowed(("medication_class", "purpose")),
    CheckConstraint("purpose = 'acute' OR relief_2h IS NULL", name="relief_acute_only"),
    Index("ix_medications_user_id_date", "user_id", "date"),
)

questionnaires_table = Table(
    "questionnaires",
    Base.metadata,
    Column("id", Integer(), primary_key=True, autoincrement=True),
    _owner_column(),
    Column("date", Date(), nullable=False),
    *contract_value_columns(QUESTIONNAIRE_COLUMNS, all_nullable=False),
    *_timestamps(),
    *contract_checks(QUESTIONNAIRE_COLUMNS),
    *_allowed(("instrument",)),
    UniqueConstraint("user_id", "instrument", "date"),
)


class Medication(Base):
    __table__ = medications_table

    id: int
    user_id: str
    date: date
    time: str | None
    name: str
    medication_class: str
    purpose: str
    dose_mg: float | None
    relief_2h: int | None
    created_at: datetime
    updated_at: datetime


class Questionnaire(Base):
    __table__ = questionnaires_table

    id: int
    user_id: str
    date: date
    instrument: str
    answers: list[int]
    score: int
    grade: str
    created_at: datetime
    updated_at: datetime


def owned_tables() -> list[Table]:
    """Every table with a row per user (a ``user_id`` foreign key to ``users``), users last."""
    tables = [
        t
        for t in Base.metadata.sorted_tables
        if t.name != "users"
        and any(fk.column.table.name == "users" for c in t.columns for fk in c.foreign_keys)
    ]
    return [*tables, Base.metadata.tables["users"]]


__all__: list[Any] = [
    "Medication",
    "Questionnaire",
    "medications_table",
    "owned_tables",
    "questionnaires_table",
]
