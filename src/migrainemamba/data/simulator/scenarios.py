"""Structurally different generative stories on top of the default one (DESIGN.md §3).

A scenario (``configs/data/scenario/<name>.yaml``) changes the story in ways the
default features were not written for: composite and person-specific lagged
triggers, a drifting personal susceptibility, a refractory period after attacks,
exposures that react to attacks (reverse causation) and outcome-dependent diary
gaps. Each mechanism keeps the oracle exact: whatever it adds to the onset
log-odds of day t is a function of parameters and of the true past before t (so
the oracle, which knows both, adds it too), and nothing here adds an unknown of
day t itself; the same-day triggers stay independent given the past.

All randomness comes from the simulator's spare seed, one child per mechanism,
so a mechanism that is off draws nothing and the default story is bit-for-bit
unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from migrainemamba.data.simulator.config import (
    DriftSpec,
    RefractorySpec,
    ReportingSpec,
    ReverseCausationSpec,
    TriggerSpec,
)
from migrainemamba.data.simulator.exposures import Exposures, ar1

MECHANISMS = ("lags", "drift", "refractory", "reverse_causation", "reporting")
# What reverse causation rewrites, and the triggers read from it.
REACTIVE_FIELDS = {"heavy_alcohol": "alcohol_drinks", "sleep_deficit": "sleep_hours"}
HEAVY_DRINKS = 5
SLEEP_DEFICIT_HOURS = 1.5
MAX_SLEEP_HOURS = 13.0


def scenario_rngs(seed: np.random.SeedSequence) -> dict[str, np.random.Generator]:
    return {name: np.random.default_rng(s) for name, s in zip(MECHANISMS, seed.spawn(len(MECHANISMS)), strict=True)}


def add_scenario_indicators(
    rng: np.random.Generator, expo: Exposures, triggers: tuple[TriggerSpec, ...]
) -> dict[str, np.ndarray]:
    """Composite (``all_of``) and person-specifically lagged triggers, into ``expo.indicators``.

    Returns each lagged trigger's per-person extra lag (for the truth table).
    """
    lags: dict[str, np.ndarray] = {}
    for trig in triggers:
        if trig.all_of:
            unknown = [c for c in trig.all_of if c not in expo.indicators]
            same_day = [c for c in trig.all_of if c in expo.same_day_prob]
            if unknown or same_day:
                raise ValueError(f"triggers.{trig.name}.all_of: unknown {unknown}, same-day {same_day} "
                                 "(components must be known exposures)")
            expo.indicators[trig.name] = np.logical_and.reduce([expo.indicators[c] for c in trig.all_of])
        if trig.extra_lag_days:
            base = expo.indicators.get(trig.name)
            if base is None:
                raise ValueError(f"triggers.{trig.name}: no exposure to lag")
            n_users, n_days = base.shape
            lag = rng.choice(np.array(trig.extra_lag_days), size=n_users, p=np.array(trig.extra_lag_probs))
            day = np.arange(n_days)[None, :] - lag[:, None]
            shifted = np.take_along_axis(base, np.clip(day, 0, n_days - 1), axis=1) & (day >= 0)
            expo.indicators[trig.name] = shifted
            lags[trig.name] = lag
    return lags


def susceptibility_drift(rng: np.random.Generator, spec: DriftSpec, shape: tuple[int, int]) -> np.ndarray:
    """(U, T) log-odds added to the baseline: stationary AR(1), sd ``spec.sd``.

    The drift of day t is a parameter path the oracle knows (like the baseline
    itself); a diary learner must infer it from the recent attack rate.
    """
    return spec.sd * ar1(rng, shape, spec.rho)


def refractory_log_or(rng: np.random.Generator, spec: RefractorySpec, n_users: int) -> np.ndarray:
    """(U,) log-odds (<= 0) the day after an attack ends; 0 for people without a refractory period."""
    has = rng.random(n_users) < spec.share
    return np.where(has, np.minimum(rng.normal(spec.log_or, spec.sd, n_users), 0.0), 0.0)


class ReverseCausation:
    """Exposures that react to attacks, applied day by day inside the attack process.

    On a *careful* day (an attack day, or one of the ``window_days`` days after the
    last attack day) the person drinks no alcohol with probability
    ``alcohol_abstain_prob`` and sleeps ``extra_sleep_hours`` longer the following
    night with probability ``extra_sleep_prob``. Whether day s is careful depends on
    attacks up to s only, and its alcohol and the following night act on day s+1
    through known triggers: the oracle for s+1 sees all of it in the true past.
    """

    def __init__(
        self,
        rng: np.random.Generator,
        spec: ReverseCausationSpec,
        expo: Exposures,
        log_or: dict[str, np.ndarray],
        triggers: tuple[TriggerSpec, ...],
    ) -> None:
        readers = [t.name for t in triggers if t.name not in REACTIVE_FIELDS and (
            set(t.all_of) & set(REACTIVE_FIELDS) or t.name in ("heavy_alcohol_today", "sleep_debt_week"))]
        lagged = [t.name for t in triggers if t.name in REACTIVE_FIELDS and t.extra_lag_days]
        if readers or lagged:
            raise ValueError(f"reverse_causation: triggers {readers + lagged} read alcohol or sleep in a way "
                             "the day-by-day update does not recompute")
        self.spec = spec
        self.base_alcohol = expo.fields["alcohol_drinks"]
        self.base_sleep = expo.fields["sleep_hours"]
        self.usual_sleep = expo.usual_sleep
        self.base_indicators = {k: expo.indicators[k] for k in REACTIVE_FIELDS}
        self.log_or = {k: log_or.get(k, np.zeros(self.base_alcohol.shape[0])) for k in REACTIVE_FIELDS}
        shape = self.base_alcohol.shape
        self.u_abstain = rng.random(shape)
        self.u_rest = rng.random(shape)
        self.reset()

    def reset(self) -> None:
        """Back to the exposures before any attack (each attack-process pass starts here)."""
        self.alcohol = self.base_alcohol.copy()
        self.sleep = self.base_sleep.copy()
        self.indicators = {k: v.copy() for k, v in self.base_indicators.items()}

    def known_lp_shift(self, t: int, attack: np.ndarray) -> np.ndarray:
        """Change of day t's known log-odds, given the attack days before t: (U,)."""
        n_users = attack.shape[0]
        if t == 0:
            return np.zeros(n_users)
        s = t - 1  # the day whose alcohol and following night act on day t
        recent = attack[:, max(0, s - self.spec.window_days):s].any(axis=1)
        careful = recent | attack[:, s]
        abstain = careful & (self.u_abstain[:, s] < self.spec.alcohol_abstain_prob)
        self.alcohol[:, s] = np.where(abstain, 0, self.base_alcohol[:, s])
        rest = careful & (self.u_rest[:, s] < self.spec.extra_sleep_prob)
        self.sleep[:, t] = np.where(
            rest, np.minimum(self.base_sleep[:, t] + self.spec.extra_sleep_hours, MAX_SLEEP_HOURS), self.base_sleep[:, t]
        )
        new = {
            "heavy_alcohol": self.alcohol[:, s] >= HEAVY_DRINKS,
            "sleep_deficit": self.sleep[:, t] <= self.usual_sleep - SLEEP_DEFICIT_HOURS,
        }
        shift = np.zeros(n_users)
        for name, value in new.items():
            shift += self.log_or[name] * (value.astype(float) - self.base_indicators[name][:, t])
            self.indicators[name][:, t] = value
        return shift

    def write_back(self, expo: Exposures) -> None:
        """The realised (reacted) exposures into the diary fields and trigger indicators."""
        expo.fields["alcohol_drinks"] = self.alcohol
        expo.fields["sleep_hours"] = self.sleep
        expo.indicators.update(self.indicators)


@dataclass
class Reporting:
    """Outcome-dependent diary: which logged days stay logged, which attacks are written down."""

    logged: np.ndarray  # (U, T) bool
    recorded_attack: np.ndarray  # (U, T) bool: the attack as the diary records it


def apply_reporting(
    rng: np.random.Generator, spec: ReportingSpec, logged: np.ndarray, attack: np.ndarray, first_day: int
) -> Reporting:
    """Attack days skipped more often, and some logged attacks recorded as "no migraine"."""
    skip = attack & (rng.random(attack.shape) < spec.attack_day_skip_prob)
    skip[:, first_day] = False  # the diary still starts with a logged day
    missed = attack & (rng.random(attack.shape) < spec.attack_recorded_as_none_prob)
    return Reporting(logged=logged & ~skip, recorded_attack=attack & ~missed)
