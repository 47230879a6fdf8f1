"""Whole stages on small configs: prepare and features write what dvc.yaml declares."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from migrainemamba.config import load_config, repo_root
from migrainemamba.stages.features import run as run_features
from migrainemamba.stages.prepare import run as run_prepare

FIXTURES = repo_root() / "tests" / "fixtures" / "diary"


def stage_config(tmp: Path, *extra: str):
    return load_config(
        [
            f"paths.prepared={tmp}/prepared",
            f"paths.features={tmp}/features",
            f"paths.metrics={tmp}/metrics",
            f"paths.plots={tmp}/plots",
            f"paths.models={tmp}/models",
            f"paths.predictions={tmp}/predictions",
            f"tracking.uri=sqlite:///{tmp}/mlflow.db",
            *extra,
        ]
    )


@pytest.fixture(autouse=True)
def _migrated_tracking_store(tmp_path, mlflow_sqlite_store):
    """The stages' store (``stage_config``) starts as an empty migrated one: its creation is
    test_tracking_postgres' subject, not these tests' (it takes seconds)."""
    mlflow_sqlite_store(tmp_path / "mlflow.db")


@pytest.mark.integration
def test_prepare_and_features_on_the_simulated_default_shrunk(tmp_path):
    cfg = stage_config(tmp_path, "+debug=tiny")
    metrics = run_prepare(cfg, progress=False)
    for name in ("users", "daily_logs", "quarantine", "truth_users", "truth_days"):
        assert (tmp_path / "prepared" / f"{name}.parquet").exists()
    assert (tmp_path / "prepared" / "quality_report.json").exists()
    assert {"attack_frequency.png", "timelines.png", "oracle_reliability.png"} <= {
        p.name for p in (tmp_path / "plots" / "prepare").iterdir()
    }
    saved = json.loads((tmp_path / "metrics" / "prepare.json").read_text())
    assert saved == pytest.approx(metrics)
    assert saved["n_users"] == 120 and saved["n_quarantined_rows"] == 0
    assert 0.5 < saved["auc_p_oracle"] <= saved["auc_p_true"] + 0.02

    features = run_features(cfg)
    assert features["n_feature_columns"] > 40 and features["n_scorable_days"] > 1000
    assert (tmp_path / "features" / "features.parquet").exists()
    assert (tmp_path / "features" / "sequences.npz").exists()


@pytest.mark.integration
def test_prepare_on_real_files_quarantines_bad_rows(tmp_path):
    users = pl.read_csv(FIXTURES / "users.csv", infer_schema=False)
    logs = pl.read_csv(FIXTURES / "daily_logs.csv", infer_schema=False)
    bad = logs.head(2).with_columns(pl.lit("14").alias("stress_level"))  # out of range, and duplicates
    (tmp_path / "raw").mkdir()
    users.write_csv(tmp_path / "raw" / "users.csv")
    pl.concat([logs, bad]).write_csv(tmp_path / "raw" / "daily_logs.csv")
    cfg = stage_config(
        tmp_path, "data=real", f"data.users_path={tmp_path}/raw/users.csv",
        f"data.daily_logs_path={tmp_path}/raw/daily_logs.csv",
    )
    run_prepare(cfg, progress=False)
    quarantine = pl.read_parquet(tmp_path / "prepared" / "quarantine.parquet")
    valid = pl.read_parquet(tmp_path / "prepared" / "daily_logs.parquet")
    appended = quarantine.filter(pl.col("table") == "daily_logs", pl.col("row_number") > logs.height)
    assert appended.height == 2 and appended["reason"].str.contains("stress_level: 14").all()
    assert valid.height + quarantine.filter(pl.col("table") == "daily_logs").height == logs.height + 2
    assert not (tmp_path / "prepared" / "truth_days.parquet").exists()


@pytest.mark.integration
def test_prepare_stops_on_a_missing_column(tmp_path):
    (tmp_path / "raw").mkdir()
    pl.read_csv(FIXTURES / "users.csv", infer_schema=False).drop("age").write_csv(tmp_path / "raw" / "users.csv")
    cfg = stage_config(
        tmp_path, "data=real", f"data.users_path={tmp_path}/raw/users.csv",
        f"data.daily_logs_path={FIXTURES}/daily_logs.csv",
    )
    with pytest.raises(ValueError, match="age"):
        run_prepare(cfg, progress=False)


@pytest.mark.integration
def test_personalize_writes_the_trigger_map_and_scores_on_a_tiny_cohort(tmp_path):
    from migrainemamba.stages.foundation import run as run_foundation
    from migrainemamba.stages.personalize import run as run_personalize

    cfg = stage_config(
        tmp_path,
        "+debug=tiny",
        f"paths.data_dir={tmp_path}",
        "tracking.enabled=false",
        "personal.n_boot=10",
        "personal.audit_samples=3",
        "personal.eb_max_iter=10",
        "personal.reference.n_users=3",
        "personal.reference.n_draws=16",
        "personal.trigger_map.horizons=[30,60]",
        "personal.trigger_map.rule_horizon=60",
    )
    run_prepare(cfg, progress=False)
    run_features(cfg)
    run_foundation(cfg)
    metrics = run_personalize(cfg)
    trigger_map = pl.read_parquet(tmp_path / "personal" / "trigger_map.parquet")
    assert trigger_map.columns == [
        "user_id", "horizon_days", "method", "trigger", "log_or", "lo", "hi", "n_exposed", "n_onsets_exposed", "class"
    ]
    assert set(trigger_map["method"]) == {"personal", "n_of_1"} and set(trigger_map["horizon_days"]) <= {30, 60}
    assert set(trigger_map["class"]) <= {"trigger", "protective", "no_association", "not_enough_data"}
    assert (trigger_map["lo"] <= trigger_map["log_or"]).all() and (trigger_map["log_or"] <= trigger_map["hi"]).all()
    assert "31+" in metrics["test_all"] and "personal_brier_skill_minus_foundation_lo" in metrics["test_all"]["31+"]
    assert metrics["reference_gap"] and (tmp_path / "personal" / "reference.parquet").exists()  # from the worker process
    assert set(metrics["trigger_recall_at_matched_precision"]) == {"30d", "60d"}
    assert json.loads((tmp_path / "metrics" / "personalize.json").read_text())["timings"]["stage_seconds"] > 0
    assert (tmp_path / "models" / "personal" / "personal.json").exists()
    # the map's prior and rule travel with the model (the service's /insights/triggers reads them)
    from migrainemamba.models.personal import PersonalModel

    served = PersonalModel.load(tmp_path / "models" / "personal")
    assert served.map_setup is not None and served.map_setup[1].z == metrics["trigger_rule_z"]
