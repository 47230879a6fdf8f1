"""The personalized model (days 31+): each person's own level and trigger sensitivities.

On top of a population model's log-odds (the offset: the foundation model), each person
``u`` gets a Bayesian logistic regression over their trigger exposures that morning
(``migrainemamba.features.triggers.TRIGGER_INDICATORS``) and their own level::

    logit p_ud = offset_ud + b_u0 + sum_k b_uk x_udk,     b_u ~ N(0, diag(tau^2))

The prior is centred on the population (b = 0: the population forecast itself); its
spreads ``tau`` are estimated across the training cohort by empirical Bayes (Laplace
marginal likelihood, ``bayes_logistic.empirical_bayes``), not set by hand.

Prequential, exactly as the service runs it (docs/architecture.md): the forecast for day
D uses only the person's labelled rows dated before D. The posterior is refitted in full
at the start of each week of the person's diary (weeks counted from their first diary
day: a refit for day D uses every labelled row before ``first_day + 7 * week(D)``), and
between refits each new outcome updates it online (``bayes_logistic.online_update``).
So the state for day D is a function of the rows before D only, whenever it is computed.

:func:`personalise` does this for many people at once (vectorised over people, one loop
over diary days); the service calls it with one person (:func:`personalise_user`). Until a
person has logged ``min_days_logged`` days (phases 1-14 and 15-30) the forecast is the
population forecast unchanged; the posterior still learns from day 1.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import polars as pl

from migrainemamba.features import build_features
from migrainemamba.features.daily import FEATURE_COLUMNS
from migrainemamba.features.triggers import (
    FEATURE_GROUPS,
    GROUP_NAMES,
    TRIGGER_GROUP,
    TRIGGER_INDICATORS,
    trigger_indicators,
)
from migrainemamba.models.base import ForecastBatch
from migrainemamba.models.bayes_logistic import (
    Posterior,
    Rows,
    empirical_bayes,
    fit_laplace,
    online_update,
    predictive_logit,
    sigmoid,
)
from migrainemamba.models.trigger_map import ClassRule, MapPrior, load_map_setup

log = logging.getLogger(__name__)

LEVEL = "level"  # the person's own level (intercept) term
META_FILE = "personal.json"
OFFSET_DIR = "offset"
LOGIT_CLIP = 1e-6

# Optional "dynamic" terms (DESIGN.md §5: allowed where they help the person): how
# strongly *this* person's onsets follow their prodrome symptoms or their own recent attack.
EXTRA_TERMS: dict[str, pl.Expr] = {
    "prodrome_yesterday": pl.col("prodrome_count_yesterday").fill_null(0) >= 1,
    "prodrome_2plus_yesterday": pl.col("prodrome_count_yesterday").fill_null(0) >= 2,
    "recent_attack": pl.col("days_since_last_attack").fill_null(99) <= 3,
}


# "Weight" terms: the person's own weight on an effect the population model has learned. The
# effect's covariate is how much the offset model's log-odds change when a set of features is
# reset to a neutral value (e.g. no attack in the last week): 0 keeps the population's response,
# a person whose attacks cluster more than most moves above 0 on ``recent_attacks``, one with a
# refractory spell after attacks below it. Unlike the extra terms, they scale what the population
# model learned rather than a hand-made indicator.
WEIGHTED_EFFECTS: dict[str, dict[str, float]] = {
    # the last week's attacks (days since the last one capped at 60 in the features)
    "recent_attacks": {"days_since_last_attack": 60.0, "attack_days_last_7_days": 0.0},
    # yesterday's and the day before's premonitory symptoms (not the person's warning-sign record)
    "prodrome": {f: 0.0 for f in FEATURE_COLUMNS if FEATURE_GROUPS[f] == "prodrome" and not f.startswith("prodrome_record_")},
}
EFFECT_GROUP = {"recent_attacks": "attacks", "prodrome": "prodrome"}
WEIGHT_SUFFIX = "_weight"


def effect_log_odds(offset_model: OffsetModel, features: pl.DataFrame, effect: str, logit: np.ndarray | None = None) -> np.ndarray:
    """The offset model's log-odds minus its log-odds with the effect's features reset
    (``logit``: its log-odds of ``features`` when the caller has them already)."""
    reset = features.with_columns(pl.lit(v).cast(features.schema[f]).alias(f) for f, v in WEIGHTED_EFFECTS[effect].items())
    base = offset_model.logit(features) if logit is None else logit
    return np.asarray(base, float) - np.asarray(offset_model.logit(reset), float)


class OffsetModel(Protocol):
    """The population model under the personal one: forecast log-odds per feature row."""

    def logit(self, features: pl.DataFrame) -> np.ndarray: ...


@dataclass
class PersonalConfig:
    """Settings of the personal family; stored with every saved model (``personal.json``)."""

    triggers: tuple[str, ...] = tuple(TRIGGER_INDICATORS)
    extra_terms: tuple[str, ...] = ()
    weighted_effects: tuple[str, ...] = ()  # the offset model's effects given a personal weight (WEIGHTED_EFFECTS)
    level: bool = True  # a personal level term on top of the offset's own (14-day) personal rate
    refit_every_days: int = 7
    min_days_logged: int = 30  # forecasts for days 1..30 stay the population's
    moderated: bool = False  # plug-in posterior mean, or MacKay's moderated predictive
    eb_max_iter: int = 60
    init_prior_sd: float = 0.3
    prior_var: dict[str, float] = field(default_factory=dict)  # estimated by fit()

    def __post_init__(self) -> None:
        self.triggers = tuple(self.triggers)
        self.extra_terms = tuple(self.extra_terms)
        self.weighted_effects = tuple(self.weighted_effects)
        unknown = sorted(set(self.weighted_effects) - set(WEIGHTED_EFFECTS))
        if unknown:
            raise ValueError(f"personal.weighted_effects: unknown {unknown}; known: {sorted(WEIGHTED_EFFECTS)}")
        unknown = sorted(set(self.triggers) - set(TRIGGER_INDICATORS))
        if unknown:
            raise ValueError(f"personal.triggers: unknown {unknown}; known: {sorted(TRIGGER_INDICATORS)}")
        unknown = sorted(set(self.extra_terms) - set(EXTRA_TERMS))
        if unknown:
            raise ValueError(f"personal.extra_terms: unknown {unknown}; known: {sorted(EXTRA_TERMS)}")
        if self.refit_every_days < 1:
            raise ValueError(f"personal.refit_every_days must be >= 1, got {self.refit_every_days}")

    @property
    def terms(self) -> tuple[str, ...]:
        weights = tuple(e + WEIGHT_SUFFIX for e in self.weighted_effects)
        return ((LEVEL,) if self.level else ()) + (*self.triggers, *self.extra_terms, *weights)


def design(features: pl.DataFrame, config: PersonalConfig, effects: np.ndarray | None = None) -> np.ndarray:
    """(rows, K) design: 1 for the level (if any), the trigger indicators, the extra terms, and
    ``effects`` (rows, len(weighted_effects)): the offset model's log-odds per weighted effect."""
    n_effects = len(config.weighted_effects)
    if n_effects and (effects is None or np.shape(effects) != (features.height, n_effects)):
        raise ValueError(f"personal.design: weighted effects {config.weighted_effects} need their log-odds per row")
    parts = [np.ones((features.height, 1))] if config.level else [np.empty((features.height, 0))]
    if config.triggers:
        parts.append(trigger_indicators(features, list(config.triggers)).to_numpy())
    if config.extra_terms:
        parts.append(
            features.select([EXTRA_TERMS[t].fill_null(False).cast(pl.Float64).alias(t) for t in config.extra_terms]).to_numpy()
        )
    if n_effects:
        parts.append(np.asarray(effects, dtype=np.float64))
    return np.hstack(parts).astype(np.float64)


@dataclass
class Diaries:
    """Many people's calendar grids as flat rows sorted by (person, date), days contiguous.

    ``t``: days since the person's first grid day; ``y``: onset (NaN where not scorable).
    """

    user_ids: list[str]
    start: np.ndarray  # (U,) first flat row of each person
    length: np.ndarray  # (U,) grid days
    t: np.ndarray  # (n,)
    group: np.ndarray  # (n,)
    x: np.ndarray  # (n, K)
    offset: np.ndarray  # (n,)
    y: np.ndarray  # (n,)
    days_logged_before: np.ndarray  # (n,)

    @classmethod
    def from_features(cls, features: pl.DataFrame, offset: np.ndarray, x: np.ndarray) -> tuple[Diaries, np.ndarray]:
        """From ``build_features`` rows (any order), the offset model's log-odds per row and the
        design per row (:meth:`PersonalModel.design`).

        Also returns ``order``: flat row i is ``features`` row ``order[i]``.
        """
        frame = features.select("user_id", "date", "onset", "days_logged_before").with_columns(
            _offset=pl.Series(np.asarray(offset, float)), _i=pl.int_range(pl.len())
        ).sort("user_id", "date")
        order = frame["_i"].to_numpy()
        users, group = np.unique(frame["user_id"].to_numpy(), return_inverse=True)
        start = np.searchsorted(group, np.arange(len(users)))
        length = np.bincount(group, minlength=len(users))
        dates = frame["date"].cast(pl.Int32).to_numpy()
        t = dates - dates[start][group]
        if np.any(t != np.arange(len(t)) - start[group]):
            raise ValueError("personal: each person's rows must be their contiguous calendar grid (build_features output)")
        y = frame["onset"].cast(pl.Float64).fill_null(np.nan).to_numpy()
        return cls(
            user_ids=[str(u) for u in users],
            start=start,
            length=length,
            t=t,
            group=group,
            x=np.asarray(x, dtype=np.float64)[order],
            offset=frame["_offset"].to_numpy(),
            y=y,
            days_logged_before=frame["days_logged_before"].to_numpy(),
        ), order


@dataclass
class Prequential:
    """Per flat row of :class:`Diaries`: the personal forecast log-odds made before the row's outcome."""

    logit: np.ndarray
    final: Posterior  # each person's state after their last row (refit + online updates)
    refits: int
    seconds: float


def personalise(diaries: Diaries, prior_var: np.ndarray, config: PersonalConfig) -> Prequential:
    """Prequential personal forecasts for every grid row of every person (vectorised over people).

    For week w of each person's diary (days 7w..7w+6 since their first day): refit on their
    labelled rows with t < 7w (warm start from the online state), then for each day forecast
    from the current posterior and, if the day is labelled, update online (:func:`advance`).
    """
    started = time.perf_counter()
    n_users, k = len(diaries.length), diaries.x.shape[1]
    state = Posterior.prior(n_users, np.zeros(k), prior_var)
    logit = np.empty(len(diaries.t))
    refits, _ = advance(diaries, state, prior_var, config, 0, int(diaries.length.max(initial=0)), logit)
    # population forecast until the person has logged min_days_logged days
    early = diaries.days_logged_before < config.min_days_logged
    logit[early] = diaries.offset[early]
    return Prequential(logit, state, refits, time.perf_counter() - started)


def _refit(diaries: Diaries, state: Posterior, prior_var: np.ndarray, active: np.ndarray, day: int) -> None:
    """The weekly refit before grid day ``day`` of the people ``active``: every labelled row before it."""
    labelled = ~np.isnan(diaries.y)
    is_active = np.zeros(len(diaries.length), bool)
    is_active[active] = True
    rows_mask = labelled & (diaries.t < day) & is_active[diaries.group]
    local = np.full(len(diaries.length), -1)
    local[active] = np.arange(len(active))
    rows = Rows(diaries.x[rows_mask], diaries.offset[rows_mask], diaries.y[rows_mask], local[diaries.group[rows_mask]], len(active))
    state.put(active, fit_laplace(rows, np.zeros(len(prior_var)), prior_var, init=state.mean[active]))


def advance(
    diaries: Diaries,
    state: Posterior,
    prior_var: np.ndarray,
    config: PersonalConfig,
    start: int,
    stop: int,
    logit: np.ndarray | None = None,
    refit_at_stop: bool = False,
    means: np.ndarray | None = None,
) -> tuple[int, int]:
    """Move every person's posterior ``state`` (in place) over grid days ``start..stop-1``.

    ``state`` on entry is the state before the forecast of day ``start`` (its weekly refit, if
    ``start`` begins a week, already done). Each day: the forecast (into ``logit``, when given)
    from the current posterior, then the online update if the day is labelled, then, when the
    next day begins a week (``refit_every_days``), the full refit on every labelled row before
    it, warm-started from the online state. A person's refit is done only if they have a row
    on that day, or, with ``refit_at_stop``, at ``stop`` itself (the service keeps the state
    ready for the forecast of day ``stop``). ``means`` (rows, K), when given, receives the posterior
    mean each forecast used (explanations). Returns (refits, online updates).

    The one loop of the personal model: the stage's cohort pass (:func:`personalise`, from day 0)
    and the service's resumption of a stored state (:meth:`PersonalModel.resume`) both run it.
    """
    labelled = ~np.isnan(diaries.y)
    step = config.refit_every_days
    refits = updates = 0
    for day in range(start, stop):
        users = np.flatnonzero(diaries.length > day)
        if len(users) == 0:
            break
        idx = diaries.start[users] + day
        current = state.take(users)
        if logit is not None:
            logit[idx] = predictive_logit(current, diaries.x[idx], diaries.offset[idx], config.moderated)
        if means is not None:
            means[idx] = current.mean
        has = labelled[idx]
        if has.any():
            upd = users[has]
            state.put(upd, online_update(current.take(np.flatnonzero(has)), diaries.x[idx[has]], diaries.offset[idx[has]], diaries.y[idx[has]]))
            updates += int(has.sum())
        nxt = day + 1
        if nxt % step == 0:
            active = np.flatnonzero(diaries.length >= nxt if refit_at_stop and nxt == stop else diaries.length > nxt)
            if len(active):
                _refit(diaries, state, prior_var, active, nxt)
                refits += 1
    return refits, updates


@dataclass
class UserState:
    """One person's posterior before the forecast of their grid day ``through`` (days since their
    first grid day), the weekly refit due on that day included: what the service persists."""

    through: int
    mean: np.ndarray  # (K,)
    cov: np.ndarray  # (K, K)
    refits: int = 0
    updates: int = 0

    def posterior(self) -> Posterior:
        return Posterior(np.array(self.mean, float)[None, :], np.array(self.cov, float)[None, :, :])


@dataclass
class LastDay:
    """One person's forecast of the last day of their grid (:meth:`PersonalModel.last_day`)."""

    date: Any
    probability: float
    contrib: np.ndarray  # (K,) each term's log-odds in the forecast (posterior mean x covariate; 0 before day 31)


def training_rows(diaries: Diaries) -> Rows:
    labelled = ~np.isnan(diaries.y)
    return Rows(diaries.x[labelled], diaries.offset[labelled], diaries.y[labelled], diaries.group[labelled], len(diaries.length))


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, float), LOGIT_CLIP, 1 - LOGIT_CLIP)
    return np.log(p) - np.log1p(-p)


class PersonalModel:
    """The ``personal`` ForecastModel: population offset + per-person Bayesian trigger model."""

    name = "personal"

    def __init__(self, config: PersonalConfig, offset_model: OffsetModel, offset_dir: str | Path | None = None) -> None:
        self.config = config
        self.offset_model = offset_model
        self.offset_dir = Path(offset_dir) if offset_dir is not None else None
        self.eb_trace: list[float] = []
        # the trigger map's prior and class rule (``trigger_map.MAP_FILE``), when the folder has them
        self.map_setup: tuple[MapPrior, ClassRule] | None = None

    @property
    def prior_var(self) -> np.ndarray:
        if not self.config.prior_var:
            raise RuntimeError("personal: the prior is not estimated; call fit() or PersonalModel.load()")
        return np.array([self.config.prior_var[t] for t in self.config.terms])

    def offset(self, features: pl.DataFrame) -> np.ndarray:
        return np.asarray(self.offset_model.logit(features), dtype=float)

    def design(self, features: pl.DataFrame, from_row: int = 0, logit: np.ndarray | None = None) -> np.ndarray:
        """The personal terms' covariates per feature row (module :func:`design`). The offset
        model's effects are computed for rows ``from_row`` onwards only (NaN before: rows not read);
        ``logit``: the offset model's log-odds per row, when the caller has them (one call fewer)."""
        names = self.config.weighted_effects
        if not names:
            return design(features, self.config)
        effects = np.full((features.height, len(names)), np.nan)
        if from_row < features.height:
            rows = features.slice(from_row)
            base = None if logit is None else np.asarray(logit, float)[from_row:]
            effects[from_row:] = np.column_stack([effect_log_odds(self.offset_model, rows, e, base) for e in names])
        return design(features, self.config, effects)

    def fit(self, train: ForecastBatch, valid: ForecastBatch | None = None, offset: np.ndarray | None = None) -> None:
        """Empirical Bayes on the training batch's labelled rows: the prior spread of every term.

        ``offset``: the offset model's log-odds per target of ``train`` (default: computed). The
        stage passes the foundation's out-of-fold log-odds: on its own training days the full
        model's are in sample, and spreads estimated around them come out too small.
        """
        features = train.features()
        offset = self.offset(features) if offset is None else np.asarray(offset, dtype=float)
        if offset.shape != (features.height,):
            raise ValueError(f"personal.fit: {offset.shape[0]} offsets for {features.height} targets")
        labelled = features["onset"].is_not_null().to_numpy()
        features, offset = features.filter(pl.Series(labelled)), offset[labelled]
        if features.height == 0:
            raise ValueError("personal.fit: the training batch has no labelled rows")
        users, group = np.unique(features["user_id"].to_numpy(), return_inverse=True)
        rows = Rows(self.design(features), offset, features["onset"].cast(pl.Float64).to_numpy(), group, len(users))
        k = len(self.config.terms)
        eb = empirical_bayes(rows, np.zeros(k), np.full(k, self.config.init_prior_sd**2), max_iter=self.config.eb_max_iter)
        self.config.prior_var = {t: float(v) for t, v in zip(self.config.terms, eb.prior_var)}
        self.eb_trace = eb.log_evidence
        log.info("personal prior sd: %s", {t: round(float(np.sqrt(v)), 3) for t, v in self.config.prior_var.items()})

    def history(self, batch: ForecastBatch) -> pl.DataFrame:
        """Every grid row of the batch's people up to their targets: precomputed or built from the diary."""
        wanted = batch.targets.select("user_id").unique()
        if batch.precomputed is not None:
            return batch.precomputed.join(wanted, on="user_id", how="semi")
        return build_features(batch.users, batch.daily_logs, forecast_dates=batch.targets.select("user_id", "date"))

    def forecast_rows(self, features: pl.DataFrame) -> tuple[pl.DataFrame, Prequential]:
        """Prequential forecasts for every row of ``features`` (whole grids): user_id, date, logit, p."""
        offset = self.offset(features)
        diaries, order = Diaries.from_features(features, offset, self.design(features, logit=offset))
        result = personalise(diaries, self.prior_var, self.config)
        frame = features.select("user_id", "date")[order].with_columns(
            logit=pl.Series(result.logit), p=pl.Series(sigmoid(result.logit))
        )
        return frame, result

    def predict(self, batch: ForecastBatch) -> np.ndarray:
        frame, _ = self.forecast_rows(self.history(batch))
        out = batch.targets.select("user_id", "date").join(frame, on=["user_id", "date"], how="left", maintain_order="left")
        if out["p"].null_count():
            raise ValueError("personal.predict: some targets have no feature row")
        return out["p"].to_numpy()

    def term_groups(self) -> list[str]:
        """The explanation group of each term: the level is the person's own ("person"), a trigger
        its habit group (``features.triggers.TRIGGER_GROUP``), the dynamic and weight terms theirs."""
        extra = {"prodrome_yesterday": "prodrome", "prodrome_2plus_yesterday": "prodrome", "recent_attack": "attacks"}
        extra |= {e + WEIGHT_SUFFIX: EFFECT_GROUP[e] for e in self.config.weighted_effects}
        return [("person" if t == LEVEL else TRIGGER_GROUP.get(t) or extra[t]) for t in self.config.terms]

    def explain(self, batch: ForecastBatch, top_k: int | None = 3) -> list[list[dict[str, Any]]]:
        """Per forecast, the ``top_k`` groups with the largest |log-odds| (``None``: all groups).

        The offset model's own groups (its ``explain``, when it has one) plus this person's
        personal terms before the forecast (posterior mean x indicator, in the term's group;
        ``personal_log_odds``), from day 31 on (before, the forecast is the offset's). With all
        groups and the plug-in forecast (``moderated: false``), their log-odds plus the offset's
        baseline give the forecast's logit. Replays the person's diary (prequential, as predict).
        """
        features = self.history(batch)
        offset = self.offset(features)
        diaries, order = Diaries.from_features(features, offset, self.design(features, logit=offset))
        means = np.zeros_like(diaries.x)
        state = Posterior.prior(len(diaries.length), np.zeros(diaries.x.shape[1]), self.prior_var)
        advance(diaries, state, self.prior_var, self.config, 0, int(diaries.length.max(initial=0)), means=means)
        contrib = means * diaries.x
        contrib[diaries.days_logged_before < self.config.min_days_logged] = 0.0
        flat = features.select("user_id", "date")[order].with_columns(_row=pl.int_range(pl.len()))
        rows = batch.targets.select("user_id", "date").join(flat, on=["user_id", "date"], how="left", maintain_order="left")["_row"]
        if rows.null_count():
            raise ValueError("personal.explain: some targets have no feature row")
        base = self._offset_items(batch, len(rows))
        return [self._grouped(items, contrib[row], top_k) for items, row in zip(base, rows.to_list(), strict=True)]

    def _offset_items(self, batch: ForecastBatch, n: int) -> list[list[dict[str, Any]]]:
        """The offset model's own explanation groups per target (its ``explain``, if it has one)."""
        offset_explain = getattr(self.offset_model, "explain", None)
        return offset_explain(batch, top_k=None) if callable(offset_explain) else [[] for _ in range(n)]

    def _grouped(self, items: list[dict[str, Any]], contrib: np.ndarray, top_k: int | None) -> list[dict[str, Any]]:
        """One forecast's explanation: the offset's groups plus the person's term contributions
        (``contrib``, one per term) in their groups, largest |log-odds| first."""
        by_group = {e["group"]: dict(e, personal_log_odds=0.0) for e in items}
        for group, value in zip(self.term_groups(), contrib, strict=True):
            if value == 0.0:
                continue
            item = by_group.setdefault(group, {"group": group, "name": GROUP_NAMES[group], "log_odds": 0.0, "personal_log_odds": 0.0})
            item["log_odds"] = float(item["log_odds"]) + float(value)
            item["personal_log_odds"] += float(value)
        ranked = sorted(by_group.values(), key=lambda e: -abs(e["log_odds"]))
        for e in ranked:
            e["odds_multiplier"] = float(np.exp(e["log_odds"]))
        return ranked if top_k is None else ranked[:top_k]

    # ----------------------------------------------- one person, resumable (the service)

    def one_diary(self, features: pl.DataFrame, offsets_from: int = 0) -> Diaries:
        """One person's grid (``build_features`` rows) as :class:`Diaries`; the offset model is
        run on grid days ``offsets_from`` onwards only (the rows a resumption reads), NaN before."""
        if features["user_id"].n_unique() != 1:
            raise ValueError(f"personal: one person's grid expected, got {features['user_id'].n_unique()} people")
        grid = features.sort("date")
        offset = np.full(grid.height, np.nan)
        if offsets_from < grid.height:
            offset[offsets_from:] = self.offset(grid.slice(offsets_from))
        diaries, _ = Diaries.from_features(grid, offset, self.design(grid, offsets_from, logit=offset))
        return diaries

    def resume(self, features: pl.DataFrame, state: UserState | None, stop: int) -> UserState:
        """One person's :class:`UserState` before the forecast of grid day ``stop``, from ``state``
        (a state of the same grid, ``state.through <= stop``; None: the prior at day 0) by the
        loop of the cohort pass (:func:`advance`), so it equals the stage's prequential state.

        ``features``: the person's grid covering at least days ``0..stop-1`` (later days are not
        read: the forecast of day ``stop`` runs the offset model on it once, :meth:`last_day`). The
        offset model runs on the days from ``state.through`` only, unless a weekly refit falls in
        between (it reads every labelled day before it); not at all when ``state`` is at ``stop``.
        Bounded: O(days since ``state``) plus one refit per week.
        """
        start = 0 if state is None else int(state.through)
        if not 0 <= start <= stop:
            raise ValueError(f"personal.resume: the state is at day {start}, asked for day {stop}")
        if features.height < stop:
            raise ValueError(f"personal.resume: the grid has {features.height} days, the state needs {stop}")
        post = Posterior.prior(1, np.zeros(len(self.config.terms)), self.prior_var) if state is None else state.posterior()
        refits = updates = 0
        if start < stop:
            step = self.config.refit_every_days
            crosses_refit = stop // step > start // step
            diaries = self.one_diary(features.sort("date").head(stop), 0 if crosses_refit else start)
            refits, updates = advance(diaries, post, self.prior_var, self.config, start, stop, refit_at_stop=True)
        before = (0, 0) if state is None else (state.refits, state.updates)
        return UserState(stop, post.mean[0].copy(), post.cov[0].copy(), before[0] + refits, before[1] + updates)

    def last_day(self, features: pl.DataFrame, state: UserState) -> LastDay:
        """The forecast of the last day of one person's grid from their state before it
        (``state.through`` must be that day) and what its explanation needs, from one run of the
        offset model on that day: the population forecast until ``min_days_logged`` days are logged."""
        grid = features.sort("date")
        if state.through != grid.height - 1:
            raise ValueError(f"personal.last_day: the state is at day {state.through}, the grid's last day is {grid.height - 1}")
        last = grid.tail(1)
        offset = self.offset(last)
        if float(last["days_logged_before"][0]) < self.config.min_days_logged:
            return LastDay(last["date"][0], float(sigmoid(offset)[0]), np.zeros(len(self.config.terms)))
        x = self.design(last, logit=offset)
        logit = predictive_logit(state.posterior(), x, offset, self.config.moderated)
        return LastDay(last["date"][0], float(sigmoid(logit)[0]), np.asarray(state.mean, float) * x[0])

    def explain_last(self, batch: ForecastBatch, day: LastDay, top_k: int | None = None) -> list[dict[str, Any]]:
        """:meth:`explain` of the batch's one target from its :meth:`last_day` (no replay of the
        diary): the same items (the posterior mean the forecast uses x the day's terms)."""
        if batch.targets.height != 1 or batch.targets["date"][0] != day.date:
            raise ValueError(f"personal.explain_last: one target, the day forecast ({day.date}), expected")
        return self._grouped(self._offset_items(batch, 1)[0], day.contrib, top_k)

    # ---------------------------------------------------------- persistence

    def save(self, directory: str | Path) -> Path:
        """``personal.json`` (config with the estimated prior) and the offset model's folder in ``offset/``."""
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        if self.offset_dir is not None and self.offset_dir.resolve() != (out / OFFSET_DIR).resolve():
            shutil.rmtree(out / OFFSET_DIR, ignore_errors=True)
            shutil.copytree(self.offset_dir, out / OFFSET_DIR)
        meta = {"config": asdict(self.config), "offset_family": "foundation", "eb_log_evidence": self.eb_trace}
        (out / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
        return out

    @classmethod
    def load(cls, directory: str | Path) -> PersonalModel:
        from migrainemamba.models.foundation import FoundationModel

        src = Path(directory)
        if not (src / META_FILE).is_file():
            raise FileNotFoundError(f"personal: {src} lacks {META_FILE}; run pipelines/personalize.py")
        meta = json.loads((src / META_FILE).read_text())
        model = cls(PersonalConfig(**meta["config"]), FoundationModel.load(src / OFFSET_DIR), src / OFFSET_DIR)
        model.eb_trace = list(meta.get("eb_log_evidence", []))
        model.map_setup = load_map_setup(src)
        return model


def personalise_user(model: PersonalModel, users: pl.DataFrame, daily_logs: pl.DataFrame, dates: Sequence[Any]) -> np.ndarray:
    """The service's call: one person's diary in, P(onset) for ``dates`` out (same code as the stage)."""
    user_ids = users["user_id"].unique().to_list()
    if len(user_ids) != 1:
        raise ValueError(f"personalise_user: expected one user, got {len(user_ids)}")
    targets = pl.DataFrame({"user_id": [user_ids[0]] * len(dates), "date": list(dates)}).with_columns(pl.col("date").cast(pl.Date))
    return model.predict(ForecastBatch(users, daily_logs, targets))


def config_from_dict(cfg: dict[str, Any]) -> PersonalConfig:
    known = set(PersonalConfig.__dataclass_fields__)
    unknown = sorted(set(cfg) - known)
    if unknown:
        raise ValueError(f"personal config: unknown keys {unknown}; known: {sorted(known)}")
    return PersonalConfig(**cfg)


def offset_logit_from_probabilities(p: np.ndarray) -> np.ndarray:
    """An offset from a model that gives probabilities only (e.g. the temporal model)."""
    return _logit(p)
