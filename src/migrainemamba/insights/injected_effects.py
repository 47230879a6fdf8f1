"""Diaries with a known pattern put in, or every pattern taken out: how pattern discovery is
checked (its power on an injected weekday or cycle-day effect, its false-discovery rate on
people whose onsets were shuffled). Used by the tests and by ``benchmarks/insights_eval.py``."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, timedelta

import numpy as np
import polars as pl


def first_logged_days(logs: pl.DataFrame, n: int) -> pl.DataFrame:
    """Each person's first ``n`` logged days, people who logged at least ``n``."""
    ranked = logs.sort("user_id", "date").with_columns(k=pl.int_range(pl.len()).over("user_id"))
    reached = ranked.filter(pl.col("k") == n - 1).select("user_id")
    return ranked.filter(pl.col("k") < n).drop("k").join(reached, on="user_id", how="semi")


def inject_onsets(logs: pl.DataFrame, on_day: Callable[[date], bool], p: float, rng: np.random.Generator) -> pl.DataFrame:
    """One person's diary with extra attacks beginning on the days where ``on_day`` holds: such an
    attack-free day after an attack-free reported day becomes an attack day with probability ``p``."""
    occurred = logs["migraine_occurred"].to_list()
    by_date = dict(zip(logs["date"].to_list(), occurred, strict=True))
    for i, d in enumerate(logs["date"].to_list()):
        eligible = on_day(d) and occurred[i] is False and by_date.get(d - timedelta(days=1)) is False
        if eligible and rng.random() < p:
            occurred[i] = True
    return logs.with_columns(migraine_occurred=pl.Series(occurred, dtype=pl.Boolean))


def inject_weekday(logs: pl.DataFrame, weekday: int, p: float, rng: np.random.Generator) -> pl.DataFrame:
    """Extra attacks beginning on ``weekday`` (1 = Monday), as :func:`inject_onsets`."""
    return inject_onsets(logs, lambda d: d.isoweekday() == weekday, p, rng)


def permute_onsets(features: pl.DataFrame, rng: np.random.Generator) -> pl.DataFrame:
    """The person's onsets shuffled over their labelled days: no pattern left, exposures kept."""
    values = features["onset"].to_list()
    idx = [i for i, v in enumerate(values) if v is not None]
    shuffled = rng.permutation([values[i] for i in idx])
    for j, i in enumerate(idx):
        values[i] = bool(shuffled[j])
    return features.with_columns(onset=pl.Series(values, dtype=pl.Boolean))
