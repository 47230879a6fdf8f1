"""Clinical triggers as indicators of the forecast features, and human names for explanations.

The prior tables (``configs/prior/``) give an odds ratio per trigger; the
indicators below say when a trigger is present on the morning of day D, from
the same feature columns every model uses. ``FEATURE_GROUPS`` maps each feature
to the habit a person recognises, so per-feature contributions can be summed
into per-trigger explanations.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import polars as pl

from migrainemamba.features.daily import FEATURE_COLUMNS

# trigger -> indicator expression over feature columns (null = not present)
TRIGGER_INDICATORS: dict[str, pl.Expr] = {
    "perimenstrual": pl.col("perimenstrual") >= 1,
    "stress_letdown": pl.col("stress_change_yesterday") <= -3,
    "high_stress": pl.col("stress_yesterday") >= 8,
    "heavy_alcohol": pl.col("heavy_drinking_yesterday") >= 1,
    "sleep_deficit": pl.col("sleep_deviation_hours") <= -1.5,
    "poor_sleep_quality": pl.col("sleep_quality_good") == 0,
    "caffeine_withdrawal": pl.col("caffeine_yesterday_minus_habit") <= -2,
    # the same-day field is unknown at forecast time: yesterday's meals stand in
    "skipped_meals": pl.col("skipped_meals_yesterday") >= 1,
    "night_snack": pl.col("snack_yesterday") >= 1,
    "pressure_drop": pl.col("pressure_change_48h") <= -5,
    "bright_light": pl.col("bright_light_yesterday") >= 1,
    "dehydration": pl.col("water_yesterday") <= 3,
}

GROUP_NAMES: dict[str, str] = {
    "sleep": "Sleep",
    "stress": "Stress and let-down",
    "alcohol": "Alcohol",
    "caffeine": "Caffeine",
    "meals": "Meals and snacks",
    "hydration": "Water",
    "light": "Bright light",
    "screen": "Screen time",
    "cycle": "Menstrual cycle",
    "weather": "Weather (pressure)",
    "attacks": "Recent attacks",
    "prodrome": "Warning signs (prodrome)",
    "diary": "Diary and calendar",
    "person": "Personal baseline",
}

TRIGGER_GROUP: dict[str, str] = {
    "perimenstrual": "cycle",
    "stress_letdown": "stress",
    "high_stress": "stress",
    "heavy_alcohol": "alcohol",
    "sleep_deficit": "sleep",
    "poor_sleep_quality": "sleep",
    "caffeine_withdrawal": "caffeine",
    "skipped_meals": "meals",
    "night_snack": "meals",
    "pressure_drop": "weather",
    "bright_light": "light",
    "dehydration": "hydration",
}


def _feature_group(feature: str) -> str:
    prefixes = {
        "sleep": ("sleep_", "usual_sleep", "poor_sleep"),
        "stress": ("stress_",),
        "alcohol": ("alcohol_", "heavy_drinking"),
        "caffeine": ("caffeine_",),
        "meals": ("skipped_meals", "snack_"),
        "hydration": ("water_",),
        "light": ("bright_light",),
        "screen": ("screen_time",),
        "cycle": ("menstruating", "cycle_day", "days_to_next_period", "perimenstrual"),
        "weather": ("barometric_pressure", "pressure_change"),
        "attacks": ("days_since_last_attack", "attacks_last", "personal_onset_rate", "personal_baseline_rate", "attack_days_last"),
        "prodrome": ("prodrome_",),
        "diary": ("logged_yesterday", "days_since_previous_log", "share_logged", "days_logged_before", "day_of_week"),
        "person": ("age", "gender_", "bmi", "attacks_per_month", "has_menstrual_cycle"),
    }
    for group, starts in prefixes.items():
        if feature.startswith(starts):
            return group
    raise KeyError(f"feature {feature!r} has no explanation group: add it to FEATURE_GROUPS")


FEATURE_GROUPS: dict[str, str] = {f: _feature_group(f) for f in FEATURE_COLUMNS}


def trigger_indicators(features: pl.DataFrame, triggers: list[str] | None = None) -> pl.DataFrame:
    """0/1 Float64 columns, one per trigger, for each feature row (null features -> 0)."""
    names = triggers or list(TRIGGER_INDICATORS)
    unknown = set(names) - set(TRIGGER_INDICATORS)
    if unknown:
        raise KeyError(f"prior: unknown triggers {sorted(unknown)}; known: {sorted(TRIGGER_INDICATORS)}")
    return features.select(
        [TRIGGER_INDICATORS[n].fill_null(False).cast(pl.Float64).alias(n) for n in names]
    )


def prior_log_odds_terms(features: pl.DataFrame, odds_ratios: Mapping[str, float]) -> pl.DataFrame:
    """Per-trigger log-odds contributions log(OR) x indicator, one column per trigger."""
    indicators = trigger_indicators(features, list(odds_ratios))
    return indicators.select([pl.col(n) * float(np.log(odds_ratios[n])) for n in odds_ratios])
