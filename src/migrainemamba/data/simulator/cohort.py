"""Assemble a simulated cohort: people, exposures, attacks, diaries, truth tables."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import date, timedelta

import numpy as np
import polars as pl
from scipy.special import expit

from migrainemamba.data.schema import DAILY_LOGS_SCHEMA, SYMPTOMS, USERS_SCHEMA
from migrainemamba.data.simulator.attacks import AttackHistory, AttackInputs, run_attack_process
from migrainemamba.data.simulator.calendar import city_pressure, simulate_cycles
from migrainemamba.data.simulator.config import SimulatorConfig
from migrainemamba.data.simulator.exposures import Exposures, simulate_exposures
from migrainemamba.data.simulator.medications import simulate_medications
from migrainemamba.data.simulator.scenarios import (
    ReverseCausation,
    add_scenario_indicators,
    apply_reporting,
    refractory_log_or,
    scenario_rngs,
    susceptibility_drift,
)

log = logging.getLogger(__name__)

BURN_IN_DAYS = 30  # simulated before the diary starts, so the past (cycles, bursts) is warm
DAYS_PER_MONTH = 30.44
PRODROME_SYMPTOMS = (
    "fatigue",
    "yawning",
    "neck_stiffness",
    "mood_change",
    "food_cravings",
    "concentration_difficulty",
    "light_sensitivity",
    "sound_sensitivity",
)


@dataclass
class SimulatedCohort:
    users: pl.DataFrame  # contract table
    daily_logs: pl.DataFrame  # contract table (logged days only)
    truth_users: pl.DataFrame  # per user: frequency, sensitivities, true log-odds per trigger
    truth_days: pl.DataFrame  # per user-day of the diary period: p_true, p_oracle, indicators
    medications: pl.DataFrame | None = None  # contract table; None without a `medications` config
    truth_medication_users: pl.DataFrame | None = None  # who takes what, who overuses


@dataclass
class _People:
    gender: np.ndarray
    age: np.ndarray
    height: np.ndarray
    weight: np.ndarray
    city: np.ndarray
    has_cycle: np.ndarray
    enrol_offset: np.ndarray
    band: np.ndarray
    target_days: np.ndarray  # attack days per month aimed at
    duration_cum_probs: np.ndarray  # (U, 2)
    mean_duration: np.ndarray


def _draw_people(rng: np.random.Generator, cfg: SimulatorConfig) -> _People:
    n = cfg.n_users
    people, freq = cfg.people, cfg.frequency
    u = rng.random(n)
    gender = np.where(u < people["female_share"], "F", np.where(u < people["female_share"] + people["nonbinary_share"], "X", "M"))
    age = np.clip(np.round(rng.normal(people["age_mean"], people["age_sd"], n)), 16, 75).astype(int)
    height_mean = np.select([gender == "F", gender == "M"], [165.0, 178.0], 171.0)
    height = np.round(rng.normal(height_mean, 7.0), 1)
    bmi = np.clip(rng.normal(25.0, 4.0, n), 16.0, 45.0)
    weight = np.round(bmi * (height / 100) ** 2, 1)
    has_cycle = (gender == "F") & (age < 50) & (rng.random(n) < people["menstruating_share_of_f_under_50"])
    bands = freq["bands"]
    band = rng.choice(len(bands), size=n, p=np.array([b["share"] for b in bands]) / sum(b["share"] for b in bands))
    low = np.array([b["low"] for b in bands])[band]
    high = np.array([b["high"] for b in bands])[band]
    target_days = rng.uniform(low, high)
    chronic = band >= 2
    probs = np.where(chronic[:, None], freq["duration_probs_chronic"], freq["duration_probs_low"])
    return _People(
        gender=gender,
        age=age,
        height=height,
        weight=weight,
        city=rng.integers(0, len(people["cities"]), n),
        has_cycle=has_cycle,
        enrol_offset=rng.integers(0, cfg.enrol_window_days + 1, n),
        band=band,
        target_days=target_days,
        duration_cum_probs=np.cumsum(probs, axis=1)[:, :2],
        mean_duration=(probs * np.array([1, 2, 3])).sum(axis=1),
    )


def _solve_alpha(target: np.ndarray, lp_rest: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Per-user alpha with mean_t sigmoid(alpha + lp_rest) = target (Newton, vectorised)."""
    weight = np.ones_like(lp_rest) if mask is None else mask.astype(float)
    weight = weight / weight.sum(axis=1, keepdims=True)
    alpha = np.log(target / (1 - target))
    for _ in range(30):
        p = expit(alpha[:, None] + lp_rest)
        f = (weight * p).sum(axis=1) - target
        df = (weight * p * (1 - p)).sum(axis=1)
        alpha = alpha - f / np.maximum(df, 1e-9)
    return alpha


@dataclass
class SimulationInternals:
    """What the simulator knows beyond the tables (for ceilings that rerun its oracle)."""

    people: _People
    expo: Exposures
    inputs: AttackInputs
    history: AttackHistory
    sensitive: dict[str, np.ndarray]
    log_or: dict[str, np.ndarray]
    burst_correction: np.ndarray  # (U,) subtracted from alpha so clustering keeps the target rate
    onset_target: np.ndarray  # (U,) onset rate per eligible day aimed at
    calibration_eligible: np.ndarray  # (U, T) eligible days of the calibration pass (alpha's mask)
    state: np.ndarray
    prone: np.ndarray
    bursty: np.ndarray
    cycles: object
    start: date
    rng_diary: np.random.Generator
    rng_detail: np.random.Generator
    rng_scenario: dict[str, np.random.Generator]
    cal_index: np.ndarray  # (U, T) calendar day of each simulated day
    extra_lags: dict[str, np.ndarray]  # scenario: person-specific extra lags per trigger
    drift: np.ndarray | None  # scenario: the drifting susceptibility, (U, T)


def simulate_cohort(cfg: SimulatorConfig, progress: bool = False) -> SimulatedCohort:
    """Simulate `cfg.n_users` people over `cfg.n_days` days; deterministic given `cfg.seed`."""
    sim = simulate_internals(cfg, progress)
    people, history, inputs, start = sim.people, sim.history, sim.inputs, sim.start
    scenario, n_users, n_days = cfg.scenario, cfg.n_users, BURN_IN_DAYS + cfg.n_days
    diary = _diary_mask(sim.rng_diary, cfg, n_users, n_days)
    recorded_attack = None
    if scenario.reporting is not None:
        reporting = apply_reporting(sim.rng_scenario["reporting"], scenario.reporting, diary, history.attack, BURN_IN_DAYS)
        diary, recorded_attack = reporting.logged, reporting.recorded_attack
    meds = None
    if cfg.medications:  # its own seed: the streams above stay as they were
        epoch = (start - date(1970, 1, 1)).days
        meds = simulate_medications(
            cfg.medications, cfg.seed + 3, _user_ids(n_users), people.band, history.attack, diary,
            sim.cal_index + epoch, BURN_IN_DAYS,
        )
    truth_users = _truth_users_table(cfg, people, sim.sensitive, sim.log_or, sim.prone, sim.bursty, inputs, history)
    truth_days = _truth_days_table(cfg, people, sim.expo, history, sim.state, diary, start)
    drift = sim.drift
    return SimulatedCohort(
        users=_users_table(cfg, people, sim.cycles, start, inputs, history),
        daily_logs=_daily_logs_table(sim.rng_detail, cfg, people, sim.expo, history, diary, start, recorded_attack),
        truth_users=truth_users.with_columns(
            *[pl.Series(f"{name}_extra_lag_days", lag) for name, lag in sim.extra_lags.items()],
            *([pl.Series("refractory_log_or", inputs.refractory_log_or)] if inputs.refractory_log_or is not None else []),
        ),
        truth_days=truth_days.with_columns(
            *([pl.Series("susceptibility_drift", drift[:, BURN_IN_DAYS:].ravel())] if drift is not None else []),
            *([pl.Series("recorded_attack", recorded_attack[:, BURN_IN_DAYS:].ravel())]
              if recorded_attack is not None else []),
        ),
        medications=None if meds is None else meds.medications,
        truth_medication_users=None if meds is None else meds.truth_users,
    )


def simulate_internals(cfg: SimulatorConfig, progress: bool = False) -> SimulationInternals:
    """The simulation itself (people, exposures, sensitivities, attacks), before the tables."""
    seeds = np.random.SeedSequence(cfg.seed).spawn(8)
    rng_people, rng_calendar, rng_expo, rng_effects, rng_attacks, rng_diary, rng_detail, _ = (
        np.random.default_rng(s) for s in seeds
    )
    scenario, rng_scenario = cfg.scenario, scenario_rngs(seeds[7])  # spare seed: default unchanged
    n_users, n_days = cfg.n_users, BURN_IN_DAYS + cfg.n_days
    people = _draw_people(rng_people, cfg)
    start = date.fromisoformat(cfg.start_date) - timedelta(days=BURN_IN_DAYS)
    cal_index = people.enrol_offset[:, None] + np.arange(n_days)[None, :]  # (U, T) calendar day
    weekday = (start.weekday() + cal_index) % 7

    # calendar processes
    pressure_by_city = city_pressure(rng_calendar, len(cfg.people["cities"]), cal_index.max() + 1)
    pressure = np.round(
        pressure_by_city[people.city[:, None], cal_index] + rng_calendar.normal(0, 0.3, (n_users, n_days)), 1
    )
    p = cfg.people
    cycles = simulate_cycles(
        rng_calendar, people.has_cycle, n_days, p["cycle_length_mean"], p["cycle_length_sd"],
        p["cycle_jitter_sd"], p["period_days"],
    )
    expo = simulate_exposures(rng_expo, weekday, pressure, cycles.perimenstrual, cycles.menstruating)
    extra_lags = add_scenario_indicators(rng_scenario["lags"], expo, cfg.triggers)

    # who is sensitive to what, and how much
    sensitive, log_or = {}, {}
    for trig in cfg.triggers:
        eligible = people.has_cycle if trig.name == "perimenstrual" else np.ones(n_users, bool)
        sensitive[trig.name] = eligible & (rng_effects.random(n_users) < trig.prevalence)
        log_or[trig.name] = np.where(
            sensitive[trig.name], rng_effects.normal(trig.log_or, trig.sd, n_users), 0.0
        )
    missing = {t.name for t in cfg.triggers} - set(expo.indicators)
    if missing:
        raise ValueError(f"triggers {sorted(missing)} have no exposure definition in the simulator")
    same_day = [t.name for t in cfg.triggers if t.timing == "same_day"]
    bad_same_day = set(same_day) - set(expo.same_day_prob)
    if bad_same_day:
        raise ValueError(f"triggers {sorted(bad_same_day)}: no same-day probability model")
    known = [t.name for t in cfg.triggers if t.timing == "known"]
    known_lp = sum(log_or[k][:, None] * expo.indicators[k] for k in known)
    drift = None
    if scenario.drift is not None:
        drift = susceptibility_drift(rng_scenario["drift"], scenario.drift, (n_users, n_days))
        known_lp = known_lp + drift
    same_bits = np.stack([expo.indicators[k] for k in same_day], axis=2).astype(float)
    same_prob = np.stack([expo.same_day_prob[k] for k in same_day], axis=2)
    same_beta = np.stack([log_or[k] for k in same_day], axis=1)

    pro = cfg.prodrome
    prone = rng_effects.random(n_users) < pro["prone_share"]
    state_rate = np.where(prone, pro["state_rate"], 0.0)
    state = rng_attacks.random((n_users, n_days)) < state_rate[:, None]
    gamma = (float(pro["log_or_next_day"]), float(pro["log_or_two_days"]))
    freq = cfg.frequency
    bursty = rng_effects.random(n_users) < freq["bursty_share"]

    inputs = AttackInputs(
        alpha=np.zeros(n_users),
        known_lp=known_lp,
        same_day_bits=same_bits,
        same_day_prob=same_prob,
        same_day_beta=same_beta,
        state=state,
        state_rate=state_rate,
        gamma=gamma,
        symptom_in_state=np.array([pro["symptom_prob_in_state"].get(s, 0.0) for s in PRODROME_SYMPTOMS]),
        symptom_background=np.array([pro["symptom_background"].get(s, 0.0) for s in PRODROME_SYMPTOMS]),
        symptom_attack=np.array([pro["symptom_on_attack_day"].get(s, 0.0) for s in PRODROME_SYMPTOMS]),
        burst_log_or=np.where(bursty, freq["burst_log_or"], 0.0),
        burst_decay_days=float(freq["burst_decay_days"]),
        duration_cum_probs=people.duration_cum_probs,
        u_onset=rng_attacks.random((n_users, n_days)),
        u_duration=rng_attacks.random((n_users, n_days)),
        u_symptom=rng_attacks.random((n_users, n_days, len(PRODROME_SYMPTOMS))),
    )
    if scenario.refractory is not None:
        inputs.refractory_log_or = refractory_log_or(rng_scenario["refractory"], scenario.refractory, n_users)
        inputs.refractory_decay_days = float(scenario.refractory.decay_days)
    if scenario.reverse_causation is not None:
        inputs.feedback = ReverseCausation(
            rng_scenario["reverse_causation"], scenario.reverse_causation, expo, log_or, cfg.triggers
        )

    # Baseline so that attack days per month hit each person's target. With mean
    # duration d and a refractory day after each attack, the attack-day share f
    # needs an onset rate per eligible day q = f / (d (1 - f)).
    share = people.target_days / DAYS_PER_MONTH
    q = np.clip(share / (people.mean_duration * (1 - share)), 1e-4, 0.85)
    lp_rest = (
        known_lp + (same_bits * same_beta[:, None, :]).sum(axis=2)
        + gamma[0] * np.roll(state, 1, axis=1) + gamma[1] * np.roll(state, 2, axis=1)
    )
    inputs.alpha = _solve_alpha(q, lp_rest)
    # Clustering raises the rate after attacks: measure it once and correct the baseline.
    first = run_attack_process(inputs, with_oracle=False)
    with_burst = np.nanmean(first.p_true, axis=1)
    without_burst = np.nanmean(np.where(first.eligible, expit(inputs.alpha[:, None] + lp_rest), np.nan), axis=1)
    inputs.alpha = _solve_alpha(q, lp_rest, first.eligible) - np.log(with_burst / without_burst)
    history = run_attack_process(inputs, with_oracle=True, progress=progress)
    if inputs.feedback is not None:
        inputs.feedback.write_back(expo)

    return SimulationInternals(
        people=people, expo=expo, inputs=inputs, history=history, sensitive=sensitive, log_or=log_or,
        burst_correction=np.log(with_burst / without_burst), onset_target=q,
        calibration_eligible=first.eligible, state=state, prone=prone,
        bursty=bursty, cycles=cycles, start=start, rng_diary=rng_diary, rng_detail=rng_detail,
        rng_scenario=rng_scenario, cal_index=cal_index, extra_lags=extra_lags, drift=drift,
    )


def _user_ids(n: int) -> list[str]:
    return [f"u{i:05d}" for i in range(n)]


def _diary_mask(rng: np.random.Generator, cfg: SimulatorConfig, n_users: int, n_days: int) -> np.ndarray:
    """Which simulated days the person logged: adherence gaps, then drop-out."""
    d = cfg.diary
    adherence = rng.beta(d["adherence_alpha"], d["adherence_beta"], n_users)
    rate = -np.log(d["retained_at_day_90"]) / 90.0
    length = np.clip(np.ceil(rng.exponential(1 / rate, n_users)), 1, cfg.n_days).astype(int)
    day = np.arange(n_days)[None, :] - BURN_IN_DAYS
    logged = (day >= 0) & (day < length[:, None]) & (rng.random((n_users, n_days)) < adherence[:, None])
    logged[:, BURN_IN_DAYS] = True  # the diary starts with a logged day
    return logged


def _calendar_dates(start: date, cal_index: np.ndarray) -> pl.Series:
    epoch = (start - date(1970, 1, 1)).days
    return pl.Series("date", (cal_index + epoch).astype("int32")).cast(pl.Date)


def _users_table(cfg, people: _People, cycles, start: date, inputs: AttackInputs, history: AttackHistory) -> pl.DataFrame:
    rng = np.random.default_rng(cfg.seed + 1)
    n = cfg.n_users
    # self-reported attacks per month: the person's true rate, remembered with noise
    true_attacks = people.target_days / people.mean_duration
    reported = np.round(true_attacks * np.exp(rng.normal(0, cfg.people["self_report_noise_sd"], n)) * 2) / 2
    last_start = cycles.last_start[:, BURN_IN_DAYS]
    has_start = people.has_cycle & (last_start > -10_000)
    cycle_start_index = people.enrol_offset + last_start
    epoch = (start - date(1970, 1, 1)).days
    reported_length = people.has_cycle & (rng.random(n) >= cfg.people["cycle_length_unreported_share"])
    return pl.DataFrame(
        {
            "user_id": _user_ids(n),
            "gender": people.gender,
            "age": people.age,
            "height_cm": people.height,
            "weight_kg": people.weight,
            "location_city": np.array(cfg.people["cities"])[people.city],
            "attacks_per_month": np.clip(reported, 0, 31),
            "has_menstrual_cycle": people.has_cycle,
            "cycle_start_day": pl.Series(np.where(has_start, cycle_start_index + epoch, 0).astype("int32"))
            .cast(pl.Date)
            .to_frame("d")
            .select(pl.when(pl.Series(has_start)).then(pl.col("d")))
            .to_series(),
            "cycle_length_days": pl.Series(np.where(reported_length, cycles.cycle_length, 0)).to_frame("l")
            .select(pl.when(pl.Series(reported_length)).then(pl.col("l"))).to_series(),
        },
        schema=USERS_SCHEMA,
    )


def _daily_logs_table(
    rng, cfg, people: _People, expo: Exposures, history: AttackHistory, logged: np.ndarray, start: date,
    recorded_attack: np.ndarray | None = None,
) -> pl.DataFrame:
    u_idx, t_idx = np.nonzero(logged)
    n_rows = len(u_idx)
    d = cfg.diary
    reported = rng.random(n_rows) >= d["outcome_unreported_share"]
    attack = (history.attack if recorded_attack is None else recorded_attack)[u_idx, t_idx]
    onset = history.onset[u_idx, t_idx]
    severity = np.clip(np.round(rng.normal(6.0, 1.8, n_rows)), 2, 10)
    hours = np.where(onset, rng.uniform(4, 24, n_rows), rng.uniform(8, 24, n_rows)).round(1)
    cal = people.enrol_offset[u_idx] + t_idx
    pressure = expo.fields["barometric_pressure_hpa"][u_idx, t_idx]
    has_cycle = people.has_cycle[u_idx]
    columns = {
        "user_id": np.array(_user_ids(cfg.n_users))[u_idx],
        "date": _calendar_dates(start, cal),
    }
    for name, values in expo.fields.items():
        columns[name] = values[u_idx, t_idx]
    frame = pl.DataFrame(columns).with_columns(
        pl.when(pl.Series(has_cycle)).then(pl.col("menstruating")).alias("menstruating"),
        pl.when(pl.Series(rng.random(n_rows) >= d["pressure_missing_share"]))
        .then(pl.Series(pressure))
        .alias("barometric_pressure_hpa"),
        symptoms=_symptom_lists(rng, cfg, people, history, u_idx, t_idx),
        migraine_occurred=pl.when(pl.Series(reported)).then(pl.Series(attack)),
        migraine_severity=pl.when(pl.Series(reported & attack)).then(pl.Series(severity.astype(int))),
        migraine_duration_hours=pl.when(pl.Series(reported & attack)).then(pl.Series(hours)),
    )
    return frame.select(
        [pl.col(c).cast(dtype) for c, dtype in DAILY_LOGS_SCHEMA.items()]
    ).sort("user_id", "date")


def _symptom_lists(rng, cfg, people: _People, history: AttackHistory, u_idx, t_idx) -> pl.Series:
    """Prodrome symptoms from the attack process, plus attack-day-only symptoms (nausea, aura)."""
    pro = cfg.prodrome
    n_rows = len(u_idx)
    present = {s: history.prodrome_symptoms[u_idx, t_idx, i] for i, s in enumerate(PRODROME_SYMPTOMS)}
    attack = history.attack[u_idx, t_idx]
    present["nausea"] = attack & (rng.random(n_rows) < pro["symptom_on_attack_day"].get("nausea", 0.0))
    aura_person = np.random.default_rng(cfg.seed + 2).random(cfg.n_users) < pro["aura_share"]
    present["aura"] = history.onset[u_idx, t_idx] & aura_person[u_idx] & (rng.random(n_rows) < pro["aura_prob_at_onset"])
    frame = pl.DataFrame({s: present[s] for s in SYMPTOMS})
    return frame.select(
        pl.concat_list([pl.when(pl.col(s)).then(pl.lit(s)) for s in SYMPTOMS]).list.drop_nulls().alias("symptoms")
    ).to_series()


def _truth_users_table(cfg, people, sensitive, log_or, prone, bursty, inputs, history) -> pl.DataFrame:
    diary_days = slice(BURN_IN_DAYS, None)
    realised = history.attack[:, diary_days].mean(axis=1) * DAYS_PER_MONTH
    columns = {
        "user_id": _user_ids(cfg.n_users),
        "frequency_band": people.band,
        "target_attack_days_per_month": people.target_days,
        "attack_days_per_month": realised,
        "onsets_per_month": history.onset[:, diary_days].mean(axis=1) * DAYS_PER_MONTH,
        "mean_duration_days": people.mean_duration,
        "baseline_log_odds": inputs.alpha,
        "bursty": bursty,
        "prodrome_prone": prone,
    }
    for trig in cfg.triggers:
        columns[f"{trig.name}_sensitive"] = sensitive[trig.name]
        columns[f"{trig.name}_log_or"] = log_or[trig.name]
    return pl.DataFrame(columns)


def _truth_days_table(cfg, people, expo: Exposures, history: AttackHistory, state, logged, start: date) -> pl.DataFrame:
    n_users, n_days = logged.shape
    u_idx, t_idx = np.nonzero(np.arange(n_days)[None, :] >= BURN_IN_DAYS * np.ones((n_users, 1), int))
    columns = {
        "user_id": np.array(_user_ids(n_users))[u_idx],
        "date": _calendar_dates(start, people.enrol_offset[u_idx] + t_idx),
        "logged": logged[u_idx, t_idx],
        "attack_day": history.attack[u_idx, t_idx],
        "eligible": history.eligible[u_idx, t_idx],
        "onset": history.onset[u_idx, t_idx],
        "p_true": history.p_true[u_idx, t_idx],
        "p_oracle": history.p_oracle[u_idx, t_idx],
        "prodrome_state": state[u_idx, t_idx],
    }
    for trig in cfg.triggers:
        columns[f"x_{trig.name}"] = expo.indicators[trig.name][u_idx, t_idx]
    return pl.DataFrame(columns).with_columns(pl.col("p_true", "p_oracle").fill_nan(None))
