"""Pattern discovery for one person, with false-discovery control over the patterns tried.

Input: the person's ``features.build_features`` rows (their calendar grid, with ``onset``)
and their diary. Each pattern splits the person's *labelled* days (onset known) into days
"with" and "without" it, a 2x2 table of days x onsets:

- ``day_of_week``: each weekday against the other days (7 patterns);
- ``cycle_phase`` (only for a person with a menstrual cycle): premenstrual (1-2 days before
  the next period), menstrual (days 0-2), early follicular (3-7), mid-cycle (12-16 days before
  the next period), luteal (3-11 days before), each against the other days;
- ``lagged``: each retrospective exposure of the trigger map (``features.retrospective``;
  the exposure of day D is what precedes D's onset: last night's sleep, yesterday's stress
  and drinks, D's meals) one and two days *earlier* than that (D-1's, D-2's exposure;
  ``LAG_WHEN`` says when that was; pressure and the cycle are left to their own patterns);
  only days whose earlier day was logged;
- ``pair``: two exposures together (e.g. short sleep with high stress) against the days
  with exactly one of them; tested as "worse together than each alone": the larger of the
  two one-sided p-values, both-days against days with only A and against days with only B
  (an intersection-union test, valid without further adjustment);
- ``streak``: an exposure on three days in a row (D, D-1, D-2) against days with it but no
  streak (one-sided: the streak adds to a single day).

Each p-value is Fisher's exact test (two-sided for weekday, cycle phase and lags, where
either direction is worth telling). A pattern needs ``MIN_DAYS_WITH`` days on each side
to be tried at all (a filter on exposure counts, not on outcomes). **Multiple testing:
Benjamini-Hochberg at FDR ``FDR_LEVEL`` over the patterns tried for this person**; under
a person with no pattern at all this also bounds the chance of reporting any at the same
level. The effect is the odds ratio with 0.5 added to each cell (Haldane; finite), and its
interval the exact conditional interval (the one that goes with Fisher's test) at the
false-coverage-rate-adjusted level 1 - R q / m of Benjamini & Yekutieli (2005) for the R
patterns reported of m tried (an unbounded end is null).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl
from scipy.stats import fisher_exact
from scipy.stats.contingency import odds_ratio

from migrainemamba.features.retrospective import TRIGGER_NAMES, retrospective_exposures

FDR_LEVEL = 0.10
FDR_METHOD = (
    "Benjamini-Hochberg at FDR 0.10 over the patterns tried for you (Fisher's exact test per "
    "pattern); intervals at the matching false-coverage-rate level (Benjamini-Yekutieli)"
)
MIN_LABELLED_DAYS = 42
MIN_ONSETS = 4
MIN_DAYS_WITH = 3
STREAK_DAYS = 3

WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")

EXPOSURE_TEXT: dict[str, str] = {
    "perimenstrual": "the days around a period",
    "stress_letdown": "a drop in stress (let-down)",
    "high_stress": "high stress (8+)",
    "heavy_alcohol": "heavy drinking",
    "sleep_deficit": "a short night (1.5 h under your usual)",
    "poor_sleep_quality": "a poor night's sleep",
    "caffeine_high": "3+ caffeine drinks",
    "caffeine_withdrawal": "less caffeine than your habit",
    "fasting": "a skipped meal",
    "night_snack": "a late-night snack",
    "pressure_drop": "a pressure drop",
    "bright_light": "bright light",
    "dehydration": "3 or fewer glasses of water",
}

# When a lagged exposure happened, relative to the attack day, at lag 1 and 2 (the exposure
# of day D itself is the trigger map's: last night, yesterday, or D's own meals and light).
_NIGHTS = ("two nights before", "three nights before")
_AFTER_YESTERDAY = ("two days before", "three days before")
_SAME_DAY = ("the day before", "two days before")
LAG_WHEN: dict[str, tuple[str, str]] = {
    "sleep_deficit": _NIGHTS,
    "poor_sleep_quality": _NIGHTS,
    "stress_letdown": _AFTER_YESTERDAY,
    "high_stress": _AFTER_YESTERDAY,
    "heavy_alcohol": _AFTER_YESTERDAY,
    "caffeine_withdrawal": _AFTER_YESTERDAY,
    "night_snack": _AFTER_YESTERDAY,
    "caffeine_high": _SAME_DAY,
    "fasting": _SAME_DAY,
    "bright_light": _SAME_DAY,
    "dehydration": _SAME_DAY,
}

PAIRS: tuple[tuple[str, str], ...] = (
    ("sleep_deficit", "high_stress"),
    ("poor_sleep_quality", "high_stress"),
    ("sleep_deficit", "heavy_alcohol"),
    ("sleep_deficit", "fasting"),
    ("fasting", "dehydration"),
    ("high_stress", "caffeine_withdrawal"),
    ("perimenstrual", "sleep_deficit"),
    ("perimenstrual", "high_stress"),
)
STREAK_EXPOSURES: tuple[str, ...] = ("sleep_deficit", "poor_sleep_quality", "high_stress", "fasting", "dehydration")


@dataclass
class Candidate:
    kind: str
    key: str
    description: str
    with_mask: np.ndarray  # over the labelled days
    without_mask: np.ndarray
    alternative: str  # two-sided or greater
    p_value: float = 1.0
    parts: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None  # pair: (both, only A, only B)


def _table(y: np.ndarray, with_mask: np.ndarray, without_mask: np.ndarray) -> np.ndarray:
    a, b = int(y[with_mask].sum()), int(with_mask.sum())
    c, d = int(y[without_mask].sum()), int(without_mask.sum())
    return np.array([[a, b - a], [c, d - c]])


def _fisher(table: np.ndarray, alternative: str) -> float:
    return float(fisher_exact(table, alternative=alternative).pvalue)


def benjamini_hochberg(p: np.ndarray) -> np.ndarray:
    """BH-adjusted p-values (q-values): reject at level q where adjusted <= q."""
    m = len(p)
    if m == 0:
        return p
    order = np.argsort(p)
    ranked = p[order] * m / np.arange(1, m + 1)
    adjusted = np.minimum.accumulate(ranked[::-1])[::-1]
    out = np.empty(m)
    out[order] = np.minimum(adjusted, 1.0)
    return out


def _shift(values: np.ndarray, k: int, fill: float = 0.0) -> np.ndarray:
    out = np.full_like(values, fill, dtype=float)
    out[k:] = values[:-k] if k else values
    return out


def _candidates(grid: pl.DataFrame, expo: pl.DataFrame, logged: np.ndarray, has_cycle: bool) -> list[Candidate]:
    """Patterns over the whole grid (masks later restricted to labelled days)."""
    out: list[Candidate] = []
    weekday = grid["day_of_week"].to_numpy()
    for d, name in enumerate(WEEKDAYS, start=1):
        m = weekday == d
        out.append(Candidate("day_of_week", name.lower(), f"{name}s", m, ~m, "two-sided"))
    if has_cycle and grid["cycle_day"].null_count() < grid.height:
        cd = grid["cycle_day"].fill_null(-1).to_numpy()
        dtn = grid["days_to_next_period"].fill_null(-1).to_numpy()
        known = cd >= 0
        phases = {
            "premenstrual": ("the 2 days before a period", known & (dtn >= 1) & (dtn <= 2)),
            "menstrual": ("the first 3 days of a period", known & (cd <= 2)),
            "early_follicular": ("days 4-8 of your cycle", known & (cd >= 3) & (cd <= 7)),
            "mid_cycle": ("mid-cycle (12-16 days before a period)", known & (cd > 7) & (dtn >= 12) & (dtn <= 16)),
            "luteal": ("3-11 days before a period", known & (cd > 7) & (dtn >= 3) & (dtn <= 11)),
        }
        for key, (text, m) in phases.items():
            out.append(Candidate("cycle_phase", key, text, m, known & ~m, "two-sided"))
    x = {t: expo[t].to_numpy() for t in TRIGGER_NAMES if has_cycle or t != "perimenstrual"}
    for t, v in x.items():
        if t not in LAG_WHEN:
            continue
        for lag in (1, 2):
            when = LAG_WHEN[t][lag - 1]
            seen = _shift(logged.astype(float), lag) > 0
            lagged = _shift(v, lag) > 0
            out.append(
                Candidate("lagged", f"{t}_lag{lag}", f"{EXPOSURE_TEXT[t]} {when}", seen & lagged, seen & ~lagged, "two-sided")
            )
    for a, b in PAIRS:
        if a not in x or b not in x:
            continue
        ea, eb = x[a] > 0, x[b] > 0
        both, only_a, only_b = ea & eb, ea & ~eb, ~ea & eb
        out.append(
            Candidate(
                "pair", f"{a}+{b}", f"{EXPOSURE_TEXT[a]} together with {EXPOSURE_TEXT[b]}", both, only_a | only_b,
                "greater", parts=(both, only_a, only_b),
            )
        )
    for t in STREAK_EXPOSURES:
        if t not in x:
            continue
        e = x[t] > 0
        streak = e.copy()
        for k in range(1, STREAK_DAYS):
            streak &= _shift(e.astype(float), k) > 0
        out.append(
            Candidate("streak", f"{t}_streak{STREAK_DAYS}", f"{EXPOSURE_TEXT[t]} {STREAK_DAYS} days in a row", streak, e & ~streak, "greater")
        )
    return out


def _interval(table: np.ndarray, level: float) -> list[float | None]:
    ci = odds_ratio(table, kind="conditional").confidence_interval(level)
    return [round(float(v), 4) if np.isfinite(v) else None for v in (ci.low, ci.high)]


def discover(
    features: pl.DataFrame, daily_logs: pl.DataFrame, has_menstrual_cycle: bool, fdr: float = FDR_LEVEL
) -> dict[str, Any]:
    """The person's patterns (module docstring): the reported ones, with counts and a statement."""
    grid = features.sort("date")
    labelled_rows = grid["onset"].is_not_null().to_numpy()
    y_all = grid["onset"].cast(pl.Float64).fill_null(0.0).to_numpy()
    n_labelled, n_onsets = int(labelled_rows.sum()), int(y_all[labelled_rows].sum())
    base = {"labelled_days": n_labelled, "onsets": n_onsets, "fdr_level": fdr, "fdr_method": FDR_METHOD.replace("0.10", f"{fdr:.2f}")}
    if n_labelled < MIN_LABELLED_DAYS or n_onsets < MIN_ONSETS:
        return {
            **base,
            "patterns_tried": 0,
            "enough_data": False,
            "statement": (
                f"Too little data to look for patterns: {n_labelled} days with a reported outcome and "
                f"{n_onsets} attack onsets; patterns are looked for from {MIN_LABELLED_DAYS} such days "
                f"and {MIN_ONSETS} onsets."
            ),
            "patterns": [],
        }
    logged_dates = set(daily_logs["date"].to_list())
    logged = np.array([d in logged_dates for d in grid["date"].to_list()])
    expo = retrospective_exposures(grid, daily_logs)
    tried: list[Candidate] = []
    y = y_all[labelled_rows]
    for cand in _candidates(grid, expo, logged, has_menstrual_cycle):
        w, wo = cand.with_mask[labelled_rows], cand.without_mask[labelled_rows]
        if w.sum() < MIN_DAYS_WITH or wo.sum() < MIN_DAYS_WITH:
            continue
        cand.with_mask, cand.without_mask = w, wo
        if cand.parts is not None:  # pair: worse together than each alone (intersection-union)
            both, only_a, only_b = (m[labelled_rows] for m in cand.parts)
            if only_a.sum() < 1 or only_b.sum() < 1:
                continue
            cand.p_value = max(_fisher(_table(y, both, only_a), "greater"), _fisher(_table(y, both, only_b), "greater"))
        else:
            cand.p_value = _fisher(_table(y, w, wo), cand.alternative)
        tried.append(cand)
    p = np.array([c.p_value for c in tried])
    q = benjamini_hochberg(p)
    chosen = [i for i in np.argsort(p) if q[i] <= fdr]
    level = 1 - len(chosen) * fdr / max(len(tried), 1)
    patterns = [_report(tried[i], y, float(q[i]), level) for i in chosen]
    return {
        **base,
        "patterns_tried": len(tried),
        "enough_data": True,
        "statement": (
            f"{len(patterns)} pattern{'s' if len(patterns) != 1 else ''} of {len(tried)} tried held for you "
            f"after allowing for the number tried (false discovery rate {fdr:.0%})."
            if patterns
            else f"No pattern of the {len(tried)} tried held for you after allowing for the number tried "
            f"(false discovery rate {fdr:.0%}); more diary days make smaller effects visible."
        ),
        "patterns": patterns,
    }


def _report(c: Candidate, y: np.ndarray, q: float, level: float) -> dict[str, Any]:
    table = _table(y, c.with_mask, c.without_mask)
    (a, b), (cc, d) = table
    haldane = ((a + 0.5) * (d + 0.5)) / ((b + 0.5) * (cc + 0.5))
    n_with, n_without = int(a + b), int(cc + d)
    return {
        "kind": c.kind,
        "key": c.key,
        "description": c.description,
        "odds_ratio": round(float(haldane), 4),
        "interval": _interval(table, level),
        "interval_level": round(level, 4),
        "rate_with": round(a / n_with, 4) if n_with else None,
        "rate_without": round(cc / n_without, 4) if n_without else None,
        "p_value": float(f"{c.p_value:.4g}"),
        "q_value": float(f"{q:.4g}"),
        "evidence": {"days_with": n_with, "onsets_with": int(a), "days_without": n_without, "onsets_without": int(cc)},
    }
