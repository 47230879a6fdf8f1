"""Time-ordered evaluation split (docs/architecture.md §4): never split days at random.

- Cold start: a seeded share of whole users is held out; all their days are test.
- Everyone else: each person's earlier logged days train, the next slice
  validates (early stopping), the latest days test.
The split is decided on logged-day order within each user, so a row's split
never depends on other users.
"""

from __future__ import annotations

import hashlib
from typing import Any

import polars as pl

SPLITS = ("train", "valid", "test")


def _holdout(user_id: str, seed: int, share: float) -> bool:
    digest = hashlib.sha256(f"{seed}:{user_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < share


def make_split(features: pl.DataFrame, split_cfg: dict[str, Any]) -> pl.DataFrame:
    """Add ``split`` (train/valid/test) and ``cold_start`` (held-out user) to feature rows.

    split_cfg: ``holdout_user_share``, ``train_share``, ``valid_share`` (shares of
    each remaining user's logged days), ``seed``.
    """
    share = float(split_cfg["holdout_user_share"])
    train_share = float(split_cfg["train_share"])
    valid_share = float(split_cfg["valid_share"])
    if not 0 <= share < 1 or not 0 < train_share < 1 or not 0 <= valid_share < 1 - train_share:
        raise ValueError(f"split: shares out of range: {split_cfg}")
    seed = int(split_cfg["seed"])
    users = features.select(pl.col("user_id").unique()).with_columns(
        cold_start=pl.col("user_id").map_elements(lambda u: _holdout(u, seed, share), return_dtype=pl.Boolean)
    )
    total_logged = features.group_by("user_id").agg(n_logged=pl.col("logged").sum())
    frac = pl.col("days_logged_before") / pl.col("n_logged")
    return (
        features.join(users, on="user_id", how="left")
        .join(total_logged, on="user_id", how="left")
        .with_columns(
            split=pl.when(pl.col("cold_start"))
            .then(pl.lit("test"))
            .when(frac < train_share)
            .then(pl.lit("train"))
            .when(frac < train_share + valid_share)
            .then(pl.lit("valid"))
            .otherwise(pl.lit("test"))
        )
        .drop("n_logged")
    )
