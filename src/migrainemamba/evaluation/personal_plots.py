"""Figures of the personalize stage: gain by days logged, trigger recovery curves."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import polars as pl

from migrainemamba.evaluation.plots import interval_extent

METRICS = (("brier_skill", "Brier skill"), ("within_person_risk_corr", "within-person risk corr"))


def plot_gain_by_days_logged(scores: Mapping[str, Any], bins: Sequence[str], path: Path) -> None:
    """Each compared model's score per days-logged bin with its 95% interval."""
    fig, axes = plt.subplots(1, len(METRICS), figsize=(10, 4))
    for ax, (metric, title) in zip(axes, METRICS, strict=True):
        for j, model in enumerate(("foundation", "temporal", "personal")):
            xs, ys, err = [], [], []
            for i, b in enumerate(bins):
                values = scores.get(b, {}).get(model, {})
                if metric in values:
                    xs.append(i + 0.1 * (j - 1))
                    ys.append(values[metric])
                    err.append(interval_extent(values[metric], values[f"{metric}_lo"], values[f"{metric}_hi"]))
            if xs:
                ax.errorbar(xs, ys, yerr=list(zip(*err)), fmt="o-", capsize=3, label=model)
        ax.set_xticks(range(len(bins)), [f"days {b}" for b in bins])
        ax.set(title=title, ylabel=title)
        ax.legend(fontsize=8)
    fig.suptitle("test days, by days logged (95% bootstrap intervals over people)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_recovery_curves(curve: pl.DataFrame, path: Path) -> None:
    """Precision vs recall of the `trigger` class as the interval's z varies, per horizon and method."""
    horizons = sorted(curve["horizon_days"].unique().to_list())
    fig, axes = plt.subplots(1, len(horizons), figsize=(4 * len(horizons), 4), squeeze=False)
    for ax, h in zip(axes[0], horizons, strict=True):
        for method in sorted(curve["method"].unique().to_list()):
            part = curve.filter((pl.col("horizon_days") == h) & (pl.col("method") == method)).sort("z")
            ax.plot(part["recall"], part["precision"], "o-", label=method)
        ax.axhline(0.8, color="grey", lw=0.7, ls="--")
        ax.set(title=f"{h} days logged", xlabel="recall of true triggers", ylabel="precision of 'trigger'", ylim=(0, 1))
        ax.legend(fontsize=8)
    fig.suptitle("trigger recovery on held-out people (points: interval z)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
