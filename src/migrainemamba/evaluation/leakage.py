"""Perturbation audit: a forecast for day D must not move when the future changes.

For sampled user-days D the audit forecasts D from the person's diary, then
again after scrambling everything logged at or after the forecast moment (D's
day fields and outcome, every later row, plus an invented later row) while
keeping D's morning fields. Any difference means the model saw the future:
the harness refuses to score it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta

import numpy as np
import polars as pl

from migrainemamba.data.schema import DAY_FIELDS, MORNING_FIELDS, OUTCOME_FIELDS
from migrainemamba.models.base import ForecastBatch, ForecastModel

log = logging.getLogger(__name__)


class LeakageError(RuntimeError):
    """A model's forecast changed when only information from after the forecast moment changed."""


@dataclass
class AuditResult:
    checked: int
    max_change: float
    violations: list[tuple[str, str, float]]  # user_id, date, |change|


def scramble_future(logs: pl.DataFrame, forecast_date, rng: np.random.Generator) -> pl.DataFrame:
    """Change D's day fields and outcome and every later row; add a later row."""
    at_or_after = pl.col("date") >= forecast_date
    future = logs.filter(at_or_after)
    n = future.height
    flips = {
        "stress_level": pl.Series(rng.integers(1, 11, n)),
        "skipped_meals": pl.Series(rng.integers(0, 4, n)),
        "had_snack": pl.Series(rng.random(n) < 0.5),
        "alcohol_drinks": pl.Series(rng.integers(0, 9, n)),
        "caffeine_drinks": pl.Series(rng.integers(0, 7, n)),
        "water_glasses": pl.Series(rng.integers(0, 12, n)),
        "bright_light_exposure": pl.Series(rng.random(n) < 0.5),
        "screen_time_hours": pl.Series(rng.uniform(0, 12, n).round(1)),
        "migraine_occurred": ~future["migraine_occurred"].fill_null(False),
        "migraine_severity": pl.Series(rng.integers(0, 11, n)),
        "symptoms": pl.Series([["nausea", "aura", "fatigue", "yawning"]] * n, dtype=pl.List(pl.String)),
    }
    assert set(flips) <= set(DAY_FIELDS) | set(OUTCOME_FIELDS)
    later = future.filter(pl.col("date") > forecast_date)
    # morning fields of later days change too; D's own morning fields stay
    morning_later = {
        "sleep_hours": pl.when(pl.col("date") > forecast_date).then(pl.lit(3.0)).otherwise(pl.col("sleep_hours")),
        "barometric_pressure_hpa": pl.when(pl.col("date") > forecast_date)
        .then(pl.lit(960.0))
        .otherwise(pl.col("barometric_pressure_hpa")),
    }
    assert set(morning_later) <= set(MORNING_FIELDS)
    changed = future.with_columns(**{k: v.cast(logs.schema[k]) for k, v in flips.items()}).with_columns(**morning_later)
    extra_date = (later["date"].max() if later.height else forecast_date) + timedelta(days=1)
    extra = changed.tail(1).with_columns(pl.lit(extra_date).alias("date"), pl.lit(True).alias("migraine_occurred"))
    return pl.concat([logs.filter(~at_or_after), changed, extra]).sort("date")


def audit_leakage(
    model: ForecastModel,
    users: pl.DataFrame,
    daily_logs: pl.DataFrame,
    targets: pl.DataFrame,
    n_samples: int = 12,
    seed: int = 0,
    tolerance: float = 1e-9,
) -> AuditResult:
    """Forecast sampled targets with the true and the scrambled future; compare."""
    rng = np.random.default_rng(seed)
    sample = targets.sample(min(n_samples, targets.height), seed=seed)
    violations = []
    max_change = 0.0
    for user_id, forecast_date in sample.select("user_id", "date").iter_rows():
        person = users.filter(pl.col("user_id") == user_id)
        logs = daily_logs.filter(pl.col("user_id") == user_id)
        target = pl.DataFrame({"user_id": [user_id], "date": [forecast_date]})
        before = model.predict(ForecastBatch(person, logs, target))[0]
        after = model.predict(ForecastBatch(person, scramble_future(logs, forecast_date, rng), target))[0]
        change = abs(float(before) - float(after))
        max_change = max(max_change, change)
        if change > tolerance:
            violations.append((user_id, str(forecast_date), change))
    return AuditResult(checked=sample.height, max_change=max_change, violations=violations)


def require_no_leakage(model: ForecastModel, *args, **kwargs) -> AuditResult:
    result = audit_leakage(model, *args, **kwargs)
    if result.violations:
        raise LeakageError(
            f"model {model.name!r}: forecasts changed when only the future changed "
            f"({len(result.violations)}/{result.checked} sampled days, e.g. {result.violations[:3]}); "
            "it reads information logged after the forecast moment and is not scored"
        )
    log.info("leakage audit: %s passed on %d sampled days", model.name, result.checked)
    return result
