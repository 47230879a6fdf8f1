"""Evaluation figures: ROC and reliability per phase (for dvc plots and MLflow)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import polars as pl
from sklearn.metrics import roc_curve

from migrainemamba.evaluation.scoring import reliability_curve
from migrainemamba.features import PHASES


def _models(predictions: pl.DataFrame) -> list[str]:
    return predictions["model"].unique().sort().to_list()


def plot_roc(predictions: pl.DataFrame, path: Path) -> None:
    fig, axes = plt.subplots(1, len(PHASES), figsize=(4.2 * len(PHASES), 4.2), squeeze=False)
    for ax, phase in zip(axes[0], PHASES, strict=True):
        part = predictions.filter(pl.col("phase") == phase)
        curves = [(m, part.filter(pl.col("model") == m)) for m in _models(predictions)]
        if "p_oracle" in part.columns and part["p_oracle"].null_count() == 0 and part.height:
            first = curves[0][1]
            curves.append(("oracle (ceiling)", first.with_columns(p=pl.col("p_oracle"))))
        for name, rows in curves:
            y = rows["y"].to_numpy()
            if rows.height == 0 or y.all() or not y.any():
                continue
            fpr, tpr, _ = roc_curve(y, rows["p"].to_numpy())
            ax.plot(fpr, tpr, lw=1.2, ls="--" if name.startswith("oracle") else "-", label=name)
        ax.plot([0, 1], [0, 1], color="grey", lw=0.7)
        ax.set(title=f"days {phase}", xlabel="false positive rate", ylabel="true positive rate")
        ax.legend(fontsize=7, loc="lower right")
    fig.suptitle("ROC (pooled) on test days")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_reliability(predictions: pl.DataFrame, path: Path) -> None:
    fig, axes = plt.subplots(1, len(PHASES), figsize=(4.2 * len(PHASES), 4.2), squeeze=False)
    for ax, phase in zip(axes[0], PHASES, strict=True):
        part = predictions.filter(pl.col("phase") == phase)
        top = 0.05
        for model in _models(predictions):
            rows = part.filter(pl.col("model") == model)
            if rows.height == 0:
                continue
            curve = reliability_curve(rows["y"].to_numpy(), rows["p"].to_numpy())
            ax.plot(curve["forecast"], curve["observed"], "o-", ms=3, lw=1, label=model)
            top = max(top, max(curve["forecast"]), max(curve["observed"]))
        ax.plot([0, top], [0, top], "k--", lw=0.7)
        ax.set(title=f"days {phase}", xlabel="mean forecast", ylabel="observed onset rate")
        ax.legend(fontsize=7, loc="upper left")
    fig.suptitle("Reliability (equal-count bins) on test days")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def interval_extent(value: float, lo: float, hi: float) -> tuple[float, float]:
    """Error-bar lengths below and above a point estimate. A percentile bootstrap interval need not
    contain the estimate (a skewed score, few resamples): the bar then stops at the estimate
    instead of going negative, which matplotlib refuses."""
    return max(value - lo, 0.0), max(hi - value, 0.0)


def plot_scores(scores: dict, path: Path, metric: str = "within_person_auc", population: str = "all") -> None:
    """Point estimates with 95% bootstrap intervals per phase and model."""
    phases = scores[population]
    models = sorted({m for p in phases.values() for m in p})
    fig, ax = plt.subplots(figsize=(7, 4))
    width = 0.8 / max(len(models), 1)
    for i, model in enumerate(models):
        xs, ys, lo, hi = [], [], [], []
        for j, phase in enumerate(PHASES):
            values = phases.get(phase, {}).get(model, {})
            if metric in values:
                xs.append(j + i * width)
                ys.append(values[metric])
                below, above = interval_extent(values[metric], values[f"{metric}_lo"], values[f"{metric}_hi"])
                lo.append(below)
                hi.append(above)
        ax.errorbar(xs, ys, yerr=[lo, hi], fmt="o", capsize=3, label=model)
    ax.set_xticks(np.arange(len(PHASES)) + width * (len(models) - 1) / 2, [f"days {p}" for p in PHASES])
    ax.set(ylabel=metric.replace("_", " "), title=f"{metric} with 95% intervals ({population} test users)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
