"""The robustness run: per-scenario configuration, the table, the selection rule, a real small run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from migrainemamba.config import load_config, to_dict
from migrainemamba.release.selection import SelectionRule
from migrainemamba.stages.robustness import (
    SCORE_COLUMNS,
    plot_scores,
    scenario_config,
    scenario_rows,
    scores_table,
    served_summary,
)
from migrainemamba.stages.robustness import run as run_robustness


def test_scenario_config_swaps_the_story_and_moves_every_output(tmp_path):
    cfg = load_config([f"robustness.out_dir={tmp_path}", "robustness.n_users=200", "robustness.sequence_models=false"])
    run = scenario_config(cfg, "refractory")
    assert run.data.scenario.name == "refractory" and run.data.n_users == 200
    assert run.data.scenario.refractory.share == 0.6
    for key in ("prepared", "features", "models", "predictions", "metrics", "plots"):
        assert Path(run.paths[key]).is_relative_to(tmp_path / "refractory"), key
    # interpolated model folders follow the moved paths
    assert Path(run.foundation.model_dir).is_relative_to(tmp_path / "refractory")
    assert Path(run.temporal.model_dir).is_relative_to(tmp_path / "refractory")
    assert run.tracking.enabled is False
    assert list(run.evaluate.models) == ["base_rate", "prior_logistic", "foundation"]
    seq = scenario_config(load_config([f"robustness.out_dir={tmp_path}"]), "default")
    assert list(seq.evaluate.models)[-2:] == ["temporal", "gru"]  # the default run trains the sequence models
    assert seq.temporal.train_cohort.source == "fresh" and seq.temporal.train_cohort.n_users == 2000  # merged, not replaced
    assert cfg.data.scenario.name == "default"  # the run's own config is left alone


def _report(brier: dict[str, float], lo: dict[str, float]) -> dict:
    phase = {}
    for model, value in brier.items():
        phase[model] = {"brier_skill": value, "within_person_risk_corr": value * 10,
                        "oracle_within_person_risk_corr": 0.8, "ece": 0.01, "lift_captured_auc": 0.9,
                        "n_users": 100.0, "n_onsets": 50.0}
    for model, bound in lo.items():  # paired interval of foundation minus model
        phase["foundation"][f"brier_skill_minus_{model}_lo"] = bound
        phase["foundation"][f"brier_skill_minus_{model}_hi"] = bound + 0.02
    return {"cold_start": {p: phase for p in ("1-14", "15-30", "31+")}, "all": {}}


def test_rows_carry_the_selection_rules_champion_per_phase():
    rule = SelectionRule(tie_tolerance=0.002)
    candidates = ["base_rate", "foundation", "temporal"]
    clear = _report({"base_rate": 0.0, "foundation": 0.03, "prior_logistic": 0.05}, {"base_rate": 0.01})
    rows = scenario_rows("s1", clear, rule, candidates)
    served = {(r["phase"], r["model"]) for r in rows if r["served"]}
    # prior_logistic scores best but is no serving candidate
    assert served == {(p, "foundation") for p in ("1-14", "15-30", "31+")}
    unsure = _report({"base_rate": 0.0, "foundation": 0.03}, {"base_rate": -0.001})
    rows = scenario_rows("s2", unsure, rule, candidates)
    assert {r["model"] for r in rows if r["served"]} == {"base_rate"}  # interval includes 0
    table = scores_table(scenario_rows("s1", clear, rule, candidates) + rows)
    assert set(SCORE_COLUMNS) | {"scenario", "model", "phase", "served"} <= set(table.columns)
    assert table.height == 3 * 3 + 3 * 2
    summary = served_summary(table)
    # served: foundation in s1 (risk corr 0.3), base rate in s2 (0.0); oracle 0.8 in both
    assert np.allclose(summary["risk_corr_share"].to_numpy(), (0.3 + 0.0) / 2 / 0.8)


def test_plot_is_written(tmp_path):
    rule = SelectionRule()
    rows = scenario_rows("s1", _report({"base_rate": 0.0, "foundation": 0.03}, {}), rule, ["base_rate", "foundation"])
    path = plot_scores(scores_table(rows), tmp_path / "p.png")
    assert path.stat().st_size > 5000


@pytest.mark.slow
def test_a_small_robustness_run_writes_the_table(tmp_path):
    cfg = load_config([
        f"robustness.out_dir={tmp_path}", f"robustness.plot={tmp_path}/scores.png", f"paths.metrics={tmp_path}/metrics",
        "robustness.n_users=240", "robustness.n_days=150", "robustness.n_boot=5",
        "robustness.scenarios=[default,same_day_triggers]", "robustness.sequence_models=false",
    ])
    metrics = run_robustness(cfg)
    table = pl.read_parquet(tmp_path / "scores.parquet")
    assert set(table["scenario"]) == {"default", "same_day_triggers"}
    assert table.group_by("scenario", "phase").agg(pl.col("served").sum())["served"].to_list() == [1] * 6
    assert table["oracle_risk_corr"].is_between(0.3, 1.0).all()
    assert (tmp_path / "scores.png").exists() and (tmp_path / "timings.json").exists()
    assert set(metrics) >= {"served_risk_corr_share_1-14", "seconds_per_scenario"}
    assert to_dict(cfg.data)["scenario"]["name"] == "default"


def test_the_opt_in_pipeline_file_covers_what_its_entry_imports():
    """robustness/dvc.yaml sits apart from the default `dvc repro`; its deps still cover its code."""
    import yaml

    from tests.architecture.imports import ROOT
    from tests.architecture.test_stage_deps import uncovered

    stages = yaml.safe_load((ROOT / "robustness" / "dvc.yaml").read_text())["stages"]
    assert stages["robustness"]["wdir"] == ".."  # paths below are the repository's
    assert not uncovered(stages["robustness"])
    assert "robustness" not in yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
