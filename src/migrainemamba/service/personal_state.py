"""The personal model's per-user state in the database: kept current on outcomes, served on forecasts.

The personal model (``models.personal``) forecasts day D from a posterior over the person's
labelled days before D: refitted in full at the start of each week of their grid (weeks
counted from their first diary day) and updated online after each labelled day. The stage
runs that loop over a whole cohort; the service keeps each person's posterior in
``personal_states`` (``models_personal``) and resumes the *same* loop
(``PersonalModel.resume`` -> ``models.personal.advance``) from it, so the served forecast of
a day is the offline pipeline's prequential forecast of that day (the walk test checks 1e-6).

When it moves
-------------
- **Outcome** (``after_outcome``, inside the outcome's writer transaction, the user's row
  locked: writers of one person are serialised, so two outcomes cannot interleave): the state
  is moved to the day after the latest day with a reported outcome, with the online update of
  each newly labelled day and the weekly refit when a week starts on the way. Time is bounded
  by the diary: one feature pass over it, the offset model on the days since the stored state
  (or every day when a refit is due), O(K^2) per day, one refit (Newton on the labelled days,
  K = 14 terms) per week crossed. An update that fails on bad data (``STATE_UPDATE_FAILURES``)
  never fails the outcome's write (``absorb_outcome``): it is rolled back to a savepoint, the
  state is deleted and the failure logged; the next forecast rebuilds the state from the diary.
  Any other error (a bug, a vanished database) fails the request and the outcome with it.
- **Forecast** (``StatefulPredict``, in the forecast's writer transaction): the stored state is
  moved, in memory, over the days between it and the forecast day (unlabelled days: nothing to
  absorb; a refit if a week starts), then D is forecast and explained from it
  (``PersonalModel.last_day`` / ``explain_last``: one resumption, the population model run once
  on D, no replay). A diary with no stored state (a what-if's) is replayed once (``ReplayOnce``).

Stale means rebuilt, never served
---------------------------------
A stored state is used only if its model (name, version) is the one serving, its first day is
the grid's first day, its terms are the model's, it lies on or before the day asked for, and
``inputs_fingerprint`` equals the hash of the profile and of every diary row before its
``through_date`` *now*, and its mean and covariance are finite arrays of the model's shape.
Otherwise (no state yet, a diary day before it edited, added or removed -- a late outcome of a
day the state has passed included --, a profile edit, a new model, a malformed row) it is rebuilt
from the diary by the same loop from day 0 and stored again. A diary edit never leaves a state that disagrees with the offline forecast.
"""

from __future__ import annotations

import logging
from datetime import date, timedelta
from typing import Any

import numpy as np
import polars as pl
from sqlalchemy import delete, select
from sqlalchemy.exc import DataError
from sqlalchemy.orm import Session

from migrainemamba.data.schema import DAILY_LOG_COLUMNS, USER_COLUMNS
from migrainemamba.features import build_features
from migrainemamba.models.base import ForecastBatch
from migrainemamba.models.personal import LastDay, PersonalModel, UserState
from migrainemamba.release.routing import Route
from migrainemamba.service import crud
from migrainemamba.service.forecasting import Forecaster, fingerprint
from migrainemamba.service.metrics import service_metrics
from migrainemamba.service.models_personal import PersonalState

log = logging.getLogger(__name__)

PERSONAL = "personal"

# What the state update raises on data it cannot use, all cured by dropping the derived state and
# rebuilding it from the diary: the loop's own checks (ValueError: a stored state or grid that
# does not fit), a singular Hessian in the weekly refit (LinAlgError, from np.linalg.solve/inv;
# a ValueError too, named for the reader) and numbers the database refuses (DataError: e.g. NaN
# in PostgreSQL's JSON). Nothing else is caught: a bug must fail loudly, and a vanished database
# (OperationalError) must answer 503 (service.errors), not be logged away with the state dropped.
STATE_UPDATE_FAILURES: tuple[type[Exception], ...] = (ValueError, np.linalg.LinAlgError, DataError)


def personal_route(forecaster: Forecaster) -> Route | None:
    """The route of a phase served by the personal family (the same model serves all its phases), if any."""
    for route in forecaster.routes.values():
        if route.model_name == PERSONAL and isinstance(route.model, PersonalModel):
            return route
    return None


def inputs_fingerprint(users: pl.DataFrame, logs: pl.DataFrame, before: date) -> str:
    """Hash of the profile and of every diary row dated before ``before`` (contract columns)."""
    rows = logs.filter(pl.col("date") < before).sort("date").select([c.name for c in DAILY_LOG_COLUMNS])
    return fingerprint(users.select([c.name for c in USER_COLUMNS]), rows)


def get_state(session: Session, user_id: str) -> PersonalState | None:
    return session.scalar(select(PersonalState).where(PersonalState.user_id == user_id))


def _usable(row: PersonalState | None, route: Route, first: date, stop: date, users: pl.DataFrame, logs: pl.DataFrame) -> UserState | None:
    """The stored state as a :class:`UserState` if it may be resumed towards ``stop`` (module docstring)."""
    if row is None:
        return None
    model: PersonalModel = route.model  # type: ignore[assignment]
    if (
        (row.model_name, row.model_version) != (route.model_name, route.model_version)
        or row.first_date != first
        or row.through_date > stop
        or row.terms != list(model.config.terms)  # compared as stored: a corrupt value is stale, not a TypeError
        or row.inputs_fingerprint != inputs_fingerprint(users, logs, row.through_date)
    ):
        return None
    k = len(model.config.terms)
    try:
        mean, cov = np.array(row.mean, float), np.array(row.cov, float)
    except (TypeError, ValueError):  # ragged or not numbers: a corrupt row
        mean = cov = np.empty(0)
    if mean.shape != (k,) or cov.shape != (k, k) or not (np.isfinite(mean).all() and np.isfinite(cov).all()):
        log.warning("personal state of %s is malformed (mean %s, cov %s); rebuilt from the diary", row.user_id, mean.shape, cov.shape)
        return None
    return UserState(row.through_day, mean, cov, row.refits, row.updates)


def save_state(
    session: Session, user_id: str, route: Route, first: date, state: UserState, users: pl.DataFrame, logs: pl.DataFrame
) -> PersonalState:
    """Insert or replace the user's state (the caller's transaction holds the user's writer lock)."""
    model: PersonalModel = route.model  # type: ignore[assignment]
    through = first + timedelta(days=int(state.through))
    values: dict[str, Any] = {
        "model_name": route.model_name,
        "model_version": route.model_version,
        "first_date": first,
        "through_date": through,
        "through_day": int(state.through),
        "terms": list(model.config.terms),
        "mean": [float(v) for v in state.mean],
        "cov": [[float(v) for v in row] for row in state.cov],
        "refits": int(state.refits),
        "updates": int(state.updates),
        "inputs_fingerprint": inputs_fingerprint(users, logs, through),
    }
    # a concurrent first state (a writer without the lock) is updated, not duplicated
    return crud.upsert(session, PersonalState, {"user_id": user_id}, values)


def _grid(users: pl.DataFrame, logs: pl.DataFrame, target: date | None) -> pl.DataFrame:
    dates = None if target is None else pl.DataFrame({"user_id": [users["user_id"][0]], "date": [target]})
    return build_features(users, logs, forecast_dates=dates)


def after_outcome(session: Session, user_id: str, forecaster: Forecaster, users: pl.DataFrame, logs: pl.DataFrame) -> PersonalState | None:
    """Move the user's state to the day after their latest reported outcome (module docstring).

    ``logs``: the whole diary as it stands in this transaction. Nothing to do (None) when no phase
    is served by the personal family or no outcome is reported yet.
    """
    route = personal_route(forecaster)
    reported = logs.filter(pl.col("migraine_occurred").is_not_null())
    if route is None or reported.is_empty():
        return None
    model: PersonalModel = route.model  # type: ignore[assignment]
    stop_date = reported["date"].max() + timedelta(days=1)
    history = logs.filter(pl.col("date") < stop_date)
    first = history["date"].min()
    start = _usable(get_state(session, user_id), route, first, stop_date, users, logs)
    grid = _grid(users, history, None)
    state = model.resume(grid, start, (stop_date - first).days)
    if start is None:
        log.info("personal state of %s rebuilt from the diary (through %s)", user_id, stop_date)
    return save_state(session, user_id, route, first, state, users, logs)


def drop_state(session: Session, user_id: str) -> None:
    """Delete the user's state (derived data): the next forecast or outcome rebuilds it from the diary."""
    session.execute(delete(PersonalState).where(PersonalState.user_id == user_id))


def absorb_outcome(session: Session, user_id: str, forecaster: Forecaster, users: pl.DataFrame, logs: pl.DataFrame) -> bool:
    """:func:`after_outcome` in a savepoint of the outcome's transaction: bad data never fails the outcome.

    The outcome is the user's data; the state is derived from it. If the update fails on data it
    cannot use (``STATE_UPDATE_FAILURES``), its writes are rolled back to the savepoint, the
    stored state is deleted (the next forecast rebuilds it from the diary by the same loop: never
    a forecast from a state that missed this outcome or caused the failure) and the failure is
    logged with its traceback; the outcome's write goes on. Any other error propagates and the
    request fails with the outcome unwritten (a database outage: 503). Returns whether the state
    was updated. A drop counts in ``migrainemamba_personal_state_dropped_total`` (``/metrics``).
    """
    try:
        with session.begin_nested():
            after_outcome(session, user_id, forecaster, users, logs)
        return True
    except STATE_UPDATE_FAILURES:
        log.exception("personal state of %s not updated after an outcome; dropped, the next forecast rebuilds it", user_id)
        drop_state(session, user_id)
        service_metrics().personal_state_dropped.inc()
        return False


class ReplayOnce:
    """``Forecaster.forecast``'s ``predict`` hook for a diary without a stored state (a what-if's):
    the personal family replays the batch's diary once (:meth:`PersonalModel.resume` from day 0,
    then :meth:`PersonalModel.last_day`) and :meth:`explain` explains that forecast from the same
    state (the model's ``predict`` then ``explain`` would replay it twice, to the same numbers);
    every other family predicts and explains as usual."""

    def __init__(self) -> None:
        self._last: tuple[ForecastBatch, LastDay] | None = None  # the batch predicted last and its forecast

    def __call__(self, route: Route, batch: ForecastBatch) -> np.ndarray:
        self._last = None
        model = route.model
        if route.model_name != PERSONAL or not isinstance(model, PersonalModel):
            return np.asarray(model.predict(batch), dtype=float)
        grid, state = self.resumed(route, batch)
        day = model.last_day(grid, state)
        self._last = (batch, day)
        return np.array([day.probability])

    def resumed(self, route: Route, batch: ForecastBatch) -> tuple[pl.DataFrame, UserState]:
        """The person's grid up to the batch's one target day and their state before it: from day 0."""
        model: PersonalModel = route.model  # type: ignore[assignment]
        grid, stop = target_grid(batch, batch.targets["user_id"][0])
        return grid, model.resume(grid, None, stop)

    def explain(self, route: Route, batch: ForecastBatch) -> list[list[dict[str, Any]]]:
        """All explanation groups of the batch's forecast (``model.explain(batch, top_k=None)``): from
        the forecast this hook made for the same batch, else the model's own (replaying) explain."""
        model = route.model
        if self._last is not None and self._last[0] is batch and isinstance(model, PersonalModel):
            return [model.explain_last(batch, self._last[1])]
        return model.explain(batch, top_k=None)  # type: ignore[attr-defined]


class StatefulPredict(ReplayOnce):
    """:class:`ReplayOnce` in the forecast's writer transaction: the personal family forecasts from
    the user's stored state (resumed to the day, rebuilt and stored if stale) instead of day 0."""

    def __init__(self, session: Session, user_id: str, persist: bool = True) -> None:
        super().__init__()
        self.session = session
        self.user_id = user_id
        self.persist = persist  # False in a reader's transaction: a rebuild stays in memory
        self.rebuilt = False

    def resumed(self, route: Route, batch: ForecastBatch) -> tuple[pl.DataFrame, UserState]:
        return resumed_state(self.session, self.user_id, route, batch, self)


def target_grid(batch: ForecastBatch, user_id: str) -> tuple[pl.DataFrame, int]:
    """The person's grid up to the batch's one target day, and that day's index in it."""
    if batch.targets.height != 1:
        raise ValueError("personal state: one forecast day at a time")
    day = batch.targets["date"][0]
    grid = batch.precomputed if batch.precomputed is not None else _grid(batch.users, batch.daily_logs, day)
    grid = grid.filter((pl.col("user_id") == user_id) & (pl.col("date") <= day))
    return grid, (day - grid["date"].min()).days


def resumed_state(
    session: Session, user_id: str, route: Route, batch: ForecastBatch, note: StatefulPredict | None = None
) -> tuple[pl.DataFrame, UserState]:
    """The person's grid up to the batch's one target day and their state before it, resumed from
    the stored state (stored again when rebuilt, unless ``note.persist`` is False). The batch's
    diary rows before the day must be the stored diary's for the state to be used (else it is
    rebuilt from the batch's diary: a what-if that changes a past day is computed from the changed
    diary, and never stored when not persisting)."""
    model: PersonalModel = route.model  # type: ignore[assignment]
    grid, stop = target_grid(batch, user_id)
    day, first = batch.targets["date"][0], grid["date"].min()
    row = get_state(session, user_id)
    stored = _usable(row, route, first, day, batch.users, batch.daily_logs)
    state = model.resume(grid, stored, stop)
    ahead = row is not None and row.through_date > day  # today's outcome is in: keep that state
    if stored is None and not ahead and (note is None or note.persist):  # missing or stale: rebuilt; keep it
        save_state(session, user_id, route, first, state, batch.users, batch.daily_logs)
        service_metrics().personal_state_rebuilt.inc()
        if note is not None:
            note.rebuilt = True
    return grid, state
