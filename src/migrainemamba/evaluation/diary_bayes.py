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
Symptoms' likelihood does not depend on theta (the state is independent day to day), so it
cancels. Each draw's baseline is re-solved so the person's onset rate stays their target (the
frequency is known, the sensitivities are not), with the same clustering correction as the
simulator. The likelihood counts only days the person logged in the diary period ("the
diary so far"); the state filter, like the oracle's, uses the true past.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta
from itertools import product

import numpy as np
import polars as pl
from scipy.special import expit

from migrainemamba.data.simulator.attacks import _symptom_likelihood
from migrainemamba.data.simulator.cohort import BURN_IN_DAYS, SimulationInternals, _solve_alpha
from migrainemamba.data.simulator.config import SimulatorConfig

log = logging.getLogger(__name__)


@dataclass
class ReferenceInputs:
    """Per (person, draw) pair, flattened to N = people x draws rows."""

    person: np.ndarray  # (N,) index into the simulation's people
    alpha: np.ndarray  # (N,)
    known_lp: np.ndarray  # (N, T)
    same_beta: np.ndarray  # (N, S)


def _draws(cfg: SimulatorConfig, sim: SimulationInternals, people: np.ndarray, n_draws: int, seed: int) -> ReferenceInputs:
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
    known_lp = sum(draw[t.name][:, None] * sim.expo.indicators[t.name][person] for t in known)
    same_beta = np.stack([draw[t.name] for t in same], axis=1)
    inp = sim.inputs
    g1, g2 = inp.gamma
    lp_rest = (
        known_lp
        + (inp.same_day_bits[person] * same_beta[:, None, :]).sum(axis=2)
        + g1 * np.roll(sim.state[person], 1, axis=1)
        + g2 * np.roll(sim.state[person], 2, axis=1)
    )
    alpha = _solve_alpha(sim.onset_target[person], lp_rest, sim.calibration_eligible[person]) - sim.burst_correction[person]
    return ReferenceInputs(person, alpha, known_lp, same_beta)


def _filter(sim: SimulationInternals, ref: ReferenceInputs, logged: np.ndarray, n_draws: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
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
    rate = inp.state_rate[person]
    prior2 = np.stack([1 - rate, rate], axis=1)
    belief = prior2[:, :, None] * prior2[:, None, :]
    log_w = np.zeros(n)
    forecast = np.full((n_people, n_days), np.nan)
    unlearned = np.full((n_people, n_days), np.nan)
    ess = np.full((n_people, n_days), np.nan)
    last_attack = np.full(n, -10_000)
    attack, onset, eligible = hist.attack[person], hist.onset[person], hist.eligible[person]
    same_bits = inp.same_day_bits[person]
    for t in range(n_days):
        burst = inp.burst_log_or[person] * np.exp(-(t - last_attack - 1) / inp.burst_decay_days)
        known = ref.alpha + ref.known_lp[:, t] + burst
        prob = inp.same_day_prob[person, t, :]
        weights = np.prod(np.where(combos[None] == 1, prob[:, None, :], 1 - prob[:, None, :]), axis=2)
        risk = expit(known[:, None, None, None] + state_lp[None, :, :, None] + combo_lp[:, None, None, :])
        p_draw = np.einsum("uab,uc,uabc->u", belief, weights, risk)
        w = np.exp(log_w - log_w.reshape(n_people, n_draws).max(axis=1).repeat(n_draws)).reshape(n_people, n_draws)
        w /= w.sum(axis=1, keepdims=True)
        forecast[:, t] = (w * p_draw.reshape(n_people, n_draws)).sum(axis=1)
        unlearned[:, t] = p_draw.reshape(n_people, n_draws).mean(axis=1)
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
        belief = (prior2 * like_sym)[:, :, None] * b1[:, None, :]
        belief /= belief.sum(axis=(1, 2), keepdims=True)
        last_attack = np.where(attack[:, t], t, last_attack)
    return forecast, ess, unlearned


def diary_bayes_reference(
    cfg: SimulatorConfig,
    sim: SimulationInternals,
    user_ids: list[str],
    logged: pl.DataFrame,
    n_draws: int = 512,
    chunk_people: int = 40,
    seed: int = 0,
) -> pl.DataFrame:
    """``user_id, date, p_reference, p_reference_unlearned, ess`` for every diary-period day of ``user_ids``.

    ``logged``: the truth_days columns ``user_id, date, logged`` (which days count as the diary).
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
        ref = _draws(cfg, sim, people, n_draws, seed + lo)
        forecast, ess, unlearned = _filter(sim, ref, np.repeat(mask, n_draws, axis=0), n_draws)
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
