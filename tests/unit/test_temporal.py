"""Temporal model: pretraining, fine-tuning, serving, recurrent step mode, checkpoints, stages.

Everything runs on the `debug` configs (`pretrain=debug temporal=debug`) and a small simulated
cohort; each test takes a few seconds on one CPU thread. Tolerances: recurrent step vs full pass
atol 1e-5 (float32; observed ~1e-7); serving vs batch atol 1e-6 (the same windows, other batch
sizes); checkpoint round trip and leakage checks are exact.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from dataclasses import replace

import numpy as np
import polars as pl
import pytest
import torch

from migrainemamba.config import load_config, to_dict
from migrainemamba.data.simulator import simulate_cohort
from migrainemamba.evaluation.leakage import scramble_future
from migrainemamba.features.sequences import build_sequence_data
from migrainemamba.models.base import ForecastBatch, ForecastModel
from migrainemamba.models.pretrain import (
    PretrainConfig,
    PretrainModule,
    SequenceDataModule,
    TrainConfig,
    WindowBatches,
    evaluate_pretrain,
    pretrain_encoder,
)
from migrainemamba.models.sequence_heads import (
    OnsetClassifier,
    SequenceModelConfig,
    count_parameters,
)
from migrainemamba.models.temporal import (
    RecurrentForecaster,
    TemporalModel,
    forecast_user,
    within_person_loss,
)
from tests.conftest import simulator_config

STEP_ATOL = 1e-5
SERVE_ATOL = 1e-6

for name in ("lightning.pytorch", "lightning.fabric", "lightning"):
    logging.getLogger(name).setLevel(logging.ERROR)


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def cohort():
    return simulate_cohort(simulator_config(n_users=40, n_days=70, seed=5))


@pytest.fixture(scope="module")
def debug_cfg():
    return load_config(["pretrain=debug", "temporal=debug", "tracking.enabled=false"])


@pytest.fixture(scope="module")
def configs(debug_cfg):
    model = SequenceModelConfig.from_dict(to_dict(debug_cfg.pretrain.model))
    train = TrainConfig.from_dict(to_dict(debug_cfg.temporal.train))
    return model, train


@pytest.fixture(scope="module")
def split(cohort):
    """Sequences (stats on the first 60% of calendar days) and train / later rows."""
    logs = cohort.daily_logs
    cut = logs["date"].min() + dt.timedelta(days=42)
    stats = build_sequence_data(cohort.users, logs.filter(pl.col("date") < pl.lit(cut))).stats
    seq = build_sequence_data(cohort.users, logs, stats=stats)
    early = seq.dates < np.datetime64(cut)
    return seq, np.flatnonzero(early), np.flatnonzero(~early), cut


@pytest.fixture(scope="module")
def fitted(cohort, configs, split):
    """A small windowed, bidirectional temporal model fitted through the ForecastModel API."""
    model_cfg, train_cfg = configs
    seq, _, _, cut = split
    targets = _scorable_targets(seq)
    train = ForecastBatch(cohort.users, cohort.daily_logs, targets.filter(pl.col("date") < cut))
    valid = ForecastBatch(cohort.users, cohort.daily_logs, targets.filter(pl.col("date") >= cut))
    model = TemporalModel("temporal", model_cfg, train_cfg)
    model.fit(train, valid)
    return model, valid


def _scorable_targets(seq) -> pl.DataFrame:
    return seq.keys().filter(pl.Series(seq.scorable)).select("user_id", "date")


def _history_model(configs, encoder: str = "mamba") -> TemporalModel:
    model_cfg, train_cfg = configs
    cfg = replace(model_cfg, encoder=encoder, window_days=0, bidirectional=False, gru_hidden=0)
    return TemporalModel("temporal", SequenceModelConfig.from_dict(cfg.to_dict()), train_cfg)


# --- pretraining ------------------------------------------------------------------------------


def test_pretraining_loss_decreases(split, configs):
    seq, train_rows, _val_rows, _ = split
    model_cfg, _ = configs
    train_cfg = TrainConfig(batch_size=32, max_epochs=6, lr=5e-3, num_threads=1)
    probe = WindowBatches(seq, seq.observed.nonzero()[0][:512], model_cfg.window_days)
    torch.manual_seed(0)
    untrained = PretrainModule(model_cfg.to_dict(), {}, {})
    before = evaluate_pretrain(untrained, probe, 128, seed=1)
    module, summary = pretrain_encoder(seq, train_rows, None, model_cfg, PretrainConfig(), train_cfg)
    after = evaluate_pretrain(module, probe, 128, seed=1)
    assert summary["steps"] >= 6
    assert after["masked_mse"] < 0.9 * before["masked_mse"]
    assert after["next_mse"] < 0.9 * before["next_mse"]


def test_missing_days_never_count(split, configs):
    """Values stored on missing days (even NaN) change neither the losses nor the gradients."""
    seq, _train_rows, _, _ = split
    model_cfg, _ = configs
    module = PretrainModule(model_cfg.to_dict(), {"mask_prob": 0.3}, {})
    batch = WindowBatches(seq, seq.observed.nonzero()[0][:64], model_cfg.window_days)[np.arange(64)]
    assert (~batch["mask"]).any(), "the probe needs missing days"
    hidden = module.draw_hidden(torch.ones_like(batch["mask"]), torch.Generator().manual_seed(3))
    assert (hidden & ~batch["mask"]).any(), "the probe should try to hide some missing days too"
    garbage = dict(batch)
    noise = torch.randn_like(batch["x"]) * 1e3
    noise[0] = float("nan")
    garbage["x"] = torch.where(batch["mask"].unsqueeze(-1), batch["x"], noise)
    garbage["next"] = torch.where(batch["next_mask"].unsqueeze(-1), batch["next"], torch.full_like(batch["next"], float("nan")))

    def loss_and_grads(b):
        module.zero_grad()
        out = module.losses(b, hidden)
        out["loss"].backward()
        return out, {n: p.grad.clone() for n, p in module.named_parameters() if p.grad is not None}

    module.eval()  # no dropout: the two passes must be comparable
    clean, g_clean = loss_and_grads(batch)
    dirty, g_dirty = loss_and_grads(garbage)
    for key in ("loss", "masked", "next"):
        assert torch.isfinite(dirty[key])
        assert torch.equal(clean[key], dirty[key]), key
    assert clean["n_hidden"] == (hidden & batch["mask"]).sum()  # only observed days are targets
    for name, grad in g_clean.items():
        assert torch.isfinite(g_dirty[name]).all(), name
        assert torch.equal(grad, g_dirty[name]), name


# --- fine-tuning and prediction ---------------------------------------------------------------


def test_finetune_predict_shapes_and_range(fitted, cohort):
    model, valid = fitted
    assert isinstance(model, ForecastModel)
    p = model.predict(valid)
    assert p.shape == (valid.targets.height,)
    assert np.all(np.isfinite(p)) and p.min() > 0 and p.max() < 1
    assert model.summary["steps"] > 0 and model.summary["n_train_days"] > 0
    assert model.predict(ForecastBatch(cohort.users, cohort.daily_logs, valid.targets.head(0))).shape == (0,)


def test_gru_baseline_is_comparable_in_size(configs):
    model_cfg, _ = configs
    gru_cfg = SequenceModelConfig.from_dict(model_cfg.to_dict() | {"encoder": "gru", "gru_hidden": 0})
    n_mamba = count_parameters(OnsetClassifier(model_cfg).encoder)
    n_gru = count_parameters(OnsetClassifier(gru_cfg).encoder)
    assert abs(n_gru - n_mamba) / n_mamba < 0.1


def test_forecast_uses_only_rows_before_the_target(fitted, cohort):
    model, valid = fitted
    user_id, date = valid.targets.row(len(valid.targets) // 2)
    person = cohort.users.filter(pl.col("user_id") == user_id)
    logs = cohort.daily_logs.filter(pl.col("user_id") == user_id)
    target = pl.DataFrame({"user_id": [user_id], "date": [date]})
    before = model.predict(ForecastBatch(person, logs, target))[0]
    scrambled = scramble_future(logs, date, np.random.default_rng(0))
    assert model.predict(ForecastBatch(person, scrambled, target))[0] == before
    # a changed later row alone
    later = logs.filter(pl.col("date") > date)
    if later.height:
        changed = logs.with_columns(
            pl.when(pl.col("date") == later["date"][0]).then(pl.lit(10)).otherwise(pl.col("stress_level")).alias("stress_level")
        )
        assert model.predict(ForecastBatch(person, changed, target))[0] == before
    # ... while a changed earlier row does move it (the window is read)
    earlier = logs.filter(pl.col("date") < date)["date"].max()
    moved = logs.with_columns(
        pl.when(pl.col("date") == earlier).then(pl.lit(["nausea", "aura", "fatigue"])).otherwise(pl.col("symptoms")).alias("symptoms"),
        pl.when(pl.col("date") == earlier).then(pl.lit(9)).otherwise(pl.col("alcohol_drinks")).alias("alcohol_drinks"),
    )
    assert model.predict(ForecastBatch(person, moved, target))[0] != before


def test_checkpoint_round_trip(fitted, tmp_path):
    model, valid = fitted
    model.save(tmp_path / "temporal")
    loaded = TemporalModel.load(tmp_path / "temporal")
    assert loaded.name == model.name and loaded.config == model.config
    assert loaded.stats.columns == model.stats.columns
    np.testing.assert_array_equal(loaded.predict(valid), model.predict(valid))
    meta = json.loads((tmp_path / "temporal" / "temporal.json").read_text())
    assert meta["config"]["window_days"] == model.config.window_days


def test_serving_function_equals_batch_prediction(fitted, cohort):
    model, valid = fitted
    batch_p = model.predict(valid)
    for i in (0, len(batch_p) // 2, len(batch_p) - 1):
        user_id, date = valid.targets.row(i)
        person = cohort.users.filter(pl.col("user_id") == user_id)
        assert forecast_user(model, person, cohort.daily_logs, date) == pytest.approx(batch_p[i], abs=SERVE_ATOL)
    # D's morning fields given at forecast time (no diary row for D yet) -> the same forecast
    logs = cohort.daily_logs.filter(pl.col("user_id") == user_id)
    row = logs.filter(pl.col("date") == date)
    if row.height:
        morning = {k: row[k][0] for k in ("sleep_hours", "sleep_quality_good", "menstruating", "barometric_pressure_hpa")}
        p = model.forecast_user(person.row(0, named=True), logs.filter(pl.col("date") < date), date, morning=morning)
        assert p == pytest.approx(batch_p[i], abs=SERVE_ATOL)


def test_pyfunc_input_frame(fitted, cohort):
    from migrainemamba.models.temporal import pyfunc_batch

    model, valid = fitted
    user_id, date = valid.targets.row(0)
    logs = cohort.daily_logs.filter((pl.col("user_id") == user_id) & (pl.col("date") <= date))
    frame = logs.join(cohort.users, on="user_id").with_columns(forecast=pl.col("date") == date)
    p = model.predict(pyfunc_batch(frame))
    assert p.shape == (1,)
    assert p[0] == pytest.approx(model.predict(valid)[0], abs=SERVE_ATOL)


# --- recurrent step mode ----------------------------------------------------------------------


@pytest.mark.parametrize("encoder", ["mamba", "gru"])
def test_recurrent_step_equals_full_pass(configs, split, cohort, encoder):
    seq, train_rows, val_rows, _ = split
    model = _history_model(configs, encoder)
    model.fit_sequences(seq, train_rows, val_rows)  # a few steps: weights away from init
    rows = np.flatnonzero(seq.scorable)
    full = model.predict_rows(seq, rows)
    users = seq.user_of_rows(rows)
    for u in np.unique(users)[:3]:
        stepper = model.recurrent(seq, u)
        stepped = stepper.replay(seq, u)
        mine = rows[users == u]
        np.testing.assert_allclose(stepped[mine - seq.offsets[u]], full[users == u], atol=STEP_ATOL, rtol=0)
    # and the ForecastModel path (sequences rebuilt from the diary) gives the same numbers
    targets = seq.keys()[rows].select("user_id", "date")
    np.testing.assert_allclose(model.predict(ForecastBatch(cohort.users, cohort.daily_logs, targets)), full, atol=STEP_ATOL, rtol=0)


def test_recurrent_refuses_bidirectional_window_models(fitted, split):
    model, _ = fitted
    with pytest.raises(ValueError, match="recurrent serving needs a causal model"):
        RecurrentForecaster(model, split[0].static[0])


def test_history_mode_checkpoint_round_trip(configs, split, tmp_path):
    seq, train_rows, val_rows, _ = split
    model = _history_model(configs)
    model.fit_sequences(seq, train_rows, val_rows)
    model.save(tmp_path / "h")
    rows = np.flatnonzero(seq.scorable)
    np.testing.assert_array_equal(TemporalModel.load(tmp_path / "h").predict_rows(seq, rows), model.predict_rows(seq, rows))


# --- losses and batching ----------------------------------------------------------------------


def test_within_person_loss_ignores_person_level_shifts():
    logits = torch.randn(12)
    user = torch.tensor([0] * 6 + [1] * 6)
    y = torch.tensor([1, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0], dtype=torch.float32)
    batch = {"y": y, "weight": torch.ones(12), "user": user}
    shifted = logits + torch.where(user == 0, 5.0, -3.0)
    assert within_person_loss(shifted, batch) == pytest.approx(float(within_person_loss(logits, batch)), abs=1e-5)
    history = {"y": y.view(2, 6), "weight": torch.ones(2, 6)}
    assert within_person_loss(logits.view(2, 6), history) == pytest.approx(float(within_person_loss(logits, batch)), abs=1e-5)


def test_grouped_batches_hold_several_days_per_person(split, configs):
    seq, train_rows, _, _ = split
    model_cfg, _ = configs
    data = SequenceDataModule(WindowBatches(seq, train_rows, model_cfg.window_days), None, 32, 128, seed=0, group_users=4)
    batches = list(data.train_dataloader())
    assert len(batches) == 4
    for b in batches:
        assert len(torch.unique(b["user"])) == 4
        assert b["x"].shape[0] <= 32


def test_offset_is_added_to_the_logit(configs, split):
    seq, _train_rows, _val_rows, _ = split
    model_cfg, train_cfg = configs
    model = TemporalModel("temporal", model_cfg, train_cfg, stats=seq.stats, offset_model=object())
    offset = np.linspace(-1, 1, seq.n_rows).astype(np.float32)
    rows = np.flatnonzero(seq.scorable)[:50]
    with pytest.raises(ValueError, match="offset"):
        model.logits_rows(seq, rows)
    base = model.logits_rows(seq, rows, np.zeros(seq.n_rows, np.float32))
    np.testing.assert_allclose(model.logits_rows(seq, rows, offset), base + offset[rows], atol=1e-5)


def test_recalibration_scales_the_correction_and_every_path_applies_it(configs, split):
    """After ``recalibrate``: logit = offset + beta + alpha * (the correction before), the fitted
    (alpha, beta) are the likelihood's optimum on those days, and the recurrent serving path
    (which reads the same head) gives the same numbers as the batch path."""
    seq, train_rows, val_rows, _ = split
    model = _history_model(configs)
    model.offset_model = object()
    offset = np.random.default_rng(0).normal(-2.0, 0.5, seq.n_rows).astype(np.float32)
    model.fit_sequences(seq, train_rows, val_rows, offset=offset)
    rows = np.flatnonzero(seq.scorable)
    before = model.logits_rows(seq, rows, offset) - offset[rows]
    rec = model.recalibrate(seq, val_rows, offset)
    after = model.logits_rows(seq, rows, offset) - offset[rows]
    np.testing.assert_allclose(after, rec["beta"] + rec["alpha"] * before, atol=1e-4)

    fit_rows = val_rows[seq.scorable[val_rows]]
    y = seq.onset[fit_rows].astype(float)
    corr = model.logits_rows(seq, fit_rows, offset) - offset[fit_rows]

    def loglik(a: float, b: float) -> float:
        p = 1 / (1 + np.exp(-(offset[fit_rows] + b + a * corr)))
        return float(np.sum(y * np.log(p) + (1 - y) * np.log1p(-p)))

    assert rec["n_days"] == len(fit_rows)
    best = loglik(1.0, 0.0)  # recalibrating again must leave the map where it is
    for da, db in ((0.05, 0), (-0.05, 0), (0, 0.05), (0, -0.05)):
        assert loglik(1.0 + da, db) <= best + 1e-6
    u = int(seq.user_of_rows(rows[:1])[0])
    stepped = model.recurrent(seq, u).replay(seq, u, offset=offset)
    mine = rows[seq.user_of_rows(rows) == u]
    full = model.predict_rows(seq, mine, offset)
    np.testing.assert_allclose(stepped[mine - seq.offsets[u]], full, atol=STEP_ATOL, rtol=0)


# --- what the sequence models fine-tune on (temporal.train_cohort) ---------------------------


def test_fresh_cohort_is_new_people_of_the_same_story_split_by_person(split):
    from types import SimpleNamespace

    from migrainemamba.models.temporal_training import fresh_cohort_data, training_data

    seq = split[0]
    cfg = load_config(
        ["+debug=tiny", "data.n_users=30", "data.n_days=60", "temporal.train_cohort.source=fresh", "temporal.train_cohort.n_users=30"]
    )

    class HalfLogOdds:  # a stand-in offset model: its log-odds for every row it is given
        def logit(self, rows):
            return np.full(rows.height, 0.5)

    data = SimpleNamespace(seq=seq, offset_model=HalfLogOdds())
    fresh = training_data(cfg, data)
    assert fresh.seq.user_ids.shape[0] == 30 and fresh.seq.stats is seq.stats  # the training stats
    person = fresh.seq.user_of_rows(np.arange(fresh.seq.n_rows))
    assert set(fresh.split) == {"train", "valid"}
    for p in np.unique(person):  # split by person: all of a person's days on one side
        assert len(set(fresh.split[person == p])) == 1
    assert fresh.offset.shape == (fresh.seq.n_rows,) and np.all(fresh.offset == 0.5)
    # another seed than the cohort's: the same story, other people
    from migrainemamba.data.prepare import prepare_cohort

    own = prepare_cohort(to_dict(cfg.data))
    assert own.users.columns == fresh.users.columns and not own.users.equals(fresh.users)
    # own: the cohort itself; a real diary has no simulator to draw from
    assert training_data(load_config(["+debug=tiny"]), data) is data
    with pytest.raises(ValueError, match="data: synthetic"):
        fresh_cohort_data(load_config(["data=real", "temporal.train_cohort.source=fresh"]), data)


# --- the stages on the debug configs ----------------------------------------------------------


def test_stages_run_on_debug_config(tmp_path):
    from migrainemamba.stages.features import run as run_features
    from migrainemamba.stages.prepare import run as run_prepare
    from migrainemamba.stages.pretrain import run as run_pretrain
    from migrainemamba.stages.temporal import run as run_temporal
    from migrainemamba.stages.temporal_experiments import run as run_experiments

    paths = {k: str(tmp_path / k) for k in ("prepared", "features", "models", "metrics", "plots")}
    overrides = (
        ["+debug=tiny", "data.n_users=60", "data.n_days=60", "pretrain=debug", "temporal=debug", "tracking.enabled=false"]
        + [f"paths.{k}={v}" for k, v in paths.items()]
        + [f"paths.data_dir={tmp_path}"]
    )
    cfg = load_config(overrides)
    run_prepare(cfg, progress=False)
    run_features(cfg)
    pre = run_pretrain(cfg)
    assert pre["val_masked_mse"] < pre["val_mean_mse"] * 1.5
    out = run_temporal(cfg)
    assert {"temporal", "gru"} <= set(out) and out["temporal"]["window_days"] == 0
    for name in ("temporal", "gru"):
        assert TemporalModel.load(tmp_path / "models" / name).name == name
    assert json.loads((tmp_path / "metrics" / "temporal.json").read_text())["seconds"] > 0
    # model folders hold what serving loads, nothing else (no checkpoints, variants, results)
    assert sorted(p.name for p in (tmp_path / "models" / "temporal").iterdir()) == ["model.pt", "temporal.json"]

    experiments = run_experiments(cfg)
    results = tmp_path / "experiments" / "temporal"
    window = TemporalModel.load(results / "window")
    assert window.config.window_days == 14 and experiments["variant_window_valid_logloss"] > 0
    label_efficiency = json.loads((results / "label_efficiency.json").read_text())
    assert set(label_efficiency["none"]["0.3"]) == {"pretrained", "scratch", "pretrained_minus_scratch"}
    assert (tmp_path / "plots" / "temporal_experiments" / "label_efficiency.png").is_file()

    # the validation-split sweep: one fit beside the foundation model, appended to a JSONL file
    from migrainemamba.experiments.temporal_sweep import run as sweep
    from migrainemamba.stages.foundation import run as run_foundation

    run_foundation(cfg)
    result = sweep("no_outcomes", overrides, ["migraine_occurred", "migraine_severity"], n_boot=20)
    lines = (tmp_path / "experiments" / "temporal_sweep.jsonl").read_text().splitlines()
    logged = json.loads(lines[-1])
    assert logged["drop_inputs"] == ["migraine_occurred", "migraine_severity"]
    assert logged["all"]["brier_skill"] == result["all"]["brier_skill"]
    scores = result["all"]["brier_skill"]
    assert {"temporal", "foundation", "oracle"} <= set(scores)
    diff, lo, hi = scores["temporal_minus_foundation"]
    assert lo <= diff <= hi and diff == pytest.approx(scores["temporal"] - scores["foundation"], abs=2e-4)
    from migrainemamba.experiments.temporal_sweep import plot

    assert plot([result, result], tmp_path / "sweep.png").stat().st_size > 0


def test_mlflow_pyfunc_round_trip(fitted, cohort, tmp_path):
    import mlflow

    from migrainemamba.models.temporal import TemporalPyfunc, pip_requirements

    model, valid = fitted
    export = model.save(tmp_path / "export")
    mlflow.pyfunc.save_model(
        str(tmp_path / "pyfunc"), python_model=TemporalPyfunc(), artifacts={TemporalPyfunc.ARTIFACT: str(export)},
        pip_requirements=pip_requirements(),
    )
    loaded = mlflow.pyfunc.load_model(str(tmp_path / "pyfunc"))
    user_id, date = valid.targets.row(0)
    logs = cohort.daily_logs.filter((pl.col("user_id") == user_id) & (pl.col("date") <= date))
    frame = logs.join(cohort.users, on="user_id").with_columns(forecast=pl.col("date") == date)
    p = np.asarray(loaded.predict(frame.to_pandas()))
    assert p.shape == (1,)
    assert p[0] == pytest.approx(model.predict(valid)[0], abs=SERVE_ATOL)
