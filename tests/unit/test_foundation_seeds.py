"""The seed experiment: one fit per seed, fits that differ, and the bag as the mean of their log-odds."""

from __future__ import annotations

import numpy as np

from migrainemamba.config import load_config, to_dict
from migrainemamba.data.prepare import prepare_cohort
from migrainemamba.experiments.foundation_seeds import bag_logit, seed_fits
from migrainemamba.features import build_features
from migrainemamba.features.daily import WARNING_RECORD_COLUMNS


def test_seed_fits_differ_and_the_bag_is_their_mean_log_odds():
    cfg = load_config(["tracking.enabled=false", "data.n_users=300", "data.n_days=120"])
    cohort = prepare_cohort(to_dict(cfg.data))
    features = build_features(cohort.users, cohort.daily_logs)
    fits = seed_fits(cfg, features, cohort, [1, 2], list(WARNING_RECORD_COLUMNS))
    assert [f.config.seed for f in fits] == [1, 2]
    assert all(set(f.config.exclude_features) == set(WARNING_RECORD_COLUMNS) for f in fits)
    rows = features.head(500)
    a, b = (f.logit(rows) for f in fits)
    assert not np.allclose(a, b)  # bagging: another seed, another fit
    np.testing.assert_allclose(bag_logit(fits, rows), (a + b) / 2)
