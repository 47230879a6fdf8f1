"""What-if recommendations: the serving model's counterfactual forecasts for tomorrow.

The scenario and the changes are ``insights.what_if``'s; each diary is forecast through
``Forecaster.forecast`` (the route of its phase, the training feature code, the personal
model when it serves), so every number shown is the model's own forecast. Ranking: by the
habit's contribution to the forecast as things stand (the model's explanation, the same
items as the forecast's top triggers; only habits that fit the person,
``service.explanations``); a model without explanations is ranked by the drop in risk.
A change is listed only when the model's risk drops by at least ``MIN_RISK_DROP``.

Cost: the forecast as things stand and its explanation come from one replay of the diary by a
stateful model (``personal_state.ReplayOnce``); a counterfactual is a forecast only (its
explanation is never read), so each diary is read by the model once.
"""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

import polars as pl

from migrainemamba.features.triggers import GROUP_NAMES
from migrainemamba.insights.what_if import ASSUMPTION, CHANGES, scenario, sentence
from migrainemamba.service.forecasting import Forecaster
from migrainemamba.service.personal_state import ReplayOnce

MIN_RISK_DROP = 0.001
FINGERPRINT = "what-if"  # these forecasts are never stored


def what_if(forecaster: Forecaster, users: pl.DataFrame, logs: pl.DataFrame, today: date) -> dict[str, Any] | None:
    """Tomorrow's risk as things stand and with each modifiable habit changed; None without a diary."""
    frame = scenario(logs, today)
    if frame is None:
        return None
    tomorrow = today + timedelta(days=1)
    base = forecaster.forecast(users, frame, tomorrow, inputs_fingerprint=FINGERPRINT, predict=ReplayOnce())
    explains = forecaster.route(base.phase).explains
    contribution = {c["group"]: float(c["log_odds"]) for c in base.contributions}
    items = []
    for change in CHANGES:
        if explains and change.group not in contribution:
            continue  # the model does not say this habit raises tomorrow's risk for this person
        applied = change.apply(frame, today)
        if applied is None:
            continue
        changed, text = applied
        counterfactual = forecaster.forecast(users, changed, tomorrow, inputs_fingerprint=FINGERPRINT, explain=False)
        if counterfactual.probability > base.probability - MIN_RISK_DROP:
            continue
        items.append(
            {
                "group": change.group,
                "name": GROUP_NAMES[change.group],
                "change": text,
                "contribution_log_odds": round(contribution[change.group], 4) if explains else None,
                "risk_now": base.probability,
                "risk_if_changed": counterfactual.probability,
                "sentence": sentence(text, base.probability, counterfactual.probability),
            }
        )
    if explains:
        items.sort(key=lambda i: -i["contribution_log_odds"])
    else:
        items.sort(key=lambda i: i["risk_if_changed"] - i["risk_now"])
    return {
        "day": tomorrow,
        "assumption": ASSUMPTION,
        "model_name": base.model_name,
        "model_version": base.model_version,
        "risk_now": base.probability,
        "items": items,
    }
