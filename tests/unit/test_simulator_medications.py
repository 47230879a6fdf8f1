"""Simulated medication: contract-valid, realistic class shares, over-users found by the ICHD-3 check."""

from __future__ import annotations

from dataclasses import replace

import polars as pl
import pytest

from migrainemamba.clinical.agreement import overuse_agreement
from migrainemamba.data.simulator import simulate_cohort
from migrainemamba.data.simulator.medications import CHRONIC_BAND
from migrainemamba.data.validation import validate_medications
from tests.conftest import simulator_config


@pytest.fixture(scope="module")
def chronic_cohort():
    """Half the people chronic (band 3) and most keep logging, so over-users have the > 3
    months of diary the rule needs (the default cohort has 7% chronic people and a third
    still logging at day 90)."""
    cfg = simulator_config(n_users=800, n_days=365, seed=5)
    bands = [
        dict(b, share=s) for b, s in zip(cfg.frequency["bands"], (0.3, 0.1, 0.1, 0.5), strict=True)
    ]
    return simulate_cohort(
        replace(
            cfg,
            frequency={**cfg.frequency, "bands": bands},
            diary={**cfg.diary, "retained_at_day_90": 0.9},
        )
    )


def test_simulated_medications_follow_the_contract(small_cohort):
    meds, truth = small_cohort.medications, small_cohort.truth_medication_users
    valid, quarantine = validate_medications(meds, small_cohort.users["user_id"])
    assert quarantine.height == 0 and valid.height == meds.height > 0
    # only on diary days, except the first dose of a preventive
    logged = small_cohort.daily_logs.select("user_id", "date").with_columns(
        pl.lit(True).alias("logged")
    )
    acute = meds.filter(pl.col("purpose") == "acute").join(
        logged, on=["user_id", "date"], how="left"
    )
    assert acute["logged"].null_count() == 0
    assert truth.height == small_cohort.users.height
    assert not truth.filter(pl.col("overuser") & (pl.col("frequency_band") < CHRONIC_BAND)).height


def test_acute_use_sits_on_attack_days_with_simple_analgesics_most_common(chronic_cohort):
    meds = chronic_cohort.medications.filter(pl.col("purpose") == "acute")
    truth = chronic_cohort.truth_medication_users
    days = chronic_cohort.daily_logs.select("user_id", "date", "migraine_occurred")
    joined = meds.join(days, on=["user_id", "date"], how="inner").join(truth, on="user_id")
    regular = joined.filter(~pl.col("overuser"))
    # people who do not overuse take acute medication on attack days only
    assert regular["migraine_occurred"].fill_null(True).all()
    shares = (
        meds.group_by("medication_class").len().with_columns(pl.col("len") / pl.col("len").sum())
    )
    ranked = shares.sort("len", descending=True)["medication_class"].to_list()
    assert ranked[0] == "simple_analgesic" and "triptan" in ranked[:3]
    assert not chronic_cohort.medications.filter(
        (pl.col("purpose") == "preventive") & pl.col("relief_2h").is_not_null()
    ).height


def test_overuse_check_flags_the_simulated_over_users_and_few_others(chronic_cohort):
    result = overuse_agreement(
        chronic_cohort.daily_logs, chronic_cohort.medications, chronic_cohort.truth_medication_users
    )
    over, others = result["assessable"]["overusers"], result["assessable"]["others"]
    assert over["n"] >= 50 and others["n"] >= 200
    # measured (seed 5, 800 people, half chronic): 80 of 96 over-users flagged (0.83), 1 of 580 others
    assert over["overuse_rate"] >= 0.65
    assert others["overuse_rate"] <= 0.02
    # without > 3 months of diary nobody is flagged "overuse" (at most "watch")
    short = result["all"]["overusers"]["flagged_overuse"] - over["flagged_overuse"]
    assert short == 0
