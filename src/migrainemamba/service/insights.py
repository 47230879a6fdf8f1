"""Insights computed from the user's own diary and the serving models' explanations.

- **Triggers** (:func:`triggers`): (1) the routed models' explanations of the
  forecasts of the user's last ``INSIGHTS_WINDOW_DAYS`` days, averaged per habit
  group (risk-raising log-odds, and how often the group was in a day's top 3);
  (2) diary statistics over the whole diary: for each clinical trigger of
  ``features.triggers.TRIGGER_INDICATORS``, the onset rate on scorable days with
  and without it, and their (smoothed) ratio. A model without ``explain`` (the built-in
  base rate) contributes nothing to (1); (2) always works.
- **Weekly stats** (:func:`weekly_stats`): the diary, acute medication days and
  the stored forecasts (with their track record) of the 7 days ending today,
  against the 7 days before and against the usual week (mean of the 4 before).
- **Recommendations** (:func:`recommendations`): at most three, one per habit
  group: first the what-ifs (``service.what_if``: the model's counterfactual
  forecast for tomorrow with the habit changed), then the top trigger groups,
  each with the number that makes it personal; stored forecasts carry
  the same, derived from their own top triggers (:func:`forecast_recommendations`).
  What may be named follows one rule (``service.explanations``); a person with
  no diary day before today gets the labelled clinical prior on every route.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, timedelta
from typing import Any

import numpy as np
import polars as pl

from migrainemamba.data.schema import SYMPTOMS
from migrainemamba.features import build_features, phase_of
from migrainemamba.features.triggers import GROUP_NAMES, TRIGGER_GROUP, trigger_indicators
from migrainemamba.insights.patterns import discover
from migrainemamba.insights.track_record import Thresholds, scored_days, track_record
from migrainemamba.service.explanations import (
    BASIS_DIARY,
    BASIS_FORECAST,
    BASIS_WHAT_IF,
    MAX_RECOMMENDATIONS,
    MIN_ODDS_MULTIPLIER,
    clinical_prior_recommendations,
    plural,
)
from migrainemamba.service.forecasting import TOP_TRIGGERS, Forecast, Forecaster
from migrainemamba.service.settings import Settings

MIN_DAYS_PRESENT = 3  # a diary trigger needs this many scorable days with it to be ranked

ACTIONS: dict[str, str] = {
    "sleep": "Keep a regular sleep schedule and protect your usual sleep length; avoid short or broken nights.",
    "stress": "Plan wind-down time during and after stressful periods; a drop in stress (let-down) can trigger attacks too.",
    "alcohol": "Limit alcohol, especially several drinks in one evening; the effect shows the next day.",
    "caffeine": "Keep caffeine steady from day to day; a sudden drop below your habit can trigger withdrawal headaches.",
    "meals": "Eat regular meals; skipped meals raise the next day's risk.",
    "hydration": "Drink water regularly through the day.",
    "light": "Limit glare and bright or flickering light; wear sunglasses outdoors.",
    "screen": "Take regular breaks from screens and lower screen brightness.",
    "cycle": "Around your period (2 days before to 3 days after) plan lighter days and keep other triggers low.",
    "weather": "Pressure drops cannot be avoided: on such days keep other triggers low and have your treatment at hand.",
    "attacks": "Recent attacks raise the near-term risk: rest and follow your treatment plan.",
    "prodrome": "You logged possible warning signs: consider starting your treatment plan early.",
    "diary": "Keep logging every day, including the outcome: your personal triggers become clearer with each logged day.",
}


def _mean(values: Sequence[float | int | None]) -> float | None:
    known = [float(v) for v in values if v is not None]
    return round(float(np.mean(known)), 3) if known else None


def _rate(onsets: int, days: int) -> float | None:
    return round(onsets / days, 4) if days else None


def relative_risk(k_with: int, n_with: int, k_without: int, n_without: int) -> float | None:
    """Onset rate with / without a trigger, with 0.5 added to each onset count and 1 to each
    day count (Haldane-Anscombe), so a small diary with no onset on one side still gives a
    finite ratio. None when either side has no day."""
    if not n_with or not n_without:
        return None
    return round(((k_with + 0.5) / (n_with + 1)) / ((k_without + 0.5) / (n_without + 1)), 3)


def thresholds(settings: Settings) -> Thresholds:
    return Thresholds(settings.low_risk_threshold, settings.moderate_risk_threshold, settings.high_risk_threshold)


def track_record_of(predictions: Sequence[Any], settings: Settings, today: date) -> dict[str, Any]:
    """The track record (``insights.track_record``) of stored forecasts at the service's thresholds."""
    return track_record(scored_days(predictions), thresholds(settings), today)


def patterns(users: pl.DataFrame, logs: pl.DataFrame, today: date) -> dict[str, Any]:
    """The person's discovered patterns over their diary up to today (``insights.patterns``)."""
    diary = logs.filter(pl.col("date") <= today)
    features = build_features(users, diary) if diary.height else None
    if features is None or features.is_empty():
        features = pl.DataFrame(schema={"date": pl.Date, "onset": pl.Boolean})
    return {
        "user_id": users["user_id"][0],
        **discover(features, diary, bool(users["has_menstrual_cycle"][0])),
    }


# --------------------------------------------------------------- triggers


def model_triggers(
    forecaster: Forecaster, users: pl.DataFrame, logs: pl.DataFrame, days: Sequence[date]
) -> tuple[list[dict[str, Any]], int]:
    """Per habit group named on some day (``explanations`` rule): mean log-odds over the days
    it was named, and days among that day's top 3. (items, days explained)"""
    explanations = forecaster.explain_days(users, logs, days)
    totals: dict[str, list[float]] = {}
    in_top: dict[str, int] = {}
    for items in explanations.values():  # already only the fitting items, largest first
        for e in items:
            totals.setdefault(e["group"], []).append(float(e["log_odds"]))
        for e in items[:TOP_TRIGGERS]:
            in_top[e["group"]] = in_top.get(e["group"], 0) + 1
    out = []
    for group, values in totals.items():
        mean = float(np.mean(values))
        if np.exp(mean) < MIN_ODDS_MULTIPLIER or not in_top.get(group):
            continue
        out.append(
            {
                "group": group,
                "name": GROUP_NAMES[group],
                "mean_log_odds": round(mean, 4),
                "odds_multiplier": round(float(np.exp(mean)), 4),
                "days_in_top": in_top[group],
            }
        )
    out.sort(key=lambda t: -t["mean_log_odds"])
    return out, len(explanations)


def diary_triggers(users: pl.DataFrame, logs: pl.DataFrame) -> list[dict[str, Any]]:
    """Onset rate with and without each clinical trigger, over the scorable days of the diary."""
    if logs.is_empty():
        return []
    features = build_features(users, logs).filter(pl.col("scorable"))
    if features.is_empty():
        return []
    present = trigger_indicators(features)
    onset = features["onset"].cast(pl.Int64).to_numpy()
    out = []
    for trigger in present.columns:
        mask = present[trigger].to_numpy() > 0
        n_with, n_without = int(mask.sum()), int((~mask).sum())
        k_with, k_without = int(onset[mask].sum()), int(onset[~mask].sum())
        rate_with, rate_without = _rate(k_with, n_with), _rate(k_without, n_without)
        rr = relative_risk(k_with, n_with, k_without, n_without)
        group = TRIGGER_GROUP[trigger]
        out.append(
            {
                "trigger": trigger,
                "group": group,
                "name": GROUP_NAMES[group],
                "days_present": n_with,
                "onsets_present": k_with,
                "days_absent": n_without,
                "onsets_absent": k_without,
                "rate_present": rate_with,
                "rate_absent": rate_without,
                "relative_risk": rr,
            }
        )
    out.sort(
        key=lambda t: (t["relative_risk"] is None, -(t["relative_risk"] or 0.0), -t["days_present"])
    )
    return out


def rank_groups(
    model_items: list[dict[str, Any]], diary_items: list[dict[str, Any]], has_menstrual_cycle: bool
) -> list[str]:
    """Group keys, most important first: the model's risk-raising groups, then diary triggers with RR > 1."""
    ranked = [t["group"] for t in model_items]
    for t in diary_items:
        if t["group"] == "cycle" and not has_menstrual_cycle:
            continue
        if (
            t["days_present"] >= MIN_DAYS_PRESENT
            and (t["relative_risk"] or 0) > 1
            and t["onsets_present"] > 0
        ):
            ranked.append(t["group"])
    return list(dict.fromkeys(ranked))


def triggers(
    forecaster: Forecaster, users: pl.DataFrame, logs: pl.DataFrame, today: date, window_days: int
) -> dict[str, Any]:
    user_id = users["user_id"][0]
    start = today - timedelta(days=window_days - 1)
    logged = [d for d in logs["date"].to_list() if start <= d <= today]
    recent = logs.filter(pl.col("date") <= today)
    model_items, explained = model_triggers(forecaster, users, recent, logged)
    has_cycle = bool(users["has_menstrual_cycle"][0])
    # only triggers that applied on some day of this person's diary (never a cycle without one)
    diary_items = [
        t
        for t in diary_triggers(users, recent)
        if t["days_present"] > 0 and (has_cycle or t["group"] != "cycle")
    ]
    route = forecaster.route(_current_phase(recent, today))
    return {
        "user_id": user_id,
        "window_days": window_days,
        "days_analysed": explained,
        "model_name": route.model_name,
        "model_version": route.model_version,
        "model_explains": route.explains,
        "model_triggers": model_items,
        "diary_triggers": diary_items,
        "top_triggers": rank_groups(model_items, diary_items, has_cycle),
        "has_menstrual_cycle": has_cycle,
        "history_days": recent.filter(pl.col("date") < today).height,
    }


def _current_phase(logs: pl.DataFrame, today: date) -> str:
    return phase_of(logs.filter(pl.col("date") < today).height + 1)


# ------------------------------------------------------------ weekly stats


def week_stats(
    logs: pl.DataFrame,
    predictions: Sequence[Any],
    start: date,
    end: date,
    medications: pl.DataFrame | None = None,
    risk: Thresholds | None = None,
) -> dict[str, Any]:
    """Diary, medication and forecast summary of the days ``start..end`` (inclusive).

    ``medication_days``: days with an acute medication intake (the clinical diary; null
    without it). The forecasts' accuracy over the week is the track record
    (``insights.track_record``) of its scored forecasts at the service's thresholds.
    """
    week = logs.filter(pl.col("date").is_between(start, end))
    before = logs.filter(pl.col("date") == start - timedelta(days=1))
    occurred = week["migraine_occurred"].to_list()
    previous = before["migraine_occurred"].to_list()[:1] or [None]
    by_date = dict(zip(week["date"].to_list(), occurred, strict=True))
    started = 0
    for offset in range((end - start).days + 1):
        d = start + timedelta(days=offset)
        prev = by_date.get(d - timedelta(days=1), previous[0] if d == start else None)
        if by_date.get(d) is True and prev is not True:
            started += 1
    attack_rows = week.filter(pl.col("migraine_occurred").fill_null(False))
    symptoms = week["symptoms"].to_list()
    forecasts = [p for p in predictions if start <= p.date <= end]
    record = track_record(scored_days(forecasts), risk, end) if risk is not None else None
    return {
        "start": start,
        "end": end,
        "days_logged": week.height,
        "migraine_days": sum(v is True for v in occurred),
        "attacks_started": started,
        "medication_days": _medication_days(medications, start, end),
        "mean_severity": _mean(attack_rows["migraine_severity"].to_list()),
        "total_duration_hours": (
            round(
                float(
                    sum(
                        v for v in attack_rows["migraine_duration_hours"].to_list() if v is not None
                    )
                ),
                2,
            )
            if attack_rows["migraine_duration_hours"].drop_nulls().len()
            else None
        ),
        "mean_sleep_hours": _mean(week["sleep_hours"].to_list()),
        "poor_sleep_nights": sum(v is False for v in week["sleep_quality_good"].to_list()),
        "mean_stress": _mean(week["stress_level"].to_list()),
        "alcohol_drinks": int(sum(v or 0 for v in week["alcohol_drinks"].to_list())),
        "mean_caffeine_drinks": _mean(week["caffeine_drinks"].to_list()),
        "mean_water_glasses": _mean(week["water_glasses"].to_list()),
        "mean_screen_time_hours": _mean(week["screen_time_hours"].to_list()),
        "skipped_meals": int(sum(v or 0 for v in week["skipped_meals"].to_list())),
        "symptom_days": {s: sum(1 for day in symptoms if day and s in day) for s in SYMPTOMS},
        "mean_forecast_probability": _mean([p.probability for p in forecasts]),
        "forecasts": len(forecasts),
        "scored_forecasts": record["n_scored"] if record else 0,
        "forecast_brier_score": record["brier_score"] if record else None,
        "forecast_accuracy": record["accuracy"] if record else None,
    }


def _medication_days(medications: pl.DataFrame | None, start: date, end: date) -> int | None:
    if medications is None:
        return None
    acute = medications.filter((pl.col("purpose") == "acute") & pl.col("date").is_between(start, end))
    return acute["date"].n_unique()


COMPARED = (
    "days_logged",
    "migraine_days",
    "attacks_started",
    "medication_days",
    "mean_severity",
    "mean_sleep_hours",
    "poor_sleep_nights",
    "mean_stress",
    "alcohol_drinks",
    "mean_caffeine_drinks",
    "mean_water_glasses",
    "mean_screen_time_hours",
    "skipped_meals",
    "mean_forecast_probability",
    "forecast_brier_score",
    "forecast_accuracy",
)
USUAL_WEEKS = 4  # "your usual week": the mean of the 4 weeks before this one (weeks with a logged day)


def _difference(a: Any, b: Any) -> float | None:
    return None if a is None or b is None else round(float(a) - float(b), 3)


def weekly_stats(
    user_id: str,
    logs: pl.DataFrame,
    predictions: Sequence[Any],
    today: date,
    medications: pl.DataFrame | None = None,
    risk: Thresholds | None = None,
) -> dict[str, Any]:
    """This week (the 7 days ending today) against the previous week and against the usual week
    (the mean over the ``USUAL_WEEKS`` weeks before it that have a logged day)."""
    weeks = [
        week_stats(logs, predictions, today - timedelta(days=7 * k + 6), today - timedelta(days=7 * k), medications, risk)
        for k in range(USUAL_WEEKS + 1)
    ]
    this, last = weeks[0], weeks[1]
    logged_before = [w for w in weeks[1:] if w["days_logged"]]
    usual: dict[str, float | None] = {}
    for k in COMPARED:
        values = [w[k] for w in logged_before if w[k] is not None]
        usual[k] = round(float(np.mean(values)), 3) if values else None
    return {
        "user_id": user_id,
        "this_week": this,
        "previous_week": last,
        "changes": {k: _difference(this[k], last[k]) for k in COMPARED},
        "usual_week": usual,
        "usual_weeks_counted": len(logged_before),
        "changes_vs_usual": {k: _difference(this[k], usual[k]) for k in COMPARED},
    }


# --------------------------------------------------------- recommendations


def _evidence_model(t: dict[str, Any]) -> str:
    return (
        f"raised your forecasts' odds x{t['odds_multiplier']:.2f} on average on the days it was "
        f"present (in the day's top {TOP_TRIGGERS} on {plural(t['days_in_top'], 'day')})"
    )


def _evidence_diary(t: dict[str, Any]) -> str:
    return (
        f"{t['trigger'].replace('_', ' ')}: attacks began on {t['onsets_present']} of "
        f"{plural(t['days_present'], 'day')} with it ({(t['rate_present'] or 0):.0%}) vs "
        f"{t['onsets_absent']} of {t['days_absent']} without ({(t['rate_absent'] or 0):.0%})"
    )


def _keep_logging(days_logged_14: int, priority: int) -> dict[str, Any]:
    return {
        "group": "diary",
        "name": GROUP_NAMES["diary"],
        "priority": priority,
        "basis": BASIS_DIARY,
        "action": ACTIONS["diary"],
        "evidence": f"you logged {days_logged_14} of the last 14 days",
    }


def new_user_recommendations(
    prior: dict[str, float], has_menstrual_cycle: bool, days_logged_14: int
) -> list[dict[str, Any]]:
    """What every route tells a person without a diary day before today: the labelled prior."""
    out = clinical_prior_recommendations(prior, has_menstrual_cycle, ACTIONS)
    return [*out, _keep_logging(days_logged_14, len(out) + 1)]


def recommendations(
    insight: dict[str, Any],
    days_logged_14: int,
    prior: dict[str, float],
    what_ifs: Sequence[dict[str, Any]] = (),
) -> list[dict[str, Any]]:
    """At most ``MAX_RECOMMENDATIONS``, one per habit group, with the user's own numbers: the
    what-ifs first (the model's counterfactual forecasts, ``service.what_if``), then the top
    trigger groups of the model's explanations and the diary."""
    if insight["history_days"] == 0:
        return new_user_recommendations(prior, insight["has_menstrual_cycle"], days_logged_14)
    out: list[dict[str, Any]] = [
        {
            "group": w["group"],
            "name": w["name"],
            "priority": i,
            "basis": BASIS_WHAT_IF,
            "action": ACTIONS[w["group"]],
            "evidence": w["sentence"],
        }
        for i, w in enumerate(what_ifs[:MAX_RECOMMENDATIONS], start=1)
    ]
    model_by_group = {t["group"]: t for t in insight["model_triggers"]}
    diary_by_group: dict[str, dict[str, Any]] = {}
    for t in insight["diary_triggers"]:
        diary_by_group.setdefault(t["group"], t)
    named = {r["group"] for r in out}
    for group in insight["top_triggers"]:
        if group not in ACTIONS or group in named or len(out) == MAX_RECOMMENDATIONS:
            continue
        evidence = [_evidence_model(model_by_group[group])] if group in model_by_group else []
        if group in diary_by_group and (diary_by_group[group]["relative_risk"] or 0) > 1:
            evidence.append(_evidence_diary(diary_by_group[group]))
        out.append(
            {
                "group": group,
                "name": GROUP_NAMES[group],
                "priority": len(out) + 1,
                "basis": BASIS_FORECAST if group in model_by_group else BASIS_DIARY,
                "action": ACTIONS[group],
                "evidence": "; ".join(evidence),
            }
        )
    if len(out) < MAX_RECOMMENDATIONS and days_logged_14 < 14:
        out.append(_keep_logging(days_logged_14, len(out) + 1))
    return out


def forecast_recommendations(
    forecast: Forecast, prior: dict[str, float], has_menstrual_cycle: bool, days_logged_14: int
) -> list[dict[str, Any]]:
    """Recommendations stored with a forecast: from its own top triggers, or the labelled prior
    for a person without a diary day before it (the same as ``/insights/recommendations``)."""
    if forecast.history_days == 0:
        return new_user_recommendations(prior, has_menstrual_cycle, days_logged_14)
    return [
        {
            "group": t["group"],
            "name": t["name"],
            "priority": i,
            "basis": BASIS_FORECAST,
            "action": ACTIONS[t["group"]],
            "evidence": f"raises today's odds x{t['odds_multiplier']:.2f}",
        }
        for i, t in enumerate((t for t in forecast.top_triggers if t["group"] in ACTIONS), start=1)
    ][:MAX_RECOMMENDATIONS]
