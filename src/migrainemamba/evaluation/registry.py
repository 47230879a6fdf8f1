"""Which model families the evaluation scores, and how each is made ready.

Each entry takes the composed config and the split cohort and returns a fitted
``ForecastModel``. Model families added later register here.
"""

from __future__ import annotations

from collections.abc import Callable

from omegaconf import DictConfig

from migrainemamba.config import resolve_path, to_dict
from migrainemamba.evaluation.baselines import RunningBaseRate
from migrainemamba.evaluation.harness import SplitData
from migrainemamba.models.base import ForecastModel


def _base_rate(cfg: DictConfig, data: SplitData) -> ForecastModel:
    return RunningBaseRate()


def _prior_logistic(cfg: DictConfig, data: SplitData) -> ForecastModel:
    from migrainemamba.models.prior import PriorLogistic

    model = PriorLogistic(odds_ratios=to_dict(cfg.prior)["odds_ratios"])
    model.fit(data.batch("train"))
    return model


def _foundation(cfg: DictConfig, data: SplitData) -> ForecastModel:
    from migrainemamba.models.foundation import FoundationModel

    return FoundationModel.load(resolve_path(cfg.paths.models) / "foundation")


def _temporal(cfg: DictConfig, data: SplitData) -> ForecastModel:
    from migrainemamba.models.temporal import TemporalModel

    return TemporalModel.load(resolve_path(cfg.temporal.model_dir))


def _gru(cfg: DictConfig, data: SplitData) -> ForecastModel:
    from migrainemamba.models.temporal import TemporalModel

    return TemporalModel.load(resolve_path(cfg.temporal.gru_dir))


MODEL_FACTORIES: dict[str, Callable[[DictConfig, SplitData], ForecastModel]] = {
    "base_rate": _base_rate,
    "prior_logistic": _prior_logistic,
    "foundation": _foundation,
    "temporal": _temporal,
    "gru": _gru,
}


def build_models(names: list[str], cfg: DictConfig, data: SplitData) -> list[ForecastModel]:
    unknown = [n for n in names if n not in MODEL_FACTORIES]
    if unknown:
        raise KeyError(f"evaluate.models: unknown {unknown}; known: {sorted(MODEL_FACTORIES)}")
    return [MODEL_FACTORIES[name](cfg, data) for name in names]
