"""Trigger exposures of a day *looked back on*: for the trigger map, not for forecasts.

A forecast for D may not read D's day fields (meals, caffeine, light, water of D are
logged later). The trigger map is retrospective ("which of my habits preceded my
attacks?"), so it may: each trigger is defined on the day whose onset it may cause, from
the forecast features of D (previous days, D's morning) plus D's own day fields. Names and
definitions follow the simulator's triggers (``configs/data/synthetic.yaml``), so on
simulated data the map can be scored against ``truth_users``.
"""

from __future__ import annotations

import polars as pl

# D's own day fields that the map may use (joined from the diary row of D)
SAME_DAY_FIELDS: tuple[str, ...] = ("caffeine_drinks", "skipped_meals", "bright_light_exposure", "water_glasses")
_SAME = "_same_"

RETROSPECTIVE_TRIGGERS: dict[str, pl.Expr] = {
    "perimenstrual": pl.col("perimenstrual") >= 1,
    "stress_letdown": pl.col("stress_change_yesterday") <= -3,
    "high_stress": pl.col("stress_yesterday") >= 8,
    "heavy_alcohol": pl.col("heavy_drinking_yesterday") >= 1,
    "sleep_deficit": pl.col("sleep_deviation_hours") <= -1.5,
    "poor_sleep_quality": pl.col("sleep_quality_good") == 0,
    "caffeine_high": pl.col(f"{_SAME}caffeine_drinks") >= 3,
    "caffeine_withdrawal": (pl.col("caffeine_habit") >= 1.5) & (pl.col("caffeine_yesterday_minus_habit") <= -2),
    "fasting": pl.col(f"{_SAME}skipped_meals") >= 1,
    "night_snack": pl.col("snack_yesterday") >= 1,
    "pressure_drop": pl.col("pressure_change_48h") <= -5,
    "bright_light": pl.col(f"{_SAME}bright_light_exposure"),
    "dehydration": pl.col(f"{_SAME}water_glasses") <= 3,
}
TRIGGER_NAMES: tuple[str, ...] = tuple(RETROSPECTIVE_TRIGGERS)


def retrospective_exposures(features: pl.DataFrame, daily_logs: pl.DataFrame) -> pl.DataFrame:
    """``user_id, date`` and one 0/1 Float64 column per trigger for each feature row (unknown -> 0)."""
    same_day = daily_logs.select(
        "user_id", pl.col("date").cast(pl.Date), *[pl.col(c).alias(f"{_SAME}{c}") for c in SAME_DAY_FIELDS]
    )
    rows = features.join(same_day, on=["user_id", "date"], how="left", maintain_order="left")
    return rows.select(
        "user_id",
        "date",
        *[expr.fill_null(False).cast(pl.Float64).alias(name) for name, expr in RETROSPECTIVE_TRIGGERS.items()],
    )
