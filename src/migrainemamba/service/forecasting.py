"""The forecasting seam: phase -> (model name, version, ForecastModel), and one user's forecast.

The routing table (phase -> model) is read by :mod:`migrainemamba.release.routing`.

A forecast for user U on day D
------------------------------
The model is handed U's contract rows dated before D plus, if D is logged,
D's *morning* fields only (day fields and outcome blanked), so nothing known
later can reach it whatever the model does with ``batch.daily_logs``. Features
come from ``features.build_features`` (the training code); the phase is the
``phase`` column of D's feature row, and it picks the route. Top triggers come
from the model's ``explain(batch, top_k)`` when it has one.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import numpy as np
import polars as pl
import yaml

from migrainemamba.config import repo_root
from migrainemamba.data.schema import (
    DAILY_LOG_COLUMNS,
    DAILY_LOGS_SCHEMA,
    MORNING_FIELDS,
    USER_COLUMNS,
    USERS_SCHEMA,
)
from migrainemamba.features import PHASES, build_features, phase_of
from migrainemamba.models.base import ForecastBatch
from migrainemamba.models.registry import ModelLoader
from migrainemamba.release.routing import BUILTIN_VERSION, Route, builtin_routes, load_routing_table
from migrainemamba.service.explanations import fitting, present_groups
from migrainemamba.service.settings import Settings

log = logging.getLogger(__name__)

TOP_TRIGGERS = 3
# explanation groups that are not habits a person can act on: never shown as triggers
NOT_TRIGGERS: frozenset[str] = frozenset({"diary", "person"})
# confidence = weighted data sufficiency (see confidence())
CONFIDENCE_FULL_HISTORY_DAYS = 30

# ------------------------------------------------------------ contract frames


def users_frame(user: Any) -> pl.DataFrame:
    """The one-row contract ``users`` frame of a user row (any object with the contract attributes)."""
    return pl.DataFrame(
        [{c.name: getattr(user, c.name) for c in USER_COLUMNS}], schema=USERS_SCHEMA
    )


def logs_frame(logs: Sequence[Any]) -> pl.DataFrame:
    """The contract ``daily_logs`` frame of diary rows, sorted by date."""
    rows = [{c.name: getattr(r, c.name) for c in DAILY_LOG_COLUMNS} for r in logs]
    return pl.DataFrame(rows, schema=DAILY_LOGS_SCHEMA).sort("date")


def visible_logs(logs: pl.DataFrame, day: date) -> pl.DataFrame:
    """What a forecast for ``day`` may see: rows before it, plus its morning fields only.

    A row of ``day`` without any morning field is left out entirely, so logging
    only day fields or the outcome never changes the forecast's input.
    """
    past = logs.filter(pl.col("date") < day)
    today = logs.filter(pl.col("date") == day)
    today = today.filter(pl.any_horizontal(pl.col(f).is_not_null() for f in MORNING_FIELDS))
    if today.height:
        hidden = [
            c for c in DAILY_LOGS_SCHEMA if c not in MORNING_FIELDS and c not in ("user_id", "date")
        ]
        today = today.with_columns(
            pl.lit(None, dtype=DAILY_LOGS_SCHEMA[c]).alias(c) for c in hidden
        )
        past = pl.concat([past, today])
    return past


def fingerprint(*parts: Any) -> str:
    """A stable hash of JSON-able parts (frames as rows)."""

    def plain(obj: Any) -> Any:
        if isinstance(obj, pl.DataFrame):
            return obj.rows()
        return obj

    payload = json.dumps([plain(p) for p in parts], default=str, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()


def onset_labels(
    users: pl.DataFrame, logs: pl.DataFrame, days: Sequence[date]
) -> dict[date, tuple[bool | None, bool | None]]:
    """``(migraine_occurred, onset)`` per day, by the training label rule (``features``).

    ``onset`` is null where the day is not scorable: its outcome or the previous
    day's is not reported, or an attack was already running.
    """
    if not days or logs.is_empty():
        return {d: (None, None) for d in days}
    occurred = dict(zip(logs["date"].to_list(), logs["migraine_occurred"].to_list(), strict=True))
    if all(occurred.get(d) is None for d in days):  # no outcome reported: no onset, no features needed
        return {d: (None, None) for d in days}
    labels = build_features(users, logs).filter(pl.col("date").is_in(list(days)))
    onset = dict(zip(labels["date"].to_list(), labels["onset"].to_list(), strict=True))
    return {d: (occurred.get(d), onset.get(d)) for d in days}


# ------------------------------------------------------------------ forecasts


@dataclass
class Forecast:
    user_id: str
    date: date
    phase: str
    probability: float
    risk_level: str
    confidence: float
    model_name: str
    model_version: str
    top_triggers: list[dict[str, Any]] = field(default_factory=list)
    inputs_fingerprint: str = ""
    history_days: int = 0  # diary days before the forecast day
    # every habit group the explanation may name (``explanations.fitting``), largest first: the
    # contributions the top triggers and the what-if recommendations are read from
    contributions: list[dict[str, Any]] = field(default_factory=list)


def confidence(row: Mapping[str, Any], has_menstrual_cycle: bool) -> float:
    """How much of its input the forecast had, 0..1 (not a statistical interval).

    0.5 x history (days logged before, saturating at 30) + 0.25 x the share of
    the last 14 days logged + 0.25 x the share of this morning's fields given
    (menstruating counts only for people with a cycle).
    """
    history = min(1.0, (row.get("days_logged_before") or 0.0) / CONFIDENCE_FULL_HISTORY_DAYS)
    recent = row.get("share_logged_14_days") or 0.0
    morning = [f for f in MORNING_FIELDS if f != "menstruating" or has_menstrual_cycle]
    known = sum(row.get(f) is not None for f in morning) / len(morning)
    return round(float(np.clip(0.5 * history + 0.25 * recent + 0.25 * known, 0.0, 1.0)), 3)


def _triggers(fitting_items: list[dict[str, Any]], k: int) -> list[dict[str, Any]]:
    """The ``k`` largest of one explanation's items that fit the person (``explanations.fitting``)."""
    return [
        {
            "group": e["group"],
            "name": e["name"],
            "log_odds": round(float(e["log_odds"]), 4),
            "odds_multiplier": round(float(np.exp(e["log_odds"])), 4),
        }
        for e in fitting_items[:k]
    ]


Predict = Callable[[Route, ForecastBatch], np.ndarray]


def model_predict(route: Route, batch: ForecastBatch) -> np.ndarray:
    """The routed model's own prediction (a stateful family replays the diary: exact, slower)."""
    return np.asarray(route.model.predict(batch), dtype=float)


class Forecaster:
    """Routes each forecast to the model of its phase and turns its output into a :class:`Forecast`."""

    def __init__(self, routes: Mapping[str, Route], settings: Settings, source: str) -> None:
        missing = [p for p in PHASES if p not in routes]
        if missing:
            raise ValueError(f"forecaster: no route for phases {missing}")
        self.routes = dict(routes)
        self.settings = settings
        self.source = source

    @classmethod
    def from_settings(
        cls, settings: Settings, loaders: Mapping[str, ModelLoader] | None = None
    ) -> Forecaster:
        if settings.routing_table_path is None:
            log.info(
                "no ROUTING_TABLE_PATH: every phase is served by the built-in running base rate"
            )
            return cls(builtin_routes(), settings, source=BUILTIN_VERSION)
        path = settings.routing_table_path
        return cls(load_routing_table(path, loaders), settings, source=str(path))

    def route(self, phase: str) -> Route:
        return self.routes[phase]

    def status(self) -> dict[str, Any]:
        return {
            "ok": True,
            "source": self.source,
            "routes": {
                p: {
                    "model": r.model_name,
                    "version": r.model_version,
                    "path": r.path,
                    "explains": r.explains,
                }
                for p, r in self.routes.items()
            },
        }

    def forecast(
        self,
        users: pl.DataFrame,
        logs: pl.DataFrame,
        day: date,
        inputs_fingerprint: str | None = None,
        predict: Predict | None = None,
        explain: bool = True,
    ) -> Forecast:
        """The forecast for ``day`` of the single user in ``users`` (see the module docstring).

        ``inputs_fingerprint``: the caller's fingerprint of the inputs (else computed here).
        ``predict``: how the routed model predicts (default ``route.model.predict(batch)``); the
        forecast route passes ``personal_state.StatefulPredict`` so the personal family resumes the
        user's stored state instead of replaying the whole diary (same number either way). A
        ``predict`` with an ``explain(route, batch)`` method (all groups of the batch's forecasts,
        as ``model.explain(batch, top_k=None)``) explains the forecast too, from that same state.
        ``explain=False``: the probability only, no contributions nor top triggers (a what-if's
        counterfactual: its explanation is never read).
        """
        user_id = users["user_id"][0]
        seen = visible_logs(logs, day)
        target = pl.DataFrame({"user_id": [user_id], "date": [day]})
        features = build_features(users, seen, forecast_dates=target)
        batch = ForecastBatch(users, seen, target, precomputed=features)
        row = batch.features().row(0, named=True)
        route = self.route(row["phase"])
        probability = float(np.asarray((predict or model_predict)(route, batch), dtype=float)[0])
        if not np.isfinite(probability) or not 0.0 <= probability <= 1.0:
            raise RuntimeError(
                f"model {route.model_name} {route.model_version} returned {probability} for {user_id} {day}"
            )
        contributions: list[dict[str, Any]] = []
        if explain and route.explains:
            present = present_groups(batch.features().head(1), bool(users["has_menstrual_cycle"][0]))[0]
            hook = getattr(predict, "explain", None)  # a stateful hook explains from its own computation
            items = hook(route, batch) if callable(hook) else route.model.explain(batch, top_k=None)  # type: ignore[attr-defined]
            contributions = fitting(items[0], present - NOT_TRIGGERS)
        return Forecast(
            user_id=user_id,
            date=day,
            phase=row["phase"],
            probability=probability,
            risk_level=self.settings.risk_level(probability),
            confidence=confidence(row, bool(users["has_menstrual_cycle"][0])),
            model_name=route.model_name,
            model_version=route.model_version,
            top_triggers=_triggers(contributions, TOP_TRIGGERS),
            contributions=contributions,
            inputs_fingerprint=inputs_fingerprint or self.inputs_fingerprint(users, logs, day),
            history_days=int(row.get("days_logged_before") or 0),
        )

    def inputs_fingerprint(self, users: pl.DataFrame, logs: pl.DataFrame, day: date) -> str:
        """Changes exactly when something a forecast for ``day`` sees changes (or its model would)."""
        seen = visible_logs(logs, day)
        days_before = seen.filter(pl.col("date") < day).height
        route = self.route(phase_of(days_before + 1))
        return fingerprint(day, users, seen, route.model_name, route.model_version)

    def explain_days(
        self, users: pl.DataFrame, logs: pl.DataFrame, days: Sequence[date]
    ) -> dict[date, list[dict[str, Any]]]:
        """The explanation items that fit the person (``explanations``) for each of ``days`` whose
        routed model explains.

        One batch over the diary: each day's *features* see only earlier rows and its
        morning fields (``build_features``), but ``batch.daily_logs`` is the whole diary,
        as in the evaluation harness, so a model must read its inputs through
        ``batch.features()`` or respect the dates (the harness audits this).
        """
        if not days:
            return {}
        user_id = users["user_id"][0]
        targets = pl.DataFrame({"user_id": [user_id] * len(days), "date": list(days)})
        features = build_features(users, logs, forecast_dates=targets)
        batch = ForecastBatch(users, logs, targets, precomputed=features)
        phases = batch.features()["phase"].to_list()
        has_cycle = bool(users["has_menstrual_cycle"][0])
        present = dict(zip(batch.targets["date"].to_list(), present_groups(batch.features(), has_cycle), strict=True))
        out: dict[date, list[dict[str, Any]]] = {}
        for phase in sorted(set(phases)):
            route = self.route(phase)
            if not route.explains:
                continue
            mask = np.array([p == phase for p in phases])
            sub = batch.subset(mask)
            for d, items in zip(
                sub.targets["date"].to_list(), route.model.explain(sub, top_k=None), strict=True
            ):  # type: ignore[attr-defined]
                out[d] = fitting(items, present[d] - NOT_TRIGGERS)
        return out

    def clinical_prior(self) -> dict[str, float]:
        """The clinical odds-ratio table of the serving models (their ``odds_ratios``), else the
        project's default prior file when it is at hand (not inside a bento), else empty."""
        for route in self.routes.values():
            table = getattr(route.model, "odds_ratios", None)
            if isinstance(table, Mapping) and table:
                return {str(k): float(v) for k, v in table.items()}
        path = repo_root() / "configs" / "prior" / "within_person.yaml"
        if path.is_file():
            return {str(k): float(v) for k, v in yaml.safe_load(path.read_text())["odds_ratios"].items()}
        return {}
