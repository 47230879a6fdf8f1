"""Compare fine-tuning settings of the temporal model with the foundation model on the VALIDATION split.

Settings are chosen here, never on test days. One run = one fit of the temporal model with Hydra
overrides (``configs/temporal``), scored on every scorable validation day beside the foundation
model (and, on simulated data, the oracle), with paired bootstrap intervals over people::

    .venv/bin/python -m migrainemamba.experiments.temporal_sweep wp0.3 temporal.train.within_person_weight=0.3
    .venv/bin/python -m migrainemamba.experiments.temporal_sweep no_outcomes --drop-inputs \\
        migraine_occurred migraine_severity migraine_duration_hours

Needs the features, foundation and pretrain stages' outputs. Appends one JSON line per run to
``data/experiments/temporal_sweep.jsonl``: per phase (all, 15-30, 31+) and metric, the temporal
model's score, the foundation's, their paired difference with its 95% interval, and the oracle's
(simulated data also: the within-person correlation with the true log-odds, free of the selection
effect of within-person AUC).
``--plot`` draws every run so far (difference in within-person AUC against difference in Brier
skill, 95% intervals) to ``plots/experiments/temporal_sweep.png``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from migrainemamba import distributed
from migrainemamba.config import load_config, resolve_path, to_dict
from migrainemamba.data.prepare import PreparedCohort
from migrainemamba.evaluation.scoring import Scored, bootstrap_replicates, summarize
from migrainemamba.models.pretrain import TrainConfig
from migrainemamba.models.sequence_heads import SequenceModelConfig
from migrainemamba.models.temporal_training import (
    encoder_init,
    fit_sequence_model,
    foundation_offset,
    load_pretrained,
    load_stage_data,
    running_base_rate,
    training_data,
    training_offset,
)
from migrainemamba.runtime import configure_entry_point

METRICS = ("auc", "within_person_auc", "brier_skill", "within_person_risk_corr")
PHASES = ("all", "15-30", "31+")


def results_path(cfg: Any) -> Path:
    return resolve_path(cfg.paths.data_dir) / "experiments" / "temporal_sweep.jsonl"


def run(tag: str, overrides: list[str], drop_inputs: list[str], n_boot: int = 200) -> dict[str, Any]:
    cfg = load_config(["tracking.enabled=false", "temporal.progress=false", *overrides])
    tc = cfg.temporal
    pre_cfg, stats, encoder_state = load_pretrained(resolve_path(tc.pretrained_dir))
    model_cfg = SequenceModelConfig.from_dict(pre_cfg.to_dict() | to_dict(tc.model))
    train_cfg = TrainConfig.from_dict(to_dict(tc.train))
    torch.set_num_threads(train_cfg.num_threads)
    data = load_stage_data(cfg, stats=stats)
    if drop_inputs:  # the model never sees these inputs (as if constant at the training mean)
        columns = [data.seq.value_columns.index(c) for c in drop_inputs]
        data.seq.values[:, columns] = 0.0
    _, foundation_logit = foundation_offset(cfg, data)  # the full model's: what forecasts use
    if tc.offset == "foundation":  # what the correction learns against (temporal.offset_fit)
        data.offset_model, data.offset = training_offset(cfg, data)
    init = encoder_init(pre_cfg, model_cfg, encoder_state) if model_cfg.encoder == "mamba" else None
    fit_on = training_data(cfg, data)  # temporal.train_cohort: the cohort's own people or a fresh cohort
    started = time.perf_counter()
    model = fit_sequence_model(
        "temporal", model_cfg, train_cfg, fit_on, fit_on.rows("train", scorable=True), init, cfg, None, tag,
        recalibrate=bool(tc.get("recalibrate", False)),  # (alpha, beta) fitted on these validation days
    )
    fit_seconds = round(time.perf_counter() - started, 1)

    valid = data.rows("valid", scorable=True)
    keys = data.seq.keys()[valid].select("user_id", "date")
    phase = keys.join(data.features.select("user_id", "date", "phase"), on=["user_id", "date"], how="left", maintain_order="left")["phase"].to_numpy()
    forecasts = {
        "temporal": model.predict_rows(data.seq, valid, None if data.offset is None else foundation_logit),
        "foundation": 1.0 / (1.0 + np.exp(-foundation_logit[valid].astype(np.float64))),
    }
    truth = PreparedCohort.read(resolve_path(cfg.paths.prepared)).truth_days
    p_true = None
    if truth is not None:
        known = keys.join(truth.select("user_id", "date", "p_oracle", "p_true"), on=["user_id", "date"], how="left", maintain_order="left")
        forecasts["oracle"], p_true = known["p_oracle"].to_numpy(), known["p_true"].to_numpy()
    user, y, p_ref = data.seq.user_of_rows(valid), data.seq.onset[valid], running_base_rate(data, valid)
    out: dict[str, Any] = {"tag": tag, "overrides": overrides, "drop_inputs": drop_inputs, "fit_seconds": fit_seconds,
                           "best_val_loss": round(model.summary["best_val_loss"], 5), "best_epoch": model.summary["best_epoch"]}
    for name in PHASES:
        keep = np.ones(len(valid), dtype=bool) if name == "all" else phase == name
        truth_kept = None if p_true is None else p_true[keep]
        reps = {
            m: bootstrap_replicates(Scored(user[keep], y[keep], p[keep], p_ref[keep], p_true=truth_kept), n_boot, 0)
            for m, p in forecasts.items()
        }
        scores = {}
        for metric in (m for m in METRICS if m in reps["temporal"]):
            diff = summarize({"d": reps["temporal"][metric] - reps["foundation"][metric]})
            scores[metric] = {m: round(float(r[metric][0]), 4) for m, r in reps.items()} | {
                "temporal_minus_foundation": [round(diff["d"], 4), round(diff["d_lo"], 4), round(diff["d_hi"], 4)]
            }
        out[name] = scores
    if distributed.is_global_zero():  # one line per run, also when it trained on several ranks
        path = results_path(cfg)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a") as f:
            f.write(json.dumps(out) + "\n")
    return out


def plot(runs: list[dict[str, Any]], path: Path, phase: str = "all") -> Path:
    """Each run's temporal-minus-foundation difference: within-person AUC (y) against Brier skill (x)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from migrainemamba.evaluation.plots import interval_extent

    fig, ax = plt.subplots(figsize=(6.4, 4.8))
    for i, r in enumerate(runs):
        bx, bx_lo, bx_hi = r[phase]["brier_skill"]["temporal_minus_foundation"]
        wy, wy_lo, wy_hi = r[phase]["within_person_auc"]["temporal_minus_foundation"]
        xerr, yerr = interval_extent(bx, bx_lo, bx_hi), interval_extent(wy, wy_lo, wy_hi)
        ax.errorbar(bx, wy, xerr=[[xerr[0]], [xerr[1]]], yerr=[[yerr[0]], [yerr[1]]], fmt="o", capsize=3, color=f"C{i % 10}", label=r["tag"])
    ax.axhline(0, color="grey", lw=0.8)
    ax.axvline(0, color="grey", lw=0.8)
    ax.set(xlabel="Brier skill, temporal minus foundation", ylabel="within-person AUC, temporal minus foundation",
           title=f"Temporal fine-tuning settings on validation days ({phase})\n95% paired bootstrap intervals over people")
    ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main() -> None:
    configure_entry_point()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("tag", nargs="?", help="a name for this run")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. temporal.train.within_person_weight=0.3")
    parser.add_argument("--drop-inputs", nargs="*", default=[], help="per-day input columns the model must not see")
    parser.add_argument("--plot", action="store_true", help="plot every run in the JSONL file")
    args = parser.parse_args()
    if args.tag:
        with distributed.ranks():  # a distributed fit: every rank trains, rank 0 writes and prints
            result = run(args.tag, args.overrides, args.drop_inputs)
        if not distributed.is_global_zero():
            return
        print(json.dumps(result, indent=1))
    if args.plot:
        cfg = load_config(args.overrides)
        runs = [json.loads(line) for line in results_path(cfg).read_text().splitlines() if line.strip()]
        print(plot(runs, resolve_path(cfg.paths.plots) / "experiments" / "temporal_sweep.png"))


if __name__ == "__main__":
    main()
