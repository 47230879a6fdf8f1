"""The data contract (docs/architecture.md §2), defined once.

Every table the project reads or writes — simulated cohorts, imported real
diaries, the service's database rows — uses these column names, dtypes and
ranges. Validation (``migrainemamba.data.validation``), the simulator, the
features and the service all import from here.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

SYMPTOMS: tuple[str, ...] = (
    "fatigue",
    "yawning",
    "neck_stiffness",
    "mood_change",
    "food_cravings",
    "light_sensitivity",
    "sound_sensitivity",
    "concentration_difficulty",
    "nausea",
    "aura",
)

GENDERS: tuple[str, ...] = ("F", "M", "X")
DEFAULT_CYCLE_LENGTH_DAYS = 28


@dataclass(frozen=True)
class Column:
    """One contract column: its polars dtype, whether it may be null, its range."""

    name: str
    dtype: pl.DataType
    nullable: bool = False
    min: float | None = None
    max: float | None = None
    doc: str = ""
    pattern: str | None = None  # text columns: a regular expression the whole value must match


USER_COLUMNS: tuple[Column, ...] = (
    Column("user_id", pl.String(), doc="stable identifier"),
    Column("gender", pl.String(), doc="F, M or X"),
    Column("age", pl.Int64(), min=10, max=110),
    Column("height_cm", pl.Float64(), min=100, max=250),
    Column("weight_kg", pl.Float64(), min=25, max=350),
    Column("location_city", pl.String(), nullable=True),
    Column("attacks_per_month", pl.Float64(), min=0, max=31, doc="self-reported at onboarding"),
    Column("has_menstrual_cycle", pl.Boolean()),
    Column("cycle_start_day", pl.Date(), nullable=True, doc="date of a recent period start"),
    Column("cycle_length_days", pl.Int64(), nullable=True, min=15, max=60, doc="null = 28"),
)

# Morning fields are known when the forecast for that date is made (the night
# before and the morning itself); day fields and the outcome are not.
MORNING_FIELDS: tuple[str, ...] = (
    "sleep_hours",
    "sleep_quality_good",
    "menstruating",
    "barometric_pressure_hpa",
)
DAY_FIELDS: tuple[str, ...] = (
    "stress_level",
    "skipped_meals",
    "had_snack",
    "alcohol_drinks",
    "caffeine_drinks",
    "water_glasses",
    "bright_light_exposure",
    "screen_time_hours",
    "symptoms",
)
OUTCOME_FIELDS: tuple[str, ...] = (
    "migraine_occurred",
    "migraine_severity",
    "migraine_duration_hours",
)

DAILY_LOG_COLUMNS: tuple[Column, ...] = (
    Column("user_id", pl.String()),
    Column("date", pl.Date()),
    Column("sleep_hours", pl.Float64(), min=0, max=24),
    Column("sleep_quality_good", pl.Boolean()),
    Column("stress_level", pl.Int64(), min=1, max=10),
    Column("skipped_meals", pl.Int64(), min=0, max=3),
    Column("had_snack", pl.Boolean()),
    Column("alcohol_drinks", pl.Int64(), min=0, max=50),
    Column("caffeine_drinks", pl.Int64(), min=0, max=50),
    Column("water_glasses", pl.Int64(), min=0, max=60),
    Column("bright_light_exposure", pl.Boolean()),
    Column("screen_time_hours", pl.Float64(), min=0, max=24),
    Column("menstruating", pl.Boolean(), nullable=True),
    Column("barometric_pressure_hpa", pl.Float64(), nullable=True, min=850, max=1090),
    Column("symptoms", pl.List(pl.String()), doc=f"subset of {SYMPTOMS}"),
    Column("migraine_occurred", pl.Boolean(), nullable=True, doc="null = not reported"),
    Column("migraine_severity", pl.Int64(), nullable=True, min=0, max=10),
    Column("migraine_duration_hours", pl.Float64(), nullable=True, min=0, max=240),
)

USERS_SCHEMA: dict[str, pl.DataType] = {c.name: c.dtype for c in USER_COLUMNS}
DAILY_LOGS_SCHEMA: dict[str, pl.DataType] = {c.name: c.dtype for c in DAILY_LOG_COLUMNS}

assert set(MORNING_FIELDS) | set(DAY_FIELDS) | set(OUTCOME_FIELDS) | {"user_id", "date"} == set(
    DAILY_LOGS_SCHEMA
), "every daily-log column must be classified as morning, day or outcome field"


# ------------------------------------------------------------------ medications
# One row per intake (acute) or dose (preventive). Classes follow ICHD-3 8.2 for
# acute drugs (the medication-overuse rules are per class), plus the common
# preventive classes. Several intakes of one drug on one day are several rows,
# so the table has no primary key.

ACUTE_MEDICATION_CLASSES: tuple[str, ...] = (
    "triptan",
    "ergot",
    "opioid",
    "combination_analgesic",
    "simple_analgesic",  # simple analgesics and NSAIDs (paracetamol, ibuprofen, aspirin, ...)
    "gepant",
    "ditan",
    "other",
)
PREVENTIVE_MEDICATION_CLASSES: tuple[str, ...] = (
    "beta_blocker",
    "antiepileptic",
    "antidepressant",
    "cgrp_antibody",
    "botulinum_toxin",
    "angiotensin_blocker",
)
MEDICATION_CLASSES: tuple[str, ...] = ACUTE_MEDICATION_CLASSES + tuple(
    c for c in PREVENTIVE_MEDICATION_CLASSES if c not in ACUTE_MEDICATION_CLASSES
)
MEDICATION_PURPOSES: tuple[str, ...] = ("acute", "preventive")
RELIEF_LEVELS: dict[int, str] = {0: "none", 1: "mild", 2: "moderate", 3: "pain free"}
TIME_OF_DAY_PATTERN = r"^([01][0-9]|2[0-3]):[0-5][0-9]$"

MEDICATION_COLUMNS: tuple[Column, ...] = (
    Column("user_id", pl.String()),
    Column("date", pl.Date()),
    Column("time", pl.String(), nullable=True, pattern=TIME_OF_DAY_PATTERN, doc="HH:MM local time"),
    Column("name", pl.String(), doc="drug name as taken, e.g. sumatriptan"),
    Column("medication_class", pl.String(), doc=f"one of {MEDICATION_CLASSES}"),
    Column("purpose", pl.String(), doc="acute or preventive"),
    Column("dose_mg", pl.Float64(), nullable=True, min=0, max=5000, doc="mg (units for botulinum toxin)"),
    Column(
        "relief_2h",
        pl.Int64(),
        nullable=True,
        min=0,
        max=3,
        doc="acute only: pain relief 2 h after intake, 0 none, 1 mild, 2 moderate, 3 pain free",
    ),
)
MEDICATIONS_SCHEMA: dict[str, pl.DataType] = {c.name: c.dtype for c in MEDICATION_COLUMNS}

# ---------------------------------------------------------------- questionnaires
# Disability questionnaires, one row per completed questionnaire. The items and
# their allowed answers are defined here; scoring and grades live in
# ``migrainemamba.clinical.questionnaires``.

MIDAS_ITEMS: tuple[str, ...] = (
    "missed_work_or_school_days",
    "reduced_work_or_school_productivity_days",
    "missed_household_work_days",
    "reduced_household_productivity_days",
    "missed_family_social_leisure_days",
)
MIDAS_RECALL_DAYS = 90  # "in the last 3 months"
HIT6_ITEMS: tuple[str, ...] = (
    "severe_pain",
    "limits_daily_activities",
    "wish_to_lie_down",
    "too_tired",
    "fed_up_or_irritated",
    "limits_concentration",
)
HIT6_ANSWERS: tuple[str, ...] = ("never", "rarely", "sometimes", "very_often", "always")
HIT6_RECALL_DAYS = 28  # "in the past 4 weeks" (items 4-6)
QUESTIONNAIRE_INSTRUMENTS: tuple[str, ...] = ("MIDAS", "HIT-6")

QUESTIONNAIRE_COLUMNS: tuple[Column, ...] = (
    Column("user_id", pl.String()),
    Column("date", pl.Date(), doc="the day the questionnaire was completed"),
    Column("instrument", pl.String(), doc=f"one of {QUESTIONNAIRE_INSTRUMENTS}"),
    Column("answers", pl.List(pl.Int64()), doc="item scores: MIDAS days per item; HIT-6 points (6/8/10/11/13)"),
    Column("score", pl.Int64(), min=0, max=450),
    Column("grade", pl.String(), doc="MIDAS I-IV; HIT-6 impact class"),
)
QUESTIONNAIRES_SCHEMA: dict[str, pl.DataType] = {c.name: c.dtype for c in QUESTIONNAIRE_COLUMNS}


def empty_users() -> pl.DataFrame:
    return pl.DataFrame(schema=USERS_SCHEMA)


def empty_daily_logs() -> pl.DataFrame:
    return pl.DataFrame(schema=DAILY_LOGS_SCHEMA)


def empty_medications() -> pl.DataFrame:
    return pl.DataFrame(schema=MEDICATIONS_SCHEMA)
