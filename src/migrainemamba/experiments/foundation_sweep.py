"""Compare foundation-model settings on the VALIDATION split by proper scores and the truth.

Settings are chosen here, never on test days. One run = one fit of the foundation model with
Hydra overrides (``configs/foundation``), on the train split the stage uses, scored on every
scorable validation day beside the running base rate (the Brier-skill reference) and, on
simulated data, the oracle: log loss, Brier skill, ECE, within-person AUC (reported, never the
judge: it has a finite-window selection effect) and the within-person correlation with the true
log-odds (no selection effect), with paired 95% bootstrap intervals over people against a
reference run (the first tag of the call)::

    .venv/bin/python -m migrainemamba.experiments.foundation_sweep default \\
        with_history foundation.exclude_features=[]

Each argument is ``tag`` or ``tag key=value ...`` separated by ``--``; the first run is the
reference of the paired differences. Needs the prepare and features stages' outputs. Writes
``data/experiments/foundation_sweep.json``.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from sklearn.metrics import log_loss

from migrainemamba.config import load_config, resolve_path, to_dict
from migrainemamba.data.prepare import PreparedCohort
from migrainemamba.evaluation.scoring import Scored, bootstrap_replicates, summarize
from migrainemamba.models.baselines import RunningBaseRate
from migrainemamba.models.foundation import FoundationConfig, FoundationModel, split_batches
from migrainemamba.runtime import configure_entry_point

log = logging.getLogger(__name__)

METRICS = ("brier_skill", "ece", "within_person_auc", "within_person_risk_corr")
PHASES = ("all", "15-30", "31+")


def results_path(cfg: Any) -> Path:
    return resolve_path(cfg.paths.data_dir) / "experiments" / "foundation_sweep.json"


def _runs(argv: list[str]) -> list[tuple[str, list[str]]]:
    runs, current = [], []
    for token in [*argv, "--"]:
        if token == "--":
            if current:
                runs.append((current[0], current[1:]))
            current = []
        else:
            current.append(token)
    return runs


def sweep(runs: list[tuple[str, list[str]]], n_boot: int = 200) -> dict[str, Any]:
    """Fit each setting, score on validation days, pair every run with the first."""
    base_cfg = load_config(["tracking.enabled=false"])
    cohort = PreparedCohort.read(resolve_path(base_cfg.paths.prepared))
    features = pl.read_parquet(resolve_path(base_cfg.paths.features) / "features.parquet")
    train, valid = split_batches(features, cohort, to_dict(base_cfg.split))
    rows = valid.features().select("user_id", "date", "phase")
    y = valid.labels().astype(bool)
    users = rows["user_id"].to_numpy()
    user_index = {u: i for i, u in enumerate(np.unique(users))}
    user = np.array([user_index[u] for u in users])
    phase = rows["phase"].to_numpy()
    p_ref = np.asarray(RunningBaseRate().predict(valid), dtype=float)
    p_true = p_oracle = None
    if cohort.truth_days is not None:
        truth = rows.join(cohort.truth_days.select("user_id", "date", "p_true", "p_oracle"), on=["user_id", "date"], how="left", maintain_order="left")
        p_true, p_oracle = truth["p_true"].to_numpy(), truth["p_oracle"].to_numpy()

    forecasts: dict[str, np.ndarray] = {}
    settings: dict[str, Any] = {}
    for tag, overrides in runs:
        cfg = load_config(["tracking.enabled=false", *overrides])
        model = FoundationModel(FoundationConfig.from_dict(to_dict(cfg.foundation)))
        model.fit(train, valid)
        forecasts[tag] = np.asarray(model.predict(valid), dtype=float)
        settings[tag] = {"overrides": overrides, "best_iteration": model.summary.best_iteration}
        log.info("%s: best iteration %s", tag, model.summary.best_iteration)
    if p_oracle is not None:
        forecasts["oracle"] = p_oracle

    reference = runs[0][0]
    out: dict[str, Any] = {"reference": reference, "settings": settings, "n_valid_days": len(y)}
    for name in PHASES:
        keep = np.ones(len(y), bool) if name == "all" else phase == name
        truth = None if p_true is None else p_true[keep]
        reps = {
            tag: bootstrap_replicates(Scored(user[keep], y[keep], p[keep], p_ref[keep], p_true=truth), n_boot, 0)
            for tag, p in forecasts.items()
        }
        table: dict[str, Any] = {}
        for tag, p in forecasts.items():
            row: dict[str, Any] = {"log_loss": round(float(log_loss(y[keep], p[keep], labels=[False, True])), 5)}
            for metric in (m for m in METRICS if m in reps[tag]):
                row[metric] = round(float(np.nanmean(reps[tag][metric])), 4)
                if tag not in (reference, "oracle"):
                    d = summarize({"d": reps[tag][metric] - reps[reference][metric]})
                    row[f"{metric}_minus_{reference}"] = [round(d["d"], 4), round(d["d_lo"], 4), round(d["d_hi"], 4)]
            table[tag] = row
        out[name] = table
    return out


def main() -> None:
    configure_entry_point()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs=argparse.REMAINDER, help="tag [overrides...] -- tag [overrides...]")
    args = parser.parse_args()
    result = sweep(_runs(args.runs))
    cfg = load_config(["tracking.enabled=false"])
    path = results_path(cfg)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1))
    for name in PHASES:
        print(f"\n{name}")
        print(pl.DataFrame([{"run": tag, **{k: v for k, v in row.items() if not isinstance(v, list)}} for tag, row in result[name].items()]))
        for tag, row in result[name].items():
            diffs = {k: v for k, v in row.items() if isinstance(v, list)}
            if diffs:
                print(tag, diffs)


if __name__ == "__main__":
    main()
