"""Tests for the clinical-prior baseline and the LightGBM foundation model.

Small simulated cohort (``small_cohort``: 120 people x 120 days), split exactly
as the evaluation splits it. Tolerances: decompositions must add up to the
logit within 1e-6 (float64 sums; observed ~1e-13); save/load and the MLflow
wrapper must reproduce predictions to 1e-12.
"""

from __future__ import annotations

import math
from pathlib import Path

import mlflow
import numpy as np
import polars as pl
import pytest

from migrainemamba.config import load_config, to_dict
from migrainemamba.data.prepare import PreparedCohort
from migrainemamba.features import FEATURE_COLUMNS, build_features
from migrainemamba.features.triggers import GROUP_NAMES, trigger_indicators
from migrainemamba.models.base import ForecastBatch, ForecastModel
from migrainemamba.models.foundation import (
    FoundationConfig,
    FoundationModel,
    FoundationPyfunc,
    feature_matrix,
    pyfunc_kwargs,
)
from migrainemamba.models.prior import PriorLogistic, fit_calibration, prior_offset, sigmoid
from migrainemamba.split import make_split

EXACT = 1e-6


def foundation_config(overrides: list[str] = (), **fields) -> FoundationConfig:
    """The real composed config (prior table included), with field overrides."""
    section = to_dict(load_config(list(overrides)).foundation)
    section.update(fields)
    return FoundationConfig.from_dict(section)


@pytest.fixture(scope="module")
def split_features(small_cohort) -> pl.DataFrame:
    features = build_features(small_cohort.users, small_cohort.daily_logs)
    return make_split(features, to_dict(load_config().split))


def _batch(cohort, split: pl.DataFrame, name: str) -> ForecastBatch:
    rows = split.filter((pl.col("split") == name) & pl.col("scorable") & ~pl.col("cold_start"))
    return ForecastBatch(
        cohort.users, cohort.daily_logs, rows.select("user_id", "date"), precomputed=split
    )


@pytest.fixture(scope="module")
def batches(small_cohort, split_features) -> dict[str, ForecastBatch]:
    return {name: _batch(small_cohort, split_features, name) for name in ("train", "valid", "test")}


@pytest.fixture(scope="module")
def fitted(batches) -> FoundationModel:
    model = FoundationModel(foundation_config(num_threads=1))
    model.fit(batches["train"], batches["valid"])
    return model


# ------------------------------------------------------------------ prior


def test_prior_logistic_is_a_forecast_model_and_fits_two_parameters(batches):
    model = PriorLogistic(foundation_config().odds_ratios, prior_name="within_person")
    assert isinstance(model, ForecastModel)
    model.fit(batches["train"])
    p = model.predict(batches["test"])
    assert p.shape == (batches["test"].targets.height,)
    assert np.all((p > 0) & (p < 1))
    assert model.slope > 0  # the prior ranks days in the right direction


def test_calibration_recovers_known_intercept_and_slope():
    rng = np.random.default_rng(0)
    offset = rng.normal(-3.0, 1.0, 200_000)
    y = rng.random(offset.size) < sigmoid(0.4 + 0.7 * offset)
    a, b = fit_calibration(offset, y)
    assert a == pytest.approx(0.4, abs=0.06)
    assert b == pytest.approx(0.7, abs=0.03)


def test_calibration_names_an_unidentified_fit():
    with pytest.raises(ValueError, match="both onset and no-onset"):
        fit_calibration(np.arange(5.0), np.zeros(5))
    with pytest.raises(ValueError, match="constant"):
        fit_calibration(np.ones(5), np.array([0, 1, 0, 1, 0]))


def test_changed_odds_ratio_moves_the_offset_in_its_direction(split_features):
    base = foundation_config().odds_ratios
    present = trigger_indicators(split_features, ["heavy_alcohol"])["heavy_alcohol"].to_numpy() == 1
    assert present.any() and (~present).any()
    before = prior_offset(split_features, base)
    stronger = prior_offset(split_features, base | {"heavy_alcohol": 4.0})
    protective = prior_offset(split_features, base | {"heavy_alcohol": 0.5})
    np.testing.assert_allclose(
        stronger[present] - before[present], math.log(4.0 / 2.08), atol=1e-12
    )
    np.testing.assert_allclose(
        protective[present] - before[present], math.log(0.5 / 2.08), atol=1e-12
    )
    np.testing.assert_array_equal(stronger[~present], before[~present])


def test_prior_rejects_unknown_triggers_and_bad_odds_ratios(split_features):
    with pytest.raises(ValueError, match="unknown triggers"):
        prior_offset(split_features, {"full_moon": 2.0})
    with pytest.raises(ValueError, match="positive and finite"):
        prior_offset(split_features, {"heavy_alcohol": 0.0})


# ------------------------------------------------------------- foundation


def test_fit_predict_shapes_and_range(fitted, batches):
    assert isinstance(fitted, ForecastModel) and fitted.name == "foundation"
    p = fitted.predict(batches["test"])
    assert p.shape == (batches["test"].targets.height,)
    assert np.all(np.isfinite(p)) and np.all((p > 0) & (p < 1))
    assert (
        1 <= fitted.summary.best_iteration < fitted.config.num_boost_round
    )  # early stopping acted
    assert set(fitted.summary.valid_scores) == {"binary_logloss", "auc"}


def test_day_one_forecasts_are_the_calibrated_prior_when_few_trees(batches, split_features):
    model = FoundationModel(foundation_config(num_threads=1, num_boost_round=3))
    model.fit(batches["train"])
    prior = PriorLogistic(model.config.odds_ratios)
    prior.fit(batches["train"])
    assert (model.intercept, model.slope) == pytest.approx((prior.intercept, prior.slope))
    # a person's first day is never scorable (no D-1 outcome), but it is forecast
    day_one = split_features.filter(pl.col("days_logged_before") == 0)
    assert day_one.height > 100
    # 3 trees at learning rate 0.05 move a logit by little; the rest is the prior
    gap = np.abs(model.logit(day_one) - prior.logit(day_one))
    assert gap.max() < 0.25 and gap.mean() < 0.1  # observed 0.09 and 0.03


def test_contributions_plus_baseline_equal_the_logit(fitted, batches):
    batch = batches["test"]
    frame = fitted.contributions(batch)
    groups = list(GROUP_NAMES)
    total = frame.select(pl.sum_horizontal(["baseline", *groups])).to_series().to_numpy()
    logit = fitted.logit(batch.features())
    np.testing.assert_allclose(total, logit, rtol=0, atol=EXACT)
    np.testing.assert_allclose(frame["p"].to_numpy(), fitted.predict(batch), rtol=0, atol=1e-12)
    # every group from explain(top_k=None), plus the baseline, gives the logit as well
    explained = fitted.explain(batch, top_k=None)
    sums = np.array([sum(item["log_odds"] for item in row) for row in explained])
    np.testing.assert_allclose(sums + frame["baseline"].to_numpy(), logit, rtol=0, atol=EXACT)
    parts = fitted.decompose(batch.features())
    assert np.abs(parts.prior).sum() > 0 and np.abs(parts.learned).sum() > 0


def test_explain_gives_top_k_groups_in_human_names(fitted, batches):
    explained = fitted.explain(batches["test"], top_k=3)
    assert len(explained) == batches["test"].targets.height
    for row in explained[:50]:
        assert len(row) == 3
        assert {item["name"] for item in row} <= set(GROUP_NAMES.values())
        sizes = [abs(item["log_odds"]) for item in row]
        assert sizes == sorted(sizes, reverse=True)
        for item in row:
            assert item["log_odds"] == pytest.approx(
                item["prior_log_odds"] + item["learned_log_odds"]
            )
            assert item["odds_multiplier"] == pytest.approx(math.exp(item["log_odds"]))


def test_save_load_round_trip_gives_identical_predictions(fitted, batches, tmp_path):
    fitted.save(tmp_path / "foundation")
    loaded = FoundationModel.load(tmp_path / "foundation")
    batch = batches["test"]
    np.testing.assert_array_equal(loaded.predict(batch), fitted.predict(batch))
    assert loaded.config == fitted.config
    assert (loaded.intercept, loaded.slope) == (fitted.intercept, fitted.slope)
    np.testing.assert_array_equal(
        loaded.contributions(batch)["baseline"], fitted.contributions(batch)["baseline"]
    )


def test_a_bag_of_fits_forecasts_the_mean_log_odds_and_explains_it_exactly(fitted, batches, tmp_path):
    bag = FoundationModel(foundation_config(num_threads=1, n_fits=3))
    bag.fit(batches["train"], batches["valid"])
    assert len(bag.boosters) == 3 and len(bag.summary.best_iterations) == 3
    assert [int(b.params["seed"]) for b in bag.boosters] == [bag.config.seed + i for i in range(3)]
    features = batches["test"].features()
    x = feature_matrix(features, ())
    raw = [b.predict(x, raw_score=True) for b in bag.boosters]
    assert not np.allclose(raw[0], raw[1])  # another seed, another fit
    # its first fit is the single fit's model (same seed, same data)
    np.testing.assert_array_equal(raw[0], fitted.booster.predict(x, raw_score=True))
    np.testing.assert_allclose(bag.logit(features), bag.offset(features) + np.mean(raw, axis=0), rtol=0, atol=1e-12)
    frame = bag.contributions(batches["test"])
    total = frame.select(pl.sum_horizontal(["baseline", *GROUP_NAMES])).to_series().to_numpy()
    np.testing.assert_allclose(total, bag.logit(features), rtol=0, atol=EXACT)
    bag.save(tmp_path / "bag")
    loaded = FoundationModel.load(tmp_path / "bag")
    np.testing.assert_array_equal(loaded.logit(features), bag.logit(features))
    (tmp_path / "bag" / "booster_2.txt").unlink()
    with pytest.raises(FileNotFoundError, match="booster_2.txt"):
        FoundationModel.load(tmp_path / "bag")
    with pytest.raises(ValueError, match="n_fits"):
        foundation_config(n_fits=0)


def test_load_names_a_missing_model(tmp_path):
    with pytest.raises(FileNotFoundError, match="booster.txt"):
        FoundationModel.load(tmp_path)


def test_pyfunc_wrapper_gives_the_same_probabilities(fitted, batches, tmp_path):
    model_dir = fitted.save(tmp_path / "foundation")
    features = batches["test"].features()
    kwargs = pyfunc_kwargs(model_dir, features.head(5))
    assert kwargs["signature"].inputs.input_names() == list(FEATURE_COLUMNS)
    mlflow.pyfunc.save_model(path=str(tmp_path / "pyfunc"), **kwargs)
    loaded = mlflow.pyfunc.load_model(str(tmp_path / "pyfunc"))
    inputs = features.select(FEATURE_COLUMNS).to_pandas()
    expected = fitted.predict(batches["test"])
    np.testing.assert_allclose(np.asarray(loaded.predict(inputs)), expected, rtol=0, atol=1e-12)
    # the wrapper itself takes polars as well
    wrapper = FoundationPyfunc()
    wrapper.model = fitted
    np.testing.assert_allclose(
        wrapper.predict(None, features.select(FEATURE_COLUMNS)), expected, rtol=0, atol=1e-12
    )


def test_num_threads_is_set_explicitly_from_config(fitted):
    assert fitted.config.lgb_params()["num_threads"] == 1
    assert int(fitted.booster.params["num_threads"]) == 1
    assert foundation_config().num_threads == load_config().num_threads  # the global setting
    with pytest.raises(ValueError, match="num_threads"):
        foundation_config(num_threads=0)


@pytest.mark.parametrize("table", ["within_person", "readme"])
def test_both_prior_tables_are_selectable(table, batches):
    config = foundation_config([f"prior={table}"], num_threads=1, num_boost_round=5)
    assert config.prior_name == table
    assert config.odds_ratios == to_dict(load_config([f"prior={table}"]).prior)["odds_ratios"]
    model = FoundationModel(config)
    model.fit(batches["train"])
    assert np.all(np.isfinite(model.predict(batches["valid"])))


def test_config_errors_name_the_problem():
    with pytest.raises(ValueError, match="unknown keys"):
        foundation_config(learning_rat=0.1)
    with pytest.raises(ValueError, match="binary"):
        foundation_config(objective="regression")


# ------------------------------------------------------------------ stage


def test_stage_writes_model_metrics_plots_and_registers(small_cohort, tmp_path, monkeypatch, mlflow_sqlite_store):
    from migrainemamba.stages.foundation import run as run_foundation

    PreparedCohort(small_cohort.users, small_cohort.daily_logs, quarantine=pl.DataFrame()).write(
        tmp_path / "prepared"
    )
    uri = mlflow_sqlite_store(tmp_path / "mlflow.db")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    mlflow.create_experiment("foundation", artifact_location=(tmp_path / "artifacts").as_uri())
    cfg = load_config(
        [
            f"paths.{key}={tmp_path / key}"
            for key in ("prepared", "features", "models", "metrics", "plots")
        ]
        + ["foundation.num_threads=1"]
    )
    try:
        metrics = run_foundation(cfg)
        client = mlflow.MlflowClient()
        versions = client.search_model_versions("name='migrainemamba-foundation'")
    finally:
        mlflow.set_tracking_uri("")
    assert 0.5 < metrics["valid_auc"] <= 1 and metrics["best_iteration"] >= 1
    assert (tmp_path / "metrics" / "foundation.json").is_file()
    assert (tmp_path / "plots" / "foundation" / "group_importance.png").is_file()
    assert (
        FoundationModel.load(tmp_path / "models" / "foundation").summary.best_iteration
        == metrics["best_iteration"]
    )
    assert len(versions) == 1


# ------------------------------------------------------------------ serving without torch


SERVE_WITHOUT_TORCH = """
import json, sys
from datetime import date, timedelta
from fastapi.testclient import TestClient
from migrainemamba.service.app import create_app
from migrainemamba.service.deps import get_today
from tests.unit.test_service_support import PROFILE, full_day, make_settings
tmp = __import__("pathlib").Path(sys.argv[1])
settings = make_settings(tmp, routing_table_path=tmp / "routing.json")
app = create_app(settings)
today = date(2025, 3, 1)
app.dependency_overrides[get_today] = lambda: today
with TestClient(app) as client:
    body = client.post("/users/onboarding", json=PROFILE).json()
    user, headers = body["user"]["user_id"], {"Authorization": f"Bearer {body['access_token']}"}
    for back in range(3, 0, -1):
        r = client.post("/logs/submit", json=full_day(user, today - timedelta(days=back)), headers=headers)
        assert r.status_code == 201, r.text
    forecast = client.get(f"/predictions/{user}", headers=headers)
    assert forecast.status_code == 200, forecast.text
    print(json.dumps({"model": forecast.json().get("model_name"), "torch": "torch" in sys.modules,
                      "lightning": "lightning" in sys.modules}))
"""


def test_service_serving_foundation_only_never_imports_torch(fitted, tmp_path):
    """docs/architecture.md: the service imports torch only when a torch model is routed."""
    import json
    import subprocess
    import sys

    fitted.save(tmp_path / "foundation")
    table = {p: {"model": "foundation", "version": "1", "path": "foundation"} for p in ("1-14", "15-30", "31+")}
    (tmp_path / "routing.json").write_text(json.dumps(table))
    out = subprocess.run(
        [sys.executable, "-c", SERVE_WITHOUT_TORCH, str(tmp_path)],
        capture_output=True, text=True, timeout=240, cwd=Path(__file__).resolve().parents[2], check=False,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result == {"model": "foundation", "torch": False, "lightning": False}


# ------------------------------------------------------------------ out-of-fold log-odds


def test_out_of_fold_logits_never_see_the_persons_own_outcomes(small_cohort, split_features):
    """A person's out-of-fold log-odds come from a model fitted without them: rewriting every
    onset of one person leaves their own out-of-fold log-odds bit for bit unchanged, while
    the full model (and the other folds' people's log-odds) move."""
    from migrainemamba.models.out_of_fold import out_of_fold_logits

    config = foundation_config(num_threads=1, num_boost_round=60)
    oof = out_of_fold_logits(config, split_features, small_cohort.users, small_cohort.daily_logs, 3, 0, progress=False)
    warm = split_features.filter(~pl.col("cold_start"))
    assert oof.height == warm.height and oof["logit"].is_finite().all()
    assert oof.select("user_id").unique().height == warm.select("user_id").unique().height
    assert set(oof["fold"].unique().to_list()) == {0, 1, 2}
    assert not oof.join(split_features.filter(pl.col("cold_start")), on=["user_id", "date"], how="semi").height

    person = oof.filter(pl.col("fold") == 0)["user_id"][0]
    is_person = (pl.col("user_id") == person) & pl.col("onset").is_not_null()
    flipped = split_features.with_columns(onset=pl.when(is_person).then(~pl.col("onset")).otherwise(pl.col("onset")))
    oof2 = out_of_fold_logits(config, flipped, small_cohort.users, small_cohort.daily_logs, 3, 0, progress=False)
    mine, mine2 = (f.filter(pl.col("user_id") == person)["logit"].to_numpy() for f in (oof, oof2))
    np.testing.assert_array_equal(mine, mine2)
    others, others2 = (f.filter(pl.col("fold") != 0)["logit"].to_numpy() for f in (oof, oof2))
    assert np.abs(others - others2).max() > 1e-6  # the flipped labels did reach the other folds' models


def test_with_out_of_fold_replaces_only_the_rows_it_has():
    from migrainemamba.models.out_of_fold import with_out_of_fold

    keys = pl.DataFrame({"user_id": ["a", "a", "b"], "date": [1, 2, 1]})
    oof = pl.DataFrame({"user_id": ["a", "c"], "date": [2, 1], "logit": [-1.5, 9.0]})
    np.testing.assert_array_equal(with_out_of_fold(keys, np.array([0.1, 0.2, 0.3]), oof), [0.1, -1.5, 0.3])
