"""The personal baseline: the running onset rate, refreshed every BASELINE_BLOCK_LOGGED_DAYS logged days."""

from __future__ import annotations

import numpy as np
import polars as pl

from migrainemamba.features import build_features
from migrainemamba.features.daily import (
    BASELINE_BLOCK_LOGGED_DAYS,
    BASELINE_PRIOR_DAYS,
    MIN_SELF_REPORTED_ATTACKS_PER_MONTH,
)


def test_baseline_is_the_running_rate_at_each_block_start(small_cohort):
    features = build_features(small_cohort.users, small_cohort.daily_logs).join(
        small_cohort.users.select("user_id", apm="attacks_per_month"), on="user_id"
    )
    rows = features.with_columns(
        onsets=pl.col("onset").fill_null(False).cast(pl.Int64).cum_sum().shift(1, fill_value=0).over("user_id"),
        scorable_days=pl.col("scorable").cast(pl.Int64).cum_sum().shift(1, fill_value=0).over("user_id"),
        block=pl.col("days_logged_before") // BASELINE_BLOCK_LOGGED_DAYS,
    )
    prior = np.maximum(rows["apm"].to_numpy(), MIN_SELF_REPORTED_ATTACKS_PER_MONTH) / 30.0
    running = (rows["onsets"].to_numpy() + BASELINE_PRIOR_DAYS * prior) / (
        rows["scorable_days"].to_numpy() + BASELINE_PRIOR_DAYS
    )
    rows = rows.with_columns(running=pl.Series(running))
    starts = rows.group_by("user_id", "block", maintain_order=True).agg(
        pl.col("running").first(), pl.col("personal_baseline_rate").n_unique().alias("values"),
        pl.col("personal_baseline_rate").first(),
    )
    assert (starts["values"] == 1).all()  # constant within a block
    assert np.allclose(starts["running"], starts["personal_baseline_rate"])
    moved = starts.group_by("user_id").agg(pl.col("personal_baseline_rate").n_unique() > 1)
    assert moved["personal_baseline_rate"].mean() > 0.5  # it does learn from the diary
