"""The `personalize` stage: the personal model, its prequential evaluation, the trigger maps.

1. Fit the personal model's prior by empirical Bayes on the training split (people not
   held out, their earlier days), on top of the foundation model's log-odds.
2. Forecast every day of every person prequentially (weekly refits, online updates), the
   way the service does; audit for leakage; score test days against the foundation (and
   temporal, when its model exists) with the harness's paired intervals, on days 31+ and by
   days logged (31-60, 61-90, 91-180, 181+).
3. Trigger maps (personal and N-of-1) at 30/60/90/180 days logged for the held-out people;
   the class rule's interval is chosen on the training people (false-"trigger" rate and
   precision targets) and recovery is scored against ``truth_users`` (simulated data).
4. On simulated data, the diary-Bayes reference on a subset of held-out people, and the
   share of the foundation -> reference gap in within-person risk correlation captured.
Steps 3 and 4 need neither the model nor its forecasts: a worker process computes them on the
other core while steps 1-2 run.
"""

from __future__ import annotations

import logging
import multiprocessing
import time
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import polars as pl
from omegaconf import DictConfig

from migrainemamba.config import resolve_path, to_dict
from migrainemamba.data.prepare import PreparedCohort
from migrainemamba.evaluation.harness import score_predictions
from migrainemamba.evaluation.leakage import require_no_leakage
from migrainemamba.evaluation.personal_plots import plot_gain_by_days_logged, plot_recovery_curves
from migrainemamba.evaluation.trigger_recovery import recall_at_matched_precision, recovery
from migrainemamba.models.base import ForecastBatch
from migrainemamba.models.baselines import RunningBaseRate
from migrainemamba.models.foundation import FoundationModel
from migrainemamba.models.out_of_fold import read_out_of_fold, with_out_of_fold
from migrainemamba.models.personal import PersonalModel, config_from_dict
from migrainemamba.models.personal_pyfunc import log_personal_model
from migrainemamba.models.prior import sigmoid
from migrainemamba.models.trigger_map import (
    ClassRule,
    MapPrior,
    MapRows,
    estimate_map_prior,
    save_map_setup,
    trigger_maps,
)
from migrainemamba.pipeline import write_json
from migrainemamba.split import make_split
from migrainemamba.stages.common import finish, tracked

log = logging.getLogger(__name__)

STAGE = "personalize"
MODEL_KEYS = ("triggers", "extra_terms", "weighted_effects", "level", "refit_every_days", "min_days_logged", "moderated", "eb_max_iter", "init_prior_sd")
COMPARED = ("personal", "foundation", "temporal")
SCORES = ("brier_skill", "within_person_risk_corr", "within_person_auc", "ece", "auc")


def days_logged_bin(bins: dict[str, list[int]]) -> pl.Expr:
    """Label of the days-logged bin of a forecast (days logged including the forecast day)."""
    logged = pl.col("days_logged_before") + 1
    expr = pl.lit(None, dtype=pl.String)
    for label, (lo, hi) in reversed(list(bins.items())):
        expr = pl.when((logged > lo) & (logged <= hi)).then(pl.lit(label)).otherwise(expr)
    return expr


def _model_predictions(name: str, rows: pl.DataFrame, p: np.ndarray) -> pl.DataFrame:
    return rows.select(
        "user_id", "date", "phase", "bin", "split", "cold_start", model=pl.lit(name), p=pl.Series(np.asarray(p, float)), y=pl.col("onset").cast(pl.Boolean)
    )


def _temporal_predictions(cfg: DictConfig, cohort: PreparedCohort, split: pl.DataFrame, rows: pl.DataFrame) -> np.ndarray | None:
    model_dir = resolve_path(cfg.temporal.model_dir)
    if not (model_dir / "temporal.json").is_file():
        log.info("no temporal model in %s: compared with the foundation model only", model_dir)
        return None
    from migrainemamba.models.temporal import TemporalModel

    model = TemporalModel.load(model_dir)
    return model.predict(ForecastBatch(cohort.users, cohort.daily_logs, rows.select("user_id", "date"), precomputed=split))


def _summary(scores: dict[str, Any], population: str, phases: list[str]) -> dict[str, Any]:
    """Headline numbers: each compared model's scores and personal's paired differences."""
    out: dict[str, Any] = {}
    for phase in phases:
        models = scores.get(population, {}).get(phase, {})
        row: dict[str, Any] = {}
        for model in (*COMPARED, "oracle_ref"):
            for metric in SCORES:
                if metric in models.get(model, {}):
                    row[f"{model}_{metric}"] = round(models[model][metric], 4)
        for other in ("foundation", "temporal"):
            for metric in ("brier_skill", "within_person_risk_corr", "within_person_auc", "ece"):
                key = f"{metric}_minus_{other}"
                if key in models.get("personal", {}):
                    row[f"personal_{key}"] = round(models["personal"][key], 4)
                    row[f"personal_{key}_lo"] = round(models["personal"][key + "_lo"], 4)
                    row[f"personal_{key}_hi"] = round(models["personal"][key + "_hi"], 4)
        if "oracle_within_person_risk_corr" in models.get("personal", {}):
            row["oracle_within_person_risk_corr"] = round(models["personal"]["oracle_within_person_risk_corr"], 4)
        out[phase] = row
    return out


def _choose_rule(maps_train: pl.DataFrame, truth_users: pl.DataFrame, tcfg: dict[str, Any]) -> tuple[ClassRule, pl.DataFrame]:
    """The smallest interval z on the grid whose `trigger` class, on training people at the rule
    horizon (personal method), has precision at least ``min_precision`` and a false-'trigger'
    rate at most ``max_false_trigger_rate``; the curve over z is returned for the record."""
    curve = []
    base = {k: tcfg[k] for k in ("min_onsets_exposed", "min_exposed", "no_association_or")}
    chosen = None
    for z in sorted(float(v) for v in tcfg["z_grid"]):
        rule = ClassRule(z=z, **base)
        rec = recovery(_reclassify(maps_train, rule), truth_users).with_columns(z=pl.lit(z))
        curve.append(rec)
        at = rec.filter((pl.col("horizon_days") == tcfg["rule_horizon"]) & (pl.col("method") == "personal"))
        meets = at.height and at["false_trigger_rate"][0] <= tcfg["max_false_trigger_rate"] and at["precision"][0] >= tcfg["min_precision"]
        if chosen is None and meets:
            chosen = rule
    if chosen is None:
        chosen = ClassRule(z=max(float(v) for v in tcfg["z_grid"]), **base)
        log.warning("trigger map: no z in the grid meets the precision and false-trigger targets; using z=%.2f", chosen.z)
    return chosen, pl.concat(curve)


def _reclassify(maps: pl.DataFrame, rule: ClassRule) -> pl.DataFrame:
    """Maps (with their ``sd``) under another rule: interval log_or +- z sd, classes again."""
    return rule.classify(
        maps.with_columns(lo=pl.col("log_or") - rule.z * pl.col("sd"), hi=pl.col("log_or") + rule.z * pl.col("sd"))
    )


def _maps(rows: MapRows, prior, horizons, logged: dict[str, int]) -> pl.DataFrame:
    unit = ClassRule(z=1.0)
    return trigger_maps(rows, prior, horizons, unit, logged).with_columns(sd=(pl.col("hi") - pl.col("lo")) / 2)


def trigger_map_outputs(
    pc: dict[str, Any], split_cfg: dict[str, Any], features_path: str, prepared: str, out_dir: str, plots_dir: str
) -> tuple[dict[str, Any], MapPrior, ClassRule]:
    """Trigger maps (personal and N-of-1) of the held-out people at every horizon, the class rule
    chosen on training people, and on simulated data their recovery against the truth. Writes the
    stage's map files; returns (metrics, the map prior, the rule). A top-level function from plain
    arguments: it runs in the worker process beside steps 1-2 (it needs neither the model nor
    its forecasts)."""
    cohort = PreparedCohort.read(Path(prepared))
    split = make_split(pl.read_parquet(Path(features_path) / "features.parquet"), split_cfg)
    out, plots = Path(out_dir), Path(plots_dir)
    tcfg = pc["trigger_map"]
    horizons = tuple(int(h) for h in tcfg["horizons"])
    logged = dict(split.group_by("user_id").agg(pl.col("logged").sum()).iter_rows())
    all_rows = MapRows.build(split, cohort.daily_logs)
    prior = estimate_map_prior(
        MapRows.build(split.filter((pl.col("split") == "train") & ~pl.col("cold_start")), cohort.daily_logs), centre=tcfg["centre"]
    )
    warm = split.filter(~pl.col("cold_start"))["user_id"].unique().to_numpy()
    cold = split.filter(pl.col("cold_start"))["user_id"].unique().to_numpy()
    maps_cold = _maps(all_rows.upto(10**9, cold), prior, horizons, logged)
    metrics: dict[str, Any] = {}
    if cohort.truth_users is not None:
        # the rule is chosen at the rule horizon only
        maps_warm = _maps(all_rows.upto(10**9, warm), prior, (int(tcfg["rule_horizon"]),), logged)
        rule, rule_curve = _choose_rule(maps_warm, cohort.truth_users, tcfg)
        rule_curve.write_parquet(out / "rule_curve_training_people.parquet")
    else:
        rule = ClassRule(z=float(tcfg["default_z"]), **{k: tcfg[k] for k in ("min_onsets_exposed", "min_exposed", "no_association_or")})
    trigger_map = _reclassify(maps_cold, rule)
    trigger_map.drop("sd").write_parquet(out / "trigger_map.parquet")
    write_json(out / "map_prior.json", {"prior": prior.as_dict(), "rule": vars(rule)})
    if cohort.truth_users is not None:
        rec = recovery(trigger_map, cohort.truth_users)
        rec.write_parquet(out / "trigger_recovery.parquet")
        curve = pl.concat(
            [recovery(_reclassify(maps_cold, ClassRule(z=float(z))), cohort.truth_users).with_columns(z=pl.lit(float(z))) for z in tcfg["z_grid"]]
        )
        curve.write_parquet(out / "recovery_curve.parquet")
        plot_recovery_curves(curve, plots / "trigger_recovery.png")
        matched = recall_at_matched_precision(rec, curve)
        matched.write_parquet(out / "recall_at_matched_precision.parquet")
        metrics["trigger_recall_at_matched_precision"] = {
            f"{r['horizon_days']}d": {k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items() if k != "horizon_days"}
            for r in matched.iter_rows(named=True)
        }
        metrics["trigger_recovery"] = {
            f"{r['method']}_{r['horizon_days']}d": {k: round(r[k], 4) for k in ("precision", "recall", "false_trigger_rate", "spearman")}
            | {"n_called": r["n_called"], "n_users": r["n_users"]}
            for r in rec.iter_rows(named=True)
        }
        metrics["trigger_rule_z"] = rule.z
    return metrics, prior, rule


def reference_people(split: pl.DataFrame, rcfg: dict[str, Any]) -> list[str]:
    """The seeded subset of held-out people with days 31+ on test that the reference forecasts."""
    eligible = (
        split.filter(pl.col("cold_start") & (pl.col("split") == "test") & pl.col("scorable") & (pl.col("phase") == "31+"))["user_id"]
        .unique()
        .sort()
    )
    n = min(int(rcfg["n_users"]), eligible.len())
    return eligible.sample(n, seed=int(rcfg["seed"])).sort().to_list()


def reference_forecasts(data_cfg: dict[str, Any], prepared: str, chosen: list[str], n_draws: int, seed: int) -> pl.DataFrame:
    """Diary-Bayes reference forecasts for ``chosen`` (a top-level function: it runs in a worker
    process beside the rest of the stage, from plain arguments)."""
    from migrainemamba.evaluation.diary_bayes import prepared_cohort_reference

    return prepared_cohort_reference(data_cfg, PreparedCohort.read(Path(prepared)).truth_days, chosen, n_draws, seed)


def start_reference(cfg: DictConfig, split: pl.DataFrame, pool: ProcessPoolExecutor) -> Future | None:
    """Submit the reference (simulated data, ``personal.reference.enabled``) to ``pool``."""
    pc = to_dict(cfg.personal)
    rcfg = pc["reference"]
    if not rcfg["enabled"] or to_dict(cfg.data).get("source") != "synthetic":
        return None
    chosen = reference_people(split, rcfg)
    prepared = str(resolve_path(cfg.paths.prepared))
    return pool.submit(reference_forecasts, to_dict(cfg.data), prepared, chosen, int(rcfg["n_draws"]), int(pc["seed"]))


def run(cfg: DictConfig) -> dict[str, Any]:
    started, cpu_started = time.perf_counter(), time.process_time()
    pc = to_dict(cfg.personal)
    split_cfg = to_dict(cfg.split)
    out_dir = resolve_path(pc["output_dir"])
    out_dir.mkdir(parents=True, exist_ok=True)
    plots_dir = resolve_path(cfg.paths.plots) / STAGE
    plots_dir.mkdir(parents=True, exist_ok=True)
    cohort = PreparedCohort.read(resolve_path(cfg.paths.prepared))
    features = pl.read_parquet(resolve_path(cfg.paths.features) / "features.parquet")
    split = make_split(features, split_cfg)
    timings: dict[str, float] = {}

    # bin labels hold '+', which MLflow param keys may not: the bins go in as one value
    params = {"personal": {k: v for k, v in pc.items() if k != "days_logged_bins"} | {"days_logged_bins": str(pc["days_logged_bins"])}, "split": split_cfg}
    # the trigger maps and the diary-Bayes reference (simulated data) need neither the model nor
    # its forecasts: they run in a worker process on the other core meanwhile (spawned: forking a
    # process with polars' and LightGBM's threads running can deadlock)
    pool = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"))
    with pool, tracked(cfg, STAGE, params) as mlrun:
        maps_job = pool.submit(
            trigger_map_outputs, pc, split_cfg, str(resolve_path(cfg.paths.features)), str(resolve_path(cfg.paths.prepared)),
            str(out_dir), str(plots_dir),
        )
        reference_job = start_reference(cfg, split, pool) if cohort.truth_days is not None else None
        # 1. the prior, by empirical Bayes on the training split
        offset_dir = resolve_path(cfg.paths.models) / "foundation"
        foundation = FoundationModel.load(offset_dir)
        model = PersonalModel(config_from_dict({k: pc[k] for k in MODEL_KEYS if k in pc}), foundation, offset_dir)
        train_rows = split.filter((pl.col("split") == "train") & pl.col("scorable") & ~pl.col("cold_start"))
        t0 = time.perf_counter()
        offset = foundation.logit(train_rows)
        if pc["offset_fit"] == "out_of_fold":
            offset = with_out_of_fold(train_rows, offset, read_out_of_fold(resolve_path(pc["out_of_fold"])))
        elif pc["offset_fit"] != "in_sample":
            raise ValueError(f"personal.offset_fit must be 'out_of_fold' or 'in_sample', got {pc['offset_fit']!r}")
        model.fit(ForecastBatch(cohort.users, cohort.daily_logs, train_rows.select("user_id", "date"), precomputed=split), offset=offset)
        timings["empirical_bayes_seconds"] = time.perf_counter() - t0
        model_dir = resolve_path(pc["model_dir"])
        model.save(model_dir)

        # 2. prequential forecasts of every day, leakage audit, scores
        t0 = time.perf_counter()
        forecasts, _result = model.forecast_rows(split)
        timings["prequential_seconds"] = time.perf_counter() - t0
        rows = split.filter(pl.col("scorable") & pl.col("split").is_in(["valid", "test"])).with_columns(
            bin=days_logged_bin(pc["days_logged_bins"])
        )
        personal_p = rows.select("user_id", "date").join(forecasts, on=["user_id", "date"], how="left", maintain_order="left")["p"].to_numpy()
        test_targets = rows.filter(pl.col("split") == "test").select("user_id", "date")
        require_no_leakage(model, cohort.users, cohort.daily_logs, test_targets, n_samples=int(pc["audit_samples"]), seed=int(pc["seed"]))
        batch = ForecastBatch(cohort.users, cohort.daily_logs, rows.select("user_id", "date"), precomputed=split)
        frames = [
            _model_predictions("personal", rows, personal_p),
            _model_predictions("foundation", rows, sigmoid(foundation.logit(rows))),
            _model_predictions("base_rate", rows, RunningBaseRate().predict(batch)),
        ]
        temporal_p = _temporal_predictions(cfg, cohort, split, rows) if pc["compare_temporal"] else None
        if temporal_p is not None:
            frames.append(_model_predictions("temporal", rows, temporal_p))
        preds = pl.concat(frames)
        if cohort.truth_days is not None:
            preds = preds.join(cohort.truth_days.select("user_id", "date", "p_oracle", "p_true"), on=["user_id", "date"], how="left")
        preds.write_parquet(out_dir / "predictions.parquet")
        bins = list(pc["days_logged_bins"])
        n_boot, seed = int(pc["n_boot"]), int(pc["seed"])
        t0 = time.perf_counter()
        report: dict[str, Any] = {}
        for split_name in ("valid", "test"):
            part = preds.filter(pl.col("split") == split_name)
            by_phase = score_predictions(part, n_boot, seed, phases=["31+"])
            by_bin = score_predictions(part.with_columns(phase=pl.col("bin")).drop_nulls("phase"), n_boot, seed, phases=bins)
            report[split_name] = {pop: by_phase.get(pop, {}) | by_bin.get(pop, {}) for pop in ("all", "cold_start")}
        timings["scoring_seconds"] = time.perf_counter() - t0

        # 3. trigger maps (computed meanwhile by the worker): the map's prior and rule travel with the model
        t0 = time.perf_counter()
        map_metrics, prior, rule = maps_job.result()
        save_map_setup(model_dir, prior, rule)  # served with the model (/insights/triggers)
        metrics: dict[str, Any] = dict(map_metrics)
        timings["trigger_map_wait_seconds"] = time.perf_counter() - t0  # beyond steps 1-2, which ran meanwhile

        # 4. the diary-Bayes reference (simulated data)
        if reference_job is not None:
            t0 = time.perf_counter()
            report["reference"] = reference_gap(cfg, reference_job.result(), preds, out_dir)
            metrics["reference_gap"] = report["reference"]["gap"]
            timings["reference_wait_seconds"] = time.perf_counter() - t0  # beyond steps 1-3, which ran meanwhile

        write_json(out_dir / "report.json", report)
        metrics["test_all"] = _summary(report["test"], "all", ["31+", *bins])
        metrics["test_cold_start"] = _summary(report["test"], "cold_start", ["31+"])
        metrics["valid_all"] = _summary(report["valid"], "all", ["31+"])
        metrics["prior_sd"] = {t: round(float(np.sqrt(v)), 4) for t, v in model.config.prior_var.items()}
        plot_gain_by_days_logged(report["test"]["all"], bins, plots_dir / "gain_by_days_logged.png")
        timings["stage_seconds"] = time.perf_counter() - started
        timings["stage_cpu_seconds"] = time.process_time() - cpu_started  # wall time depends on the machine's other load
        metrics["timings"] = {k: round(v, 1) for k, v in timings.items()}
        finish(cfg, STAGE, metrics, mlrun)
        if mlrun is not None:
            mlflow.log_dict(report, "personalize_report.json")
            for fig in plots_dir.glob("*.png"):
                mlflow.log_artifact(str(fig), "figures")
            log_personal_model(model_dir, pc["registered_model_name"])
    return metrics


def reference_gap(cfg: DictConfig, ref: pl.DataFrame, preds: pl.DataFrame, out_dir: Path) -> dict[str, Any]:
    """Scores of the diary-Bayes reference forecasts ``ref`` and, per days-logged bin, the
    share of the foundation -> reference gap in within-person risk correlation that the
    personal model captures (and the reference's own gain from learning, against itself
    without learning). Writes ``reference.parquet``; returns scores and the gap table."""
    pc = to_dict(cfg.personal)
    rcfg, bins = pc["reference"], list(pc["days_logged_bins"])
    n_boot, seed = int(pc["n_boot"]), int(pc["seed"])
    ref.write_parquet(out_dir / "reference.parquet")
    users = ref["user_id"].unique()
    sub = preds.filter((pl.col("split") == "test") & pl.col("user_id").is_in(users.implode()))
    ref_rows = sub.filter(pl.col("model") == "foundation").join(
        ref.select("user_id", "date", "p_reference", "p_reference_unlearned"), on=["user_id", "date"], how="left"
    )
    sub = pl.concat(
        [
            sub,
            ref_rows.with_columns(model=pl.lit("diary_bayes"), p=pl.col("p_reference")).drop("p_reference", "p_reference_unlearned"),
            # the same reference without learning from the diary (prior weights): what learning adds
            ref_rows.with_columns(model=pl.lit("diary_bayes_unlearned"), p=pl.col("p_reference_unlearned")).drop(
                "p_reference", "p_reference_unlearned"
            ),
        ]
    )
    scores = score_predictions(sub, n_boot, seed, phases=["31+"])["all"]
    scores |= score_predictions(sub.with_columns(phase=pl.col("bin")).drop_nulls("phase"), n_boot, seed, phases=bins)["all"]
    gap = {}
    for phase, models in scores.items():
        f, p, r, u = (
            models.get(m, {}).get("within_person_risk_corr") for m in ("foundation", "personal", "diary_bayes", "diary_bayes_unlearned")
        )
        if None not in (f, p, r, u):
            gap[phase] = {
                "foundation": round(f, 4),
                "personal": round(p, 4),
                "diary_bayes": round(r, 4),
                "diary_bayes_unlearned": round(u, 4),
                "learning_gain_of_reference": round(r - u, 4),
                "learning_gain_of_personal": round(p - f, 4),
                "oracle": round(models["personal"].get("oracle_within_person_risk_corr", float("nan")), 4),
                "share_captured": round((p - f) / (r - f), 3) if r != f else None,
                "n_users": int(models["personal"]["n_users"]),
            }
    return {"scores": scores, "gap": gap, "mean_ess": float(ref["ess"].mean()), "n_draws": int(rcfg["n_draws"])}
