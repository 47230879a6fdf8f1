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

from migrainemamba.features.triggers import TRIGGER_GROUP, TRIGGER_INDICATORS

# D's own day fields that the map may use (joined from the diary row of D)
SAME_DAY_FIELDS: tuple[str, ...] = ("caffeine_drinks", "skipped_meals", "bright_light_exposure", "water_glasses")
_SAME = "_same_"

# Defined once in features.triggers where the forecast-time indicator is the same; only the
# indicators that read D's own day fields (or a stricter habit) are defined here.
RETROSPECTIVE_TRIGGERS: dict[str, pl.Expr] = {
    **{name: TRIGGER_INDICATORS[name] for name in (
        "perimenstrual", "stress_letdown", "high_stress", "heavy_alcohol", "sleep_deficit", "poor_sleep_quality",
    )},
    "caffeine_high": pl.col(f"{_SAME}caffeine_drinks") >= 3,
    "caffeine_withdrawal": (pl.col("caffeine_habit") >= 1.5) & (pl.col("caffeine_yesterday_minus_habit") <= -2),
    "fasting": pl.col(f"{_SAME}skipped_meals") >= 1,
    "night_snack": TRIGGER_INDICATORS["night_snack"],
    "pressure_drop": TRIGGER_INDICATORS["pressure_drop"],
    "bright_light": pl.col(f"{_SAME}bright_light_exposure"),
    "dehydration": pl.col(f"{_SAME}water_glasses") <= 3,
}
TRIGGER_NAMES: tuple[str, ...] = tuple(RETROSPECTIVE_TRIGGERS)
# the habit group of each map trigger (features.triggers.GROUP_NAMES); the two that exist only
# looking back belong to the groups of their forecast-time relatives
RETROSPECTIVE_GROUP: dict[str, str] = {name: TRIGGER_GROUP.get(name, "") for name in TRIGGER_NAMES} | {
    "caffeine_high": "caffeine",
    "fasting": "meals",
}


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
