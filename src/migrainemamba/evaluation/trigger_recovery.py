"""Trigger maps scored against the simulator's truth (``truth_users``).

Per horizon and method, over (person, trigger) pairs: precision and recall of the
``trigger`` class (a true trigger: the person is sensitive and the true log OR is > 0),
the false-"trigger" rate (share of pairs without sensitivity classed ``trigger``), and the
Spearman rank correlation of the estimated and the true log OR.
"""

from __future__ import annotations

import math

import polars as pl
from scipy.stats import spearmanr


def truth_pairs(truth_users: pl.DataFrame, triggers: list[str]) -> pl.DataFrame:
    """(user_id, trigger, sensitive, true_log_or) for every person and trigger."""
    return pl.concat(
        [
            truth_users.select(
                "user_id",
                trigger=pl.lit(t),
                sensitive=pl.col(f"{t}_sensitive"),
                true_log_or=pl.col(f"{t}_log_or").cast(pl.Float64),
            )
            for t in triggers
        ]
    )


def recovery(maps: pl.DataFrame, truth_users: pl.DataFrame) -> pl.DataFrame:
    """One row per (horizon_days, method): n_pairs, n_true_triggers, n_called, precision, recall,
    false_trigger_rate, spearman, and the share of pairs in each class."""
    truth = truth_pairs(truth_users, maps["trigger"].unique().to_list())
    scored = maps.join(truth, on=["user_id", "trigger"], how="left")
    rows = []
    for (horizon, method), part in scored.group_by("horizon_days", "method", maintain_order=True):
        called = (part["class"] == "trigger").to_numpy()
        true_trigger = (part["sensitive"] & (part["true_log_or"] > 0)).to_numpy()
        not_sensitive = (~part["sensitive"]).to_numpy()
        rho = spearmanr(part["log_or"].to_numpy(), part["true_log_or"].to_numpy()).statistic
        row = {
            "horizon_days": int(horizon),
            "method": method,
            "n_users": int(part["user_id"].n_unique()),
            "n_pairs": int(part.height),
            "n_true_triggers": int(true_trigger.sum()),
            "n_called": int(called.sum()),
            "precision": float((called & true_trigger).sum() / called.sum()) if called.any() else float("nan"),
            "recall": float((called & true_trigger).sum() / max(true_trigger.sum(), 1)),
            "false_trigger_rate": float((called & not_sensitive).sum() / max(not_sensitive.sum(), 1)),
            "spearman": float(rho),
        }
        for cls in ("trigger", "protective", "no_association", "not_enough_data"):
            row[f"share_{cls}"] = float((part["class"] == cls).mean())
        rows.append(row)
    return pl.DataFrame(rows).sort("horizon_days", "method")


def top_ranked(maps: pl.DataFrame, user_id: str, horizon: int, method: str = "personal") -> str:
    """The trigger with the largest estimated log OR in one person's map."""
    part = maps.filter((pl.col("user_id") == user_id) & (pl.col("horizon_days") == horizon) & (pl.col("method") == method))
    return str(part.sort("log_or", descending=True)["trigger"][0])


def recall_at_matched_precision(chosen: pl.DataFrame, curve: pl.DataFrame, method: str = "personal", against: str = "n_of_1") -> pl.DataFrame:
    """Per horizon: ``method``'s precision and recall under the chosen rule (``chosen``: a
    ``recovery`` frame) beside ``against``'s best recall over the rule's z grid (``curve``:
    ``recovery`` frames with a ``z`` column) among the z whose precision is no worse. A z that
    calls nothing has no precision and recall 0; with no z as precise, ``against`` recalls 0
    (the issue's test: recall beats the baseline's at no worse precision)."""
    rows = []
    for r in chosen.filter(pl.col("method") == method).iter_rows(named=True):
        h, precision = r["horizon_days"], r["precision"]
        other = curve.filter((pl.col("horizon_days") == h) & (pl.col("method") == against))
        floor = 0.0 if math.isnan(precision) else precision  # no calls: any z of ``against`` is as precise
        as_precise = other.filter(pl.col("precision").is_not_nan() & (pl.col("precision") >= floor))
        best = as_precise.sort("recall", descending=True).head(1)
        rows.append(
            {
                "horizon_days": h,
                f"{method}_precision": precision,
                f"{method}_recall": r["recall"],
                f"{against}_recall": float(best["recall"][0]) if best.height else 0.0,
                f"{against}_precision": float(best["precision"][0]) if best.height else float("nan"),
                f"{against}_z": float(best["z"][0]) if best.height else float("nan"),
            }
        )
    return pl.DataFrame(rows).with_columns(beats=pl.col(f"{method}_recall") > pl.col(f"{against}_recall"))
