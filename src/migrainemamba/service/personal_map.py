"""The person's own trigger map for ``/insights/triggers``: from day 31, else the clinical prior.

From the day the forecast enters phase ``31+`` (30 days logged before today), the map of
``models.trigger_map`` is computed on the person's diary, by the function the stage uses
(``personal_map``: every trigger together in one Bayesian logistic per person, prior and class
rule estimated by the ``personalize`` stage and shipped in the personal model's folder,
``trigger_map.json``). Without a personal model in the routing table (or one without the map
setup) the ``n_of_1`` method of the same module is used (each trigger alone, no prior needed),
with the default class rule; ``method`` says which.

Per trigger: the class (``trigger``, ``protective``, ``no_association``, ``not_enough_data``),
the odds ratio with its interval (exp of log OR +- z sd, z of the class rule), the evidence
(days exposed, onsets after exposure) and, where there is not enough data, about how many more
attacks would settle it (:func:`more_attacks_needed`). Before day 31: the clinical prior's odds
ratios, labelled as such. Never a trigger the person cannot have: the cycle group only for
people with a menstrual cycle (``service.explanations`` presence rule).
"""

from __future__ import annotations

import math
from datetime import date
from typing import Any

import numpy as np
import polars as pl

from migrainemamba.features import build_features, phase_of
from migrainemamba.features.retrospective import RETROSPECTIVE_GROUP
from migrainemamba.features.triggers import GROUP_NAMES, TRIGGER_GROUP
from migrainemamba.models.personal import PersonalModel
from migrainemamba.models.trigger_map import ClassRule, MapRows, n_of_1_map, personal_map
from migrainemamba.service.explanations import BASIS_PRIOR
from migrainemamba.service.forecasting import Forecaster

PERSONAL_PHASE = "31+"
MAX_MORE_ATTACKS = 100  # beyond this, "more than 100" (the answer is then mostly the prior's)
BASIS_PERSONAL = "your diary (personal trigger map)"
ATTACKS_NEEDED_RULE = (
    "assuming the estimate stays where it is, each further attack adds q(1-q) to the precision of "
    "the log odds ratio (q: share of your labelled days with the trigger); N is the number of attacks "
    "until the interval excludes no effect or rules out an odds ratio beyond the no-association bound "
    "(and, for a trigger, until enough attacks followed it)"
)


def more_attacks_needed(log_or: float, sd: float, n_exposed: int, n_onsets_exposed: int, n_days: int, rule: ClassRule) -> int | None:
    """About how many more attacks until a ``not_enough_data`` trigger gets a class.

    Rule (stated in the response): the estimate is assumed to stay where it is; each further
    attack adds q(1 - q) to the precision (1/sd^2) of its log odds ratio, q = the share of the
    person's labelled days with the trigger (the Fisher information of a log OR per event when
    onsets are rare). A class needs the interval (log OR +- z sd) to exclude 0 or to fit inside
    +-log(no_association_or): sd <= max(|log OR|, log(no_association_or) - |log OR|) / z. A
    ``trigger`` also needs ``min_onsets_exposed`` onsets after exposure, about (missing onsets) / q
    more attacks. None when the person has never had the trigger (q = 0): log such days first.
    """
    if n_days <= 0 or n_exposed <= 0:
        return None
    q = n_exposed / n_days
    gain = q * (1.0 - q)
    if gain <= 0:
        return None
    bound = math.log(rule.no_association_or)
    target_sd = max(abs(log_or), bound - abs(log_or)) / rule.z
    need = max(0.0, (1.0 / target_sd**2 - 1.0 / sd**2) / gain)
    if log_or > 0:
        need = max(need, (rule.min_onsets_exposed - n_onsets_exposed) / q)
    return math.ceil(need - 1e-9)


def _map_setup(forecaster: Forecaster) -> tuple[str, Any, ClassRule]:
    """("personal", its map prior, its rule) when a routed personal model ships one, else N-of-1."""
    for route in forecaster.routes.values():
        model = route.model
        if isinstance(model, PersonalModel) and model.map_setup is not None:
            prior, rule = model.map_setup
            return "personal", prior, rule
    return "n_of_1", None, ClassRule()


def clinical_prior_items(forecaster: Forecaster, has_menstrual_cycle: bool) -> list[dict[str, Any]]:
    """The clinical prior's odds ratios, strongest first, that can apply to the person."""
    items = []
    for trigger, ratio in forecaster.clinical_prior().items():
        group = TRIGGER_GROUP.get(trigger)
        if group is None or (group == "cycle" and not has_menstrual_cycle):
            continue
        items.append({"trigger": trigger, "group": group, "name": GROUP_NAMES[group], "odds_ratio": round(ratio, 3), "basis": BASIS_PRIOR})
    return sorted(items, key=lambda t: -t["odds_ratio"])


def trigger_map(forecaster: Forecaster, users: pl.DataFrame, logs: pl.DataFrame, today: date) -> dict[str, Any]:
    """The ``personal_map`` block of ``/insights/triggers`` (module docstring)."""
    has_cycle = bool(users["has_menstrual_cycle"][0])
    diary = logs.filter(pl.col("date") <= today)
    days_before = diary.filter(pl.col("date") < today).height
    method, prior, rule = _map_setup(forecaster)
    out: dict[str, Any] = {
        "phase": phase_of(days_before + 1),
        "days_logged": days_before,
        "personal_from_days_logged": 30,
        "method": None,
        "basis": BASIS_PRIOR,
        "interval": None,
        "attacks_needed_rule": ATTACKS_NEEDED_RULE,
        "triggers": [],
        "clinical_prior": [],
    }
    if out["phase"] != PERSONAL_PHASE:
        out["clinical_prior"] = clinical_prior_items(forecaster, has_cycle)
        return out
    features = build_features(users, diary)
    rows = MapRows.build(features, diary)
    if len(rows.user_ids) == 0:  # 30 days logged but no labelled day (outcomes never reported)
        out["clinical_prior"] = clinical_prior_items(forecaster, has_cycle)
        return out
    horizon = int(rows.days_logged_before.max()) + 1
    frame = personal_map(rows, prior, horizon, rule) if method == "personal" else n_of_1_map(rows, horizon, rule)
    n_days = len(rows.y)
    items = []
    for r in frame.iter_rows(named=True):
        group = RETROSPECTIVE_GROUP[r["trigger"]]
        if group == "cycle" and not has_cycle:
            continue
        sd = (r["hi"] - r["lo"]) / (2 * rule.z)
        needed = (
            more_attacks_needed(r["log_or"], sd, r["n_exposed"], r["n_onsets_exposed"], n_days, rule)
            if r["class"] == "not_enough_data"
            else None
        )
        items.append(
            {
                "trigger": r["trigger"],
                "group": group,
                "name": GROUP_NAMES[group],
                "class": r["class"],
                "log_odds_ratio": round(r["log_or"], 4),
                "odds_ratio": round(float(np.exp(r["log_or"])), 3),
                "odds_ratio_lo": round(float(np.exp(r["lo"])), 3),
                "odds_ratio_hi": round(float(np.exp(r["hi"])), 3),
                "days_exposed": int(r["n_exposed"]),
                "onsets_after_exposure": int(r["n_onsets_exposed"]),
                "more_attacks_needed": None if needed is None else min(needed, MAX_MORE_ATTACKS + 1),
                "note": _note(r["class"], needed),
            }
        )
    order = {"trigger": 0, "protective": 1, "not_enough_data": 2, "no_association": 3}
    items.sort(key=lambda t: (order[t["class"]], -abs(t["log_odds_ratio"])))
    out.update(
        method=method,
        basis=BASIS_PERSONAL,
        interval=f"log odds ratio +- {rule.z:g} posterior sd" if method == "personal" else f"log odds ratio +- {rule.z:g} se",
        triggers=items,
        labelled_days=n_days,
        attacks=int(rows.y.sum()),
    )
    return out


def _note(klass: str, needed: int | None) -> str:
    if klass != "not_enough_data":
        return {
            "trigger": "raises your risk: seen in your own diary",
            "protective": "goes with fewer attacks in your own diary",
            "no_association": "no strong effect either way in your own diary",
        }[klass]
    if needed is None:
        return "no logged day with it yet: its effect on you cannot be judged"
    if needed > MAX_MORE_ATTACKS:
        return f"more than {MAX_MORE_ATTACKS} more attacks needed to judge it (its effect on you looks small)"
    if needed == 0:
        return "about to be judged: keep logging"
    return f"about {needed} more attack{'s' if needed != 1 else ''} needed to judge it"
