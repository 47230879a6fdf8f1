"""Label efficiency: fine-tune on the labels of a share of the training users, pretrained encoder
vs from scratch, scored on test days with paired bootstrap intervals over users.

Run by the `temporal_experiments` stage (results in ``data/experiments/temporal/``, never in a
model folder).
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig

from migrainemamba.config import to_dict
from migrainemamba.evaluation.scoring import Scored, bootstrap_replicates, summarize
from migrainemamba.models.pretrain import TrainConfig
from migrainemamba.models.sequence_heads import SequenceModelConfig
from migrainemamba.models.temporal import TemporalModel
from migrainemamba.models.temporal_training import StageData, fit_sequence_model, running_base_rate

log = logging.getLogger(__name__)

LABEL_EFFICIENCY_METRICS = ("auc", "within_person_auc", "brier", "brier_skill")


def _replicates(model: TemporalModel, data: StageData, rows: np.ndarray, p_ref: np.ndarray, n_boot: int, seed: int) -> dict[str, np.ndarray]:
    """Bootstrap replicates over users (shared resamples: differences between models are paired)."""
    seq = data.seq
    s = Scored(user=seq.user_of_rows(rows), y=seq.onset[rows], p=model.predict_rows(seq, rows, data.offset), p_ref=p_ref)
    reps = bootstrap_replicates(s, n_boot, seed)
    return {k: reps[k] for k in LABEL_EFFICIENCY_METRICS}


def _rounded(summary: dict[str, float]) -> dict[str, float]:
    return {k: round(v, 5) for k, v in summary.items()}


def label_efficiency(
    cfg: DictConfig, data: StageData, model_cfg: SequenceModelConfig, encoder_state: dict[str, torch.Tensor], parent: Any
) -> dict[str, Any]:
    """Fine-tune on the labels of a share of the training users, pretrained vs from scratch.

    For each ``offsets`` entry: ``foundation`` (the temporal model as configured, on top of the
    foundation model) and ``none`` (the sequence model alone, where the encoder must learn
    everything). Scored on the test split; ``pretrained_minus_scratch`` is paired over users.
    Results: ``{offset: {fraction: {pretrained, scratch, pretrained_minus_scratch}}}``.
    """
    le = cfg.temporal.label_efficiency
    train_cfg = TrainConfig.from_dict(to_dict(cfg.temporal.train) | to_dict(le.train))
    train_rows = data.rows("train", scorable=True)
    train_users = np.unique(data.seq.user_of_rows(train_rows))
    test_rows = data.rows("test", scorable=True)
    p_ref = running_base_rate(data, test_rows)
    results: dict[str, Any] = {}
    for offset in le.offsets:
        if offset == "foundation" and data.offset_model is None:
            log.warning("label efficiency: no foundation offset in this run (temporal.offset: none), skipped")
            continue
        part = data if offset == "foundation" else replace(data, offset_model=None, offset=None)
        for fraction in le.fractions:
            rng = np.random.default_rng(int(le.seed))
            chosen = rng.choice(train_users, max(1, round(float(fraction) * len(train_users))), replace=False)
            rows = train_rows[np.isin(data.seq.user_of_rows(train_rows), chosen)]
            key = f"{float(fraction):g}"
            out = results.setdefault(str(offset), {}).setdefault(key, {})
            reps = {}
            for variant, state in (("pretrained", encoder_state), ("scratch", None)):
                run_name = f"label_efficiency_{offset}_{key}_{variant}"
                model = fit_sequence_model("temporal", model_cfg, train_cfg, part, rows, state, cfg, parent, run_name)
                reps[variant] = _replicates(model, part, test_rows, p_ref, int(le.n_boot), int(le.seed))
                out[variant] = _rounded(summarize(reps[variant])) | {
                    "n_train_days": len(rows),
                    "n_train_users": len(chosen),
                    "best_val_loss": round(model.summary["best_val_loss"], 5),
                }
                log.info("label efficiency %s %s %s: %s", offset, key, variant, out[variant])
            diff = {m: reps["pretrained"][m] - reps["scratch"][m] for m in LABEL_EFFICIENCY_METRICS}
            out["pretrained_minus_scratch"] = _rounded(summarize(diff))  # paired over users
    return results


def plot_label_efficiency(results: dict[str, Any], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = [("auc", "pooled AUC"), ("within_person_auc", "within-person AUC"), ("brier_skill", "Brier skill vs base rate")]
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.4 * len(metrics), 4.0), squeeze=False)
    styles = {"pretrained": "-", "scratch": "--"}
    for ax, (metric, label) in zip(axes[0], metrics, strict=True):
        for j, (offset, by_fraction) in enumerate(results.items()):
            fractions = sorted(by_fraction, key=float)
            for i, variant in enumerate(("pretrained", "scratch")):
                x = np.array([float(f) for f in fractions]) * (1.0 + 0.05 * (i - 0.5))
                y = np.array([by_fraction[f][variant].get(metric, np.nan) for f in fractions])
                lo = np.array([by_fraction[f][variant].get(f"{metric}_lo", np.nan) for f in fractions])
                hi = np.array([by_fraction[f][variant].get(f"{metric}_hi", np.nan) for f in fractions])
                ax.errorbar(
                    x, y, yerr=[y - lo, hi - y], marker="o", capsize=3, ls=styles[variant], color=f"C{j}",
                    label=f"{variant} (offset: {offset})",
                )
        ax.set_xscale("log")
        ax.set(xlabel="share of training users' labels", ylabel=label, title=label)
        ax.legend(fontsize=7)
    fig.suptitle("Label efficiency on test days (95% bootstrap intervals over users)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
