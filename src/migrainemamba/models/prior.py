"""The clinical odds-ratio prior as a forecast: the "logistic model on the prior" baseline.

The prior's log-odds for day D start from the person's own running onset rate
(the ``personal_onset_rate`` feature: past days only, shrunk toward the
self-reported frequency) and add log(OR) for every trigger present that
morning (``configs/prior/``, indicators in ``migrainemamba.features.triggers``)::

    offset = logit(clip(personal_onset_rate, 1e-4, 0.9)) + sum_k log(OR_k) * indicator_k

:class:`PriorLogistic` learns nothing about triggers. It fits only a
calibration intercept ``a`` and slope ``b`` on that offset,
``logit p = a + b * offset``, because the published odds ratios compare days
within a person while the running rate already averages over that person's
trigger days, so the raw sum over-counts on average (``a`` shifts it back) and
may be too confident or too timid (``b`` scales it). Two parameters by
unpenalised maximum likelihood keep the model transparent: every forecast is
still the rate plus the clinical odds ratios, only rescaled.

The foundation model (``migrainemamba.models.foundation``) starts its trees
from the same (calibrated) offset.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping

import numpy as np
import polars as pl

from migrainemamba.features.triggers import TRIGGER_INDICATORS, prior_log_odds_terms
from migrainemamba.models.base import ForecastBatch

log = logging.getLogger(__name__)

RATE_CLIP = (1e-4, 0.9)  # keeps logit(rate) finite; 0.9 is far above any real daily onset rate
RATE_COLUMN = "personal_baseline_rate"  # the personal level, updated every 14 logged days (see features.daily)


def check_odds_ratios(odds_ratios: Mapping[str, float]) -> dict[str, float]:
    """The table as {trigger: float}, or ``ValueError`` naming the bad entries."""
    if not odds_ratios:
        raise ValueError(
            "prior: the odds-ratio table is empty; select one with prior=<name> (configs/prior/)"
        )
    unknown = sorted(set(odds_ratios) - set(TRIGGER_INDICATORS))
    if unknown:
        raise ValueError(
            f"prior: unknown triggers {unknown}; known: {sorted(TRIGGER_INDICATORS)} "
            "(migrainemamba.features.triggers.TRIGGER_INDICATORS)"
        )
    table = {k: float(v) for k, v in odds_ratios.items()}
    bad = {k: v for k, v in table.items() if not (math.isfinite(v) and v > 0)}
    if bad:
        raise ValueError(f"prior: odds ratios must be positive and finite, got {bad}")
    return table


def base_logit(features: pl.DataFrame) -> np.ndarray:
    """logit of the clipped ``personal_onset_rate``: the person's usual risk, per row."""
    if RATE_COLUMN not in features.columns:
        raise ValueError(f"prior: features lack {RATE_COLUMN!r}; compute them with build_features")
    rate = features[RATE_COLUMN].cast(pl.Float64).to_numpy()
    missing = int(np.isnan(rate).sum())
    if missing:
        raise ValueError(
            f"prior: {RATE_COLUMN} is null on {missing} of {len(rate)} rows "
            "(targets without a feature row? check the batch's precomputed features cover its targets)"
        )
    rate = np.clip(rate, *RATE_CLIP)
    return np.log(rate) - np.log1p(-rate)


def prior_terms(features: pl.DataFrame, odds_ratios: Mapping[str, float]) -> np.ndarray:
    """(rows, triggers) matrix of log(OR_k) x indicator_k, triggers in table order."""
    table = check_odds_ratios(odds_ratios)
    return prior_log_odds_terms(features, table).to_numpy().astype(np.float64)


def prior_offset(features: pl.DataFrame, odds_ratios: Mapping[str, float]) -> np.ndarray:
    """The un-calibrated prior log-odds per row: logit(rate) + sum of log(OR) over present triggers."""
    return base_logit(features) + prior_terms(features, odds_ratios).sum(axis=1)


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(x, dtype=np.float64)))


def fit_calibration(
    offset: np.ndarray, y: np.ndarray, max_iter: int = 50, tol: float = 1e-10, base: np.ndarray | None = None
) -> tuple[float, float]:
    """Unpenalised logistic regression of ``y`` on ``offset``: returns (intercept, slope).

    ``base``: log-odds added with a fixed coefficient of 1 (logit = base + intercept + slope * offset).

    Newton-Raphson on two parameters (exact, no solver defaults to worry about).
    Raises ``ValueError`` when the fit is not identified (one class only, or an
    offset that does not vary).
    """
    x = np.asarray(offset, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if len(x) != len(y):
        raise ValueError(f"calibration: {len(x)} offsets but {len(y)} labels")
    if y.min(initial=1.0) == y.max(initial=0.0):
        raise ValueError(
            f"calibration: need both onset and no-onset rows, got {len(y)} rows of one class"
        )
    if np.ptp(x) == 0.0:
        raise ValueError(
            "calibration: the prior offset is constant on the training rows; the slope is not identified"
        )
    fixed = np.zeros_like(x) if base is None else np.asarray(base, dtype=np.float64)
    design = np.column_stack([np.ones_like(x), x])
    # start at the identity map shifted to the observed rate (close to the optimum)
    rate = y.mean()
    beta = np.array([math.log(rate / (1 - rate)) - x.mean() - fixed.mean(), 1.0])
    for _ in range(max_iter):
        p = sigmoid(fixed + design @ beta)
        w = p * (1 - p)
        grad = design.T @ (y - p)
        hess = (design * w[:, None]).T @ design
        step = np.linalg.solve(hess, grad)
        beta = beta + step
        if np.max(np.abs(step)) < tol:
            break
    else:
        log.warning(
            "calibration: Newton-Raphson did not converge in %d steps (last step %s)",
            max_iter,
            step,
        )
    return float(beta[0]), float(beta[1])


def onset_labels(features: pl.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(mask of scorable rows, their 0/1 onset labels): fitting uses labelled rows only."""
    onset = features["onset"]
    mask = onset.is_not_null().to_numpy()
    if not mask.any():
        raise ValueError("fit: no scorable rows (onset is null everywhere) in the training batch")
    return mask, onset.filter(onset.is_not_null()).cast(pl.Float64).to_numpy()


class PriorLogistic:
    """P(onset) = sigmoid(a + b * prior_offset): the clinical prior, calibrated (2 parameters)."""

    name = "prior_logistic"

    def __init__(self, odds_ratios: Mapping[str, float], prior_name: str = "custom") -> None:
        self.odds_ratios = check_odds_ratios(odds_ratios)
        self.prior_name = prior_name
        self.intercept = 0.0
        self.slope = 1.0
        self.fitted = False

    def fit(self, train: ForecastBatch, valid: ForecastBatch | None = None) -> None:
        """Calibrate intercept and slope on the scorable training rows (``valid`` is not needed)."""
        features = train.features()
        mask, y = onset_labels(features)
        offset = prior_offset(features.filter(pl.Series(mask)), self.odds_ratios)
        self.intercept, self.slope = fit_calibration(offset, y)
        self.fitted = True
        log.info(
            "prior %r calibrated on %d rows: logit p = %.3f + %.3f * offset",
            self.prior_name,
            len(y),
            self.intercept,
            self.slope,
        )

    def logit(self, features: pl.DataFrame) -> np.ndarray:
        return self.intercept + self.slope * prior_offset(features, self.odds_ratios)

    def predict(self, batch: ForecastBatch) -> np.ndarray:
        return sigmoid(self.logit(batch.features()))
