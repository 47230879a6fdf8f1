"""Design experiment for the temporal model (issue 11, point 3): what it is trained on.

Evidence it starts from: the temporal model corrects the foundation model's log-odds, and is
trained on the training days of the training people, where those log-odds are IN-SAMPLE (the
trees were fitted on exactly those days). There the foundation already explains the labels better
than it will on people it never saw, so the residual left for the sequence model is smaller and
differently shaped than at test time (the correction adds ~0.000 on the default cohort).

Compared, on scenarios whose dynamics the features do not encode, scored on the test days of the
held-out people (as selection scores), paired over people with the harness's bootstrap:

- ``current``: the stage's design (offset = foundation log-odds, trained on the training people's
  training days, early stopping on their validation days);
- ``fresh``: the same model and objective, trained on a FRESH simulated cohort of the same
  scenario (other seed, people neither the foundation nor anything else saw), so the offset it
  corrects is out of sample as at test time, and on more diary days (simulated diaries are free);
  early stopping on a share of the fresh people;
- ``fresh_matched``: as ``fresh`` on fresh people drawn until their days match ``current``'s
  training days (out of sample, the current budget: separates the two causes).

    PYTHONPATH=src .venv/bin/python benchmarks/temporal_design.py [n_users] [n_fresh] [scenario ...]

Writes benchmarks/results/temporal_design.json (cohorts under data/experiments/temporal_design/).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch
from omegaconf import OmegaConf

from migrainemamba.config import load_config, resolve_path, to_dict
from migrainemamba.data.prepare import PreparedCohort
from migrainemamba.evaluation.scoring import Scored, bootstrap_replicates, summarize
from migrainemamba.models.pretrain import TrainConfig
from migrainemamba.models.sequence_heads import SequenceModelConfig
from migrainemamba.models.temporal import TemporalModel
from migrainemamba.models.temporal_training import (
    encoder_init,
    foundation_offset,
    load_pretrained,
    load_stage_data,
    running_base_rate,
)
from migrainemamba.pipeline import write_json
from migrainemamba.runtime import configure_entry_point
from migrainemamba.stages import features, foundation, prepare, pretrain
from migrainemamba.stages.robustness import scenario_config

RESULTS = Path(__file__).parent / "results" / "temporal_design.json"
METRICS = ("brier_skill", "within_person_risk_corr", "ece", "within_person_auc", "auc")
PAIRED = ("brier_skill", "within_person_risk_corr", "within_person_auc")
PHASES = ("1-14", "15-30", "31+")
N_BOOT = 200
OVERRIDES = [
    "robustness.out_dir=data/experiments/temporal_design",
    "pretrain.train.samples_per_epoch=12800",  # short pretraining (both designs share it)
    "pretrain.train.max_epochs=2",
    "num_threads=1",
]


def _log_loss(y: np.ndarray, logit: np.ndarray) -> float:
    p = np.clip(1.0 / (1.0 + np.exp(-logit.astype(np.float64))), 1e-6, 1 - 1e-6)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def _fit(model_cfg, train_cfg, seq, train_rows, valid_rows, encoder_state, offset_model, offset, stats) -> TemporalModel:
    model = TemporalModel("temporal", model_cfg, train_cfg, stats=stats, offset_model=offset_model)
    model.fit_sequences(seq, train_rows, valid_rows, encoder_state, offset=offset)
    return model


def _score(data, rows: np.ndarray, forecasts: dict[str, np.ndarray], truth: pl.DataFrame) -> dict[str, Any]:
    """Per phase: each forecast's scores and the paired difference of each design from the foundation."""
    keys = data.seq.keys()[rows].select("user_id", "date")
    phase = keys.join(data.features.select("user_id", "date", "phase"), on=["user_id", "date"], how="left",
                      maintain_order="left")["phase"].to_numpy()
    known = keys.join(truth.select("user_id", "date", "p_oracle", "p_true"), on=["user_id", "date"], how="left",
                      maintain_order="left")
    p_true, p_oracle = known["p_true"].to_numpy(), known["p_oracle"].to_numpy()
    user, y, p_ref = data.seq.user_of_rows(rows), data.seq.onset[rows], running_base_rate(data, rows)
    out: dict[str, Any] = {}
    for name in (*PHASES, "all"):
        keep = (phase == name) if name != "all" else np.ones(len(rows), dtype=bool)
        keep &= np.isfinite(p_true)
        _, u = np.unique(user[keep], return_inverse=True)
        reps = {
            m: bootstrap_replicates(Scored(u, y[keep], p[keep], p_ref[keep], p_oracle=p_oracle[keep], p_true=p_true[keep]), N_BOOT, 0)
            for m, p in forecasts.items()
        }
        scores: dict[str, Any] = {"n_days": int(keep.sum()), "n_people": int(u.max() + 1), "oracle_within_person_risk_corr": None}
        oracle = bootstrap_replicates(Scored(u, y[keep], p_oracle[keep], p_ref[keep], p_true=p_true[keep]), N_BOOT, 0)
        scores["oracle_within_person_risk_corr"] = round(float(oracle["within_person_risk_corr"][0]), 4)
        for m, r in reps.items():
            scores[m] = {k: round(float(r[k][0]), 4) for k in METRICS}
        for m in forecasts:
            if m == "foundation":
                continue
            diff = {}
            for k in PAIRED:
                d = summarize({"d": reps[m][k] - reps["foundation"][k]})
                diff[k] = [round(d["d"], 4), round(d["d_lo"], 4), round(d["d_hi"], 4)]
            scores[f"{m}_minus_foundation"] = diff
        out[name] = scores
    return out


def run_scenario(scenario: str, n_users: int, n_fresh: int) -> dict[str, Any]:
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    base = load_config([f"robustness.n_users={n_users}", *OVERRIDES])
    cfg = scenario_config(base, scenario)
    done = (resolve_path(cfg.paths.models) / "pretrain" / "encoder.pt").is_file()
    for name, body in (("prepare", lambda c: prepare.run(c, progress=False)), ("features", features.run),
                       ("foundation", foundation.run), ("pretrain", pretrain.run)):
        if done:  # a rerun (more arms) reuses the scenario's cohort and models
            continue
        t = time.perf_counter()
        body(cfg)
        timings[name] = round(time.perf_counter() - t, 1)
    tc = cfg.temporal
    pre_cfg, stats, encoder_state = load_pretrained(resolve_path(tc.pretrained_dir))
    model_cfg = SequenceModelConfig.from_dict(pre_cfg.to_dict() | to_dict(tc.model))
    init = encoder_init(pre_cfg, model_cfg, encoder_state)
    train_cfg = TrainConfig.from_dict(to_dict(tc.train))
    torch.set_num_threads(train_cfg.num_threads)
    data = load_stage_data(cfg, stats=stats)
    data.offset_model, data.offset = foundation_offset(cfg, data)
    train_rows, valid_rows = data.rows("train", scorable=True), data.rows("valid", scorable=True)
    test_rows = data.rows("test", scorable=True)
    test_rows = test_rows[data.cold_start[test_rows]]  # the people no model saw (as selection scores)

    # the design as it is
    t = time.perf_counter()
    current = _fit(model_cfg, train_cfg, data.seq, train_rows, valid_rows, init, data.offset_model, data.offset, stats)
    timings["fit_current"] = round(time.perf_counter() - t, 1)

    # a fresh cohort of the same scenario: other seed, people nothing has seen; standardised with
    # the cohort's training stats; the same foundation model gives its (out-of-sample) offset
    fresh_dir = Path(cfg.paths.data_dir) / "fresh"
    fresh_cfg = cfg.copy()
    OmegaConf.update(fresh_cfg, "data.n_users", n_fresh, merge=False)
    OmegaConf.update(fresh_cfg, "data.seed", int(cfg.data.seed) + 7919, merge=False)
    for key in ("prepared", "features", "metrics", "plots"):
        OmegaConf.update(fresh_cfg, f"paths.{key}", str(fresh_dir / key), merge=False)
    t = time.perf_counter()
    if not (fresh_dir / "features" / "features.parquet").is_file():
        prepare.run(fresh_cfg, progress=False)
        features.run(fresh_cfg)
    fresh = load_stage_data(fresh_cfg, stats=stats)
    _, fresh.offset = foundation_offset(fresh_cfg, fresh)
    timings["fresh_cohort"] = round(time.perf_counter() - t, 1)
    rows = np.flatnonzero(fresh.seq.scorable)
    people = fresh.seq.user_of_rows(rows)
    held = np.random.default_rng(0).random(fresh.seq.user_ids.shape[0]) < 0.15  # early-stopping people
    t = time.perf_counter()
    fresh_model = _fit(model_cfg, train_cfg, fresh.seq, rows[~held[people]], rows[held[people]], init,
                       data.offset_model, fresh.offset, stats)
    timings["fit_fresh"] = round(time.perf_counter() - t, 1)
    # the same out-of-sample offset on the current design's budget: fresh people drawn until their
    # diary days match the current training days (separates "out of sample" from "more data")
    train_people = np.unique(people[~held[people]])
    order = np.random.default_rng(1).permutation(train_people)
    days = np.bincount(people[~held[people]], minlength=fresh.seq.user_ids.shape[0])[order]
    chosen = order[: int(np.searchsorted(np.cumsum(days), len(train_rows))) + 1]
    matched_rows = rows[np.isin(people, chosen)]
    t = time.perf_counter()
    matched = _fit(model_cfg, train_cfg, fresh.seq, matched_rows, rows[held[people]], init,
                   data.offset_model, fresh.offset, stats)
    timings["fit_fresh_matched"] = round(time.perf_counter() - t, 1)

    # evidence: the foundation's log loss where each design trains, and where it is scored
    y = data.seq.onset.astype(float)
    offset_loss = {
        "train_days_of_training_people (current trains here)": _log_loss(y[train_rows], data.offset[train_rows]),
        "valid_days_of_training_people": _log_loss(y[valid_rows], data.offset[valid_rows]),
        "test_days_of_held_out_people (scored here)": _log_loss(y[test_rows], data.offset[test_rows]),
        "fresh_people (fresh trains here)": _log_loss(fresh.seq.onset[rows].astype(float), fresh.offset[rows]),
    }
    truth = PreparedCohort.read(resolve_path(cfg.paths.prepared)).truth_days
    forecasts = {
        "foundation": 1.0 / (1.0 + np.exp(-data.offset[test_rows].astype(np.float64))),
        "current": current.predict_rows(data.seq, test_rows, data.offset),
        "fresh": fresh_model.predict_rows(data.seq, test_rows, data.offset),
        "fresh_matched": matched.predict_rows(data.seq, test_rows, data.offset),
    }
    timings["total"] = round(time.perf_counter() - t0, 1)
    return {
        "n_users": n_users, "n_fresh": n_fresh,
        "n_train_days": {"current": len(train_rows), "fresh": int((~held[people]).sum()),
                         "fresh_matched": len(matched_rows)},
        "fits": {name: {k: m.summary.get(k) for k in ("best_val_loss", "best_epoch", "epochs", "steps", "fit_seconds")}
                 for name, m in (("current", current), ("fresh", fresh_model), ("fresh_matched", matched))},
        "foundation_log_loss": {k: round(v, 5) for k, v in offset_loss.items()},
        "scores": _score(data, test_rows, forecasts, truth),
        "seconds": timings,
    }


def main() -> None:
    configure_entry_point()
    args = sys.argv[1:]
    n_users = int(args[0]) if args else 1200
    n_fresh = int(args[1]) if len(args) > 1 else 2000
    scenarios = args[2:] or ["refractory", "drifting_susceptibility"]
    results = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {"scenarios": {}}
    for scenario in scenarios:
        results["scenarios"][scenario] = run_scenario(scenario, n_users, n_fresh)
        results |= {"cpus": os.cpu_count(), "load_average_1min": round(os.getloadavg()[0], 2), "n_boot": N_BOOT,
                    "population": "test days of held-out people (cold start)", "overrides": OVERRIDES}
        write_json(RESULTS, results)  # after each scenario: a partial run keeps what it measured
        print(json.dumps(results["scenarios"][scenario]["scores"]["all"], indent=1))


if __name__ == "__main__":
    main()
