"""Out-of-fold foundation log-odds: what a model stacked on the foundation may learn from.

The temporal and personal models correct the foundation model's log-odds. On the days the
foundation trained on, those log-odds are in sample: its trees were fitted to those very
outcomes, so there they are sharper than they will be for anyone at forecast time, and a
correction learned against them learns the wrong thing (the classic stacking leak: the
second level must be trained on first-level predictions made without the row's own label).

Here every person the foundation trains on (not held out) gets log-odds from a foundation
model fitted without them: ``folds`` folds by person, each a full fit with the same config and
early stopping, on the other folds' people. Held-out people are absent: at forecast time every
model uses the full foundation, which has never seen them either.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import numpy as np
import polars as pl
from tqdm.auto import tqdm

from migrainemamba.models.base import ForecastBatch
from migrainemamba.models.foundation import FoundationConfig, FoundationModel

log = logging.getLogger(__name__)

KEYS = ("user_id", "date")


def person_fold(user_id: str, folds: int, seed: int) -> int:
    """A person's fold: a seeded hash, so it never depends on who else is in the cohort."""
    digest = hashlib.sha256(f"oof:{seed}:{user_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % folds


def out_of_fold_logits(
    config: FoundationConfig,
    split: pl.DataFrame,
    users: pl.DataFrame,
    daily_logs: pl.DataFrame,
    folds: int,
    seed: int,
    progress: bool = True,
) -> pl.DataFrame:
    """``(user_id, date, logit, fold)`` for every row of the people not held out.

    ``split``: ``make_split`` output over the feature rows (``split``, ``scorable``,
    ``cold_start``). Fold ``k``'s rows get the log-odds of a model fitted on the scorable
    training days of the other folds' people, early-stopped on their validation days.
    """
    if folds < 2:
        raise ValueError(f"out-of-fold log-odds need at least 2 folds, got {folds}")
    warm = split.filter(~pl.col("cold_start")).with_columns(
        fold=pl.col("user_id").map_elements(lambda u: person_fold(u, folds, seed), return_dtype=pl.Int64)
    )
    parts = []
    for k in tqdm(range(folds), desc="out-of-fold foundation fits", disable=not progress or None):
        others = warm.filter((pl.col("fold") != k) & pl.col("scorable"))

        def batch(name: str, rows: pl.DataFrame = others) -> ForecastBatch:
            return ForecastBatch(users, daily_logs, rows.filter(pl.col("split") == name).select(KEYS), precomputed=split)

        model = FoundationModel(config)
        model.fit(batch("train"), batch("valid"))
        held = warm.filter(pl.col("fold") == k)
        parts.append(held.select(*KEYS, logit=pl.Series(np.asarray(model.logit(held), dtype=float)), fold=pl.lit(k)))
        log.info("out-of-fold fold %d/%d: %d trees, %d rows", k + 1, folds, model.summary.best_iteration, held.height)
    return pl.concat(parts).sort(KEYS)


def with_out_of_fold(keys: pl.DataFrame, logit: np.ndarray, out_of_fold: pl.DataFrame) -> np.ndarray:
    """``logit`` (one per row of ``keys``) with each row that has an out-of-fold value replaced by it."""
    joined = keys.select(KEYS).join(out_of_fold.select(*KEYS, "logit"), on=list(KEYS), how="left", maintain_order="left")
    oof = joined["logit"].to_numpy()
    return np.where(np.isnan(oof), np.asarray(logit, dtype=float), oof)


def read_out_of_fold(path: str | Path) -> pl.DataFrame:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no out-of-fold log-odds; run the foundation stage with foundation.out_of_fold.folds > 0")
    return pl.read_parquet(path)
