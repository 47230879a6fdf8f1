"""Daily exposures: latent AR(1) processes with a weekly rhythm, mapped to diary fields.

Each exposure is a standard-normal AR(1) latent ``z`` plus a weekday shift; the
diary value is a deterministic function of it. That makes the probability of a
same-day trigger given yesterday's latent exact (a normal tail), which the
oracle needs. Arrays are (U, T): users × simulated days.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.signal import lfilter
from scipy.special import ndtr

# Weekday index 0 = Monday. Shifts are in latent (z) units.
WORKDAY_STRESS = np.array([0.45, 0.3, 0.3, 0.3, 0.1, -0.7, -0.6])
WEEKEND_ALCOHOL = np.array([-0.3, -0.3, -0.2, 0.0, 0.6, 0.7, 0.0])
WEEKEND_SLEEP = np.array([-0.1, -0.1, -0.1, -0.1, -0.1, 0.4, 0.4])
WEEKEND_CAFFEINE = np.array([0.1, 0.1, 0.1, 0.1, 0.1, -0.25, -0.25])
WORKDAY_FASTING = np.array([0.15, 0.15, 0.15, 0.15, 0.15, -0.35, -0.35])
WEEKEND_LIGHT = np.array([-0.1, -0.1, -0.1, -0.1, -0.1, 0.25, 0.25])
NO_RHYTHM = np.zeros(7)
# "A week of sleep debt" (scenario cumulative_lags): hours below the usual sleep, summed
# over the last 7 nights (D's own night included: it is a morning field).
SLEEP_DEBT_NIGHTS = 7
SLEEP_DEBT_WEEK_HOURS = 6.0


@dataclass
class Latent:
    """An AR(1) latent with its weekday shift: value = shift[weekday] + z."""

    z: np.ndarray  # (U, T) standard-normal AR(1)
    shift: np.ndarray  # (U, T) weekday shift
    rho: float

    @property
    def value(self) -> np.ndarray:
        return self.shift + self.z

    def prob_at_least(self, threshold: np.ndarray) -> np.ndarray:
        """P(value_t >= threshold | z_{t-1}) for every day; unconditional on day 0."""
        mean = self.shift + self.rho * _lag(self.z, 1, fill=0.0)
        sd = np.full_like(mean, np.sqrt(1.0 - self.rho**2))
        sd[:, 0] = 1.0
        return 1.0 - ndtr((threshold - mean) / sd)


def _lag(a: np.ndarray, k: int, fill: float | bool = np.nan) -> np.ndarray:
    out = np.empty_like(a)
    out[:, :k] = fill
    out[:, k:] = a[:, :-k]
    return out


def ar1(rng: np.random.Generator, shape: tuple[int, int], rho: float) -> np.ndarray:
    """Stationary standard-normal AR(1) along axis 1, vectorised with lfilter."""
    eps = rng.standard_normal(shape)
    eps[:, 1:] *= np.sqrt(1.0 - rho**2)
    return lfilter([1.0], [1.0, -rho], eps, axis=1)


def latent(rng: np.random.Generator, weekday: np.ndarray, rho: float, rhythm: np.ndarray) -> Latent:
    return Latent(z=ar1(rng, weekday.shape, rho), shift=rhythm[weekday], rho=rho)


@dataclass
class Exposures:
    """Diary fields (true values, before missingness) and trigger indicators."""

    fields: dict[str, np.ndarray]  # contract column -> (U, T)
    indicators: dict[str, np.ndarray]  # trigger name -> (U, T) bool, trigger on day t's onset
    same_day_prob: dict[str, np.ndarray]  # same-day trigger -> P(indicator | past), (U, T)
    usual_sleep: np.ndarray  # (U,)
    caffeine_habit: np.ndarray  # (U,)


def simulate_exposures(
    rng: np.random.Generator,
    weekday: np.ndarray,
    pressure: np.ndarray,
    perimenstrual: np.ndarray,
    menstruating: np.ndarray,
) -> Exposures:
    """All exposures for (U, T) user-days; `pressure` etc. come from the calendar processes."""
    n_users = weekday.shape[0]
    user = lambda mean, sd: rng.normal(mean, sd, size=(n_users, 1))

    # Sleep (the night before day t): usual hours differ by person; deficit vs own usual.
    sleep = latent(rng, weekday, 0.3, WEEKEND_SLEEP)
    usual_sleep = np.clip(user(7.1, 0.6), 5.0, 9.5)
    sleep_hours = np.clip(np.round((usual_sleep + 1.1 * sleep.value) * 4) / 4, 2.0, 13.0)
    quality_noise = rng.standard_normal(weekday.shape)
    sleep_quality_good = (0.6 * sleep.z + 0.8 * quality_noise) >= user(-0.55, 0.3)

    stress = latent(rng, weekday, 0.6, WORKDAY_STRESS)
    stress_mean = user(4.8, 1.2)
    stress_level = np.clip(np.floor(stress_mean + 2.0 * stress.value + 0.5), 1, 10)

    alcohol = latent(rng, weekday, 0.2, WEEKEND_ALCOHOL)
    alcohol_mean = user(-0.6, 1.2)
    alcohol_drinks = np.maximum(0, np.floor(alcohol_mean + 1.6 * alcohol.value + 0.5))

    caffeine = latent(rng, weekday, 0.6, WEEKEND_CAFFEINE)
    caffeine_habit = np.where(rng.random((n_users, 1)) < 0.15, -1.5, rng.gamma(2.2, 1.0, (n_users, 1)))
    caffeine_drinks = np.maximum(0, np.floor(caffeine_habit + caffeine.value + 0.5))
    habit_drinks = np.maximum(0, np.floor(caffeine_habit + 0.5))

    fasting = latent(rng, weekday, 0.3, WORKDAY_FASTING)
    fast_threshold = user(1.25, 0.4)
    skipped_meals = sum((fasting.value >= fast_threshold + step).astype(int) for step in (0.0, 0.8, 1.6))

    snack = latent(rng, weekday, 0.3, NO_RHYTHM)
    had_snack = snack.value >= user(0.5, 0.5)

    water = latent(rng, weekday, 0.5, NO_RHYTHM)
    water_usual = np.clip(user(6.0, 1.5), 2.0, 12.0)
    water_glasses = np.maximum(0, np.floor(water_usual + 2.0 * water.value + 0.5))
    dehydration_threshold = (3.5 - water_usual) / 2.0  # glasses <= 3  <=>  value < this

    light = latent(rng, weekday, 0.4, WEEKEND_LIGHT)
    light_threshold = user(0.8, 0.3)

    screen = latent(rng, weekday, 0.5, NO_RHYTHM)
    screen_time_hours = np.clip(np.round((user(5.0, 1.5) + 1.5 * screen.value) * 2) / 2, 0, 16)

    fields = {
        "sleep_hours": sleep_hours,
        "sleep_quality_good": sleep_quality_good,
        "stress_level": stress_level.astype(np.int64),
        "skipped_meals": skipped_meals.astype(np.int64),
        "had_snack": had_snack,
        "alcohol_drinks": alcohol_drinks.astype(np.int64),
        "caffeine_drinks": caffeine_drinks.astype(np.int64),
        "water_glasses": water_glasses.astype(np.int64),
        "bright_light_exposure": light.value >= light_threshold,
        "screen_time_hours": screen_time_hours,
        "menstruating": menstruating,
        "barometric_pressure_hpa": pressure,
    }
    indicators = {
        "perimenstrual": perimenstrual,
        "stress_letdown": (_lag(stress_level, 2, 0) - _lag(stress_level, 1, 0)) >= 3,
        "high_stress": _lag(stress_level, 1, 0) >= 8,
        "heavy_alcohol": _lag(alcohol_drinks, 1, 0) >= 5,
        "sleep_deficit": sleep_hours <= usual_sleep - 1.5,
        "poor_sleep_quality": ~sleep_quality_good,
        "caffeine_high": caffeine_drinks >= 3,
        "caffeine_withdrawal": (habit_drinks >= 2) & (_lag(caffeine_drinks, 1, 99) <= habit_drinks - 2),
        "fasting": skipped_meals >= 1,
        "night_snack": _lag(had_snack, 1, False),
        "pressure_drop": (pressure - _lag(pressure, 2, np.inf)) <= -5.0,
        "bright_light": fields["bright_light_exposure"],
        "dehydration": water_glasses <= 3,
    }
    same_day_prob = {
        "caffeine_high": caffeine.prob_at_least(2.5 - caffeine_habit),
        "fasting": fasting.prob_at_least(fast_threshold),
        "bright_light": light.prob_at_least(light_threshold),
        "dehydration": 1.0 - water.prob_at_least(dehydration_threshold),
    }
    # Variants the scenarios use (configs/data/scenario/): derived from the same draws
    # without further randomness, so the default story is unchanged.
    stress_before = _lag(stress_level, 1, 0)
    indicators["stress_letdown_today"] = (stress_before - stress_level) >= 3
    # stress_D <= stress_{D-1} - 3 =: k  <=>  floor(m + 2 v + 1/2) <= k  <=>  v < (k + 1/2 - m) / 2
    # (k >= 1; the clip at 10 never binds there); impossible when k < 1
    letdown_level = stress_before - 3
    same_day_prob["stress_letdown_today"] = np.where(
        letdown_level >= 1, 1.0 - stress.prob_at_least((letdown_level + 0.5 - stress_mean) / 2.0), 0.0
    )
    indicators["heavy_alcohol_today"] = alcohol_drinks >= 5
    # floor(m + 1.6 v + 1/2) >= 5  <=>  v >= (4.5 - m) / 1.6
    same_day_prob["heavy_alcohol_today"] = alcohol.prob_at_least((4.5 - alcohol_mean) / 1.6)
    nightly_debt = np.maximum(0.0, usual_sleep - sleep_hours)
    week_debt = lfilter(np.ones(SLEEP_DEBT_NIGHTS), [1.0], nightly_debt, axis=1)  # nights D-6..D
    indicators["sleep_debt_week"] = week_debt >= SLEEP_DEBT_WEEK_HOURS
    return Exposures(
        fields=fields,
        indicators={k: v.astype(bool) for k, v in indicators.items()},
        same_day_prob=same_day_prob,
        usual_sleep=usual_sleep[:, 0],
        caffeine_habit=caffeine_habit[:, 0],
    )
