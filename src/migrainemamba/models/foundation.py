"""The foundation model: the clinical prior plus LightGBM corrections (docs/architecture.md §5).

Every new user gets this model on day 1, so it must be sensible, calibrated
and explainable from the first forecast. The trees therefore do not start
from a constant: each row's ``init_score`` is the calibrated clinical prior
(``migrainemamba.models.prior``)::

    logit p = a + b * prior_offset(features) + trees(features)

``a, b`` are the two calibration parameters of :class:`PriorLogistic`
(fitted on the same training rows), so with few trees a day-1 forecast *is*
the calibrated prior, and the trees learn only what the prior misses.

LightGBM never stores an ``init_score``: the offset is added again at every
prediction, by this class, from the odds-ratio table saved with the model.

Explanations come from the model itself. LightGBM's ``pred_contrib`` splits
the trees' log-odds into per-feature contributions plus an expected value;
the prior splits into per-trigger terms ``b * log(OR_k) * indicator_k``. Both
are summed into the habit groups a person recognises (``FEATURE_GROUPS``,
``TRIGGER_GROUP`` -> ``GROUP_NAMES``); what is left is the baseline (the
person's usual risk, ``a + b * logit(rate)``, plus the trees' expected value),
and baseline + group contributions == the forecast's logit.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import lightgbm as lgb
import mlflow
import numpy as np
import pandas as pd
import polars as pl

from migrainemamba.data.prepare import PreparedCohort
from migrainemamba.features.daily import FEATURE_COLUMNS, FEATURE_DESCRIPTIONS
from migrainemamba.features.triggers import FEATURE_GROUPS, GROUP_NAMES, TRIGGER_GROUP
from migrainemamba.models.base import ForecastBatch
from migrainemamba.models.prior import (
    base_logit,
    check_odds_ratios,
    fit_calibration,
    onset_labels,
    prior_offset,
    prior_terms,
    sigmoid,
)
from migrainemamba.split import make_split
from migrainemamba.tracking import pinned_requirements

log = logging.getLogger(__name__)

BOOSTER_FILE = "booster.txt"  # the first fit; a bag's further fits are booster_<i>.txt
META_FILE = "foundation.json"
GROUPS: tuple[str, ...] = tuple(GROUP_NAMES)
# the offset and the contributions are log-odds: only the logit link keeps them additive
OBJECTIVE = "binary"
# keys of the `foundation` config section that the stage reads, not the model
STAGE_KEYS = ("model_dir", "registered_model_name", "out_of_fold")


def booster_file(fit: int) -> str:
    """The file of the bag's fit ``fit`` in a saved model folder."""
    return BOOSTER_FILE if fit == 0 else f"booster_{fit}.txt"


@dataclass
class FoundationConfig:
    """Everything needed to rebuild the model; stored in every saved model (``foundation.json``).

    ``num_boost_round`` is the ceiling: early stopping on the validation batch
    (later days) picks the number of trees actually kept.
    """

    prior_name: str
    odds_ratios: dict[str, float]
    calibrate_prior: bool = True
    objective: str = OBJECTIVE
    learning_rate: float = 0.05
    num_leaves: int = 15
    min_data_in_leaf: int = 200
    feature_fraction: float = 0.8
    bagging_fraction: float = 0.8
    bagging_freq: int = 1
    lambda_l2: float = 10.0
    num_boost_round: int = 2000
    early_stopping_rounds: int = 50
    num_threads: int = 2
    seed: int = 0
    # A bag of fits: n_fits LightGBM fits with seeds seed, seed + 1, ...; the forecast is the mean
    # of their log-odds (and each explanation the mean of their contributions, still summing to
    # the logit). LightGBM bags rows and features, so one fit is one draw
    # (docs/experiments/prodrome_record.md).
    n_fits: int = 1
    # Features the trees may not use (given to LightGBM as missing, so no split can
    # use them; shapes and explanations stay the same). Default: the daily running
    # rate, whose post-attack jumps cost within-person ranking (see features.daily).
    exclude_features: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        self.odds_ratios = check_odds_ratios(self.odds_ratios)
        self.exclude_features = tuple(self.exclude_features)
        unknown = sorted(set(self.exclude_features) - set(FEATURE_COLUMNS))
        if unknown:
            raise ValueError(f"foundation.exclude_features: unknown features {unknown}")
        if self.objective != OBJECTIVE:
            raise ValueError(
                f"foundation.objective: {self.objective!r} is not supported; the prior offset and "
                f"the explanations are log-odds, so it must be {OBJECTIVE!r}"
            )
        if int(self.n_fits) < 1:
            raise ValueError(f"foundation.n_fits must be >= 1, got {self.n_fits}")
        if int(self.num_threads) < 1:
            raise ValueError(
                f"foundation.num_threads must be >= 1 (set it explicitly), got {self.num_threads}"
            )

    @classmethod
    def from_dict(cls, cfg: Mapping[str, Any]) -> FoundationConfig:
        """From the ``foundation`` config section: ``prior: {name, odds_ratios}`` plus the fields below it.

        Raises ``ValueError`` on unknown keys so a typo is not silently ignored.
        """
        data = dict(cfg)
        prior = data.pop("prior", None)
        if prior is not None:
            data.setdefault("prior_name", prior["name"])
            data.setdefault("odds_ratios", dict(prior["odds_ratios"]))
        for key in STAGE_KEYS:
            data.pop(key, None)
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"foundation config: unknown keys {unknown}; known: {sorted(known)}")
        missing = sorted(k for k in ("prior_name", "odds_ratios") if k not in data)
        if missing:
            raise ValueError(
                f"foundation config: missing {missing}; give `prior: ${{prior}}` (configs/prior/)"
            )
        return cls(**data)

    def lgb_params(self, fit: int = 0) -> dict[str, Any]:
        """The LightGBM parameter dict of the bag's fit ``fit`` (threads set explicitly: the
        default grabs every core)."""
        return {
            "objective": self.objective,
            "metric": ["binary_logloss", "auc"],  # early stopping on the first: calibration matters
            "learning_rate": self.learning_rate,
            "num_leaves": self.num_leaves,
            "min_data_in_leaf": self.min_data_in_leaf,
            "feature_fraction": self.feature_fraction,
            "bagging_fraction": self.bagging_fraction,
            "bagging_freq": self.bagging_freq,
            "lambda_l2": self.lambda_l2,
            "num_threads": int(self.num_threads),
            "seed": self.seed + fit,
            "deterministic": True,
            "force_col_wise": True,
            "verbosity": -1,
        }


def feature_matrix(features: pl.DataFrame, exclude: tuple[str, ...] = ()) -> np.ndarray:
    """FEATURE_COLUMNS as a float64 matrix in the fixed order (nulls -> NaN, LightGBM's missing).

    ``exclude``d columns are all NaN: present in the shape, unusable by the trees.
    """
    missing = [c for c in FEATURE_COLUMNS if c not in features.columns]
    if missing:
        raise ValueError(
            f"foundation: input lacks feature columns {missing}; build them with build_features"
        )
    return features.select(
        [(pl.lit(None) if c in exclude else pl.col(c)).cast(pl.Float64).alias(c) for c in FEATURE_COLUMNS]
    ).to_numpy()


def _membership(names: list[str], group_of: Mapping[str, str]) -> np.ndarray:
    """(len(names), len(GROUPS)) 0/1 matrix: which group each feature or trigger belongs to."""
    matrix = np.zeros((len(names), len(GROUPS)))
    for i, name in enumerate(names):
        matrix[i, GROUPS.index(group_of[name])] = 1.0
    return matrix


@dataclass
class Decomposition:
    """Per-row log-odds split: baseline + prior[:, g] + learned[:, g] summed over groups == logit."""

    baseline: np.ndarray  # (N,)
    prior: np.ndarray  # (N, G) calibrated clinical-prior terms per group
    learned: np.ndarray  # (N, G) tree contributions per group

    @property
    def logit(self) -> np.ndarray:
        return self.baseline + self.prior.sum(axis=1) + self.learned.sum(axis=1)


@dataclass
class FitSummary:
    best_iteration: int = 0  # the first fit's; every fit's in best_iterations
    best_iterations: list[int] = field(default_factory=list)
    fit_seconds: float = 0.0
    n_train: int = 0
    n_valid: int = 0
    valid_scores: dict[str, float] = field(default_factory=dict)


class FoundationModel:
    """LightGBM on FEATURE_COLUMNS, starting from the calibrated clinical prior (a ForecastModel)."""

    name = "foundation"

    def __init__(self, config: FoundationConfig) -> None:
        self.config = config
        self.intercept = 0.0  # calibration of the prior offset: a + b * offset
        self.slope = 1.0
        self.boosters: list[lgb.Booster] = []  # one per fit of the bag (config.n_fits)
        self.summary = FitSummary()

    @property
    def booster(self) -> lgb.Booster | None:
        """The first fit (the whole model when ``n_fits`` is 1)."""
        return self.boosters[0] if self.boosters else None

    # ------------------------------------------------------------ fitting

    def offset(self, features: pl.DataFrame) -> np.ndarray:
        """The calibrated prior log-odds per row: LightGBM's init_score, added again at prediction."""
        return self.intercept + self.slope * prior_offset(features, self.config.odds_ratios)

    def fit(self, train: ForecastBatch, valid: ForecastBatch | None = None) -> None:
        """Calibrate the prior, then boost from it; early stopping on ``valid`` (later days).

        Only scorable rows (onset not null) are used. Without ``valid`` all
        ``num_boost_round`` trees are kept (a warning says so).
        """
        cfg = self.config
        start = time.perf_counter()
        rows, y = self._labelled(train)
        offset = prior_offset(rows, cfg.odds_ratios)
        if cfg.calibrate_prior:
            self.intercept, self.slope = fit_calibration(offset, y)
        dtrain = lgb.Dataset(
            feature_matrix(rows, self.config.exclude_features),
            label=y,
            init_score=self.intercept + self.slope * offset,
            feature_name=list(FEATURE_COLUMNS),
            free_raw_data=True,
        )
        valid_sets, callbacks, n_valid = [], [], 0
        if valid is not None:
            vrows, vy = self._labelled(valid)
            n_valid = len(vy)
            valid_sets = [
                lgb.Dataset(
                    feature_matrix(vrows, self.config.exclude_features), label=vy, init_score=self.offset(vrows), reference=dtrain
                )
            ]
            callbacks = [
                lgb.early_stopping(cfg.early_stopping_rounds, first_metric_only=True, verbose=False)
            ]
        else:
            log.warning(
                "foundation: no validation batch, keeping all %d trees (no early stopping)",
                cfg.num_boost_round,
            )
        boosters, bests = [], []
        for fit in range(int(cfg.n_fits)):
            booster = lgb.train(
                cfg.lgb_params(fit),
                dtrain,
                num_boost_round=cfg.num_boost_round,
                valid_sets=valid_sets,
                valid_names=["valid"] * len(valid_sets),
                callbacks=callbacks,
            )
            best = (
                booster.best_iteration
                if valid is not None and booster.best_iteration > 0
                else booster.current_iteration()
            )
            # keep exactly the best trees, so predict, pred_contrib and save all agree
            boosters.append(lgb.Booster(model_str=booster.model_to_string(num_iteration=best)))
            bests.append(int(best))
            if fit == 0:
                scores = {k: float(v) for k, v in booster.best_score.get("valid", {}).items()}
        self.boosters = boosters
        best = bests[0]
        self.summary = FitSummary(best, bests, time.perf_counter() - start, len(y), n_valid, scores)
        log.info(
            "foundation fitted: %d trees on %d rows in %.1f s (prior %r: a=%.3f b=%.3f), valid %s",
            best,
            len(y),
            self.summary.fit_seconds,
            cfg.prior_name,
            self.intercept,
            self.slope,
            scores,
        )

    @staticmethod
    def _labelled(batch: ForecastBatch) -> tuple[pl.DataFrame, np.ndarray]:
        features = batch.features()
        mask, y = onset_labels(features)
        return features.filter(pl.Series(mask)), y

    # ---------------------------------------------------------- forecasts

    def _boosters(self) -> list[lgb.Booster]:
        if not self.boosters:
            raise RuntimeError(
                "foundation: the model is not fitted; call fit() or FoundationModel.load()"
            )
        return self.boosters

    def _trees(self, features: pl.DataFrame, **kind: bool) -> np.ndarray:
        """The trees' raw score (or, ``pred_contrib=True``, contributions): the bag's mean."""
        x = feature_matrix(features, self.config.exclude_features)
        return np.mean([b.predict(x, num_threads=self.config.num_threads, **kind) for b in self._boosters()], axis=0)

    def logit(self, features: pl.DataFrame) -> np.ndarray:
        """Forecast log-odds per feature row: calibrated prior + trees."""
        return self.offset(features) + self._trees(features, raw_score=True)

    def predict_features(self, features: pl.DataFrame) -> np.ndarray:
        """P(onset) per feature row (any frame holding FEATURE_COLUMNS)."""
        return sigmoid(self.logit(features))

    def predict(self, batch: ForecastBatch) -> np.ndarray:
        return self.predict_features(batch.features())

    # ------------------------------------------------------- explanations

    def decompose(self, features: pl.DataFrame) -> Decomposition:
        """Split each row's logit into a baseline and per-group prior and learned parts."""
        contrib = self._trees(features, pred_contrib=True)  # (N, F + 1): per-feature, then the trees' expected value
        odds = self.config.odds_ratios
        learned = contrib[:, :-1] @ _membership(list(FEATURE_COLUMNS), FEATURE_GROUPS)
        prior = self.slope * prior_terms(features, odds) @ _membership(list(odds), TRIGGER_GROUP)
        baseline = self.intercept + self.slope * base_logit(features) + contrib[:, -1]
        return Decomposition(baseline, prior, learned)

    def contributions(self, batch: ForecastBatch) -> pl.DataFrame:
        """Per forecast: ``baseline``, one log-odds column per group (prior + learned), ``logit``, ``p``."""
        features = batch.features()
        parts = self.decompose(features)
        total = parts.prior + parts.learned
        return features.select("user_id", "date").with_columns(
            pl.Series("baseline", parts.baseline),
            *[pl.Series(g, total[:, j]) for j, g in enumerate(GROUPS)],
            pl.Series("logit", parts.logit),
            pl.Series("p", sigmoid(parts.logit)),
        )

    def explain(self, batch: ForecastBatch, top_k: int | None = 3) -> list[list[dict[str, Any]]]:
        """Per forecast, the ``top_k`` groups with the largest |log-odds| (``None``: all groups).

        Each item: ``group``, ``name`` (human), ``log_odds`` (= ``prior_log_odds`` +
        ``learned_log_odds``) and ``odds_multiplier`` (exp of it). With all groups,
        their log-odds plus ``contributions()['baseline']`` give the forecast's logit.
        """
        parts = self.decompose(batch.features())
        total = parts.prior + parts.learned
        k = len(GROUPS) if top_k is None else top_k
        order = np.argsort(-np.abs(total), axis=1, kind="stable")[:, :k]
        return [
            [
                {
                    "group": GROUPS[j],
                    "name": GROUP_NAMES[GROUPS[j]],
                    "log_odds": float(total[i, j]),
                    "prior_log_odds": float(parts.prior[i, j]),
                    "learned_log_odds": float(parts.learned[i, j]),
                    "odds_multiplier": float(np.exp(total[i, j])),
                }
                for j in row
            ]
            for i, row in enumerate(order)
        ]

    def feature_importance(self, importance_type: str = "gain") -> pl.DataFrame:
        """Per feature: ``feature``, ``description``, ``group``, ``importance``, sorted descending."""
        values = np.sum([b.feature_importance(importance_type=importance_type) for b in self._boosters()], axis=0)
        return pl.DataFrame(
            {
                "feature": list(FEATURE_COLUMNS),
                "description": [FEATURE_DESCRIPTIONS[f] for f in FEATURE_COLUMNS],
                "group": [GROUP_NAMES[FEATURE_GROUPS[f]] for f in FEATURE_COLUMNS],
                "importance": values.astype(float),
            }
        ).sort("importance", descending=True)

    # ---------------------------------------------------------- persistence

    def save(self, directory: str | Path) -> Path:
        """Write ``booster.txt`` (LightGBM text; a bag's further fits ``booster_<i>.txt``) and
        ``foundation.json`` (config, calibration, features)."""
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        for i, booster in enumerate(self._boosters()):
            booster.save_model(str(out / booster_file(i)))
        meta = {
            "config": asdict(self.config),
            "calibration": {"intercept": self.intercept, "slope": self.slope},
            "feature_columns": list(FEATURE_COLUMNS),
            "summary": asdict(self.summary),
            "lightgbm_version": lgb.__version__,
        }
        (out / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
        return out

    @classmethod
    def load(cls, directory: str | Path) -> FoundationModel:
        """Rebuild a saved model; refuses one trained on a different feature list."""
        src = Path(directory)
        if not (src / BOOSTER_FILE).is_file() or not (src / META_FILE).is_file():
            raise FileNotFoundError(
                f"foundation: {src} lacks {BOOSTER_FILE} or {META_FILE}; run pipelines/foundation.py"
            )
        meta = json.loads((src / META_FILE).read_text())
        if meta["feature_columns"] != list(FEATURE_COLUMNS):
            raise ValueError(
                f"foundation: the model in {src} was trained on other features than FEATURE_COLUMNS "
                "(the features code changed since); retrain it"
            )
        model = cls(FoundationConfig(**meta["config"]))
        model.intercept = float(meta["calibration"]["intercept"])
        model.slope = float(meta["calibration"]["slope"])
        model.summary = FitSummary(**meta["summary"])
        files = [src / booster_file(i) for i in range(int(model.config.n_fits))]
        missing = [f.name for f in files if not f.is_file()]
        if missing:
            raise FileNotFoundError(f"foundation: {src} lacks {missing} of its bag of {model.config.n_fits} fits")
        model.boosters = [lgb.Booster(model_file=str(f)) for f in files]
        return model


# ------------------------------------------------------------------ MLflow


def _to_polars(frame: pd.DataFrame | pl.DataFrame) -> pl.DataFrame:
    if isinstance(frame, pl.DataFrame):
        return frame
    if isinstance(frame, pd.DataFrame):
        return pl.from_pandas(frame)
    raise TypeError(
        f"foundation pyfunc: expected a pandas or polars frame of FEATURE_COLUMNS, got {type(frame).__name__}"
    )


class FoundationPyfunc(mlflow.pyfunc.PythonModel):
    """MLflow wrapper: a frame of FEATURE_COLUMNS in, P(onset) out.

    The saved model directory (``FoundationModel.save``) travels as the
    artifact ``"foundation"``; the prior offset is recomputed from the
    features, so the input needs only FEATURE_COLUMNS.
    """

    ARTIFACT = "foundation"

    def __init__(self) -> None:
        self.model: FoundationModel | None = None

    def load_context(self, context) -> None:
        self.model = FoundationModel.load(context.artifacts[self.ARTIFACT])

    def predict(
        self, context, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> np.ndarray:
        if self.model is None:
            self.load_context(context)
        return self.model.predict_features(_to_polars(model_input))


def pip_requirements() -> list[str]:
    """Pinned requirements of the pyfunc (explicit: MLflow's inference costs a subprocess per model)."""
    return pinned_requirements("mlflow", "lightgbm", "polars", "numpy", "pandas", "pyarrow")


def pyfunc_kwargs(model_dir: str | Path, example: pl.DataFrame) -> dict[str, Any]:
    """Arguments for ``mlflow.pyfunc.log_model`` / ``save_model``: wrapper, artifact, signature, example.

    ``example`` is a small frame of feature rows; its FEATURE_COLUMNS become the input example.
    """
    from mlflow.models import infer_signature

    model = FoundationModel.load(model_dir)
    inputs = example.select([pl.col(c).cast(pl.Float64) for c in FEATURE_COLUMNS]).to_pandas()
    return {
        "python_model": FoundationPyfunc(),
        "artifacts": {FoundationPyfunc.ARTIFACT: str(Path(model_dir).resolve())},
        "signature": infer_signature(inputs, model.predict_features(example)),
        "input_example": inputs,
        "pip_requirements": pip_requirements(),
    }


def split_batches(
    features: pl.DataFrame, cohort: PreparedCohort, split_cfg: dict[str, Any]
) -> tuple[ForecastBatch, ForecastBatch]:
    """Scorable train and valid batches of the evaluation's split (cold-start users excluded)."""
    split = make_split(features, split_cfg)

    def batch(name: str) -> ForecastBatch:
        rows = split.filter((pl.col("split") == name) & pl.col("scorable") & ~pl.col("cold_start"))
        if rows.height == 0:
            raise ValueError(
                f"foundation: the {name!r} split has no scorable rows; check split {split_cfg}"
            )
        return ForecastBatch(
            cohort.users, cohort.daily_logs, rows.select("user_id", "date"), precomputed=split
        )

    return batch("train"), batch("valid")
