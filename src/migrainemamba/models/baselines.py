"""Baselines reported beside every model (docs/architecture.md §4)."""

from __future__ import annotations

import numpy as np

from migrainemamba.models.base import ForecastBatch


class RunningBaseRate:
    """The person's running onset rate so far, shrunk toward their self-reported frequency.

    Uses the shared ``personal_onset_rate`` feature (rows before the forecast day
    only). It is also the reference forecast of the Brier skill score.
    """

    name = "base_rate"

    def fit(self, train: ForecastBatch, valid: ForecastBatch | None = None) -> None:
        """Nothing to learn: the rate is computed from each person's own past."""

    def predict(self, batch: ForecastBatch) -> np.ndarray:
        rate = batch.features()["personal_onset_rate"].to_numpy().astype(float)
        return np.clip(np.nan_to_num(rate, nan=0.05), 1e-4, 1 - 1e-4)
