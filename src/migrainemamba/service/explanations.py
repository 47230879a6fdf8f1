"""Which explanations fit the person: one rule for the forecast's top triggers and the insights.

A habit group is named as raising a day's risk only if it *applies to this
person and is present* in what the forecast of that day reads (its feature
row, built from the days before it and its morning):

- a group with clinical trigger indicators (``features.triggers.TRIGGER_INDICATORS``:
  sleep, stress, alcohol, caffeine, meals, water, light, weather, cycle) when one
  of its indicators is on that day: e.g. a sleep deficit against the person's
  usual sleep, caffeine below their habit, a pressure drop (so never without
  logged pressure), the perimenstrual window;
- ``cycle`` never for a person without a menstrual cycle, whatever the model says;
- ``attacks`` only after an attack began in the 30 days the features read;
- ``prodrome`` only when warning signs were logged the 2 days before;
- ``screen`` when yesterday's screen time was at least ``SCREEN_HOURS_HIGH``;

and only when it raises the odds by at least ``MIN_ODDS_MULTIPLIER`` (nothing
is listed at x1.00). A person with no diary day before the forecast day has
nothing of their own to explain: every route then gives the same labelled
clinical prior (``clinical_prior_recommendations``), the strongest triggers of
the prior table that can apply to them, plus the request to keep logging.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import polars as pl

from migrainemamba.features.triggers import GROUP_NAMES, TRIGGER_GROUP, trigger_indicators

MIN_ODDS_MULTIPLIER = 1.05
MAX_RECOMMENDATIONS = 3
SCREEN_HOURS_HIGH = 8.0
ATTACK_WINDOW_FEATURE = "attacks_last_30_days"
PRODROME_FEATURES = ("prodrome_count_yesterday", "prodrome_count_2_days_ago")

BASIS_FORECAST = "your forecast"
BASIS_DIARY = "your diary"
BASIS_WHAT_IF = "your forecast, what if"
BASIS_PRIOR = "clinical prior (not yet your own data)"


def plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def present_groups(features: pl.DataFrame, has_menstrual_cycle: bool) -> list[set[str]]:
    """Per feature row, the habit groups that apply to the person and are present (module rule)."""
    if features.is_empty():
        return []
    indicators = trigger_indicators(features)
    out: list[set[str]] = []
    for i, row in enumerate(features.iter_rows(named=True)):
        groups = {TRIGGER_GROUP[t] for t in indicators.columns if indicators[t][i] > 0}
        if (row.get(ATTACK_WINDOW_FEATURE) or 0) > 0:
            groups.add("attacks")
        if any((row.get(f) or 0) > 0 for f in PRODROME_FEATURES):
            groups.add("prodrome")
        if (row.get("screen_time_yesterday") or 0) >= SCREEN_HOURS_HIGH:
            groups.add("screen")
        if not has_menstrual_cycle:
            groups.discard("cycle")
        out.append(groups)
    return out


def fitting(explanation: list[dict[str, Any]], present: set[str]) -> list[dict[str, Any]]:
    """The items of one day's explanation that may be named as raising its risk, largest first."""
    items = [
        e
        for e in explanation
        if e["group"] in present and float(np.exp(e["log_odds"])) >= MIN_ODDS_MULTIPLIER
    ]
    return sorted(items, key=lambda e: -e["log_odds"])


def clinical_prior_recommendations(
    odds_ratios: Mapping[str, float], has_menstrual_cycle: bool, actions: Mapping[str, str]
) -> list[dict[str, Any]]:
    """The strongest prior triggers that can apply to the person, labelled as the clinical prior."""
    best: dict[str, tuple[str, float]] = {}
    for trigger, ratio in odds_ratios.items():
        group = TRIGGER_GROUP.get(trigger)
        if group is None or group not in actions or ratio < MIN_ODDS_MULTIPLIER:
            continue
        if group == "cycle" and not has_menstrual_cycle:
            continue
        if group not in best or ratio > best[group][1]:
            best[group] = (trigger, ratio)
    ranked = sorted(best.items(), key=lambda kv: -kv[1][1])[: MAX_RECOMMENDATIONS - 1]
    return [
        {
            "group": group,
            "name": GROUP_NAMES[group],
            "priority": priority,
            "basis": BASIS_PRIOR,
            "action": actions[group],
            "evidence": (
                f"in clinical studies, {trigger.replace('_', ' ')} raised the odds of an attack "
                f"x{ratio:.2f}; not yet confirmed by your own diary"
            ),
        }
        for priority, (group, (trigger, ratio)) in enumerate(ranked, start=1)
    ]
