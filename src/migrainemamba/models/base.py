"""The one small interface every model family implements, and what it is handed.

A model never sees a label or anything logged after the forecast moment except
through :class:`ForecastBatch`, whose ``features()`` come from the shared
features module (leakage-tested) and whose ``daily_logs`` the evaluation
harness audits by perturbation (``migrainemamba.evaluation.leakage``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np
import polars as pl

from migrainemamba.features import build_features


@dataclass
class ForecastBatch:
    """Forecasts wanted for ``targets`` (user_id, date) given a diary.

    ``precomputed`` may hold ``build_features`` output over the same (or a longer)
    diary: features of day D depend only on rows before D and D's morning
    fields, so a longer diary gives the same rows.
    """

    users: pl.DataFrame
    daily_logs: pl.DataFrame
    targets: pl.DataFrame  # user_id, date
    precomputed: pl.DataFrame | None = None
    _features: pl.DataFrame | None = field(default=None, init=False, repr=False)

    def features(self) -> pl.DataFrame:
        """One feature row per target, in target order (labels included for training use)."""
        if self._features is None:
            source = self.precomputed
            if source is None:
                source = build_features(self.users, self.daily_logs, forecast_dates=self.targets.select("user_id", "date"))
            rows = self.targets.select("user_id", "date").join(source, on=["user_id", "date"], how="left", maintain_order="left")
            if rows.height != self.targets.height:
                raise ValueError("features: duplicate (user_id, date) in the feature source")
            self._features = rows
        return self._features

    def labels(self) -> np.ndarray:
        """Onset labels of the targets (for fitting only; null where not scorable)."""
        return self.features()["onset"].to_numpy()

    def subset(self, mask: np.ndarray) -> ForecastBatch:
        batch = ForecastBatch(self.users, self.daily_logs, self.targets.filter(pl.Series(mask)), self.precomputed)
        if self._features is not None:
            batch._features = self._features.filter(pl.Series(mask))
        return batch


@runtime_checkable
class ForecastModel(Protocol):
    """A model family: fitted on training user-days, forecasts P(onset) for targets."""

    name: str

    def fit(self, train: ForecastBatch, valid: ForecastBatch | None = None) -> None: ...

    def predict(self, batch: ForecastBatch) -> np.ndarray: ...
