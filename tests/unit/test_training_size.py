"""The training-size experiment: nested shares of the training people, a fresh cohort, the table."""

from __future__ import annotations

import numpy as np
import polars as pl

from migrainemamba.config import load_config, to_dict
from migrainemamba.data.prepare import prepare_cohort
from migrainemamba.experiments.training_size import fresh_fit, share_fits
from migrainemamba.features import build_features
from migrainemamba.models.base import ForecastBatch
from migrainemamba.models.foundation import split_batches


def test_shares_fit_on_that_many_training_people_and_a_fresh_cohort_on_all_of_its_own():
    cfg = load_config(["tracking.enabled=false", "data.n_users=400", "data.n_days=120", "foundation.out_of_fold.folds=0"])
    cohort = prepare_cohort(to_dict(cfg.data))
    features = build_features(cohort.users, cohort.daily_logs)
    train, valid = split_batches(features, cohort, to_dict(cfg.split))
    n_train = train.targets["user_id"].n_unique()
    fits, training_people = share_fits(cfg, cohort, features, [0.25, 0.5])
    assert training_people == n_train
    assert [people for people, _ in fits.values()] == [round(0.25 * n_train), round(0.5 * n_train)]
    people, model = fresh_fit(cfg, 150)
    assert 0.9 * 150 <= people <= 150  # none held out: everyone with a scorable early day trains it
    p = np.asarray(model.predict(ForecastBatch(cohort.users, cohort.daily_logs, valid.targets, precomputed=features)))
    assert p.shape == (valid.targets.height,) and ((p > 0) & (p < 1)).all()
    # the fresh people are not the cohort's: another seed draws other diaries
    fresh = prepare_cohort(to_dict(cfg.data) | {"n_users": 150, "seed": int(cfg.data.seed) + 104729})
    same = fresh.daily_logs.join(cohort.daily_logs, on=["user_id", "date"], suffix="_c").filter(pl.col("sleep_hours") == pl.col("sleep_hours_c"))
    assert same.height < 0.5 * fresh.daily_logs.height
