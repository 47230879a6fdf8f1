"""The simulator does what its config says (issue: project foundation, acceptance)."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import scipy.sparse as sp
from scipy.special import expit
from sklearn.linear_model import LogisticRegression

from migrainemamba.data.report import AMPP_BANDS, band_shares
from migrainemamba.data.simulator import SimulatorConfig, simulate_cohort
from migrainemamba.data.validation import validate_cohort
from migrainemamba.metrics import (
    expected_calibration_error,
    pooled_auc,
    within_person_auc,
)
from tests.conftest import simulator_config


def test_same_seed_same_cohort_and_other_seed_differs():
    a = simulate_cohort(simulator_config(n_users=40, n_days=60, seed=3))
    b = simulate_cohort(simulator_config(n_users=40, n_days=60, seed=3))
    c = simulate_cohort(simulator_config(n_users=40, n_days=60, seed=4))
    assert a.daily_logs.equals(b.daily_logs)
    assert a.truth_days.equals(b.truth_days)
    assert not a.daily_logs.equals(c.daily_logs)


def test_output_passes_the_data_contract(small_cohort):
    checked = validate_cohort(small_cohort.users, small_cohort.daily_logs)
    assert checked.quarantine.height == 0
    assert checked.daily_logs.height == small_cohort.daily_logs.height
    assert small_cohort.daily_logs.select(pl.struct("user_id", "date").is_unique().all()).item()


def test_config_rejects_a_trigger_without_timing():
    data = simulator_config().__dict__.copy()
    raw = {
        **{k: v for k, v in data.items() if k != "triggers"},
        "triggers": {"x": {"definition": "", "timing": "later", "log_or": 0.1, "sd": 0, "prevalence": 1, "source": ""}},
    }
    with pytest.raises(ValueError, match="timing"):
        SimulatorConfig.from_dict(raw)


def fixed_effects_logit(x: np.ndarray, groups: np.ndarray, y: np.ndarray, ridge: float = 1e-8) -> np.ndarray:
    """Slopes of the logistic regression logit P(y) = x @ beta + alpha[group], one free intercept
    per group, by Newton's method: the maximum of sum(log-likelihood) - ridge/2 * |(beta, alpha)|^2,
    the objective of sklearn's ``LogisticRegression(C=1/ridge, fit_intercept=False)`` on
    [x, one-hot(group)] (the tiny ridge keeps an intercept finite for a person without onsets).

    The intercepts' block of the Hessian is diagonal, so each step solves a k x k system (the
    Schur complement) instead of a (k + groups)-sized one: 4-5 steps, ~2 s on the large cohort,
    where sklearn's lbfgs took 10-15 s.
    """
    n_groups, k = int(groups.max()) + 1, x.shape[1]
    onsets, days = np.bincount(groups, y, n_groups), np.bincount(groups, minlength=n_groups)
    alpha, beta = np.log((onsets + 0.5) / (days - onsets + 0.5)), np.zeros(k)
    for _ in range(50):
        p = expit(x @ beta + alpha[groups])
        w, residual = p * (1 - p), y - p
        grad_beta = x.T @ residual - ridge * beta
        grad_alpha = np.bincount(groups, residual, n_groups) - ridge * alpha
        wx = x * w[:, None]
        h_beta = x.T @ wx + ridge * np.eye(k)
        h_cross = np.column_stack([np.bincount(groups, wx[:, j], n_groups) for j in range(k)])  # (groups, k)
        h_alpha = np.bincount(groups, w, n_groups) + ridge
        schur = h_beta - h_cross.T @ (h_cross / h_alpha[:, None])
        step_beta = np.linalg.solve(schur, grad_beta - h_cross.T @ (grad_alpha / h_alpha))
        alpha += (grad_alpha - h_cross @ step_beta) / h_alpha
        beta += step_beta
        if np.abs(step_beta).max() < 1e-8:
            return beta
    raise AssertionError(f"Newton's method did not converge (last slope step {np.abs(step_beta).max():.2e})")


def test_fixed_effects_logit_is_sklearns_fit():
    """The solver above finds what sklearn's LogisticRegression does on the one-hot design."""
    rng = np.random.default_rng(0)
    groups = rng.integers(0, 30, 3000)
    x = rng.binomial(1, 0.3, (3000, 3)).astype(float)
    y = rng.binomial(1, expit(x @ np.array([0.8, -0.5, 0.0]) + rng.normal(-1.5, 0.7, 30)[groups])).astype(float)
    one_hot = sp.csr_matrix((np.ones(3000), (np.arange(3000), groups)))
    model = LogisticRegression(C=1e8, max_iter=5000, fit_intercept=False, tol=1e-10)
    model.fit(sp.hstack([sp.csr_matrix(x), one_hot]).tocsr(), y)
    assert np.allclose(fixed_effects_logit(x, groups, y), model.coef_[0][:3], atol=1e-4)


def test_within_person_regression_recovers_each_configured_effect(large_cohort):
    """Fixed-effects logistic regression (one intercept per person) on the true exposures.

    An exposure only acts in people sensitive to it, so each trigger enters as
    exposure x sensitive; its coefficient estimates the configured mean log-odds.
    """
    cfg = simulator_config()
    days = large_cohort.truth_days.filter(pl.col("eligible")).join(large_cohort.truth_users, on="user_id")
    triggers = [t.name for t in cfg.triggers]
    exposures = [(days[f"x_{t}"] & days[f"{t}_sensitive"]).to_numpy() for t in triggers]
    x = np.column_stack([*exposures, days["prodrome_state"].to_numpy()]).astype(float)
    users = days["user_id"].cast(pl.Categorical).to_physical().to_numpy()
    slopes = fixed_effects_logit(x, users, days["onset"].to_numpy().astype(float))
    estimates = dict(zip(triggers, slopes[: len(triggers)], strict=True))
    off = {t.name: (round(float(estimates[t.name]), 3), t.log_or) for t in cfg.triggers
           if abs(estimates[t.name] - t.log_or) > 0.10}
    assert not off, f"(estimated, configured) log-odds differ by > 0.10: {off}"


def test_insensitive_people_have_no_effect_and_prevalence_matches(large_cohort):
    cfg = simulator_config()
    users = large_cohort.truth_users
    for trig in cfg.triggers:
        sensitive = users[f"{trig.name}_sensitive"].to_numpy()
        log_or = users[f"{trig.name}_log_or"].to_numpy()
        assert np.all(log_or[~sensitive] == 0.0)
        if trig.name != "perimenstrual":  # only people with a cycle can be
            n = len(sensitive)
            assert abs(sensitive.mean() - trig.prevalence) < 4 * np.sqrt(trig.prevalence * (1 - trig.prevalence) / n)
    per_person = sum(users[f"{t.name}_sensitive"].cast(int) for t in cfg.triggers)
    assert 3.0 <= per_person.mean() <= 5.5  # N-of-1 studies: about 4 triggers per person


def test_attack_frequency_bands_match_ampp(large_cohort):
    shares = band_shares(large_cohort.truth_users["attack_days_per_month"].to_numpy())
    for name, _, _, ampp in AMPP_BANDS:
        assert abs(shares[name] - ampp) <= 0.05, (name, shares[name], ampp)


def test_oracle_is_calibrated_and_p_true_discriminates_at_least_as_well(large_cohort):
    days = large_cohort.truth_days.filter(pl.col("eligible"))
    y = days["onset"].to_numpy()
    p_true, p_oracle = days["p_true"].to_numpy(), days["p_oracle"].to_numpy()
    assert expected_calibration_error(y, p_oracle) <= 0.01
    assert expected_calibration_error(y, p_oracle, n_bins=20, strategy="quantile") <= 0.01
    assert pooled_auc(y, p_true) >= pooled_auc(y, p_oracle)
    users = days["user_id"].to_numpy()
    wp_true, _ = within_person_auc(users, y, p_true)
    wp_oracle, n = within_person_auc(users, y, p_oracle)
    assert wp_true >= wp_oracle and n > 1000
    # honest diary forecasting reaches within-person AUC ~0.55-0.65; the ceiling sits near it
    assert 0.55 <= wp_oracle <= 0.75


def test_attacks_last_one_to_three_days_and_cluster_in_bursty_people(large_cohort):
    days = large_cohort.truth_days.sort("user_id", "date")
    runs = (
        days.with_columns(run=(pl.col("attack_day") != pl.col("attack_day").shift(1).over("user_id")).cum_sum())
        .filter(pl.col("attack_day"))
        .group_by("user_id", "run")
        .len()
    )
    assert set(runs["len"].unique().to_list()) <= {1, 2, 3}
    onsets = days.filter(pl.col("onset")).with_columns(gap=pl.col("date").diff().over("user_id").dt.total_days())
    gaps = onsets.join(large_cohort.truth_users.select("user_id", "bursty"), on="user_id")
    short = gaps.group_by("bursty").agg((pl.col("gap") <= 7).mean()).sort("bursty")["gap"].to_list()
    assert short[1] > short[0]  # bursty people have more attacks within a week of the last


def test_prodrome_symptoms_precede_some_attacks(large_cohort):
    logs = large_cohort.daily_logs.sort("user_id", "date").with_columns(
        prodrome=pl.col("symptoms").list.eval(pl.element().is_in(["yawning", "neck_stiffness", "fatigue"])).list.any(),
        next_onset=(pl.col("migraine_occurred").shift(-1).over("user_id") & ~pl.col("migraine_occurred"))
        & (pl.col("date").shift(-1).over("user_id") == pl.col("date") + pl.duration(days=1)),
    )
    before_onset = logs.filter(pl.col("next_onset"))["prodrome"].mean()
    other_days = logs.filter(~pl.col("next_onset").fill_null(False) & ~pl.col("migraine_occurred").fill_null(True))[
        "prodrome"
    ].mean()
    assert before_onset > other_days + 0.05
    assert 0.2 <= before_onset <= 0.9


def test_diary_gaps_and_drop_out(large_cohort):
    spans = large_cohort.daily_logs.group_by("user_id").agg(
        logged=pl.len(), span=(pl.col("date").max() - pl.col("date").min()).dt.total_days() + 1
    )
    missing = 1 - spans["logged"].sum() / spans["span"].sum()
    assert 0.05 <= missing <= 0.13  # about 9% of days missing in diary studies
    assert 0.25 <= (spans["span"] >= 90).mean() <= 0.42  # a third still logging at 90 days
