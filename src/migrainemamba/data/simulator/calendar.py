"""Processes tied to the calendar: weekdays, city weather, menstrual cycles."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from migrainemamba.data.simulator.exposures import ar1


def city_pressure(
    rng: np.random.Generator, n_cities: int, n_calendar_days: int
) -> np.ndarray:
    """Sea-level pressure per city and calendar day, hPa: AR(1), sd 7 hPa, day-to-day rho 0.8."""
    base = 1013.0 + rng.normal(0.0, 3.0, size=(n_cities, 1))
    return base + 7.0 * ar1(rng, (n_cities, n_calendar_days), 0.8)


@dataclass
class Cycles:
    perimenstrual: np.ndarray  # (U, T) bool: day -2..+3 around a period start
    menstruating: np.ndarray  # (U, T) bool
    last_start: np.ndarray  # (U, T) int: day index of the latest period start <= t (-1 if none)
    cycle_length: np.ndarray  # (U,) the person's usual cycle length


def simulate_cycles(
    rng: np.random.Generator,
    has_cycle: np.ndarray,
    n_days: int,
    length_mean: float,
    length_sd: float,
    jitter_sd: float,
    period_days: int,
) -> Cycles:
    """Period starts with a personal usual length and cycle-to-cycle jitter."""
    n_users = has_cycle.shape[0]
    usual = np.clip(np.round(rng.normal(length_mean, length_sd, n_users)), 22, 36).astype(int)
    n_cycles = n_days // 20 + 3
    lengths = np.clip(
        np.round(usual[:, None] + rng.normal(0.0, jitter_sd, (n_users, n_cycles))), 20, 40
    ).astype(int)
    first = -rng.integers(0, usual)  # the cycle running at day 0 started this many days before
    starts = first[:, None] + np.concatenate(
        [np.zeros((n_users, 1), int), np.cumsum(lengths, axis=1)[:, :-1]], axis=1
    )  # (U, K) increasing
    days = np.arange(n_days)
    # index of the last start <= t, per user and day
    idx = (starts[:, None, :] <= days[None, :, None]).sum(axis=2) - 1  # (U, T)
    last_start = np.take_along_axis(starts, idx, axis=1)
    next_start = np.take_along_axis(starts, np.minimum(idx + 1, n_cycles - 1), axis=1)
    since = days[None, :] - last_start
    until = next_start - days[None, :]
    perimenstrual = ((since <= 3) | (until <= 2)) & has_cycle[:, None]
    menstruating = (since < period_days) & has_cycle[:, None]
    return Cycles(
        perimenstrual=perimenstrual,
        menstruating=menstruating,
        last_start=np.where(has_cycle[:, None], last_start, -1),
        cycle_length=usual,
    )
