"""The personal model's per-user state: ``personal_states`` (migration 0003_personal_state).

One row per user: the posterior (mean, covariance over ``terms``) of their personal model
(``models.personal``) before the forecast of ``through_date``, the weekly refit due on that
day included, and what it was computed from: the serving personal model (name, version), the
first day of the person's grid (``first_date``, day 0 of the weekly schedule) and
``inputs_fingerprint``, a hash of the profile and of every diary row dated before
``through_date``. A state whose model, first day or fingerprint no longer matches the diary
is stale and is rebuilt from the diary (``service.personal_state``); it is never served.

The row belongs to the user (``user_id`` with ``ON DELETE CASCADE``): the export lists it and
erasure deletes it (``models_clinical.owned_tables``). Imported by ``service.models`` so that
``Base.metadata`` (Alembic, the schema test) holds it.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import JSON, CheckConstraint, Column, Date, Integer, String, Table, UniqueConstraint

from migrainemamba.service.models_db import Base, _owner_column, _timestamps

personal_states_table = Table(
    "personal_states",
    Base.metadata,
    Column("id", Integer(), primary_key=True, autoincrement=True),
    _owner_column(),
    Column("model_name", String(64), nullable=False),
    Column("model_version", String(64), nullable=False),
    Column("first_date", Date(), nullable=False),  # day 0 of the person's grid (weekly refits count from it)
    Column("through_date", Date(), nullable=False),  # the state is the one before this day's forecast
    Column("through_day", Integer(), nullable=False),  # through_date - first_date, in days
    Column("terms", JSON(), nullable=False),  # names of the posterior's coordinates
    Column("mean", JSON(), nullable=False),  # posterior mean, one number per term
    Column("cov", JSON(), nullable=False),  # posterior covariance, rows of numbers
    Column("refits", Integer(), nullable=False),
    Column("updates", Integer(), nullable=False),  # online updates (labelled days) absorbed
    Column("inputs_fingerprint", String(64), nullable=False),  # profile + diary rows before through_date
    *_timestamps(),
    CheckConstraint("through_day >= 0", name="through_day_min"),
    CheckConstraint("refits >= 0 AND updates >= 0", name="counts_min"),
    UniqueConstraint("user_id"),
)


class PersonalState(Base):
    __table__ = personal_states_table

    id: int
    user_id: str
    model_name: str
    model_version: str
    first_date: date
    through_date: date
    through_day: int
    terms: list[str]
    mean: list[float]
    cov: list[list[float]]
    refits: int
    updates: int
    inputs_fingerprint: str
    created_at: datetime
    updated_at: datetime


__all__: list[Any] = ["PersonalState", "personal_states_table"]
