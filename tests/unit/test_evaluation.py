"""The evaluation harness: hand-checked metrics, seeded bootstrap, time-ordered split, no leakage."""

from __future__ import annotations

import datetime as dt
import itertools

import numpy as np
import polars as pl
import pytest

from migrainemamba.evaluation.harness import SplitData, predict_test, score_predictions
from migrainemamba.evaluation.leakage import LeakageError, require_no_leakage
from migrainemamba.evaluation.scoring import (
    Scored,
    bootstrap_replicates,
    score_with_intervals,
    summarize,
    weighted_auc,
)
from migrainemamba.features import build_features
from migrainemamba.metrics import (
    expected_calibration_error,
    pooled_auc,
    within_person_auc,
)
from migrainemamba.models.base import ForecastBatch
from migrainemamba.models.baselines import RunningBaseRate
from migrainemamba.split import make_split

SPLIT = {"holdout_user_share": 0.25, "train_share": 0.55, "valid_share": 0.15, "seed": 1}


def test_auc_matches_a_hand_computed_value():
    y = np.array([0, 0, 1, 1])
    p = np.array([0.1, 0.4, 0.35, 0.8])
    # positive/negative pairs: (0.35>0.1), (0.35<0.4), (0.8>0.1), (0.8>0.4) -> 3/4
    assert pooled_auc(y, p) == pytest.approx(0.75)
    assert weighted_auc(y, p, np.ones((1, 4)))[0] == pytest.approx(0.75)
    # a tie counts one half
    assert pooled_auc(np.array([0, 1]), np.array([0.5, 0.5])) == pytest.approx(0.5)
    # integer weights equal repeating rows
    w = np.array([[2.0, 1.0, 1.0, 3.0]])
    y_rep, p_rep = np.repeat(y, [2, 1, 1, 3]), np.repeat(p, [2, 1, 1, 3])
    assert weighted_auc(y, p, w)[0] == pytest.approx(pooled_auc(y_rep, p_rep))
    # per-user weights: rows 0, 1 belong to user 1 (drawn twice), rows 2, 3 to user 0 (once)
    user = np.array([1, 1, 0, 0])
    per_user = np.array([[1.0, 2.0]])
    y_rep, p_rep = np.repeat(y, [2, 2, 1, 1]), np.repeat(p, [2, 2, 1, 1])
    assert weighted_auc(y, p, per_user, user)[0] == pytest.approx(pooled_auc(y_rep, p_rep))


def test_ece_matches_a_hand_computed_value():
    p = np.array([0.1, 0.1, 0.9, 0.9])
    y = np.array([0, 1, 1, 1])
    # bin [0.1,0.2): forecast 0.1 vs rate 0.5, half the days -> 0.2; bin [0.9,1]: 0.9 vs 1.0 -> 0.05
    assert expected_calibration_error(y, p) == pytest.approx(0.25)
    assert expected_calibration_error(np.array([0, 1]), np.array([0.5, 0.5])) == pytest.approx(0.0)


def test_within_person_auc_averages_users_with_both_classes():
    users = np.array(["a"] * 4 + ["b"] * 3 + ["c"] * 2)
    y = np.array([0, 0, 1, 1, 0, 1, 1, 0, 0])
    p = np.array([0.1, 0.4, 0.35, 0.8, 0.9, 0.1, 0.2, 0.3, 0.4])
    value, n = within_person_auc(users, y, p)
    assert n == 2  # c has no onset
    assert value == pytest.approx((0.75 + 0.0) / 2)


def _scored(seed: int = 0) -> Scored:
    rng = np.random.default_rng(seed)
    user = np.repeat(np.arange(60), 50)
    y = rng.random(user.size) < 0.1
    p = np.clip(0.1 + 0.1 * y + rng.normal(0, 0.05, user.size), 0.01, 0.99)
    return Scored(user=user, y=y, p=p, p_ref=np.full(user.size, 0.1), p_oracle=np.clip(p + 0.05 * y, 0, 1))


def test_bootstrap_is_seeded_and_brackets_the_point_estimate():
    s = _scored()
    a = score_with_intervals(s, n_boot=100, seed=3)
    b = score_with_intervals(s, n_boot=100, seed=3)
    c = score_with_intervals(s, n_boot=100, seed=4)
    assert a == b
    assert a["auc_lo"] != c["auc_lo"]
    for name in ("auc", "within_person_auc", "brier", "brier_skill", "ece", "lift_captured_auc"):
        assert a[f"{name}_lo"] <= a[name] <= a[f"{name}_hi"], name
    assert a["brier"] == pytest.approx(np.mean((s.p - s.y) ** 2))
    assert a["brier_skill"] == pytest.approx(1 - np.mean((s.p - s.y) ** 2) / np.mean((0.1 - s.y) ** 2))


@pytest.fixture(scope="module")
def split_data(small_cohort):
    features = make_split(build_features(small_cohort.users, small_cohort.daily_logs), SPLIT)
    return SplitData(small_cohort.users, small_cohort.daily_logs, features)


def test_split_is_time_ordered_within_users_and_holds_out_whole_users(split_data):
    f = split_data.features.filter(pl.col("logged"))
    cold = f.filter(pl.col("cold_start"))
    assert cold.height and (cold["split"] == "test").all()
    assert 0.1 < f["cold_start"].mean() < 0.4
    ranges = (
        f.filter(~pl.col("cold_start"))
        .group_by("user_id", "split")
        .agg(first=pl.col("date").min(), last=pl.col("date").max())
    )
    order = {"train": 0, "valid": 1, "test": 2}
    for (_, ), part in ranges.group_by("user_id"):
        rows = sorted(part.iter_rows(named=True), key=lambda r: order[r["split"]])
        for earlier, later in itertools.pairwise(rows):
            assert earlier["last"] < later["first"]
    again = make_split(split_data.features.drop("split", "cold_start"), SPLIT)
    assert again["split"].equals(split_data.features["split"])


class PeekingModel:
    """Cheats: reads the forecast day's own reported outcome from the diary."""

    name = "peeking"

    def fit(self, train, valid=None):
        pass

    def predict(self, batch: ForecastBatch) -> np.ndarray:
        outcome = batch.targets.join(
            batch.daily_logs.select("user_id", "date", "migraine_occurred"), on=["user_id", "date"], how="left",
            maintain_order="left",
        )["migraine_occurred"]
        return np.where(outcome.fill_null(False).to_numpy(), 0.99, 0.01)


def test_harness_refuses_a_model_that_sees_the_future(split_data):
    test = split_data.batch("test")
    cheat = PeekingModel()
    # scored naively it looks near-perfect ...
    assert pooled_auc(test.labels().astype(bool), cheat.predict(test)) > 0.95
    # ... and the harness refuses it
    with pytest.raises(LeakageError, match="peeking"):
        require_no_leakage(cheat, split_data.users, split_data.daily_logs, test.targets, n_samples=10)
    with pytest.raises(LeakageError):
        predict_test([RunningBaseRate(), cheat], split_data, audit_samples=10)


def test_honest_model_passes_and_is_scored_per_phase(split_data):
    predictions = predict_test([RunningBaseRate()], split_data, audit_samples=6)
    assert set(predictions.columns) >= {"user_id", "date", "phase", "model", "p", "y"}
    scores = score_predictions(predictions, n_boot=20, seed=0)
    assert set(scores) == {"all", "cold_start"}
    some = scores["all"]["31+"]["base_rate"]
    assert some["brier_skill"] == pytest.approx(0.0)  # the reference scored against itself


def test_every_two_models_get_paired_differences(split_data):
    """Each model carries ``<metric>_minus_<other>`` for every other model: the point is the
    difference of the two scores and the pair is antisymmetric (same resamples)."""
    predictions = predict_test([RunningBaseRate()], split_data, audit_samples=6)
    shrunk = predictions.with_columns(model=pl.lit("shrunk"), p=pl.col("p") * 0.5 + 0.05)
    scores = score_predictions(pl.concat([predictions, shrunk]), n_boot=20, seed=0)
    base, other = scores["all"]["31+"]["base_rate"], scores["all"]["31+"]["shrunk"]
    for metric in ("auc", "within_person_auc", "brier_skill", "ece"):
        assert other[f"{metric}_minus_base_rate"] == pytest.approx(other[metric] - base[metric])
        assert base[f"{metric}_minus_shrunk"] == pytest.approx(-other[f"{metric}_minus_base_rate"])
        assert base[f"{metric}_minus_shrunk_lo"] == pytest.approx(-other[f"{metric}_minus_base_rate_hi"])
    assert "auc_minus_base_rate" not in base
    # a monotone transform keeps the ranking: no AUC difference at all, but calibration changes
    assert other["auc_minus_base_rate"] == pytest.approx(0.0, abs=1e-12)
    assert other["brier_skill_minus_base_rate"] != pytest.approx(0.0)


def _recency_within_person_auc(window_days: int, n_users: int = 2000, rate: float = 0.1) -> float:
    """Within-person AUC of 'an attack in the last 3 days' when onsets are iid (no signal at all),
    scored as the harness scores: the day after an attack day is not scored."""
    rng = np.random.default_rng(0)
    days = rng.random((n_users, 30 + window_days)) < rate  # 30 days of history, then the window
    t = np.arange(30, 30 + window_days)
    recent = days[:, t - 1] | days[:, t - 2] | days[:, t - 3]
    scored = ~days[:, t - 1]
    users = np.broadcast_to(np.arange(n_users)[:, None], scored.shape)
    auc, _ = within_person_auc(users[scored], days[:, t][scored], recent[scored].astype(float))
    return auc


def test_within_person_auc_penalises_recency_in_short_windows():
    """A property of the metric, not a bug (README, "Models and evaluation"): in a short window
    a forecast that rises after attacks ranks each person's attack days low even when it carries
    no information; the effect fades as the window grows."""
    short, long = _recency_within_person_auc(16), _recency_within_person_auc(200)
    assert short < 0.46
    assert 0.48 < long < 0.52
    assert short < long


def test_oracle_scored_once_equals_the_oracle_of_each_model():
    """The harness scores the oracle once per phase and population and shares it; the shared
    values equal the oracle scored with each model's own days."""
    rng = np.random.default_rng(3)
    n = 600
    days = pl.DataFrame({
        "user_id": [f"u{i % 40:02d}" for i in range(n)],
        "date": [dt.date(2025, 1, 1) + dt.timedelta(days=i // 40) for i in range(n)],
        "phase": "31+", "cold_start": [i % 3 == 0 for i in range(n)],
        "y": rng.random(n) < 0.2, "p_oracle": rng.uniform(0.05, 0.5, n),
    })
    frames = [days.with_columns(model=pl.lit(name), p=pl.Series(rng.uniform(0.05, 0.5, n))) for name in ("base_rate", "other")]
    predictions = pl.concat(frames, how="diagonal")
    scores = score_predictions(predictions, n_boot=20, seed=0)["all"]["31+"]["other"]
    user_index = {u: i for i, u in enumerate(sorted(days["user_id"].unique()))}
    direct = summarize(bootstrap_replicates(Scored(
        user=np.array([user_index[u] for u in days["user_id"]]), y=days["y"].to_numpy(), p=frames[1]["p"].to_numpy(),
        p_ref=frames[0]["p"].to_numpy(), p_oracle=days["p_oracle"].to_numpy(),
    ), 20, 0))
    for key in ("oracle_auc", "oracle_auc_lo", "oracle_within_person_auc", "oracle_brier_skill_hi", "lift_captured_auc_lo"):
        assert scores[key] == pytest.approx(direct[key], abs=1e-12)


def test_truth_scores_track_the_true_risk_within_person():
    """Simulated data: forecasts are also scored against p_true. A forecast equal to p_true (up to
    a shift per person) correlates 1 within person; one constant per person correlates 0; the
    running base rate's selection effect does not reach these scores."""
    rng = np.random.default_rng(5)
    user = np.repeat(np.arange(50), 30)
    p_true = rng.uniform(0.02, 0.4, len(user))
    y = rng.random(len(user)) < p_true
    base = {"user": user, "y": y, "p_ref": np.full(len(user), 0.1), "p_true": p_true}
    truth_logit = np.log(p_true / (1 - p_true))
    shifted = 1 / (1 + np.exp(-(truth_logit + rng.normal(0, 1, 50)[user])))  # true ranking within person
    per_person = np.repeat(rng.uniform(0.05, 0.3, 50), 30)
    exact = score_with_intervals(Scored(p=p_true, **base), n_boot=20, seed=0)
    assert exact["within_person_risk_corr"] == pytest.approx(1.0)
    assert exact["risk_mse"] == pytest.approx(0.0)
    assert score_with_intervals(Scored(p=shifted, **base), 20, 0)["within_person_risk_corr"] == pytest.approx(1.0)
    flat = score_with_intervals(Scored(p=per_person, **base), 20, 0)
    assert flat["within_person_risk_corr"] == pytest.approx(0.0, abs=1e-9)
    assert flat["risk_mse"] == pytest.approx(np.mean((per_person - p_true) ** 2))


def test_score_plot_draws_an_interval_that_misses_its_estimate(tmp_path):
    """A percentile bootstrap interval may exclude the point estimate (few resamples, a skewed
    score): the bar stops at the estimate instead of crashing the stage."""
    from migrainemamba.evaluation.plots import interval_extent, plot_scores

    assert interval_extent(0.5, 0.52, 0.6) == (0.0, pytest.approx(0.1))
    scores = {"all": {"1-14": {"foundation": {"brier_skill": 0.05, "brier_skill_lo": 0.051, "brier_skill_hi": 0.07}}}}
    plot_scores(scores, tmp_path / "s.png", metric="brier_skill")
    assert (tmp_path / "s.png").stat().st_size > 0
