"""Forecast metrics shared by every report (docs/architecture.md §4)."""

from __future__ import annotations

import numpy as np
import polars as pl
from sklearn.metrics import brier_score_loss, roc_auc_score


def pooled_auc(y: np.ndarray, p: np.ndarray) -> float:
    """ROC AUC over all user-days together (mixes between-person differences in)."""
    y = np.asarray(y, bool)
    if y.all() or not y.any():
        return float("nan")
    return float(roc_auc_score(y, p))


def per_user_auc(user_id: np.ndarray, y: np.ndarray, p: np.ndarray) -> pl.DataFrame:
    """Each user's own ROC AUC (Mann-Whitney with average ranks for ties), vectorised.

    Users with only one class get a null AUC.
    """
    frame = pl.DataFrame({"user_id": user_id, "y": np.asarray(y, bool), "p": np.asarray(p, float)})
    return (
        frame.with_columns(rank=pl.col("p").rank("average").over("user_id"))
        .group_by("user_id")
        .agg(
            n_pos=pl.col("y").sum(),
            n_neg=(~pl.col("y")).sum(),
            rank_sum_pos=pl.col("rank").filter(pl.col("y")).sum(),
        )
        .with_columns(
            auc=pl.when((pl.col("n_pos") > 0) & (pl.col("n_neg") > 0)).then(
                (pl.col("rank_sum_pos") - pl.col("n_pos") * (pl.col("n_pos") + 1) / 2)
                / (pl.col("n_pos") * pl.col("n_neg"))
            )
        )
        .select("user_id", "n_pos", "n_neg", "auc")
        .sort("user_id")
    )


def within_person_auc(user_id: np.ndarray, y: np.ndarray, p: np.ndarray) -> tuple[float, int]:
    """Mean over users (with both classes) of each user's own AUC; and how many users counted."""
    aucs = per_user_auc(user_id, y, p)["auc"].drop_nulls()
    return (float(aucs.mean()) if len(aucs) else float("nan")), len(aucs)


def brier(y: np.ndarray, p: np.ndarray) -> float:
    return float(brier_score_loss(np.asarray(y, bool), np.asarray(p, float)))


def uniform_bins(p: np.ndarray, n_bins: int) -> np.ndarray:
    """Index of the equal-width bin on [0, 1] of each forecast (1.0 falls in the last bin)."""
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    return np.clip(np.searchsorted(edges, p, side="right") - 1, 0, n_bins - 1)


def expected_calibration_error(y: np.ndarray, p: np.ndarray, n_bins: int = 10, strategy: str = "uniform") -> float:
    """Sum over bins of |mean forecast − observed rate| weighted by the bin's share of days.

    ``strategy="uniform"``: equal-width bins on [0, 1] (a forecast of exactly 1 falls in
    the last bin); ``"quantile"``: equal-count bins, better for rare events.
    """
    y = np.asarray(y, float)
    p = np.asarray(p, float)
    if len(p) == 0:
        return float("nan")
    if strategy == "uniform":
        bins = uniform_bins(p, n_bins)
    elif strategy == "quantile":
        edges = np.quantile(p, np.linspace(0.0, 1.0, n_bins + 1))
        bins = np.clip(np.searchsorted(edges, p, side="right") - 1, 0, n_bins - 1)
    else:
        raise ValueError(f"strategy: {strategy!r} is not 'uniform' or 'quantile'")
    counts = np.bincount(bins, minlength=n_bins)
    sum_p = np.bincount(bins, weights=p, minlength=n_bins)
    sum_y = np.bincount(bins, weights=y, minlength=n_bins)
    used = counts > 0
    gap = np.abs(sum_p[used] - sum_y[used]) / counts[used]
    return float((gap * counts[used]).sum() / len(p))
