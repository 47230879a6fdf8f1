"""DVC stage `robustness` (opt-in, robustness/dvc.yaml): every generative scenario through the stages.

For each scenario in ``configs/robustness/`` the run simulates a cohort
(``data/scenario=<name>``), builds the features, fits the foundation model (and,
when ``sequence_models`` is on, pretrains and fine-tunes the temporal model and
its GRU baseline), evaluates every model family, and applies the selection rule
of ``configs/serve`` to the report. It calls the stages' own functions, each on
the scenario's copy of the configuration whose paths point under
``<out_dir>/<scenario>/``, so nothing of the default pipeline's outputs is touched.

The truth columns (risk correlations, AUC lift) come from the evaluation report. Where the
report has none because some scored diary days have no truth (``sparse_reporting``: a day
after an unrecorded attack day looks like an onset day in the diary, while the truth calls
it a running attack), they are scored with the evaluation's own scoring on the days where
the truth is defined.

Output: ``<out_dir>/scores.parquet``, one row per scenario x model x phase (people
the models never saw: population ``cold_start``, as selection uses), a plot, and
``<out_dir>/timings.json`` (seconds per scenario and stage).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only
import matplotlib.pyplot as plt
import numpy as np
import polars as pl
from omegaconf import DictConfig, OmegaConf
from tqdm.auto import tqdm

from migrainemamba import distributed
from migrainemamba.config import load_config, resolve_path, to_dict
from migrainemamba.data.prepare import PreparedCohort
from migrainemamba.evaluation.scoring import Scored, score_with_intervals
from migrainemamba.features import PHASES
from migrainemamba.pipeline import write_json
from migrainemamba.release.selection import SelectionRule, choose_champion
from migrainemamba.stages import evaluate, features, foundation, prepare
from migrainemamba.stages.common import finish

log = logging.getLogger(__name__)

SCORE_COLUMNS = ("brier_skill", "risk_corr", "oracle_risk_corr", "ece", "auc_lift")
# report key of each column (evaluation/scoring.py)
REPORT_KEYS = {
    "brier_skill": "brier_skill",
    "risk_corr": "within_person_risk_corr",
    "oracle_risk_corr": "oracle_within_person_risk_corr",
    "ece": "ece",
    "auc_lift": "lift_captured_auc",
    "auc": "auc",
    "within_person_auc": "within_person_auc",
    "n_users": "n_users",
    "n_onsets": "n_onsets",
}
SEQUENCE_MODELS = ("temporal", "gru")
DISTRIBUTED_STAGES = ("pretrain", "temporal")  # every rank of a DDP run trains; the others are rank 0's
STAGE_DIRS = ("prepared", "features", "models", "predictions", "metrics", "plots")


def scenario_config(cfg: DictConfig, scenario: str) -> DictConfig:
    """The run's configuration for one scenario: its data story, cohort size, own paths, no tracking."""
    rc = cfg.robustness
    data = load_config([f"data/scenario={scenario}"]).data
    data.n_users, data.n_days = int(rc.n_users), int(rc.n_days)
    if rc.get("seed") is not None:
        data.seed = int(rc.seed)
    out = resolve_path(str(rc.out_dir)) / scenario
    run = cfg.copy()
    OmegaConf.update(run, "data", data, merge=False)
    OmegaConf.update(run, "paths.data_dir", str(out), merge=False)
    for name in STAGE_DIRS:
        OmegaConf.update(run, f"paths.{name}", str(out / name), merge=False)
    OmegaConf.update(run, "tracking.enabled", False, merge=False)
    models = list(rc.models) + (list(SEQUENCE_MODELS) if rc.sequence_models else [])
    OmegaConf.update(run, "evaluate.models", models, merge=False)
    OmegaConf.update(run, "evaluate.n_boot", int(rc.n_boot), merge=False)
    for stage in ("pretrain", "temporal"):
        OmegaConf.update(run, f"{stage}.progress", False, merge=False)
    for key, value in (rc.get("temporal_overrides") or {}).items():
        OmegaConf.update(run, f"temporal.{key}", value, merge=True)
    return run


def stage_functions(sequence_models: bool) -> list[tuple[str, Callable[[DictConfig], dict[str, Any]]]]:
    stages: list[tuple[str, Callable[[DictConfig], dict[str, Any]]]] = [
        ("prepare", lambda c: prepare.run(c, progress=False)),
        ("features", features.run),
        ("foundation", foundation.run),
    ]
    if sequence_models:
        from migrainemamba.stages import pretrain, temporal  # torch: only when asked

        stages += [("pretrain", pretrain.run), ("temporal", temporal.run)]
    return stages + [("evaluate", evaluate.run)]


def scenario_rows(
    scenario: str, scores: Mapping[str, Any], rule: SelectionRule, candidates: list[str]
) -> list[dict[str, Any]]:
    """Rows of the table for one scenario's evaluation report, with the champion per phase."""
    phases = scores.get(rule.population, {})
    rows = []
    for phase in PHASES:
        models = phases.get(phase, {})
        order = [name for name in candidates if name in models]
        served = choose_champion(phase, models, order, rule).champion if order else None
        for model, values in models.items():
            row: dict[str, Any] = {"scenario": scenario, "model": model, "phase": phase}
            row |= {col: _number(values.get(key)) for col, key in REPORT_KEYS.items()}
            row["served"] = model == served
            rows.append(row)
    return rows


TRUTH_KEYS = ("within_person_risk_corr", "oracle_within_person_risk_corr", "lift_captured_auc")


def truth_scores_where_defined(run: DictConfig, population: str) -> dict[str, dict[str, dict[str, float]]]:
    """{phase: {model: scores}} on the test days that have a truth (p_true, p_oracle), for one population.

    The evaluation's scoring (``score_with_intervals``) on those days only; Brier skill's
    reference is the running base rate as in the evaluation.
    """
    predictions = pl.read_parquet(resolve_path(run.paths.predictions) / "test.parquet")
    truth = PreparedCohort.read(resolve_path(run.paths.prepared)).truth_days
    if truth is None:
        return {}
    rows = predictions.join(truth.select("user_id", "date", "p_true", "p_oracle"), on=["user_id", "date"], how="inner")
    rows = rows.filter(pl.col("p_true").is_not_null() & pl.col("p_oracle").is_not_null())
    if population == "cold_start":
        rows = rows.filter(pl.col("cold_start"))
    reference = rows.filter(pl.col("model") == "base_rate").select("user_id", "date", p_ref=pl.col("p"))
    rows = rows.join(reference, on=["user_id", "date"], how="inner")
    users = {u: i for i, u in enumerate(rows["user_id"].unique().sort().to_list())}
    out: dict[str, dict[str, dict[str, float]]] = {}
    for (phase, model), part in rows.group_by("phase", "model"):
        scored = Scored(
            user=part["user_id"].replace_strict(users, return_dtype=pl.Int64).to_numpy(),
            y=part["y"].to_numpy(), p=part["p"].to_numpy(), p_ref=part["p_ref"].to_numpy(),
            p_oracle=part["p_oracle"].to_numpy(), p_true=part["p_true"].to_numpy(),
        )
        out.setdefault(str(phase), {})[str(model)] = score_with_intervals(scored, int(run.evaluate.n_boot), int(run.evaluate.seed))
    return out


def with_truth_where_defined(scores: dict[str, Any], run: DictConfig, population: str) -> tuple[dict[str, Any], bool]:
    """The report's scores, the truth keys filled from the days that have a truth when the report lacks them."""
    phases = scores.get(population, {})
    if all(k in values for models in phases.values() for values in models.values() for k in TRUTH_KEYS):
        return scores, False
    fallback = truth_scores_where_defined(run, population)
    patched = {population: {phase: {model: values | {k: fallback.get(phase, {}).get(model, {}).get(k) for k in TRUTH_KEYS}
                                    for model, values in models.items()} for phase, models in phases.items()}}
    return scores | patched, True


def _number(value: Any) -> float:
    return float(value) if value is not None else float("nan")


def scores_table(rows: list[dict[str, Any]]) -> pl.DataFrame:
    table = pl.DataFrame(rows, schema_overrides={"served": pl.Boolean})
    return table.with_columns(risk_corr_share=pl.col("risk_corr") / pl.col("oracle_risk_corr")).sort(
        "scenario", "phase", "model"
    )


def served_summary(table: pl.DataFrame) -> pl.DataFrame:
    """Per phase, averaged over scenarios: the served model's share of the oracle's risk correlation, worst ECE."""
    served = table.filter(pl.col("served"))
    return served.group_by("phase").agg(
        risk_corr_share=pl.col("risk_corr").mean() / pl.col("oracle_risk_corr").mean(),
        max_ece=pl.col("ece").max(),
        n_scenarios=pl.len(),
    ).sort("phase")


def plot_scores(table: pl.DataFrame, path: Path) -> Path:
    """Per phase: each model's share of the oracle's within-person risk correlation, per scenario."""
    scenarios = table["scenario"].unique().sort().to_list()
    models = [m for m in table["model"].unique().sort().to_list() if m != "base_rate"]
    fig, axes = plt.subplots(1, len(PHASES), figsize=(5 * len(PHASES), 0.45 * len(scenarios) + 2.5), sharey=True)
    height = 0.8 / max(len(models), 1)
    for ax, phase in zip(np.atleast_1d(axes), PHASES, strict=True):
        part = table.filter(pl.col("phase") == phase)
        for k, model in enumerate(models):
            rows = {r["scenario"]: r for r in part.filter(pl.col("model") == model).iter_rows(named=True)}
            share = [rows.get(s, {}).get("risk_corr_share", np.nan) for s in scenarios]
            served = [bool(rows.get(s, {}).get("served", False)) for s in scenarios]
            y = np.arange(len(scenarios)) + k * height
            bars = ax.barh(y, share, height=height, label=model)
            for bar, is_served in zip(bars, served, strict=True):
                if is_served:
                    bar.set_edgecolor("black")
                    bar.set_linewidth(1.5)
        base_served = set(part.filter(pl.col("served") & (pl.col("model") == "base_rate"))["scenario"].to_list())
        for i, scenario in enumerate(scenarios):
            if scenario in base_served:  # its own share is ~0: say so rather than draw it
                ax.text(0.98, i + 0.4 - height / 2, "base rate served", ha="right", va="center", fontsize=7,
                        transform=ax.get_yaxis_transform())
        ax.axvline(0.5, color="grey", ls="--", lw=0.8)
        ax.set(title=f"days {phase}", xlabel="risk corr / oracle's (served: outlined)", xlim=(min(0.0, ax.get_xlim()[0]), 1.0))
        ax.set_yticks(np.arange(len(scenarios)) + 0.4 - height / 2, scenarios)
    np.atleast_1d(axes)[0].legend(loc="lower right", fontsize=8)
    fig.suptitle("Within-person risk correlation captured, held-out people, per scenario")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def run_stage_on_ranks(stage: str, body: Callable[[DictConfig], Any], run: DictConfig) -> None:
    """One stage of a scenario. In a distributed run (``trainer=cpu_ddp``, ``trainer=gpu``) the
    training stages run on every rank (they write on rank 0 only), the others on rank 0 alone; after
    each stage the ranks wait for each other, so none reads a file before rank 0 has written it."""
    if stage in DISTRIBUTED_STAGES or distributed.is_global_zero():
        body(run)
    distributed.barrier()  # no-op before the first fit has formed the process group


def run(cfg: DictConfig) -> dict[str, Any]:
    """Every scenario through the stages; the table, the plot and the timings."""
    with distributed.ranks():
        return _run(cfg)


def _run(cfg: DictConfig) -> dict[str, Any]:
    rc = cfg.robustness
    out_dir = resolve_path(str(rc.out_dir))
    rule = SelectionRule.from_dict(to_dict(cfg.serve.selection))
    candidates = [c["name"] for c in to_dict(cfg.serve.selection)["candidates"]]
    stages = stage_functions(bool(rc.sequence_models))
    rows: list[dict[str, Any]] = []
    timings: dict[str, dict[str, float]] = {}
    progress = tqdm(list(rc.scenarios), desc="robustness", disable=None, mininterval=5)
    for scenario in progress:
        run = scenario_config(cfg, scenario)
        timings[scenario] = {}
        for stage, body in stages:
            progress.set_postfix_str(f"{scenario}: {stage}")
            log.info("robustness: %s: %s", scenario, stage)
            started = time.perf_counter()
            run_stage_on_ranks(stage, body, run)
            timings[scenario][stage] = round(time.perf_counter() - started, 1)
        timings[scenario]["total"] = round(sum(timings[scenario].values()), 1)
        if not distributed.is_global_zero():
            continue
        report = json.loads((out_dir / scenario / "evaluation" / "report.json").read_text())
        scores, partial = with_truth_where_defined(report["scores"], run, rule.population)
        rows += [row | {"truth_on_defined_days_only": partial} for row in scenario_rows(scenario, scores, rule, candidates)]
        log.info("robustness: %s done in %.0f s", scenario, timings[scenario]["total"])
    if not distributed.is_global_zero():
        return {}
    table = scores_table(rows)
    table.write_parquet(out_dir / "scores.parquet")
    plot_scores(table, resolve_path(str(rc.plot)))
    summary = served_summary(table)
    write_json(out_dir / "timings.json", {"timings": timings, "n_users": int(rc.n_users), "n_days": int(rc.n_days)})
    metrics = {
        f"served_risk_corr_share_{r['phase']}": round(r["risk_corr_share"], 4) for r in summary.iter_rows(named=True)
    } | {f"served_max_ece_{r['phase']}": round(r["max_ece"], 4) for r in summary.iter_rows(named=True)}
    metrics["seconds_per_scenario"] = round(float(np.mean([t["total"] for t in timings.values()])), 1)
    finish(cfg, "robustness", metrics)
    return metrics
