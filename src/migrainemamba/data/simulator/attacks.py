"""The attack process and the oracle that forecasts it.

Day by day (vectorised over users): a day is *eligible* for an onset when the
previous day was not an attack day (docs/architecture.md §1). Its onset probability is

    p_true = sigmoid(alpha + known triggers + burst + same-day triggers
                     + g1 * state[t-1] + g2 * state[t-2])

where `state` is a latent premonitory (prodrome) state that also shows as
symptoms. The oracle knows every parameter and the true past, but not day t's
same-day exposures nor the latent states: it marginalises the same-day
triggers exactly (their probabilities given the past are known) and filters the
two latest states with an exact forward filter over (state[t-1], state[t-2]),
updated by each day's symptoms and outcome. So p_oracle = E[p_true | past].

Scenarios (scenarios.py) may add to the known part: a refractory term after
attacks (like the burst, with a negative sign) and a feedback whose shift for day
t depends on the attack days before t (exposures reacting to attacks). Both are
functions of the true past, so the oracle stays exact.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import product
from typing import Protocol

import numpy as np
from scipy.special import expit
from tqdm.auto import tqdm


class KnownLpFeedback(Protocol):
    """Day t's known log-odds change from attacks before t (reverse causation)."""

    def reset(self) -> None: ...

    def known_lp_shift(self, t: int, attack: np.ndarray) -> np.ndarray: ...


@dataclass
class AttackInputs:
    alpha: np.ndarray  # (U,) baseline log-odds
    known_lp: np.ndarray  # (U, T) sum of known-trigger effects
    same_day_bits: np.ndarray  # (U, T, S) realised same-day trigger indicators
    same_day_prob: np.ndarray  # (U, T, S) their probability given the past
    same_day_beta: np.ndarray  # (U, S) log-odds per same-day trigger
    state: np.ndarray  # (U, T) latent premonitory state
    state_rate: np.ndarray  # (U,) prior P(state) per day (0 if not prodrome-prone)
    gamma: tuple[float, float]  # log-odds of state on t-1 and t-2
    symptom_in_state: np.ndarray  # (P,) P(prodrome symptom | state)
    symptom_background: np.ndarray  # (P,) P(symptom) on an ordinary day
    symptom_attack: np.ndarray  # (P,) P(symptom | attack day), 0 where not an attack symptom
    burst_log_or: np.ndarray  # (U,) 0 for people whose attacks do not cluster
    burst_decay_days: float
    duration_cum_probs: np.ndarray  # (U, 2) P(d<=1), P(d<=2)
    u_onset: np.ndarray  # (U, T) uniforms (shared across calibration passes)
    u_duration: np.ndarray  # (U, T)
    u_symptom: np.ndarray  # (U, T, P)
    refractory_log_or: np.ndarray | None = None  # (U,) <= 0, scenario `refractory`
    refractory_decay_days: float = 1.0
    feedback: KnownLpFeedback | None = None  # scenario `reverse_causation`


@dataclass
class AttackHistory:
    attack: np.ndarray  # (U, T) bool attack day
    onset: np.ndarray  # (U, T) bool
    eligible: np.ndarray  # (U, T) bool
    p_true: np.ndarray  # (U, T) float, nan where not eligible
    p_oracle: np.ndarray | None  # (U, T) float, nan where not eligible
    prodrome_symptoms: np.ndarray  # (U, T, P) bool


def run_attack_process(inp: AttackInputs, with_oracle: bool, progress: bool = False) -> AttackHistory:
    n_users, n_days = inp.known_lp.shape
    n_same = inp.same_day_beta.shape[1]
    g1, g2 = inp.gamma
    combos = np.array(list(product([0, 1], repeat=n_same)), dtype=float)  # (C, S)
    combo_lp = inp.same_day_beta @ combos.T  # (U, C)
    state_lp = np.array([[g1 * s1 + g2 * s2 for s2 in (0, 1)] for s1 in (0, 1)])  # (2, 2)

    attack = np.zeros((n_users, n_days), bool)
    onset = np.zeros((n_users, n_days), bool)
    eligible = np.zeros((n_users, n_days), bool)
    p_true = np.full((n_users, n_days), np.nan)
    p_oracle = np.full((n_users, n_days), np.nan) if with_oracle else None
    symptoms = np.zeros(inp.u_symptom.shape, bool)
    remaining = np.zeros(n_users, int)  # attack days still to come after today
    last_attack = np.full(n_users, -10_000)
    rate = inp.state_rate
    # belief over (state[t-1], state[t-2]), both start at their prior
    prior2 = np.stack([1 - rate, rate], axis=1)  # (U, 2)
    belief = prior2[:, :, None] * prior2[:, None, :]  # (U, 2, 2)
    if inp.feedback is not None:
        inp.feedback.reset()

    days = tqdm(range(n_days), desc="attack process", disable=not progress, leave=False)
    for t in days:
        is_eligible = ~attack[:, t - 1] if t > 0 else np.ones(n_users, bool)
        burst = inp.burst_log_or * np.exp(-(t - last_attack - 1) / inp.burst_decay_days)
        known = inp.alpha + inp.known_lp[:, t] + burst  # (U,)
        if inp.refractory_log_or is not None:
            known = known + inp.refractory_log_or * np.exp(-(t - last_attack - 1) / inp.refractory_decay_days)
        if inp.feedback is not None:
            known = known + inp.feedback.known_lp_shift(t, attack)
        s1 = inp.state[:, t - 1] if t >= 1 else np.zeros(n_users, bool)
        s2 = inp.state[:, t - 2] if t >= 2 else np.zeros(n_users, bool)
        realised_same = (inp.same_day_bits[:, t, :] * inp.same_day_beta).sum(axis=1)  # (U,)
        p = expit(known + g1 * s1 + g2 * s2 + realised_same)
        p_true[is_eligible, t] = p[is_eligible]

        if with_oracle:
            prob = inp.same_day_prob[:, t, :]  # (U, S)
            weights = np.prod(np.where(combos[None] == 1, prob[:, None, :], 1 - prob[:, None, :]), axis=2)
            risk = expit(known[:, None, None, None] + state_lp[None, :, :, None] + combo_lp[:, None, None, :])
            forecast = np.einsum("uab,uc,uabc->u", belief, weights, risk)
            p_oracle[is_eligible, t] = forecast[is_eligible]

        new_onset = is_eligible & (inp.u_onset[:, t] < p)
        running = remaining > 0
        attack[:, t] = running | new_onset
        remaining = np.where(running, remaining - 1, 0)
        duration = 1 + (inp.u_duration[:, t] > inp.duration_cum_probs[:, 0]) + (
            inp.u_duration[:, t] > inp.duration_cum_probs[:, 1]
        )
        remaining = np.where(new_onset, duration - 1, remaining)
        last_attack = np.where(attack[:, t], t, last_attack)
        onset[:, t] = new_onset
        eligible[:, t] = is_eligible

        # today's prodrome symptoms, from today's latent state and attack
        p_sym = _symptom_prob(inp, inp.state[:, t].astype(float)[:, None], attack[:, t][:, None])
        symptoms[:, t, :] = inp.u_symptom[:, t, :] < p_sym

        if with_oracle:
            # 1. the outcome of day t tells about (state[t-1], state[t-2]) when t was eligible
            risk_realised = expit(known[:, None, None] + state_lp[None] + realised_same[:, None, None])
            like = np.where(new_onset[:, None, None], risk_realised, 1 - risk_realised)
            like = np.where(is_eligible[:, None, None], like, 1.0)
            b1 = (belief * like).sum(axis=2)  # (U, 2) over state[t-1]
            # 2. today's symptoms tell about state[t]
            like_sym = np.stack(
                [
                    _symptom_likelihood(inp, symptoms[:, t, :], s, attack[:, t])
                    for s in (0.0, 1.0)
                ],
                axis=1,
            )  # (U, 2)
            b0 = prior2 * like_sym  # (U, 2) over state[t]
            belief = b0[:, :, None] * b1[:, None, :]
            belief /= belief.sum(axis=(1, 2), keepdims=True)

    return AttackHistory(attack, onset, eligible, p_true, p_oracle, symptoms)


def _symptom_prob(inp: AttackInputs, state: np.ndarray, attack: np.ndarray) -> np.ndarray:
    """P(each prodrome symptom present) given state (U,1) and attack day (U,1): (U, P)."""
    absent = (1 - inp.symptom_background) * (1 - inp.symptom_in_state * state) * (
        1 - inp.symptom_attack * attack
    )
    return 1 - absent


def _symptom_likelihood(
    inp: AttackInputs, observed: np.ndarray, state: float, attack: np.ndarray
) -> np.ndarray:
    p = _symptom_prob(inp, np.full((observed.shape[0], 1), state), attack[:, None])
    return np.prod(np.where(observed, p, 1 - p), axis=1)
