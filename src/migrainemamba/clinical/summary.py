"""The monthly clinical summary: what a headache clinician reads first.

Per user and calendar month, from the contract's ``daily_logs`` and
``medications`` tables (one user or a whole cohort at once):

- ``days_logged``: days with a diary row or a medication entry; ``coverage`` =
  days_logged / days of the month.
- ``migraine_days``: days with ``migraine_occurred`` true.
- ``headache_days``: migraine days plus days with an acute medication intake.
  The diary has no separate field for non-migraine headache, and acute
  medication is taken for a headache, so a medicated day counts as a headache
  day. Days not logged count as neither: every count is of logged days (a lower
  bound in a month with gaps), never extrapolated.
- ``acute_medication_days`` and ``days_<class>`` per acute class
  (``schema.ACUTE_MEDICATION_CLASSES``); ``ichd_days``: days with any of the
  five classes ICHD-3 8.2.6 combines (triptan, ergot, opioid, combination
  analgesic, simple analgesic/NSAID) and ``ichd_classes_used``: how many of them.
- ``attacks``: attacks starting in the month (an attack is a run of migraine
  days on consecutive dates), ``attacks_treated`` (an acute intake on one of its
  days) and ``mean_relief_2h`` (acute intakes on migraine days of the month).

Preventive before/after (:func:`preventive_effect`): migraine days per 30 logged
days in the window before a preventive's first dose and from it on.
"""

from __future__ import annotations

from datetime import date, timedelta

import polars as pl

from migrainemamba.data.schema import ACUTE_MEDICATION_CLASSES

# ICHD-3 8.2.1-8.2.5: the classes with their own overuse rule, combined in 8.2.6
ICHD_CLASSES: tuple[str, ...] = (
    "ergot",
    "triptan",
    "simple_analgesic",
    "opioid",
    "combination_analgesic",
)
# ICHD-3 8.2.8 "other medication": acute drugs outside the classes above
OTHER_ACUTE_CLASSES: tuple[str, ...] = tuple(
    c for c in ACUTE_MEDICATION_CLASSES if c not in ICHD_CLASSES
)

SUMMARY_COLUMNS: tuple[str, ...] = (
    "user_id",
    "month",
    "days_in_month",
    "days_logged",
    "coverage",
    "migraine_days",
    "headache_days",
    "acute_medication_days",
    *(f"days_{c}" for c in ACUTE_MEDICATION_CLASSES),
    "ichd_days",
    "ichd_classes_used",
    "other_acute_days",
    "attacks",
    "attacks_treated",
    "mean_relief_2h",
)


_COUNT_COLUMNS = {
    "migraine_days",
    "headache_days",
    "acute_medication_days",
    "ichd_days",
    "ichd_classes_used",
    "other_acute_days",
    "attacks",
    "attacks_treated",
}


def month_start(column: str) -> pl.Expr:
    return pl.col(column).dt.truncate("1mo")


def _days_in_month(month: pl.Expr) -> pl.Expr:
    return month.dt.offset_by("1mo").sub(month).dt.total_days().cast(pl.Int64)


def attack_runs(daily_logs: pl.DataFrame) -> pl.DataFrame:
    """Migraine days with the attack they belong to: (user_id, date, attack_start)."""
    migraine = (
        daily_logs.filter(pl.col("migraine_occurred").fill_null(False))
        .select("user_id", "date")
        .unique()
        .sort("user_id", "date")
    )
    previous = pl.col("date").shift(1).over("user_id")
    starts = previous.is_null() | (pl.col("date") - previous != timedelta(days=1))
    return migraine.with_columns(
        pl.when(starts).then(pl.col("date")).forward_fill().over("user_id").alias("attack_start")
    )


def monthly_summary(
    daily_logs: pl.DataFrame,
    medications: pl.DataFrame,
    start: date | None = None,
    end: date | None = None,
) -> pl.DataFrame:
    """One row per user and calendar month with any logged day (columns: ``SUMMARY_COLUMNS``).

    ``start``/``end`` (inclusive) keep the days inside a period; months are calendar
    months, so a period that starts mid-month gives a partial first month (its
    ``coverage`` says so).
    """
    logs = daily_logs.select("user_id", "date", "migraine_occurred")
    meds = medications.select("user_id", "date", "medication_class", "purpose", "relief_2h")
    if start is not None:
        logs, meds = logs.filter(pl.col("date") >= start), meds.filter(pl.col("date") >= start)
    if end is not None:
        logs, meds = logs.filter(pl.col("date") <= end), meds.filter(pl.col("date") <= end)

    acute = meds.filter(pl.col("purpose") == "acute")
    class_days = (
        acute.select("user_id", "date", "medication_class")
        .unique()
        .with_columns(pl.lit(1).alias("taken"))
        .pivot(on="medication_class", index=["user_id", "date"], values="taken")
    )
    for c in ACUTE_MEDICATION_CLASSES:
        if c not in class_days.columns:
            class_days = class_days.with_columns(pl.lit(None, pl.Int32).alias(c))
    class_days = class_days.select(
        "user_id",
        "date",
        *(
            pl.col(c).fill_null(0).cast(pl.Int64).alias(f"took_{c}")
            for c in ACUTE_MEDICATION_CLASSES
        ),
    )
    days = (
        pl.concat([logs.select("user_id", "date"), meds.select("user_id", "date")], how="vertical")
        .unique()
        .join(logs.unique(["user_id", "date"]), on=["user_id", "date"], how="left")
        .join(class_days, on=["user_id", "date"], how="left")
        .with_columns(pl.col(f"took_{c}").fill_null(0) for c in ACUTE_MEDICATION_CLASSES)
    )
    any_acute = pl.max_horizontal(pl.col(f"took_{c}") for c in ACUTE_MEDICATION_CLASSES) > 0
    any_ichd = pl.max_horizontal(pl.col(f"took_{c}") for c in ICHD_CLASSES) > 0
    any_other = pl.max_horizontal(pl.col(f"took_{c}") for c in OTHER_ACUTE_CLASSES) > 0
    migraine = pl.col("migraine_occurred").fill_null(False)
    days = days.with_columns(
        month_start("date").alias("month"),
        migraine.alias("_migraine"),
        any_acute.alias("_acute"),
        any_ichd.alias("_ichd"),
        any_other.alias("_other"),
    )
    per_month = days.group_by("user_id", "month").agg(
        pl.len().alias("days_logged"),
        pl.col("_migraine").sum().alias("migraine_days"),
        (pl.col("_migraine") | pl.col("_acute")).sum().alias("headache_days"),
        pl.col("_acute").sum().alias("acute_medication_days"),
        *(pl.col(f"took_{c}").sum().alias(f"days_{c}") for c in ACUTE_MEDICATION_CLASSES),
        pl.col("_ichd").sum().alias("ichd_days"),
        pl.sum_horizontal(
            (pl.col(f"took_{c}").sum() > 0).cast(pl.Int64) for c in ICHD_CLASSES
        ).alias("ichd_classes_used"),
        pl.col("_other").sum().alias("other_acute_days"),
    )

    runs = attack_runs(logs)
    treated_days = (
        acute.select("user_id", "date").unique().with_columns(pl.lit(True).alias("_treated"))
    )
    attacks = (
        runs.join(treated_days, on=["user_id", "date"], how="left")
        .group_by("user_id", "attack_start")
        .agg(pl.col("_treated").fill_null(False).any().alias("treated"))
        .with_columns(month_start("attack_start").alias("month"))
        .group_by("user_id", "month")
        .agg(pl.len().alias("attacks"), pl.col("treated").sum().alias("attacks_treated"))
    )
    relief = (
        acute.join(runs.select("user_id", "date"), on=["user_id", "date"], how="inner")
        .with_columns(month_start("date").alias("month"))
        .group_by("user_id", "month")
        .agg(pl.col("relief_2h").cast(pl.Float64).mean().alias("mean_relief_2h"))
    )
    out = (
        per_month.join(attacks, on=["user_id", "month"], how="left")
        .join(relief, on=["user_id", "month"], how="left")
        .with_columns(
            pl.col("attacks", "attacks_treated").fill_null(0),
            _days_in_month(pl.col("month")).alias("days_in_month"),
        )
        .with_columns((pl.col("days_logged") / pl.col("days_in_month")).alias("coverage"))
    )
    return out.select(
        pl.col(c).cast(pl.Int64) if c.startswith("days_") or c in _COUNT_COLUMNS else pl.col(c)
        for c in SUMMARY_COLUMNS
    ).sort("user_id", "month")


def preventive_effect(
    daily_logs: pl.DataFrame, medications: pl.DataFrame, window_days: int = 90
) -> pl.DataFrame:
    """Per user and preventive drug: migraine days per 30 logged days before and after its start.

    ``start`` is the first logged dose; *before* is the ``window_days`` before it,
    *after* the ``window_days`` from it on. Both rates are over logged days only;
    ``days_logged_before``/``after`` say how much diary each side rests on.
    """
    starts = (
        medications.filter(pl.col("purpose") == "preventive")
        .group_by("user_id", "name")
        .agg(pl.col("date").min().alias("start"), pl.col("medication_class").first())
    )
    if starts.is_empty():
        return pl.DataFrame(
            schema={
                "user_id": pl.String,
                "name": pl.String,
                "medication_class": pl.String,
                "start": pl.Date,
                "days_logged_before": pl.Int64,
                "migraine_days_before": pl.Int64,
                "migraine_days_per_30_before": pl.Float64,
                "days_logged_after": pl.Int64,
                "migraine_days_after": pl.Int64,
                "migraine_days_per_30_after": pl.Float64,
            }
        )
    window = timedelta(days=window_days)
    joined = starts.join(
        daily_logs.select("user_id", "date", "migraine_occurred"), on="user_id", how="left"
    )
    before = (pl.col("date") >= pl.col("start") - window) & (pl.col("date") < pl.col("start"))
    after = (pl.col("date") >= pl.col("start")) & (pl.col("date") < pl.col("start") + window)
    migraine = pl.col("migraine_occurred").fill_null(False)
    out = joined.group_by("user_id", "name", "medication_class", "start").agg(
        before.fill_null(False).sum().cast(pl.Int64).alias("days_logged_before"),
        (before & migraine).fill_null(False).sum().cast(pl.Int64).alias("migraine_days_before"),
        after.fill_null(False).sum().cast(pl.Int64).alias("days_logged_after"),
        (after & migraine).fill_null(False).sum().cast(pl.Int64).alias("migraine_days_after"),
    )

    def per_30(days: str, logged: str) -> pl.Expr:
        return pl.when(pl.col(logged) > 0).then(30.0 * pl.col(days) / pl.col(logged))

    return (
        out.with_columns(
            per_30("migraine_days_before", "days_logged_before").alias(
                "migraine_days_per_30_before"
            ),
            per_30("migraine_days_after", "days_logged_after").alias("migraine_days_per_30_after"),
        )
        .select(
            "user_id",
            "name",
            "medication_class",
            "start",
            "days_logged_before",
            "migraine_days_before",
            "migraine_days_per_30_before",
            "days_logged_after",
            "migraine_days_after",
            "migraine_days_per_30_after",
        )
        .sort("user_id", "start")
    )
