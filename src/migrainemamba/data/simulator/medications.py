"""Simulated acute and preventive medication (the clinical diary), beside the attacks.

Runs after the attack process and reads only its outcome (attack days, the diary
mask), so it changes no existing random stream: cohorts without it are
unchanged. Config: the ``medications`` block of ``configs/data/synthetic.yaml``.

- Acute: most people take something on most attack days; each person has a
  first class (shares differ for episodic and chronic people), some a second one.
- Overuse: a share of the chronic people (band 3, >= 15 attack days a month)
  medicate on most attack days and on further headache days, so their
  medication days reach the ICHD-3 overuse range for one class, or for two
  classes combined. Non-overusing chronic people stay below the thresholds.
- Preventive: some people with >= 8 attack days a month start a preventive
  during the diary; it does not change their attacks here (stated in the truth).

Truth written beside it (``truth_medication_users``): who uses what, who
overuses, with which pattern and how many medication days a month were aimed at.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any

import numpy as np
import polars as pl

from migrainemamba.data.schema import MEDICATIONS_SCHEMA

CHRONIC_BAND = 3  # frequency band index of >= 15 attack days a month
PREVENTIVE_MIN_BAND = 2  # >= 8 attack days a month
SIMPLE = "simple_analgesic"


@dataclass
class SimulatedMedications:
    medications: pl.DataFrame  # contract table (schema.MEDICATION_COLUMNS)
    truth_users: pl.DataFrame  # one row per user


def _draw_class(rng: np.random.Generator, shares: dict[str, float], n: int) -> np.ndarray:
    names = list(shares)
    p = np.array([shares[k] for k in names], dtype=float)
    return np.array(names, dtype=object)[rng.choice(len(names), size=n, p=p / p.sum())]


def _uniform(rng: np.random.Generator, spec: dict[str, float], n: int) -> np.ndarray:
    return rng.uniform(float(spec["low"]), float(spec["high"]), n)


def _times(rng: np.random.Generator, n: int, missing_share: float) -> np.ndarray:
    minutes = rng.integers(6 * 12, 22 * 12, n) * 5  # 06:00-21:55 in 5-minute steps
    text = np.array([f"{m // 60:02d}:{m % 60:02d}" for m in minutes], dtype=object)
    text[rng.random(n) < missing_share] = None
    return text


def simulate_medications(
    cfg: dict[str, Any],
    seed: int,
    user_ids: list[str],
    band: np.ndarray,
    attack: np.ndarray,
    logged: np.ndarray,
    dates: np.ndarray,
    diary_start: int,
) -> SimulatedMedications:
    """Medication rows on logged days.

    ``attack`` and ``logged`` are (U, T) bool, ``dates`` (U, T) days since the epoch,
    ``diary_start`` the first diary index (days before it are burn-in).
    """
    rng = np.random.default_rng(seed)
    n_users, n_days = attack.shape
    days_per_month = 30.44
    chronic = band >= CHRONIC_BAND

    acute_user = rng.random(n_users) < cfg["acute_user_share"]
    first = np.where(
        chronic,
        _draw_class(rng, cfg["class_shares_chronic"], n_users),
        _draw_class(rng, cfg["class_shares_episodic"], n_users),
    )
    has_second = rng.random(n_users) < cfg["second_class_share"]
    second = np.where(first == SIMPLE, "triptan", SIMPLE).astype(object)
    second_day_share = np.where(has_second, cfg["second_class_day_share"], 0.0)

    overuser = acute_user & chronic & (rng.random(n_users) < cfg["overuse_share_chronic"])
    pattern = _draw_class(rng, cfg["overuse_pattern_shares"], n_users)
    pattern = np.where(overuser, pattern, None)
    multiple = pattern == "multiple"
    # the over-used class becomes the first class; "multiple" splits days 50/50 over two
    first = np.where(overuser & ~multiple, pattern, first)
    # "multiple": a 10-day class of ICHD-3 8.2 (the person's own, else a triptan) plus simple analgesics
    ten_day = np.isin(first, ["triptan", "ergot", "opioid", "combination_analgesic"])
    first = np.where(multiple & ~ten_day, "triptan", first)
    second = np.where(multiple, SIMPLE, second)
    second_day_share = np.where(multiple, 0.5, np.where(overuser, 0.0, second_day_share))
    has_second = has_second & ~overuser | multiple

    # medication days a month aimed at, and the daily probabilities that reach it
    diary = np.arange(n_days)[None, :] >= diary_start
    attack_days = (attack & diary).sum(axis=1) / max(n_days - diary_start, 1) * days_per_month
    target = np.full(n_users, np.nan)
    target = np.where(
        overuser,
        np.where(
            multiple,
            _uniform(rng, cfg["overuse_days_multiple"], n_users),
            np.where(
                first == SIMPLE,
                _uniform(rng, cfg["overuse_days_simple"], n_users),
                _uniform(rng, cfg["overuse_days"], n_users),
            ),
        ),
        np.where(
            chronic,
            np.where(
                first == SIMPLE,
                _uniform(rng, cfg["chronic_regular_days_simple"], n_users),
                _uniform(rng, cfg["chronic_regular_days"], n_users),
            ),
            np.nan,
        ),
    )
    treat_share = rng.beta(
        cfg["treated_attack_day_share"]["alpha"], cfg["treated_attack_day_share"]["beta"], n_users
    )
    p_attack = np.where(chronic, np.clip(target / np.maximum(attack_days, 1e-9), 0, 1), treat_share)
    p_attack = np.where(overuser, 0.95, p_attack)
    non_attack_days = days_per_month - attack_days
    extra = np.where(overuser, np.maximum(target - 0.95 * attack_days, 0.0), 0.0)
    p_other = np.clip(extra / np.maximum(non_attack_days, 1e-9), 0, 1)
    p_attack = np.where(acute_user, p_attack, 0.0)
    p_other = np.where(acute_user, p_other, 0.0)

    u = rng.random((n_users, n_days))
    medicated = logged & np.where(attack, u < p_attack[:, None], u < p_other[:, None])
    u_idx, t_idx = np.nonzero(medicated)
    use_second = has_second[u_idx] & (rng.random(len(u_idx)) < second_day_share[u_idx])
    classes = np.where(use_second, second[u_idx], first[u_idx]).astype(object)

    drugs = cfg["drugs"]
    # one drug per person and class (people stick to "their" triptan)
    person_pick = {c: rng.integers(0, len(options), n_users) for c, options in drugs.items()}
    names = np.empty(len(u_idx), dtype=object)
    doses = np.empty(len(u_idx), dtype=float)
    for c, options in drugs.items():
        rows = classes == c
        picks = person_pick[c][u_idx[rows]]
        names[rows] = np.array([o[0] for o in options], dtype=object)[picks]
        doses[rows] = np.array([float(o[1]) for o in options])[picks]
    relief = np.empty(len(u_idx), dtype=object)
    for c, probs in cfg["relief_probs"].items():
        rows = classes == c
        relief[rows] = rng.choice(4, size=int(rows.sum()), p=np.array(probs) / sum(probs))
    relief[rng.random(len(u_idx)) < cfg["relief_unreported_share"]] = None

    acute = pl.DataFrame(
        {
            "user_id": pl.Series(np.array(user_ids, dtype=object)[u_idx].tolist(), dtype=pl.String),
            "date": pl.Series(dates[u_idx, t_idx].astype("int32")).cast(pl.Date),
            "time": pl.Series(
                _times(rng, len(u_idx), cfg["time_unreported_share"]).tolist(), dtype=pl.String
            ),
            "name": pl.Series(names.tolist(), dtype=pl.String),
            "medication_class": pl.Series(classes.tolist(), dtype=pl.String),
            "purpose": pl.Series(["acute"] * len(u_idx), dtype=pl.String),
            "dose_mg": doses,
            "relief_2h": pl.Series(relief.tolist(), dtype=pl.Int64),
        }
    )

    preventive, start_day, preventive_name = _preventives(
        rng, cfg, band, logged, dates, diary_start, user_ids
    )
    table = (
        pl.concat([acute, preventive], how="vertical_relaxed")
        .select([pl.col(c).cast(t) for c, t in MEDICATIONS_SCHEMA.items()])
        .sort("user_id", "date", "time", nulls_last=True)
    )
    epoch = date(1970, 1, 1).toordinal()
    truth = pl.DataFrame(
        {
            "user_id": user_ids,
            "frequency_band": band,
            "acute_user": acute_user,
            "first_class": pl.Series(np.where(acute_user, first, None).tolist(), dtype=pl.String),
            "second_class": pl.Series(
                np.where(acute_user & has_second, second, None).tolist(), dtype=pl.String
            ),
            "overuser": overuser,
            "overuse_pattern": pl.Series(pattern.tolist(), dtype=pl.String),
            "target_medication_days_per_month": pl.Series(target).fill_nan(None),
            "preventive_name": pl.Series(preventive_name.tolist(), dtype=pl.String),
            "preventive_start": [
                None if s < 0 else date.fromordinal(epoch + int(dates[i, s]))
                for i, s in enumerate(start_day)
            ],
            "preventive_effect_log_or": np.zeros(
                n_users
            ),  # preventives do not act in this simulator
        }
    )
    return SimulatedMedications(medications=table, truth_users=truth)


def _preventives(
    rng: np.random.Generator,
    cfg: dict[str, Any],
    band: np.ndarray,
    logged: np.ndarray,
    dates: np.ndarray,
    diary_start: int,
    user_ids: list[str],
) -> tuple[pl.DataFrame, np.ndarray, np.ndarray]:
    """Preventive doses on logged days from a start day on; (rows, start index or -1, drug name)."""
    n_users, n_days = logged.shape
    options = cfg["preventives"]
    starts = diary_start + rng.integers(
        int(cfg["preventive_start_day"]["low"]),
        int(cfg["preventive_start_day"]["high"]) + 1,
        n_users,
    )
    last_logged = n_days - 1 - np.argmax(logged[:, ::-1], axis=1)
    takes = (band >= PREVENTIVE_MIN_BAND) & (rng.random(n_users) < cfg["preventive_start_share"])
    takes &= starts <= last_logged  # the start must fall inside the logged diary
    drug = rng.integers(0, len(options), n_users)
    interval = np.array([int(o[3]) for o in options])[drug]
    t = np.arange(n_days)[None, :]
    since = t - starts[:, None]
    due = takes[:, None] & (since >= 0) & (since % interval[:, None] == 0)
    dose_logged = rng.random((n_users, n_days)) < cfg["preventive_logged_share"]
    first_dose = since == 0  # the start is always logged: it defines "before" and "after"
    rows = due & logged & (dose_logged | first_dose) | (due & first_dose)
    u_idx, t_idx = np.nonzero(rows)
    table = pl.DataFrame(
        {
            "user_id": pl.Series(np.array(user_ids, dtype=object)[u_idx].tolist(), dtype=pl.String),
            "date": pl.Series(dates[u_idx, t_idx].astype("int32")).cast(pl.Date),
            "time": pl.Series(
                _times(rng, len(u_idx), cfg["time_unreported_share"]).tolist(), dtype=pl.String
            ),
            "name": pl.Series([options[k][0] for k in drug[u_idx]], dtype=pl.String),
            "medication_class": pl.Series([options[k][1] for k in drug[u_idx]], dtype=pl.String),
            "purpose": pl.Series(["preventive"] * len(u_idx), dtype=pl.String),
            "dose_mg": np.array([float(o[2]) for o in options])[drug[u_idx]],
            "relief_2h": pl.Series([None] * len(u_idx), dtype=pl.Int64),
        }
    )
    start_index = np.where(takes, starts, -1)
    name = np.where(takes, np.array([o[0] for o in options], dtype=object)[drug], None)
    return table, start_index, name
