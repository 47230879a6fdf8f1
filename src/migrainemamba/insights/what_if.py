"""What-if diaries: tomorrow's inputs as things stand, and with one modifiable habit changed.

The forecast for tomorrow reads the diary up to today and tomorrow's morning. Both are
partly unknown when a person asks, so the **scenario** says what is assumed:

- today: the fields already logged today are kept; a field not (yet) logged today takes
  the value of the person's most recent logged day (habits persist from day to day); a
  day not logged at all is that day with its outcome unknown;
- tonight: sleep like last night (today's morning fields); tomorrow's pressure as today's,
  menstruating unknown (the cycle features come from the profile).

A **change** sets one modifiable habit to its healthy value in the scenario (``CHANGES``):
sleep tonight, today's stress, drinks, caffeine, meals and snack, water, bright light and
screen time. It applies only where it changes something (nothing to change for a person
who already sleeps 8 hours or never drinks). The service forecasts both diaries through
its own forecasting path, so the numbers are the model's counterfactual forecasts.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

import numpy as np
import polars as pl

from migrainemamba.data.schema import DAY_FIELDS, MORNING_FIELDS

HABIT_DAYS = 14  # the person's usual sleep and caffeine: median over their last 14 logged days
HEALTHY_SLEEP_HOURS = 7.0
HEALTHY_STRESS = 5
HEALTHY_WATER = 8
HEALTHY_SCREEN_HOURS = 4.0

ASSUMPTION = (
    "tomorrow's forecast if the rest of today and tonight go like your most recent logged day "
    "(what you already logged today is kept)"
)


def _last_value(history: pl.DataFrame, field: str) -> Any:
    known = history.filter(pl.col(field).is_not_null())
    return known[field][-1] if known.height else None


def scenario(logs: pl.DataFrame, today: date) -> pl.DataFrame | None:
    """The diary up to today plus tomorrow's assumed morning (module docstring); None if empty."""
    diary = logs.filter(pl.col("date") <= today).sort("date")
    before = diary.filter(pl.col("date") < today)
    if diary.is_empty():
        return None
    logged_today = diary.filter(pl.col("date") == today)
    row: dict[str, Any] = (
        logged_today.row(0, named=True)
        if logged_today.height
        else {**{c: None for c in diary.columns}, "user_id": diary["user_id"][0], "date": today, "symptoms": []}
    )
    for f in (*MORNING_FIELDS, *DAY_FIELDS):
        if f != "symptoms" and row.get(f) is None and before.height:
            row[f] = _last_value(before, f)
    tomorrow = {c: None for c in diary.columns}
    tomorrow.update(
        user_id=row["user_id"],
        date=today + timedelta(days=1),
        sleep_hours=row["sleep_hours"],
        sleep_quality_good=row["sleep_quality_good"],
        barometric_pressure_hpa=row["barometric_pressure_hpa"],
        symptoms=[],
    )
    extra = pl.DataFrame([row, tomorrow], schema=diary.schema)
    return pl.concat([before, extra])


def _habit(logs: pl.DataFrame, field: str, today: date) -> float | None:
    recent = logs.filter(pl.col("date") <= today).drop_nulls(field).sort("date").tail(HABIT_DAYS)
    return float(np.median(recent[field].to_numpy())) if recent.height else None


@dataclass(frozen=True)
class Change:
    """One modifiable habit: which explanation group it is, and how to set its healthy value."""

    group: str
    # (scenario, today) -> (changed scenario, the change in words) or None when nothing to change
    apply: Callable[[pl.DataFrame, date], tuple[pl.DataFrame, str] | None]


def _set(frame: pl.DataFrame, day: date, **values: Any) -> pl.DataFrame:
    return frame.with_columns(
        pl.when(pl.col("date") == day).then(pl.lit(v, dtype=frame.schema[k])).otherwise(pl.col(k)).alias(k)
        for k, v in values.items()
    )


def _today(frame: pl.DataFrame, today: date) -> dict[str, Any]:
    return frame.filter(pl.col("date") == today).row(0, named=True)


def _sleep(frame: pl.DataFrame, today: date) -> tuple[pl.DataFrame, str] | None:
    tomorrow = today + timedelta(days=1)
    night = frame.filter(pl.col("date") == tomorrow).row(0, named=True)
    usual = _habit(frame.filter(pl.col("date") <= today), "sleep_hours", today) or HEALTHY_SLEEP_HOURS
    target = max(HEALTHY_SLEEP_HOURS, float(np.ceil(usual * 2) / 2))
    hours, good = night["sleep_hours"], night["sleep_quality_good"]
    if hours is not None and hours >= target and good is not False:
        return None
    return _set(frame, tomorrow, sleep_hours=target, sleep_quality_good=True), f"{target:g}+ hours of good sleep tonight"


def _stress(frame: pl.DataFrame, today: date) -> tuple[pl.DataFrame, str] | None:
    level = _today(frame, today)["stress_level"]
    if level is None or level <= HEALTHY_STRESS:
        return None
    return _set(frame, today, stress_level=HEALTHY_STRESS), f"bring today's stress down to {HEALTHY_STRESS} or lower"


def _alcohol(frame: pl.DataFrame, today: date) -> tuple[pl.DataFrame, str] | None:
    drinks = _today(frame, today)["alcohol_drinks"]
    if not drinks:
        return None
    return _set(frame, today, alcohol_drinks=0), "no alcohol today"


def _caffeine(frame: pl.DataFrame, today: date) -> tuple[pl.DataFrame, str] | None:
    drinks = _today(frame, today)["caffeine_drinks"]
    habit = _habit(frame.filter(pl.col("date") < today), "caffeine_drinks", today)
    if drinks is None or habit is None or drinks >= round(habit):
        return None
    usual = round(habit)
    return _set(frame, today, caffeine_drinks=usual), f"your usual {usual} caffeine drink{'s' if usual != 1 else ''} today"


def _meals(frame: pl.DataFrame, today: date) -> tuple[pl.DataFrame, str] | None:
    row = _today(frame, today)
    if not row["skipped_meals"] and not row["had_snack"]:
        return None
    return _set(frame, today, skipped_meals=0, had_snack=False), "regular meals today and no late-night snack"


def _water(frame: pl.DataFrame, today: date) -> tuple[pl.DataFrame, str] | None:
    glasses = _today(frame, today)["water_glasses"]
    if glasses is None or glasses >= HEALTHY_WATER:
        return None
    return _set(frame, today, water_glasses=HEALTHY_WATER), f"{HEALTHY_WATER}+ glasses of water today"


def _light(frame: pl.DataFrame, today: date) -> tuple[pl.DataFrame, str] | None:
    if not _today(frame, today)["bright_light_exposure"]:
        return None
    return _set(frame, today, bright_light_exposure=False), "avoid bright light today (sunglasses outdoors)"


def _screen(frame: pl.DataFrame, today: date) -> tuple[pl.DataFrame, str] | None:
    hours = _today(frame, today)["screen_time_hours"]
    if hours is None or hours <= HEALTHY_SCREEN_HOURS:
        return None
    return _set(frame, today, screen_time_hours=HEALTHY_SCREEN_HOURS), f"{HEALTHY_SCREEN_HOURS:g} hours of screens or less today"


CHANGES: tuple[Change, ...] = (
    Change("sleep", _sleep),
    Change("stress", _stress),
    Change("alcohol", _alcohol),
    Change("caffeine", _caffeine),
    Change("meals", _meals),
    Change("hydration", _water),
    Change("light", _light),
    Change("screen", _screen),
)
MODIFIABLE: frozenset[str] = frozenset(c.group for c in CHANGES)


def percent(p: float, other: float) -> str:
    """A probability as a percentage, with a decimal below 10% or when whole numbers would hide the change."""
    return f"{p:.1%}" if min(p, other) < 0.1 or round(p * 100) == round(other * 100) else f"{p:.0%}"


def sentence(change: str, risk_now: float, risk_if: float) -> str:
    return f"{change[0].upper()}{change[1:]}: tomorrow's risk from {percent(risk_now, risk_if)} to {percent(risk_if, risk_now)}"
