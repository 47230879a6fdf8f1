"""The personalized model: Bayesian updates, prequential forecasts, trigger maps, the reference."""

from __future__ import annotations

from datetime import date, timedelta

import numpy as np
import polars as pl
import pytest

from migrainemamba.config import load_config, to_dict
from migrainemamba.data.simulator import simulate_cohort
from migrainemamba.evaluation.leakage import audit_leakage
from migrainemamba.evaluation.trigger_recovery import (
    recall_at_matched_precision,
    recovery,
    top_ranked,
)
from migrainemamba.features import build_features
from migrainemamba.models.base import ForecastBatch
from migrainemamba.models.bayes_logistic import (
    Rows,
    empirical_bayes,
    fit_laplace,
    online_update,
    predictive_logit,
)
from migrainemamba.models.personal import (
    Diaries,
    PersonalConfig,
    PersonalModel,
    personalise,
    personalise_user,
)
from migrainemamba.models.prior import PriorLogistic
from migrainemamba.models.trigger_map import ClassRule, MapRows, estimate_map_prior, trigger_maps
from tests.conftest import simulator_config

ONLINE_TOLERANCE = 5e-3  # |online - full refit| in log-odds after one new outcome (measured 1.8e-3 here)
COV_RTOL = 0.05  # relative, covariance (measured 3%)


def _rows(rng: np.random.Generator, n_users: int, n_days: int, truth: np.ndarray, base: float = -2.2) -> Rows:
    k = len(truth[0])
    x = np.hstack([np.ones((n_users * n_days, 1)), (rng.random((n_users * n_days, k - 1)) < 0.25).astype(float)])
    group = np.repeat(np.arange(n_users), n_days)
    offset = np.full(n_users * n_days, base)
    p = 1 / (1 + np.exp(-(offset + np.einsum("rk,rk->r", x, truth[group]))))
    return Rows(x, offset, (rng.random(len(p)) < p).astype(float), group, n_users)


def test_online_update_equals_full_refit_within_tolerance():
    rng = np.random.default_rng(0)
    truth = np.array([[0.3, 0.8, 0.0, -0.4]])
    rows = _rows(rng, 1, 180, truth)
    prior_mean, prior_var = np.zeros(4), np.full(4, 0.25)
    before = fit_laplace(rows.subset(np.arange(180) < 179), prior_mean, prior_var)
    online = online_update(before, rows.x[-1:], rows.offset[-1:], rows.y[-1:])
    full = fit_laplace(rows, prior_mean, prior_var)
    assert np.max(np.abs(online.mean - full.mean)) < ONLINE_TOLERANCE
    assert np.max(np.abs(online.cov - full.cov)) < COV_RTOL * np.max(np.abs(full.cov))
    x_new = np.array([[1.0, 1.0, 0.0, 1.0]])
    for moderated in (False, True):
        gap = predictive_logit(online, x_new, np.array([-2.2]), moderated) - predictive_logit(full, x_new, np.array([-2.2]), moderated)
        assert abs(gap[0]) < ONLINE_TOLERANCE


def test_empirical_bayes_recovers_the_spread_of_person_effects():
    rng = np.random.default_rng(1)
    sd = np.array([0.5, 0.6, 0.05])
    truth = rng.normal(0, sd, (400, 3))
    rows = _rows(rng, 400, 300, truth)
    eb = empirical_bayes(rows, np.zeros(3), np.full(3, 0.09))
    est = np.sqrt(eb.prior_var)
    assert abs(est[0] - 0.5) < 0.1 and abs(est[1] - 0.6) < 0.15
    assert est[2] < 0.25  # no real spread: a small prior, not a large one
    assert eb.log_evidence[-1] >= eb.log_evidence[0]


def test_a_diary_contradicting_the_prior_moves_the_posterior_away_from_it():
    """Prior: no deviation from the population. Diary: onsets follow exposure nearly always."""
    n = 120
    x = np.column_stack([np.ones(n), (np.arange(n) % 4 == 0).astype(float)])
    y = x[:, 1].copy()  # an onset on every exposed day, none otherwise
    rows = Rows(x, np.full(n, -2.5), y, np.zeros(n, int), 1)
    post = fit_laplace(rows.subset(np.ones(n, bool)), np.zeros(2), np.array([0.1, 0.1]))
    assert post.mean[0, 1] > 0.3  # the trigger deviation moved up, away from the prior's 0
    exposed_day, other_day = predictive_logit(post, np.array([[1.0, 1.0], [1.0, 0.0]]), np.full(2, -2.5), False)
    assert exposed_day > -2.5 + 0.3 and exposed_day - other_day > 0.3  # the forecast follows the diary
    lo = post.mean[0, 1] - 1.96 * post.sd()[0, 1]
    assert lo > 0


@pytest.fixture(scope="module")
def tiny():
    cohort = simulate_cohort(simulator_config(n_users=60, n_days=90, seed=3))
    features = build_features(cohort.users, cohort.daily_logs)
    offset = PriorLogistic({"perimenstrual": 2.04, "heavy_alcohol": 2.08, "night_snack": 0.6})
    offset.fit(ForecastBatch(cohort.users, cohort.daily_logs, features.filter(pl.col("scorable")).select("user_id", "date"), precomputed=features))
    model = PersonalModel(PersonalConfig(), offset)
    model.fit(ForecastBatch(cohort.users, cohort.daily_logs, features.filter(pl.col("scorable")).select("user_id", "date"), precomputed=features))
    return cohort, features, model


def test_forecasts_before_day_31_are_the_population_forecast(tiny):
    _cohort, features, model = tiny
    frame, _ = model.forecast_rows(features)
    rows = features.select("user_id", "date", "days_logged_before").join(frame, on=["user_id", "date"])
    early = rows.filter(pl.col("days_logged_before") < 30)
    expected = model.offset(features.join(early.select("user_id", "date"), on=["user_id", "date"], how="semi", maintain_order="left"))
    got = early.join(features.select("user_id", "date"), on=["user_id", "date"], maintain_order="right")["logit"].to_numpy()
    assert early.height > 0
    np.testing.assert_allclose(np.sort(got), np.sort(expected), atol=1e-12)
    late = rows.filter(pl.col("days_logged_before") >= 30)
    offset_late = model.offset(features.join(late.select("user_id", "date"), on=["user_id", "date"], how="semi", maintain_order="left"))
    assert late.height > 0 and not np.allclose(np.sort(late["logit"].to_numpy()), np.sort(offset_late))


def test_a_user_with_no_days_beyond_30_keeps_the_population_forecast(tiny):
    cohort, _, model = tiny
    user = cohort.users.head(1)
    for logged, personal in ((29, False), (30, True)):
        logs = cohort.daily_logs.filter(pl.col("user_id") == user["user_id"][0]).head(logged)
        next_day = logs["date"].max() + timedelta(days=1)
        p = personalise_user(model, user, logs, [next_day])
        features = build_features(user, logs, forecast_dates=pl.DataFrame({"user_id": user["user_id"], "date": [next_day]}))
        row = features.filter(pl.col("date") == next_day)
        assert row["days_logged_before"][0] == logged
        population = 1 / (1 + np.exp(-model.offset(row)))
        if personal:  # the 31st logged day: the personal model serves
            assert abs(p[0] - population[0]) > 1e-6
        else:  # the 30th: still the population's forecast, exactly
            np.testing.assert_allclose(p, population, atol=1e-12)


def test_prequential_forecasts_do_not_see_the_future(tiny):
    cohort, features, model = tiny
    targets = features.filter(pl.col("scorable") & (pl.col("days_logged_before") >= 40)).select("user_id", "date")
    result = audit_leakage(model, cohort.users, cohort.daily_logs, targets, n_samples=6, seed=1)
    assert result.checked == 6 and not result.violations, result.violations


def test_one_user_alone_gets_the_same_forecasts_as_in_the_cohort(tiny):
    cohort, features, model = tiny
    frame, _ = model.forecast_rows(features)
    uid = features.filter(pl.col("days_logged_before") >= 45)["user_id"][0]
    dates = features.filter((pl.col("user_id") == uid) & pl.col("scorable"))["date"].to_list()[-5:]
    alone = personalise_user(model, cohort.users.filter(pl.col("user_id") == uid), cohort.daily_logs.filter(pl.col("user_id") == uid), dates)
    in_cohort = frame.filter((pl.col("user_id") == uid) & pl.col("date").is_in(dates)).sort("date")["p"].to_numpy()
    np.testing.assert_allclose(alone, in_cohort, atol=1e-9)


def test_weekly_refit_then_online_updates_match_a_direct_fit(tiny):
    """The state after the last row = the refit at the last week start + online updates, and it
    is close to a full Laplace fit on every labelled row (the online tolerance, accumulated)."""
    _, features, model = tiny
    one = features.filter(pl.col("user_id") == features["user_id"][0])
    diaries, _ = Diaries.from_features(one, model.offset(one), model.design(one))
    result = personalise(diaries, model.prior_var, model.config)
    labelled = ~np.isnan(diaries.y)
    rows = Rows(diaries.x[labelled], diaries.offset[labelled], diaries.y[labelled], diaries.group[labelled], 1)
    full = fit_laplace(rows, np.zeros(len(model.prior_var)), model.prior_var)
    assert np.max(np.abs(result.final.mean - full.mean)) < 7 * ONLINE_TOLERANCE


def _one_trigger_cohort(trigger: str, log_or: float):
    base = simulator_config(n_users=300, n_days=120, seed=5)
    triggers = tuple(
        t.__class__(**{**t.__dict__, "prevalence": 0.5 if t.name == trigger else 0.0, "log_or": log_or if t.name == trigger else t.log_or, "sd": 0.05})
        for t in base.triggers
    )
    diary = {**base.diary, "retained_at_day_90": 0.97}
    return simulate_cohort(base.__class__(**{**base.__dict__, "triggers": triggers, "diary": diary}))


def test_one_strong_trigger_is_ranked_first_after_90_days():
    cohort = _one_trigger_cohort("stress_letdown", 1.6)
    features = build_features(cohort.users, cohort.daily_logs)
    rows = MapRows.build(features, cohort.daily_logs)
    prior = estimate_map_prior(rows.upto(90))
    logged = dict(features.group_by("user_id").agg(pl.col("logged").sum()).iter_rows())
    maps = trigger_maps(rows, prior, (90,), ClassRule(), logged)
    sensitive = cohort.truth_users.filter(pl.col("stress_letdown_sensitive"))["user_id"].to_list()
    ranked = [u for u in sensitive if u in set(maps["user_id"].to_list())]
    assert len(ranked) > 30
    first = np.mean([top_ranked(maps, u, 90) == "stress_letdown" for u in ranked])
    assert first > 0.8, first
    rec = recovery(maps, cohort.truth_users).filter(pl.col("method") == "personal")
    assert rec["spearman"][0] > 0.3


def test_n_of_1_map_counts_the_evidence():
    d0 = date(2025, 1, 6)
    days = 40
    users = pl.DataFrame({"user_id": ["a"]})
    exposed = np.arange(days) % 5 == 0
    features = pl.DataFrame(
        {
            "user_id": ["a"] * days,
            "date": [d0 + timedelta(days=i) for i in range(days)],
            "onset": exposed & (np.arange(days) % 10 == 0),
            "days_logged_before": np.arange(days, dtype=float),
            "personal_baseline_rate": [0.05] * days,
            "stress_change_yesterday": np.where(exposed, -4.0, 0.0),
        }
    )
    for col in ("perimenstrual", "stress_yesterday", "heavy_drinking_yesterday", "sleep_deviation_hours", "sleep_quality_good",
                "caffeine_habit", "caffeine_yesterday_minus_habit", "snack_yesterday", "pressure_change_48h"):
        features = features.with_columns(pl.lit(None, dtype=pl.Float64).alias(col))
    logs = pl.DataFrame({"user_id": ["a"] * days, "date": features["date"], "caffeine_drinks": [0] * days, "skipped_meals": [0] * days,
                         "bright_light_exposure": [False] * days, "water_glasses": [8] * days})
    rows = MapRows.build(features, logs)
    from migrainemamba.models.trigger_map import n_of_1_map

    m = n_of_1_map(rows, 40, ClassRule(z=1.96)).filter(pl.col("trigger") == "stress_letdown")
    assert m["n_exposed"][0] == 8 and m["n_onsets_exposed"][0] == 4
    # 4/8 onsets when exposed vs 0/32 otherwise: a clear trigger even for N-of-1
    assert m["class"][0] == "trigger" and m["lo"][0] > 0
    assert users.height == 1


def test_diary_bayes_reference_is_the_oracle_when_it_knows_the_sensitivities():
    from migrainemamba.data.simulator.cohort import simulate_internals
    from migrainemamba.evaluation.diary_bayes import ReferenceInputs, _filter, diary_bayes_reference

    cfg = simulator_config(n_users=30, n_days=60, seed=9)
    sim = simulate_internals(cfg)
    people = np.arange(8)
    known = [t.name for t in cfg.triggers if t.timing == "known"]
    same = [t.name for t in cfg.triggers if t.timing == "same_day"]
    true = ReferenceInputs(
        people,
        sim.inputs.alpha[people],
        sum(sim.log_or[k][people][:, None] * sim.expo.indicators[k][people] for k in known),
        np.stack([sim.log_or[k][people] for k in same], axis=1),
        sim.inputs.state_rate[people],
        sim.inputs.burst_log_or[people],
    )
    forecast, _, _ = _filter(sim, true, np.ones(true.known_lp.shape, bool), 1)
    eligible = sim.history.eligible[people]  # the oracle forecasts only days an attack may start
    np.testing.assert_allclose(forecast[eligible], sim.history.p_oracle[people][eligible], atol=1e-12)
    # with sensitivities drawn from the prior, a proper forecast that tracks the oracle
    cohort = simulate_cohort(cfg)
    ref = diary_bayes_reference(cfg, sim, ["u00000", "u00001"], cohort.truth_days.select("user_id", "date", "logged"), n_draws=64)
    joined = ref.join(cohort.truth_days, on=["user_id", "date"]).drop_nulls("p_oracle")
    assert joined.height > 50 and joined["p_reference"].is_between(0, 1).all()
    assert joined.select(pl.corr("p_reference", "p_oracle")).item() > 0.8
    assert (joined["ess"] <= 64 + 1e-9).all() and (joined["ess"] >= 1).all()


def test_diary_bayes_reference_learns_the_persons_dynamics_from_the_diary():
    """With proneness and clustering drawn too, the diary (symptoms before onsets, attacks
    after attacks) moves the forecast from the prior's towards the oracle's."""
    from migrainemamba.data.simulator.cohort import simulate_internals
    from migrainemamba.evaluation.diary_bayes import diary_bayes_reference

    cfg = simulator_config(n_users=40, n_days=150, seed=3)
    sim = simulate_internals(cfg)
    cohort = simulate_cohort(cfg)
    ids = [f"u{i:05d}" for i in range(40)]
    logged = cohort.truth_days.select("user_id", "date", "logged")
    ref = diary_bayes_reference(cfg, sim, ids, logged, n_draws=128, dynamics_known=False)
    days = ref.join(cohort.truth_days, on=["user_id", "date"]).drop_nulls("p_oracle").with_columns(
        day=pl.col("date").rank("dense").over("user_id")
    )
    late = days.filter(pl.col("day") > 90)
    error = late.select(
        learned=((pl.col("p_reference") - pl.col("p_oracle")) ** 2).mean(),
        prior=((pl.col("p_reference_unlearned") - pl.col("p_oracle")) ** 2).mean(),
    )
    assert error["learned"][0] < 0.9 * error["prior"][0]

    # frequency unknown too, and everyone told half their true attacks: the diary's
    # onsets pull the forecast's level back up towards the oracle's
    true_attacks = sim.people.target_days[:40] / sim.people.mean_duration[:40]
    told = {u: float(a) / 2 for u, a in zip(ids, true_attacks, strict=True)}
    ref = diary_bayes_reference(cfg, sim, ids, logged, n_draws=128, dynamics_known=False, self_report=told)
    late = ref.join(cohort.truth_days, on=["user_id", "date"]).drop_nulls("p_oracle").with_columns(
        day=pl.col("date").rank("dense").over("user_id")
    ).filter(pl.col("day") > 90)
    level = late.select(pl.col("p_oracle", "p_reference", "p_reference_unlearned").mean())
    oracle, learned, prior = level["p_oracle"][0], level["p_reference"][0], level["p_reference_unlearned"][0]
    assert prior < 0.8 * oracle  # the prior believes what they told
    # 90+ days of diary close part of the gap (measured 34%: the told rate is 2 sd of recall noise off)
    assert learned - prior > 0.2 * (oracle - prior)


def test_diary_bayes_reference_reads_the_triggers_as_the_diary_shows_them():
    """Given the true exposures as its diary, the reference is the true-exposure reference; the
    features' reading of the diary agrees with the truth where the day is fully logged."""
    from migrainemamba.data.simulator.cohort import simulate_internals
    from migrainemamba.evaluation.diary_bayes import diary_bayes_reference, diary_trigger_exposures

    cfg = simulator_config(n_users=12, n_days=60, seed=5)
    sim, cohort = simulate_internals(cfg), simulate_cohort(cfg)
    ids = ["u00002", "u00007"]
    logged = cohort.truth_days.select("user_id", "date", "logged")
    known = [t.name for t in cfg.triggers if t.timing == "known"]
    truth = cohort.truth_days.select("user_id", "date", *[pl.col(f"x_{n}").alias(n) for n in known])
    plain = diary_bayes_reference(cfg, sim, ids, logged, n_draws=32, dynamics_known=False)
    as_diary = diary_bayes_reference(cfg, sim, ids, logged, n_draws=32, dynamics_known=False, diary_exposures=truth)
    np.testing.assert_allclose(as_diary["p_reference"].to_numpy(), plain["p_reference"].to_numpy(), atol=1e-12)

    read = diary_trigger_exposures(build_features(cohort.users, cohort.daily_logs), cfg)
    both = read.join(truth, on=["user_id", "date"], suffix="_true").join(logged, on=["user_id", "date"])
    # heavy alcohol is yesterday's drinks: the reading is exact where yesterday is in the diary
    prev = logged.with_columns(pl.col("date") + timedelta(days=1)).rename({"logged": "logged_before"})
    full = both.join(prev, on=["user_id", "date"]).filter(pl.col("logged_before"))
    assert (full["heavy_alcohol"] == full["heavy_alcohol_true"]).mean() > 0.97
    # an unlogged yesterday reads as no exposure, whatever happened
    gap = both.join(prev, on=["user_id", "date"]).filter(~pl.col("logged_before"))
    assert gap.height > 0 and not gap["heavy_alcohol"].any()
    with pytest.raises(ValueError, match="diary exposures"):
        diary_bayes_reference(cfg, sim, ids, logged, n_draws=8, diary_exposures=truth.drop("perimenstrual"))


def test_diary_bayes_reference_with_usual_propensity_ignores_each_mornings_exposure_chances():
    """``usual_propensity``: shuffling the days of the oracle's same-day exposure chances (their
    mean kept) leaves the forecasts unchanged; without it they change."""
    from migrainemamba.data.simulator.cohort import BURN_IN_DAYS, simulate_internals
    from migrainemamba.evaluation.diary_bayes import diary_bayes_reference

    cfg = simulator_config(n_users=6, n_days=50, seed=4)
    sim, cohort = simulate_internals(cfg), simulate_cohort(cfg)
    ids, logged = ["u00001", "u00003"], cohort.truth_days.select("user_id", "date", "logged")

    def run(usual: bool) -> np.ndarray:
        return diary_bayes_reference(cfg, sim, ids, logged, n_draws=16, usual_propensity=usual)["p_reference"].to_numpy()

    before, before_usual = run(False), run(True)
    days = np.arange(BURN_IN_DAYS, sim.inputs.same_day_prob.shape[1])
    sim.inputs.same_day_prob[:, days] = sim.inputs.same_day_prob[:, np.random.default_rng(0).permutation(days)]
    np.testing.assert_allclose(run(True), before_usual, atol=1e-12)
    assert np.nanmax(np.abs(run(False) - before)) > 1e-3


def test_fit_estimates_the_prior_around_the_offsets_it_is_given(tiny):
    """``fit(offset=...)`` (the stage passes out-of-fold log-odds): the model's own offsets give
    the default fit; offsets that explain less of each person's level leave a wider level spread."""
    cohort, features, model = tiny
    rows = features.filter(pl.col("scorable"))
    batch = ForecastBatch(cohort.users, cohort.daily_logs, rows.select("user_id", "date"), precomputed=features)
    same = PersonalModel(PersonalConfig(), model.offset_model)
    same.fit(batch, offset=model.offset(rows))
    assert same.config.prior_var == model.config.prior_var
    flat = PersonalModel(PersonalConfig(), model.offset_model)
    flat.fit(batch, offset=np.full(rows.height, float(np.mean(model.offset(rows)))))  # no person's level in the offset
    assert flat.config.prior_var["level"] > model.config.prior_var["level"]
    with pytest.raises(ValueError, match="offsets for"):
        flat.fit(batch, offset=np.zeros(3))


def test_recall_at_matched_precision_only_counts_baseline_rules_as_precise():
    chosen = pl.DataFrame({"horizon_days": [90, 180], "method": ["personal"] * 2, "precision": [0.8, float("nan")], "recall": [0.05, 0.0]})
    curve = pl.DataFrame(
        {
            "horizon_days": [90, 90, 90, 180],
            "method": ["n_of_1"] * 4,
            "z": [1.0, 2.0, 3.0, 1.0],
            "precision": [0.5, 0.85, float("nan"), 0.4],
            "recall": [0.3, 0.02, 0.0, 0.1],
        }
    )
    out = recall_at_matched_precision(chosen, curve).sort("horizon_days")
    assert out["n_of_1_recall"].to_list() == [0.02, 0.1]  # z=1 at 90 days is less precise: not counted
    assert out["n_of_1_z"].to_list() == [2.0, 1.0]
    assert out["beats"].to_list() == [True, False]  # no calls at all beats nothing


def test_a_persons_weight_on_recent_attacks_follows_how_their_attacks_cluster():
    """Half the people's attacks cluster strongly, half's not at all. On a foundation model that
    learned the cohort's average clustering, the personal weight on its recent-attack effect
    ends higher for the clustering half; the effect's covariate is 0 on days with no recent attack."""
    from migrainemamba.models.foundation import FoundationConfig, FoundationModel
    from migrainemamba.models.personal import effect_log_odds

    frequency = to_dict(load_config().data)["frequency"] | {"bursty_share": 0.5, "burst_log_or": 2.5}
    cohort = simulate_cohort(simulator_config(n_users=300, n_days=240, seed=5, frequency=frequency))
    features = build_features(cohort.users, cohort.daily_logs)
    scorable = ForecastBatch(cohort.users, cohort.daily_logs, features.filter(pl.col("scorable")).select("user_id", "date"), precomputed=features)
    cfg = to_dict(load_config().foundation) | {"num_boost_round": 60, "num_threads": 1, "min_data_in_leaf": 100}
    foundation = FoundationModel(FoundationConfig.from_dict(cfg))
    foundation.fit(scorable)

    effect = effect_log_odds(foundation, features, "recent_attacks")
    quiet = ((features["days_since_last_attack"] >= 60) & (features["attack_days_last_7_days"] == 0)).to_numpy()
    assert np.allclose(effect[quiet], 0.0) and np.abs(effect[~quiet]).max() > 0.3

    model = PersonalModel(PersonalConfig(triggers=(), weighted_effects=("recent_attacks",)), foundation)
    model.fit(scorable)
    assert np.sqrt(model.config.prior_var["recent_attacks_weight"]) > 0.1  # people differ: a real spread
    _, result = model.forecast_rows(features)
    weight = dict(zip(sorted(features["user_id"].unique()), result.final.mean[:, -1], strict=True))
    truth = cohort.truth_users.select("user_id", "bursty").with_columns(weight=pl.col("user_id").replace_strict(weight))
    by = dict(truth.group_by("bursty").agg(pl.col("weight").mean()).iter_rows())
    assert by[True] - by[False] > 0.1  # measured 0.15, about 5 standard errors of the group means
