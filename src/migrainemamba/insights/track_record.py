"""A person's forecast track record: the one definition of "how well did my forecasts do".

Input: the stored forecasts with their scored outcome (``date, probability, onset``; a day
whose onset is unknown is left out by the caller or carries ``onset=None``), and the risk
thresholds of the service. Shared by ``/predictions/accuracy``, the weekly statistics and
the clinician report, so the three always agree.

- **Brier score**: mean (p - onset)^2 over the scored days.
- **Brier skill** against the person's own base rate: 1 - Brier / Brier_ref, where the
  reference forecasts the person's observed onset rate over the same days on every day
  (known only in hindsight, so the reference is a strict one). Undefined (null) while no
  attack began or every scored day began one (the reference is then perfect).
- **Calibration by risk band** (minimal < low < moderate < high, the service's thresholds):
  per band the days, the onsets, the mean forecast and the observed onset rate.
- **Hits and misses** at the moderate and the high threshold: a forecast "says attack" at
  p >= threshold; hits, misses, false alarms, quiet days, sensitivity and false-alarm rate.
  ``accuracy`` is (hits + quiet days) / scored days at the moderate threshold, the service's
  decision threshold (``Settings.predicts_attack``).
- **Trend over weeks**: 7-day blocks ending on ``today`` (block 0 = the last 7 days), newest
  first, each with its scored days, onsets, mean forecast and Brier score.

Too few days to judge: fewer than ``MIN_SCORED_DAYS`` scored days or no onset yet gives
``enough_data = False`` and a plain ``statement``; the counts are still given.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

import numpy as np

MIN_SCORED_DAYS = 14
WEEKS_SHOWN = 8
BANDS = ("minimal", "low", "moderate", "high")


@dataclass(frozen=True)
class Thresholds:
    low: float
    moderate: float
    high: float

    def band(self, p: float) -> str:
        if p >= self.high:
            return "high"
        if p >= self.moderate:
            return "moderate"
        if p >= self.low:
            return "low"
        return "minimal"


@dataclass(frozen=True)
class Scored:
    date: date
    probability: float
    onset: bool


def scored_days(rows: Iterable[Any]) -> list[Scored]:
    """The scored forecasts of stored rows (attributes ``date, probability, actual_onset``)."""
    return [
        Scored(r.date, float(r.probability), bool(r.actual_onset))
        for r in rows
        if getattr(r, "actual_onset", None) is not None
    ]


def _r(x: float | None, digits: int = 6) -> float | None:
    return None if x is None else round(float(x), digits)


def brier(p: np.ndarray, y: np.ndarray) -> float | None:
    return float(np.mean((p - y) ** 2)) if len(p) else None


def brier_skill(p: np.ndarray, y: np.ndarray) -> tuple[float | None, float | None]:
    """(reference Brier of the person's own onset rate, skill); skill null when the reference is 0."""
    if not len(p):
        return None, None
    rate = float(y.mean())
    reference = rate * (1 - rate)
    if reference == 0:
        return reference, None
    return reference, 1.0 - float(np.mean((p - y) ** 2)) / reference


def calibration(p: np.ndarray, y: np.ndarray, thresholds: Thresholds) -> list[dict[str, Any]]:
    bands = np.array([thresholds.band(float(v)) for v in p])
    out = []
    for band in BANDS:
        mask = bands == band
        n = int(mask.sum())
        out.append(
            {
                "band": band,
                "days": n,
                "onsets": int(y[mask].sum()),
                "mean_forecast": _r(p[mask].mean()) if n else None,
                "observed_rate": _r(y[mask].mean()) if n else None,
            }
        )
    return out


def hits_and_misses(p: np.ndarray, y: np.ndarray, threshold: float, level: str) -> dict[str, Any]:
    says = p >= threshold
    onset = y > 0
    hits, misses = int((says & onset).sum()), int((~says & onset).sum())
    false_alarms, quiet = int((says & ~onset).sum()), int((~says & ~onset).sum())
    return {
        "level": level,
        "threshold": threshold,
        "hits": hits,
        "misses": misses,
        "false_alarms": false_alarms,
        "correct_quiet_days": quiet,
        "sensitivity": _r(hits / (hits + misses), 4) if hits + misses else None,
        "false_alarm_rate": _r(false_alarms / (false_alarms + quiet), 4) if false_alarms + quiet else None,
    }


def weekly_trend(days: Sequence[Scored], today: date, weeks: int = WEEKS_SHOWN) -> list[dict[str, Any]]:
    out = []
    for k in range(weeks):
        end = today - timedelta(days=7 * k)
        start = end - timedelta(days=6)
        part = [d for d in days if start <= d.date <= end]
        p = np.array([d.probability for d in part], float)
        y = np.array([d.onset for d in part], float)
        out.append(
            {
                "start": start,
                "end": end,
                "scored_days": len(part),
                "onsets": int(y.sum()),
                "mean_forecast": _r(p.mean()) if len(part) else None,
                "brier_score": _r(brier(p, y)),
            }
        )
    return out


def statement(n: int, onsets: int, skill: float | None) -> str:
    if n < MIN_SCORED_DAYS:
        return (
            f"Too few days to judge: {n} scored day{'s' if n != 1 else ''} so far; the track record "
            f"means something from {MIN_SCORED_DAYS} days with a reported outcome."
        )
    if onsets == 0:
        return f"No attack began on your {n} scored days, so the forecasts cannot yet be judged against one."
    if skill is None:
        return f"An attack began on every one of your {n} scored days; the forecasts cannot be judged against that."
    if skill > 0:
        return (
            f"Over {n} scored days your forecasts did {skill:.0%} better (Brier skill) than always "
            f"forecasting your own onset rate."
        )
    return (
        f"Over {n} scored days your forecasts did no better than always forecasting your own onset "
        f"rate (Brier skill {skill:.2f})."
    )


def track_record(days: Sequence[Scored], thresholds: Thresholds, today: date) -> dict[str, Any]:
    """The track record of ``days`` (module docstring); ``today`` anchors the weekly trend."""
    p = np.array([d.probability for d in days], float)
    y = np.array([d.onset for d in days], float)
    n = len(days)
    reference, skill = brier_skill(p, y)
    onsets = int(y.sum())
    enough = n >= MIN_SCORED_DAYS and onsets > 0 and skill is not None
    at_moderate = hits_and_misses(p, y, thresholds.moderate, "moderate")
    n_correct = at_moderate["hits"] + at_moderate["correct_quiet_days"]
    return {
        "n_scored": n,
        "onsets": onsets,
        "n_correct": n_correct,
        "accuracy": _r(n_correct / n, 4) if n else None,
        "brier_score": _r(brier(p, y)),
        "brier_reference": _r(reference),
        "brier_skill": _r(skill, 4) if enough else None,
        "mean_probability": _r(p.mean()) if n else None,
        "observed_onset_rate": _r(y.mean()) if n else None,
        "calibration": calibration(p, y, thresholds),
        "hits_and_misses": [
            at_moderate,
            hits_and_misses(p, y, thresholds.high, "high"),
        ],
        "weeks": weekly_trend(days, today),
        "enough_data": enough,
        "statement": statement(n, onsets, skill),
    }
