"""The diary-Bayes reference: the learnable ceiling of a personal model (DESIGN.md §4).

The simulator's oracle knows every parameter of a person, including which triggers they
react to and how strongly. The reference knows everything the oracle knows *except* those
sensitivities: it integrates the oracle's forecast over their posterior given the person's
diary so far, under the simulator's own prior (each trigger: sensitive with its
prevalence, then log OR ~ N(mean, sd); perimenstrual only with a cycle). Importance
sampling over ``n_draws`` prior draws per person:

    p_ref(D) = sum_s w_s(D) p_oracle(D | theta_s),   w_s(D) ∝ prod_{d < D, logged} P(outcome_d | past, theta_s)

``P(outcome_d | past, theta)`` is the oracle's own filtered predictive of the realised onset
(its latent premonitory-state filter run with theta, given the realised same-day exposures).
The logged days' symptoms weigh the draws too: their likelihood depends on theta only through
proneness (the state is independent day to day), so with the dynamics known it cancels. Each
draw's baseline is re-solved so the person's onset rate stays their target (the frequency is
known, the sensitivities are not), with the same clustering correction as the simulator. The likelihood counts only days the person logged in the diary period ("the
diary so far"); the state filter, like the oracle's, uses the true past, or with
``diary_symptoms_only`` the symptoms of logged days only (attack days stay the true ones).
With ``self_report`` (attacks per month each person told at onboarding), the frequency is not
known either: drawn from the cohort's frequency bands and weighted by the likelihood of what
the person told, so nothing about the person is known beyond what the models see at
onboarding (their attack duration aside, which the diary shows from the first attack).

With ``diary_exposures`` the known-timing triggers are read as the diary's features show them
(``features.triggers.TRIGGER_INDICATORS``: a trigger on an unlogged day or an unlogged field is
absent) instead of the true exposures (the true cycle, usual sleep and caffeine habit): what a
forecaster that reads only the diary could know of them. With ``usual_propensity`` the
same-day exposures' probabilities on the morning of each day (the oracle's, from the latent
exposure processes' exact state) are replaced by the person's average over their diary: the
reference no longer knows whether today is a likely caffeine, fasting, light or water day.

``dynamics_known=False`` also leaves out the person's dynamics: whether they are
prodrome-prone and whether their attacks cluster are drawn with their cohort shares and
learned the same way (``experiments.oracle_decomposition``). Scenario terms beyond the default
story (refractory periods, feedback, drift) are not modelled: default-story cohorts only.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta
from itertools import product
from typing import Any

import numpy as np
import polars as pl
from scipy.special import expit

from migrainemamba.data.simulator.attacks import _symptom_likelihood
from migrainemamba.data.simulator.cohort import (
    BURN_IN_DAYS,
    DAYS_PER_MONTH,
    SimulationInternals,
    _solve_alpha,
    simulate_internals,
)
from migrainemamba.data.simulator.config import SimulatorConfig
from migrainemamba.features.triggers import TRIGGER_INDICATORS

log = logging.getLogger(__name__)


@dataclass
class ReferenceInputs:
    """Per (person, draw) pair, flattened to N = people x draws rows."""

    person: np.ndarray  # (N,) index into the simulation's people
    alpha: np.ndarray  # (N,)
    known_lp: np.ndarray  # (N, T)
    same_beta: np.ndarray  # (N, S)
    state_rate: np.ndarray  # (N,) P(premonitory state) per day: 0 unless prodrome-prone
    burst_log_or: np.ndarray  # (N,) 0 unless bursty
    log_w0: np.ndarray | None = None  # (N,) log prior weight of each draw before the diary (None: equal)


def _draws(
    cfg: SimulatorConfig,
    sim: SimulationInternals,
    people: np.ndarray,
    n_draws: int,
    seed: int,
    dynamics_known: bool = True,
    self_report: np.ndarray | None = None,
    indicators: dict[str, np.ndarray] | None = None,
) -> ReferenceInputs:
    """Prior draws of what the reference does not know: the sensitivities; unless
    ``dynamics_known``, whether the person is prodrome-prone and whether their attacks cluster
    (each with its share in the cohort, ``cfg.prodrome`` and ``cfg.frequency``); with
    ``self_report`` (attacks per month told at onboarding, per person of ``people``), their
    attack frequency: drawn from the cohort's bands, each draw's prior weight (``log_w0``) the
    likelihood of what they told under the simulator's recall noise. ``indicators`` (known-timing
    trigger -> (people, T) bool) replaces the true exposures of ``people``."""
    rng = np.random.default_rng(seed)
    n = len(people) * n_draws
    person = np.repeat(people, n_draws)
    known = [t for t in cfg.triggers if t.timing == "known"]
    same = [t for t in cfg.triggers if t.timing == "same_day"]
    draw: dict[str, np.ndarray] = {}
    for trig in cfg.triggers:
        eligible = sim.people.has_cycle[person] if trig.name == "perimenstrual" else np.ones(n, bool)
        sensitive = eligible & (rng.random(n) < trig.prevalence)
        draw[trig.name] = np.where(sensitive, rng.normal(trig.log_or, trig.sd, n), 0.0)
    if indicators is None:
        exposure = {t.name: sim.expo.indicators[t.name][person] for t in known}
    else:
        exposure = {t.name: np.repeat(indicators[t.name], n_draws, axis=0) for t in known}
    known_lp = sum(draw[t.name][:, None] * exposure[t.name] for t in known)
    same_beta = np.stack([draw[t.name] for t in same], axis=1)
    inp = sim.inputs
    if dynamics_known:
        state_rate, burst_log_or = inp.state_rate[person], inp.burst_log_or[person]
        state, burst_correction = sim.state[person], sim.burst_correction[person]
    else:
        prone = rng.random(n) < cfg.prodrome["prone_share"]
        bursty = rng.random(n) < cfg.frequency["bursty_share"]
        state_rate = np.where(prone, float(cfg.prodrome["state_rate"]), 0.0)
        burst_log_or = np.where(bursty, float(cfg.frequency["burst_log_or"]), 0.0)
        # a drawn prodrome-prone person needs drawn states to solve the baseline against, and a
        # drawn bursty one the clustering correction (their own if they are bursty, else the cohort's)
        state = rng.random(known_lp.shape) < state_rate[:, None]
        cohort_correction = float(sim.burst_correction[sim.bursty].mean()) if sim.bursty.any() else 0.0
        burst_correction = np.where(bursty, np.where(sim.bursty[person], sim.burst_correction[person], cohort_correction), 0.0)
    g1, g2 = inp.gamma
    lp_rest = (
        known_lp
        + (inp.same_day_bits[person] * same_beta[:, None, :]).sum(axis=2)
        + g1 * np.roll(state, 1, axis=1)
        + g2 * np.roll(state, 2, axis=1)
    )
    target, log_w0 = sim.onset_target[person], None
    if self_report is not None:
        # attack days per month from the cohort's frequency bands, weighted by how likely each
        # makes what the person told (log-normal recall noise; told 0 read as 0.25)
        bands = cfg.frequency["bands"]
        shares = np.array([b["share"] for b in bands], float)
        band = rng.choice(len(bands), size=n, p=shares / shares.sum())
        days = rng.uniform(np.array([b["low"] for b in bands])[band], np.array([b["high"] for b in bands])[band])
        duration = sim.people.mean_duration[person]
        told = np.maximum(np.repeat(np.asarray(self_report, float), n_draws), 0.25)
        noise_sd = float(cfg.people["self_report_noise_sd"])
        log_w0 = -0.5 * ((np.log(told) - np.log(days / duration)) / noise_sd) ** 2
        share = days / DAYS_PER_MONTH
        target = np.clip(share / (duration * (1 - share)), 1e-4, 0.85)
    alpha = _solve_alpha(target, lp_rest, sim.calibration_eligible[person]) - burst_correction
    return ReferenceInputs(person, alpha, known_lp, same_beta, state_rate, burst_log_or, log_w0)


def _normalised(log_w: np.ndarray, n_people: int, n_draws: int) -> np.ndarray:
    """(P, D) importance weights summing to 1 per person, from (P * D,) log weights."""
    w = np.exp(log_w - log_w.reshape(n_people, n_draws).max(axis=1).repeat(n_draws)).reshape(n_people, n_draws)
    return w / w.sum(axis=1, keepdims=True)


def _filter(
    sim: SimulationInternals,
    ref: ReferenceInputs,
    logged: np.ndarray,
    n_draws: int,
    diary_symptoms_only: bool = False,
    usual_propensity: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Reference forecasts (P, T), effective sample sizes (P, T) and the same forecasts with the
    prior's weights (no learning from the diary: what the reference knows on day 1) for the P
    people of ``ref``."""
    inp, hist = sim.inputs, sim.history
    person = ref.person
    n, n_days = ref.known_lp.shape
    n_people = n // n_draws
    g1, g2 = inp.gamma
    combos = np.array(list(product([0, 1], repeat=ref.same_beta.shape[1])), dtype=float)
    combo_lp = ref.same_beta @ combos.T  # (N, C)
    state_lp = np.array([[g1 * s1 + g2 * s2 for s2 in (0, 1)] for s1 in (0, 1)])
    rate = ref.state_rate
    prior2 = np.stack([1 - rate, rate], axis=1)
    belief = prior2[:, :, None] * prior2[:, None, :]
    log_w = np.zeros(n) if ref.log_w0 is None else ref.log_w0.copy()
    w0 = _normalised(log_w, n_people, n_draws)  # the prior's weights: what the reference knows on day 1
    forecast = np.full((n_people, n_days), np.nan)
    unlearned = np.full((n_people, n_days), np.nan)
    ess = np.full((n_people, n_days), np.nan)
    last_attack = np.full(n, -10_000)
    attack, onset, eligible = hist.attack[person], hist.onset[person], hist.eligible[person]
    same_bits = inp.same_day_bits[person]
    if usual_propensity:  # per simulated person: their same-day exposure rates over the diary period
        usual = np.zeros((inp.same_day_prob.shape[0], inp.same_day_prob.shape[2]))
        usual[np.unique(person)] = inp.same_day_prob[np.unique(person), BURN_IN_DAYS:, :].mean(axis=1)
    for t in range(n_days):
        burst = ref.burst_log_or * np.exp(-(t - last_attack - 1) / inp.burst_decay_days)
        known = ref.alpha + ref.known_lp[:, t] + burst
        prob = usual[person] if usual_propensity else inp.same_day_prob[person, t, :]
        weights = np.prod(np.where(combos[None] == 1, prob[:, None, :], 1 - prob[:, None, :]), axis=2)
        risk = expit(known[:, None, None, None] + state_lp[None, :, :, None] + combo_lp[:, None, None, :])
        p_draw = np.einsum("uab,uc,uabc->u", belief, weights, risk)
        w = _normalised(log_w, n_people, n_draws)
        forecast[:, t] = (w * p_draw.reshape(n_people, n_draws)).sum(axis=1)
        unlearned[:, t] = (w0 * p_draw.reshape(n_people, n_draws)).sum(axis=1)
        ess[:, t] = 1.0 / (w**2).sum(axis=1)
        # the realised outcome's likelihood under each draw, then the oracle's state update
        realised_same = (same_bits[:, t, :] * ref.same_beta).sum(axis=1)
        risk_realised = expit(known[:, None, None] + state_lp[None] + realised_same[:, None, None])
        like = np.where(onset[:, t, None, None], risk_realised, 1 - risk_realised)
        like = np.where(eligible[:, t, None, None], like, 1.0)
        counts = logged[:, t] & eligible[:, t]
        log_w = log_w + np.where(counts, np.log(np.maximum((belief * like).sum(axis=(1, 2)), 1e-300)), 0.0)
        b1 = (belief * like).sum(axis=2)
        like_sym = np.stack([_symptom_likelihood(inp, hist.prodrome_symptoms[person, t, :], s, attack[:, t]) for s in (0.0, 1.0)], axis=1)
        if diary_symptoms_only:  # an unlogged day's symptoms are unknown: no evidence about its state
            like_sym = np.where(logged[:, t, None], like_sym, 1.0)
        # the day's symptoms weigh the draws too when proneness is drawn (otherwise a constant)
        log_w = log_w + np.where(logged[:, t], np.log(np.maximum((prior2 * like_sym).sum(axis=1), 1e-300)), 0.0)
        belief = (prior2 * like_sym)[:, :, None] * b1[:, None, :]
        belief /= belief.sum(axis=(1, 2), keepdims=True)
        last_attack = np.where(attack[:, t], t, last_attack)
    return forecast, ess, unlearned


def _known_timing(cfg: SimulatorConfig) -> list[str]:
    """The triggers fixed before the morning's forecast: the ones a diary can show."""
    return [t.name for t in cfg.triggers if t.timing == "known"]


def diary_trigger_exposures(features: pl.DataFrame, cfg: SimulatorConfig) -> pl.DataFrame:
    """``user_id, date`` and each known-timing trigger of ``cfg`` as the diary's features show it
    on the morning of the day (absent where a field is not logged)."""
    known = _known_timing(cfg)
    unread = [name for name in known if name not in TRIGGER_INDICATORS]
    if unread:
        raise KeyError(f"diary exposures: no diary indicator for triggers {unread}")
    return features.select("user_id", "date", *[TRIGGER_INDICATORS[n].fill_null(False).alias(n) for n in known])


def _diary_grid(
    sim: SimulationInternals, cfg: SimulatorConfig, people: np.ndarray, ids: list[str], diary: pl.DataFrame
) -> dict[str, np.ndarray]:
    """The known-timing triggers of ``people`` on the simulation's day grid: the diary's reading on
    diary days, the true exposure before the diary starts (burn-in, never forecast or weighed)."""
    known = _known_timing(cfg)
    absent = [name for name in known if name not in diary.columns]
    if absent:
        raise ValueError(f"diary exposures: no column for the known-timing triggers {absent}")
    grid = {name: sim.expo.indicators[name][people].copy() for name in known}
    offsets = {u: i for i, u in enumerate(ids)}
    part = diary.filter(pl.col("user_id").is_in(ids))
    row = np.array([offsets[u] for u in part["user_id"]], dtype=int)
    day = np.array([(d - sim.start).days for d in part["date"]], dtype=int) - sim.people.enrol_offset[people][row]
    for name in known:
        grid[name][:, BURN_IN_DAYS:] = False  # diary days without a features row read as absent
        grid[name][row, day] = part[name].to_numpy()
    return grid


def diary_bayes_reference(
    cfg: SimulatorConfig,
    sim: SimulationInternals,
    user_ids: list[str],
    logged: pl.DataFrame,
    n_draws: int = 512,
    chunk_people: int = 40,
    seed: int = 0,
    dynamics_known: bool = True,
    diary_symptoms_only: bool = False,
    self_report: dict[str, float] | None = None,
    diary_exposures: pl.DataFrame | None = None,
    usual_propensity: bool = False,
) -> pl.DataFrame:
    """``user_id, date, p_reference, p_reference_unlearned, ess`` for every diary-period day of ``user_ids``.

    ``logged``: the truth_days columns ``user_id, date, logged`` (which days count as the diary).
    ``diary_exposures``: ``user_id, date`` and a bool column per known-timing trigger
    (:func:`diary_trigger_exposures`), read instead of the true exposures on diary days.
    """
    index = np.array([int(u.lstrip("u")) for u in user_ids])
    n_days = sim.inputs.known_lp.shape[1]
    frames = []
    for lo in range(0, len(index), chunk_people):
        people = index[lo : lo + chunk_people]
        ids = [f"u{i:05d}" for i in people]
        mask = np.zeros((len(people), n_days), bool)
        part = logged.filter(pl.col("user_id").is_in(ids) & pl.col("logged"))
        offsets = {u: i for i, u in enumerate(ids)}
        start = sim.start
        for uid, day in part.select("user_id", "date").iter_rows():
            t = (day - start).days - int(sim.people.enrol_offset[people[offsets[uid]]])
            mask[offsets[uid], t] = True
        told = None if self_report is None else np.array([self_report[u] for u in ids])
        seen = None if diary_exposures is None else _diary_grid(sim, cfg, people, ids, diary_exposures)
        ref = _draws(cfg, sim, people, n_draws, seed + lo, dynamics_known, told, seen)
        forecast, ess, unlearned = _filter(sim, ref, np.repeat(mask, n_draws, axis=0), n_draws, diary_symptoms_only, usual_propensity)
        for j, uid in enumerate(ids):
            first = start + timedelta(days=int(sim.people.enrol_offset[people[j]]))
            days = np.arange(BURN_IN_DAYS, n_days)
            frames.append(
                pl.DataFrame(
                    {
                        "user_id": [uid] * len(days),
                        "date": [first + timedelta(days=int(t)) for t in days],
                        "p_reference": forecast[j, days],
                        "p_reference_unlearned": unlearned[j, days],
                        "ess": ess[j, days],
                    }
                )
            )
        log.info("diary-Bayes reference: %d/%d people", min(lo + chunk_people, len(index)), len(index))
    return pl.concat(frames).with_columns(pl.col("p_reference", "p_reference_unlearned").fill_nan(None))


def prepared_cohort_reference(
    data_cfg: dict[str, Any],
    truth_days: pl.DataFrame,
    chosen: list[str],
    n_draws: int,
    seed: int,
    dynamics_known: bool = True,
    diary_symptoms_only: bool = False,
    self_report: dict[str, float] | None = None,
    features: pl.DataFrame | None = None,
    usual_propensity: bool = False,
) -> pl.DataFrame:
    """:func:`diary_bayes_reference` for ``chosen`` people of a prepared simulated cohort: reruns
    the simulator from its config (``data_cfg``) and checks that the rerun is that cohort."""
    sim_cfg = SimulatorConfig.from_dict(data_cfg)
    sim = simulate_internals(sim_cfg)
    first = chosen[0]
    truth = truth_days.filter(pl.col("user_id") == first).sort("date")["p_oracle"].fill_null(-1.0).to_numpy()
    rerun = np.nan_to_num(sim.history.p_oracle[int(first.lstrip("u")), BURN_IN_DAYS:], nan=-1.0)
    if truth.shape != rerun.shape or not np.allclose(truth, rerun, atol=1e-9):
        raise ValueError("diary-Bayes reference: rerunning the simulator (configs/data) does not reproduce the prepared cohort")
    logged = truth_days.select("user_id", "date", "logged")
    diary = None if features is None else diary_trigger_exposures(features.filter(pl.col("user_id").is_in(chosen)), sim_cfg)
    return diary_bayes_reference(
        sim_cfg, sim, chosen, logged, n_draws, seed=seed, dynamics_known=dynamics_known,
        diary_symptoms_only=diary_symptoms_only, self_report=self_report, diary_exposures=diary,
        usual_propensity=usual_propensity,
    )
