"""The service's tables: ``users``, ``daily_logs`` and ``predictions``.

The contract columns of ``users`` and ``daily_logs`` are generated from
``migrainemamba.data.schema`` (name, SQL type, range as a CHECK constraint,
allowed values), never restated. Service-only columns are added around them:

- ``users``: ``bmi`` (derived from height and weight on every write),
  ``days_logged`` and ``current_phase`` (kept current on every diary write; the
  phase is the one the *next* forecast of an unlogged day gets,
  ``phase_of(days_logged + 1)``), ``model_name`` / ``model_version`` (the model
  the routing table assigns to that phase), timestamps.
- ``daily_logs``: a surrogate ``id``, unique ``(user_id, date)``, timestamps.
  Contract value columns are nullable in the database even where the contract
  says not null: a day is written in stages (morning fields, day fields in the
  evening, the outcome later), so a row may be incomplete while the day is in
  progress. Unknown stays null, as in the contract.
- ``predictions``: one stored forecast per user and date, with its inputs'
  fingerprint, model, triggers, recommendations and, once reported, the outcome.

Migrations (``service/alembic``) are frozen snapshots of these definitions; a
test compares the migrated database with this metadata.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

import polars as pl
from sqlalchemy import (
    JSON,
    Boolean,
    CheckConstraint,
    Column,
    Date,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Table,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.types import TypeDecorator, TypeEngine

from migrainemamba.data.schema import DAILY_LOG_COLUMNS, GENDERS, USER_COLUMNS
from migrainemamba.data.schema import Column as ContractColumn

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# string lengths of the contract's free-text columns
STRING_LENGTHS = {"user_id": 64, "gender": 1, "location_city": 120}
# allowed values of categorical contract columns
ALLOWED_VALUES = {"gender": GENDERS}


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC timestamps on every backend (SQLite stores no zone: read back as UTC)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("UTCDateTime: naive datetime; use datetime.now(UTC)")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


def sql_type(column: ContractColumn) -> TypeEngine[Any]:
    """The SQL type of a contract column, from its polars dtype."""
    dtype = column.dtype
    if dtype == pl.String:
        return String(STRING_LENGTHS.get(column.name, 255))
    if dtype == pl.Int64:
        return Integer()
    if dtype == pl.Float64:
        return Float()
    if dtype == pl.Boolean:
        return Boolean(create_constraint=False)
    if dtype == pl.Date:
        return Date()
    if isinstance(dtype, pl.List):
        return JSON()
    raise TypeError(f"models_db: no SQL type for contract column {column.name!r} of dtype {dtype}")


def contract_checks(columns: tuple[ContractColumn, ...]) -> list[CheckConstraint]:
    """CHECK constraints for every contract range and allowed-value list."""
    checks = []
    for c in columns:
        if c.min is not None:
            checks.append(CheckConstraint(f"{c.name} >= {c.min:g}", name=f"{c.name}_min"))
        if c.max is not None:
            checks.append(CheckConstraint(f"{c.name} <= {c.max:g}", name=f"{c.name}_max"))
        if c.name in ALLOWED_VALUES:
            values = ", ".join(f"'{v}'" for v in ALLOWED_VALUES[c.name])
            checks.append(CheckConstraint(f"{c.name} IN ({values})", name=f"{c.name}_allowed"))
    return checks


def contract_value_columns(
    columns: tuple[ContractColumn, ...], *, all_nullable: bool
) -> list[Column[Any]]:
    return [
        Column(c.name, sql_type(c), nullable=True if all_nullable else c.nullable)
        for c in columns
        if c.name not in ("user_id", "date")
    ]


class Base(DeclarativeBase):
    # the classes map prebuilt tables; their plain annotations are for readers and type checkers
    __allow_unmapped__ = True
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


def _timestamps() -> list[Column[Any]]:
    return [
        Column("created_at", UTCDateTime(), nullable=False, default=utcnow),
        Column("updated_at", UTCDateTime(), nullable=False, default=utcnow, onupdate=utcnow),
    ]


users_table = Table(
    "users",
    Base.metadata,
    Column("user_id", String(STRING_LENGTHS["user_id"]), primary_key=True),
    *contract_value_columns(USER_COLUMNS, all_nullable=False),
    Column("bmi", Float(), nullable=False),
    Column("days_logged", Integer(), nullable=False, default=0),
    Column("current_phase", String(8), nullable=False),
    Column("model_name", String(64), nullable=True),
    Column("model_version", String(64), nullable=True),
    *_timestamps(),
    *contract_checks(USER_COLUMNS),
)

def _owner_column() -> Column:
    """The user a row belongs to; deleting the user deletes it."""
    return Column(
        "user_id",
        String(STRING_LENGTHS["user_id"]),
        ForeignKey("users.user_id", ondelete="CASCADE"),
        nullable=False,
    )


daily_logs_table = Table(
    "daily_logs",
    Base.metadata,
    Column("id", Integer(), primary_key=True, autoincrement=True),
    _owner_column(),
    Column("date", Date(), nullable=False),
    *contract_value_columns(DAILY_LOG_COLUMNS, all_nullable=True),
    *_timestamps(),
    UniqueConstraint("user_id", "date"),
    *contract_checks(DAILY_LOG_COLUMNS),
)

predictions_table = Table(
    "predictions",
    Base.metadata,
    Column("id", Integer(), primary_key=True, autoincrement=True),
    _owner_column(),
    Column("date", Date(), nullable=False),
    Column("phase", String(8), nullable=False),
    Column("probability", Float(), nullable=False),
    Column("risk_level", String(16), nullable=False),
    Column("confidence", Float(), nullable=False),
    Column("model_name", String(64), nullable=False),
    Column("model_version", String(64), nullable=False),
    Column("top_triggers", JSON(), nullable=False),
    Column("recommendations", JSON(), nullable=False),
    Column("inputs_fingerprint", String(64), nullable=False),  # hash of everything the forecast saw
    Column(
        "actual_outcome", Boolean(create_constraint=False), nullable=True
    ),  # migraine_occurred on the date
    Column(
        "actual_onset", Boolean(create_constraint=False), nullable=True
    ),  # an attack began; null: not scorable
    Column("was_correct", Boolean(create_constraint=False), nullable=True),
    *_timestamps(),
    UniqueConstraint("user_id", "date"),
    CheckConstraint("probability >= 0 AND probability <= 1", name="probability_range"),
    CheckConstraint("confidence >= 0 AND confidence <= 1", name="confidence_range"),
)


class User(Base):
    __table__ = users_table

    user_id: str
    bmi: float
    days_logged: int
    current_phase: str
    model_name: str | None
    model_version: str | None
    created_at: datetime
    updated_at: datetime


class DailyLog(Base):
    __table__ = daily_logs_table

    id: int
    user_id: str
    date: date
    created_at: datetime
    updated_at: datetime


class Prediction(Base):
    __table__ = predictions_table

    id: int
    user_id: str
    date: date
    phase: str
    probability: float
    risk_level: str
    confidence: float
    model_name: str
    model_version: str
    top_triggers: list[dict[str, Any]]
    recommendations: list[dict[str, Any]]
    inputs_fingerprint: str
    actual_outcome: bool | None
    actual_onset: bool | None
    was_correct: bool | None
    created_at: datetime
    updated_at: datetime


def compute_bmi(height_cm: float, weight_kg: float) -> float:
    """Body-mass index, the same formula as the ``bmi`` feature."""
    return round(weight_kg / (height_cm / 100.0) ** 2, 2)
